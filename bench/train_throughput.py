"""Training throughput: our loop vs pure compute, and our data path vs a typical RotNet DataLoader.

Prints, for each model, images/s of the real training loop (cached uint8 data, rotation,
normalisation, forward, backward, step) over images/s of forward+backward+step alone on
tensors already in memory (same batch), and for the six-layer net the end-to-end speed of
our path vs a torch DataLoader that opens, resizes and PIL-rotates every sample.

    python bench/train_throughput.py [--steps 8] [--batch 32] [--models six_layer,...]
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
    """Images/s of rotviz.training.loop.train over steps batches of cached uint8 images."""
    subset = images[: batch * (steps + 1)]
    times = []
    model = build_model(model_name, 4, 0)
    cfg = TrainConfig(model=model_name, epochs=1, batch_size=batch)
    train(
        model, subset, cfg, torch.device("cpu"), on_step=lambda p: times.append(time.perf_counter())
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


def our_seconds(root: Path, count: int, batch: int) -> tuple[float, float]:
    """Seconds to build our cache from the files, and for one training epoch on it."""
    ds = load_dataset(DataConfig("folder", root=str(root), test_fraction=0.0))
    ds = type(ds)(ds.name, ds.root, ds.records[:count], ds.category_names)
    t0 = time.perf_counter()
    split = prepare_split(ds, "train", cache_dir=Path(tempfile.mkdtemp()))
    t1 = time.perf_counter()
    train(
        build_model("six_layer", 4, 0),
        split.images,
        TrainConfig(epochs=1, batch_size=batch),
        torch.device("cpu"),
    )
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="six_layer,efficientnet_b0,mobilenet_v2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--epoch-images", type=int, default=512)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")

    root = image_folder(args.epoch_images)
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

    paths = sorted(str(p) for p in root.rglob("*.jpg"))[: args.epoch_images]
    typical = typical_epoch_seconds(paths, args.batch, workers=2)
    typical_cl = typical_epoch_seconds(paths, args.batch, workers=2, channels_last=True)
    cache, epoch = our_seconds(root, len(paths), args.batch)
    n = len(paths)
    print(
        f"\nsix_layer on {n} JPEGs from disk (measured: typical epoch {typical:.1f} s; ours: cache {cache:.1f} s once + epoch {epoch:.1f} s)"
    )
    print(
        "  typical = torch DataLoader, 2 workers, PIL open/resize/rotate x4 per sample, every epoch"
    )
    for epochs in (1, 10):
        ours = cache + epochs * epoch
        print(
            f"  {epochs:2d} epoch(s): typical {n * epochs / (epochs * typical):7.1f} img/s, rotviz {n * epochs / ours:7.1f} img/s, ratio {epochs * typical / ours:.2f} (goal >= 2)"
        )
    print(
        f"  data path alone: the typical loader feeding our channels-last step takes {typical_cl:.1f} s "
        f"an epoch, ratio {typical_cl / epoch:.2f} once our cache is built"
    )


if __name__ == "__main__":
    main()
