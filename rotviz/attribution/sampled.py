"""Integrated gradients and SmoothGrad for a whole neuron set, batched over points and neurons.

Both average input gradients over points around an image: integrated gradients (Sundararajan
et al., ICML 2017) over the path from a zero baseline, alpha_k x with Gauss-Legendre nodes and
weights (Captum's default), times x; SmoothGrad (Smilkov et al. 2017) over noisy copies
x + N(0, stdevs^2), |gradient| averaged. Every (image, neuron, point) gradient is one copy of
the image in a batch of about ``replicate_batch()`` copies, each copy backpropagating its own
neuron (exact in eval mode, where samples do not interact): neurons x points forward and
backward passes, the method's cost bound, in batches that keep the CPU busy.

SmoothGrad's noise is drawn once per batch of images (``torch.manual_seed(seed + first
image index)``, Captum's layout: ``torch.normal`` of shape (images x samples, C, H, W)) and
shared by every neuron, so a neuron's map does not depend on which neurons were asked with it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from rotviz.attribution.gradients import (
    MethodOptions,
    channels_last,
    neuron_set_maps,
    weighted_gradients,
)
from rotviz.attribution.targets import (
    NeuronSet,
    layer_forward,
)
from rotviz.nets.folding import inference_net
from rotviz.nets.models import RotationNet


def gauss_legendre(n_steps: int) -> tuple[list[float], list[float]]:
    """Nodes alpha in (0, 1) and weights summing to 1, as Captum's "gausslegendre" method."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return (0.5 * (nodes + 1)).tolist(), (0.5 * weights).tolist()


def integrated_gradients_maps(
    model: RotationNet,
    x: torch.Tensor,
    layer: str = "rotation",
    neurons: NeuronSet | None = None,
    options: MethodOptions | None = None,
) -> torch.Tensor:
    """Integrated gradients (zero baseline, options.n_steps points) of a neuron set,
    x (N, 3, H, W) -> (N, H, W)."""
    o = options or MethodOptions()
    alphas, weights = gauss_legendre(o.n_steps)

    def points(xb: torch.Tensor, first: int) -> torch.Tensor:
        return torch.stack([alpha * xb for alpha in alphas])

    def attribution(total: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return total * xb[:, None]

    step = torch.tensor(weights).float()  # Captum scales by float32 step sizes
    return _maps(model, x, layer, neurons, points, step, False, attribution, o)


def smoothgrad_maps(
    model: RotationNet,
    x: torch.Tensor,
    layer: str = "rotation",
    neurons: NeuronSet | None = None,
    options: MethodOptions | None = None,
) -> torch.Tensor:
    """SmoothGrad (mean |gradient| over options.nt_samples copies with noise of std
    options.stdevs, drawn from options.seed) of a neuron set, x (N, 3, H, W) -> (N, H, W)."""
    o = options or MethodOptions()
    nt_samples, stdevs, seed = o.nt_samples, o.stdevs, o.seed

    def points(xb: torch.Tensor, first: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[xb.device] if xb.device.type == "cuda" else []):
            torch.manual_seed(seed + first)
            size = (xb.shape[0] * nt_samples, *xb.shape[1:])
            noise = torch.normal(0, torch.tensor(stdevs, device=xb.device).repeat(size))
        noisy = xb.repeat_interleave(nt_samples, dim=0) + noise  # image-major, as Captum
        return noisy.view(xb.shape[0], nt_samples, *xb.shape[1:]).transpose(0, 1)

    weight = torch.full((nt_samples,), 1.0 / nt_samples, dtype=torch.float64)
    return _maps(model, x, layer, neurons, points, weight, True, lambda t, _: t, o)


Points = Callable[[torch.Tensor, int], torch.Tensor]  # images (n, ...), first index -> (K, n, ...)


def _maps(
    model: RotationNet,
    x: torch.Tensor,
    layer: str,
    neurons: NeuronSet | None,
    points: Points,
    weights: torch.Tensor,
    absolute: bool,
    attribution: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    o: MethodOptions,
) -> torch.Tensor:
    model = inference_net(model)
    forward = layer_forward(model, layer)

    def chunk(xb: torch.Tensor, cols: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        total = weighted_gradients(forward, pts, cols, weights, absolute)
        return attribution(total, xb).abs().amax(dim=2)  # (n, c, H, W)

    with channels_last(model):
        return neuron_set_maps(
            model,
            x,
            layer,
            neurons,
            chunk,
            o.chunk_size,
            o.batch_size,
            lambda xb, rows: points(xb, rows.start),
        )
