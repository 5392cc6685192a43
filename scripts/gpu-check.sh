#!/usr/bin/env bash
# Runs on the GPU machine from the folder scripts/gpu-stage.sh prepared:
# the backend list, the conformance suite on cuda:0, and greedy generation
# on the tiny models with the reference on the CPU and candle on cuda:0.
# Logs go to $OUT (or ./gpu-logs).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/gpu-logs}
mkdir -p "$OUT"
run() { bash "$HERE/run-with-cuda-libs.sh" "$HERE/rbees" "$@"; }
{
    date -u
    nvidia-smi -L || true
    run backends
} > "$OUT/backends.log" 2>&1
run conformance --backend candle --device cuda:0 > "$OUT/conformance-cuda.log" 2>&1
echo "conformance exit $?" >> "$OUT/conformance-cuda.log"
for model in "$HERE"/tiny-llama2-*.gguf; do
    name=$(basename "$model" .gguf)
    for target in "ndarray cpu" "candle cpu" "candle cuda:0"; do
        set -- $target
        run generate --model "$model" --backend "$1" --device "$2" --prompt "Hello world" \
            --temperature 0 --ignore-eos --max-tokens 16 --json --logits \
            > "$OUT/generate-$name-$1-${2/:/}.json" 2>> "$OUT/generate.log"
    done
done
ls -la "$OUT"
