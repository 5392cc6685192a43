#!/usr/bin/env bash
# The whole test suite, from a fresh clone: fetch the default model the
# llama.cpp comparison tests need, install the Python packages the
# OpenAI-client and web-page tests use (`openai`, `selenium`; into
# .venv-test/, once) and Chromium with its driver (Debian's `chromium`,
# `chromium-driver`, where apt can install them), then run every workspace
# test. Arguments go to `cargo test`, e.g.
#   scripts/test.sh -p rbees-worker --test daemon_openai_client
# (with no `-p`/`--package`, `--workspace` is added).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh

# The official OpenAI Python client and Selenium, pinned; see
# worker/tests/daemon_openai_client.rs and worker/tests/web_ui.rs.
TEST_PY_PINS="openai==3.51.0 selenium==4.51.0"
PYTHON=${PYTHON:-python3}
VENV=.venv-test
has_test_py() { "$1" -c 'import openai, selenium' >/dev/null 2>&1; }
if [ -x "$VENV/bin/python" ] && has_test_py "$VENV/bin/python"; then
    RBEES_TEST_PYTHON=$PWD/$VENV/bin/python
else
    # A half-made venv (no pip, interrupted install) is made anew.
    if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }; then
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 || rm -rf "$VENV"
    fi
    if [ -x "$VENV/bin/python" ]; then
        echo "installing $TEST_PY_PINS into $VENV/ ..." >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $TEST_PY_PINS
        RBEES_TEST_PYTHON=$PWD/$VENV/bin/python
    else
        # No venv module (e.g. Debian without python3-venv): a user install.
        echo "'$PYTHON -m venv' is unavailable; installing $TEST_PY_PINS with pip --user ..." >&2
        if ! has_test_py "$PYTHON"; then
            "$PYTHON" -m pip install --quiet --disable-pip-version-check --user $TEST_PY_PINS ||
                "$PYTHON" -m pip install --quiet --disable-pip-version-check --user \
                    --break-system-packages $TEST_PY_PINS || {
                echo "error: cannot install $TEST_PY_PINS: install python3-venv (or pip) and rerun" >&2
                exit 1
            }
        fi
        RBEES_TEST_PYTHON=$(command -v "$PYTHON")
    fi
    has_test_py "$RBEES_TEST_PYTHON" || {
        echo "error: $RBEES_TEST_PYTHON still cannot import openai and selenium" >&2
        exit 1
    }
fi
export RBEES_TEST_PYTHON

# Headless Chromium for worker/tests/web_ui.rs; without it that test says
# it is skipped.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo -n)
    echo "installing chromium and chromium-driver with apt-get ..." >&2
    if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
        { "${as_root[@]}" apt-get update -q >/dev/null 2>&1 &&
            "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; }; then
        echo "warning: cannot install chromium/chromium-driver: the headless-browser test will be skipped" >&2
    fi
fi

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
    # Every intra-doc link resolves, private items included: a renamed or
    # removed type breaks the docs that name it here, not in a reader's hands.
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items
fi
