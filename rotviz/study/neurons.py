"""Neuron browser: what each neuron responds to, trained network vs random twin.

For a network and a preprocessed split, every neuron's top-k activating images, each with
that single neuron's saliency map (|d a / d x|, max over colour channels).

- **Embedding neurons**: the D features of ``embed()``; activation = the feature value.
  Computed once per network and split and cached on disk by ``rotviz.study.probe.split_features``
  (the probe's feature cache).
- **Rotation neurons**: the m logits of the head. Neuron j (rotation ``rotations[j]``) scores
  every image turned by that rotation with log p(j | image turned), the log-softmax of its
  logit (computed as -log(1 + sum_{i != j} exp(l_i - l_j)), so confident images do not tie
  at p = 1). Its top images are the network's most confident examples of "this was turned
  rotations[j] x 90 degrees"; they are shown turned, as the network saw them, with the
  saliency of logit j. Logits come from the cached embeddings of the turned images.
- **Selectivity** of a neuron: (mean of its top-k activations - mean over all images) /
  standard deviation over all images (0 where the deviation is 0): how many standard
  deviations its best images stand above its typical response.

The random twin's neuron i has nothing to do with the trained network's neuron i: each
network's row shows its own top images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rotviz.attribution.cache import MapCache, maps_key
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import DataConfig
from rotviz.data.preprocess import PreparedSplit
from rotviz.data.rotation import normalize, rotate
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.models import RotationNet
from rotviz.nets.twin import DEFAULT_TWIN, describe_twin, trained_or_twin, twin_calibration
from rotviz.study.probe import network_key, split_features
from rotviz.study.results import NeuronsRun, NeuronView

LAYERS = ("embedding", "rotation")
# what the browser can show: the trained network or one of its twins (rotviz.nets.twin)
NETWORK_CHOICES = ("trained", "calibrated", "initial")
SORT_KEYS = ("neuron", "mean", "selectivity")
TOP_K = 9
PAGE_SIZE = 12

Progress = Callable[[int, int], None]


def _check_layer(layer: str) -> None:
    if layer not in LAYERS:
        raise RotvizError(f"layer {layer!r}: choose embedding or rotation")


def neuron_labels(checkpoint: Checkpoint, layer: str, n: int) -> list[str]:
    """A name per neuron: "17" (embedding) or "90°" (rotation neuron of that rotation)."""
    _check_layer(layer)
    if layer == "rotation":
        return [f"{90 * k}°" for k in checkpoint.train_config.rotations]
    return [str(i) for i in range(n)]


def rotation_log_probs(logits: np.ndarray, j: int) -> np.ndarray:
    """log p(j) (N,) float64 of logits (N, m), precise where p is close to 1."""
    d = np.asarray(logits, dtype=np.float64) - np.asarray(logits, dtype=np.float64)[:, j : j + 1]
    others = np.delete(d, j, axis=1)
    if others.shape[1] == 0:
        return np.zeros(len(d))
    top = others.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(others - top).sum(axis=1))
    return -np.logaddexp(0.0, lse)


def activations(
    checkpoint: Checkpoint,
    split: PreparedSplit,
    layer: str,
    network: str,
    device: torch.device,
    model: RotationNet | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Activations (N, n) of every image of a split: embedding features (float32) or, per
    rotation neuron j, log p(j) of the image turned by rotations[j] (float64); disk-cached.

    network: "trained", "initial" or "calibrated"; model: that network if the caller holds
    it already (else made by rotviz.nets.twin.trained_or_twin).
    progress(done, total) is called only while features are computed, not when cached.
    """
    _check_layer(layer)
    model = trained_or_twin(checkpoint, network) if model is None else model
    key = network_key(checkpoint, network, twin_calibration(model))
    if layer == "embedding":
        return split_features(model, split, key, device, cache_dir, progress=progress)
    rotations = checkpoint.train_config.rotations
    weight = model.head.weight.detach().cpu().double().numpy()
    bias = model.head.bias.detach().cpu().double().numpy()
    columns = []
    for j, k in enumerate(rotations):
        step = None
        if progress is not None:

            def step(done: int, total: int, j: int = j) -> None:
                progress(j * total + done, len(rotations) * total)

        feats = split_features(model, split, key, device, cache_dir, rotation=k, progress=step)
        columns.append(rotation_log_probs(feats.astype(np.float64) @ weight.T + bias, j))
    return np.stack(columns, axis=1)


def top_images(acts: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Per neuron, the rows of its k highest activations, (n, k) int64, highest first
    (ties: the lower row first)."""
    if k < 1:
        raise RotvizError(f"--top must be at least 1, got {k}")
    order = np.argsort(-np.asarray(acts), axis=0, kind="stable")
    return np.ascontiguousarray(order[: min(k, len(acts))].T)


def neuron_stats(acts: np.ndarray, k: int = TOP_K) -> pd.DataFrame:
    """Per neuron (one row each, index = neuron): mean, std, top-k mean and selectivity
    ((top-k mean - mean) / std, 0 where std is 0)."""
    acts = np.asarray(acts, dtype=np.float64)
    top = top_images(acts, k)
    mean, std = acts.mean(axis=0), acts.std(axis=0)
    top_mean = np.take_along_axis(acts.T, top, axis=1).mean(axis=1)
    selectivity = np.divide(top_mean - mean, std, out=np.zeros_like(mean), where=std > 0)
    df = pd.DataFrame({"mean": mean, "std": std, "top_mean": top_mean, "selectivity": selectivity})
    df.index.name = "neuron"
    return df


def sorted_neurons(stats: pd.DataFrame, key: str = "neuron") -> list[int]:
    """Neuron indices by key: "neuron" (ascending), "mean" or "selectivity" (highest first)."""
    if key not in SORT_KEYS:
        raise RotvizError(f"sort {key!r}: choose one of {', '.join(SORT_KEYS)}")
    if key == "neuron":
        return [int(i) for i in stats.index]
    return [int(i) for i in stats.sort_values(key, ascending=False, kind="stable").index]


def top_table(
    acts: np.ndarray, files: Sequence[str], labels: Sequence[str], k: int = TOP_K
) -> pd.DataFrame:
    """The top-k table, one row per (neuron, rank): neuron, label, mean, std, selectivity,
    rank (1 = highest), image (row in the split), file, activation."""
    stats = neuron_stats(acts, k)
    top = top_images(acts, k)
    n, kk = top.shape
    neuron = np.repeat(np.arange(n), kk)
    rows = top.reshape(-1)
    return pd.DataFrame(
        {
            "neuron": neuron,
            "label": np.asarray(labels, dtype=object)[neuron],
            "mean": stats["mean"].to_numpy()[neuron],
            "std": stats["std"].to_numpy()[neuron],
            "selectivity": stats["selectivity"].to_numpy()[neuron],
            "rank": np.tile(np.arange(1, kk + 1), n),
            "image": rows,
            "file": np.asarray(files, dtype=object)[rows],
            "activation": np.asarray(acts)[rows, neuron],
        }
    )


def neuron_images(
    checkpoint: Checkpoint,
    split: PreparedSplit,
    acts: np.ndarray,
    layer: str,
    neuron: int,
    k: int = TOP_K,
) -> tuple[np.ndarray, torch.Tensor]:
    """The rows of a neuron's top-k images (from the activations acts (N, n) of its network)
    and those images uint8 (k, 3, S, S), turned as the network saw them (rotation neurons)."""
    _check_layer(layer)
    if not 0 <= neuron < acts.shape[1]:
        raise RotvizError(f"neuron {neuron} does not exist: this layer has 0..{acts.shape[1] - 1}")
    rows = top_images(acts[:, neuron : neuron + 1], k)[0]
    turns = checkpoint.train_config.rotations[neuron] if layer == "rotation" else 0
    return rows, rotate(torch.from_numpy(np.array(split.images[rows])), turns)


def neuron_saliency(layer: str, neuron: int) -> SaliencyConfig:
    """The settings of a neuron's maps: that neuron alone, the image as shown (no aggregation)."""
    return SaliencyConfig(layer=layer, neurons=str(neuron), aggregate="none")


def neuron_view_key(
    checkpoint: Checkpoint,
    model: RotationNet,
    split: PreparedSplit,
    acts: np.ndarray,
    layer: str,
    neuron: int,
    k: int = TOP_K,
) -> str:
    """The map cache key of a neuron view's maps (rotviz.attribution.cache.maps_key)."""
    _, images = neuron_images(checkpoint, split, acts, layer, neuron, k)
    return maps_key((model,), neuron_saliency(layer, neuron), images.numpy())


def neuron_view(
    checkpoint: Checkpoint,
    model: RotationNet,
    network: str,
    split: PreparedSplit,
    acts: np.ndarray,
    layer: str,
    neuron: int,
    k: int = TOP_K,
    cache: MapCache | None = None,
) -> NeuronView:
    """The top-k images of a neuron (from the activations acts (N, n) of this network) and
    that neuron's saliency on each (``neuron_saliency``); with a map cache, the maps are read
    from it when there and kept in it when computed."""
    rows, images = neuron_images(checkpoint, split, acts, layer, neuron, k)
    cfg = neuron_saliency(layer, neuron)
    key = maps_key((model,), cfg, images.numpy()) if cache is not None else ""
    maps = cache.get(key) if cache is not None else None
    if maps is None or maps.shape != (len(rows), *images.shape[-2:]):
        rotations = checkpoint.train_config.rotations
        maps = cfg.maps(model, normalize(images), model_rotations=rotations).numpy()
        maps = maps.astype(np.float32)
        if cache is not None:
            cache.put(key, maps)
    label = neuron_labels(checkpoint, layer, acts.shape[1])[neuron]
    return NeuronView(
        layer,
        network,
        neuron,
        label,
        rows,
        np.asarray(acts)[rows, neuron],
        images.numpy(),
        maps,
    )


def neurons_run(
    checkpoint: Checkpoint,
    split: PreparedSplit,
    layers: Sequence[str],
    device: torch.device,
    top: int = TOP_K,
    sort: str = "neuron",
    limit: int | None = None,
    chosen: Sequence[int] | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str], Progress] | None = None,
    twin: str = DEFAULT_TWIN,
    data: DataConfig | None = None,
) -> NeuronsRun:
    """The top-k table of every neuron of the layers, trained and its random twin of kind twin
    (calibrated by rotviz.nets.twin's rule for data, the data of split; said in the log and in
    the table's twin_calibration column), and the contact sheets of the chosen neurons
    (default: the trained network's neurons by sort, the first limit); the sheets' views are
    computed as they are read (once). progress(network) gives the progress callback of that
    network's activations."""
    files = [r.relpath for r in split.records]
    nets = ("trained", twin)  # a contact sheet's rows: the trained net, its twin
    models = {net: trained_or_twin(checkpoint, net, device, data) for net in nets}
    calibration = models[twin].calibration.describe()
    if log:
        log(describe_twin(models[twin]))
    tables, picks = [], []
    for layer in layers:
        acts = {
            net: activations(
                checkpoint,
                split,
                layer,
                net,
                device,
                models[net],
                progress=progress(net) if progress else None,
            )
            for net in nets
        }
        labels = neuron_labels(checkpoint, layer, acts["trained"].shape[1])
        for net in nets:
            tables.append(
                top_table(acts[net], files, labels, top).assign(
                    network=net,
                    layer=layer,
                    twin_calibration=calibration if net != "trained" else "",
                )
            )
        if chosen is not None:
            neurons = list(chosen)
        else:
            neurons = sorted_neurons(neuron_stats(acts["trained"], top), sort)[:limit]
        if log:
            log(f"{layer} layer: {len(labels)} neurons, contact sheets of {len(neurons)}")
        picks.append((layer, models, acts, neurons))

    def sheets() -> Iterator[tuple[str, list[NeuronView]]]:
        for layer, models, acts, neurons in picks:
            for i in neurons:
                views = [
                    neuron_view(checkpoint, models[net], net, split, acts[net], layer, i, top)
                    for net in nets
                ]
                yield f"{layer}_{i:04d}", views

    table = pd.concat(tables, ignore_index=True)
    first = ["network", "layer"]
    table = table[first + [c for c in table.columns if c not in first]]
    return NeuronsRun(table, sheets(), top, len(split), twin)
