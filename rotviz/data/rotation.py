"""The rotation pretext task: rotated copies of images and their labels.

Label k means the image was rotated k x 90 degrees counter-clockwise, exactly as
``torch.rot90(img, k, dims=(-2, -1))`` and ``numpy.rot90`` do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rotviz.errors import RotvizError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_rotations(text: str) -> tuple[int, ...]:
    """Rotation subset from degrees ("0,90,180,270" or "0,180") to quarter turns, in the given order."""
    try:
        degrees = [int(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise RotvizError(f"rotations {text!r}: give angles in degrees, e.g. 0,90,180,270") from err
    bad = [d for d in degrees if d not in (0, 90, 180, 270)]
    if bad:
        raise RotvizError(f"rotation {bad[0]} is not one of 0, 90, 180, 270 degrees")
    if len(set(degrees)) != len(degrees) or len(degrees) < 2:
        raise RotvizError(f"rotations {text!r}: give at least two distinct angles, e.g. 0,180")
    return tuple(d // 90 for d in degrees)


def rotate(images: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate (..., H, W) images k x 90 degrees counter-clockwise."""
    return torch.rot90(images, k, dims=(-2, -1))


def rotation_batch(
    images: torch.Tensor, rotations: Sequence[int] = (0, 1, 2, 3)
) -> tuple[torch.Tensor, torch.Tensor]:
    """All chosen rotations of every image in one batch (the RotNet recipe).

    images: (N, C, S, S), square. Returns (N*m, C, S, S) ordered image-major
    (image 0 at each rotation, then image 1, ...) and labels (N*m,) int64 in 0..m-1,
    label i meaning rotations[i] quarter turns.
    """
    if images.shape[-1] != images.shape[-2]:
        raise RotvizError(
            "rotate only square images: resize first (non-square rotations leak the label)"
        )
    m = len(rotations)
    rotated = torch.stack([rotate(images, k) for k in rotations], dim=1)  # (N, m, C, S, S)
    labels = torch.arange(m, device=images.device).repeat(images.shape[0])
    return rotated.flatten(0, 1), labels


def normalize(images_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, 3, H, W) in 0..255 -> float, ImageNet mean/std normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=images_uint8.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images_uint8.device, dtype=dtype).view(1, 3, 1, 1)
    return (images_uint8.to(dtype) / 255.0 - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of normalize, to float in 0..1."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)
