"""Saliency goodness over a test split: per-image Q of the trained network and its random twin.

Q is the intersection over union of the thresholded saliency map and the box mask
(docs/STUDY.md); images without a box have no Q and are counted, never averaged as NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
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
from rotviz.scores.baselines import (
    BASELINE_NAMES,
    SCALE_FREE,
    baseline_comparison,
    baseline_rows,
)
from rotviz.scores.metrics import (
    Threshold,
    box_fraction,
    box_mask,
    fraction_on,
    goodness,
    mean_goodness,
    pointing_game,
    relevance_mass_accuracy,
)
from rotviz.scores.stats import Comparison, Interval, compare_paired, percent
from rotviz.study.results import (
    NETWORKS,
    GoodnessRun,
    GoodnessSummary,
    NetworkScores,
    baseline_cell,
    goodness_baselines,
    interval_cells,
    reach_cell,
    reach_note,
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


def summarize(rows: pd.DataFrame, **context: Any) -> GoodnessSummary:
    """Dataset scores of score_rows: mean Q (over images with boxes), counts of images without,
    RMA, pointing, mean share of pixels on (over all images) and its reach note, per network;
    context: the GoodnessSummary fields that say how it was measured (checkpoint, threshold...)."""
    m = {who: mean_goodness(rows[f"q_{who}"].tolist() if len(rows) else []) for who in NETWORKS}
    scores = {}
    for who in NETWORKS:
        share = float(rows[f"fraction_on_{who}"].mean()) if len(rows) else None
        scored = m[who].n_used
        scores[who] = NetworkScores(
            mean_q=m[who].mean,
            mean_rma=float(rows[f"rma_{who}"].mean()) if scored else None,
            pointing=float(rows[f"pointing_{who}"].mean()) if scored else None,
            mean_fraction_on=share,
            reach_note=reach_note(share),
        )
    return GoodnessSummary(
        len(rows), m["random"].n_used, m["random"].n_undefined, **scores, **context
    )


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
    baselines = baseline_rows(split.images, masks, {"trained": maps_t, "random": maps_r})
    summary = summarize(
        rows,
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
    if summary.n_scored:
        summary = replace(summary, baseline_flag=baseline_comparison(baselines)[1])
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


# Display labels of the comparison cells (their numeric columns keep the CSV names).
GOODNESS_LABELS = {
    "trained": "Q trained (%)",
    "random": "Q random twin (%)",
    "difference": "difference (%)",
    "trained, over seeds": "Q trained, over seeds (%)",
    "random, over seeds": "Q random twin, over seeds (%)",
}


def goodness_cells(runs: Sequence[GoodnessRun]) -> tuple[dict[str, str], dict[str, float | str]]:
    """The goodness table's cells of one network (one run per training seed): display strings
    (trained, random, difference, p, images scored, over-seeds rows, share of pixels on and the
    threshold's reach, Q at pct:95 of the networks and the model-free baselines, the baselines
    flag) and their numeric columns. The study tables, the CLI and the app all build from it."""
    cmp, seeds = goodness_comparison(runs)
    cells, nums = interval_cells(cmp, seeds)
    shown = {GOODNESS_LABELS.get(k, k): v for k, v in cells.items()}
    shown["images scored"] = str(cmp.trained.n)
    shown.update(_reach_rows(runs))
    base, flag = goodness_baselines(runs)
    shown.update(_baseline_cells(base))
    shown["baselines"] = baseline_cell(flag)
    nums.update({f"share_on_{k}": v for k, v in _reach_numbers(runs).items()})
    nums["baseline_flag"] = flag
    for _, b in base.iterrows():
        nums[f"q_pct95_{b['source']}"] = b[f"q {SCALE_FREE[0].describe()}"]
    return shown, nums


def _reach_numbers(runs: Sequence[GoodnessRun]) -> dict[str, float]:
    """Mean share of pixels on at the table's threshold (trained / random), averaged over seeds."""
    return {
        who: float(sum(r.summary.network(who).mean_fraction_on or 0 for r in runs) / len(runs))
        for who in NETWORKS
    }


def _reach_rows(runs: Sequence[GoodnessRun]) -> dict[str, str]:
    """Table cells: the share of pixels on per network and the reach note."""
    shares = _reach_numbers(runs)
    return {
        **{f"share of pixels on, {who} (%)": percent(v) for who, v in shares.items()},
        "threshold's reach": reach_cell(shares),
    }


def _baseline_cells(summary: pd.DataFrame) -> dict[str, str]:
    """Table cells: Q (%) at the first scale-free threshold of networks and baselines, with CIs."""
    col = f"q {SCALE_FREE[0].describe()}"
    names = {"trained": "trained", "random": "random twin", **BASELINE_NAMES}
    out = {}
    for _, row in summary.iterrows():
        iv = Interval(row[col], row[f"{col}_low"], row[f"{col}_high"], int(row["n"]))
        out[f"Q at {SCALE_FREE[0].describe()}, {names[row['source']]}"] = iv.format()
    return out
