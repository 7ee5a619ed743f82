"""Plain saliency, the study's method, at its cost bound: |d a / d x| for every selected neuron.

The map of one neuron a is |d a / d x| reduced over colour channels by max, (H, W); the map of
a neuron set is the element-wise max of its neurons' maps. Captum's ``Saliency(abs=True)``
looped over neurons is the reference; ``saliency_maps`` equals it with fewer passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from rotviz.attribution.targets import NeuronSet, layer_forward, resolve_request
from rotviz.errors import RotvizError
from rotviz.nets.models import RotationNet

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
REPLICATE_BATCH = 64  # image copies per forward/backward pass on the replicate path


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
    per neuron. chunk_size: neurons per pass (default: about REPLICATE_BATCH image copies,
    or CHUNK_IMAGES gradients for vmap). Float32 maps (float64 for float64 inputs), on x's
    device; the model runs in eval mode.
    """
    if path not in PATHS:
        raise RotvizError(f"saliency path {path!r}: choose one of {', '.join(PATHS)}")
    neurons = resolve_request(model, layer, neurons, x)
    device = model_device(model, x)
    forward = layer_forward(model, layer)
    out = torch.empty(x.shape[0], *x.shape[-2:], dtype=out_dtype(x), device=x.device)
    with explaining(model):
        for rows in image_batches(x.shape[0], batch_size):
            xb = x[rows].detach().to(device)
            sub = neurons.for_images(rows)
            if path == "replicate":
                with channels_last(model):
                    maps = _replicated_batch(forward, xb, sub, chunk_size)
            else:
                xb = xb.clone().requires_grad_(True)
                maps = _saliency_batch(forward, xb, sub, chunk_size, path == "vmap")
            out[rows] = maps.to(out.device, out.dtype)
    return out


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
) -> torch.Tensor:
    """Maps (N, H, W) of a neuron set from a method's maps of chunks of its neurons.

    Per batch of images xb the set's neurons are selected (one forward pass without
    gradients), ``prepare(xb, rows)`` computes what the method shares across neurons, and
    ``chunk_maps(xb, cols, prepared)`` gives the maps (n, c, H, W) of neurons cols (n, c),
    c <= chunk_size (default: about REPLICATE_BATCH image copies); the set's map is their
    element-wise max. The model runs in eval mode with frozen parameters.
    """
    neurons = resolve_request(model, layer, neurons, x)
    device = model_device(model, x)
    forward = layer_forward(model, layer)
    out = torch.empty(x.shape[0], *x.shape[-2:], dtype=out_dtype(x), device=x.device)
    with explaining(model):
        for rows in image_batches(x.shape[0], batch_size):
            xb = x[rows].detach().to(device)
            with torch.no_grad():
                sel = neurons.for_images(rows).select(forward(xb))  # (n, s)
            prepared = prepare(xb, rows) if prepare else None
            step = max(1, chunk_size or REPLICATE_BATCH // max(1, sel.shape[0]))
            running = torch.zeros(xb.shape[0], *x.shape[-2:], dtype=xb.dtype, device=device)
            for start in range(0, sel.shape[1], step):
                maps = chunk_maps(xb, sel[:, start : start + step], prepared)
                running = torch.maximum(running, maps.amax(dim=1))
            out[rows] = running.to(out.device, out.dtype)
    return out


def auto_chunk_size(n_images: int) -> int:
    """Neurons per vmapped backward pass: about CHUNK_IMAGES image-gradients at once."""
    return max(1, CHUNK_IMAGES // max(1, n_images))


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


def _replicated_batch(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    neurons: NeuronSet,
    chunk_size: int | None,
) -> torch.Tensor:
    """Maps (N, H, W): image i repeated c times, copy j backpropagates neuron sel[i, j]."""
    with torch.no_grad():
        sel = neurons.select(forward(x))  # (N, s)
    n_img, n_sel = sel.shape
    c_max = max(1, chunk_size or REPLICATE_BATCH // max(1, n_img))
    running = torch.zeros(n_img, *x.shape[-2:], dtype=x.dtype, device=x.device)
    for start in range(0, n_sel, c_max):
        cols = sel[:, start : start + c_max]  # (N, c)
        c = cols.shape[1]
        xr = x.repeat_interleave(c, dim=0).contiguous(memory_format=torch.channels_last)
        xr.requires_grad_(True)  # (N*c, 3, H, W)
        acts = forward(xr)  # (N*c, n)
        picked = acts[torch.arange(n_img * c, device=acts.device), cols.reshape(-1)]
        (grads,) = torch.autograd.grad(picked.sum(), xr)
        per_copy = grads.abs().amax(dim=1).view(n_img, c, *x.shape[-2:])
        running = torch.maximum(running, per_copy.amax(dim=1))
    return running


def _saliency_batch(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    neurons: NeuronSet,
    chunk_size: int | None,
    batched: bool,
) -> torch.Tensor:
    acts = forward(x)  # (N, n)
    sel = neurons.select(acts.detach())  # (N, s)
    n_img, n_sel = sel.shape
    if chunk_size is None:
        chunk_size = auto_chunk_size(n_img)
    rows = torch.arange(n_img, device=acts.device)
    running = torch.zeros(n_img, *x.shape[-2:], dtype=x.dtype, device=x.device)
    chunk_size = max(1, chunk_size)
    for start in range(0, n_sel, chunk_size):
        cols = sel[:, start : start + chunk_size]  # (N, c)
        c = cols.shape[1]
        last = start + c >= n_sel
        # Images are independent in eval mode, so one cotangent with a 1 at (i, sel[i, j])
        # for every image i gives all images' gradients of their j-th selected neuron.
        cot = torch.zeros(c, *acts.shape, dtype=acts.dtype, device=acts.device)
        cot[torch.arange(c, device=acts.device)[:, None], rows[None, :], cols.T] = 1.0
        if batched:
            (grads,) = torch.autograd.grad(
                acts, x, cot, retain_graph=not last, is_grads_batched=True
            )
            running = torch.maximum(running, grads.abs().amax(dim=2).amax(dim=0))
            continue
        for j in range(c):
            (g,) = torch.autograd.grad(acts, x, cot[j], retain_graph=not (last and j == c - 1))
            running = torch.maximum(running, g.abs().amax(dim=1))
    return running
