#!/usr/bin/env bash
# Prepares the one folder the GPU machine needs (see docs/cuda.md): a
# portable CUDA build of `rbees` and of the cuda-kernels device checks, the
# CUDA library finder, the tiny test models, and gpu-check.sh, which runs
# everything there and writes logs under $OUT. The folder (gpu-run/) is git-ignored; carry it with the
# device tool and run `bash gpu-run/gpu-check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
eval "$(bash "$SHARED/cuda/setup-toolchain.sh" --print-env)"
# `rbees`, and the cuda-kernels device checks (rbees-cuda-device-check:
# masked attention positions, F16/BF16 weights, the load-time memory check,
# which the conformance suite does not cover; gpu-check.sh step 7 runs it),
# in one invocation: the same features for both, so nothing is compiled
# twice (a separate build of the backend crate alone would resolve other
# build-dependency features and compile candle-kernels' PTX again).
RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_TARGET_DIR=target-cuda \
    cargo build --release -p rbees-worker -p rbees-backend-cuda \
    --features rbees-worker/cuda --bin rbees --bin rbees-cuda-device-check
rm -rf gpu-run && mkdir -p gpu-run
# Stripped it is ~64 MB (candle-kernels' PTX text is in it twice: candle-core
# and cuda-kernels each inline the constants); gzip makes it ~15 MB, well
# inside the device call's 64 MiB carry limit. gpu-check.sh unpacks it.
cp target-cuda/release/rbees gpu-run/rbees && strip gpu-run/rbees
gzip -9 -f gpu-run/rbees
# ~11 MB gzipped (candle-kernels' PTX once, plus ours).
cp target-cuda/release/rbees-cuda-device-check gpu-run/ && strip gpu-run/rbees-cuda-device-check
gzip -9 -f gpu-run/rbees-cuda-device-check
cp "$SHARED/cuda/run-with-cuda-libs.sh" gpu-run/
cp testdata/models/tiny-llama2-*.gguf gpu-run/
cp scripts/gpu-check.sh gpu-run/
du -sh gpu-run
