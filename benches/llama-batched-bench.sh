#!/usr/bin/env bash
# Batched decoding, rbees next to llama.cpp: `rbees bench --parallel NPL_LIST`
# on a model, then llama.cpp's `llama-batched-bench` on the same model, thread
# count, prompt length (PP), decode length (TG) and numbers of parallel
# sequences (NPL_LIST).
#
# llama-batched-bench, per number of sequences B: B separate prompts of PP
# random tokens are decoded in one batch (T_PP, S_PP = B*PP/T_PP), then TG
# steps each decode one token of every sequence (T_TG, S_TG = B*TG/T_TG, the
# aggregate generation rate), S = all tokens / (T_PP + T_TG). The context is
# NPL_MAX*(PP+TG) (a smaller one makes llama-batched-bench skip rows without
# a word); every sequence has its own KV cache (not unified) and its own
# prompt (no -pps, which would share one prompt and shrink the PP work B-fold).
# Flash attention is llama.cpp's default (auto).
#
# llama-batched-bench is built once, as in benches/llama-bench.sh, from the
# llama.cpp that the llama-cpp-python sdist vendors, with -DGGML_NATIVE=ON
# (see benches/llama-cpp-build.sh; about 10 minutes on 2 cores).
#
# Crashes (llama.cpp's native build on Intel CPUs with AMX): a run killed by
# a signal is never shown as a result; the script says so and retries with
# --no-repack, then with a build without AMX (llama_cpp_compare in
# benches/llama-cpp-build.sh). The table printed is labelled with the
# configuration that produced it.
#
# Usage: benches/llama-batched-bench.sh [--build-only] [--llama-only]
#            [MODEL] [THREADS] [PP] [TG] [NPL_LIST] [rbees bench args...]
#   defaults: models/SmolLM2-135M-Instruct.Q4_1.gguf 2 128 64 1,2,4,8,16
#   --build-only  build llama-batched-bench, print its path, exit
#   --llama-only  skip the rbees build and `rbees bench`
# Exit status: non-zero if rbees bench or every llama.cpp attempt failed.
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

source benches/llama-cpp-build.sh

BUILD_ONLY=0
LLAMA_ONLY=0
while (( $# )); do
    case "$1" in
        --build-only) BUILD_ONLY=1; shift ;;
        --llama-only) LLAMA_ONLY=1; shift ;;
        *) break ;;
    esac
done

if (( BUILD_ONLY )); then
    llama_cpp_build llama-batched-bench
    echo "$LLAMA_CPP_BIN/llama-batched-bench"
    exit 0
fi

MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${2:-2}
PP=${3:-128}
TG=${4:-64}
NPL_LIST=${5:-1,2,4,8,16}
shift $(( $# < 5 ? $# : 5 ))

die() { echo "llama-batched-bench.sh: $*" >&2; exit 2; }
[[ -f "$MODEL" ]] || die "no model file $MODEL"
for v in "$THREADS" "$PP" "$TG"; do
    [[ "$v" =~ ^[0-9]+$ ]] || die "THREADS, PP and TG must be integers, got '$v'"
done
[[ "$NPL_LIST" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "NPL_LIST must look like 1,2,4,8, got '$NPL_LIST'"
IFS=, read -ra NPLS <<<"$NPL_LIST"
NPL_MAX=0
for n in "${NPLS[@]}"; do
    if (( n > NPL_MAX )); then NPL_MAX=$n; fi
done
CTX=$(( NPL_MAX * (PP + TG) ))
# rbees reads --threads 0 as one per core; llama.cpp wants a count.
LLAMA_THREADS=$THREADS
(( LLAMA_THREADS > 0 )) || LLAMA_THREADS=$(nproc)

LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/llama-batched-bench.XXXXXX")
status=0

if (( ! LLAMA_ONLY )); then
    cargo build --release --quiet -p rbees-worker --bin rbees
    echo "## rbees bench --parallel $NPL_LIST"
    if ! target/release/rbees bench --model "$MODEL" --threads "$THREADS" --pp "$PP" --tg "$TG" \
        --parallel "$NPL_LIST" "$@"; then
        echo "rbees bench FAILED (see above); going on with llama.cpp" >&2
        status=1
    fi
    echo
fi

echo "## llama.cpp llama-batched-bench (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION)"

# Rows are "|    PP |     TG |    B | ..."; every B asked for must be there.
has_every_row() {
    local out=$1 n missing=()
    for n in "${NPLS[@]}"; do
        awk -F'|' -v pp="$PP" -v tg="$TG" -v b="$n" \
            '$2+0 == pp && $3+0 == tg && $4+0 == b { found = 1 } END { exit !found }' "$out" \
            || missing+=("$n")
    done
    if (( ${#missing[@]} )); then
        echo "INCOMPLETE: exited 0 but has no row for B = ${missing[*]} (context $CTX too small?); NOT a result. Output ($out):"
        sed 's/^/    /' "$out"
        return 1
    fi
}

llama_cpp_compare llama-batched-bench has_every_row --no-repack "$LOG_DIR" -- \
    -m "$MODEL" -t "$LLAMA_THREADS" -tb "$LLAMA_THREADS" -c "$CTX" -b 2048 -ub 512 \
    -npp "$PP" -ntg "$TG" -npl "$NPL_LIST" -lv 4 || status=1
exit "$status"
