"""Precise BatchNorm statistics wired into training, the card, the CLI and the twins."""

from __future__ import annotations

import pytest
import torch

from rotviz.cli.main import main
from rotviz.config import DataConfig, TrainConfig
from rotviz.nets.store import CheckpointStore
from rotviz.nets.twin import TWIN_NAMES, random_twin_of
from rotviz.training.pipeline import load_split, train_or_load

DATA = DataConfig("demo", max_images=48)
TRAIN = TrainConfig(epochs=1, batch_size=8, lr=2e-3)


@pytest.fixture(scope="module")
def pair_of_runs(tmp_path_factory):
    """The same recipe trained with and without precise BatchNorm statistics."""
    root = tmp_path_factory.mktemp("precise")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROTVIZ_CACHE", str(root / "cache"))
    try:
        on = train_or_load(DATA, TRAIN, CheckpointStore(root / "on"), "cpu", log=print)
        off = train_or_load(
            DATA, TRAIN, CheckpointStore(root / "off"), "cpu", log=print, precise_bn=0
        )
    finally:
        mp.undo()
    return root, on.checkpoint, off.checkpoint


def test_training_recomputes_batchnorm_statistics_and_records_them(pair_of_runs):
    _, on, off = pair_of_runs
    assert on.card.precise_bn and not off.card.precise_bn
    assert on.card.raw["precise_bn"]["n_images"] == len(load_split(DATA, "train")[1])
    state_on, state_off = on.model.state_dict(), off.model.state_dict()
    for name, value in state_on.items():
        if "running" in name:
            continue
        assert torch.equal(value, state_off[name]), name  # the weights are untouched
    assert any(not torch.equal(v, state_off[k]) for k, v in state_on.items() if "running_mean" in k)
    for card in (on.card, off.card):
        gap = card.train_accuracy
        assert gap["n_images"] > 0 and 0 <= gap["running_statistics"] <= 1
        assert card.test_accuracy("calibrated") is not None
    # after precise BN the eval-mode and batch-statistics accuracies agree within 10 points
    gap = on.card.train_accuracy
    assert abs(gap["running_statistics"] - gap["batch_statistics"]) <= 0.10
    assert gap["warning"] is None


def test_twins_by_name(pair_of_runs):
    root, on, _ = pair_of_runs
    mp = pytest.MonkeyPatch()
    mp.setenv("ROTVIZ_CACHE", str(root / "cache"))
    try:
        initial = random_twin_of(on, "initial", "cpu", DATA)
        calibrated = random_twin_of(on, "calibrated", "cpu", DATA)
    finally:
        mp.undo()
    for (k, a), b in zip(
        initial.state_dict().items(), calibrated.state_dict().values(), strict=True
    ):
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(a, b), k  # same untrained weights
    bn = [m for m in initial.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in bn)
    bn_cal = [m for m in calibrated.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in bn_cal)


def test_cli_evaluate_prints_both_twins_and_recalibrates_on_request(
    pair_of_runs, monkeypatch, capsys
):
    root, _, off = pair_of_runs
    monkeypatch.setenv("ROTVIZ_CACHE", str(root / "cache"))
    args = ["evaluate", "--dataset", "demo", "--max-images", "48", "--epochs", "1"]
    args += ["--batch-size", "8", "--lr", "2e-3", "--store", str(root / "off"), "--device", "cpu"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    for name in TWIN_NAMES.values():
        assert f"{name}: test accuracy" in out
    assert "training accuracy in eval mode" in out and "in memory only" not in err
    assert main([*args, "--precise-bn", "32"]) == 0
    _, err = capsys.readouterr()
    assert "recomputed over 32 training images" in err and "in memory only" in err
    reloaded = CheckpointStore(root / "off").load(off.name)
    assert not reloaded.card.precise_bn  # the stored checkpoint is unchanged


def test_probe_and_neuron_browser_take_either_twin(pair_of_runs, monkeypatch):
    from rotviz.nets.twin import trained_or_twin
    from rotviz.study.probe import network_key

    root, on, _ = pair_of_runs
    monkeypatch.setenv("ROTVIZ_CACHE", str(root / "cache"))
    assert network_key(on, "calibrated") != network_key(on, "initial")
    initial = trained_or_twin(on, "initial")
    calibrated = trained_or_twin(on, "calibrated")
    assert network_key(on, "calibrated", calibrated.calibration) == network_key(on, "calibrated")
    means = [
        [m.running_mean.abs().sum().item() for m in net.modules() if hasattr(m, "running_mean")]
        for net in (initial, calibrated)
    ]
    assert sum(means[0]) == 0 and sum(means[1]) > 0
