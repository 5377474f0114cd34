#!/usr/bin/env bash
# Create the benchmark environment .venv-bench with torch, mmbilevel and
# bregmanet 1.0.0, separate from the project's .venv.
#
# Usage: bash bench/setup_bregmanet.sh [PYTHON]
# Then:  .venv-bench/bin/python -m bench.run
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-python3}"
venv="$root/.venv-bench"

"$python" -m venv "$venv"
"$venv/bin/pip" install --upgrade pip >/dev/null
# Install torch first and pinned, so that resolving bregmanet cannot pull a
# different (for example CUDA) build.
"$venv/bin/pip" install "torch==2.13.0"
"$venv/bin/pip" install -r "$root/bench/requirements-bregmanet.txt"
# mmbilevel itself, without re-resolving torch.
"$venv/bin/pip" install -e "$root"
"$venv/bin/python" -c "import bregmanet, numpy, torch; print('bregmanet ready: torch', torch.__version__, 'numpy', numpy.__version__)"
