#!/usr/bin/env bash
# Runs each cargo-fuzz target for a fixed time, one after another, in one
# process each (needs a nightly toolchain and `cargo install cargo-fuzz`; CI does
# not run this). Working corpora grow in fuzz/corpus/TARGET (not committed);
# the committed seeds are read from fuzz/seeds/TARGET, and for gguf_load
# also the tiny test models. Crashes land in fuzz/artifacts/TARGET; a fixed
# crash goes to fuzz/regressions/TARGET, which the stable test
# worker/tests/fuzz_regressions.rs replays.
#   scripts/fuzz.sh [SECONDS_PER_TARGET (default 600)] [TARGET...]
# Each target's libFuzzer log is kept in fuzz/logs/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(tokenizer config_toml execute_request openai_request gguf_load)
fi
# The BPE tokenizer and chat-template targets read SmolLM2.
scripts/fetch-model.sh
mkdir -p fuzz/logs
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    extra=()
    max_len=4096
    if [ "$t" = gguf_load ]; then
        extra=(testdata/models)
        max_len=600000
    fi
    echo "== $t: ${secs}s" >&2
    # `-s none`: the targets are safe Rust; no sanitizer makes each run ~2x faster.
    (cd fuzz && cargo +nightly fuzz run -s none "$t" "corpus/$t" "seeds/$t" "${extra[@]/#/../}" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=30 -rss_limit_mb=4096 \
        -print_final_stats=1) 2>&1 | tee "fuzz/logs/$t.log" | grep -E '^(#[0-9]+ +(DONE|INITED)|==|stat::|.*(panicked|ERROR|crash-|Test unit written))' || true
done
