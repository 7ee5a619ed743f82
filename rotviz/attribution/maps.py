"""Saliency maps of whole image sets: the one entry point the CLI, the study runner and the app call.

``checkpoint_maps`` takes the checkpoint, so its network (which carries the rotations it was
trained on) and its random twin travel together and no caller can pass the wrong ones;
``network_maps`` serves any single network (the steps of cascading randomisation).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from rotviz import distributed
from rotviz.attribution.aggregation import rotation_aggregated_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.attribution.targets import AllNeurons, Indices, NeuronSet, layer_size
from rotviz.data.rotation import normalize
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.models import RotationNet
from rotviz.nets.twin import random_twin_of
from rotviz.runtime import RuntimeLike, as_runtime

Progress = Callable[[int, int], None]


def network_maps(
    models: RotationNet | tuple[RotationNet, ...],
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    batch_size: int = 8,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Maps (N, S, S) float32 of each model on uint8 images (N, 3, S, S), in batches of batch_size.

    Every model sees the same batches (so maps compare exactly). Under torchrun the batches
    are split across ranks (batch b on rank b % world) and gathered back in order on every
    rank: each image is computed in the same batch as in one process, so the maps are
    bit-identical to a single-process run.
    """
    models = models if isinstance(models, tuple) else (models,)
    device = as_runtime(runtime).device
    models = tuple(m.to(device).eval() for m in models)
    out: list[list[np.ndarray]] = []
    n_batches = -(-len(images) // batch_size)
    for rows in distributed.shard_batches(len(images), batch_size):
        x = normalize(torch.from_numpy(np.array(images[rows])).to(device, non_blocking=True))
        out.append([sal.maps(m, x).float().cpu().numpy() for m in models])
        if progress:
            progress(min(rows.stop, len(images)), len(images))
    out = distributed.gather_batches(out, n_batches)
    size = images.shape[-1]
    if not out:
        return [np.zeros((0, size, size), np.float32) for _ in models]
    return [np.concatenate([batch[i] for batch in out]) for i in range(len(models))]


def checkpoint_maps(
    checkpoint: Checkpoint,
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    twin: RotationNet | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maps (N, S, S) float32 of a checkpoint's network and of its random twin on uint8 images (N, 3, S, S).

    twin: the random twin when the caller already holds it (else the default one,
    rotviz.nets.twin.random_twin_of: calibrated on the network's own training images).
    """
    twin = twin if twin is not None else random_twin_of(checkpoint, runtime=runtime)
    trained, random = network_maps(
        (checkpoint.model, twin), images, sal, runtime, batch_size, progress
    )
    return trained, random


def neuron_steps(model: RotationNet, sal: SaliencyConfig, per_step: int | None) -> list[NeuronSet]:
    """sal's neuron set cut into sets of at most per_step neurons ("all" and index lists only;
    a set chosen per image stays whole); the map of the set is the max of theirs."""
    neurons = sal.neuron_set()
    if not per_step or not isinstance(neurons, (AllNeurons, Indices)):
        return [neurons]
    indices = (
        list(range(layer_size(model, sal.layer)))
        if isinstance(neurons, AllNeurons)
        else list(neurons.indices)
    )
    return [Indices(indices[i : i + per_step]) for i in range(0, len(indices), per_step)]


def stepped_network_maps(
    models: tuple[RotationNet, ...],
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    neurons_per_step: int | None = None,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Maps (N, S, S) float32 of each model on a few uint8 images (N, 3, S, S), in small steps:
    one per model, rotated copy and group of at most neurons_per_step neurons, with
    progress(done, total) after each (a caller stops between steps by raising from it).
    The same maps as ``network_maps`` (the max over neuron groups, then the rotations
    combined as ``rotation_aggregated_maps`` does)."""
    device = as_runtime(runtime).device
    x = normalize(torch.from_numpy(np.array(images)).to(device))
    ks = (0,) if sal.aggregate == "none" else tuple(int(k) % 4 for k in sal.rotations)
    kw = dict(n_steps=sal.n_steps, nt_samples=sal.nt_samples, stdevs=sal.stdevs, seed=sal.seed)
    steps = [neuron_steps(m, sal, neurons_per_step) for m in models]
    total, done = sum(len(ks) * len(s) for s in steps), 0
    out = []
    for model, groups in zip(models, steps, strict=True):
        model = model.to(device).eval()
        combined = None
        for k in ks:
            per_k = None
            for group in groups:
                piece = rotation_aggregated_maps(
                    model, x, sal.layer, group, (k,), "max", sal.method, **kw
                )
                per_k = piece if per_k is None else torch.maximum(per_k, piece)
                done += 1
                if progress:
                    progress(done, total)
            if combined is None:
                combined = per_k.clone()
            elif sal.aggregate == "max":
                combined = torch.maximum(combined, per_k)
            else:
                combined += per_k
        assert combined is not None
        maps = combined / len(ks) if sal.aggregate == "mean" else combined
        out.append(maps.float().cpu().numpy())
    return out
