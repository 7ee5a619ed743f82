"""Saliency goodness over a test split: per-image Q of the trained network and its random twin.

Q is the intersection over union of the thresholded saliency map and the box mask
(DESIGN.md); images without a box have no Q and are counted, never averaged as NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from rotviz import distributed
from rotviz.metrics import (
    Threshold,
    box_fraction,
    box_mask,
    fraction_on,
    goodness,
    mean_goodness,
    pointing_game,
    relevance_mass_accuracy,
    threshold_sweep,
)
from rotviz.models import random_twin
from rotviz.preprocess import PreparedSplit
from rotviz.rotation import normalize
from rotviz.saliency import SaliencyConfig, method_warning
from rotviz.store import Checkpoint
from rotviz.train import RunConfig, resolve_device


@dataclass
class GoodnessRun:
    """Per-image scores plus the maps and masks they came from (for sweeps and figures)."""

    rows: pd.DataFrame
    maps_trained: np.ndarray  # (N, S, S) float32
    maps_random: np.ndarray
    masks: np.ndarray  # (N, S, S) bool box masks
    summary: dict[str, Any]


def split_box_masks(
    split: PreparedSplit, keep_categories: Sequence[int] | None = None, include_crowd: bool = True
) -> np.ndarray:
    """Box masks (N, S, S) bool of a preprocessed split, in its resized pixels."""
    size = split.images.shape[-1]
    return (
        np.stack(
            [
                box_mask(
                    b,
                    (size, size),
                    categories=c,
                    keep_categories=keep_categories,
                    crowd=cr,
                    include_crowd=include_crowd,
                )
                for b, c, cr in zip(split.boxes, split.categories, split.crowd, strict=True)
            ]
        )
        if len(split)
        else np.zeros((0, size, size), bool)
    )


def compute_maps(
    checkpoint: Checkpoint,
    images: np.ndarray,
    sal: SaliencyConfig,
    device: torch.device,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maps (N, S, S) float32 of the trained model and of its random twin on uint8 images (N, 3, S, S).

    Under torchrun the batches are split across ranks (batch b on rank b % world) and
    gathered back in order on every rank: each image is computed in the same batch as in
    one process, so the maps are bit-identical to a single-process run.
    """
    trained = checkpoint.model.to(device)
    twin = random_twin(checkpoint.model, checkpoint.train_config.seed).to(device)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    n_batches = -(-len(images) // batch_size)
    for rows in distributed.shard_batches(len(images), batch_size):
        x = normalize(torch.from_numpy(np.array(images[rows])).to(device, non_blocking=True))
        out.append(
            (sal.maps(trained, x).float().cpu().numpy(), sal.maps(twin, x).float().cpu().numpy())
        )
        if progress:
            progress(min(rows.stop, len(images)), len(images))
    out = distributed.gather_batches(out, n_batches)
    size = images.shape[-1]
    empty = np.zeros((0, size, size), np.float32)
    if not out:
        return empty, empty.copy()
    return np.concatenate([t for t, _ in out]), np.concatenate([r for _, r in out])


def score_rows(
    split: PreparedSplit,
    maps_trained: np.ndarray,
    maps_random: np.ndarray,
    masks: np.ndarray,
    threshold: Threshold,
) -> pd.DataFrame:
    """One row per image: Q trained / random, fraction of pixels on, box fraction, RMA, pointing game."""
    rows = []
    for i, rec in enumerate(split.records):
        b = masks[i]
        on_t, on_r = threshold.mask(maps_trained[i], b), threshold.mask(maps_random[i], b)
        has_box = bool(b.any())
        rows.append(
            {
                "image_id": rec.image_id,
                "file": rec.relpath,
                "q_trained": goodness(on_t, b) if has_box else np.nan,
                "q_random": goodness(on_r, b) if has_box else np.nan,
                "fraction_on_trained": fraction_on(on_t),
                "fraction_on_random": fraction_on(on_r),
                "box_fraction": box_fraction(b),
                "rma_trained": relevance_mass_accuracy(maps_trained[i], b) if has_box else np.nan,
                "rma_random": relevance_mass_accuracy(maps_random[i], b) if has_box else np.nan,
                "pointing_trained": float(pointing_game(maps_trained[i], b)) if has_box else np.nan,
                "pointing_random": float(pointing_game(maps_random[i], b)) if has_box else np.nan,
                "n_boxes": int(len(split.boxes[i])),
            }
        )
    return pd.DataFrame(rows)


def summarize(rows: pd.DataFrame) -> dict[str, Any]:
    """Dataset scores: mean Q (over images with boxes), counts of images without, RMA, pointing."""
    out: dict[str, Any] = {"n_images": len(rows)}
    for who in ("trained", "random"):
        m = mean_goodness(rows[f"q_{who}"].tolist() if len(rows) else [])
        out[f"mean_q_{who}"] = m.mean
        out[f"mean_rma_{who}"] = float(rows[f"rma_{who}"].mean()) if m.n_used else None
        out[f"pointing_{who}"] = float(rows[f"pointing_{who}"].mean()) if m.n_used else None
        out["n_scored"], out["n_without_boxes"] = m.n_used, m.n_undefined
    return out


def goodness_run(
    checkpoint: Checkpoint,
    split: PreparedSplit,
    sal: SaliencyConfig,
    threshold: Threshold,
    device: str | torch.device | RunConfig,
    keep_categories: Sequence[int] | None = None,
    include_crowd: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> GoodnessRun:
    """Maps, per-image Q and the summary for one checkpoint on one preprocessed split.

    Under torchrun the maps are computed sharded and gathered, so every rank returns the
    whole run, equal to a single-process one; only rank 0 should write it out.
    """
    maps_t, maps_r = compute_maps(
        checkpoint, split.images, sal, resolve_device(device), progress=progress
    )
    masks = split_box_masks(split, keep_categories, include_crowd)
    rows = score_rows(split, maps_t, maps_r, masks, threshold)
    summary = summarize(rows)
    summary.update(
        checkpoint=checkpoint.card["name"],
        dataset=checkpoint.card["dataset"],
        model=checkpoint.card["model"],
        threshold=threshold.describe(),
        saliency=asdict(sal),
        box_categories=list(keep_categories) if keep_categories else "all",
        include_crowd=include_crowd,
        warning=method_warning(checkpoint.model, sal.method),
    )
    return GoodnessRun(rows, maps_t, maps_r, masks, summary)


def sweeps(run: GoodnessRun) -> pd.DataFrame:
    """Dataset-level Q over log-spaced lambdas and percentiles, trained and random (column "network")."""
    has_box = run.masks.reshape(len(run.masks), -1).any(1)
    frames = []
    for who, maps in (("trained", run.maps_trained), ("random", run.maps_random)):
        df = threshold_sweep(maps[has_box], run.masks[has_box])
        frames.append(df.assign(network=who))
    return pd.concat(frames, ignore_index=True)
