#!/usr/bin/env bash
# The whole test suite, from a fresh clone: fetch the default model the
# llama.cpp comparison tests need, then run every workspace test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo test --workspace "$@"
