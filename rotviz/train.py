"""The rotation pretext training loop, readable top to bottom.

Every batch holds B images, each at all chosen rotations (the RotNet recipe), so one step
sees B * m samples. Shuffling is seeded per epoch, so a resumed run repeats exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from rotviz.config import TrainConfig
from rotviz.rotation import normalize, rotation_batch


@dataclass
class StepProgress:
    """What the loop reports after each step (the app draws its progress bar from it)."""

    epoch: int  # 0-based epoch in progress
    epochs: int
    step: int  # 1-based step within the epoch
    steps: int
    loss: float
    accuracy: float


@dataclass
class EpochResult:
    """Mean loss and accuracy of one finished epoch."""

    epoch: int  # 1-based count of finished epochs
    loss: float
    accuracy: float
    lr: float


@dataclass
class TrainState:
    """Everything needed to resume: finished epochs, optimiser state, history."""

    epochs_done: int = 0
    optimizer_state: dict | None = None
    history: list[EpochResult] = field(default_factory=list)


def resolve_device(device: str = "auto") -> torch.device:
    """ "auto" -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The study's optimiser: RMSprop with momentum."""
    return torch.optim.RMSprop(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """Step decay: lr * gamma ** (epoch // lr_step); gamma 1.0 (the study's listing) keeps it fixed."""
    return cfg.lr * cfg.lr_gamma ** (epoch // cfg.lr_step)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The image order of one epoch, a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train(
    model: nn.Module,
    images: np.ndarray,
    cfg: TrainConfig,
    device: torch.device,
    state: TrainState | None = None,
    on_step: Callable[[StepProgress], None] | None = None,
    on_epoch_end: Callable[[TrainState, torch.optim.Optimizer], None] | None = None,
) -> TrainState:
    """Train on uint8 images (N, 3, S, S) until cfg.epochs are done; returns the final state.

    on_epoch_end is called after every finished epoch (the store saves there).
    """
    state = state or TrainState()
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    if state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state)
    loss_fn = nn.CrossEntropyLoss()
    data = torch.from_numpy(np.array(images))  # one copy in RAM: memmaps are read-only
    if device.type == "cuda":
        data = data.pin_memory()
    steps = math.ceil(len(data) / cfg.batch_size)
    torch.manual_seed(cfg.seed)

    for epoch in range(state.epochs_done, cfg.epochs):
        lr = lr_at(epoch, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.from_numpy(epoch_order(len(data), cfg.seed, epoch))
        label_rng = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        total_loss, total_correct, total_seen = 0.0, 0, 0
        for step in range(steps):
            batch_idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            batch = data[batch_idx].to(device, non_blocking=True)
            x, y = rotation_batch(batch, cfg.rotations)
            if cfg.shuffle_labels:
                y = y[torch.randperm(len(y), generator=label_rng).to(device)]
            x = normalize(x)

            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            loss_value = loss.detach().item()
            correct = int((logits.detach().argmax(1) == y).sum())
            total_loss += loss_value * len(y)
            total_correct += correct
            total_seen += len(y)
            if on_step:
                on_step(
                    StepProgress(epoch, cfg.epochs, step + 1, steps, loss_value, correct / len(y))
                )
        state.epochs_done = epoch + 1
        state.history.append(
            EpochResult(epoch + 1, total_loss / total_seen, total_correct / total_seen, lr)
        )
        state.optimizer_state = optimizer.state_dict()
        if on_epoch_end:
            on_epoch_end(state, optimizer)
    model.eval()
    return state
