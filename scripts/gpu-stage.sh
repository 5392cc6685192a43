#!/usr/bin/env bash
# Prepares the one folder the GPU machine needs (see docs/cuda.md): a
# portable CUDA build of `rbees`, the CUDA library finder, the tiny test
# models, and gpu-check.sh, which runs everything there and writes logs
# under $OUT. The folder (gpu-run/) is git-ignored; carry it with the
# device tool and run `bash gpu-run/gpu-check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
eval "$(bash "$SHARED/cuda/setup-toolchain.sh" --print-env)"
RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_TARGET_DIR=target-cuda \
    cargo build --release -p rbees-worker --features cuda
rm -rf gpu-run && mkdir -p gpu-run
# Stripped it is ~64 MB (candle-kernels' PTX text is in it twice: candle-core
# and cuda-kernels each inline the constants); gzip makes it ~15 MB, well
# inside the device call's 64 MiB carry limit. gpu-check.sh unpacks it.
cp target-cuda/release/rbees gpu-run/rbees && strip gpu-run/rbees
gzip -9 -f gpu-run/rbees
cp "$SHARED/cuda/run-with-cuda-libs.sh" gpu-run/
cp testdata/models/tiny-llama2-*.gguf gpu-run/
cp scripts/gpu-check.sh gpu-run/
du -sh gpu-run
