"""Neurons page glue: the core's activations, neuron stats and per-neuron views, cached.

Activations come from the core's disk cache (``rotviz.study.neurons.activations``: computed once per
network and split, a few ms to load afterwards, progress shown while computing); neuron stats
and each neuron's view (top images + single-neuron maps) are cached in memory by key strings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from rotviz.app import cached, cost, render
from rotviz.attribution.cache import MapCache
from rotviz.attribution.cost import Estimate
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.data.preprocess import PreparedSplit
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.models import RotationNet
from rotviz.nets.twin import calibration_caption, trained_or_twin
from rotviz.study import neurons

NETWORK_LABELS = {
    "trained": "trained",
    "initial": "random twin (initial statistics)",
    "calibrated": "random twin (calibrated statistics)",
}
LAYER_LABELS = {"embedding": "embedding features", "rotation": "rotation head (logits)"}
SORT_LABELS = {"neuron": "neuron index", "mean": "mean activation", "selectivity": "selectivity"}
SELECTIVITY_HELP = (
    "Selectivity = (mean of a neuron's top-k activations - its mean over all test images) / "
    "its standard deviation over all test images: how far its best images stand out."
)


@st.cache_resource(max_entries=8, show_spinner=False)
def network(ckpt_id: str, which: str, _checkpoint: Checkpoint) -> RotationNet:
    """The trained network or its random twin (rotviz.nets.twin.trained_or_twin), kept in memory."""
    return trained_or_twin(_checkpoint, which, cached.runtime())


def calibration_text(ckpt_id: str, which: str, checkpoint: Checkpoint) -> str:
    """Which images calibrated the twin shown, one line for a page caption ("" for trained)."""
    return calibration_caption(network(ckpt_id, which, checkpoint))


def activations(
    ckpt_id: str,
    layer: str,
    which: str,
    checkpoint: Checkpoint,
    split: PreparedSplit,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Activations (N, n) from the core's disk cache; progress(done, total) only when computing."""
    model = network(ckpt_id, which, checkpoint)
    return neurons.activations(
        checkpoint, split, layer, which, cached.runtime().device, model, progress=progress
    )


@st.cache_data(max_entries=32, show_spinner=False)
def stats(
    ckpt_id: str, dkey: str, layer: str, which: str, k: int, _acts: np.ndarray
) -> pd.DataFrame:
    """Per-neuron mean, std, top-k mean and selectivity (rotviz.study.neurons.neuron_stats)."""
    return neurons.neuron_stats(_acts, k)


@st.cache_data(max_entries=4000, show_spinner=False)
def view(
    ckpt_id: str,
    dkey: str,
    layer: str,
    which: str,
    neuron: int,
    k: int,
    _checkpoint: Checkpoint,
    _split: PreparedSplit,
    _acts: np.ndarray,
) -> neurons.NeuronView:
    """One neuron's top-k images with its single-neuron maps (rotviz.study.neurons.neuron_view;
    the maps from the disk map cache when there)."""
    model = network(ckpt_id, which, _checkpoint)
    return neurons.neuron_view(
        _checkpoint, model, which, _split, _acts, layer, neuron, k, cache=MapCache()
    )


def views_to_compute(
    ckpt_id: str,
    layer: str,
    which: str,
    chosen: Sequence[int],
    k: int,
    checkpoint: Checkpoint,
    split: PreparedSplit,
    acts: np.ndarray,
) -> list[int]:
    """The chosen neurons whose maps are not in the disk map cache."""
    model, cache = network(ckpt_id, which, checkpoint), MapCache()
    return [
        int(i)
        for i in chosen
        if neurons.neuron_view_key(checkpoint, model, split, acts, layer, int(i), k) not in cache
    ]


def views_estimate(
    ckpt_id: str,
    layer: str,
    which: str,
    todo: Sequence[int],
    k: int,
    checkpoint: Checkpoint,
    size: int,
) -> Estimate:
    """What the maps of these neurons cost: one neuron each on its k images, one network."""
    model = network(ckpt_id, which, checkpoint)
    sal = SaliencyConfig(layer=layer, neurons=",".join(map(str, todo)), aggregate="none")
    return cost.estimate(model, sal, size, n_images=k, networks=1)


def page_views(
    ckpt_id: str,
    dkey: str,
    layer: str,
    which: str,
    chosen: Sequence[int],
    k: int,
    checkpoint: Checkpoint,
    split: PreparedSplit,
    acts: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
) -> list[neurons.NeuronView]:
    """The views of the neurons on one page, in page order; progress(done, total) after each."""
    out = []
    for done, i in enumerate(chosen, 1):
        out.append(view(ckpt_id, dkey, layer, which, int(i), k, checkpoint, split, acts))
        if progress:
            progress(done, len(chosen))
    return out


def page_neurons(order: Sequence[int], page: int, page_size: int = neurons.PAGE_SIZE) -> list[int]:
    """The neurons of page ``page`` (1-based) of a sorted order."""
    start = (page - 1) * page_size
    return list(order[start : start + page_size])


def thumbnails(v: neurons.NeuronView) -> list[np.ndarray]:
    """(H, W, 3) uint8 overlays of a view's maps on its images, one scale per neuron (0..max)."""
    vmax = float(v.maps.max()) if v.maps.size else 1.0
    return [
        render.overlay(render.hwc(img), m, 0.0, vmax or 1.0)
        for img, m in zip(v.images, v.maps, strict=True)
    ]


def table_csv(
    acts: np.ndarray, files: Sequence[str], labels: Sequence[str], k: int, which: str, layer: str
) -> bytes:
    """The top-k table of every neuron as CSV bytes (built when the button is clicked)."""
    table = neurons.top_table(acts, files, labels, k)
    table.insert(0, "layer", layer)
    table.insert(0, "network", which)
    return table.to_csv(index=False).encode()
