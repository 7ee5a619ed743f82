"""Attribution methods behind one registry: a new method is one entry.

Every method answers the same question: maps (N, H, W) of a neuron set, |attribution|
reduced over channels by max and the element-wise max over the set's neurons. Each entry has
Captum's method as a per-neuron adapter (the reference, and the path of a method without a
fast one) and a fast path over the whole set at the method's cost bound:
"saliency" (``gradients``), "integrated_gradients" (Sundararajan et al. 2017; zero baseline,
``n_steps`` Gauss-Legendre points) and "smoothgrad" (Smilkov et al. 2017; ``nt_samples``
noisy copies of std ``stdevs`` drawn from ``seed``) in ``sampled``, "gradcam" (Selvaraju et
al. 2017; on ``model.gradcam_layer``, bilinear to H x W, relu) in ``gradcam``, and
"guided_backprop" (Springenberg et al. 2015; changes only nn.ReLU) as one Captum call over a
batch of image copies, one copy per neuron.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from rotviz.attribution.gradcam import gradcam_maps
from rotviz.attribution.gradients import MethodOptions, neuron_set_maps, saliency_maps
from rotviz.attribution.sampled import integrated_gradients_maps, smoothgrad_maps
from rotviz.attribution.targets import (
    NeuronSet,
    layer_forward,
)
from rotviz.errors import RotvizError
from rotviz.nets.folding import inference_net
from rotviz.nets.models import RotationNet

Attribution = Callable[
    [torch.Tensor, list[int]], torch.Tensor
]  # (x, target per image) -> (N, C, H, W)


FastPath = Callable[[RotationNet, torch.Tensor, str, NeuronSet, MethodOptions], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """One attribution method: its Captum adapter (per neuron), an optional fast path for a
    whole neuron set ``fast(model, x, layer, neurons, options)``, and whether Captum needs
    non-inplace ReLUs."""

    name: str
    build: Callable[[nn.Module, RotationNet, MethodOptions, tuple[int, int]], Attribution]
    hooks_relu: bool = False
    fast: FastPath | None = None
    noise_per_batch: bool = False  # reseed for each neuron: one draw shared by the whole set


METHODS: dict[str, Method] = {}


def register(
    name: str, hooks_relu: bool = False, fast: FastPath | None = None, noise_per_batch: bool = False
) -> Callable:
    """Decorator: add an adapter ``build(module, model, options, size) -> attribution`` as a method."""

    def add(build: Callable) -> Callable:
        METHODS[name] = Method(name, build, hooks_relu, fast, noise_per_batch)
        return build

    return add


@register(
    "saliency",
    fast=lambda m, x, layer, ns, o: saliency_maps(m, x, layer, ns, o.chunk_size, o.batch_size),
)
def _saliency(module: nn.Module, model: RotationNet, o: MethodOptions, size: tuple[int, int]):
    from captum.attr import Saliency

    sal = Saliency(module)
    return lambda x, t: sal.attribute(x, target=t, abs=True)


@register("integrated_gradients", fast=integrated_gradients_maps)
def _integrated_gradients(module, model, o: MethodOptions, size):
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(module)
    return lambda x, t: ig.attribute(
        x,
        baselines=torch.zeros_like(x),
        target=t,
        n_steps=o.n_steps,
        internal_batch_size=o.internal_batch_size,
    )


@register("smoothgrad", noise_per_batch=True, fast=smoothgrad_maps)
def _smoothgrad(module, model, o: MethodOptions, size):
    from captum.attr import NoiseTunnel, Saliency

    nt = NoiseTunnel(Saliency(module))
    return lambda x, t: nt.attribute(
        x, nt_type="smoothgrad", nt_samples=o.nt_samples, stdevs=o.stdevs, target=t, abs=True
    )


@register("gradcam", fast=gradcam_maps)
def _gradcam(module, model: RotationNet, o: MethodOptions, size: tuple[int, int]):
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(module, model.gradcam_layer)

    def gradcam(x: torch.Tensor, t: list[int]) -> torch.Tensor:
        a = cam.attribute(x, target=t, relu_attributions=True)  # (N, 1, h, w)
        return LayerAttribution.interpolate(a, size, interpolate_mode="bilinear").relu()

    return gradcam


@register("guided_backprop", hooks_relu=True, fast=lambda *a: guided_backprop_maps(*a))
def _guided_backprop(module, model, o: MethodOptions, size):
    from captum.attr import GuidedBackprop

    gbp = GuidedBackprop(module)
    return lambda x, t: gbp.attribute(x, target=t)


def method_named(name: str) -> Method:
    """The registered method called name, or a RotvizError listing the choices."""
    if name not in METHODS:
        raise RotvizError(f"method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


class _LayerModule(nn.Module):
    """A module whose forward is one layer of a RotationNet (Captum wants modules for some methods)."""

    def __init__(self, model: RotationNet, layer: str):
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_forward(self.model, self.layer)(x)


@contextlib.contextmanager
def _no_inplace_relu(model: nn.Module) -> Iterator[None]:
    # Captum's guided backprop hooks ReLU modules; in-place ReLUs break full backward hooks.
    changed = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    try:
        for m in changed:
            m.inplace = False
        yield
    finally:
        for m in changed:
            m.inplace = True


def method_warning(model: nn.Module, method: str) -> str | None:
    """A warning to show next to maps of this method on this model, or None."""
    if method != "guided_backprop":
        return None
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    others = sorted(
        {
            type(m).__name__
            for m in model.modules()
            if isinstance(m, (nn.SiLU, nn.ReLU6, nn.Hardswish, nn.GELU, nn.Mish, nn.Hardtanh))
            and not isinstance(m, nn.ReLU)
        }
    )
    name = getattr(model, "name", type(model).__name__)
    if not relus:
        acts = ", ".join(others) or "no nn.ReLU"
        return (
            f"guided backprop changes only nn.ReLU, and {name} has none (it uses {acts}): "
            "its maps equal plain gradients (the saliency method)"
        )
    if others:
        return (
            f"guided backprop changes only nn.ReLU: the {', '.join(others)} activations of "
            f"{name} pass plain gradients"
        )
    return None


def attribute(
    model: RotationNet,
    x: torch.Tensor,
    layer: str = "rotation",
    neurons: NeuronSet | None = None,
    method: str = "saliency",
    *,
    batch_size: int | None = 16,
    chunk_size: int | None = None,
    n_steps: int = 32,
    nt_samples: int = 16,
    stdevs: float = 0.15,
    seed: int | None = 0,
    internal_batch_size: int | None = None,
    fast: bool = True,
) -> torch.Tensor:
    """Maps of a neuron set by one method, x (N, 3, H, W) -> (N, H, W), non-negative.

    The method's fast path over the whole set; fast=False loops Captum over the neurons
    (the reference the fast paths are tested against; SmoothGrad's noise is the same on both:
    drawn from ``seed + index of the batch's first image``, shared by the set's neurons).
    """
    chosen = method_named(method)
    options = MethodOptions(
        n_steps, nt_samples, stdevs, internal_batch_size, seed or 0, chunk_size, batch_size
    )
    if fast and chosen.fast is not None:
        return chosen.fast(model, x, layer, neurons, options)
    attr = chosen.build(_LayerModule(model, layer), model, options, tuple(x.shape[-2:]))

    def one_neuron(xb: torch.Tensor, cols: torch.Tensor, first: int) -> torch.Tensor:
        if seed is not None and chosen.noise_per_batch:
            torch.manual_seed(seed + first)
        return attr(xb, cols[:, 0].tolist()).detach().abs().amax(dim=1, keepdim=True)

    device = next(model.parameters(), x).device
    relu_ctx = _no_inplace_relu(model) if chosen.hooks_relu else contextlib.nullcontext()
    with relu_ctx, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        return neuron_set_maps(
            model, x, layer, neurons, one_neuron, 1, batch_size, lambda _, rows: rows.start
        )


def guided_backprop_maps(
    model: RotationNet,
    x: torch.Tensor,
    layer: str = "rotation",
    neurons: NeuronSet | None = None,
    options: MethodOptions | None = None,
) -> torch.Tensor:
    """Guided backprop of a neuron set, x (N, 3, H, W) -> (N, H, W): Captum's GuidedBackprop
    called once per chunk on image copies, copy j of image i targeting neuron j of its set."""
    from captum.attr import GuidedBackprop

    model = inference_net(model)
    gbp = GuidedBackprop(_LayerModule(model, layer))

    def chunk(xb: torch.Tensor, cols: torch.Tensor, _: object) -> torch.Tensor:
        copies = xb.repeat_interleave(cols.shape[1], dim=0)
        a = gbp.attribute(copies, target=cols.reshape(-1).tolist()).detach()
        return a.abs().amax(dim=1).view(*cols.shape, *xb.shape[-2:])

    o = options or MethodOptions()
    with _no_inplace_relu(model):
        return neuron_set_maps(model, x, layer, neurons, chunk, o.chunk_size, o.batch_size)
