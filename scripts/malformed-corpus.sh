#!/usr/bin/env bash
# Writes the malformed-model corpus (broken variants of
# testdata/models/tiny-llama2-q8_0.gguf: truncations, wrong magic/version,
# offsets past the end, 2^40-element claims, shape mismatches, missing keys,
# unknown tensor types, zero layers, vocabulary/embedding disagreement) to
# OUT_DIR (default target/malformed-models), with expected.txt listing the
# words each load error must contain. The test
# worker/tests/malformed_models.rs generates the same cases in memory.
#   scripts/malformed-corpus.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet -p rbees-worker --example malformed_corpus -- "$@"
