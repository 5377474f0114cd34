#!/usr/bin/env bash
# Create .venv with CPU PyTorch and mmbilevel (with its test extra), and install
# the Fashion-MNIST files from Debian when apt-get is available and we are root.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi

# Install the CPU build of torch first: a bare "torch" requirement with nothing
# installed would pull a CUDA build of several GB.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet "torch==2.13.0" \
        || "$VENV/bin/pip" install --quiet torch --index-url https://download.pytorch.org/whl/cpu
fi
"$VENV/bin/pip" install --quiet -e ".[test]"

# Real data for the main job: Debian's package puts Fashion-MNIST under
# /usr/share/datasets/fashion-mnist. Without it, training falls back to the
# embedded two-spiral data set.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null \
        && [ "$(id -u)" = 0 ] && [ "${MMBILEVEL_SKIP_APT:-0}" != 1 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
        || echo "setup: could not install dataset-fashion-mnist; training will use two-spiral" >&2
fi
