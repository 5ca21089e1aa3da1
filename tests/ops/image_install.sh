#!/usr/bin/env bash
# The Dockerfile's install steps, without a Docker engine: build the wheel (with the C
# extension) and the wheels of its dependencies from a copy of the build context, as the
# builder stage does; install them into a fresh virtualenv with no index and no source
# tree, and put the page beside it, as the runtime stage does.
#   tests/ops/image_install.sh SOURCE_DIR WORK_DIR
# Leaves WORK_DIR/venv (the image's Python) and WORK_DIR/web (its TICKER_WEB_DIR).
set -euo pipefail
src=$(cd "$1" && pwd)
work=$2
mkdir -p "$work/context"

# The build context: what the Dockerfile copies (and .dockerignore leaves out compiled files).
cp -r "$src/pyproject.toml" "$src/README.md" "$src/ticker" "$src/simulator" "$work/context/"
find "$work/context" \( -name '*.so' -o -name '*.pyc' \) -delete
find "$work/context" -name __pycache__ -prune -exec rm -rf {} +

# Builder stage.
python3 -m pip wheel -q --no-cache-dir --no-deps --wheel-dir "$work/wheels" "$work/context"
wheel=$(ls "$work"/wheels/festival_ticker-*.whl)
listing=$(python3 -m zipfile -l "$wheel")
grep -q 'ticker/_fanout.*\.so' <<<"$listing" || {
    echo "image_install: the wheel lacks the C extension ticker._fanout" >&2
    exit 1
}
python3 -m pip wheel -q --no-cache-dir --wheel-dir "$work/wheels" "$wheel"

# Runtime stage: from the wheels only.
python3 -m venv "$work/venv"
(cd "$work" && "$work/venv/bin/python" -m pip install -q --no-cache-dir --no-index \
    --find-links "$work/wheels" festival-ticker)
cp -r "$src/web" "$work/web"
