#!/usr/bin/env bash
# The main job: fetch the default model if missing, build, generate.
# Arguments go to `rbees generate` (see `rbees generate --help`); without
# any, it answers a chat-formatted question greedily.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo build --release --quiet -p rbees-worker --bin rbees
if [ $# -eq 0 ]; then
    set -- --prompt $'<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n' \
        --temperature 0 --max-tokens 64
fi
exec target/release/rbees generate "$@"
