"""Attribution methods behind one registry: a new method is one entry.

Every method answers the same question: maps (N, H, W) of a neuron set, |attribution|
reduced over channels by max and the element-wise max over the set's neurons. "saliency" has
a fast path (``rotviz.attribution.gradients``); the others are Captum's methods looped over
the selected neurons: "integrated_gradients" (Sundararajan et al. 2017; zero baseline,
``n_steps``), "smoothgrad" (Smilkov et al. 2017; NoiseTunnel over Saliency, ``nt_samples``,
``stdevs``, noise drawn from ``seed``), "gradcam" (Selvaraju et al. 2017; LayerGradCam on
``model.gradcam_layer``, bilinear to H x W, relu) and "guided_backprop" (Springenberg et al.
2015; changes only nn.ReLU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from rotviz.attribution.gradients import (
    explaining,
    image_batches,
    model_device,
    out_dtype,
    saliency_maps,
)
from rotviz.attribution.targets import (
    AllNeurons,
    NeuronSet,
    TrueRotation,
    check_request,
    layer_forward,
)
from rotviz.errors import RotvizError
from rotviz.nets.models import RotationNet

Attribution = Callable[
    [torch.Tensor, list[int]], torch.Tensor
]  # (x, target per image) -> (N, C, H, W)


@dataclass(frozen=True)
class MethodOptions:
    """The knobs of the Captum methods (each method reads the ones it needs)."""

    n_steps: int = 32
    nt_samples: int = 16
    stdevs: float = 0.15
    internal_batch_size: int | None = None


@dataclass(frozen=True)
class Method:
    """One attribution method: its Captum adapter and whether Captum needs non-inplace ReLUs."""

    name: str
    build: Callable[[nn.Module, RotationNet, MethodOptions, tuple[int, int]], Attribution]
    hooks_relu: bool = False


METHODS: dict[str, Method] = {}


def register(name: str, hooks_relu: bool = False) -> Callable:
    """Decorator: add an adapter ``build(module, model, options, size) -> attribution`` as a method."""

    def add(build: Callable) -> Callable:
        METHODS[name] = Method(name, build, hooks_relu)
        return build

    return add


@register("saliency")
def _saliency(module: nn.Module, model: RotationNet, o: MethodOptions, size: tuple[int, int]):
    from captum.attr import Saliency

    sal = Saliency(module)
    return lambda x, t: sal.attribute(x, target=t, abs=True)


@register("integrated_gradients")
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


@register("smoothgrad")
def _smoothgrad(module, model, o: MethodOptions, size):
    from captum.attr import NoiseTunnel, Saliency

    nt = NoiseTunnel(Saliency(module))
    return lambda x, t: nt.attribute(
        x, nt_type="smoothgrad", nt_samples=o.nt_samples, stdevs=o.stdevs, target=t, abs=True
    )


@register("gradcam")
def _gradcam(module, model: RotationNet, o: MethodOptions, size: tuple[int, int]):
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(module, model.gradcam_layer)

    def gradcam(x: torch.Tensor, t: list[int]) -> torch.Tensor:
        a = cam.attribute(x, target=t, relu_attributions=True)  # (N, 1, h, w)
        return LayerAttribution.interpolate(a, size, interpolate_mode="bilinear").relu()

    return gradcam


@register("guided_backprop", hooks_relu=True)
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
) -> torch.Tensor:
    """Maps of a neuron set by one method, x (N, 3, H, W) -> (N, H, W), non-negative.

    Every method: |attribution| reduced over channels by max, element-wise max over the set's
    neurons. "saliency" is the fast path (``saliency_maps``); "integrated_gradients" (zero
    baseline, ``n_steps``), "smoothgrad" (NoiseTunnel over Saliency, ``nt_samples``, ``stdevs``,
    noise drawn from ``seed``), "gradcam" (LayerGradCam on ``model.gradcam_layer``, bilinear to
    H x W, relu) and "guided_backprop" are Captum's, looped over the selected neurons.
    """
    neurons = AllNeurons() if neurons is None else neurons
    chosen = method_named(method)
    if method == "saliency":
        return saliency_maps(model, x, layer, neurons, chunk_size=chunk_size, batch_size=batch_size)
    check_request(layer, neurons, x)
    if isinstance(neurons, TrueRotation) and neurons.labels is None:
        neurons = neurons.for_rotation(0, model.rotations)
    device = model_device(model, x)
    forward = layer_forward(model, layer)
    options = MethodOptions(n_steps, nt_samples, stdevs, internal_batch_size)
    attr = chosen.build(_LayerModule(model, layer), model, options, tuple(x.shape[-2:]))
    out = torch.empty(x.shape[0], *x.shape[-2:], dtype=out_dtype(x), device=x.device)
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    relu_ctx = _no_inplace_relu(model) if chosen.hooks_relu else contextlib.nullcontext()
    with explaining(model), relu_ctx, rng:
        if seed is not None:
            torch.manual_seed(seed)
        for rows in image_batches(x.shape[0], batch_size):
            xb = x[rows].detach().to(device)
            with torch.no_grad():
                sel = neurons.for_images(rows).select(forward(xb))  # (n, s)
            running = torch.zeros(xb.shape[0], *x.shape[-2:], dtype=xb.dtype, device=device)
            for j in range(sel.shape[1]):
                a = attr(xb, sel[:, j].tolist())
                running = torch.maximum(running, a.detach().abs().amax(dim=1))
            out[rows] = running.to(out.device, out.dtype)
    return out
