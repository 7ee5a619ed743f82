"""Rotation accuracy on a test split: overall, per rotation, and the confusion matrix."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from rotviz.rotation import normalize, rotation_batch


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
    device: torch.device,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N*m, m) and labels (N*m,) for uint8 images (N, 3, S, S) at every rotation, eval mode."""
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
    device: torch.device,
    batch_size: int = 64,
) -> RotationEval:
    """Accuracy of predicting the applied rotation, over all images at all rotations."""
    logits, labels = rotation_logits(model, images, rotations, device, batch_size)
    m = len(rotations)
    pred = logits.argmax(1)
    confusion = torch.zeros(m, m, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    per_rotation = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    accuracy = float(confusion.diag().sum() / max(int(confusion.sum()), 1))
    return RotationEval(
        accuracy, per_rotation, confusion.tolist(), [90 * k for k in rotations], len(images)
    )
