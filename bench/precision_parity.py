"""Accuracy parity of bf16 and float32 training: two networks of one recipe, trained in each
precision, on the same test images.

Prints each network's test rotation accuracy with its 95 % bootstrap interval over test images
and the paired difference (bf16 - float32, each image's correctness averaged over its
rotations) with its interval: parity holds where that interval contains zero or the
difference is within 1 point.

    python bench/precision_parity.py lfw-six_layer-e25-<bf16 key> lfw-six_layer-e25-<float32 key>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rotviz.data.splits import load_split  # noqa: E402
from rotviz.nets.evaluate import image_correctness  # noqa: E402
from rotviz.nets.store import load_checkpoint  # noqa: E402
from rotviz.runtime import RunConfig  # noqa: E402
from rotviz.scores.stats import compare_paired  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("bf16", help="the network trained in bf16 (name or path)")
    ap.add_argument("float32", help="the same recipe trained in float32")
    args = ap.parse_args()
    nets = {
        precision: load_checkpoint(getattr(args, precision)) for precision in ("bf16", "float32")
    }
    cards = {p: ckpt.card for p, ckpt in nets.items()}
    assert cards["bf16"].train_config == cards["float32"].train_config, "not one recipe"
    assert cards["bf16"].precision == "bfloat16" and cards["float32"].precision == "float32"
    _, test = load_split(nets["float32"].data_config, "test")
    cpu = RunConfig(device="cpu")  # evaluation is float32 whatever the training precision
    correct = {
        p: image_correctness(ckpt.model, test.images, ckpt.rotations, cpu)
        for p, ckpt in nets.items()
    }
    cmp = compare_paired(correct["bf16"], correct["float32"])
    diff = cmp.difference
    print(f"{len(test)} test images x {len(nets['bf16'].rotations)} rotations")
    print(f"  bf16    {nets['bf16'].name}: {cmp.trained.format()}")
    print(f"  float32 {nets['float32'].name}: {cmp.random.format()}")
    print(f"  paired difference bf16 - float32: {diff.format()} (Wilcoxon p {cmp.p_value:.3g})")
    holds = diff.low <= 0 <= diff.high or abs(diff.estimate) <= 0.01
    print(f"  parity (interval holds 0, or within 1 point): {'yes' if holds else 'NO'}")


if __name__ == "__main__":
    main()
