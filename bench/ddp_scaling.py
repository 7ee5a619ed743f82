"""Data-parallel scaling on CPU: the six-layer net trained by 1 vs N gloo processes under torchrun.

Each run is the real training loop (rotviz.training.loop.train under DDP when N > 1) on the same
global batch, launched as users launch it (``python -m torch.distributed.run``), one
thread per process (torchrun's OMP_NUM_THREADS=1 default, kept for the 1-process run too,
so N processes use N cores). Prints images/s (global, counted once per image, each image
bringing its 4 rotations) and the scaling efficiency ips(N) / (N * ips(1)).

    python bench/ddp_scaling.py [--procs 1,2] [--images 128] [--batch 32] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def real_images(n: int) -> np.ndarray:
    """n crops of skimage photographs, uint8 (n, 3, 128, 128), deterministic."""
    from skimage import data
    from skimage.transform import resize

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    out = []
    for i in range(n):
        img = photos[i % 4]
        h, w = img.shape[:2]
        y, x = (i * 7) % (h // 3), (i * 11) % (w // 3)
        crop = img[y : y + 2 * h // 3, x : x + 2 * w // 3]
        small = resize(crop, (128, 128), anti_aliasing=True, preserve_range=True)
        out.append(small.astype(np.uint8).transpose(2, 0, 1))
    return np.stack(out)


def worker(args: argparse.Namespace) -> None:
    """One rank: warm-up epoch, then timed epochs; rank 0 prints a JSON line."""
    import torch

    from rotviz import distributed
    from rotviz.config import TrainConfig
    from rotviz.nets.models import build_model
    from rotviz.training.loop import train

    with distributed.session("cpu"):
        images = real_images(args.images)
        model = build_model("six_layer", 4, 0)
        device = torch.device("cpu")
        train(model, images, TrainConfig(epochs=1, batch_size=args.batch), device)  # warm-up
        distributed.barrier()
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch)
        start = time.perf_counter()
        train(model, images, cfg, device)
        distributed.barrier()
        seconds = time.perf_counter() - start
        if distributed.is_main():
            ips = args.images * args.epochs / seconds
            print(json.dumps({"world": distributed.world_size(), "ips": ips, "s": seconds}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(free_port()), __file__, "--worker"]
    cmd += ["--images", str(args.images), "--batch", str(args.batch), "--epochs", str(args.epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if res.returncode != 0:
        sys.exit(f"{nproc} processes failed:\n{res.stderr[-2000:]}")
    return json.loads([line for line in res.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", default="1,2")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch", type=int, default=32, help="global batch (images)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    procs = [int(n) for n in args.procs.split(",")]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; six_layer, {args.images} images x 4 rotations, "
        f"global batch {args.batch}, {args.epochs} timed epochs, gloo, 1 thread per process"
    )
    per_process = None  # images/s of one process in the first configuration
    for n in procs:
        r = launch(n, args)
        per_process = per_process or r["ips"] / n
        eff = r["ips"] / (n * per_process)
        print(f"{n} process(es): {r['ips']:7.1f} images/s  ({r['s']:.1f} s)  efficiency {eff:.0%}")


if __name__ == "__main__":
    main()
