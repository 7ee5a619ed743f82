"""Several maps of one image combined: its rotated copies explained, turned back, then mean or max."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rotviz.attribution.methods import attribute
from rotviz.attribution.targets import AllNeurons, NeuronSet
from rotviz.errors import RotvizError
from rotviz.nets.models import RotationNet

AGGREGATES = ("mean", "max", "none")


def rotation_aggregated_maps(
    model: RotationNet,
    x: torch.Tensor,
    layer: str = "rotation",
    neurons: NeuronSet | None = None,
    rotations: Sequence[int] = (0, 1, 2, 3),
    aggregate: str = "mean",
    method: str = "saliency",
    model_rotations: Sequence[int] | None = None,
    **kw: object,
) -> torch.Tensor:
    """Maps of each image's rotated copies, rotated back and combined, x (N, 3, S, S) -> (N, S, S).

    The copy ``torch.rot90(x, k)`` is explained and its map turned back with
    ``torch.rot90(map, -k)``; maps are combined by "mean" or "max"; "none" explains only the
    unrotated images. For the "true" neuron set the copy rotated by k has the label of
    rotation k in ``model_rotations`` (default ``model.rotations``, the order it was trained with).
    Extra keywords go to ``attribute``.
    """
    neurons = AllNeurons() if neurons is None else neurons
    if aggregate not in AGGREGATES:
        raise RotvizError(f"aggregate {aggregate!r}: choose mean, max or none")
    model_rotations = model.rotations if model_rotations is None else tuple(model_rotations)
    ks = (0,) if aggregate == "none" else tuple(int(k) % 4 for k in rotations)
    if not ks:
        raise RotvizError("rotations: give at least one rotation, e.g. 0,90,180,270")
    if any(k % 2 for k in ks) and x.shape[-1] != x.shape[-2]:
        raise RotvizError("rotate only square images: resize to a square first")
    combined = None
    for k in ks:
        rotated = torch.rot90(x, k, dims=(-2, -1))
        maps = attribute(
            model, rotated, layer, neurons.for_rotation(k, model_rotations), method, **kw
        )
        back = torch.rot90(maps, -k, dims=(-2, -1))
        if combined is None:
            combined = back.clone()
        elif aggregate == "max":
            combined = torch.maximum(combined, back)
        else:
            combined += back
    assert combined is not None
    return combined / len(ks) if aggregate == "mean" else combined
