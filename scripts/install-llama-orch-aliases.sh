#!/usr/bin/env bash
# Installs rbees-workerd under the binary names llama-orch's spawners run
# (docs/worker.md, "llama-orch compatibility"), as symlinks in DIR:
#   llm-worker-rbee                   the older hive (bin/old.rbee-hive, 29909f0b)
#   llm-worker-rbee-cpu, -cuda        the current hive's worker catalog names
# With --port-shims, also worker-cpu-PORT and worker-cuda-PORT for PORT in
# 9000..9999: the current hive (6ca91007) looks the binary up by the
# worker id it makes up (worker-<type>-<random port>) rather than by its
# catalog name, so only a name per port lets it start any binary.
#
# Usage: scripts/install-llama-orch-aliases.sh [--port-shims] [DIR]
#        (DIR default: ~/.local/bin, where that hive looks first; the
#        binary is target/release/rbees-workerd, built here, unless
#        RBEES_WORKERD names one)
set -euo pipefail
cd "$(dirname "$0")/.."
shims=0
if [ "${1:-}" = "--port-shims" ]; then
    shims=1
    shift
fi
dir="${1:-$HOME/.local/bin}"
if [ -n "${RBEES_WORKERD:-}" ]; then
    binary="$(realpath "$RBEES_WORKERD")"
else
    cargo build --release --quiet -p rbees-worker --bin rbees-workerd
    binary="$(pwd)/target/release/rbees-workerd"
fi
mkdir -p "$dir"
names=(llm-worker-rbee llm-worker-rbee-cpu llm-worker-rbee-cuda)
if [ "$shims" = 1 ]; then
    for port in $(seq 9000 9999); do
        names+=("worker-cpu-$port" "worker-cuda-$port")
    done
fi
for name in "${names[@]}"; do
    ln -sf "$binary" "$dir/$name"
done
echo "linked ${#names[@]} names in $dir to $binary"
# The hive runs a binary only if `--build-info` prints release or debug.
"$dir/llm-worker-rbee" --build-info
