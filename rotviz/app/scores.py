"""Dataset-level goodness for the Metrics page: the core's goodness run per checkpoint and layer
(maps cached), laid out as tables beside the study's published figures.

Every number comes from rotviz.study.goodness (checkpoint_maps via goodness_run, score_rows,
goodness_comparison, sweeps), the functions ``rotviz study`` calls, so the page and the
study CSVs agree exactly on the same store and settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from rotviz.app import cached
from rotviz.attribution.maps import checkpoint_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import DataConfig
from rotviz.nets.checkpoint import Card
from rotviz.nets.models import RotationNet
from rotviz.nets.twin import TWIN_NAMES, calibration_caption
from rotviz.scores.metrics import Absolute, BoxArea, Percentile, Threshold
from rotviz.scores.published import PUBLISHED_GOODNESS, goodness_protocol_mismatch, study_lambda
from rotviz.study.goodness import GOODNESS_LABELS, goodness_cells, goodness_run
from rotviz.study.results import GoodnessRun, sweeps

# The columns the page shows (the export keeps the numeric ones too).
DISPLAY_COLUMNS = (
    "threshold",
    "random twin",
    *GOODNESS_LABELS.values(),
    "p (Wilcoxon)",
    "images scored",
    "share of pixels on, trained (%)",
    "share of pixels on, random (%)",
    "threshold's reach",
    "baselines",
    "published mean Q, trained (%)",
    "published: comparable?",
    "checkpoint",
)


@dataclass
class LayerRun:
    """The maps of one checkpoint on one dataset's test split for one saliency setting."""

    card: Card
    sal: SaliencyConfig
    dkey: str
    cfg: DataConfig
    maps: tuple[np.ndarray, np.ndarray]
    twin: str
    twin_model: RotationNet | None = None  # carries which images calibrated it

    @property
    def layer(self) -> str:
        return self.sal.layer

    @property
    def calibration_text(self) -> str:
        """Which images calibrated the twin, one line for a page caption ("" if unknown)."""
        return calibration_caption(self.twin_model)


@st.cache_data(max_entries=32, show_spinner=False)
def _split_maps(
    pair_id: str,
    dkey: str,
    sal_key: str,
    _pair: cached.ModelPair,
    _cfg: DataConfig,
    _sal: SaliencyConfig,
    _progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Trained and random maps (N, S, S) of every test image, exactly as rotviz.study.goodness computes them."""
    pair = _pair
    _, split = cached.split(dkey, _cfg)
    return checkpoint_maps(
        pair.checkpoint, split.images, _sal, cached.runtime(), twin=pair.random, progress=_progress
    )


def layer_run(
    card: Card,
    data: DataConfig | None,
    own: DataConfig,
    sal: SaliencyConfig,
    twin: str,
    progress: Callable[[int, int], None] | None = None,
) -> LayerRun:
    """The maps of a checkpoint on a test split (cached across reruns) for one saliency setting.

    data: the dataset scored (None: the network's own, own: its paths on this machine, where
    the calibrated twin finds its training images); scored on the network's preprocessing.
    """
    view_cfg = cached.viewing_config(card, data or own)
    dkey = cached.data_key(view_cfg)
    pair = cached.pair_with_twin(card, twin, own, fallback=data)
    maps = _split_maps(pair.ident, dkey, sal.key(), pair, view_cfg, sal, progress)
    return LayerRun(card, sal, dkey, view_cfg, maps, twin, pair.random)


def threshold_for(mode: str, value: float | None, model: str, layer: str) -> Threshold:
    """The threshold of a table cell: the study's λ per model and layer, or one given threshold."""
    if mode == "study":
        return Absolute(study_lambda(layer, model))
    if mode == "absolute":
        return Absolute(float(value))
    if mode == "percentile":
        return Percentile(float(value))
    return BoxArea()


def scored(res: LayerRun, threshold: Threshold) -> GoodnessRun:
    """The core's goodness run (per-image rows and summary) of cached maps at one threshold."""
    pair = cached.model_pair(cached.checkpoint_id(res.card))
    _, split = cached.split(res.dkey, res.cfg)
    return goodness_run(
        pair.checkpoint,
        split,
        res.sal,
        threshold,
        maps=res.maps,
        twin=res.twin_model,
        twin_name=TWIN_NAMES[res.twin],
    )


def published_cell(res: LayerRun, threshold: Threshold) -> tuple[float | None, str]:
    """(published mean Q (%) when comparable, else None; why it is or is not comparable)."""
    recipe = res.card.recipe
    if res.cfg.dataset != recipe.dataset:
        return None, f"cross-dataset: trained on {recipe.dataset}, scored on {res.cfg.dataset}"
    if not recipe.is_study():
        return None, "not the study's recipe: " + "; ".join(recipe.deviations())
    why = goodness_protocol_mismatch(
        recipe.dataset,
        recipe.model,
        res.layer,
        res.sal.method,
        res.sal.aggregate,
        res.sal.neurons,
        threshold,
    )
    if why:
        return None, f"not comparable: {why}"
    return PUBLISHED_GOODNESS[res.layer][recipe.model], "same protocol as the study"


def goodness_table(results: list[LayerRun], mode: str, value: float | None) -> pd.DataFrame:
    """Mean Q (%) over the test images with boxes, trained and random, per layer and checkpoint.

    The cells of the study's goodness tables (``goodness_cells``): display columns "mean [95%
    CI]" in %, numeric columns fractions as ``rotviz study`` writes them (trained,
    trained_low, ...). Each row shows its network's recipe.
    """
    rows = []
    for res in results:
        threshold = threshold_for(mode, value, res.card.model, res.layer)
        shown, numbers = goodness_cells([scored(res, threshold)])
        published, why = published_cell(res, threshold)
        rows.append(
            {
                "layer": res.layer,
                **res.card.recipe.columns(),
                "data": res.cfg.dataset,
                "threshold": threshold.describe(),
                "random twin": TWIN_NAMES[res.twin],
                **shown,
                "published mean Q, trained (%)": published,
                "published: comparable?": why,
                "checkpoint": res.card.name,
                **numbers,
            }
        )
    return pd.DataFrame(rows)


def per_image_table(res: LayerRun, threshold: Threshold) -> pd.DataFrame:
    """Q per test image (trained, random) at one threshold: the core's score rows."""
    return scored(res, threshold).rows


def sweep_frames(res: LayerRun) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dataset-level mean Q vs threshold (absolute and percentile), trained and random."""
    df = sweeps(scored(res, Absolute(0.0)))
    return (
        df[df.network == "trained"].drop(columns="network"),
        df[df.network == "random"].drop(columns="network"),
    )
