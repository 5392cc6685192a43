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
#      bench --parallel 1,8,32` of candle vs cuda-kernels;
#   7. the cuda-kernels device checks (rbees-cuda-device-check, from
#      backends/cuda/src/bin, built by gpu-stage.sh): non-finite keys and
#      values at masked attention positions, F16/BF16 weights kept 16-bit
#      (mat-vec, widened bands, embeddings), and the load-time memory check
#      with memory idle in the pool (it fills the device for a moment);
#      then greedy runs of F16 and BF16 SmolLM2-shaped models. Its two
#      parts run after steps 2 and 3.
# STEPS="1 2 3" runs a subset: steps 1-3 and 4-5 each fit one 600 s device
# call; step 6 fits beside steps 1-3, step 7 beside step 6.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/gpu-logs}
STEPS=${STEPS:-1 2 3 4 5 7}
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
    # (timeout runs a program, so the step's shell functions go through
    # bash -c; `set -e` there makes any failing command fail the step, not
    # only the function's last one.)
    timeout "$limit" bash -c 'set -e; "$@"' step "$@" > "$OUT/$log" 2>&1
    local rc=$?
    echo "exit $rc after step $n ($(date -u +%T))" | tee -a "$OUT/$log" >> "$OUT/steps.log"
    [ "$rc" -eq 0 ] || FAILED="$FAILED $n"
}
FAILED=

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

# rbees-cuda-device-check (built by gpu-stage.sh next to rbees): one line
# per check, exit 1 on any failure or without a device.
device_checks() {
    [ -f "$HERE/rbees-cuda-device-check.gz" ] ||
        { echo "no rbees-cuda-device-check.gz: rerun scripts/gpu-stage.sh"; return 1; }
    gunzip -c "$HERE/rbees-cuda-device-check.gz" > "$WORK/rbees-cuda-device-check" &&
        chmod +x "$WORK/rbees-cuda-device-check" &&
        LD_LIBRARY_PATH="$LIBS" "$WORK/rbees-cuda-device-check" cuda:0
}
export -f device_checks
step 7 120 device-checks-cuda-kernels.log device_checks

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

# Step 7, end to end: SmolLM2-shaped F16 and BF16 models (16-bit embedding
# lookups and products, decode and prompt rows on the mat-vec kernel),
# greedy on ndarray-cpu, candle-cpu and cuda-kernels. gpu-compare.py holds
# models not named *f32 to the quantised limits (5e-4, ids against
# candle-cpu, which widens these weights to f32 as ndarray does); the device
# checks hold the products themselves to 1e-9.
float16_greedy() {
    for t in F16 BF16; do
        model="$WORK/smollm2-135m-$t.gguf"
        run synth --shape smollm2-135m --qtype "$t" --out "$model"
        greedy "$model" "smollm2-$t" 8 ndarray:cpu candle:cpu cuda-kernels:cuda:0
        rm -f "$model"
    done
}
export -f float16_greedy
step 7 200 float16-greedy.log float16_greedy

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
if [ -n "$FAILED" ]; then
    echo "failed steps:$FAILED (see $OUT/steps.log)" | tee -a "$OUT/steps.log" >&2
    exit 1
fi
