"""Neurons page, first page cold and cached: 1,000 images, EfficientNet-b0 (1,280 embedding neurons).

    python bench/neurons_page.py [--images 1000] [--model efficientnet_b0] [--threads 2]

The images: the demo's photographs and patches, flipped, cropped and colour-shifted (seeded)
up to --images, uint8 128x128, held in memory as a preprocessed split. The network: the
model freshly built (untrained; the timing does not depend on the weights). "First page" is
exactly what pages/neurons.py computes for its first view (rotviz.app.neurons, the same
functions): the embedding activations of every image, the per-neuron stats, and the top-9
images of the first 12 neurons with their single-neuron saliency maps. Cold: empty feature
cache and empty Streamlit caches. Cached: the same calls again. Restart: a new app session
(Streamlit caches cleared) with the activations on disk. Goals: cold <= 120 s, cached <= 1 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rotviz.config import DataConfig, TrainConfig  # noqa: E402
from rotviz.data.preprocess import PreparedSplit  # noqa: E402
from rotviz.data.records import Record  # noqa: E402
from rotviz.data.splits import load_split  # noqa: E402
from rotviz.nets.checkpoint import Card, Checkpoint  # noqa: E402
from rotviz.nets.models import build_model  # noqa: E402
from rotviz.study import neurons  # noqa: E402

GOAL_COLD_S, GOAL_CACHED_S = 120.0, 1.0


def images(n: int) -> np.ndarray:
    """n uint8 images (n, 3, 128, 128): the demo test and train images, augmented (seeded)."""
    base = np.concatenate(
        [np.asarray(load_split(DataConfig("demo"), s)[1].images) for s in ("test", "train")]
    )
    rng = np.random.default_rng(0)
    out = np.empty((n, *base.shape[1:]), np.uint8)
    for i in range(n):
        img = base[i % len(base)].astype(np.float32)
        if i >= len(base):
            if rng.random() < 0.5:
                img = img[:, :, ::-1]
            dy, dx = rng.integers(0, 17, size=2)
            img = np.pad(img, ((0, 0), (8, 8), (8, 8)), mode="reflect")[
                :, dy : dy + 128, dx : dx + 128
            ]
            img = img * rng.uniform(0.7, 1.3, size=(3, 1, 1)) + rng.uniform(-20, 20)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def split_of(pixels: np.ndarray) -> PreparedSplit:
    n = len(pixels)
    records = [Record(f"bench/{i:04d}.png", f"{i:04d}.png", "test", i) for i in range(n)]
    empty = [np.zeros((0, 4), np.float32)] * n
    return PreparedSplit(
        pixels,
        empty,
        [np.zeros(0, np.int64)] * n,
        [np.zeros(0, bool)] * n,
        records,
        [],
        None,
    )


def first_page(ui, ckpt: Checkpoint, split: PreparedSplit, ckpt_id: str) -> float:
    """Seconds for what the Neurons page computes for its first page (trained, embedding)."""
    t0 = time.perf_counter()
    acts = ui.activations(ckpt_id, "embedding", "trained", ckpt, split)
    print(f"  activations {acts.shape}: {time.perf_counter() - t0:.2f} s", flush=True)
    stats = ui.stats(ckpt_id, "bench", "embedding", "trained", neurons.TOP_K, acts)
    chosen = ui.page_neurons(neurons.sorted_neurons(stats, "neuron"), 1)
    views = ui.page_views(
        ckpt_id, "bench", "embedding", "trained", chosen, neurons.TOP_K, ckpt, split, acts
    )
    for v in views:
        ui.thumbnails(v)
    assert len(views) == neurons.PAGE_SIZE
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["ROTVIZ_CACHE"] = tempfile.mkdtemp(prefix="rotviz-bench-neurons-")
    import streamlit as st

    from rotviz.app import neurons as ui

    split = split_of(images(args.images))
    model = build_model(args.model, 4, 0).eval()
    card = {
        "key": "bench",
        "weights_sha256": f"untrained-{args.model}",
        "train_config": dataclasses.asdict(TrainConfig(model=args.model)),
    }
    ckpt = Checkpoint(model, Card(card), Path("bench"))
    ckpt_id = f"bench:{args.model}"
    cold = first_page(ui, ckpt, split, ckpt_id)
    cached = min(first_page(ui, ckpt, split, ckpt_id) for _ in range(3))
    st.cache_data.clear()
    st.cache_resource.clear()
    restart = first_page(ui, ckpt, split, ckpt_id)
    print(
        f"{args.model} ({model.num_features} neurons), {args.images} images, "
        f"{torch.get_num_threads()} torch threads, device {ui.cached.runtime().device}:"
    )
    print(f"  cold first page:    {cold:7.2f} s  (goal <= {GOAL_COLD_S:.0f} s)")
    print(f"  cached first page:  {cached:7.3f} s  (goal <= {GOAL_CACHED_S:.0f} s)")
    print(f"  after an app restart (activations on disk, maps recomputed): {restart:.2f} s")


if __name__ == "__main__":
    main()
