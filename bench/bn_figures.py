"""Precise BatchNorm on the shipped checkpoints: accuracy before/after, the twins' gradient scale, Q.

For every checkpoint in checkpoints/ (LFW ones only when the LFW excerpt is present):
test rotation accuracy with running statistics as shipped, with batch statistics, and after
precise_bn on the training split; the largest saliency value (rotation layer, all neurons,
mean over the four rotations) on the demo photos with boxes for the trained network and
both random twins; mean Q on those photos at the study's absolute lambda and at the 95th
percentile. Prints Markdown tables and writes the figures as JSON.

    python bench/bn_figures.py [--lfw ../shared/data/lfw] [--n-images 2000] [--max-test N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import DataConfig
from rotviz.data.rotation import normalize
from rotviz.data.splits import load_split
from rotviz.nets.batchnorm import precise_bn, statistics_gap
from rotviz.nets.evaluate import rotation_accuracy
from rotviz.nets.store import SHIPPED_STORE, CheckpointStore
from rotviz.nets.twin import TWIN_NAMES, random_twin_of
from rotviz.scores.metrics import Absolute, Percentile, goodness, mean_goodness
from rotviz.study.goodness import split_box_masks

REPO = Path(__file__).resolve().parents[1]
STUDY_LAMBDA = {"efficientnet_b0": 8e-3, "mobilenet_v2": 8e-3, "six_layer": 8e-4}
CPU = torch.device("cpu")


def demo_photos() -> tuple[np.ndarray, np.ndarray]:
    """The demo's scene photos with boxes (both splits): uint8 (N, 3, 128, 128), masks (N, 128, 128)."""
    images, masks = [], []
    for split in ("train", "test"):
        _, prepared = load_split(DataConfig("demo"), split)
        m = split_box_masks(prepared)
        keep = m.reshape(len(m), -1).any(1)
        images.append(np.asarray(prepared.images)[keep])
        masks.append(m[keep])
    return np.concatenate(images), np.concatenate(masks)


def q_scores(maps: np.ndarray, masks: np.ndarray, lam: float) -> dict[str, float | None]:
    """Mean Q (%) at the absolute lambda and at the 95th percentile."""
    out = {}
    for label, thr in (("abs", Absolute(lam)), ("pct95", Percentile(95))):
        qs = [goodness(thr.mask(s, b), b) for s, b in zip(maps, masks, strict=True)]
        mean = mean_goodness(qs).mean
        out[label] = None if mean is None else 100 * mean
    return out


def measure(card: dict, lfw: Path | None, n_images: int, max_test: int | None) -> dict:
    ckpt = CheckpointStore(SHIPPED_STORE).load(card.name)
    data = ckpt.data_config
    if data.dataset == "lfw":
        data = dataclasses.replace(data, root=str(lfw))
    cfg = ckpt.train_config
    _, train = load_split(data, "train")
    _, test = load_split(data, "test")
    test_images = np.asarray(test.images)[:max_test]
    model = ckpt.model
    photos, masks = demo_photos()
    x = normalize(torch.from_numpy(photos))
    sal = SaliencyConfig()
    t0 = time.perf_counter()

    acc_batch, acc_shipped = statistics_gap(model, test_images, cfg.rotations, CPU)
    maps = {"trained (shipped statistics)": sal.maps(model, x).numpy()}
    info = precise_bn(model, train.images, cfg.rotations, CPU, n_images=n_images, seed=cfg.seed)
    acc_precise = rotation_accuracy(model, test_images, cfg.rotations, CPU).accuracy
    maps["trained (precise statistics)"] = sal.maps(model, x).numpy()
    for kind, label in TWIN_NAMES.items():
        twin = random_twin_of(ckpt, kind, CPU, train_images=train.images, n_images=n_images)
        maps[label] = sal.maps(twin, x).numpy()
        if kind == "calibrated":
            twin_acc = rotation_accuracy(twin, test_images, cfg.rotations, CPU).accuracy
    ref = float(maps["trained (precise statistics)"].max())
    return {
        "checkpoint": card.name,
        "model": cfg.model,
        "n_test": len(test_images),
        "precise_bn": info.to_dict(),
        "acc_shipped": acc_shipped,
        "acc_batch_statistics": acc_batch,
        "acc_precise": acc_precise,
        "acc_calibrated_twin": twin_acc,
        "card_acc": card.test_accuracy("trained"),
        "lambda": STUDY_LAMBDA[cfg.model],
        "max_saliency": {k: float(v.max()) for k, v in maps.items()},
        "ratio_to_trained": {k: ref / float(v.max()) for k, v in maps.items()},
        "q": {k: q_scores(v, masks, STUDY_LAMBDA[cfg.model]) for k, v in maps.items()},
        "n_photos": len(photos),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", default=str(REPO.parent / "shared" / "data" / "lfw"))
    ap.add_argument("--n-images", type=int, default=2000, help="training images for precise BN")
    ap.add_argument("--max-test", type=int, default=None, help="first N test images only")
    ap.add_argument("--only", default=None, help="checkpoint names containing this text")
    ap.add_argument("--json", default="bn_figures.json")
    args = ap.parse_args()
    lfw = Path(args.lfw)
    cards = CheckpointStore(SHIPPED_STORE).cards()
    if not lfw.exists():
        print(f"no LFW excerpt at {lfw}: the LFW checkpoints are left out (give --lfw)")
    cards = [c for c in cards if c.dataset == "demo" or lfw.exists()]
    cards = [c for c in cards if args.only is None or args.only in c.name]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    rows = []
    for card in sorted(cards, key=lambda c: c.name):
        rows.append(measure(card, lfw, args.n_images, args.max_test))
        r = rows[-1]
        print(
            f"| {r['checkpoint']} | {r['n_test']} | {100 * r['acc_shipped']:.1f} | "
            f"{100 * r['acc_batch_statistics']:.1f} | {100 * r['acc_precise']:.1f} | "
            f"{100 * r['acc_calibrated_twin']:.1f} | "
            + " | ".join(f"{v:.3g}" for v in r["ratio_to_trained"].values())
            + f" | {r['seconds']:.0f} s |",
            flush=True,
        )
        for net, q in r["q"].items():
            print(f"|   {net} | abs {r['lambda']:g}: {q['abs']} | pct95: {q['pct95']} |")
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
