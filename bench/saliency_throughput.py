"""Embedding-layer saliency over all neurons: rotviz's fast path vs Captum Saliency looped.

Prints, per model, images/s of both on the same images in one run, their ratio (goal >= 2x
on CPU) and the max relative difference of the maps; then the time per image of six-layer
rotation-layer saliency averaged over 4 rotations (goal well under 1 s).

    python bench/saliency_throughput.py                      # all three models, 2 images
    python bench/saliency_throughput.py --models six_layer --batch 4 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from captum.attr import Saliency
from skimage import data
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rotviz.attribution.aggregation import rotation_aggregated_maps  # noqa: E402
from rotviz.attribution.gradients import saliency_maps  # noqa: E402
from rotviz.attribution.targets import AllNeurons, Indices  # noqa: E402
from rotviz.data.rotation import normalize  # noqa: E402
from rotviz.nets.models import STUDY_MODELS, build_model  # noqa: E402

IMAGES = ("astronaut", "chelsea", "coffee", "rocket")


def real_images(n: int, size: int) -> torch.Tensor:
    """n bundled skimage photos (cycled), bilinear-resized, normalised (n, 3, size, size)."""
    out = []
    for i in range(n):
        img = torch.from_numpy(getattr(data, IMAGES[i % len(IMAGES)])()).permute(2, 0, 1)
        img = nn.functional.interpolate(
            img[None].float(), size=(size, size), mode="bilinear", antialias=True
        )
        out.append(img.round().clamp(0, 255).to(torch.uint8))
    return normalize(torch.cat(out))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def captum_loop(model: nn.Module, x: torch.Tensor, n_neurons: int) -> torch.Tensor:
    """Captum Saliency(abs=True) on model.embed, one call per neuron, max channels, max neurons."""
    sal = Saliency(model.embed)
    running = torch.zeros(x.shape[0], *x.shape[-2:], device=x.device)
    for j in range(n_neurons):
        running = torch.maximum(running, sal.attribute(x, target=j, abs=True).amax(dim=1))
    return running


def _first(n: int) -> Indices:
    return Indices(list(range(n)))


def bench_model(name: str, x: torch.Tensor, device: torch.device, args: argparse.Namespace) -> None:
    model = build_model(name, 4, seed=0).to(device).eval()
    n = (
        model.num_features
        if args.max_neurons is None
        else min(args.max_neurons, model.num_features)
    )
    neurons = AllNeurons() if n == model.num_features else _first(n)
    # Warm-up both outside the timings, on the batch shapes they will time: oneDNN builds its
    # kernels per shape (ours: passes of x's images x a chunk of neurons; Captum: one image).
    saliency_maps(
        model, x, "embedding", _first(min(n, 32)), chunk_size=args.chunk_size, path=args.path
    )
    captum_loop(model, x, 2)

    sync(device)
    t0 = time.perf_counter()
    ours = saliency_maps(model, x, "embedding", neurons, chunk_size=args.chunk_size, path=args.path)
    sync(device)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = captum_loop(model, x, n)
    sync(device)
    t_captum = time.perf_counter() - t0

    rel = float((ours - ref).abs().max() / ref.abs().max())
    n_img = x.shape[0]
    print(
        f"{name:16s} neurons={n:5d} images={n_img}  fast path[{args.path}] {n_img / t_ours:8.3f} img/s "
        f"({t_ours:7.2f} s)  captum loop {n_img / t_captum:8.3f} img/s ({t_captum:7.2f} s)  "
        f"ratio {t_captum / t_ours:5.2f}x  max rel diff {rel:.2e}",
        flush=True,
    )


def bench_rotation_mean(x: torch.Tensor, device: torch.device) -> None:
    model = build_model("six_layer", 4, seed=0).to(device).eval()
    rotation_aggregated_maps(model, x[:1], "rotation", AllNeurons(), aggregate="mean")  # warm-up
    for batch in (x[:1], x):
        sync(device)
        t0 = time.perf_counter()
        maps = rotation_aggregated_maps(model, batch, "rotation", AllNeurons(), aggregate="mean")
        sync(device)
        dt = time.perf_counter() - t0
        print(
            f"six_layer rotation layer, all 4 neurons, mean over 4 rotations: "
            f"{dt / batch.shape[0]:.4f} s/image (batch {batch.shape[0]}, {dt:.3f} s, "
            f"maps {tuple(maps.shape)})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(STUDY_MODELS), help="comma-separated names")
    parser.add_argument("--batch", type=int, default=2, help="images (both paths get the same)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=None, help="neurons per vmapped pass")
    parser.add_argument("--max-neurons", type=int, default=None, help="fewer neurons (quick run)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--path",
        default="replicate",
        choices=["replicate", "vmap", "loop"],
        help="fast-path variant",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"images {args.batch} x 3 x {args.size} x {args.size}",
        flush=True,
    )
    x = real_images(args.batch, args.size).to(device)
    for name in args.models.split(","):
        bench_model(name.strip(), x, device, args)
    bench_rotation_mean(x, device)


if __name__ == "__main__":
    main()
