"""Options shared by every command (data, training recipe, runtime) and the one log line format."""

from __future__ import annotations

import argparse
import sys

from rotviz.batchnorm import DEFAULT_N_IMAGES, DEFAULT_TWIN, TWINS
from rotviz.config import DataConfig, TrainConfig
from rotviz.distributed import is_main
from rotviz.rotation import parse_rotations
from rotviz.runtime import RunConfig
from rotviz.store import DEFAULT_STORE


def add_data_options(p: argparse.ArgumentParser, multi: bool = False) -> None:
    g = p.add_argument_group("data")
    if not multi:
        g.add_argument(
            "--dataset",
            default="demo",
            help="lfw, coco, cityscapes, folder or demo (default: demo)",
        )
    g.add_argument(
        "--root",
        action="append" if multi else "store",
        help="dataset folder" + (" (NAME=PATH, repeatable)" if multi else ""),
    )
    g.add_argument(
        "--ann",
        action="append" if multi else "store",
        help="COCO instances json" + (" (NAME=PATH)" if multi else ""),
    )
    g.add_argument(
        "--categories",
        action="append" if multi else "store",
        default=None,
        help="COCO categories to keep, names or ids, e.g. cat,dog"
        + (" (NAME=LIST)" if multi else ""),
    )
    g.add_argument(
        "--test-fraction",
        type=float,
        default=0.25,
        help="test share where the dataset has no split (default 0.25)",
    )
    g.add_argument(
        "--resize",
        choices=["stretch", "center-crop"],
        default="stretch",
        help="stretch to 128x128 (the study) or crop the centre square first",
    )
    g.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="use at most this many images per split (quick runs)",
    )


def add_train_options(p: argparse.ArgumentParser, multi: bool = False) -> None:
    g = p.add_argument_group("training (defaults: the study's preset)")
    if not multi:
        g.add_argument(
            "--model",
            default="six_layer",
            help="six_layer, efficientnet_b0, mobilenet_v2 or any timm name",
        )
    d = TrainConfig()
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    g.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"images per step, each at all rotations (default {d.batch_size})",
    )
    g.add_argument("--lr", type=float, default=d.lr, help=f"RMSprop learning rate (default {d.lr})")
    g.add_argument(
        "--momentum",
        type=float,
        default=d.momentum,
        help=f"RMSprop momentum (default {d.momentum})",
    )
    g.add_argument(
        "--lr-step",
        type=int,
        default=d.lr_step,
        help=f"decay the lr every N epochs (default {d.lr_step})",
    )
    g.add_argument(
        "--lr-gamma",
        type=float,
        default=d.lr_gamma,
        help=f"lr decay factor (default {d.lr_gamma}, no decay, as the study lists)",
    )
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument(
        "--rotations", default="0,90,180,270", help="angles in degrees (default 0,90,180,270)"
    )
    g.add_argument(
        "--shuffle-labels",
        action="store_true",
        help="train on shuffled rotation labels (data-randomisation baseline)",
    )
    g.add_argument(
        "--precise-bn",
        type=int,
        default=None,
        metavar="N",
        help=f"after training, recompute BatchNorm statistics over N training images (default "
        f"{DEFAULT_N_IMAGES}); on evaluate/saliency/sanity also applied on load to a stored "
        "network that lacks them (in memory, said in the log)",
    )
    g.add_argument(
        "--no-precise-bn",
        action="store_true",
        help="keep the running statistics as trained (the study's behaviour)",
    )
    g.add_argument(
        "--twin",
        choices=TWINS,
        default=DEFAULT_TWIN,
        help="the random twin compared with: calibrated (BatchNorm statistics recomputed on the "
        "training images, default) or initial (as initialised, the study's baseline)",
    )
    add_run_options(g)
    g.add_argument(
        "--store", default=str(DEFAULT_STORE), help=f"checkpoint folder (default {DEFAULT_STORE})"
    )
    g.add_argument(
        "--half", action="store_true", help="store weights in float16 (loaded back as float32)"
    )


def add_run_options(g: argparse._ActionsContainer) -> None:
    """Speed knobs (RunConfig): they never change the checkpoint's name, the card records them."""
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "off"],
        default="auto",
        help="mixed precision (default auto: bf16 on CUDA where supported, off on CPU)",
    )
    g.add_argument(
        "--compile", action="store_true", help="torch.compile the model (falls back to eager)"
    )
    g.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun on CUDA: SyncBatchNorm (default: BatchNorm statistics per rank)",
    )


def run_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of --device/--amp/--compile/--sync-bn (resolve it once with as_runtime)."""
    return RunConfig(args.device, args.amp, args.compile, args.sync_bn)


def named(values: list[str] | None, dataset: str) -> str | None:
    """Pick NAME=VALUE for dataset from repeated options; a bare VALUE applies to every dataset."""
    for v in values or []:
        name, sep, rest = v.partition("=")
        if sep and name == dataset:
            return rest
        if not sep:
            return v
    return None


def data_config(
    args: argparse.Namespace, dataset: str | None = None, multi: bool = False
) -> DataConfig:
    dataset = dataset or args.dataset
    pick = (lambda vals: named(vals, dataset)) if multi else (lambda v: v)
    cats = pick(args.categories)
    return DataConfig(
        dataset=dataset,
        root=pick(args.root),
        ann=pick(args.ann),
        categories=tuple(c.strip() for c in cats.split(",") if c.strip()) if cats else (),
        test_fraction=args.test_fraction,
        resize=args.resize,
        max_images=args.max_images,
    )


def train_config(args: argparse.Namespace, model: str | None = None) -> TrainConfig:
    return TrainConfig(
        model=model or args.model,
        rotations=parse_rotations(args.rotations),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        lr_step=args.lr_step,
        lr_gamma=args.lr_gamma,
        seed=args.seed,
        shuffle_labels=args.shuffle_labels,
    )


def precise_bn_images(args: argparse.Namespace) -> int | None:
    """Training images for precise BatchNorm statistics after training (0: off)."""
    if args.no_precise_bn:
        return 0
    return DEFAULT_N_IMAGES if args.precise_bn is None else args.precise_bn


def log(msg: str) -> None:
    """One line on stderr, prefixed [rotviz]; under torchrun only rank 0 speaks."""
    if is_main():  # under torchrun, rank 0 speaks for the job
        print(f"[rotviz] {msg}", file=sys.stderr)
