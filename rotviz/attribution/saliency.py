"""What to explain and how, as one configuration: layer, neuron set, method, aggregation.

``SaliencyConfig.maps`` is the one call from a configuration to maps; the mechanics live in
``targets`` (layers and neuron sets), ``gradients`` (the fast saliency path), ``methods`` (the
registry of attribution methods) and ``aggregation`` (over an image's rotations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rotviz.attribution.aggregation import AGGREGATES, rotation_aggregated_maps
from rotviz.attribution.methods import METHODS
from rotviz.attribution.targets import LAYERS, NeuronSet, parse_neurons
from rotviz.config import stable_hash
from rotviz.errors import RotvizError
from rotviz.nets.models import RotationNet


@dataclass(frozen=True)
class SaliencyConfig:
    """What to explain and how; ``key()`` is a stable hash for caches of maps."""

    layer: str = "rotation"
    neurons: str = "all"
    method: str = "saliency"
    aggregate: str = "mean"
    rotations: tuple[int, ...] = (0, 1, 2, 3)
    n_steps: int = 32  # integrated gradients
    nt_samples: int = 16  # smoothgrad
    stdevs: float = 0.15  # smoothgrad
    seed: int = 0  # smoothgrad noise

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise RotvizError(f"layer {self.layer!r}: choose rotation or embedding")
        if self.method not in METHODS:
            raise RotvizError(f"method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.aggregate not in AGGREGATES:
            raise RotvizError(f"aggregate {self.aggregate!r}: choose mean, max or none")
        neuron_set = parse_neurons(self.neurons)
        if neuron_set.rotation_layer_only and self.layer != "rotation":
            raise RotvizError(
                f"neurons {self.neurons!r} have no meaning on the {self.layer} layer: "
                "use the rotation layer, or all, topk:K or indices"
            )
        object.__setattr__(self, "rotations", tuple(int(k) for k in self.rotations))

    def neuron_set(self) -> NeuronSet:
        """The parsed neuron set."""
        return parse_neurons(self.neurons)

    def key(self) -> str:
        """Stable hex digest of the configuration."""
        return stable_hash("saliency", self)

    def maps(
        self,
        model: RotationNet,
        x: torch.Tensor,
        model_rotations: Sequence[int] | None = None,
        batch_size: int | None = 16,
    ) -> torch.Tensor:
        """Maps (N, H, W) of images x (N, 3, H, W) under this configuration."""
        return rotation_aggregated_maps(
            model,
            x,
            self.layer,
            self.neuron_set(),
            rotations=self.rotations,
            aggregate=self.aggregate,
            method=self.method,
            model_rotations=model_rotations,
            batch_size=batch_size,
            n_steps=self.n_steps,
            nt_samples=self.nt_samples,
            stdevs=self.stdevs,
            seed=self.seed,
        )
