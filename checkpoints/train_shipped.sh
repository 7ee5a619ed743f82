#!/usr/bin/env bash
# The commands that made the shipped checkpoints (run from the repo root; LFW from ../shared/data/lfw).
set -euo pipefail
python -m rotviz train --dataset demo --model six_layer --epochs 15 --half
python -m rotviz train --dataset lfw --root ../shared/data/lfw --model six_layer --epochs 4 --half
python -m rotviz train --dataset lfw --root ../shared/data/lfw --model mobilenet_v2 --epochs 2 --half
python -m rotviz train --dataset lfw --root ../shared/data/lfw --model efficientnet_b0 --epochs 2 --half
