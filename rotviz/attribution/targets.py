"""What to explain: a layer of a RotationNet and a set of its neurons.

Neuron sets are small objects in the manner of pytorch-grad-cam's targets: ``AllNeurons()``,
``Predicted()``, ``TrueRotation(labels)``, ``Indices([..])``, ``TopK(k)``; each selects, per
image, which neurons of a layer's activations (N, n) to explain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rotviz.errors import RotvizError
from rotviz.nets.models import RotationNet

LAYERS = ("rotation", "embedding")


class NeuronSet:
    """Which neurons of a layer to explain; ``select`` returns per-image indices."""

    #: True for sets that only make sense on the rotation logits (predicted / true rotation).
    rotation_layer_only: bool = False

    def select(self, activations: torch.Tensor) -> torch.Tensor:
        """Per-image neuron indices, (N, n_sel) int64, from a layer's activations (N, n)."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short human-readable name, e.g. "top-5 most active neurons"."""
        raise NotImplementedError

    def for_images(self, rows: slice) -> NeuronSet:
        """The same set restricted to a slice of the images (per-image data is sliced)."""
        return self

    def for_rotation(self, k: int, model_rotations: Sequence[int]) -> NeuronSet:
        """The set for the copy of the images rotated k quarter turns (only "true" changes)."""
        return self


@dataclass(frozen=True)
class AllNeurons(NeuronSet):
    """Every neuron of the layer."""

    def select(self, activations: torch.Tensor) -> torch.Tensor:
        n_img, n = activations.shape
        return torch.arange(n, device=activations.device).expand(n_img, n)

    def describe(self) -> str:
        return "all neurons"


@dataclass(frozen=True)
class Predicted(NeuronSet):
    """The rotation the model predicts (argmax of the rotation logits), per image."""

    rotation_layer_only = True

    def select(self, activations: torch.Tensor) -> torch.Tensor:
        return activations.argmax(dim=1, keepdim=True)

    def describe(self) -> str:
        return "predicted rotation"


@dataclass(frozen=True, eq=False)
class TrueRotation(NeuronSet):
    """The rotation actually applied, per image: label indices (N,) into the model's rotations.

    ``TrueRotation()`` without labels means "the images are upright" (rotation 0); under
    ``rotation_aggregated_maps`` the copy rotated by k then gets the label of rotation k.
    """

    labels: torch.Tensor | Sequence[int] | None = None

    rotation_layer_only = True

    def select(self, activations: torch.Tensor) -> torch.Tensor:
        if self.labels is None:
            raise RotvizError(
                "true rotation: give the label of each image, e.g. TrueRotation([0, 2]), "
                "or use TrueRotation() through attribute/rotation_aggregated_maps (upright images)"
            )
        labels = torch.as_tensor(self.labels, dtype=torch.long, device=activations.device)
        labels = labels.reshape(-1)
        n_img, n = activations.shape
        if labels.numel() != n_img:
            raise RotvizError(
                f"true rotation: {labels.numel()} labels for {n_img} images; give one per image"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= n):
            raise RotvizError(f"true rotation: labels must lie in 0..{n - 1} (the model's classes)")
        return labels[:, None]

    def describe(self) -> str:
        return "true rotation"

    def for_images(self, rows: slice) -> NeuronSet:
        if self.labels is None:
            return self
        return TrueRotation(torch.as_tensor(self.labels, dtype=torch.long).reshape(-1)[rows])

    def for_rotation(self, k: int, model_rotations: Sequence[int]) -> NeuronSet:
        rotations = [int(r) % 4 for r in model_rotations]
        if self.labels is None:
            quarter_turns = torch.zeros(1, dtype=torch.long)
        else:
            labels = torch.as_tensor(self.labels, dtype=torch.long).reshape(-1).cpu()
            if labels.numel() and (labels.min() < 0 or labels.max() >= len(rotations)):
                raise RotvizError(
                    f"true rotation: labels must lie in 0..{len(rotations) - 1} "
                    f"(the model's rotations {list(model_rotations)})"
                )
            quarter_turns = torch.tensor(rotations, dtype=torch.long)[labels]
        total = ((quarter_turns + k) % 4).tolist()
        missing = sorted({t * 90 for t in total if t not in rotations})
        if missing:
            raise RotvizError(
                f"true rotation: the model was not trained on {missing} degrees "
                f"(its rotations are {[r * 90 for r in rotations]}); choose rotations it knows"
            )
        new = [rotations.index(t) for t in total]
        if self.labels is None:
            return _UprightTrue(new[0])
        return TrueRotation(torch.tensor(new, dtype=torch.long))


@dataclass(frozen=True)
class _UprightTrue(NeuronSet):
    """The true rotation of a batch whose images all carry the same label."""

    label: int

    rotation_layer_only = True

    def select(self, activations: torch.Tensor) -> torch.Tensor:
        n_img, n = activations.shape
        if not 0 <= self.label < n:
            raise RotvizError(f"true rotation: label {self.label} is not one of 0..{n - 1}")
        return torch.full((n_img, 1), self.label, dtype=torch.long, device=activations.device)

    def describe(self) -> str:
        return "true rotation"


@dataclass(frozen=True)
class Indices(NeuronSet):
    """An explicit list of neuron indices, the same for every image."""

    indices: tuple[int, ...]

    def __init__(self, indices: Sequence[int]):
        object.__setattr__(self, "indices", tuple(int(i) for i in indices))
        if not self.indices:
            raise RotvizError("neuron indices: give at least one index, e.g. 3,17,42")

    def select(self, activations: torch.Tensor) -> torch.Tensor:
        n_img, n = activations.shape
        bad = [i for i in self.indices if not 0 <= i < n]
        if bad:
            raise RotvizError(f"neuron {bad[0]} does not exist: this layer has neurons 0..{n - 1}")
        idx = torch.tensor(self.indices, dtype=torch.long, device=activations.device)
        return idx.expand(n_img, len(self.indices))

    def describe(self) -> str:
        shown = ",".join(map(str, self.indices[:8])) + ("..." if len(self.indices) > 8 else "")
        return f"neurons {shown}"


@dataclass(frozen=True)
class TopK(NeuronSet):
    """The k most active neurons of the layer, per image."""

    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise RotvizError(f"top-k: k must be at least 1, got {self.k}")

    def select(self, activations: torch.Tensor) -> torch.Tensor:
        n = activations.shape[1]
        if self.k > n:
            raise RotvizError(f"top-{self.k}: this layer has only {n} neurons")
        return activations.topk(self.k, dim=1).indices

    def describe(self) -> str:
        return f"top-{self.k} most active neurons"


def parse_neurons(text: str) -> NeuronSet:
    """A neuron set from text: "all", "predicted", "true", "3,17,42" or "topk:5"."""
    t = text.strip().lower()
    if t == "all":
        return AllNeurons()
    if t == "predicted":
        return Predicted()
    if t == "true":
        return TrueRotation()
    if t.startswith("topk:") or t.startswith("top-k:") or t.startswith("top:"):
        value = t.split(":", 1)[1].strip()
        if not value.isdigit():
            raise RotvizError(f"neurons {text!r}: write top-k as topk:5")
        return TopK(int(value))
    try:
        return Indices([int(p) for p in t.split(",") if p.strip()])
    except ValueError:
        raise RotvizError(
            f"neurons {text!r}: use all, predicted, true, topk:K or indices like 3,17,42"
        ) from None


# --------------------------------------------------------------------------- helpers


def layer_size(model: RotationNet, layer: str) -> int:
    """How many neurons a layer has: the rotation logits or the embedding's features."""
    if layer == "rotation":
        return model.num_rotations
    if layer == "embedding":
        return model.num_features
    raise RotvizError(f"layer {layer!r}: choose rotation or embedding")


def layer_forward(model: RotationNet, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function x (N, 3, H, W) -> activations (N, n) of "rotation" or "embedding"."""
    if layer == "rotation":
        return model
    if layer == "embedding":
        return model.embed
    raise RotvizError(f"layer {layer!r}: choose rotation or embedding")


def resolve_request(
    model: RotationNet, layer: str, neurons: NeuronSet | None, x: torch.Tensor
) -> NeuronSet:
    """The neuron set to explain on x (all neurons for None; "true" without labels reads the
    images as upright, rotation 0 of the model's order); RotvizError unless the layer exists,
    the set fits it and x is (N, C, H, W)."""
    neurons = AllNeurons() if neurons is None else neurons
    if layer not in LAYERS:
        raise RotvizError(f"layer {layer!r}: choose rotation or embedding")
    if neurons.rotation_layer_only and layer != "rotation":
        raise RotvizError(
            f"{neurons.describe()} has no meaning on the {layer} layer: "
            "use it with the rotation layer, or choose all, topk:K or indices"
        )
    if x.dim() != 4:
        raise RotvizError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    if isinstance(neurons, TrueRotation) and neurons.labels is None:
        neurons = neurons.for_rotation(0, model.rotations)
    return neurons
