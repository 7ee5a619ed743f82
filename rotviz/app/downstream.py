"""Probe and Sanity pages' glue: rotation accuracy with intervals, the downstream probe and the
saliency sanity checks of one stored checkpoint (cached; never trains).

Everything runs on the checkpoint the user picked: the probe uses its weights and its random
twin on the dataset's labelled task (rotviz.study.probe), the sanity checks its maps on one test
image (rotviz.study.sanity.image_sanity), with the shuffled-label model when the store holds one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from rotviz.app import cached, common
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import DataConfig
from rotviz.nets.checkpoint import Card
from rotviz.nets.evaluate import accuracy_comparison
from rotviz.scores.metrics import Percentile
from rotviz.scores.similarity import MEASURE_LABELS
from rotviz.study.probe import probe_result, probe_run, task_data
from rotviz.study.results import ProbeRun
from rotviz.study.sanity import image_sanity as sanity_of_image
from rotviz.study.sanity import shuffled_config
from rotviz.training.pipeline import find_checkpoint

SANITY_PERCENTILE = 95.0  # Q along the cascade at a scale-free threshold


@dataclass(frozen=True)
class Chosen:
    """A stored network and the dataset it is applied to (its own, or another: cross-dataset)."""

    card: Card
    dataset: str
    own: DataConfig  # the network's own data, with this session's paths
    cfg: DataConfig  # the data it is applied to, in the network's preprocessing
    dkey: str

    @property
    def stem(self) -> str:
        """File-name stem of this network's exports."""
        return f"{self.card.dataset}-{self.card.model}-{self.card.name[-8:]}"


def network_choice(key: str) -> Chosen:
    """Dataset and checkpoint widgets (networks trained elsewhere offered cross-dataset), with
    captions saying what was chosen; the page stops here when the store has no checkpoint."""
    dataset = common.dataset_select(f"{key}_dataset")
    card = common.checkpoint_select(f"{key}_ckpt", dataset, others=True)
    if card is None:
        st.stop()
    own = common.with_local_paths(card.data_config)
    cross = card.dataset != dataset
    cfg = cached.viewing_config(card, common.data_config(dataset) if cross else own)
    if cross:
        st.caption(
            f"Cross-dataset: a network trained on {card.dataset}, applied to the {dataset} test "
            "split (not its own test split)."
        )
    st.caption(f"Recipe: {card.recipe.describe()}")
    return Chosen(card, dataset, own, cfg, cached.data_key(cfg))


@st.cache_data(max_entries=32, show_spinner="Evaluating rotation accuracy per test image...")
def accuracy_intervals(
    pair_id: str, dkey: str, _pair: cached.ModelPair, _cfg: DataConfig
) -> pd.DataFrame:
    """Rotation accuracy (%) of the trained net and its twin, mean [95% CI] over test images,
    paired difference and Wilcoxon p: the display strings, then the numeric columns that
    ``rotviz study`` writes (rotviz.nets.evaluate.accuracy_comparison for both)."""
    _, test = cached.split(dkey, _cfg)
    cmp, _ = accuracy_comparison(
        [_pair.checkpoint], test.images, cached.runtime(), twins=[_pair.random]
    )
    shown = {f"{k} (%)" if k != "p (Wilcoxon)" else k: v for k, v in cmp.row().items()}
    return pd.DataFrame([{**shown, "test images": cmp.trained.n, **cmp.numbers()}])


@st.cache_data(max_entries=16, show_spinner=False)
def probe(
    pair_id: str,
    dkey: str,
    task: str,
    fractions: tuple[float, ...],
    _cfg: DataConfig,
    _pair: cached.ModelPair,
) -> ProbeRun:
    """The probe of one checkpoint and its chosen twin (rotviz.study.probe)."""
    td = task_data(_cfg, task)
    per_image = probe_run(
        _pair.checkpoint,
        td,
        cached.runtime(),
        list(fractions),
        twin=_pair.random,
    )
    return probe_result(td, per_image, [_pair.checkpoint.train_config.seed])


def shuffled_checkpoint(card: Card) -> Any:
    """The shuffled-label model of the card's recipe when the store has it (else None; never trains)."""
    tcfg = card.train_config
    if tcfg.shuffle_labels:
        return None
    data = common.with_local_paths(card.data_config)
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
    """(similarities per comparison, cascade rows) of one test image (rotviz.study.sanity.image_sanity)."""
    ckpt = cached.model_pair(ckpt_id).checkpoint
    mask = _mask if _mask is not None and _mask.any() else None
    sims, rows = sanity_of_image(
        ckpt,
        _image,
        _sal,
        cached.runtime(),
        mask,
        Percentile(SANITY_PERCENTILE) if mask is not None else None,
        _shuffled if with_shuffled else None,
    )
    return sims.reset_index(), rows


def similarity_display(sims: pd.DataFrame) -> pd.DataFrame:
    """Similarities rounded for display, with readable column names."""
    return sims.rename(columns=MEASURE_LABELS).round(3)
