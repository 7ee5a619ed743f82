"""Options shared by every command (data, training recipe, runtime) and the one log line format."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rotviz.attribution.cache import MapCache, map_set_key
from rotviz.attribution.cost import estimate_seconds, pass_cost_file
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import DataConfig, TrainConfig
from rotviz.data.rotation import parse_rotations
from rotviz.distributed import is_main
from rotviz.errors import RotvizError
from rotviz.nets.batchnorm import DEFAULT_N_IMAGES
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.models import RotationNet
from rotviz.nets.store import CheckpointStore, default_store, load_checkpoint, user_store_root
from rotviz.nets.twin import DEFAULT_TWIN, TWINS
from rotviz.runtime import RunConfig, Runtime
from rotviz.training.pipeline import load_split, recalibrate, stored_epochs, train_or_load


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
    g.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"default: the stored network of this recipe with the most epochs, else {d.epochs}",
    )
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
        "network's own training images, else on the --dataset ones with a warning; default) or "
        "initial (as initialised, the study's baseline)",
    )
    add_run_options(g)
    add_store_option(g)
    g.add_argument(
        "--half", action="store_true", help="store weights in float16 (loaded back as float32)"
    )
    g.add_argument(
        "--test-curve",
        action="store_true",
        help="evaluate the test split after every epoch (eval mode) into the run log "
        "(metrics.csv kind 'test', TensorBoard test/accuracy): where training stands",
    )


def add_run_options(g: argparse._ActionsContainer) -> None:
    """Speed knobs (RunConfig), recorded on the card; of them only the resolved training
    precision is part of the checkpoint's name."""
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "off"],
        default="auto",
        help="mixed precision of training (default auto: bf16 on CUDA where supported, and on a "
        "CPU with native bf16 for the architectures it speeds up; else float32). Part of the "
        "network's name: an explicit --amp is served only networks trained in it",
    )
    g.add_argument(
        "--compile", action="store_true", help="torch.compile the model (falls back to eager)"
    )
    g.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun on CUDA: SyncBatchNorm (default: BatchNorm statistics per rank)",
    )


def add_store_option(g: argparse._ActionsContainer) -> None:
    g.add_argument(
        "--store",
        default=None,
        help="folder new networks are written to (default $ROTVIZ_STORE, else "
        "~/.cache/rotviz/checkpoints); the shipped networks are always read too",
    )


def checkpoint_store(args: argparse.Namespace) -> CheckpointStore:
    """The store of --store (or the user's default), which also reads the shipped networks."""
    return CheckpointStore(args.store, shipped=True) if args.store else default_store()


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
        epochs=TrainConfig().epochs if args.epochs is None else args.epochs,
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


def served_train_config(
    args: argparse.Namespace, data: DataConfig, store: CheckpointStore
) -> TrainConfig:
    """train_config(args); without --epochs, the epochs of the stored network of this recipe
    with the most (said in the log), else TrainConfig's default (said too)."""
    tcfg = train_config(args)
    if args.epochs is not None:
        return tcfg
    epochs = stored_epochs(data, tcfg, store, run_config(args))
    if epochs is None:
        log(f"no --epochs and no stored network of this recipe: training {tcfg.epochs} epochs")
        return tcfg
    log(f"no --epochs: serving the stored network with {epochs} epochs")
    return dataclasses.replace(tcfg, epochs=epochs)


def add_checkpoint_option(p: argparse._ActionsContainer) -> None:
    p.add_argument(
        "--checkpoint",
        metavar="REF",
        default=None,
        help="apply this network (a name from `python -m rotviz checkpoints`, or a path to its "
        ".safetensors with its card) to the --dataset data, instead of the one trained on it",
    )


def network_command(
    sub: argparse._SubParsersAction, name: str, help: str
) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    """A command that applies a network (data, training and --checkpoint options) and its own
    option group, named after it."""
    p = sub.add_parser(name, help=help)
    add_data_options(p)
    add_train_options(p)
    add_checkpoint_option(p)
    return p, p.add_argument_group(name)


def add_map_options(g: argparse._ActionsContainer, method_help: str | None = None) -> None:
    """--layer, --neurons, --method: what a saliency map explains and how."""
    g.add_argument("--layer", choices=["rotation", "embedding"], default="rotation")
    g.add_argument(
        "--neurons", default="all", help="all, predicted, true, topk:K or indices like 3,17,42"
    )
    g.add_argument(
        "--method",
        default="saliency",
        help=method_help
        or "saliency (the study), integrated_gradients, smoothgrad, gradcam, guided_backprop",
    )


def add_output_options(g: argparse._ActionsContainer, folder: str, figures: bool = True) -> None:
    """--out FOLDER and, with figures, --figure-formats."""
    g.add_argument("--out", default=folder, help=f"output folder (default {folder}/)")
    if figures:
        g.add_argument("--figure-formats", default="png", help="comma-separated: png,svg,pdf")


def network(
    args: argparse.Namespace, data: DataConfig, store: CheckpointStore, runtime: Runtime
) -> tuple[Checkpoint, DataConfig]:
    """The network a command runs and the data it runs on: --checkpoint's network on the
    --dataset data (preprocessed as that network was trained), else the network of --dataset
    and the training options (from the store, or trained now, with precise BatchNorm
    statistics unless --no-precise-bn). --precise-bn N given explicitly also recomputes the
    statistics, in memory, of a stored network trained without them (and says so)."""
    if getattr(args, "checkpoint", None):
        ckpt = load_checkpoint(args.checkpoint, store)
        trained_on = ckpt.data_config
        data = dataclasses.replace(data, image_size=trained_on.image_size, resize=trained_on.resize)
        log(f"network {ckpt.name} (trained on {ckpt.card.dataset}), data {data.dataset}")
    else:
        tcfg = served_train_config(args, data, store)
        ckpt = train_or_load(
            data,
            tcfg,
            store,
            runtime,
            on_step=step_progress_bar(tcfg.batch_size),
            log=log,
            precise_bn=precise_bn_images(args),
        ).checkpoint
    if args.precise_bn and not args.no_precise_bn and not ckpt.card.precise_bn:
        _, train_split = load_split(own_data(ckpt, data) or ckpt.data_config, "train")
        recalibrate(
            ckpt.model, train_split.images, ckpt.train_config, runtime, args.precise_bn, log
        )
        log("(in memory only: the stored checkpoint keeps its running statistics)")
    return ckpt, data


def own_data(ckpt: Checkpoint, data: DataConfig) -> DataConfig | None:
    """data when it is the network's own dataset (its training images are there), else None."""
    return data if data.dataset == ckpt.card.dataset else None


def log(msg: str) -> None:
    """One line on stderr, prefixed [rotviz]; under torchrun only rank 0 speaks."""
    if is_main():  # under torchrun, rank 0 speaks for the job
        print(f"[rotviz] {msg}", file=sys.stderr)


def step_progress_bar(batch_size: int, stream=None, clock=None):
    """Training progress on stderr, rank 0 only: a tqdm bar per epoch on a terminal; in a log
    file or pipe, one line every ROTVIZ_PROGRESS_EVERY_S seconds (default 30) with images
    done, speed and time left."""

    stream = stream or sys.stderr
    clock = clock or time.monotonic
    try:
        every = float(os.environ.get("ROTVIZ_PROGRESS_EVERY_S", "30"))
    except ValueError:
        raise RotvizError("ROTVIZ_PROGRESS_EVERY_S must be a number of seconds") from None
    terminal = stream.isatty()
    state: dict = {}

    def progress_line(p) -> None:  # p: rotviz.training.loop.StepProgress
        now, step = clock(), p.epoch * p.steps + p.step
        # the speed is measured from the end of this process's first step (no start-up costs)
        start_time, start_step = state.setdefault("start", (now, step))
        if step == start_step or now - state.get("printed", start_time) < every:
            return
        state["printed"] = now
        rate = (step - start_step) / max(now - start_time, 1e-9)  # steps per second
        left_epoch = (p.steps - p.step) / rate
        left_run = left_epoch + (p.epochs - p.epoch - 1) * p.steps / rate
        print(
            f"[rotviz] epoch {p.epoch + 1}/{p.epochs}: step {p.step}/{p.steps} "
            f"(about {p.step * batch_size} images), "
            f"{rate * batch_size:.1f} images/s, {_duration(left_epoch)} left in the epoch, "
            f"{_duration(left_run)} in the run; loss {p.loss:.3f}, batch accuracy {p.accuracy:.0%}",
            file=stream,
            flush=True,
        )

    def progress_bar(p) -> None:  # p: rotviz.training.loop.StepProgress
        if state.get("epoch") != p.epoch:
            if "bar" in state:
                state["bar"].close()
            desc = f"epoch {p.epoch + 1}/{p.epochs}"
            state.update(
                epoch=p.epoch, bar=tqdm(total=p.steps, desc=desc, file=stream, leave=False)
            )
        bar = state["bar"]
        bar.set_postfix(loss=f"{p.loss:.3f}", acc=f"{p.accuracy:.0%}", refresh=False)
        bar.update(p.step - bar.n)
        if p.step == p.steps:
            bar.close()

    def on_step(p) -> None:
        if is_main():
            (progress_bar if terminal else progress_line)(p)

    return on_step


def _duration(seconds: float) -> str:
    """Seconds as H:MM:SS or M:SS."""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def map_cache(args: argparse.Namespace) -> MapCache:
    """The map cache under the store's folder (--store, else $ROTVIZ_STORE or the default)."""
    return MapCache(
        (Path(args.store) if getattr(args, "store", None) else user_store_root()) / "map_cache"
    )


def say_cost(
    model: RotationNet,
    sal: SaliencyConfig,
    images: np.ndarray,
    twin: RotationNet | None,
    cache: MapCache | None,
    copies: int = 1,
    what: str = "maps",
    networks: int = 2,
) -> None:
    """Log where maps of images (N, 3, S, S) by model and twin come from: the map cache, or the
    estimate (rotviz.attribution.cost) when over its threshold, before the run starts. copies:
    map sets computed per image (e.g. rotation consistency's rotated copies); networks: how
    many networks compute them (the trained network and its twin)."""
    if cache is not None and twin is not None and map_set_key(model, twin, sal, images) in cache:
        log(f"{what}: from the map cache ({cache.root})")
        return
    est = estimate_seconds(model, sal, len(images) * copies, networks, images.shape[-1])
    if est.needs_confirmation:
        log(
            f"{what}: {est.text} on this machine (the bound; one pass measured once, kept in "
            f"{pass_cost_file()})"
        )
