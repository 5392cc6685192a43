#!/usr/bin/env bash
# rbees next to the field's reference engine, in one command: `rbees bench`
# on a model, then llama.cpp's `llama-bench` on the same model, thread count,
# prompt and decode lengths.
#
# llama-bench is built once from the llama.cpp that the `llama-cpp-python`
# sdist vendors (PyPI; cmake comes from PyPI too) into a cache folder,
# ${RBEES_LLAMA_CPP_CACHE:-~/.cache/rbees/llama.cpp}, with -DGGML_NATIVE=ON
# (host SIMD, as rbees' own build). About 10 minutes on 2 cores the first time.
#
# Usage: benches/llama-bench.sh [--build-only] [MODEL] [THREADS] [PP] [TG] [REPS] [rbees bench args...]
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_PYTHON_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE=${RBEES_LLAMA_CPP_CACHE:-$HOME/.cache/rbees/llama.cpp}
LLAMA_BENCH="$CACHE/build/bin/llama-bench"

build_llama_bench() {
    if [[ -x "$LLAMA_BENCH" ]]; then return; fi
    echo "building llama-bench (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist) into $CACHE" >&2
    mkdir -p "$CACHE"
    if [[ ! -x "$CACHE/venv/bin/cmake" ]]; then
        python3 -m venv "$CACHE/venv"
        "$CACHE/venv/bin/pip" install --quiet cmake ninja
    fi
    if [[ ! -d "$CACHE/src" ]]; then
        local dl="$CACHE/download"
        mkdir -p "$dl"
        "$CACHE/venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$dl"
        mkdir -p "$CACHE/src"
        tar -xzf "$dl"/llama_cpp_python-*.tar.gz -C "$CACHE/src" --strip-components=1
    fi
    PATH="$CACHE/venv/bin:$PATH" cmake -S "$CACHE/src/vendor/llama.cpp" -B "$CACHE/build" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON \
        >"$CACHE/cmake.log"
    PATH="$CACHE/venv/bin:$PATH" cmake --build "$CACHE/build" --target llama-bench -j "$(nproc)" \
        >"$CACHE/build.log"
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
