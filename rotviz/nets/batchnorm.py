"""Precise BatchNorm statistics and the train/eval statistics gap (the twins: rotviz.nets.twin).

BatchNorm running statistics are an exponential average (momentum 0.1) of batch statistics
taken while the weights move; after a short or fast run they lag far behind the weights (a
network at 96 % with batch statistics can score chance in eval mode), and in an untrained
twin they are the initial mean 0 / variance 1, which shrinks its input gradients by orders
of magnitude. ``precise_bn`` recomputes them as an equal-weight average over batches of
training images at every rotation, weights untouched (PreciseBN: Wu & Johnson 2021,
"Rethinking 'Batch' in BatchNorm"; pycls, Detectron2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from rotviz import distributed
from rotviz.data.rotation import normalize, rotation_batch
from rotviz.errors import RotvizError
from rotviz.nets.evaluate import rotation_accuracy

DEFAULT_N_IMAGES = 2000  # images (each at every rotation) the statistics are averaged over
DEFAULT_BATCH_SIZE = 32  # images per batch, the training default
GAP_WARN_POINTS = 10.0  # warn when batch- and running-statistics accuracies differ by more


@dataclass(frozen=True)
class PreciseBNInfo:
    """What a recalibration used, for the card: images, batches, BatchNorm layers."""

    n_images: int
    n_batches: int
    n_layers: int
    batch_size: int
    rotations: tuple[int, ...]
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


class _LocalBatchNorm(_BatchNorm):
    """SyncBatchNorm's class for the duration of a recalibration: same state, no cross-rank sync."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer of the model (any dimension, SyncBatchNorm and timm's included)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def sample_indices(n_total: int, n_images: int | None, seed: int = 0) -> np.ndarray:
    """A seeded random order of range(n_total), cut to n_images (None: all), the images recalibrated on."""
    order = np.random.default_rng([seed, n_total]).permutation(n_total)
    return order if n_images is None else order[:n_images]


@contextlib.contextmanager
def recalibrating(model: nn.Module) -> Iterator[list[_BatchNorm]]:
    """BatchNorm layers in train mode with momentum 1 (running stats = last batch's), all else eval.

    Other modules stay in eval mode, so dropout and drop-path are off (deterministic, as at
    evaluation). Every module's mode, momentum, class and num_batches_tracked are restored.
    """
    layers = batchnorm_layers(model)
    modes = [(m, m.training) for m in model.modules()]
    saved = [(bn, bn.momentum, bn.__class__, _clone(bn.num_batches_tracked)) for bn in layers]
    try:
        model.eval()
        for bn in layers:
            if isinstance(bn, nn.SyncBatchNorm):  # each batch is whole on one rank: no sync
                bn.__class__ = _LocalBatchNorm
            bn.train()
            bn.momentum = 1.0
        yield layers
    finally:
        for m, training in modes:
            m.training = training
        for bn, momentum, cls, tracked in saved:
            bn.momentum, bn.__class__ = momentum, cls
            if tracked is not None:
                bn.num_batches_tracked.copy_(tracked)


def _clone(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clone()


def _stat_vector(layers: Sequence[_BatchNorm]) -> torch.Tensor:
    """Running means then variances of all layers, concatenated, (sum 2*C,) float32."""
    return torch.cat(
        [bn.running_mean.float() for bn in layers] + [bn.running_var.float() for bn in layers]
    )


@torch.no_grad()
def precise_bn(
    model: nn.Module,
    images: np.ndarray,
    rotations: Sequence[int],
    device: torch.device,
    n_images: int | None = DEFAULT_N_IMAGES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
) -> PreciseBNInfo:
    """Recompute every BatchNorm layer's running mean and variance, in place; weights untouched.

    images: uint8 (N, 3, S, S) training images; a seeded random subset of n_images of them
    (None: all) is cut into batches of batch_size images, each at every rotation (as
    rotviz.training.loop feeds them). Each BatchNorm layer's running mean and (unbiased) variance
    become the equal-weight average over batches of that batch's mean and variance, with
    BatchNorm in train mode and every other module in eval mode. Under torchrun the batches
    are split across ranks (batch b on rank b % world) and every rank ends with exactly the
    single-process statistics (per-batch values all-reduced, then summed in batch order).
    """
    layers = batchnorm_layers(model)
    idx = sample_indices(len(images), n_images, seed)
    if len(idx) == 0:
        raise RotvizError("precise BatchNorm needs at least one training image")
    if not layers:
        return PreciseBNInfo(len(idx), 0, 0, batch_size, tuple(rotations), seed)
    if any(bn.running_mean is None for bn in layers):
        raise RotvizError("precise BatchNorm needs BatchNorm layers that track running statistics")
    model.to(device)
    batches = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    width = sum(2 * bn.num_features for bn in layers)
    per_batch = torch.zeros(len(batches), width, dtype=torch.float32, device=device)
    with recalibrating(model):
        for rows in distributed.shard_batches(len(batches), 1):
            b = rows.start
            batch = torch.from_numpy(np.array(images[np.sort(batches[b])])).to(device)
            x, _ = rotation_batch(batch, rotations)
            model(normalize(x))
            per_batch[b] = _stat_vector(layers)
    # each row is written by exactly one rank, the others hold zeros: the sum is exact
    per_batch = distributed.all_reduce_sum(per_batch).double()
    mean = per_batch.sum(0) / len(batches)  # the same tensor, hence the same sum, on every rank
    offset = 0
    for part in ("running_mean", "running_var"):
        for bn in layers:
            buf = getattr(bn, part)
            buf.copy_(mean[offset : offset + bn.num_features].to(buf.dtype))
            offset += bn.num_features
    return PreciseBNInfo(
        len(idx), len(batches), len(layers), batch_size, tuple(int(k) for k in rotations), seed
    )


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm normalises with each batch's own statistics, even in eval mode; running stats untouched.

    With its running buffers hidden, a BatchNorm layer uses batch statistics and updates
    nothing (PyTorch's rule for layers without running statistics); they come back after.
    """
    layers = [bn for bn in batchnorm_layers(model) if bn.running_mean is not None]
    saved = [(bn, bn.running_mean, bn.running_var) for bn in layers]
    try:
        for bn in layers:
            bn.running_mean, bn.running_var = None, None
        yield
    finally:
        for bn, mean, var in saved:
            bn.running_mean, bn.running_var = mean, var


def statistics_gap(
    model: nn.Module,
    images: np.ndarray,
    rotations: tuple[int, ...],
    device: torch.device,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[float, float]:
    """(accuracy with batch statistics, accuracy with running statistics) on uint8 images (N, 3, S, S).

    Batches of batch_size images at every rotation, as in training; a gap of many points
    means the running statistics lag the weights (recompute them with precise_bn).
    """
    with batch_statistics(model):
        acc_batch = rotation_accuracy(model, images, rotations, device, batch_size).accuracy
    acc_running = rotation_accuracy(model, images, rotations, device, batch_size).accuracy
    return acc_batch, acc_running


def statistics_warning(
    acc_batch: float, acc_running: float, points: float = GAP_WARN_POINTS
) -> str | None:
    """One warning line when the two accuracies of statistics_gap differ by more than points, else None."""
    gap = 100 * (acc_batch - acc_running)
    if abs(gap) <= points:
        return None
    return (
        f"BatchNorm statistics gap: {acc_batch:.1%} with batch statistics vs {acc_running:.1%} "
        f"in eval mode ({gap:+.1f} points); recompute them with --precise-bn"
    )
