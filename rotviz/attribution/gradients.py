"""Input gradients of many neurons at once, and plain saliency (the study's method) on them.

The map of one neuron a is |d a / d x| reduced over colour channels by max, (H, W); the map of
a neuron set is the element-wise max of its neurons' maps. Captum's ``Saliency(abs=True)``
looped over neurons is the reference; ``saliency_maps`` equals it at the cost bound (one
forward and input-gradient pass per neuron and image, in big batches). The scaffold every
method shares (``neuron_set_maps``), the replicated-batch gradients (``weighted_gradients``)
and the one-hot cotangents of batched backward passes live here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rotviz.attribution.targets import NeuronSet, layer_forward, resolve_request
from rotviz.errors import RotvizError
from rotviz.nets.folding import inference_net
from rotviz.nets.models import RotationNet


@dataclass(frozen=True)
class MethodOptions:
    """The knobs of the methods (each method reads the ones it needs)."""

    n_steps: int = 32
    nt_samples: int = 16
    stdevs: float = 0.15
    internal_batch_size: int | None = None
    seed: int = 0
    chunk_size: int | None = (
        None  # neurons per pass of a fast path (None: about replicate_batch() copies)
    )
    batch_size: int | None = 16  # images per batch


# Image-gradients computed together in one vmapped backward pass (chunk x images): bounds
# memory (activations x CHUNK_IMAGES) and stays near the CPU's sweet spot.
CHUNK_IMAGES = 32


@contextlib.contextmanager
def explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the block; every module's mode and flag restored."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)


def model_device(model: nn.Module, x: torch.Tensor) -> torch.device:
    """The device of the model's parameters (x's device for a parameter-free model)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else x.device


def out_dtype(x: torch.Tensor) -> torch.dtype:
    """Maps are float32, float64 for float64 inputs."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def image_batches(n: int, batch_size: int | None) -> Iterator[slice]:
    """Slices of n images, batch_size at a time (all at once for None or <= 0)."""
    step = n if not batch_size or batch_size <= 0 else batch_size
    for start in range(0, n, max(step, 1)):
        yield slice(start, min(start + step, n))


PATHS = ("replicate", "vmap", "loop")
# Image copies per forward/backward pass on the replicate path, per device type. On a CPU a
# pass of 16 copies of a 128 px image keeps its activations in cache and ran 1.2-1.5x faster
# a copy than one of 64 (all three models, 2 cores); a GPU wants big batches.
REPLICATE_BATCH = {"cpu": 16, "cuda": 256}


def replicate_batch(device: torch.device) -> int:
    """Image copies per pass of the replicate path on this device."""
    return REPLICATE_BATCH.get(device.type, 64)


def saliency_maps(
    model: RotationNet,
    x: torch.Tensor,
    layer: str = "rotation",
    neurons: NeuronSet | None = None,
    chunk_size: int | None = None,
    batch_size: int | None = 16,
    path: str = "replicate",
) -> torch.Tensor:
    """Saliency of a neuron set (the study's method), x (N, 3, H, W) -> maps (N, H, W).

    Equals Captum ``Saliency(abs=True)`` looped over the selected neurons, max over
    channels, max over neurons, with weight gradients switched off. Paths:
    "replicate" (default): each image is repeated once per neuron of a chunk and one
    forward plus ONE backward pass of the enlarged batch gives every copy's gradient of its
    own neuron (exact in eval mode, where samples do not interact); big batches keep the
    CPU/GPU busy where per-neuron backward passes cannot. "vmap": one forward, backward
    passes vmapped over neurons (``is_grads_batched``). "loop": one forward, one backward
    per neuron. chunk_size: neurons per pass (default: about replicate_batch() image copies,
    or CHUNK_IMAGES gradients for vmap). Float32 maps (float64 for float64 inputs), on x's
    device; the model runs in eval mode.
    """
    if path not in PATHS:
        raise RotvizError(f"saliency path {path!r}: choose one of {', '.join(PATHS)}")
    model = inference_net(model)
    forward = layer_forward(model, layer)
    if path == "replicate":
        one = torch.ones(1, dtype=torch.float64)

        def replicated(xb: torch.Tensor, cols: torch.Tensor, _: object) -> torch.Tensor:
            return weighted_gradients(forward, xb[None], cols, one, absolute=True).amax(dim=2)

        with channels_last(model):
            return neuron_set_maps(model, x, layer, neurons, replicated, chunk_size, batch_size)

    def graph(xb: torch.Tensor, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        xg = xb.clone().requires_grad_(True)
        return xg, forward(xg)

    def backward(xb: torch.Tensor, cols: torch.Tensor, prepared: tuple) -> torch.Tensor:
        xg, acts = prepared
        cot = one_hot_cotangents(acts, cols)  # (c, N, n)
        if path == "vmap":
            (grads,) = torch.autograd.grad(acts, xg, cot, retain_graph=True, is_grads_batched=True)
        else:
            grads = torch.stack(
                [torch.autograd.grad(acts, xg, c, retain_graph=True)[0] for c in cot]
            )
        return grads.abs().amax(dim=2).transpose(0, 1)  # (N, c, H, W)

    return neuron_set_maps(
        model, x, layer, neurons, backward, chunk_size, batch_size, graph, copies=CHUNK_IMAGES
    )


ChunkMaps = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


def neuron_set_maps(
    model: RotationNet,
    x: torch.Tensor,
    layer: str,
    neurons: NeuronSet | None,
    chunk_maps: ChunkMaps,
    chunk_size: int | None = None,
    batch_size: int | None = 16,
    prepare: Callable[[torch.Tensor, slice], Any] | None = None,
    copies: int | None = None,
) -> torch.Tensor:
    """Maps (N, H, W) of a neuron set from a method's maps of chunks of its neurons.

    Per batch of images xb the set's neurons are selected (one forward pass without
    gradients), ``prepare(xb, rows)`` computes what the method shares across neurons, and
    ``chunk_maps(xb, cols, prepared)`` gives the maps (n, c, H, W) of neurons cols (n, c),
    c <= chunk_size (default: about ``copies`` images x neurons, ``replicate_batch`` of the
    device unless given); the set's map is their
    element-wise max. The model runs in eval mode with frozen parameters.
    """
    neurons = resolve_request(model, layer, neurons, x)
    device = model_device(model, x)
    copies = copies or replicate_batch(device)
    forward = layer_forward(model, layer)
    out = torch.empty(x.shape[0], *x.shape[-2:], dtype=out_dtype(x), device=x.device)
    with explaining(model):
        for rows in image_batches(x.shape[0], batch_size):
            xb = x[rows].detach().to(device)
            with torch.no_grad():
                sel = neurons.for_images(rows).select(forward(xb))  # (n, s)
            prepared = prepare(xb, rows) if prepare else None
            step = max(1, chunk_size or copies // max(1, sel.shape[0]))
            running = torch.zeros(xb.shape[0], *x.shape[-2:], dtype=xb.dtype, device=device)
            for start in range(0, sel.shape[1], step):
                maps = chunk_maps(xb, sel[:, start : start + step], prepared)
                running = torch.maximum(running, maps.amax(dim=1))
            out[rows] = running.to(out.device, out.dtype)
    return out


@contextlib.contextmanager
def channels_last(model: nn.Module) -> Iterator[None]:
    """Run convolutions in channels-last layout (oneDNN's fast path for big batches), then restore."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_contiguous = [m.weight.is_contiguous() for m in convs]
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for conv, contiguous in zip(convs, was_contiguous, strict=True):
            if contiguous:
                conv.weight.data = conv.weight.data.contiguous()


def one_hot_cotangents(outputs: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Cotangents (c, N, n) of outputs (N, n): the j-th has a 1 at (i, cols[i, j]) for every image i.

    Images are independent in eval mode, so one backward pass of the j-th cotangent gives
    every image's gradient of its j-th selected neuron.
    """
    n_img, c = cols.shape
    cot = torch.zeros(c, *outputs.shape, dtype=outputs.dtype, device=outputs.device)
    rows = torch.arange(n_img, device=outputs.device)
    cot[torch.arange(c, device=outputs.device)[:, None], rows[None, :], cols.T] = 1.0
    return cot


def weighted_gradients(
    forward: Callable[[torch.Tensor], torch.Tensor],
    points: torch.Tensor,
    cols: torch.Tensor,
    weights: torch.Tensor,
    absolute: bool,
    copies: int | None = None,
) -> torch.Tensor:
    """sum_k w_k g_k for every image i and neuron cols[i, j], g_k the input gradient of that
    neuron at points[k, i] (|g_k| when absolute); points (K, n, C, H, W), cols (n, c) ->
    (n, c, C, H, W). Each image copy in a pass backpropagates its own neuron; a pass holds
    about ``copies`` copies (default ``replicate_batch`` of the device)."""
    n_points, n = points.shape[:2]
    c = cols.shape[1]
    copies = copies or replicate_batch(points.device)
    targets = cols.reshape(-1)  # image-major: copy (i, j)
    total = torch.zeros(n, c, *points.shape[2:], dtype=points.dtype, device=points.device)
    group = max(1, copies // (n * c))
    for k0 in range(0, n_points, group):
        ks = range(k0, min(n_points, k0 + group))
        batch = torch.cat([points[k].repeat_interleave(c, dim=0) for k in ks])
        batch = batch.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        acts = forward(batch)
        picked = acts[torch.arange(batch.shape[0], device=acts.device), targets.repeat(len(ks))]
        (grads,) = torch.autograd.grad(picked.sum(), batch)
        grads = grads.view(len(ks), n, c, *points.shape[2:])
        if absolute:
            grads = grads.abs()
        w = weights[k0 : k0 + len(ks)].to(grads.device, grads.dtype)
        total += (w.view(-1, 1, 1, 1, 1, 1) * grads).sum(dim=0)
    return total
