#!/usr/bin/env bash
# The commands that made the shipped checkpoints (run from the repo root; LFW from ../shared/data/lfw).
# --amp auto (the default) trained the six-layer nets in bf16 autocast on the 2-core
# AVX512-BF16 machine and the deep nets in float32 (each card's run.amp_used and precision say
# which); the store resumes a stopped run, so any line can be rerun after an interruption.
# --test-curve logs the test accuracy after every epoch beside the card (runs/<name>/).
set -euo pipefail
python -m rotviz train --dataset demo --model six_layer --epochs 100 --half --test-curve
python -m rotviz train --dataset lfw --root ../shared/data/lfw --model six_layer --epochs 25 --half --test-curve
python -m rotviz train --dataset lfw --root ../shared/data/lfw --model mobilenet_v2 --epochs 8 --half --test-curve
python -m rotviz train --dataset lfw --root ../shared/data/lfw --model efficientnet_b0 --epochs 20 --half --test-curve
