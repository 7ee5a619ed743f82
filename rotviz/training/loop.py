"""The rotation pretext training loop, readable top to bottom.

Every batch holds B images, each at all chosen rotations (the RotNet recipe), so one step
sees B * m samples. Shuffling is seeded per epoch, so a resumed run repeats exactly what an
uninterrupted one would have done. The same loop runs on one CPU, one GPU (mixed precision,
channels_last, optional torch.compile) or as one rank of a torchrun job (DDP); RunConfig
holds those speed knobs, which never change the recipe.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rotviz import distributed
from rotviz.config import TrainConfig
from rotviz.data.rotation import normalize, rotation_batch
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import EpochResult, TrainState
from rotviz.runtime import Runtime, RuntimeLike, as_runtime


@dataclass
class StepProgress:
    """What the loop reports after each step (the app draws its progress bar from it)."""

    epoch: int  # 0-based epoch in progress
    epochs: int
    step: int  # 1-based step within the epoch
    steps: int
    loss: float
    accuracy: float


def check_world(n_images: int, batch_size: int, world: int) -> int:
    """Steps per epoch for n images in global batches; every rank needs at least one image per step."""
    if world > 1 and batch_size < world:
        raise RotvizError(
            f"--batch-size {batch_size} is the global batch and is split across {world} ranks: "
            f"give at least {world}"
        )
    steps = math.ceil(n_images / batch_size)
    tail = n_images % batch_size
    if world > 1 and 0 < tail < world:
        steps -= 1  # a last batch with fewer images than ranks is dropped (said by the caller)
    if steps == 0:
        raise RotvizError(f"{n_images} training images are fewer than the {world} ranks")
    return steps


def check_run(runtime: Runtime) -> None:
    """Refuse run settings this device cannot honour, before any work starts."""
    if runtime.config.sync_bn and distributed.is_distributed() and runtime.device.type != "cuda":
        raise RotvizError(
            "--sync-bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); on CPU "
            "BatchNorm statistics stay per rank: leave --sync-bn out"
        )


def prepare_model(model: nn.Module, runtime: Runtime) -> nn.Module:
    """Move the model, choose memory format, wrap in DDP (and SyncBatchNorm) under torchrun.

    Returns the module to call; parameters stay those of ``model`` (saved unwrapped).
    """
    device = runtime.device
    model.to(device).train()
    # channels-last convolutions are faster on CPU (oneDNN) as on GPU: measured 1.2-1.7x here
    model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if not distributed.is_distributed():
        return model
    check_run(runtime)
    if runtime.config.sync_bn:
        # converts the BatchNorm children in place, so the saved state_dict keys do not change
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


class BatchCopier:
    """uint8 images data[idx] on the device; on CUDA staged through two pinned buffers, copied async.

    Rotation and normalisation then run on the device, so only uint8 pixels cross the bus.
    A buffer is refilled only after the copy that last read it has finished (CUDA event).
    """

    def __init__(self, data: torch.Tensor, device: torch.device, max_images: int):
        self.data, self.device = data, device
        self.pinned = device.type == "cuda"
        if self.pinned:
            shape = (max_images, *data.shape[1:])
            self.buffers = [torch.empty(shape, dtype=data.dtype).pin_memory() for _ in range(2)]
            self.events: list[torch.cuda.Event | None] = [None, None]
            self.turn = 0

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """(len(idx), 3, S, S) uint8 on the device."""
        if not self.pinned:
            return self.data[idx].to(self.device)
        i, self.turn = self.turn, self.turn ^ 1
        if self.events[i] is not None:
            self.events[i].synchronize()
        staged = self.buffers[i][: len(idx)]
        torch.index_select(self.data, 0, idx, out=staged)
        batch = staged.to(self.device, non_blocking=True)
        self.events[i] = torch.cuda.Event()
        self.events[i].record()
        return batch


class CompiledOrEager:
    """Calls torch.compile(net); on the first failure warns once and calls net eagerly from then on."""

    def __init__(self, net: nn.Module, enabled: bool):
        self.eager = net
        self.compiled: Callable[..., torch.Tensor] | None = None
        if enabled:
            try:
                self.compiled = torch.compile(net)
            except Exception as err:  # noqa: BLE001 - any backend failure means "run eagerly"
                self.fall_back(err)

    def fall_back(self, err: Exception) -> None:
        first = (str(err).strip().splitlines() or [""])[0][:160]
        warnings.warn(
            f"torch.compile is not usable here ({type(err).__name__}: {first}); running eagerly",
            RuntimeWarning,
            stacklevel=3,
        )
        self.compiled = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as err:  # noqa: BLE001
                self.fall_back(err)
        return self.eager(x)


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
    runtime: RuntimeLike = "auto",
    state: TrainState | None = None,
    on_step: Callable[[StepProgress], None] | None = None,
    on_epoch_end: Callable[[TrainState, torch.optim.Optimizer], None] | None = None,
) -> TrainState:
    """Train on uint8 images (N, 3, S, S) until cfg.epochs are done; returns the final state.

    on_epoch_end is called after every finished epoch (the store saves there). Under
    torchrun, cfg.batch_size is the global batch: every rank takes a contiguous share of
    the same global batch and the loss is weighted so DDP's gradient average equals the
    single-process gradient of the whole batch; epoch metrics are summed over ranks.
    """
    runtime = as_runtime(runtime)
    device, amp_dtype = runtime.device, runtime.training_dtype(cfg.model)
    state = state or TrainState()
    world = distributed.world_size()
    net = CompiledOrEager(prepare_model(model, runtime), runtime.config.compile)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    optimizer = make_optimizer(model, cfg)
    if state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state)
    loss_fn = nn.CrossEntropyLoss()
    data = torch.from_numpy(np.array(images))  # one copy in RAM: memmaps are read-only
    to_device = BatchCopier(data, device, max_images=-(-cfg.batch_size // world))
    steps = check_world(len(data), cfg.batch_size, world)
    m = len(cfg.rotations)
    torch.manual_seed(cfg.seed)

    for epoch in range(state.epochs_done, cfg.epochs):
        lr = lr_at(epoch, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.from_numpy(epoch_order(len(data), cfg.seed, epoch))
        label_rng = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, seen
        for step in range(steps):
            global_idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            share = distributed.rank_slice(len(global_idx))
            batch = to_device(global_idx[share])
            x, y = rotation_batch(batch, cfg.rotations)
            if cfg.shuffle_labels:  # one permutation of the global batch's labels, sliced
                perm = torch.randperm(len(global_idx) * m, generator=label_rng)
                y = torch.arange(m).repeat(len(global_idx))[perm][share.start * m : share.stop * m]
                y = y.to(device)
            x = normalize(x).contiguous(memory_format=torch.channels_last)

            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = net(x)
            loss = loss_fn(logits.float(), y)
            # DDP averages gradients over ranks; weighting by this rank's share of the global
            # batch makes that average the gradient of the global mean loss (factor 1 alone).
            weight = len(y) * world / (len(global_idx) * m)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss * weight if world > 1 else loss).backward()
            scaler.step(optimizer)
            scaler.update()

            loss_sum = loss.detach() * len(y)
            correct = (logits.detach().argmax(1) == y).sum()
            totals += torch.stack([loss_sum.double(), correct.double(), totals.new_tensor(len(y))])
            if on_step:
                on_step(
                    StepProgress(
                        epoch, cfg.epochs, step + 1, steps, loss.item(), int(correct) / len(y)
                    )
                )
        loss_total, correct_total, seen = distributed.all_reduce_sum(totals).tolist()
        state.epochs_done = epoch + 1
        state.history.append(
            EpochResult(epoch + 1, loss_total / seen, correct_total / seen, lr, world)
        )
        state.optimizer_state = optimizer.state_dict()
        if on_epoch_end:
            on_epoch_end(state, optimizer)
    distributed.sync_buffers(model)
    model.eval()
    return state
