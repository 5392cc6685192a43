#!/usr/bin/env bash
# Runs on the GPU machine from the folder scripts/gpu-stage.sh prepared.
# Logs go to $OUT (or ./gpu-logs); each step has its own time limit so one
# hang cannot eat the session's device time.
#   1. the backend list and the device;
#   2. the conformance suite on cuda:0 for candle and cuda-kernels;
#   3. greedy generation with logits on the tiny models: ndarray on the CPU
#      (the reference), candle and cuda-kernels on cuda:0;
#   4. SmolLM2-135M-shaped random models (Q4_0, Q4_1): greedy ndarray-cpu vs
#      cuda-kernels, and `rbees bench` of candle vs cuda-kernels (pp512/tg64);
#   5. Llama-2-7B-shaped random models (Q4_0, Q8_0): the same bench;
#   6. batched decoding (continuous batching) at the SmolLM2 shape: `rbees
#      bench --parallel 1,8,32` of candle vs cuda-kernels.
# STEPS="1 2 3" runs a subset: steps 1-3 and 4-5 each fit one 600 s device
# call; step 6 fits beside steps 1-3.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/gpu-logs}
STEPS=${STEPS:-1 2 3 4 5}
WORK=${WORK:-/tmp/rbees-gpu}
mkdir -p "$OUT" "$WORK"
# Find the CUDA libraries once (the finder prints to stdout, which would
# mix into the JSON outputs), then run the binary directly.
bash "$HERE/run-with-cuda-libs.sh" /bin/sh -c 'echo "FOUND_PATH=$LD_LIBRARY_PATH"' \
    > "$OUT/libraries.log" 2>&1
LIBS=$(sed -n 's/^FOUND_PATH=//p' "$OUT/libraries.log")
# The binary travels gzipped (scripts/gpu-stage.sh); unpack it next to the work files.
BIN="$HERE/rbees"
if [ -f "$HERE/rbees.gz" ]; then
    BIN="$WORK/rbees"
    gunzip -c "$HERE/rbees.gz" > "$BIN" && chmod +x "$BIN"
fi
run() { LD_LIBRARY_PATH="$LIBS" "$BIN" "$@"; }
export HERE OUT WORK LIBS BIN
# step N LIMIT_SECONDS LOG COMMAND...: runs COMMAND if N is selected.
step() {
    local n=$1 limit=$2 log=$3
    shift 3
    case " $STEPS " in *" $n "*) ;; *) return 0 ;; esac
    echo "== step $n: $* ($(date -u +%T))" >> "$OUT/steps.log"
    # (timeout runs a program, so the step's shell functions go through bash -c.)
    timeout "$limit" bash -c '"$@"' step "$@" > "$OUT/$log" 2>&1
    echo "exit $? after step $n ($(date -u +%T))" | tee -a "$OUT/$log" >> "$OUT/steps.log"
}

backends() {
    date -u
    nvidia-smi -L || true
    nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv || true
    run backends
}
export -f run backends
step 1 30 backends.log backends

step 2 200 conformance-candle-cuda.log run conformance --backend candle --device cuda:0
step 2 200 conformance-cuda-kernels.log run conformance --backend cuda-kernels --device cuda:0

# greedy MODEL NAME TOKENS BACKEND:DEVICE...: a greedy run (ids) and a
# one-token run (the prompt's logits) per target, as JSON; compared here
# afterwards by scripts/gpu-compare.py.
greedy() {
    local model=$1 name=$2 tokens=$3 target
    shift 3
    for target in "$@"; do
        local backend=${target%%:*} device=${target#*:}
        local tag="$name-$backend-${device/:/}"
        for kind in generate:$tokens prompt:1; do
            run generate --model "$model" --backend "$backend" --device "$device" \
                --prompt "Hello world" --temperature 0 --ignore-eos \
                --max-tokens "${kind#*:}" --json --logits > "$OUT/${kind%%:*}-$tag.json"
        done
    done
}
tiny_greedy() {
    for model in "$HERE"/tiny-llama2-*.gguf; do
        greedy "$model" "$(basename "$model" .gguf)" 16 \
            ndarray:cpu candle:cpu candle:cuda:0 cuda-kernels:cuda:0
    done
}
export -f greedy tiny_greedy
step 3 150 generate-tiny.log tiny_greedy

smollm2() {
    for q in Q4_0 Q4_1; do
        model="$WORK/smollm2-135m-$q.gguf"
        run synth --shape smollm2-135m --qtype "$q" --out "$model"
        greedy "$model" "smollm2-$q" 8 ndarray:cpu candle:cpu cuda-kernels:cuda:0
        run bench --model "$model" --backend candle:cuda:0 --backend cuda-kernels:cuda:0 \
            --pp 512 --tg 64 --reps 3 --json "$OUT/bench-smollm2-$q.json"
    done
}
export -f smollm2
step 4 300 smollm2.log smollm2

llama7b() {
    for q in Q4_0 Q8_0; do
        model="$WORK/llama2-7b-$q.gguf"
        run synth --shape llama2-7b --qtype "$q" --out "$model"
        run bench --model "$model" --backend candle:cuda:0 --backend cuda-kernels:cuda:0 \
            --pp 512 --tg 64 --reps 3 --json "$OUT/bench-llama2-7b-$q.json"
        rm -f "$model"
    done
}
export -f llama7b
step 5 280 llama2-7b.log llama7b

batched() {
    model="$WORK/smollm2-135m-Q4_0.gguf"
    [[ -f "$model" ]] || run synth --shape smollm2-135m --qtype Q4_0 --out "$model"
    run bench --model "$model" --backend candle:cuda:0 --backend cuda-kernels:cuda:0 \
        --pp 128 --tg 64 --reps 2 --parallel 1,8,32 --json "$OUT/bench-smollm2-parallel.json"
}
export -f batched
step 6 150 batched.log batched

ls -la "$OUT"
