#!/usr/bin/env bash
# End-to-end throughput of `rbees generate` until `rbees bench` exists:
# a 128-token prompt (SmolLM2 tokenizer), 64 greedy decode tokens with EOS
# ignored, REPS runs, peak RSS from /usr/bin/time (GNU time: apt install time).
# Usage: benches/cli-throughput.sh [MODEL] [THREADS] [REPS] [extra rbees args...]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${2:-2}
REPS=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
PROMPT="Bees are flying insects closely related to wasps and ants, known for their roles in pollination and, in the case of the best-known bee species, the western honey bee, for producing honey. Bees are a monophyletic lineage within the superfamily Apoidea. There are over 20,000 known species of bees in seven recognized biological families. Some species, including honey bees, bumblebees, and stingless bees, live socially in colonies while most species are solitary. Bees are found on every continent except Antarctica, in every habitat on the planet that contains insect-pollinated flowering plants. Tell me more:"
cargo build --release --quiet -p rbees-worker --bin rbees
for _ in $(seq "$REPS"); do
    /usr/bin/time -f "peak RSS %M KiB" target/release/rbees generate --model "$MODEL" \
        --prompt "$PROMPT" --max-tokens 64 --temperature 0 --ignore-eos --threads "$THREADS" "$@" \
        2>&1 >/dev/null | grep -E "tokens/s|peak RSS"
done
