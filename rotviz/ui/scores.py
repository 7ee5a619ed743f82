"""Dataset-level goodness for the Metrics page: maps of a test split (cached per image), Q tables, sweeps.

Glue over rotviz.metrics (goodness_scores, mean_goodness, threshold_sweep) and the per-image
map cache the Saliency page fills too, so maps computed on either page serve both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rotviz.config import DataConfig
from rotviz.metrics import Absolute, Threshold, goodness_scores, mean_goodness, threshold_sweep
from rotviz.saliency import SaliencyConfig
from rotviz.stats import compare_paired, format_p
from rotviz.store import data_config_from_card
from rotviz.study import PUBLISHED_GOODNESS, STUDY_THRESHOLDS, study_lambda
from rotviz.ui import cached


@dataclass
class SplitMaps:
    """Maps of the test images with boxes: trained and random (N, H, W), box masks (N, H, W)."""

    card: dict[str, Any]
    layer: str
    trained: np.ndarray
    random: np.ndarray
    masks: np.ndarray
    relpaths: list[str]


def split_maps(
    card: dict[str, Any],
    cfg: DataConfig,
    sal: SaliencyConfig,
    progress: Callable[[int, int], None] | None = None,
) -> SplitMaps:
    """Maps of every test image with boxes (each map cached per image, shared with the Saliency page)."""
    view_cfg = cached.viewing_config(card, cfg)
    dkey = cached.data_key(view_cfg)
    _, split = cached.split(dkey, view_cfg)
    ckpt_id = cached.checkpoint_id(card)
    pair = cached.model_pair(ckpt_id)
    chosen = [i for i in range(len(split)) if len(split.boxes[i])]
    size = split.images.shape[-1]
    trained, random, masks = [], [], []
    for n, i in enumerate(chosen):
        image = split.images[i].copy()
        t, r = cached.image_maps(ckpt_id, f"{dkey}:{i}", sal.key(), pair, image, sal)
        trained.append(t)
        random.append(r)
        masks.append(cached.boxes_mask(split.boxes[i], size))
        if progress is not None:
            progress(n + 1, len(chosen))
    empty = np.zeros((0, size, size), np.float32)
    return SplitMaps(
        card,
        sal.layer,
        np.stack(trained) if trained else empty,
        np.stack(random) if random else empty,
        np.stack(masks) if masks else empty.astype(bool),
        [split.records[i].relpath for i in chosen],
    )


def threshold_for(mode: str, value: float | None, model: str, layer: str) -> Threshold:
    """The threshold of a table cell: the study's λ per model and layer, or one given threshold."""
    from rotviz.metrics import BoxArea, Percentile

    if mode == "study":
        return Absolute(study_lambda(layer, model))
    if mode == "absolute":
        return Absolute(float(value))
    if mode == "percentile":
        return Percentile(float(value))
    return BoxArea()


def goodness_table(results: list[SplitMaps], mode: str, value: float | None) -> pd.DataFrame:
    """Mean Q (%) over the test images with boxes, trained and random, per layer and checkpoint."""
    rows = []
    for res in results:
        model = res.card["model"]
        threshold = threshold_for(mode, value, model, res.layer)
        per_t = goodness_scores(res.trained, res.masks, threshold)
        per_r = goodness_scores(res.random, res.masks, threshold)
        q_t, q_r = mean_goodness(per_t), mean_goodness(per_r)
        published = (
            PUBLISHED_GOODNESS.get(res.layer, {}).get(model)
            if res.card["dataset"] == "coco"
            else None
        )
        published_lambda = STUDY_THRESHOLDS.get(res.layer, {}).get(model)
        cmp = compare_paired([g.q for g in per_t], [g.q for g in per_r])  # NaN: no box
        rows.append(
            {
                "layer": res.layer,
                "model": model,
                "dataset": res.card["dataset"],
                "threshold": threshold.describe(),
                "mean Q, trained (%)": None if q_t.mean is None else round(100 * q_t.mean, 1),
                "mean Q, random twin (%)": None if q_r.mean is None else round(100 * q_r.mean, 1),
                "images with boxes": q_t.n_used,
                "Q trained, mean [95% CI] (%)": cmp.trained.format(),
                "Q random twin, mean [95% CI] (%)": cmp.random.format(),
                "difference (%)": cmp.difference.format(),
                "p (Wilcoxon)": format_p(cmp.p_value),
                "published mean Q, trained (%)": published,
                "published threshold": f"abs:{published_lambda:g}"
                if published is not None
                else None,
                "checkpoint": res.card["name"],
            }
        )
    return pd.DataFrame(rows)


def per_image_table(res: SplitMaps, threshold: Threshold) -> pd.DataFrame:
    """Q per test image (trained, random) at one threshold."""
    q_t = goodness_scores(res.trained, res.masks, threshold)
    q_r = goodness_scores(res.random, res.masks, threshold)
    return pd.DataFrame(
        {
            "image": res.relpaths,
            "Q trained": [g.q for g in q_t],
            "Q random": [g.q for g in q_r],
            "fraction on, trained": [g.fraction_on for g in q_t],
            "fraction on, random": [g.fraction_on for g in q_r],
            "box fraction": [g.box_fraction for g in q_t],
        }
    )


def sweeps(res: SplitMaps) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dataset-level mean Q vs threshold (absolute and percentile), trained and random."""
    lams = np.logspace(-7, 0, 36)
    return threshold_sweep(res.trained, res.masks, lams), threshold_sweep(
        res.random, res.masks, lams
    )


def card_data_config(card: dict[str, Any]) -> DataConfig:
    """The DataConfig a checkpoint was trained with."""
    return data_config_from_card(card)
