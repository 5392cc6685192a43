#!/usr/bin/env bash
# Quality side by side with llama.cpp, in one command:
#  1. perplexity of SmolLM2-135M Q4_1 and of its requantised Q4_K_M over a
#     public-domain text: `rbees perplexity` (cpu backend) next to
#     llama.cpp's `llama-perplexity`, same file, model, context and chunks;
#  2. KL divergence of each rbees backend on Q4_1 and Q4_K_M from the
#     F32-weights reference (the Q4_1 file dequantised by llama-quantize),
#     whose logits rbees' ndarray backend writes in llama-perplexity's
#     `--kl-divergence-base` format; llama-perplexity reads the same file
#     and reports its own KLD of the same two models.
#
# The text: Project Gutenberg #103, Jules Verne's "Around the World in 80
# Days" (public domain), as the crate esaxx-rs 0.1.10 (Apache-2.0; a
# dependency of `tokenizers`, so `cargo fetch` brings it) ships it in
# data/eighty.txt: 398,631 bytes, 106,421 SmolLM2 tokens, used as is.
#
# llama.cpp tools are built by benches/llama-cpp-build.sh (the llama.cpp of
# the llama-cpp-python sdist); a llama.cpp run killed by a signal is never a
# result (llama_cpp_compare retries with --no-repack, then without AMX).
#
# Usage: benches/perplexity-vs-llama.sh [OUT.md]
#   CTX (512), CHUNKS (100: 51,200 tokens of the text), KLD_CHUNKS (20)
# Work files (the derived models, the reference logits: 25 MB per chunk)
# go to ${RBEES_PPL_WORK:-target/perplexity}. Not part of CI (about an hour
# on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/llama-cpp-build.sh

OUT=${1:-docs/results/$(date +%F)-perplexity-smollm2.md}
CTX=${CTX:-512}
CHUNKS=${CHUNKS:-100}
KLD_CHUNKS=${KLD_CHUNKS:-20}
WORK=${RBEES_PPL_WORK:-target/perplexity}
TEXT_SHA256=f95647ced7981db2c1c7c50c77a1b89e3df569d9a20e8ad5c9e40ed2d2f4d268
mkdir -p "$WORK" "$(dirname "$OUT")"

scripts/fetch-model.sh
llama_cpp_build llama-perplexity llama-quantize
BIN=$LLAMA_CPP_BIN
cargo fetch --quiet
TEXT=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*/esaxx-rs-0.1.10/data/eighty.txt' | head -n 1)
if [[ -z "$TEXT" ]] || ! echo "$TEXT_SHA256  $TEXT" | sha256sum --check --quiet; then
    echo "the text (esaxx-rs 0.1.10 data/eighty.txt) is missing or changed: $TEXT" >&2
    exit 1
fi
Q41=models/SmolLM2-135M-Instruct.Q4_1.gguf
F32=$WORK/SmolLM2-135M-Instruct.F32.gguf
QKM=$WORK/SmolLM2-135M-Instruct.Q4_K_M.gguf
[[ -f "$F32" ]] || "$BIN/llama-quantize" --allow-requantize "$Q41" "$F32" F32 >"$WORK/quantize-f32.log" 2>&1
[[ -f "$QKM" ]] || "$BIN/llama-quantize" --allow-requantize "$Q41" "$QKM" Q4_K_M >"$WORK/quantize-q4km.log" 2>&1
cargo build --release --quiet -p rbees-worker --bin rbees
RBEES=target/release/rbees

# llama-perplexity writes "Final estimate" to stderr: the run counts only with it.
has_final_estimate() {
    grep -h 'Final estimate: PPL' "${1%.out}.err" || {
        echo "no 'Final estimate' line: not a result (see ${1%.out}.err)"
        return 1
    }
}
has_kld_stats() {
    grep -q 'Mean    KLD' "$1" || {
        echo "no KLD statistics: not a result (see $1)"
        return 1
    }
}

{
echo "# Perplexity and KL divergence, rbees next to llama.cpp ($(date -u +%F))"
echo
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) threads; rbees $(git rev-parse --short HEAD)."
echo "Text: esaxx-rs 0.1.10 data/eighty.txt (Project Gutenberg #103, public domain; crate Apache-2.0), sha256 $TEXT_SHA256."
echo "Context $CTX, $CHUNKS chunks for perplexity ($((CHUNKS * CTX)) tokens of the text), $KLD_CHUNKS for KL divergence."
echo "Command: benches/perplexity-vs-llama.sh (CTX=$CTX CHUNKS=$CHUNKS KLD_CHUNKS=$KLD_CHUNKS)"
for M in "$Q41" "$QKM"; do
    name=$(basename "$M" .gguf)
    echo
    echo "## Perplexity: $name"
    echo
    echo "### rbees perplexity (cpu backend)"
    echo "\$ $RBEES perplexity --model $M --file TEXT --backend cpu --ctx $CTX --chunks $CHUNKS"
    "$RBEES" perplexity --model "$M" --file "$TEXT" --backend cpu --ctx "$CTX" --chunks "$CHUNKS" \
        --json "$WORK/rbees-$name.json" 2>/dev/null
    echo
    echo "### llama.cpp llama-perplexity"
    llama_cpp_compare llama-perplexity has_final_estimate "--no-repack" "$(mkdir -p "$WORK/llama-$name" && echo "$WORK/llama-$name")" -- \
        -m "$M" -f "$TEXT" -c "$CTX" --chunks "$CHUNKS" -t "$(nproc)" --no-log-prefix --no-log-timestamps || true
    python3 - "$WORK/rbees-$name.json" "$WORK/llama-$name" <<'EOF'
import json, re, sys, glob
r = json.load(open(sys.argv[1]))["results"][0]
found = None
for err in sorted(glob.glob(sys.argv[2] + "/*.err")):
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", open(err).read())
    if m: found = (float(m.group(1)), float(m.group(2)), err)
if found:
    d = 100 * (r["ppl"] / found[0] - 1)
    print(f"\n**rbees {r['ppl']:.4f} ± {r['ppl_err']:.5f} vs llama.cpp {found[0]:.4f} ± {found[1]:.5f}: {d:+.3f}%** ({found[2]})")
else:
    print("\n**llama.cpp gave no result: no comparison.**")
EOF
done
echo
echo "## KL divergence from the F32-weights reference"
echo
echo "The reference: $F32 (llama-quantize --allow-requantize $Q41 F32), run on rbees' ndarray backend (f32 arithmetic throughout)."
echo "\$ $RBEES perplexity --model $F32 --file TEXT --backend ndarray --ctx $CTX --chunks $KLD_CHUNKS --kl-base $WORK/f32.kld"
rm -f "$WORK/f32.kld"
"$RBEES" perplexity --model "$F32" --file "$TEXT" --backend ndarray --ctx "$CTX" --chunks "$KLD_CHUNKS" \
    --kl-base "$WORK/f32.kld" 2>/dev/null
for M in "$Q41" "$QKM"; do
    name=$(basename "$M" .gguf)
    echo
    echo "### $name, rbees (every built-in CPU backend, one table)"
    echo "\$ $RBEES perplexity --model $M --backend cpu --backend candle --backend ndarray --kl-base $WORK/f32.kld"
    "$RBEES" perplexity --model "$M" --backend cpu --backend candle --backend ndarray \
        --kl-base "$WORK/f32.kld" --json "$WORK/kld-$name.json" 2>/dev/null
    echo
    echo "### $name, llama.cpp's own KLD from the same reference file"
    llama_cpp_compare llama-perplexity has_kld_stats "--no-repack" "$(mkdir -p "$WORK/llama-kld-$name" && echo "$WORK/llama-kld-$name")" -- \
        -m "$M" --kl-divergence-base "$WORK/f32.kld" --kl-divergence -c "$CTX" -t "$(nproc)" \
        --no-log-prefix --no-log-timestamps || true
done
} 2>&1 | tee "$OUT"
