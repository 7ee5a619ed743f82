"""Training throughput: our loop vs pure compute, bf16 vs float32 steps, and end to end vs a
typical RotNet DataLoader.

Prints, for each model, images/s of the real training loop (cached uint8 data, rotation,
normalisation, forward, backward, step) over images/s of forward+backward+step alone on
tensors already in memory (same batch); the bf16-autocast step over the float32 step,
interleaved (what --amp auto's choice per architecture rests on); and, on --runs consecutive
runs, the six-layer net's end-to-end epoch with --amp auto vs a torch DataLoader that opens,
resizes and PIL-rotates every sample into a float32 step, beside our float32 epoch (the
same-precision ratio).

    python bench/train_throughput.py [--sections loop,precision,end-to-end] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rotviz.config import DataConfig, TrainConfig  # noqa: E402
from rotviz.data.datasets import load_dataset  # noqa: E402
from rotviz.data.preprocess import prepare_split  # noqa: E402
from rotviz.data.rotation import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from rotviz.nets.models import build_model  # noqa: E402
from rotviz.runtime import RunConfig, as_runtime  # noqa: E402
from rotviz.training.loop import make_optimizer, train  # noqa: E402

SHARED_LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


def image_folder(n: int) -> Path:
    """Real JPEGs: the LFW excerpt when present, else skimage photos cropped and saved."""
    if SHARED_LFW.exists():
        return SHARED_LFW
    from skimage import data

    root = Path(tempfile.mkdtemp()) / "imgs"
    root.mkdir()
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    for i in range(n):
        img = photos[i % 4]
        h, w = img.shape[:2]
        y, x = (i * 7) % (h // 3), (i * 11) % (w // 3)
        Image.fromarray(img[y : y + 2 * h // 3, x : x + 2 * w // 3]).save(
            root / f"{i:04d}.jpg", quality=90
        )
    return root


def precision_steps(model_name: str, batch: int, steps: int, rotations: int = 4) -> tuple:
    """Seconds of one training step in float32 and under bf16 autocast, interleaved (medians)."""
    x = torch.randn(batch * rotations, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    y = torch.arange(rotations).repeat(batch)
    loss_fn = torch.nn.CrossEntropyLoss()
    nets = {}
    for bf16 in (False, True):
        model = build_model(model_name, rotations, 0).train().to(memory_format=torch.channels_last)
        nets[bf16] = model, make_optimizer(model, TrainConfig())

    def step(bf16: bool) -> float:
        model, opt = nets[bf16]
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for bf16 in (False, True, False, True):  # warm-up: oneDNN picks its kernels
        step(bf16)
    times = {False: [], True: []}
    for _ in range(steps):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    return float(np.median(times[False])), float(np.median(times[True]))


def pure_compute(model_name: str, batch: int, steps: int, rotations: int = 4) -> float:
    """Images/s of forward+backward+step on one tensor already in memory."""
    # the same compute the loop runs: channels-last model and batch
    model = build_model(model_name, rotations, 0).train().to(memory_format=torch.channels_last)
    opt = make_optimizer(model, TrainConfig())
    x = torch.randn(batch * rotations, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    y = torch.arange(rotations).repeat(batch)
    loss_fn = torch.nn.CrossEntropyLoss()
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def our_loop(model_name: str, images: np.ndarray, batch: int, steps: int) -> float:
    """Images/s of rotviz.training.loop.train over steps batches of cached uint8 images
    (float32, as pure_compute)."""
    subset = images[: batch * (steps + 1)]
    times = []
    model = build_model(model_name, 4, 0)
    cfg = TrainConfig(model=model_name, epochs=1, batch_size=batch)
    train(
        model,
        subset,
        cfg,
        RunConfig(device="cpu", amp="off"),
        on_step=lambda p: times.append(time.perf_counter()),
    )
    return batch * (len(times) - 1) / (times[-1] - times[0])


class TypicalRotNetData(torch.utils.data.Dataset):
    """The usual per-sample path: open, resize, PIL-rotate 4 times, to tensor, normalise."""

    def __init__(self, paths):
        self.paths = paths
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = Image.open(self.paths[i]).convert("RGB").resize((128, 128), Image.BILINEAR)
        out = []
        for k in range(4):
            r = img.rotate(90 * k)
            t = torch.from_numpy(np.asarray(r, dtype=np.float32) / 255.0).permute(2, 0, 1)
            out.append((t - self.mean) / self.std)
        return torch.stack(out), torch.arange(4)


def typical_epoch_seconds(
    paths: list[str], batch: int, workers: int, channels_last: bool = False
) -> float:
    """Seconds for one typical RotNet epoch (DataLoader + a six-layer step; channels_last: ours)."""
    loader = torch.utils.data.DataLoader(
        TypicalRotNetData(paths), batch_size=batch, shuffle=True, num_workers=workers
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model("six_layer", 4, 0).train().to(memory_format=fmt)
    opt = make_optimizer(model, TrainConfig())
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for x, y in loader:
        loss = loss_fn(model(x.flatten(0, 1).contiguous(memory_format=fmt)), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def our_seconds(root: Path, count: int, batch: int, amps: tuple[str, ...]) -> tuple[float, dict]:
    """Seconds to build our cache from the files, and for one training epoch on it per --amp."""
    ds = load_dataset(DataConfig("folder", root=str(root), test_fraction=0.0))
    ds = type(ds)(ds.name, ds.root, ds.records[:count], ds.category_names)
    t0 = time.perf_counter()
    split = prepare_split(ds, "train", cache_dir=Path(tempfile.mkdtemp()))
    cache = time.perf_counter() - t0
    epochs = {}
    for amp in amps:
        t1 = time.perf_counter()
        train(
            build_model("six_layer", 4, 0),
            split.images,
            TrainConfig(epochs=1, batch_size=batch),
            RunConfig(device="cpu", amp=amp),
        )
        epochs[amp] = time.perf_counter() - t1
    return cache, epochs


def loop_section(args: argparse.Namespace, root: Path) -> None:
    ds = load_dataset(DataConfig("folder", root=str(root), test_fraction=0.0))
    ds = type(ds)(ds.name, ds.root, ds.records[: args.batch * (args.steps + 1)], ds.category_names)
    images = prepare_split(ds, "train", cache_dir=Path(tempfile.mkdtemp())).images
    print(
        f"\n{'model':16s} {'loop img/s':>11s} {'compute img/s':>14s} {'ratio':>6s}  (goal >= 0.9)"
    )
    for name in args.models.split(","):
        compute = pure_compute(name, args.batch, args.steps)
        loop = our_loop(name, images, args.batch, args.steps)
        print(f"{name:16s} {loop:11.1f} {compute:14.1f} {loop / compute:6.2f}")


def precision_section(args: argparse.Namespace) -> None:
    run = as_runtime(RunConfig(device="cpu"))
    print(
        f"\nbf16 autocast vs float32, one training step of {args.batch} images x 4 rotations, "
        f"interleaved, medians of {args.steps}"
    )
    print(f"{'model':16s} {'float32 ms':>11s} {'bf16 ms':>8s} {'speed-up':>9s}  --amp auto here")
    for name in args.models.split(","):
        f32, bf16 = precision_steps(name, args.batch, args.steps)
        print(
            f"{name:16s} {f32 * 1e3:11.0f} {bf16 * 1e3:8.0f} {f32 / bf16:8.2f}x  "
            f"{run.precision_choice(name)}"
        )


def end_to_end_section(args: argparse.Namespace, root: Path) -> None:
    paths = sorted(str(p) for p in root.rglob("*.jpg"))[: args.epoch_images]
    n = len(paths)
    auto = as_runtime(RunConfig(device="cpu")).precision_choice("six_layer")
    print(
        f"\nsix_layer, one epoch of {n} JPEGs from disk, {args.runs} consecutive runs (goal >= 2)"
    )
    print(
        "  typical = torch DataLoader, 2 workers, PIL open/resize/rotate x4 per sample, "
        "float32 step, every epoch"
    )
    print(f"  rotviz --amp auto = {auto}; ratios include building our cache once")
    for run in range(1, args.runs + 1):
        typical = typical_epoch_seconds(paths, args.batch, workers=2)
        cache, epoch = our_seconds(root, n, args.batch, ("auto", "off"))
        ratios = {
            amp: {e: e * typical / (cache + e * epoch[amp]) for e in (1, 10)} for amp in epoch
        }
        print(
            f"  run {run}: typical {typical:.1f} s; rotviz cache {cache:.1f} s once + epoch "
            f"{epoch['auto']:.1f} s (auto) / {epoch['off']:.1f} s (float32)\n"
            f"         ratio --amp auto {ratios['auto'][1]:.2f} (1 epoch), "
            f"{ratios['auto'][10]:.2f} (10 epochs); same precision (float32) "
            f"{ratios['off'][1]:.2f} / {ratios['off'][10]:.2f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sections", default="loop,precision,end-to-end")
    ap.add_argument("--models", default="six_layer,efficientnet_b0,mobilenet_v2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--epoch-images", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3, help="end-to-end runs (consecutive)")
    args = ap.parse_args()
    sections = args.sections.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    root = image_folder(args.epoch_images)
    if "loop" in sections:
        loop_section(args, root)
    if "precision" in sections:
        precision_section(args)
    if "end-to-end" in sections:
        end_to_end_section(args, root)


if __name__ == "__main__":
    main()
