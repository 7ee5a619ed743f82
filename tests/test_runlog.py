"""Run logs: TensorBoard event files and a CSV beside the checkpoint, each epoch once across a resume."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from rotviz.cli.main import step_progress_bar
from rotviz.config import DataConfig, TrainConfig
from rotviz.nets.store import CheckpointStore
from rotviz.training.loop import EpochResult, StepProgress, TrainState
from rotviz.training.pipeline import train_or_load
from rotviz.training.runlog import EVENTS_PREFIX, RunLog, read_rows, run_dir

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
TRAIN = TrainConfig(epochs=EPOCHS, batch_size=4)


@pytest.fixture()
def small_data(tmp_path, real_images) -> DataConfig:
    """16 real photos (and their mirror images) in a folder, trained at 32 x 32: a fast run."""
    root = tmp_path / "photos"
    root.mkdir()
    for i, img in enumerate(real_images):
        hwc = img.transpose(1, 2, 0)
        Image.fromarray(hwc).save(root / f"p{i}.png")
        Image.fromarray(hwc[:, ::-1].copy()).save(root / f"m{i}.png")
    return DataConfig("folder", root=str(root), image_size=32)


class Interrupted(Exception):
    pass


def interrupt_at(epoch: int, step: int):
    def on_step(p: StepProgress) -> None:
        if (p.epoch, p.step) == (epoch, step):
            raise Interrupted

    return on_step


def scalar_events(folder) -> list[tuple[str, int, float]]:
    """Every (tag, step, value) in the folder's event files, in file order (tensorboard's reader)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = []
    for path in sorted(folder.glob(EVENTS_PREFIX + "*")):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                out.append((v.tag, event.step, v.tensor.float_val[0]))
    return out


def test_interrupted_and_resumed_run_logs_every_epoch_once(tmp_path, small_data):
    store = CheckpointStore(tmp_path / "store")
    with pytest.raises(Interrupted):  # dies in the middle of epoch 2, after epoch 1 was saved
        train_or_load(
            small_data, TRAIN, store, "cpu", on_step=interrupt_at(1, 2), log=lambda _: None
        )
    done = train_or_load(small_data, TRAIN, store, "cpu", log=lambda _: None).checkpoint
    steps = -(-done.card.n_train_images // TRAIN.batch_size)
    assert store.cards()[0].name == done.card.name  # the runs folder does not disturb it
    folder = run_dir(store.root, done.card.name)
    history = done.card.raw["history"]

    rows = read_rows(folder)
    assert [int(r["epoch"]) for r in rows if r["kind"] == "epoch"] == [1, 2, 3]
    assert [float(r["loss"]) for r in rows if r["kind"] == "epoch"] == pytest.approx(
        [h["loss"] for h in history]
    )
    step_rows = [int(r["step"]) for r in rows if r["kind"] == "step"]
    assert step_rows == list(range(1, EPOCHS * steps + 1))

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list(folder.glob(EVENTS_PREFIX + "*"))) == 2  # the first process and the resumed one
    events = scalar_events(folder)
    for tag in ("loss", "accuracy", "lr"):
        logged = [(step, value) for t, step, value in events if t == f"epoch/{tag}"]
        assert [s for s, _ in logged] == list(range(1, EPOCHS + 1)), tag
        assert [v for _, v in logged] == pytest.approx([h[tag] for h in history]), tag
    # steps: the interrupted epoch's are on disk twice; TensorBoard's purge shows them once
    acc = EventAccumulator(str(folder))
    acc.Reload()
    assert [e.step for e in acc.Scalars("step/loss")] == list(range(1, EPOCHS * steps + 1))
    assert [e.step for e in acc.Scalars("epoch/loss")] == [1, 2, 3]


def test_the_test_curve_logs_each_epoch_once_and_ends_at_the_cards_accuracy(tmp_path, small_data):
    """--test-curve: the test split's eval-mode accuracy after every epoch, across a resume; with
    precise BN off the last point is the model the card evaluates, so the two agree."""
    store = CheckpointStore(tmp_path / "store")
    kw = dict(log=lambda _: None, precise_bn=0, test_curve=True)
    with pytest.raises(Interrupted):
        train_or_load(small_data, TRAIN, store, "cpu", on_step=interrupt_at(1, 2), **kw)
    done = train_or_load(small_data, TRAIN, store, "cpu", **kw).checkpoint
    folder = run_dir(store.root, done.card.name)
    tests = [r for r in read_rows(folder) if r["kind"] == "test"]
    assert [int(r["epoch"]) for r in tests] == [1, 2, 3]
    assert float(tests[-1]["accuracy"]) == pytest.approx(done.card.test_accuracy())
    if importlib.util.find_spec("tensorboard") is not None:
        events = [(step, v) for tag, step, v in scalar_events(folder) if tag == "test/accuracy"]
        assert sorted({step for step, _ in events}) == [1, 2, 3]


def test_epochs_saved_but_not_logged_are_written_from_the_history(tmp_path):
    """A process killed between saving an epoch and logging it: the resumed log catches up once."""
    cfg = TrainConfig(epochs=4)
    history = [EpochResult(e, 1.0 / e, 0.25 * e, 1e-4) for e in (1, 2)]
    folder = tmp_path / "run"
    first = RunLog(folder, cfg, TrainState(1, None, history[:1]), 10, log=lambda _: None)
    first.close()
    resumed = RunLog(folder, cfg, TrainState(2, None, history), 10, log=lambda _: None)
    resumed.epoch(history[1])  # logged already by the catch-up: not again
    resumed.epoch(EpochResult(3, 0.3, 0.7, 1e-4))
    resumed.close()
    epochs = [int(r["epoch"]) for r in read_rows(folder) if r["kind"] == "epoch"]
    assert epochs == [1, 2, 3]
    if importlib.util.find_spec("tensorboard"):
        counts = Counter(step for tag, step, _ in scalar_events(folder) if tag == "epoch/loss")
        assert counts == {1: 1, 2: 1, 3: 1}


def test_step_points_are_thinned(tmp_path):
    log = RunLog(tmp_path / "run", TrainConfig(epochs=1), TrainState(), 1000, log=lambda _: None)
    for step in range(1, 1001):
        log.step(StepProgress(0, 1, step, 1000, 1.0, 0.5))
    log.close()
    steps = [int(r["step"]) for r in read_rows(tmp_path / "run")]
    assert steps == list(range(50, 1001, 50))


def test_training_into_a_pipe_prints_progress_lines(small_data, tmp_path):
    """stderr is no terminal: steady progress lines (every step here), no tqdm bar."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ROTVIZ_PROGRESS_EVERY_S": "0",
        "ROTVIZ_CACHE": str(tmp_path / "cache"),
    }
    args = ["train", "--dataset", "folder", "--root", small_data.root, "--epochs", "1"]
    args += [
        "--max-images",
        "6",
        "--batch-size",
        "2",
        "--store",
        str(tmp_path / "store"),
        "--device",
        "cpu",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "rotviz", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = re.findall(
        r"\[rotviz\] epoch 1/1: step (\d+)/(\d+) \(about (\d+) images\), [\d.]+ images/s, "
        r"\d+:\d\d left in the epoch, \d+:\d\d in the run; loss [\d.]+",
        done.stderr,
    )
    steps = int(lines[0][1])  # 6 training images, 2 per step
    assert [int(s) for s, _, _ in lines] == list(range(2, steps + 1))  # from the 2nd step on
    assert [int(n) for _, _, n in lines] == [2 * s for s in range(2, steps + 1)]
    assert "\r" not in done.stderr  # no progress bar in a log


def test_progress_lines_keep_their_pace():
    """Steps every 10 s of a fake clock, a line every 30 s; speed and time left from the clock."""
    clock = iter(range(0, 1000, 10))
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROTVIZ_PROGRESS_EVERY_S", "30")
        on_step = step_progress_bar(batch_size=4, stream=out, clock=lambda: next(clock))
        for epoch in range(2):
            for step in range(1, 11):
                on_step(StepProgress(epoch, 2, step, 10, 1.0, 0.5))
    lines = out.getvalue().splitlines()
    assert len(lines) == 6  # 19 steps after the first, 190 s: one line per 30 s
    assert lines[0].startswith("[rotviz] epoch 1/2: step 4/10 (about 16 images), 0.4 images/s")
    assert "1:00 left in the epoch, 2:40 in the run" in lines[0]
