"""Metrics page glue for issue 8: rotation accuracy with intervals, the downstream probe and the
saliency sanity checks of one stored checkpoint (cached; never trains).

Everything runs on the checkpoint the user picked: the probe uses its weights and its random
twin on the dataset's labelled task (rotviz.probe), the sanity checks its maps on one test
image (rotviz.sanity.image_sanity), with the shuffled-label model when the store holds one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from rotviz.config import DataConfig
from rotviz.metrics import Percentile
from rotviz.saliency import SaliencyConfig
from rotviz.stats import compare_paired, rotation_correctness
from rotviz.store import train_config_from_card
from rotviz.ui import cached, common

SANITY_PERCENTILE = 95.0  # Q along the cascade at a scale-free threshold


def _device():  # noqa: ANN202 (a torch.device)
    from rotviz.train import resolve_device

    return resolve_device("auto")


@st.cache_data(max_entries=32, show_spinner="Evaluating rotation accuracy per test image...")
def accuracy_intervals(ckpt_id: str, dkey: str, _cfg: DataConfig) -> pd.DataFrame:
    """Rotation accuracy (%) of the trained net and its twin, mean [95% CI] over test images,
    paired difference and Wilcoxon p (one row, display strings)."""
    from rotviz.evaluate import rotation_logits

    pair = cached.model_pair(ckpt_id)
    _, test = cached.split(dkey, _cfg)
    rotations = pair.checkpoint.train_config.rotations
    per_image = []
    for model in (pair.trained, pair.random):
        logits, labels = rotation_logits(model, test.images, rotations, _device())
        per_image.append(rotation_correctness(logits, labels, len(test)).mean(1))
    cmp = compare_paired(*per_image)
    return pd.DataFrame([{**cmp.row(), "test images": cmp.trained.n}])


@st.cache_data(max_entries=16, show_spinner=False)
def probe(
    ckpt_id: str, dkey: str, task: str, fractions: tuple[float, ...], _cfg: DataConfig
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(numbers, task summary) of the probe of one checkpoint and its twin (rotviz.probe)."""
    from rotviz.probe import chance_accuracy, probe_numbers, probe_run, task_data

    ckpt = cached.model_pair(ckpt_id).checkpoint
    td = task_data(_cfg, task)
    per_image = probe_run(ckpt, td, _device(), list(fractions))
    summary = {
        "task": td.task,
        "classes": list(td.classes),
        "notes": list(td.notes),
        "n_train": len(td.y_train),
        "n_test": len(td.y_test),
        "chance": chance_accuracy(td.y_test),
    }
    return probe_numbers(per_image), summary


def shuffled_checkpoint(card: dict[str, Any], cfg: DataConfig) -> Any:
    """The shuffled-label model of the card's recipe when the store has it (else None; never trains)."""
    from rotviz.pipeline import find_checkpoint
    from rotviz.sanity import shuffled_config
    from rotviz.store import data_config_from_card

    tcfg = train_config_from_card(card)
    if tcfg.shuffle_labels:
        return None
    data = common.with_local_paths(data_config_from_card(card))
    return find_checkpoint(data, shuffled_config(tcfg), common.store())[1]


@st.cache_data(max_entries=64, show_spinner=False)
def image_sanity(
    ckpt_id: str,
    image_key: str,
    sal_key: str,
    with_shuffled: bool,
    _image: np.ndarray,
    _mask: np.ndarray | None,
    _sal: SaliencyConfig,
    _shuffled: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(similarities per comparison, cascade rows) of one test image (rotviz.sanity.image_sanity)."""
    from rotviz.sanity import image_sanity as run

    ckpt = cached.model_pair(ckpt_id).checkpoint
    mask = _mask if _mask is not None and _mask.any() else None
    sims, rows = run(
        ckpt,
        _image,
        _sal,
        _device(),
        mask,
        Percentile(SANITY_PERCENTILE) if mask is not None else None,
        _shuffled if with_shuffled else None,
    )
    return sims.reset_index(), rows


def similarity_display(sims: pd.DataFrame) -> pd.DataFrame:
    """Similarities rounded for display, with readable column names."""
    from rotviz.sanity import MEASURE_LABELS

    return sims.rename(columns=MEASURE_LABELS).round(3)
