"""Run logs beside the checkpoints: TensorBoard event files and a CSV of loss, accuracy and lr.

Each run writes to `<store>/runs/<checkpoint name>/`: TensorBoard event files (one per
process that trained it) and `metrics.csv`, so `tensorboard --logdir <store>/runs` shows
every run, trained and resumed, under its checkpoint name. Tags: `epoch/loss`,
`epoch/accuracy`, `epoch/lr` at step = epoch (1-based), and the same under `step/` at
step = global training step, thinned to about STEP_POINTS per epoch; with a test curve
(`--test-curve`), `test/accuracy` at step = epoch: the test split's rotation accuracy in eval
mode after each epoch (rows of kind "test", loss left empty).

Resuming never logs an epoch twice: the CSV says which epochs are logged; epochs the
checkpoint holds but the log lacks are written from its history; the steps of the
unfinished epoch are dropped from the CSV and superseded in TensorBoard by `purge_step`.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from pathlib import Path

from rotviz.config import TrainConfig
from rotviz.training.loop import EpochResult, StepProgress, TrainState, lr_at

RUNS_DIR = "runs"
CSV_NAME = "metrics.csv"
FIELDS = ("kind", "epoch", "step", "loss", "accuracy", "lr", "wall_time")
STEP_POINTS = 20  # per-step points logged per epoch
EVENTS_PREFIX = "events.out.tfevents."


def run_dir(store_root: Path | str, name: str) -> Path:
    """The run log folder of a checkpoint: <store>/runs/<name>."""
    return Path(store_root) / RUNS_DIR / name


def read_rows(folder: Path) -> list[dict[str, str]]:
    """The CSV rows logged so far in a run folder (empty when none)."""
    path = folder / CSV_NAME
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class RunLog:
    """Writes one training run's per-epoch and thinned per-step scalars to TensorBoard and CSV.

    Created just before training with the state it starts from (fresh or resumed) and the
    steps per epoch; call `step` from the training loop's on_step and `epoch` after each
    epoch is saved, `close` at the end.
    """

    def __init__(
        self,
        folder: Path,
        cfg: TrainConfig,
        state: TrainState,
        steps_per_epoch: int,
        log: Callable[[str], None] = print,
    ):
        self.folder, self.cfg, self.steps = folder, cfg, steps_per_epoch
        folder.mkdir(parents=True, exist_ok=True)
        if state.epochs_done == 0:  # a new run of this name: an earlier run's logs are stale
            for old in [*folder.glob(EVENTS_PREFIX + "*"), folder / CSV_NAME]:
                old.unlink(missing_ok=True)
        rows = [r for r in read_rows(folder) if int(r["epoch"]) <= state.epochs_done]
        self._write_csv(rows, mode="w")  # drops the steps of an unfinished epoch
        self.logged = {int(r["epoch"]) for r in rows if r["kind"] == "epoch"}
        self.writer = _event_writer(folder, state.epochs_done * steps_per_epoch + 1, log)
        for h in state.history:  # epochs saved in the checkpoint but not yet in the log
            self.epoch(h)

    def _write_csv(self, rows: list[dict], mode: str = "a") -> None:
        path = self.folder / CSV_NAME
        target = path.with_suffix(".tmp") if mode == "w" else path
        header = mode == "w" or not path.exists()
        with target.open(mode, newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            if header:
                writer.writeheader()
            writer.writerows(rows)
        if target != path:
            os.replace(target, path)

    def _scalars(self, kind: str, epoch: int, step: int, loss: float, acc: float, lr: float):
        now = time.time()
        if self.writer is not None:
            at = epoch if kind == "epoch" else step
            for tag, value in (("loss", loss), ("accuracy", acc), ("lr", lr)):
                self.writer.add_scalar(f"{kind}/{tag}", value, at, walltime=now)
            if kind == "epoch":
                self.writer.flush()  # the event before the CSV row: the CSV never claims more
        row = dict(kind=kind, epoch=epoch, step=step, loss=loss, accuracy=acc, lr=lr, wall_time=now)
        self._write_csv([row])

    def step(self, p: StepProgress) -> None:
        """Log one training step if it is on the thinned grid (or the epoch's last step)."""
        every = max(1, p.steps // STEP_POINTS)
        if p.step % every == 0 or p.step == p.steps:
            step = p.epoch * self.steps + p.step
            lr = lr_at(p.epoch, self.cfg)
            self._scalars("step", p.epoch + 1, step, p.loss, p.accuracy, lr)

    def epoch(self, result: EpochResult) -> None:
        """Log a finished (and saved) epoch, unless it is logged already."""
        if result.epoch not in self.logged:
            step = result.epoch * self.steps
            self._scalars("epoch", result.epoch, step, result.loss, result.accuracy, result.lr)
            self.logged.add(result.epoch)

    def test(self, epoch: int, accuracy: float) -> None:
        """Log the test accuracy after an epoch (before its epoch row: the CSV never claims more)."""
        now = time.time()
        if self.writer is not None:
            self.writer.add_scalar("test/accuracy", accuracy, epoch, walltime=now)
        row = dict(kind="test", epoch=epoch, step=epoch * self.steps, loss="", accuracy=accuracy)
        self._write_csv([{**row, "lr": lr_at(epoch - 1, self.cfg), "wall_time": now}])

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _event_writer(folder: Path, purge_step: int, log: Callable[[str], None]):
    """A TensorBoard SummaryWriter in folder, or None (said once) when tensorboard is missing.

    purge_step: TensorBoard hides what an interrupted earlier process logged from there on.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log(
            f"tensorboard is not installed: the run log is CSV only ({folder / CSV_NAME}); "
            "pip install tensorboard for event files"
        )
        return None
    return SummaryWriter(str(folder), purge_step=purge_step, flush_secs=10)
