"""Grad-CAM (Selvaraju et al., ICCV 2017) for a whole neuron set: one forward pass per batch.

Grad-CAM of neuron t on the target layer's activations A (C, h, w) is
relu(sum_c alpha_tc A_c) with alpha_tc the spatial mean of d a_t / d A_c; rotviz then
upsamples it bilinearly to the image (H, W), applies relu again and takes the element-wise max
over the set's neurons (equal to Captum's ``LayerGradCam`` looped over neurons).

Two paths, both without a gradient below the target layer:

- closed form: when the target layer's output is the feature map that the embedding pools
  (true of every RotationNet in the registry), an embedding neuron is a pooled channel,
  d e_t / d A_c = [t == c] / (h w), so its map is relu(A_t) / (h w); a rotation logit is
  linear in the embedding, alpha_tc = W_tc / (h w) with W the head's weight: no backward
  pass at all.
- gradients: otherwise one forward pass with the target layer's output made a leaf, then
  backward passes batched over neurons (``is_grads_batched``) down to that leaf only.
"""

from __future__ import annotations

import torch
from torch import nn

from rotviz.attribution.gradients import MethodOptions, neuron_set_maps, one_hot_cotangents
from rotviz.attribution.targets import (
    NeuronSet,
)
from rotviz.nets.folding import inference_net
from rotviz.nets.models import RotationNet

NEURON_CHUNK = 64  # neurons upsampled at once: bounds memory at images x chunk x H x W


def gradcam_maps(
    model: RotationNet,
    x: torch.Tensor,
    layer: str = "rotation",
    neurons: NeuronSet | None = None,
    options: MethodOptions | None = None,
    closed_form: bool = True,
) -> torch.Tensor:
    """Grad-CAM maps of a neuron set, x (N, 3, H, W) -> (N, H, W), non-negative.

    options.chunk_size: neurons upsampled at once (default NEURON_CHUNK). closed_form=False forces
    the gradient path (the tests compare both with Captum). The set is selected by a forward
    pass of its own; the target layer's activations by a second, shared by all neurons.
    """
    model = inference_net(model)
    size = tuple(x.shape[-2:])

    def chunk(xb: torch.Tensor, cols: torch.Tensor, prepared: tuple) -> torch.Tensor:
        acts, outputs, pooled = prepared
        if closed_form and pooled:
            cams = _pooled_cams(model, layer, acts.detach(), cols)
        else:
            cams = _gradient_cams(acts, outputs, cols)
        up = nn.functional.interpolate(cams.relu(), size=size, mode="bilinear")
        return up.relu()  # (n, c, H, W)

    def prepare(xb: torch.Tensor, rows: slice) -> tuple:
        return _layer_and_outputs(model, layer, xb)

    o = options or MethodOptions()
    return neuron_set_maps(
        model, x, layer, neurons, chunk, o.chunk_size or NEURON_CHUNK, o.batch_size, prepare
    )


def _layer_and_outputs(
    model: RotationNet, layer: str, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Target-layer activations A (n, C, h, w) as a leaf, the layer's outputs (n, k) built on it,
    and whether A is the feature map the embedding pools."""
    seen: list[torch.Tensor] = []

    def make_leaf(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        seen.append(leaf)
        return leaf

    handle = model.gradcam_layer.register_forward_hook(make_leaf)
    try:
        features = model.features(x)
    finally:
        handle.remove()
    (acts,) = seen
    embedding = model.pool(features)
    outputs = embedding if layer == "embedding" else model.head(embedding)
    return acts, outputs, features is acts


def _pooled_cams(
    model: RotationNet, layer: str, acts: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """Closed-form CAMs (n, c, h, w) before relu, for neurons cols (n, c), A the pooled map."""
    n = acts.shape[0]
    area = acts.shape[-2] * acts.shape[-1]
    if layer == "embedding":
        return acts[torch.arange(n, device=acts.device)[:, None], cols] / area
    weights = model.head.weight.to(acts.dtype)[cols] / area  # (n, c, C)
    return torch.einsum("ncC,nChw->nchw", weights, acts)


def _gradient_cams(acts: torch.Tensor, outputs: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """CAMs (n, c, h, w) before relu from gradients of outputs[i, cols[i, j]] down to acts only."""
    cot = one_hot_cotangents(outputs, cols)
    (grads,) = torch.autograd.grad(
        outputs, acts, cot, retain_graph=True, is_grads_batched=True
    )  # (c, n, C, h, w)
    alpha = grads.mean(dim=(-2, -1))  # (c, n, C)
    return torch.einsum("cnC,nChw->nchw", alpha, acts.detach())
