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
# Crashes: on Intel CPUs with AMX, the GGML_NATIVE build has been seen to die
# with SIGSEGV in ggml_backend_amx_mul_mat. A run killed by a signal is never
# shown as a result; the script says so and retries:
#   1. native build, defaults (weights repacked into the AMX / CPU-repack
#      buffer types where the CPU supports them);
#   2. the same binary with --no-repack (no extra buffer types: neither the
#      AMX kernels nor the repacked ones run);
#   3. a second build, cache/build-noamx: GGML_NATIVE=OFF with the host's SIMD
#      listed from /proc/cpuinfo and every GGML_AMX_* OFF, with defaults.
# The table printed is labelled with the configuration that produced it. A
# run that fails without a signal (bad model, bad flag) is reported and not
# retried.
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

HOST_AMX=no
grep -qw amx_int8 /proc/cpuinfo && HOST_AMX=yes
echo "## llama.cpp llama-batched-bench (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION)"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') (AMX: $HOST_AMX)"

# run_batched NAME BIN DESCRIPTION [extra llama-batched-bench args...]
# Runs one attempt with stdout (the table) and stderr (the load log, -lv 4)
# in $LOG_DIR/NAME.{out,err}. Returns 0 and prints the table when it exited 0
# with a row for every B of NPL_LIST; 2 when it was killed by a signal (a
# crash: worth another configuration); 1 on any other failure.
run_batched() {
    local name=$1 bin=$2 desc=$3
    shift 3
    local out="$LOG_DIR/$name.out" err="$LOG_DIR/$name.err"
    local -a cmd=("$bin" -m "$MODEL" -t "$LLAMA_THREADS" -tb "$LLAMA_THREADS"
        -c "$CTX" -b 2048 -ub 512 -npp "$PP" -ntg "$TG" -npl "$NPL_LIST" -lv 4 "$@")
    echo
    echo "### attempt '$name': $desc"
    echo "\$ ${cmd[*]}"
    local rc=0
    "${cmd[@]}" >"$out" 2>"$err" || rc=$?
    if (( rc > 128 )); then
        echo "CRASHED: killed by SIG$(kill -l $(( rc - 128 )) 2>/dev/null || echo "#$(( rc - 128 ))") (exit status $rc); NOT a result. Last lines of stderr ($err):"
        tail -n 15 "$err" | sed 's/^/    /'
        return 2
    elif (( rc != 0 )); then
        echo "FAILED: exit status $rc. Last lines of stderr ($err):"
        tail -n 15 "$err" | sed 's/^/    /'
        return 1
    fi
    # Rows are "|    PP |     TG |    B | ..."; every B asked for must be there.
    local n missing=()
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
    RESULT_NAME=$name
    echo "llama.cpp configuration that produced this table: $desc"
    # What llama.cpp chose (-lv 4 logs it): the weight buffer types really
    # used (AMX, CPU_REPACK or plain CPU) and flash attention (auto).
    grep -E 'model buffer size|Flash Attention (enabled|disabled)' "$err" \
        | sed -E 's/^[0-9.]+ [A-Z] //; s/^/    llama.cpp: /' || true
    grep -vE '^[[:space:]]*$' "$out"
    return 0
}

RESULT_NAME=
NATIVE_DESC="build/ (GGML_NATIVE=ON, -march=native: AMX kernels compiled in iff the host has AMX = $HOST_AMX), weight repacking on (default)"
rc=0
llama_cpp_build llama-batched-bench
run_batched native "$LLAMA_CPP_BIN/llama-batched-bench" "$NATIVE_DESC" || rc=$?
if (( rc == 2 )); then
    echo "The native run crashed; retrying the same build with --no-repack (no AMX / repacked weight buffers)."
    rc=0
    run_batched native-norepack "$LLAMA_CPP_BIN/llama-batched-bench" \
        "build/ (GGML_NATIVE=ON) with --no-repack: no AMX, no CPU_REPACK buffers" --no-repack || rc=$?
fi
if (( rc == 2 )); then
    echo "That crashed too; building llama-batched-bench without AMX (build-noamx/) and retrying."
    llama_cpp_no_amx_options
    llama_cpp_build -B build-noamx "${LLAMA_CPP_NO_AMX_ARGS[@]}" llama-batched-bench
    rc=0
    run_batched noamx "$LLAMA_CPP_BIN/llama-batched-bench" \
        "build-noamx/ (GGML_NATIVE=OFF, host SIMD from /proc/cpuinfo, GGML_AMX_*=OFF), weight repacking on (default)" || rc=$?
fi
echo
if (( rc != 0 )); then
    echo "llama.cpp: NO RESULT (every attempt failed; see above). Raw output: $LOG_DIR"
    status=1
else
    if [[ "$RESULT_NAME" != native ]]; then
        echo "NOTE: the default native configuration CRASHED on this host; the llama.cpp table above is from attempt '$RESULT_NAME'."
    fi
    echo "Raw llama.cpp output: $LOG_DIR"
fi
exit "$status"
