"""Rotation accuracy on a test split: overall, per rotation, the confusion matrix, and per image.

One function per quantity: ``rotation_accuracy`` (the card's numbers, sharded under torchrun)
and ``accuracy_comparison`` (trained vs random twin, mean [95% CI] over test images, for the
study tables and the app alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from rotviz import distributed
from rotviz.data.rotation import normalize, rotation_batch
from rotviz.nets.checkpoint import Checkpoint
from rotviz.runtime import RuntimeLike, as_runtime
from rotviz.scores.stats import Comparison, compare_paired, rotation_correctness


@dataclass
class RotationEval:
    """Rotation prediction results on n_images images, each seen at every rotation.

    confusion[i][j] counts samples of true rotation index i predicted as j.
    """

    accuracy: float
    per_rotation: list[float]
    confusion: list[list[int]]
    rotations_degrees: list[int]
    n_images: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def rotation_logits(
    model: nn.Module,
    images: np.ndarray,
    rotations: tuple[int, ...],
    runtime: RuntimeLike = "auto",
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N*m, m) and labels (N*m,) for uint8 images (N, 3, S, S) at every rotation, eval mode."""
    device = as_runtime(runtime).device
    was_training = model.training
    model.eval().to(device)
    all_logits, all_labels = [], []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)
        x, y = rotation_batch(batch, rotations)
        all_logits.append(model(normalize(x)).float().cpu())
        all_labels.append(y.cpu())
    model.train(was_training)
    m = len(rotations)
    if not all_logits:
        return torch.zeros(0, m), torch.zeros(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_labels)


def rotation_accuracy(
    model: nn.Module,
    images: np.ndarray,
    rotations: tuple[int, ...],
    runtime: RuntimeLike = "auto",
    batch_size: int = 64,
) -> RotationEval:
    """Accuracy of predicting the applied rotation, over all images at all rotations.

    Under torchrun the batches are split across ranks and the confusion matrices summed,
    so every rank returns the single-process result.
    """
    runtime = as_runtime(runtime)
    m = len(rotations)
    confusion = torch.zeros(m, m, dtype=torch.long)
    for rows in distributed.shard_batches(len(images), batch_size):
        logits, labels = rotation_logits(model, images[rows], rotations, runtime, batch_size)
        confusion.index_put_((labels, logits.argmax(1)), torch.ones_like(labels), accumulate=True)
    if distributed.is_distributed():
        nccl = torch.distributed.get_backend() == "nccl"
        confusion = distributed.all_reduce_sum(
            confusion.to(runtime.device if nccl else torch.device("cpu"))
        ).cpu()
    # exact ratios of counts in float64, as the per-image means of accuracy_comparison
    per_rotation = (confusion.diag().double() / confusion.sum(1).clamp(min=1).double()).tolist()
    accuracy = int(confusion.diag().sum()) / max(int(confusion.sum()), 1)
    return RotationEval(
        accuracy, per_rotation, confusion.tolist(), [90 * k for k in rotations], len(images)
    )


def image_correctness(
    model: nn.Module, images: np.ndarray, rotations: tuple[int, ...], runtime: RuntimeLike = "auto"
) -> np.ndarray:
    """Per test image, the share of its rotated copies whose rotation is predicted right, (N,)."""
    logits, labels = rotation_logits(model, images, rotations, runtime)
    return rotation_correctness(logits, labels, len(images)).mean(1)


def accuracy_comparison(
    checkpoints: Sequence[Checkpoint],
    images: np.ndarray,
    runtime: RuntimeLike = "auto",
    *,
    twins: Sequence[nn.Module],
) -> tuple[Comparison, dict[str, list[float]]]:
    """Rotation accuracy of trained networks vs their random twins on the same test images.

    checkpoints: one per training seed of the same recipe (one is the usual case); twins: their
    random twins, one each (rotviz.nets.twin.random_twin_of makes them). Each image is one bootstrap unit: its correctness averaged over rotations and
    seeds. Returns the paired comparison (intervals, difference, Wilcoxon p) and each seed's
    accuracy per network.
    """
    runtime = as_runtime(runtime)
    per_image: dict[str, list[np.ndarray]] = {"trained": [], "random": []}
    for ckpt, twin in zip(checkpoints, twins, strict=True):
        nets = {"trained": ckpt.model, "random": twin}
        for net, model in nets.items():
            per_image[net].append(image_correctness(model, images, ckpt.rotations, runtime))
    cmp = compare_paired(
        np.mean(per_image["trained"], axis=0), np.mean(per_image["random"], axis=0)
    )
    return cmp, {net: [float(c.mean()) for c in per_image[net]] for net in per_image}


def rotation_probabilities(
    model: torch.nn.Module, pixels: np.ndarray, rotations: tuple[int, ...]
) -> pd.DataFrame:
    """For an image (3, S, S) uint8 turned by each trained rotation: P(each rotation) and the prediction."""
    logits, _ = rotation_logits(model, pixels[None], rotations, torch.device("cpu"))
    probs = torch.softmax(logits, dim=1).numpy()
    degrees = [90 * k for k in rotations]
    df = pd.DataFrame(
        100 * probs,
        columns=[f"P({d}°) %" for d in degrees],
        index=[f"image turned {d}°" for d in degrees],
    ).round(1)
    df.insert(0, "predicted", [f"{degrees[j]}°" for j in probs.argmax(1)])
    df.insert(1, "correct", [bool(j == i) for i, j in enumerate(probs.argmax(1))])
    return df
