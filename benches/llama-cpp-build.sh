# shellcheck shell=bash
# Builds llama.cpp tools for the comparison benchmarks; sourced (not run) by
# benches/llama-bench.sh and benches/llama-batched-bench.sh, so that both use
# the same llama.cpp, built the same way.
#
# The llama.cpp is the one the `llama-cpp-python` sdist vendors (PyPI; cmake
# and ninja come from PyPI too, into a venv). Everything lives in a cache
# folder, ${RBEES_LLAMA_CPP_CACHE:-~/.cache/rbees/llama.cpp}:
#   venv/       cmake + ninja
#   download/   the sdist
#   src/        the unpacked sdist (llama.cpp in src/vendor/llama.cpp)
#   build/      the default build, -DGGML_NATIVE=ON (host SIMD, as rbees' own
#               build); binaries in build/bin/
#   build-*/    other configurations (see -B/-D below)
#   *.log       cmake's output (cmake[-NAME].log, build[-NAME].log)
# About 10 minutes on 2 cores the first time; a target already built is not
# rebuilt (delete its build folder to start over).
#
#   source benches/llama-cpp-build.sh
#   llama_cpp_build llama-bench llama-batched-bench      # -> $LLAMA_CPP_BIN/...
#   llama_cpp_build -B build-noamx -D GGML_NATIVE=OFF -D GGML_AVX2=ON llama-batched-bench
#
# After a call, $LLAMA_CPP_BIN is the bin/ folder of the build just used.

LLAMA_CPP_PYTHON_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
LLAMA_CPP_CACHE=${RBEES_LLAMA_CPP_CACHE:-$HOME/.cache/rbees/llama.cpp}
LLAMA_CPP_BIN="$LLAMA_CPP_CACHE/build/bin"

# llama_cpp_build [-B BUILD_SUBDIR] [-D NAME=VALUE]... TARGET...
#   -B  build folder under the cache (default: build)
#   -D  cmake options added after the defaults (a later -D wins in cmake)
llama_cpp_build() {
    local build_name=build
    local -a extra=()
    while (( $# )); do
        case "$1" in
            -B) build_name=$2; shift 2 ;;
            -D) extra+=("-D$2"); shift 2 ;;
            *) break ;;
        esac
    done
    if (( $# == 0 )); then
        echo "llama_cpp_build: no target given" >&2
        return 2
    fi
    local build_dir="$LLAMA_CPP_CACHE/$build_name"
    local suffix=${build_name#build}
    LLAMA_CPP_BIN="$build_dir/bin"

    local -a missing=()
    local t
    for t in "$@"; do
        [[ -x "$LLAMA_CPP_BIN/$t" ]] || missing+=("$t")
    done
    if (( ${#missing[@]} == 0 )); then return 0; fi

    echo "building ${missing[*]} (llama.cpp of llama-cpp-python $LLAMA_CPP_PYTHON_VERSION) into $build_dir" >&2
    mkdir -p "$LLAMA_CPP_CACHE"
    if [[ ! -x "$LLAMA_CPP_CACHE/venv/bin/cmake" || ! -x "$LLAMA_CPP_CACHE/venv/bin/ninja" ]]; then
        python3 -m venv "$LLAMA_CPP_CACHE/venv"
        "$LLAMA_CPP_CACHE/venv/bin/pip" install --quiet cmake ninja
    fi
    if [[ ! -d "$LLAMA_CPP_CACHE/src/vendor/llama.cpp" ]]; then
        local dl="$LLAMA_CPP_CACHE/download"
        mkdir -p "$dl"
        "$LLAMA_CPP_CACHE/venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$dl"
        rm -rf "$LLAMA_CPP_CACHE/src"
        mkdir -p "$LLAMA_CPP_CACHE/src"
        tar -xzf "$dl"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION".tar.gz \
            -C "$LLAMA_CPP_CACHE/src" --strip-components=1
    fi
    local cmake_log="$LLAMA_CPP_CACHE/cmake$suffix.log"
    local build_log="$LLAMA_CPP_CACHE/build$suffix.log"
    if ! PATH="$LLAMA_CPP_CACHE/venv/bin:$PATH" cmake \
        -S "$LLAMA_CPP_CACHE/src/vendor/llama.cpp" -B "$build_dir" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON \
        "${extra[@]}" >"$cmake_log" 2>&1; then
        echo "llama.cpp: cmake failed; last lines of $cmake_log:" >&2
        tail -n 30 "$cmake_log" >&2
        return 1
    fi
    if ! PATH="$LLAMA_CPP_CACHE/venv/bin:$PATH" cmake --build "$build_dir" \
        --target "${missing[@]}" -j "$(nproc)" >"$build_log" 2>&1; then
        echo "llama.cpp: build failed; last lines of $build_log:" >&2
        tail -n 30 "$build_log" >&2
        return 1
    fi
}

# Sets LLAMA_CPP_NO_AMX_ARGS to llama_cpp_build options for a build with the
# host's x86 SIMD but without AMX: -march=native would turn AMX on wherever
# the CPU has it, so this lists the host's features (from /proc/cpuinfo) as
# GGML_* options instead, with GGML_NATIVE=OFF and every GGML_AMX_* OFF.
llama_cpp_no_amx_options() {
    local flags
    flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    LLAMA_CPP_NO_AMX_ARGS=(-D GGML_NATIVE=OFF
        -D GGML_AMX_TILE=OFF -D GGML_AMX_INT8=OFF -D GGML_AMX_BF16=OFF)
    local pair cpu opt
    for pair in sse4_2:GGML_SSE42 avx:GGML_AVX avx2:GGML_AVX2 fma:GGML_FMA f16c:GGML_F16C \
        bmi2:GGML_BMI2 avx_vnni:GGML_AVX_VNNI avx512f:GGML_AVX512 avx512vbmi:GGML_AVX512_VBMI \
        avx512_vnni:GGML_AVX512_VNNI avx512_bf16:GGML_AVX512_BF16; do
        cpu=${pair%%:*} opt=${pair#*:}
        if [[ "$flags" == *" $cpu "* ]]; then
            LLAMA_CPP_NO_AMX_ARGS+=(-D "$opt=ON")
        else
            LLAMA_CPP_NO_AMX_ARGS+=(-D "$opt=OFF")
        fi
    done
}

# llama_cpp_compare TOOL CHECK NO_REPACK LOG_DIR -- ARGS...
# Runs llama.cpp's TOOL (built here with llama_cpp_build) with ARGS and
# prints its table, labelled with the llama.cpp configuration that produced
# it; never a crashed run as a result. On Intel CPUs with AMX the
# GGML_NATIVE build has been seen to die with SIGSEGV in
# ggml_backend_amx_mul_mat, so a run killed by a signal is reported and the
# next configuration tried:
#   1. native build (build/), defaults: weights repacked into the AMX /
#      CPU-repack buffer types where the CPU supports them;
#   2. the same binary with NO_REPACK (the tool's flag for no extra buffer
#      types: "--no-repack" or "--repack 0"): neither AMX nor repacked kernels;
#   3. a second build, build-noamx/: GGML_NATIVE=OFF with the host's SIMD from
#      /proc/cpuinfo and every GGML_AMX_* OFF, defaults.
# A run that fails without a signal (bad model, bad flag) is reported and not
# retried. CHECK is a function given the attempt's stdout file: non-zero
# (after saying why) when a row the comparison needs is missing. Stdout and
# stderr of each attempt are kept in LOG_DIR/NAME.{out,err}.
# Returns 0 with a result (LLAMA_CPP_RESULT names the attempt), 1 without.
llama_cpp_compare() {
    local tool=$1 check=$2 no_repack=$3 log_dir=$4
    shift 4
    [[ "${1:-}" == "--" ]] && shift
    local host_amx=no
    grep -qw amx_int8 /proc/cpuinfo && host_amx=yes
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') (AMX: $host_amx)"
    LLAMA_CPP_RESULT=
    local -a no_repack_args
    read -ra no_repack_args <<<"$no_repack"
    local rc=0
    llama_cpp_build "$tool" || return 1
    _llama_cpp_attempt native "$LLAMA_CPP_BIN/$tool" \
        "build/ (GGML_NATIVE=ON, -march=native: AMX kernels compiled in iff the host has AMX = $host_amx), weight repacking on (default)" \
        "$check" "$log_dir" "$@" || rc=$?
    if (( rc == 2 )); then
        echo "The native run crashed; retrying the same build with $no_repack (no AMX / repacked weight buffers)."
        rc=0
        _llama_cpp_attempt native-norepack "$LLAMA_CPP_BIN/$tool" \
            "build/ (GGML_NATIVE=ON) with $no_repack: no AMX, no CPU_REPACK buffers" \
            "$check" "$log_dir" "$@" "${no_repack_args[@]}" || rc=$?
    fi
    if (( rc == 2 )); then
        echo "That crashed too; building $tool without AMX (build-noamx/) and retrying."
        llama_cpp_no_amx_options
        llama_cpp_build -B build-noamx "${LLAMA_CPP_NO_AMX_ARGS[@]}" "$tool" || return 1
        rc=0
        _llama_cpp_attempt noamx "$LLAMA_CPP_BIN/$tool" \
            "build-noamx/ (GGML_NATIVE=OFF, host SIMD from /proc/cpuinfo, GGML_AMX_*=OFF), weight repacking on (default)" \
            "$check" "$log_dir" "$@" || rc=$?
    fi
    echo
    if (( rc != 0 )); then
        echo "llama.cpp: NO RESULT (every attempt failed; see above). Raw output: $log_dir"
        return 1
    fi
    if [[ "$LLAMA_CPP_RESULT" != native ]]; then
        echo "NOTE: the default native configuration CRASHED on this host; the llama.cpp table above is from attempt '$LLAMA_CPP_RESULT'."
    fi
    echo "Raw llama.cpp output: $log_dir"
}

# _llama_cpp_attempt NAME BIN DESCRIPTION CHECK LOG_DIR ARGS...: one run of
# llama_cpp_compare. Returns 0 and prints the table when it exited 0 and
# CHECK accepts its output; 2 when it was killed by a signal (a crash: worth
# another configuration); 1 on any other failure.
_llama_cpp_attempt() {
    local name=$1 bin=$2 desc=$3 check=$4 log_dir=$5
    shift 5
    local out="$log_dir/$name.out" err="$log_dir/$name.err"
    echo
    echo "### attempt '$name': $desc"
    echo "\$ $bin $*"
    local rc=0
    "$bin" "$@" >"$out" 2>"$err" || rc=$?
    if (( rc > 128 )); then
        echo "CRASHED: killed by SIG$(kill -l $(( rc - 128 )) 2>/dev/null || echo "#$(( rc - 128 ))") (exit status $rc); NOT a result. Last lines of stderr ($err):"
        tail -n 15 "$err" | sed 's/^/    /'
        return 2
    elif (( rc != 0 )); then
        echo "FAILED: exit status $rc. Last lines of stderr ($err):"
        tail -n 15 "$err" | sed 's/^/    /'
        return 1
    fi
    "$check" "$out" || return 1
    LLAMA_CPP_RESULT=$name
    echo "llama.cpp configuration that produced this table: $desc"
    # What llama.cpp chose, where the tool logs it: the weight buffer types
    # really used (AMX, CPU_REPACK or plain CPU) and flash attention.
    grep -E 'model buffer size|Flash Attention (enabled|disabled)' "$err" \
        | sed -E 's/^[0-9.]+ [A-Z] //; s/^/    llama.cpp: /' || true
    grep -vE '^[[:space:]]*$' "$out"
    return 0
}
