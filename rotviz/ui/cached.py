"""Cached access to the core: models (st.cache_resource), splits, maps and sweeps (st.cache_data).

Cache keys are plain strings (checkpoint name + weights hash, a data-config hash, an image
index), so a retrained checkpoint or changed settings never hit a stale entry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from rotviz.config import DataConfig, stable_hash
from rotviz.metrics import box_mask, threshold_sweep
from rotviz.models import RotationNet, random_twin
from rotviz.pipeline import load_split
from rotviz.preprocess import PreparedSplit
from rotviz.records import Dataset
from rotviz.rotation import normalize
from rotviz.saliency import SaliencyConfig, trained_and_random_maps
from rotviz.store import Checkpoint, CheckpointStore

MAP_CACHE_ENTRIES = 4000  # 2 maps of 128x128 float32 = 128 kB per entry: ~0.5 GB at most


@dataclass
class ModelPair:
    """A loaded checkpoint and its random twin (same architecture and seed, untrained)."""

    checkpoint: Checkpoint
    random: RotationNet

    @property
    def trained(self) -> RotationNet:
        return self.checkpoint.model

    @property
    def ident(self) -> str:
        """Identifies the weights: checkpoint name + weights hash."""
        card = self.checkpoint.card
        return f"{card['name']}:{card.get('weights_sha256', '')[:16]}"


def checkpoint_id(card: dict[str, Any]) -> str:
    """The cache key of a card's weights."""
    return f"{card['card_path']}:{card.get('weights_sha256', '')}"


@st.cache_resource(max_entries=8, show_spinner="Loading the checkpoint and its random twin...")
def model_pair(ckpt_id: str) -> ModelPair:
    """The checkpoint at ckpt_id (card path + weights hash) and its random twin, eval mode."""
    card_path = ckpt_id.rsplit(":", 1)[0]
    ckpt = CheckpointStore().load_file(card_path)
    return ModelPair(ckpt, random_twin(ckpt.model, ckpt.train_config.seed))


def data_key(cfg: DataConfig) -> str:
    """A cache key for a DataConfig, local paths included (they decide which files are read)."""
    return stable_hash(dataclasses.asdict(cfg))


@st.cache_resource(max_entries=6, show_spinner="Loading and preprocessing the images...")
def split(key: str, _cfg: DataConfig, name: str = "test") -> tuple[Dataset, PreparedSplit]:
    """One preprocessed split (cached on disk by the core, in memory here)."""
    return load_split(_cfg, name)


def viewing_config(card: dict[str, Any], cfg: DataConfig) -> DataConfig:
    """The data config to browse a checkpoint's test images: its preprocessing, no image cap."""
    return dataclasses.replace(
        cfg,
        image_size=card["data_config"].get("image_size", cfg.image_size),
        resize=card["data_config"].get("resize", cfg.resize),
        max_images=None,
    )


def saliency_config(
    layer: str, neurons: str, method: str, aggregate: str, rotations: tuple
) -> SaliencyConfig:
    """The SaliencyConfig of the widgets (raises RotvizError for impossible combinations)."""
    return SaliencyConfig(
        layer=layer, neurons=neurons, method=method, aggregate=aggregate, rotations=tuple(rotations)
    )


def compute_maps(
    pair: ModelPair, image: np.ndarray, cfg: SaliencyConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Trained and random maps (H, W) float32 of one uint8 image (3, H, W)."""
    x = normalize(torch.from_numpy(np.ascontiguousarray(image))[None])
    rotations = pair.checkpoint.train_config.rotations
    trained, random = trained_and_random_maps(
        pair.trained,
        pair.random,
        x,
        cfg.layer,
        cfg.neuron_set(),
        rotations=rotations,
        aggregate=cfg.aggregate,
        method=cfg.method,
        model_rotations=rotations,
        n_steps=cfg.n_steps,
        nt_samples=cfg.nt_samples,
        stdevs=cfg.stdevs,
        seed=cfg.seed,
    )
    return trained[0].numpy().astype(np.float32), random[0].numpy().astype(np.float32)


@st.cache_data(max_entries=MAP_CACHE_ENTRIES, show_spinner=False)
def image_maps(
    ckpt_id: str,
    image_key: str,
    sal_key: str,
    _pair: ModelPair,
    _image: np.ndarray,
    _cfg: SaliencyConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Cached trained/random maps of one image, keyed by checkpoint, image and saliency settings."""
    return compute_maps(_pair, _image, _cfg)


@st.cache_data(max_entries=MAP_CACHE_ENTRIES, show_spinner=False)
def image_sweeps(
    ckpt_id: str,
    image_key: str,
    sal_key: str,
    _maps: tuple[np.ndarray, np.ndarray],
    _mask: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Q-vs-threshold of one image for the trained and random map (threshold_sweep frames)."""
    lams = np.logspace(-7, 0, 36)
    return (
        threshold_sweep([_maps[0]], [_mask], lambdas=lams),
        threshold_sweep([_maps[1]], [_mask], lambdas=lams),
    )


def boxes_mask(boxes: np.ndarray, size: int) -> np.ndarray:
    """Box mask (size, size) bool of boxes (K, 4) in resized pixels."""
    return box_mask(boxes, (size, size))
