#!/usr/bin/env bash
# rbees next to the field's reference engine, in one command: `rbees bench`
# on a model, then llama.cpp's `llama-bench` on the same model, thread count,
# prompt and decode lengths.
#
# llama-bench is built once from the llama.cpp that the `llama-cpp-python`
# sdist vendors (PyPI; cmake comes from PyPI too) into a cache folder,
# ${RBEES_LLAMA_CPP_CACHE:-~/.cache/rbees/llama.cpp}, with -DGGML_NATIVE=ON
# (host SIMD, as rbees' own build). About 10 minutes on 2 cores the first time.
# The build steps live in benches/llama-cpp-build.sh (shared with
# benches/llama-batched-bench.sh).
#
# Usage: benches/llama-bench.sh [--build-only] [MODEL] [THREADS] [PP] [TG] [REPS] [rbees bench args...]
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

source benches/llama-cpp-build.sh

build_llama_bench() {
    llama_cpp_build llama-bench
    LLAMA_BENCH="$LLAMA_CPP_BIN/llama-bench"
}

if [[ "${1:-}" == "--build-only" ]]; then
    build_llama_bench
    echo "$LLAMA_BENCH"
    exit 0
fi

MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${2:-2}
PP=${3:-128}
TG=${4:-64}
REPS=${5:-5}
shift $(( $# < 5 ? $# : 5 ))

build_llama_bench
cargo build --release --quiet -p rbees-worker --bin rbees

echo "## rbees bench"
target/release/rbees bench --model "$MODEL" --threads "$THREADS" --pp "$PP" --tg "$TG" --reps "$REPS" "$@"
echo
echo "## llama.cpp llama-bench (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION)"
"$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" -p "$PP" -n "$TG" -r "$REPS" -o md
