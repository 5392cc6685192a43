#!/usr/bin/env bash
# The whole test suite, from a fresh clone: fetch the default model the
# llama.cpp comparison tests need, install the `openai` Python package the
# OpenAI-client test uses (into .venv-test/, once), then run every workspace
# test. Arguments go to `cargo test`, e.g.
#   scripts/test.sh -p rbees-worker --test daemon_openai_client
# (with no `-p`/`--package`, `--workspace` is added).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh

# The official OpenAI Python client, pinned; see worker/tests/daemon_openai_client.rs.
OPENAI_PIN=openai==3.51.0
PYTHON=${PYTHON:-python3}
VENV=.venv-test
has_openai() { "$1" -c 'import openai' >/dev/null 2>&1; }
if [ -x "$VENV/bin/python" ] && has_openai "$VENV/bin/python"; then
    RBEES_TEST_PYTHON=$PWD/$VENV/bin/python
else
    # A half-made venv (no pip, interrupted install) is made anew.
    if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }; then
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 || rm -rf "$VENV"
    fi
    if [ -x "$VENV/bin/python" ]; then
        echo "installing $OPENAI_PIN into $VENV/ ..." >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$OPENAI_PIN"
        RBEES_TEST_PYTHON=$PWD/$VENV/bin/python
    else
        # No venv module (e.g. Debian without python3-venv): a user install.
        echo "'$PYTHON -m venv' is unavailable; installing $OPENAI_PIN with pip --user ..." >&2
        if ! has_openai "$PYTHON"; then
            "$PYTHON" -m pip install --quiet --disable-pip-version-check --user "$OPENAI_PIN" ||
                "$PYTHON" -m pip install --quiet --disable-pip-version-check --user \
                    --break-system-packages "$OPENAI_PIN" || {
                echo "error: cannot install $OPENAI_PIN: install python3-venv (or pip) and rerun" >&2
                exit 1
            }
        fi
        RBEES_TEST_PYTHON=$(command -v "$PYTHON")
    fi
    has_openai "$RBEES_TEST_PYTHON" || {
        echo "error: $RBEES_TEST_PYTHON still cannot import openai" >&2
        exit 1
    }
fi
export RBEES_TEST_PYTHON

# `cargo test --workspace -p X` would run the whole workspace anyway, so a
# package choice replaces --workspace.
scope=--workspace
for arg in "$@"; do
    case "$arg" in
    -p | -p* | --package | --package=* | --manifest-path | --manifest-path=*) scope= ;;
    --) break ;;
    esac
done
cargo test $scope "$@"
if [ $# -eq 0 ]; then
    # Every criterion bench once, in criterion's test mode: each op runs on
    # each backend at both shapes (about 1-2 minutes; timing needs `cargo bench`).
    cargo test -p rbees-benches --benches
fi
