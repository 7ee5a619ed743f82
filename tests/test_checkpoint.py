"""The typed card and recipe, the published figures' protocol, and the runtime resolved once."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rotviz.config import DataConfig, TrainConfig
from rotviz.nets.checkpoint import Card, Recipe
from rotviz.nets.store import new_card
from rotviz.runtime import RunConfig, Runtime, as_runtime
from rotviz.scores.metrics import Absolute, Percentile
from rotviz.scores.published import goodness_protocol_mismatch, published_accuracy


def card_of(data: DataConfig, train: TrainConfig, accuracy: float = 0.9) -> Card:
    raw = new_card(data, train, "k" * 16, "fingerprint")
    raw["metrics"] = {"test": {"trained": {"accuracy": accuracy}, "random": {"accuracy": 0.25}}}
    raw["saved"] = "2026-12-03T10:00:00"
    return Card(raw)


def test_recipe_says_when_a_network_is_not_the_studys():
    study = Recipe.of(DataConfig("coco"), TrainConfig(model="six_layer", epochs=30))
    assert study.is_study() and study.deviations() == []
    cases = {
        "shuffled labels": Recipe.of(DataConfig("coco"), TrainConfig(shuffle_labels=True)),
        "rotations 180,0": Recipe.of(DataConfig("coco"), TrainConfig(rotations=(2, 0))),
        "--max-images 16": Recipe.of(DataConfig("coco", max_images=16), TrainConfig()),
        "preprocessing center-crop": Recipe.of(
            DataConfig("coco", resize="center-crop"), TrainConfig()
        ),
    }
    for words, recipe in cases.items():
        assert not recipe.is_study()
        assert any(words in d for d in recipe.deviations()), recipe.deviations()
    assert "shuffled labels" in cases["shuffled labels"].describe()
    assert cases["rotations 180,0"].columns()["rotations (°)"] == "180,0"


def test_card_accessors_read_the_json_card():
    data, train = DataConfig("demo"), TrainConfig(rotations=(2, 0), seed=3, epochs=2)
    card = card_of(data, train, accuracy=0.75)
    assert card.train_config == train and card.data_config == data
    assert card.rotations == (2, 0) and card.recipe.seed == 3
    assert card.test_accuracy("trained") == 0.75 and card.test_accuracy("initial") == 0.25
    assert "0.75" not in card.label() and "75.0%" in card.label()
    assert Card({**card.raw, "metrics": {}}).test_accuracy() is None


def test_published_goodness_only_under_the_studys_protocol():
    same = dict(layer="rotation", method="saliency", aggregate="none", neurons="all")
    assert goodness_protocol_mismatch("coco", "six_layer", threshold=Absolute(8e-4), **same) is None
    why = goodness_protocol_mismatch(
        "coco", "six_layer", "rotation", "saliency", "mean", "all", Absolute(8e-4)
    )
    assert why == "aggregation mean (the study: none)"
    why = goodness_protocol_mismatch(
        "coco", "six_layer", "rotation", "gradcam", "none", "predicted", Percentile(95)
    )
    assert "method gradcam" in why and "neurons predicted" in why and "pct:95" in why
    assert "not demo" in goodness_protocol_mismatch(
        "demo", "six_layer", threshold=Absolute(8e-4), **same
    )
    assert published_accuracy("lfw", "six_layer") == 98.0
    assert published_accuracy("demo", "six_layer") is None


def test_accuracy_tables_keep_other_recipes_apart():
    from rotviz.app.summaries import accuracy_tables

    study = card_of(DataConfig("lfw"), TrainConfig(), accuracy=0.97)
    shuffled = card_of(DataConfig("lfw"), TrainConfig(shuffle_labels=True), accuracy=0.26)
    shuffled.raw["saved"] = "2026-12-04T10:00:00"  # newer than the study network
    subset = card_of(DataConfig("lfw"), TrainConfig(rotations=(0, 2)), accuracy=0.99)
    beside, others = accuracy_tables([shuffled, subset, study])  # newest first, as the store
    row = beside[(beside["dataset"] == "lfw") & (beside["model"] == "six_layer")].iloc[0]
    assert row["ours, trained (%)"] == pytest.approx(97.0)
    assert row["published, trained (%)"] == 98.0
    assert set(others["labels"]) == {"shuffled", "real"}
    assert others.set_index("rotations (°)").loc["0,180", "chance (%)"] == 50.0


def test_runtime_is_resolved_once_and_passed_as_it_is():
    rt = as_runtime(RunConfig(device="cpu", amp="bf16"))
    assert isinstance(rt, Runtime) and rt.device == torch.device("cpu")
    assert rt.amp_dtype is torch.bfloat16 and as_runtime(rt) is rt
    assert as_runtime("cpu").amp_dtype is None
    assert rt.card()["amp_used"] == "bfloat16"
    assert dataclasses.replace(rt.config, compile=True).compile


def test_the_probe_command_hands_amp_and_device_down(monkeypatch):
    """--amp and --device travel as one Runtime to the probe (they were dropped on the way)."""
    import rotviz.study.runs
    from rotviz.cli.main import main

    seen = {}

    class Stop(Exception):
        pass

    def fake_train_or_load(data, cfg, store, runtime, log=print):
        seen["train"] = runtime
        raise Stop

    monkeypatch.setattr(rotviz.study.runs, "train_or_load", fake_train_or_load)
    with pytest.raises(Stop):
        main(["probe", "--dataset", "demo", "--device", "cpu", "--amp", "bf16", "--out", "x"])
    assert isinstance(seen["train"], Runtime) and seen["train"].amp_dtype is torch.bfloat16


def test_loading_a_checkpoint_does_not_import_the_training_loop(tmp_path):
    """The store, the card and the network load without rotviz.training.loop, the CLI or the app."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "from rotviz.nets.store import load_checkpoint\n"
        "ckpt = load_checkpoint('demo-six_layer-e100-2dd201f2a42d7756')\n"
        "assert ckpt.rotations == (0, 1, 2, 3)\n"
        "loaded = [m for m in ('rotviz.training.loop', 'rotviz.cli.main', 'streamlit') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
