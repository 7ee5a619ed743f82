"""Orchestration shared by the CLI and the app: data -> checkpoint (from the store or trained) -> evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rotviz.config import DataConfig, TrainConfig
from rotviz.datasets import dataset_fingerprint, load_dataset
from rotviz.errors import RotvizError
from rotviz.evaluate import RotationEval, rotation_accuracy
from rotviz.models import build_model, random_twin
from rotviz.preprocess import PreparedSplit, prepare_split
from rotviz.records import Dataset
from rotviz.store import Checkpoint, CheckpointStore, checkpoint_key, checkpoint_name, new_card
from rotviz.train import StepProgress, TrainState, resolve_device, train

Log = Callable[[str], None]


def quiet(_: str) -> None:
    pass


@dataclass
class TrainOutcome:
    """A finished checkpoint and whether it came from the store without training."""

    checkpoint: Checkpoint
    from_store: bool


def load_split(
    data: DataConfig,
    split: str,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Dataset, PreparedSplit]:
    """The dataset and one preprocessed split of it (cached on disk)."""
    ds = load_dataset(data)
    prepared = prepare_split(
        ds, split, size=data.image_size, resize=data.resize, cache_dir=cache_dir, progress=progress
    )
    return ds, prepared


def find_checkpoint(
    data: DataConfig, train_cfg: TrainConfig, store: CheckpointStore
) -> tuple[str, Checkpoint | None]:
    """The store name for this request and the finished checkpoint if the store has it."""
    ds = load_dataset(data)
    name = checkpoint_name(
        data, train_cfg, checkpoint_key(data, train_cfg, dataset_fingerprint(ds))
    )
    return name, store.load(name)


def train_or_load(
    data: DataConfig,
    train_cfg: TrainConfig,
    store: CheckpointStore,
    device: str | torch.device = "auto",
    on_step: Callable[[StepProgress], None] | None = None,
    log: Log = print,
    cache_dir: Path | None = None,
    half: bool = False,
) -> TrainOutcome:
    """Serve the checkpoint for (data, train_cfg) from the store, or train it (resuming an interrupted run).

    Saves after every epoch, evaluates the trained model and its random twin on the test
    split, and records both in the card. Concurrent callers for the same config: one trains,
    the others wait on the lock and reuse the result.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    ds = load_dataset(data)
    fingerprint = dataset_fingerprint(ds)
    key = checkpoint_key(data, train_cfg, fingerprint)
    name = checkpoint_name(data, train_cfg, key)
    if (ckpt := store.load(name)) is not None:
        log(f"served from the store, no training: {ckpt.path}")
        return TrainOutcome(ckpt, True)

    with store.lock(name):
        if (ckpt := store.load(name)) is not None:
            log(f"trained meanwhile by another process, served from the store: {ckpt.path}")
            return TrainOutcome(ckpt, True)
        train_split = prepare_split(ds, "train", data.image_size, data.resize, cache_dir=cache_dir)
        if len(train_split) == 0:
            raise RotvizError(f"the {data.dataset} dataset has no training images")
        resumed = store.resume_state(name)
        if resumed is not None:
            model, state, card = resumed
            log(f"resuming {name} after epoch {state.epochs_done} of {train_cfg.epochs}")
        else:
            model = build_model(train_cfg.model, len(train_cfg.rotations), train_cfg.seed)
            state, card = TrainState(), new_card(data, train_cfg, key, fingerprint)
        card.update(device=str(device), n_train_images=len(train_split))
        log(
            f"training {train_cfg.model} on {data.dataset}: {len(train_split)} images x "
            f"{len(train_cfg.rotations)} rotations, {train_cfg.epochs} epochs, on {device}"
        )

        def save_epoch(state: TrainState, optimizer: torch.optim.Optimizer) -> None:
            card.update(epochs_done=state.epochs_done, history=[vars(h) for h in state.history])
            store.write(name, model, card, partial=True, optimizer_state=optimizer.state_dict())
            last = state.history[-1]
            log(
                f"epoch {last.epoch}/{train_cfg.epochs}: loss {last.loss:.4f}, accuracy {last.accuracy:.1%}"
            )

        state = train(
            model,
            train_split.images,
            train_cfg,
            device,
            state,
            on_step=on_step,
            on_epoch_end=save_epoch,
        )
        test_split = prepare_split(ds, "test", data.image_size, data.resize, cache_dir=cache_dir)
        trained_eval, random_eval = evaluate_pair(model, test_split, train_cfg, device)
        card.update(
            epochs_done=state.epochs_done,
            history=[vars(h) for h in state.history],
            n_test_images=len(test_split),
            metrics={"test": {"trained": trained_eval.to_dict(), "random": random_eval.to_dict()}},
        )
        card.pop("optimizer", None)
        path = store.write(name, model.cpu(), card, half=half)
        log(
            f"saved {path}: test rotation accuracy {trained_eval.accuracy:.1%} "
            f"(random twin {random_eval.accuracy:.1%})"
        )
        return TrainOutcome(store.load(name), False)


def evaluate_pair(
    model: torch.nn.Module, split: PreparedSplit, train_cfg: TrainConfig, device: torch.device
) -> tuple[RotationEval, RotationEval]:
    """Rotation accuracy of the trained model and of its random twin on the same images."""
    twin = random_twin(model, train_cfg.seed)
    return (
        rotation_accuracy(model, split.images, train_cfg.rotations, device),
        rotation_accuracy(twin, split.images, train_cfg.rotations, device),
    )
