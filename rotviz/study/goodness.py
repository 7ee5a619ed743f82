"""Saliency goodness over a test split: per-image Q of the trained network and its random twin.

Q is the intersection over union of the thresholded saliency map and the box mask
(DESIGN.md); images without a box have no Q and are counted, never averaged as NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from rotviz.attribution.maps import checkpoint_maps
from rotviz.attribution.methods import method_warning
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.data.preprocess import PreparedSplit
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.models import RotationNet
from rotviz.nets.twin import TWIN_NAMES, random_twin_of, twin_calibration
from rotviz.runtime import RuntimeLike
from rotviz.scores.baselines import SCALE_FREE, baseline_comparison, baseline_rows, baseline_summary
from rotviz.scores.metrics import (
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
from rotviz.scores.stats import Comparison, compare_paired


@dataclass
class GoodnessRun:
    """Per-image scores plus the maps and masks they came from (for sweeps and figures)."""

    rows: pd.DataFrame
    maps_trained: np.ndarray  # (N, S, S) float32
    maps_random: np.ndarray
    masks: np.ndarray  # (N, S, S) bool box masks
    summary: dict[str, Any]
    baselines: pd.DataFrame | None = (
        None  # rotviz.scores.baselines.baseline_rows, trained and random too
    )


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


# The threshold's reach: a mean share of pixels on at or above ALL_ON makes every mask the
# whole image (Q is then the boxes' share of the image); at or below NONE_ON nothing passes.
ALL_ON, NONE_ON = 0.95, 0.001


def reach_note(mean_share_on: float | None) -> str:
    """What a threshold's mean share of pixels on (0..1) means for Q; "" when it is informative."""
    if mean_share_on is None or not math.isfinite(mean_share_on):
        return ""
    if mean_share_on >= ALL_ON:
        return "nearly all pixels on: Q equals the boxes' share of the image"
    if mean_share_on <= NONE_ON:
        return "no pixel passes: Q is 0"
    return ""


def summarize(rows: pd.DataFrame) -> dict[str, Any]:
    """Dataset scores: mean Q (over images with boxes), counts of images without, RMA, pointing,
    mean share of pixels on (over all images) and its reach note, per network."""
    out: dict[str, Any] = {"n_images": len(rows)}
    for who in ("trained", "random"):
        m = mean_goodness(rows[f"q_{who}"].tolist() if len(rows) else [])
        out[f"mean_q_{who}"] = m.mean
        out[f"mean_rma_{who}"] = float(rows[f"rma_{who}"].mean()) if m.n_used else None
        out[f"pointing_{who}"] = float(rows[f"pointing_{who}"].mean()) if m.n_used else None
        share = float(rows[f"fraction_on_{who}"].mean()) if len(rows) else None
        out[f"mean_fraction_on_{who}"] = share
        out[f"reach_note_{who}"] = reach_note(share)
        out["n_scored"], out["n_without_boxes"] = m.n_used, m.n_undefined
    return out


def goodness_run(
    checkpoint: Checkpoint,
    split: PreparedSplit,
    sal: SaliencyConfig,
    threshold: Threshold,
    runtime: RuntimeLike = "auto",
    keep_categories: Sequence[int] | None = None,
    include_crowd: bool = True,
    progress: Callable[[int, int], None] | None = None,
    maps: tuple[np.ndarray, np.ndarray] | None = None,
    twin: RotationNet | None = None,
    twin_name: str | None = None,
) -> GoodnessRun:
    """Maps, per-image Q and the summary for one checkpoint on one preprocessed split.

    maps: (trained, random) from ``checkpoint_maps`` on split.images when the caller has them
    already (the app keeps them to rescore at other thresholds). twin: the random twin
    (rotviz.nets.twin.random_twin_of; default the calibrated one, on the network's own
    training images), named in the summary (twin_name, default its kind's name) with how it
    was calibrated. Under torchrun the maps are computed sharded and gathered, so every rank
    returns the whole run, equal to a single-process one; only rank 0 should write it out.
    """
    if maps is None and twin is None:
        twin = random_twin_of(checkpoint, runtime=runtime)
    maps_t, maps_r = maps or checkpoint_maps(
        checkpoint, split.images, sal, runtime, twin=twin, progress=progress
    )
    calibration = None if twin is None else twin_calibration(twin)
    if twin_name is None:
        twin_name = TWIN_NAMES[calibration.twin] if calibration else "random twin"
    masks = split_box_masks(split, keep_categories, include_crowd)
    rows = score_rows(split, maps_t, maps_r, masks, threshold)
    summary = summarize(rows)
    baselines = baseline_rows(split.images, masks, {"trained": maps_t, "random": maps_r})
    summary.update(
        checkpoint=checkpoint.name,
        dataset=checkpoint.card.dataset,
        model=checkpoint.card.model,
        threshold=threshold.describe(),
        saliency=asdict(sal),
        box_categories=list(keep_categories) if keep_categories else "all",
        include_crowd=include_crowd,
        warning=method_warning(checkpoint.model, sal.method),
        twin=twin_name,
        twin_calibration=calibration.describe() if calibration else None,
    )
    if summary["n_scored"]:
        _, summary["baseline_flag"] = baseline_comparison(baselines)
    return GoodnessRun(rows, maps_t, maps_r, masks, summary, baselines)


def goodness_comparison(
    runs: Sequence[GoodnessRun],
) -> tuple[Comparison, dict[str, list[float]]]:
    """Mean Q of trained networks vs their random twins over the test images with boxes.

    runs: one per training seed of the same recipe, on the same split and settings (one is
    the usual case). Each image is one bootstrap unit, its Q averaged over seeds; images
    without boxes are NaN and left out. Returns the paired comparison and each seed's mean Q.
    """
    q = {
        net: [run.rows[f"q_{net}"].to_numpy(dtype=float) for run in runs]
        for net in ("trained", "random")
    }
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no box anywhere
        q_t, q_r = np.nanmean(q["trained"], axis=0), np.nanmean(q["random"], axis=0)
    seeds = {
        net: [float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for v in q[net]]
        for net in q
    }
    return compare_paired(q_t, q_r), seeds


def goodness_baselines(runs: Sequence[GoodnessRun]) -> tuple[pd.DataFrame, str]:
    """Baselines beside the networks at the scale-free thresholds, and the trained network's flag.

    runs: one per training seed (their per-image scores are averaged over seeds, as in
    goodness_comparison). Returns baseline_summary (one row per source: trained, random,
    centre, edges, noise) and "does not beat the ..." ("" when it beats edge map and centre).
    """
    rows = pd.concat([r.baselines for r in runs if r.baselines is not None], ignore_index=True)
    rows = rows.groupby(["source", "image"], sort=False).mean().reset_index()
    if not rows[f"q {SCALE_FREE[0].describe()}"].notna().any():
        return baseline_summary(rows), ""
    return baseline_summary(rows), baseline_comparison(rows)[1]


def sweeps(run: GoodnessRun) -> pd.DataFrame:
    """Dataset-level Q over log-spaced lambdas and percentiles, trained and random (column "network")."""
    has_box = run.masks.reshape(len(run.masks), -1).any(1)
    frames = []
    for who, maps in (("trained", run.maps_trained), ("random", run.maps_random)):
        df = threshold_sweep(maps[has_box], run.masks[has_box])
        frames.append(df.assign(network=who))
    return pd.concat(frames, ignore_index=True)
