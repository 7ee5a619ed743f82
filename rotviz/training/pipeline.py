"""Orchestration shared by the CLI and the app: data -> checkpoint (from the store or trained) -> evaluation."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rotviz import distributed
from rotviz.config import DataConfig, TrainConfig
from rotviz.data.datasets import dataset_fingerprint, load_dataset
from rotviz.data.preprocess import PreparedSplit, prepare_split
from rotviz.data.records import Dataset
from rotviz.data.splits import load_split  # noqa: F401  (callers import it from here)
from rotviz.errors import RotvizError
from rotviz.nets.batchnorm import (
    DEFAULT_N_IMAGES,
    precise_bn,
    sample_indices,
    statistics_gap,
    statistics_warning,
)
from rotviz.nets.checkpoint import Card, Checkpoint, TrainState
from rotviz.nets.evaluate import rotation_accuracy
from rotviz.nets.models import build_model
from rotviz.nets.store import CheckpointStore, checkpoint_key, checkpoint_name, new_card
from rotviz.nets.twin import random_twin_of
from rotviz.runtime import RuntimeLike, as_runtime
from rotviz.training.loop import StepProgress, check_run, check_world, train
from rotviz.training.runlog import RunLog, run_dir

Log = Callable[[str], None]
TRAIN_SAMPLE = 512  # training images whose eval-mode accuracy the card records


def quiet(_: str) -> None:
    pass


@dataclass
class TrainOutcome:
    """A finished checkpoint and whether it came from the store without training."""

    checkpoint: Checkpoint
    from_store: bool


def served_names(
    data: DataConfig, train_cfg: TrainConfig, fingerprint: str, runtime: RuntimeLike = "auto"
) -> list[str]:
    """The store names a request accepts, best first: its own training precision, then (under
    --amp auto only) the others. The first is the one a new run trains under."""
    return [
        checkpoint_name(data, train_cfg, checkpoint_key(data, train_cfg, fingerprint, precision))
        for precision in as_runtime(runtime).served_precisions(train_cfg.model)
    ]


def find_checkpoint(
    data: DataConfig, train_cfg: TrainConfig, store: CheckpointStore, runtime: RuntimeLike = "auto"
) -> tuple[str, Checkpoint | None]:
    """The store name for this request and the finished checkpoint if the store has it."""
    names = served_names(data, train_cfg, dataset_fingerprint(load_dataset(data)), runtime)
    for name in names:
        if (ckpt := store.load(name)) is not None:
            return name, ckpt
    return names[0], None


def stored_epochs(
    data: DataConfig, train_cfg: TrainConfig, store: CheckpointStore, runtime: RuntimeLike = "auto"
) -> int | None:
    """The most epochs of a finished checkpoint of this recipe (train_cfg at any epoch count) in
    the store(s), or None. Names are the store's own (checkpoint_key), so nothing can drift."""
    cards = store.cards()
    names = {c.name for c in cards}
    counts = {
        c.train_config.epochs
        for c in cards
        if (c.dataset, c.model) == (data.dataset, train_cfg.model)
    }
    if not counts:
        return None
    fingerprint = dataset_fingerprint(load_dataset(data))
    for epochs in sorted(counts, reverse=True):
        cfg = dataclasses.replace(train_cfg, epochs=epochs)
        if names.intersection(served_names(data, cfg, fingerprint, runtime)):
            return epochs
    return None


def provenance(ckpt: Checkpoint, data: DataConfig, split: str = "test") -> dict[str, Any]:
    """Which network and which data a result comes from; cross_dataset: the data is not the
    network's own dataset (its rows are never to be mixed with its own test split's)."""
    fingerprint = dataset_fingerprint(load_dataset(data))
    cross = data.dataset != ckpt.card.dataset or fingerprint != ckpt.card.dataset_fingerprint
    return {
        "network": f"{ckpt.name} (trained on {ckpt.card.dataset})",
        "data": f"{data.dataset} {split}",
        "cross_dataset": cross,
    }


def _split(ds: Dataset, data: DataConfig, split: str, cache_dir: Path | None) -> PreparedSplit:
    with distributed.main_first():
        return prepare_split(ds, split, data.image_size, data.resize, cache_dir=cache_dir)


def _load_finished(store: CheckpointStore, name: str) -> Checkpoint | None:
    """The finished checkpoint as rank 0 sees it; the other ranks read it only when rank 0 found it."""
    main = distributed.is_main()
    ckpt = store.load(name) if main else None
    if not distributed.broadcast(ckpt is not None if main else None):
        return None
    if not main and (ckpt := store.load(name)) is None:
        raise RotvizError(
            f"rank {distributed.rank()} cannot read the checkpoint {name} in {store.root}"
        )
    return ckpt


def _first_finished(store: CheckpointStore, names: list[str]) -> Checkpoint | None:
    """The first of names (best first) whose finished checkpoint the store has, as rank 0 sees it."""
    for name in names:
        if (ckpt := _load_finished(store, name)) is not None:
            return ckpt
    return None


def train_or_load(
    data: DataConfig,
    train_cfg: TrainConfig,
    store: CheckpointStore,
    runtime: RuntimeLike = "auto",
    on_step: Callable[[StepProgress], None] | None = None,
    log: Log = print,
    cache_dir: Path | None = None,
    half: bool = False,
    precise_bn: int | None = DEFAULT_N_IMAGES,
    test_curve: bool = False,
) -> TrainOutcome:
    """Serve the checkpoint for (data, train_cfg) from the store, or train it (resuming an interrupted run).

    Saves after every epoch; once trained (or resumed to the end), recomputes the BatchNorm
    running statistics over precise_bn training images (None: all, 0: off; PreciseBN), then
    evaluates the trained model and both random twins (initial and calibrated statistics) on
    the test split and records them, with the training accuracy in eval mode, in the card. Concurrent callers for the same config: one trains,
    the others wait on the lock and reuse the result. runtime: a device name or a RunConfig
    (AMP, compile, SyncBatchNorm) resolved once here, or an already resolved Runtime; those
    never change the checkpoint's name. Under torchrun every rank calls this: rank 0 alone
    holds the lock, logs and writes; all ranks train (DDP). test_curve: also evaluate the
    test split after every epoch (eval mode, running statistics) into the run log.
    """
    runtime = as_runtime(runtime)
    device = runtime.device
    check_run(runtime)
    main = distributed.is_main()
    log = log if main else quiet
    ds = load_dataset(data)
    fingerprint = dataset_fingerprint(ds)
    precision = runtime.precision(train_cfg.model)
    key = checkpoint_key(data, train_cfg, fingerprint, precision)
    name = checkpoint_name(data, train_cfg, key)
    accepted = served_names(data, train_cfg, fingerprint, runtime)
    if (ckpt := _first_finished(store, accepted)) is not None:
        log(f"served from the store, no training: {ckpt.path}{_trained_in(ckpt, precision)}")
        return TrainOutcome(ckpt, True)

    with store.lock(name) if main else contextlib.nullcontext():
        if (ckpt := _first_finished(store, accepted)) is not None:
            log(f"trained meanwhile by another process, served from the store: {ckpt.path}")
            return TrainOutcome(ckpt, True)
        train_split = _split(ds, data, "train", cache_dir)
        # rank 0 reads the partial checkpoint; DDP copies its weights to the other ranks and
        # the optimiser state and history travel by broadcast, so any world size resumes it
        resumed = store.resume_state(name) if main else None
        model = (
            resumed[0]
            if resumed
            else build_model(train_cfg.model, train_cfg.rotations, train_cfg.seed)
        )
        state, card = distributed.broadcast((resumed[1], resumed[2]) if resumed else None) or (
            TrainState(),
            new_card(data, train_cfg, key, fingerprint),
        )
        if state.epochs_done:
            log(f"resuming {name} after epoch {state.epochs_done} of {train_cfg.epochs}")
        world = distributed.world_size()
        per_rank = distributed.split_sizes(train_cfg.batch_size, world)
        bn = (
            "single process"
            if world == 1
            else ("synchronised (SyncBatchNorm)" if runtime.config.sync_bn else "per rank")
        )
        card.update(
            device=str(device),
            run=runtime.card(train_cfg.model),
            precision=precision,
            world_size=world,
            global_batch=train_cfg.batch_size,
            per_rank_batch=per_rank,
            batch_norm=bn,
            lr_rule="none: --batch-size is the global batch, split across ranks; lr as given",
            n_train_images=len(train_split),
        )
        log(
            f"training {train_cfg.model} on {data.dataset}: {len(train_split)} images x "
            f"{len(train_cfg.rotations)} rotations, {train_cfg.epochs} epochs, on {device}"
            + (f" x {world} ranks" if world > 1 else "")
            + f", in {runtime.precision_choice(train_cfg.model)}"
        )
        if world > 1:
            log(
                f"global batch {train_cfg.batch_size} images ({train_cfg.batch_size * len(train_cfg.rotations)} samples), "
                f"per rank {'/'.join(map(str, per_rank))} images; BatchNorm statistics {bn}"
            )
            tail = len(train_split) % train_cfg.batch_size
            if 0 < tail < world:
                log(f"the last {tail} image(s) of each epoch are fewer than the ranks: dropped")

        steps = check_world(len(train_split), train_cfg.batch_size, world)
        run_log = RunLog(run_dir(store.root, name), train_cfg, state, steps, log) if main else None

        test_images = _split(ds, data, "test", cache_dir).images if test_curve else None

        def save_epoch(state: TrainState, optimizer: torch.optim.Optimizer) -> None:
            if test_images is not None:  # every rank: the evaluation is sharded under torchrun
                ev = rotation_accuracy(model, test_images, train_cfg.rotations, runtime)
            if not main:
                return
            if test_images is not None:
                run_log.test(state.epochs_done, ev.accuracy)
            card.update(epochs_done=state.epochs_done, history=[vars(h) for h in state.history])
            store.write(name, model, card, partial=True, optimizer_state=optimizer.state_dict())
            run_log.epoch(state.history[-1])
            last = state.history[-1]
            log(
                f"epoch {last.epoch}/{train_cfg.epochs}: loss {last.loss:.4f}, accuracy {last.accuracy:.1%}"
                + (f", test {ev.accuracy:.1%} (eval mode)" if test_images is not None else "")
            )

        state = train(
            model,
            train_split.images,
            train_cfg,
            runtime,
            state,
            on_step=_both(on_step, run_log.step if run_log else None),
            on_epoch_end=save_epoch,
        )
        if run_log:
            run_log.close()
        card["precise_bn"] = recalibrate(
            model, train_split.images, train_cfg, runtime, precise_bn, log
        )
        test_split = _split(ds, data, "test", cache_dir)
        trained = Checkpoint(model, Card(card), store.root / name)
        nets = {
            "trained": model,
            "initial": random_twin_of(trained, "initial", runtime),
            "calibrated": random_twin_of(
                trained, "calibrated", runtime, train_images=train_split.images
            ),
        }
        evals = {
            network: rotation_accuracy(net, test_split.images, train_cfg.rotations, runtime)
            for network, net in nets.items()
        }
        gap = train_statistics(model, train_split.images, train_cfg, runtime)
        if main:
            card.update(
                epochs_done=state.epochs_done,
                history=[vars(h) for h in state.history],
                n_test_images=len(test_split),
                train_accuracy=gap,
                twin_calibration=nets["calibrated"].calibration.to_dict(),
                metrics={"test": {network: ev.to_dict() for network, ev in evals.items()}},
            )
            card.pop("optimizer", None)
            path = store.write(name, model.cpu(), card, half=half)
            log(
                f"saved {path}: test rotation accuracy {evals['trained'].accuracy:.1%} "
                f"(random twin {evals['initial'].accuracy:.1%} with initial BatchNorm statistics, "
                f"{evals['calibrated'].accuracy:.1%} calibrated); training images in eval mode "
                f"{gap['running_statistics']:.1%} ({gap['n_images']} images)"
            )
            if gap["warning"]:
                log(f"warning: {gap['warning']}")
        distributed.barrier()  # the others read the checkpoint only once rank 0 has written it
        ckpt = store.load(name)
        if ckpt is None:
            raise RotvizError(
                f"rank {distributed.rank()} cannot read the checkpoint {name} in {store.root}"
            )
        return TrainOutcome(ckpt, False)


def _trained_in(ckpt: Checkpoint, wanted: str) -> str:
    got = ckpt.card.precision
    return "" if got == wanted else f" (trained in {got}; --amp auto takes either, --amp sets one)"


def _both(*callbacks: Callable[[StepProgress], None] | None) -> Callable[[StepProgress], None]:
    """One on_step callback calling each given one in turn."""
    given = [c for c in callbacks if c is not None]

    def on_step(p: StepProgress) -> None:
        for callback in given:
            callback(p)

    return on_step


def recalibrate(
    model: torch.nn.Module,
    images: np.ndarray,
    train_cfg: TrainConfig,
    runtime: RuntimeLike,
    n_images: int | None,
    log: Log = quiet,
) -> dict:
    """Precise BatchNorm statistics after training (n_images 0: off); what the card records."""
    if n_images == 0:
        log("precise BatchNorm statistics: off (--no-precise-bn); running statistics as trained")
        return {"applied": False}
    info = precise_bn(
        model,
        images,
        train_cfg.rotations,
        as_runtime(runtime).device,
        n_images,
        seed=train_cfg.seed,
    )
    log(
        f"precise BatchNorm statistics: recomputed over {info.n_images} training images "
        f"x {len(train_cfg.rotations)} rotations ({info.n_batches} batches, weights unchanged)"
    )
    return {"applied": True, **info.to_dict()}


def train_statistics(
    model: torch.nn.Module, images: np.ndarray, train_cfg: TrainConfig, runtime: RuntimeLike
) -> dict:
    """Training accuracy in eval mode (running statistics) and with batch statistics on a
    seeded sample of the train split, and the one-line warning when they disagree."""
    sample = images[np.sort(sample_indices(len(images), TRAIN_SAMPLE, train_cfg.seed))]
    acc_batch, acc_running = statistics_gap(
        model, sample, train_cfg.rotations, as_runtime(runtime).device
    )
    return {
        "n_images": len(sample),
        "running_statistics": acc_running,
        "batch_statistics": acc_batch,
        "warning": statistics_warning(acc_batch, acc_running),
    }
