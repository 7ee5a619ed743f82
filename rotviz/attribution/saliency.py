"""Saliency maps of a RotationNet's rotation or embedding layer, for sets of neurons.

Definitions (DESIGN.md): the map of one neuron a is |d a / d x| reduced over colour
channels by max, (H, W); the map of a neuron set is the element-wise max of its neurons'
maps; several maps of one image (its rotated copies, each map rotated back) are combined
by mean or max. Captum's ``Saliency(abs=True)`` is the reference; ``saliency_maps`` is a
faster equivalent (one forward pass, vmapped backward passes over chunks of neurons).

Neuron sets are small objects in the manner of pytorch-grad-cam's targets: ``AllNeurons()``,
``Predicted()``, ``TrueRotation(labels)``, ``Indices([..])``, ``TopK(k)``; each selects,
per image, which neurons of a layer's activations (N, n) to explain.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rotviz.config import stable_hash
from rotviz.errors import RotvizError
from rotviz.nets.models import RotationNet

LAYERS = ("rotation", "embedding")
METHODS = ("saliency", "integrated_gradients", "smoothgrad", "gradcam", "guided_backprop")
AGGREGATES = ("mean", "max", "none")
# Image-gradients computed together in one vmapped backward pass (chunk x images): bounds
# memory (activations x CHUNK_IMAGES) and stays near the CPU's sweet spot.
CHUNK_IMAGES = 32


# --------------------------------------------------------------------------- neuron sets


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


def layer_forward(model: RotationNet, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function x (N, 3, H, W) -> activations (N, n) of "rotation" or "embedding"."""
    if layer == "rotation":
        return model
    if layer == "embedding":
        return model.embed
    raise RotvizError(f"layer {layer!r}: choose rotation or embedding")


def _check(layer: str, neurons: NeuronSet, x: torch.Tensor) -> None:
    if layer not in LAYERS:
        raise RotvizError(f"layer {layer!r}: choose rotation or embedding")
    if neurons.rotation_layer_only and layer != "rotation":
        raise RotvizError(
            f"{neurons.describe()} has no meaning on the {layer} layer: "
            "use it with the rotation layer, or choose all, topk:K or indices"
        )
    if x.dim() != 4:
        raise RotvizError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")


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


def _model_device(model: nn.Module, x: torch.Tensor) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else x.device


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _image_batches(n: int, batch_size: int | None) -> Iterator[slice]:
    step = n if not batch_size or batch_size <= 0 else batch_size
    for start in range(0, n, max(step, 1)):
        yield slice(start, min(start + step, n))


# --------------------------------------------------------------------------- fast path


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
    neurons = AllNeurons() if neurons is None else neurons
    _check(layer, neurons, x)
    if isinstance(neurons, TrueRotation) and neurons.labels is None:
        neurons = neurons.for_rotation(0, model.rotations)
    device = _model_device(model, x)
    forward = layer_forward(model, layer)
    out = torch.empty(x.shape[0], *x.shape[-2:], dtype=_out_dtype(x), device=x.device)
    with explaining(model):
        for rows in _image_batches(x.shape[0], batch_size):
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


# --------------------------------------------------------------------------- other methods


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


def _captum_attribution(
    model: RotationNet,
    layer: str,
    method: str,
    n_steps: int,
    nt_samples: int,
    stdevs: float,
    internal_batch_size: int | None,
    size: tuple[int, int],
) -> Callable[[torch.Tensor, list[int]], torch.Tensor]:
    """target-per-image -> (N, C', H, W) attributions for one captum method."""
    from captum.attr import (
        GuidedBackprop,
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        NoiseTunnel,
        Saliency,
    )

    module = _LayerModule(model, layer)
    if method == "saliency":
        sal = Saliency(module)
        return lambda x, t: sal.attribute(x, target=t, abs=True)
    if method == "integrated_gradients":
        ig = IntegratedGradients(module)
        return lambda x, t: ig.attribute(
            x,
            baselines=torch.zeros_like(x),
            target=t,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
        )
    if method == "smoothgrad":
        nt = NoiseTunnel(Saliency(module))
        return lambda x, t: nt.attribute(
            x, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdevs, target=t, abs=True
        )
    if method == "gradcam":
        cam = LayerGradCam(module, model.gradcam_layer)

        def gradcam(x: torch.Tensor, t: list[int]) -> torch.Tensor:
            a = cam.attribute(x, target=t, relu_attributions=True)  # (N, 1, h, w)
            return LayerAttribution.interpolate(a, size, interpolate_mode="bilinear").relu()

        return gradcam
    if method == "guided_backprop":
        gbp = GuidedBackprop(module)
        return lambda x, t: gbp.attribute(x, target=t)
    raise RotvizError(f"method {method!r}: choose one of {', '.join(METHODS)}")


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
    if method not in METHODS:
        raise RotvizError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "saliency":
        return saliency_maps(model, x, layer, neurons, chunk_size=chunk_size, batch_size=batch_size)
    _check(layer, neurons, x)
    if isinstance(neurons, TrueRotation) and neurons.labels is None:
        neurons = neurons.for_rotation(0, model.rotations)
    device = _model_device(model, x)
    forward = layer_forward(model, layer)
    attr = _captum_attribution(
        model, layer, method, n_steps, nt_samples, stdevs, internal_batch_size, x.shape[-2:]
    )
    out = torch.empty(x.shape[0], *x.shape[-2:], dtype=_out_dtype(x), device=x.device)
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    relu_ctx = _no_inplace_relu(model) if method == "guided_backprop" else contextlib.nullcontext()
    with explaining(model), relu_ctx, rng:
        if seed is not None:
            torch.manual_seed(seed)
        for rows in _image_batches(x.shape[0], batch_size):
            xb = x[rows].detach().to(device)
            with torch.no_grad():
                sel = neurons.for_images(rows).select(forward(xb))  # (n, s)
            running = torch.zeros(xb.shape[0], *x.shape[-2:], dtype=xb.dtype, device=device)
            for j in range(sel.shape[1]):
                a = attr(xb, sel[:, j].tolist())
                running = torch.maximum(running, a.detach().abs().amax(dim=1))
            out[rows] = running.to(out.device, out.dtype)
    return out


# --------------------------------------------------------------------------- aggregation


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


def trained_and_random_maps(
    trained: RotationNet,
    random: RotationNet,
    x: torch.Tensor,
    layer: str = "rotation",
    neurons: NeuronSet | None = None,
    rotations: Sequence[int] = (0, 1, 2, 3),
    aggregate: str = "mean",
    method: str = "saliency",
    **kw: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (N, H, W) of the trained model and its random twin on the same images x (N, 3, H, W).

    Data-dependent sets (predicted, top-k) select by each model's own activations.
    """
    common = dict(rotations=rotations, aggregate=aggregate, method=method, **kw)
    maps_trained = rotation_aggregated_maps(trained, x, layer, neurons, **common)
    maps_random = rotation_aggregated_maps(random, x, layer, neurons, **common)
    return maps_trained, maps_random


# --------------------------------------------------------------------------- configuration


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
