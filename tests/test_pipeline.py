"""The store seen from the CLI: cache hits, resume after a killed run, corrupt files, the lock."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rotviz.config import DataConfig, TrainConfig
from rotviz.nets.store import CheckpointStore
from rotviz.training.pipeline import train_or_load

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """24 real photo crops from skimage.data, as JPEG files in a folder dataset."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    n = 0
    for p, img in enumerate(photos):
        h, w = img.shape[:2]
        for i in range(6):
            y, x = (i * h) // 12, (i * w) // 14
            crop = img[y : y + h // 2, x : x + w // 2]
            Image.fromarray(crop).save(root / f"p{p}_{i}.jpg", quality=90)
            n += 1
    return root


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "rotviz", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def train_args(root: Path, store: Path, epochs: int) -> list[str]:
    return [
        "train",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--epochs",
        str(epochs),
        "--batch-size",
        "4",
        "--store",
        str(store),
    ]


def test_second_request_is_served_from_the_store(photo_folder, tmp_path):
    first = run_cli(*train_args(photo_folder, tmp_path, 1))
    assert first.returncode == 0, first.stderr
    assert "training six_layer" in first.stderr
    # stderr is a pipe: the epoch's line, no progress bar (progress lines: tests/test_runlog.py)
    assert "epoch 1/1: loss" in first.stderr and "loss=" not in first.stderr
    second = run_cli(*train_args(photo_folder, tmp_path, 1))
    assert second.returncode == 0
    assert "served from the store, no training" in second.stderr
    assert "training six_layer" not in second.stderr
    name = first.stdout.split(":")[0]
    assert name == second.stdout.split(":")[0]
    listing = run_cli("checkpoints", "--store", str(tmp_path))
    assert name in listing.stdout and "six_layer" in listing.stdout


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_killed_run_resumes_from_its_last_epoch_and_ends_like_an_uninterrupted_one(
    photo_folder, tmp_path, amp
):
    """Bit-exact in either training precision: the resumed weights equal a clean run's."""
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [*train_args(photo_folder, store, 6), "--amp", amp]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rotviz", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    partial = None
    while time.monotonic() < deadline and proc.poll() is None:
        cards = list(store.glob("*.partial.json"))
        if cards and json.loads(cards[0].read_text())["epochs_done"] >= 2:
            partial = cards[0]
            break
        time.sleep(0.05)
    assert partial is not None, "the run finished or stalled before a partial checkpoint appeared"
    proc.kill()
    proc.wait()
    done_before = json.loads(partial.read_text())["epochs_done"]
    assert done_before < 6
    assert not list(store.glob("*.tmp"))  # no torn file left behind

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and f"after epoch {done_before} of 6" in resumed.stderr
    resumed_card = CheckpointStore(store).cards()[0].raw
    assert resumed_card["epochs_done"] == 6 and len(resumed_card["history"]) == 6

    clean = tmp_path / "clean"
    assert run_cli(*train_args(photo_folder, clean, 6), "--amp", amp).returncode == 0
    assert resumed_card["precision"] == {"off": "float32", "bf16": "bfloat16"}[amp]
    a = CheckpointStore(store).load(resumed_card["name"]).model.state_dict()
    b = CheckpointStore(clean).load(resumed_card["name"]).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_checkpoint_is_retrained(photo_folder, tmp_path):
    data = DataConfig("folder", root=str(photo_folder))
    train = TrainConfig(epochs=1, batch_size=4)
    store = CheckpointStore(tmp_path)
    first = train_or_load(data, train, store, "cpu", log=lambda m: None)
    first.checkpoint.path.write_bytes(b"\x00" * 100)
    logs = []
    with pytest.warns(UserWarning, match="corrupt"):
        again = train_or_load(data, train, store, "cpu", log=logs.append)
    assert not again.from_store
    assert any("training" in m for m in logs)
    assert (tmp_path / (first.checkpoint.path.name + ".corrupt")).exists()


def test_two_processes_asking_at_once_train_once(photo_folder, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "rotviz", *train_args(photo_folder, tmp_path, 3)]
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    stderr = "".join(err for _, err in outs)
    assert stderr.count("training six_layer") == 1
    assert "served from the store" in stderr
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_evaluate_writes_json_with_confusion(photo_folder, tmp_path):
    out = tmp_path / "acc.json"
    res = run_cli("evaluate", *train_args(photo_folder, tmp_path, 1)[1:], "--json", str(out))
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert result["twin_calibration"]["calibrated"]["own"] is True
    for who in ("trained", "initial", "calibrated"):
        conf = np.array(result[who]["confusion"])
        assert conf.shape == (4, 4)
        assert conf.sum() == 4 * result["n_test_images"]
        assert abs(np.trace(conf) / conf.sum() - result[who]["accuracy"]) < 1e-6
    assert "confusion" in res.stdout


def test_bad_inputs_give_one_clear_line(tmp_path):
    res = run_cli("train", "--dataset", "lfw", "--root", str(tmp_path / "nope"))
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and "Traceback" not in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli("train", "--dataset", "folder", "--root", str(empty))
    assert res.returncode == 2 and "no images" in res.stderr
    res = run_cli("train", "--dataset", "folder", "--root", str(empty), "--rotations", "0,45")
    assert res.returncode == 2 and "45" in res.stderr
