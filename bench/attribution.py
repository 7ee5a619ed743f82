"""Every attribution method on every layer: rotviz's fast path vs Captum looped, vs the bound.

For each method, model and layer, on the same images in one run: our time per image, Captum's
per-neuron loop time (``attribute(..., fast=False)``), and the bound: neurons x points x the
per-image cost of one forward and input-gradient pass measured inside a full batch (64 copies),
where points is 1 for saliency and guided backprop, the steps of integrated gradients and the
samples of SmoothGrad (Grad-CAM's bound is that of saliency, though it needs no pass below its
layer). The fast paths run the network with its BatchNorms folded into the convolutions
(rotviz.nets.folding), so two bounds are printed: the network as given (the pass a per-neuron
loop makes) and the folded copy (the pass our path makes; ours / bound is against this one).
Ratios: captum / ours (speed-up) and ours / bound (1.0 = at the bound). Folding moves every
pre-activation by float rounding; where one sits within rounding of a ReLU's kink its gradient
switches on or off, so a map can differ from Captum's on the unfolded network at a few pixels
(SmoothGrad's noisy copies give it most chances: about 2e-3 of the map's maximum here). Where
the difference exceeds 1e-5 the bench also compares with Captum on the folded copy, which
isolates our implementation from that rounding. The maps of
both paths are compared (max difference relative to the map's max).

    python bench/attribution.py                                   # all methods, models, layers
    python bench/attribution.py --models six_layer --methods gradcam,smoothgrad
    python bench/attribution.py --captum-neurons 64               # Captum on 64 neurons, scaled

Captum's loop on all 1,280 EfficientNet-b0 embedding neurons takes minutes per method:
``--captum-neurons N`` times it on the first N neurons of the set and scales to the full set
(printed as "scaled"); our path always runs the full set.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saliency_throughput import real_images  # noqa: E402

from rotviz.attribution.cost import pass_cost  # noqa: E402
from rotviz.attribution.methods import METHODS, attribute  # noqa: E402
from rotviz.attribution.targets import AllNeurons, Indices, layer_size  # noqa: E402
from rotviz.nets.folding import inference_net  # noqa: E402
from rotviz.nets.models import STUDY_MODELS, build_model  # noqa: E402


def timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def relative_difference(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest |ours - ref| relative to the reference map's maximum."""
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def points(method: str, args: argparse.Namespace) -> int:
    return {"integrated_gradients": args.n_steps, "smoothgrad": args.nt_samples}.get(method, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(STUDY_MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--layers", default="rotation,embedding")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--n-steps", type=int, default=32, help="integrated gradients")
    parser.add_argument("--nt-samples", type=int, default=16, help="SmoothGrad")
    parser.add_argument(
        "--captum-neurons",
        type=int,
        default=None,
        help="time Captum's loop on this many neurons and scale (default: all)",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    x = real_images(args.images, 128).to(device)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"{args.images} image(s) 3 x 128 x 128; IG {args.n_steps} steps, SmoothGrad "
        f"{args.nt_samples} samples",
        flush=True,
    )
    header = (
        f"{'model':16s} {'layer':9s} {'method':20s} {'neurons':>7s} {'ours s/img':>10s} "
        f"{'captum s/img':>12s} {'bound s/img':>11s} {'folded bnd':>10s} {'captum/ours':>11s} "
        f"{'ours/bound':>10s}"
        f" {'max diff':>9s}"
    )
    print(header)
    kw = dict(n_steps=args.n_steps, nt_samples=args.nt_samples, seed=0)
    for name in args.models.split(","):
        model = build_model(name, 4, seed=0).to(device).eval()
        for layer in args.layers.split(","):
            n = layer_size(model, layer)
            cost = pass_cost(model, layer, x, device, folded=False)
            folded_cost = pass_cost(model, layer, x, device)
            for method in args.methods.split(","):
                attribute(model, x[:1], layer, Indices([0, 1]), method, **kw)  # warm-up
                t_ours, ours = timed(
                    lambda m=method, net=model, ly=layer: attribute(
                        net, x, ly, AllNeurons(), m, **kw
                    ),
                    device,
                )
                k = n if args.captum_neurons is None else min(n, args.captum_neurons)
                subset = AllNeurons() if k == n else Indices(list(range(k)))
                t_captum, ref = timed(
                    lambda m=method, s=subset, net=model, ly=layer: attribute(
                        net, x, ly, s, m, fast=False, **kw
                    ),
                    device,
                )
                t_captum *= n / k
                mine = ours if k == n else attribute(model, x, layer, subset, method, **kw)
                diff = relative_difference(mine, ref)
                note = ""
                if diff > 1e-5:  # a ReLU input within float rounding of 0: see the docstring
                    on_folded = attribute(
                        inference_net(model), x, layer, subset, method, fast=False, **kw
                    )
                    note = f"  (vs Captum on the folded copy: {relative_difference(mine, on_folded):.1e})"
                bound = n * points(method, args) * cost
                folded_bound = n * points(method, args) * folded_cost
                per = args.images
                scaled = "" if k == n else f"  (Captum timed on {k} neurons, scaled)"
                print(
                    f"{name:16s} {layer:9s} {method:20s} {n:7d} {t_ours / per:10.3f} "
                    f"{t_captum / per:12.3f} {bound:11.3f} {folded_bound:10.3f} "
                    f"{t_captum / t_ours:11.2f} {t_ours / per / folded_bound:10.2f} "
                    f"{diff:9.1e}{scaled}{note}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
