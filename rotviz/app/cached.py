"""Cached access to the core: models (st.cache_resource), splits and sweeps (st.cache_data),
maps (the disk map cache under the store, shared with other sessions and the CLI).

Cache keys are plain strings (checkpoint name + weights hash, a data-config hash, an image
index), so a retrained checkpoint or changed settings never hit a stale entry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from rotviz.attribution.cache import cached_checkpoint_maps
from rotviz.attribution.maps import Progress
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import DataConfig, stable_hash
from rotviz.data.preprocess import PreparedSplit
from rotviz.data.records import Dataset
from rotviz.nets.checkpoint import Card, Checkpoint
from rotviz.nets.models import RotationNet
from rotviz.nets.store import load_checkpoint
from rotviz.nets.twin import TWIN_NAMES, calibration_caption, check_twin, random_twin_of
from rotviz.runtime import Runtime, as_runtime
from rotviz.scores.metrics import box_mask, threshold_sweep
from rotviz.training.pipeline import load_split

SWEEP_CACHE_ENTRIES = 4000


@dataclass
class ModelPair:
    """A loaded checkpoint and its random twin (same architecture and seed, untrained)."""

    checkpoint: Checkpoint
    random: RotationNet
    twin: str = "initial"  # which random twin: rotviz.nets.twin.TWINS

    @property
    def trained(self) -> RotationNet:
        return self.checkpoint.model

    @property
    def ident(self) -> str:
        """Identifies the weights and the twin: card path + weights hash + twin kind."""
        return f"{self.checkpoint.card.ident}:{self.twin}"

    @property
    def twin_name(self) -> str:
        return TWIN_NAMES[self.twin]

    @property
    def calibration_text(self) -> str:
        """Which images calibrated the twin, one line for a page caption."""
        return calibration_caption(self.random)


def checkpoint_id(card: Card) -> str:
    """The cache key of a card's weights (card path + weights hash)."""
    return card.ident


@st.cache_resource(show_spinner=False)
def runtime() -> Runtime:
    """The app's runtime, resolved once per process: CUDA when present, else CPU."""
    return as_runtime("auto")


@st.cache_resource(max_entries=8, show_spinner="Loading the checkpoint and its random twin...")
def model_pair(ckpt_id: str) -> ModelPair:
    """The checkpoint at ckpt_id (card path + weights hash) and its random twin, eval mode."""
    card_path = ckpt_id.rsplit(":", 1)[0]
    ckpt = load_checkpoint(card_path)
    return ModelPair(ckpt, random_twin_of(ckpt, "initial", runtime()))


@st.cache_resource(
    max_entries=8, show_spinner="Calibrating the random twin's BatchNorm statistics..."
)
def _calibrated_twin(
    ckpt_id: str, dkey: str, _own: DataConfig | None, _data: DataConfig | None
) -> RotationNet:
    return random_twin_of(model_pair(ckpt_id).checkpoint, "calibrated", runtime(), _data, own=_own)


def pair_with_twin(
    card: Card, kind: str, own: DataConfig | None = None, fallback: DataConfig | None = None
) -> ModelPair:
    """The checkpoint and its random twin of that kind (rotviz.nets.twin.random_twin_of); own:
    where its training images are on this machine (the calibrated twin recomputes its
    BatchNorm statistics on them); fallback: the data explained, whose training images
    calibrate it, with a warning, when those are not here. ModelPair.calibration_text says
    which images it used."""
    ckpt_id = checkpoint_id(card)
    pair = model_pair(ckpt_id)
    if check_twin(kind) == "initial":
        return pair
    key = ":".join(data_key(d) if d else "-" for d in (own, fallback))
    return ModelPair(pair.checkpoint, _calibrated_twin(ckpt_id, key, own, fallback), kind)


def data_key(cfg: DataConfig) -> str:
    """A cache key for a DataConfig, local paths included (they decide which files are read)."""
    return stable_hash(dataclasses.asdict(cfg))


@st.cache_resource(max_entries=6, show_spinner="Loading and preprocessing the images...")
def split(key: str, _cfg: DataConfig, name: str = "test") -> tuple[Dataset, PreparedSplit]:
    """One preprocessed split (cached on disk by the core, in memory here)."""
    return load_split(_cfg, name)


def viewing_config(card: Card, cfg: DataConfig) -> DataConfig:
    """The data config to browse a checkpoint's test images: its preprocessing, no image cap."""
    trained_on = card.data_config
    return dataclasses.replace(
        cfg, image_size=trained_on.image_size, resize=trained_on.resize, max_images=None
    )


def saliency_config(
    layer: str, neurons: str, method: str, aggregate: str, rotations: tuple
) -> SaliencyConfig:
    """The SaliencyConfig of the widgets (raises RotvizError for impossible combinations)."""
    return SaliencyConfig(
        layer=layer, neurons=neurons, method=method, aggregate=aggregate, rotations=tuple(rotations)
    )


def compute_maps(
    pair: ModelPair,
    image: np.ndarray,
    cfg: SaliencyConfig,
    progress: Progress | None = None,
    neurons_per_step: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Trained and random maps (H, W) float32 of one uint8 image (3, H, W), from the disk map
    cache or computed and kept there (rotviz.attribution.cache.cached_checkpoint_maps; in steps
    of neurons_per_step neurons with progress(done, total) when given)."""
    trained, random = cached_checkpoint_maps(
        pair.checkpoint,
        np.ascontiguousarray(image)[None],
        cfg,
        pair.random,
        runtime(),
        progress=progress,
        neurons_per_step=neurons_per_step,
    )
    return trained[0], random[0]


@st.cache_data(max_entries=SWEEP_CACHE_ENTRIES, show_spinner=False)
def image_sweeps(
    ckpt_id: str,
    image_key: str,
    sal_key: str,
    _maps: tuple[np.ndarray, np.ndarray],
    _mask: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Q-vs-threshold of one image for the trained and random map (threshold_sweep frames)."""
    return threshold_sweep([_maps[0]], [_mask]), threshold_sweep([_maps[1]], [_mask])


def boxes_mask(boxes: np.ndarray, size: int) -> np.ndarray:
    """Box mask (size, size) bool of boxes (K, 4) in resized pixels."""
    return box_mask(boxes, (size, size))
