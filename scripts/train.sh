#!/usr/bin/env bash
# Set up the environment and run the main job: train a Bregman network on
# Fashion-MNIST (or on two-spiral when Fashion-MNIST is not installed).
# Extra arguments go to `mmbilevel train`, for example: bash scripts/train.sh --epochs 2
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Each run gets its own folder, so a second run never overwrites the first.
exec .venv/bin/mmbilevel -v train --out "runs/main-$(date +%Y%m%d-%H%M%S)" "$@"
