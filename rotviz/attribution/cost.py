"""What a map set will cost before it is computed: the bound, measured once on this machine.

The bound of a map set is neurons x points x images x networks x the per-image cost of one
forward and input-gradient pass measured inside a full batch (``FULL_BATCH`` copies), where
points is 1 for saliency and guided backprop, ``n_steps`` for integrated gradients and
``nt_samples`` for SmoothGrad, and images counts every rotated copy explained. Grad-CAM takes
its closed form on every registered network (an embedding neuron is a pooled channel of the
target layer, a rotation logit is linear in them): about one pass per image whatever the
neuron set. The per-pass cost is measured once per (architecture, layer, image size, device,
torch threads, torch version) and kept in ``<store>/machine/pass_cost.json``; an unreadable
file is ignored and measured again, and every write is atomic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rotviz.attribution.gradients import channels_last, explaining
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.attribution.targets import AllNeurons, Indices, TopK, layer_forward, layer_size
from rotviz.nets.folding import inference_net
from rotviz.nets.models import RotationNet
from rotviz.nets.store import atomic_write_bytes, user_store_root

FULL_BATCH = 64  # copies of an image in the batch the per-pass cost is measured in
CONFIRM_ABOVE_S = 5.0  # map sets estimated above this wait for a click (app) or say so (CLI)
STEP_S = 1.0  # about this long per step of a computation that shows progress and can stop
POINT_NAMES = {"integrated_gradients": "steps", "smoothgrad": "samples"}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pass_cost(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    device: torch.device,
    batch: int = FULL_BATCH,
    repeats: int = 3,
    folded: bool = True,
) -> float:
    """Seconds per image of one forward + input-gradient pass inside a batch of ``batch`` copies
    of x[:1] (3, H, W); the fastest of ``repeats`` timings after one warm-up. folded: on the
    copy with BatchNorm folded into the convolutions, what the fast paths run (False: the
    network as given)."""
    if folded:
        model = inference_net(model)
    forward = layer_forward(model, layer)
    copies = x[:1].to(device).repeat(batch, 1, 1, 1)

    def one() -> float:
        _synchronize(device)
        t0 = time.perf_counter()
        with explaining(model), channels_last(model):
            xb = copies.contiguous(memory_format=torch.channels_last).requires_grad_(True)
            out = forward(xb)
            torch.autograd.grad(out[:, 0].sum(), xb)
        _synchronize(device)
        return time.perf_counter() - t0

    one()  # warm-up
    return min(one() for _ in range(max(repeats, 1))) / batch


def pass_cost_file() -> Path:
    """Where measured per-pass costs are kept: ``<store>/machine/pass_cost.json``."""
    return user_store_root() / "machine" / "pass_cost.json"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def pass_cost_key(model: RotationNet, layer: str, image_size: int, device: torch.device) -> str:
    """What a per-pass cost depends on: architecture, layer, image size, device, threads, torch."""
    return (
        f"{model.name}|{layer}|{image_size}|{_device_name(device)}|folded|"
        f"threads={torch.get_num_threads()}|torch={torch.__version__}"
    )


def _read_costs(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: measured again
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and v > 0}


def measured_pass_cost(
    model: RotationNet,
    layer: str,
    image_size: int,
    device: torch.device | None = None,
    path: Path | None = None,
) -> float:
    """The per-image cost (s) of one forward + input-gradient pass of this architecture and layer
    on this machine: read from ``path`` (default ``pass_cost_file()``), else measured now (a
    batch of ``FULL_BATCH``, one warm-up, the faster of two timings) and kept there."""
    device = device or next(model.parameters()).device
    path = path or pass_cost_file()
    key = pass_cost_key(model, layer, image_size, device)
    costs = _read_costs(path)
    if key in costs:
        return costs[key]
    x = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    seconds = pass_cost(model, layer, x, device, repeats=2)
    costs = {**_read_costs(path), key: seconds}  # another process may have added entries
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(costs, indent=1, sort_keys=True).encode())
    except OSError:
        pass  # a read-only store: measured again next time
    return seconds


def format_duration(seconds: float) -> str:
    """A rough human duration: "under 1 s", "40 s", "19 min", "2 h 5 min"."""
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclass(frozen=True)
class Estimate:
    """The bound of a map set: neurons x points x images x networks x per_pass seconds
    (Grad-CAM's closed form: images x networks x per_pass)."""

    seconds: float
    method: str
    neurons: int
    points: int
    images: int  # images x rotated copies explained
    networks: int
    per_pass: float
    closed_form: bool = False

    @property
    def needs_confirmation(self) -> bool:
        """Whether this is long enough (over CONFIRM_ABOVE_S) to ask before computing."""
        return self.seconds > CONFIRM_ABOVE_S

    @property
    def duration(self) -> str:
        """The rough duration alone, e.g. "19 min"."""
        return format_duration(self.seconds)

    @property
    def text(self) -> str:
        """E.g. "about 19 min (1,280 neurons x 32 steps x 2 networks)"."""
        if self.closed_form:
            parts = ["Grad-CAM in closed form: one forward pass"]
        else:
            parts = [f"{self.neurons:,} neuron" + ("s" if self.neurons != 1 else "")]
            if self.points > 1:
                parts.append(f"{self.points} {POINT_NAMES.get(self.method, 'points')}")
        if self.images > 1:
            parts.append(f"{self.images:,} images")
        if self.networks > 1:
            parts.append(f"{self.networks} networks")
        about = "under 1 s" if self.seconds < 1 else f"about {self.duration}"
        return f"{about} ({' x '.join(parts)})"


def neuron_count(model: RotationNet, sal: SaliencyConfig) -> int:
    """How many neurons one image's map explains: the layer's size for "all", the list's length,
    k for top-k, 1 for the predicted or true rotation."""
    ns = sal.neuron_set()
    n = layer_size(model, sal.layer)
    if isinstance(ns, AllNeurons):
        return n
    if isinstance(ns, Indices):
        return len(ns.indices)
    if isinstance(ns, TopK):
        return min(ns.k, n)
    return 1


def method_points(sal: SaliencyConfig) -> int:
    """Gradient points per neuron: n_steps (integrated gradients), nt_samples (SmoothGrad), else 1."""
    return {"integrated_gradients": sal.n_steps, "smoothgrad": sal.nt_samples}.get(sal.method, 1)


def rotated_copies(sal: SaliencyConfig) -> int:
    """Copies of each image explained: 1 for aggregate "none", else one per rotation."""
    return 1 if sal.aggregate == "none" else len(sal.rotations)


def estimate_seconds(
    model: RotationNet,
    sal: SaliencyConfig,
    n_images: int = 1,
    networks: int = 2,
    image_size: int = 128,
    per_pass: Callable[[RotationNet, str, int], float] | None = None,
) -> Estimate:
    """The estimate of maps of ``n_images`` images by ``networks`` networks (2: trained and twin)
    of model's architecture under sal; per_pass(model, layer, image_size) defaults to
    ``measured_pass_cost`` (measured once on this machine, then read)."""
    cost = (per_pass or measured_pass_cost)(model, sal.layer, image_size)
    images = n_images * rotated_copies(sal)
    if sal.method == "gradcam":
        return Estimate(cost * images * networks, sal.method, 0, 1, images, networks, cost, True)
    neurons, points = neuron_count(model, sal), method_points(sal)
    seconds = neurons * points * images * networks * cost
    return Estimate(seconds, sal.method, neurons, points, images, networks, cost)


def cheaper_choices(model: RotationNet, sal: SaliencyConfig) -> list[str]:
    """Cheaper settings to suggest beside a long estimate, in words."""
    out = []
    if sal.layer != "rotation":
        out.append(f"the rotation layer ({model.num_rotations} neurons)")
    if neuron_count(model, sal) > 8:
        out.append("top-k neurons (e.g. top-5) instead of all")
    if sal.method == "integrated_gradients":
        out.append(f"fewer integrated-gradients steps (now {sal.n_steps})")
    if sal.method == "smoothgrad":
        out.append(f"fewer SmoothGrad samples (now {sal.nt_samples})")
    if sal.method in POINT_NAMES:
        out.append("plain saliency (one pass per neuron) or Grad-CAM (closed form)")
    if rotated_copies(sal) > 1:
        out.append("aggregation none (the upright image only)")
    return out


def neurons_per_step(estimate: Estimate, n_images: int = 1, seconds: float = STEP_S) -> int | None:
    """Neurons per step so that one step (one network, one rotated copy of n_images images)
    takes about ``seconds``; None for Grad-CAM's closed form (one step whatever the set)."""
    if estimate.closed_form:
        return None
    per_neuron = estimate.points * max(n_images, 1) * estimate.per_pass
    return max(1, int(seconds / per_neuron)) if per_neuron > 0 else None
