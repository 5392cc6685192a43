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
# Crashes (llama.cpp's native build on Intel CPUs with AMX, in llama-bench's
# default mode): a run killed by a signal is never shown as a result; the
# script says so and retries with --repack 0, then with a build without AMX
# (llama_cpp_compare in benches/llama-cpp-build.sh). The table printed is
# labelled with the configuration that produced it.
#
# Exit status: non-zero if rbees bench or every llama.cpp attempt failed.
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

LLAMA_THREADS=$THREADS
(( LLAMA_THREADS > 0 )) || LLAMA_THREADS=$(nproc)
status=0
echo "## rbees bench"
if ! target/release/rbees bench --model "$MODEL" --threads "$THREADS" --pp "$PP" --tg "$TG" --reps "$REPS" "$@"; then
    echo "rbees bench FAILED (see above); going on with llama.cpp" >&2
    status=1
fi
echo
echo "## llama.cpp llama-bench (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION)"

# The markdown table must have its pp and tg rows.
has_both_tests() {
    local out=$1 test missing=()
    for test in "pp$PP" "tg$TG"; do
        grep -qE "\| +$test +\|" "$out" || missing+=("$test")
    done
    if (( ${#missing[@]} )); then
        echo "INCOMPLETE: exited 0 but has no ${missing[*]} row; NOT a result. Output ($out):"
        sed 's/^/    /' "$out"
        return 1
    fi
}

LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/llama-bench.XXXXXX")
llama_cpp_compare llama-bench has_both_tests "--repack 0" "$LOG_DIR" -- \
    -m "$MODEL" -t "$LLAMA_THREADS" -p "$PP" -n "$TG" -r "$REPS" -o md || status=1
exit "$status"
