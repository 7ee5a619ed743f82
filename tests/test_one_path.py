"""One path per number: the app, the CLI and the study files agree exactly, for exactly the network
the user chose.

A study-recipe network and a shuffled-label one share a store; ``python -m rotviz study`` writes
its CSVs; the Metrics page, driven by AppTest, must show the same accuracy and goodness numbers
(to 1e-9) and never put the shuffled network beside the published figures. A network trained on
``--rotations 180,0`` must explain the right logit through the CLI and the app (Captum the oracle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import Saliency

from rotviz.attribution.saliency import SaliencyConfig
from rotviz.cli.main import main
from rotviz.config import DataConfig, TrainConfig
from rotviz.data.rotation import normalize
from rotviz.nets.store import CheckpointStore
from rotviz.nets.twin import random_twin_of
from rotviz.study.sanity import shuffled_config
from rotviz.training.pipeline import load_split, train_or_load

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
# A short run that learns (lr 2e-3, 2 epochs), scored at a scale-free threshold so that the
# numbers compared are not all 0 (at the study's absolute lambda an untrained twin scores 0).
STUDY_TOML = """
models = ["six_layer"]
[train]
epochs = 2
batch_size = 32
lr = 2e-3
seed = 0
[datasets.demo]
[goodness]
dataset = "demo"
neurons = "all"
method = "saliency"
aggregate = "none"
thresholds.rotation.six_layer = "pct:90"
thresholds.embedding.six_layer = "pct:90"
"""
NUMERIC = [
    "trained",
    "trained_low",
    "trained_high",
    "random",
    "random_low",
    "random_high",
    "diff",
    "diff_low",
    "diff_high",
    "p_wilcoxon",
    "n",
]


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """A store with the study's recipe on the demo (1 epoch) plus a newer shuffled-label network,
    and the CSVs ``python -m rotviz study`` writes from it."""
    root = tmp_path_factory.mktemp("one_path")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROTVIZ_CACHE", str(root / "cache"))
    store = root / "store"
    study = root / "demo.toml"
    study.write_text(STUDY_TOML)
    out = root / "tables"
    try:
        args = ["study", str(study), "--store", str(store), "--out", str(out), "--format", "csv"]
        assert main([*args, "--device", "cpu"]) == 0
        real = TrainConfig(epochs=2, batch_size=32, lr=2e-3)
        shuffled = train_or_load(
            DataConfig("demo"), shuffled_config(real), CheckpointStore(store), "cpu", log=print
        ).checkpoint
    finally:
        mp.undo()
    cards = {c.recipe.shuffle_labels: c for c in CheckpointStore(store).cards()}
    assert cards[True].name == shuffled.name and cards[False].recipe.is_study()
    return {"store": store, "cache": root / "cache", "out": out, "cards": cards}


def numbers(path: Path, **where: str) -> pd.Series:
    df = pd.read_csv(path)
    for k, v in where.items():
        df = df[df[k] == v]
    assert len(df) == 1, df
    return df.iloc[0]


def close(row: pd.Series, expected: pd.Series) -> None:
    for col in NUMERIC:
        assert float(row[col]) == pytest.approx(float(expected[col]), abs=1e-9, nan_ok=True), col


def test_metrics_page_equals_the_study_csvs(study_run, monkeypatch):
    from rotviz.app.summaries import accuracy_tables

    monkeypatch.setenv("ROTVIZ_STORE", str(study_run["store"]))
    monkeypatch.setenv("ROTVIZ_CACHE", str(study_run["cache"]))
    study_card, shuffled_card = study_run["cards"][False], study_run["cards"][True]
    acc_csv = numbers(study_run["out"] / "accuracy_numbers.csv", dataset="demo", model="six_layer")

    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/accuracy.py").run()
    assert not at.exception, [e.value for e in at.exception]

    # beside the published figures: the study recipe only, never the newer shuffled network
    beside, others = at.dataframe[0].value, at.dataframe[1].value
    row = beside[(beside["dataset"] == "demo") & (beside["model"] == "six_layer")].iloc[0]
    assert row["checkpoint"] == study_card.name
    # on screen with one decimal (a column with empty cells is text), exact in the table builder
    assert row["ours, trained (%)"] == f"{100 * acc_csv['trained']:.1f}"
    calibrated = row["ours, random twin, calibrated statistics (%)"]  # the study's default twin
    assert calibrated == f"{100 * acc_csv['random']:.1f}"
    built, _ = accuracy_tables(CheckpointStore(study_run["store"]).cards())
    built = built[(built["dataset"] == "demo") & (built["model"] == "six_layer")].iloc[0]
    assert built["ours, trained (%)"] == pytest.approx(100 * acc_csv["trained"], abs=1e-9)
    calibrated = built["ours, random twin, calibrated statistics (%)"]
    assert calibrated == pytest.approx(100 * acc_csv["random"], abs=1e-9)
    assert acc_csv["trained_low"] < acc_csv["trained_high"]  # it learned: intervals, not a constant
    assert row["precise BN"] == "yes"
    assert not (beside["checkpoint"] == shuffled_card.name).any()
    shuffled_row = others[others["checkpoint"] == shuffled_card.name].iloc[0]
    assert shuffled_row["labels"] == "shuffled"
    assert "shuffled labels" in shuffled_row["why not beside the study"]
    lfw = beside[(beside["dataset"] == "lfw") & (beside["model"] == "six_layer")].iloc[0]
    assert lfw["published, trained (%)"] == "98.0"  # the published column is the study's

    # accuracy with intervals of the chosen network: rotviz.nets.evaluate.accuracy_comparison
    at.switch_page("pages/probe.py").run()
    at.selectbox(key="probe_ckpt").set_value(str(study_card.path)).run()
    assert not at.exception
    ivs = next(d.value for d in at.dataframe if "trained_low" in d.value.columns)
    close(ivs.iloc[0], acc_csv)

    # goodness: the study's protocol (saliency, all neurons, no aggregation, the study's lambda)
    at.switch_page("pages/goodness.py").run()
    at.multiselect(key="good_ckpts").set_value([str(study_card.path)]).run()
    at.selectbox(key="good_method").set_value("saliency")
    at.selectbox(key="good_aggregate").set_value("none")
    at.selectbox(key="good_mode").set_value("percentile").run()
    at.slider(key="good_pct").set_value(90.0).run()
    at.button(key="good_compute").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    good = next(d.value for d in at.dataframe if "published: comparable?" in d.value.columns)
    for layer in ("rotation", "embedding"):
        expected = numbers(study_run["out"] / f"goodness_{layer}_numbers.csv", model="six_layer")
        got = good[good["layer"] == layer].iloc[0]
        assert got["threshold"] == expected["threshold"]
        close(got, expected)
        assert 0 < expected["trained"] < 1 and expected["n"] == 9  # a real figure, not all 0
        # the study measured COCO (and at its absolute lambda): the cell says why no figure
        assert got["published mean Q, trained (%)"] == "—"  # no None on screen
        assert got["published: comparable?"] == "not comparable: the study measured COCO, not demo"


# --------------------------------------------------------------------------- rotation subsets


@pytest.fixture(scope="module")
def half_turn(tmp_path_factory):
    """A six-layer net trained on --rotations 180,0 (label 0 means 180 degrees, label 1 upright)."""
    root = tmp_path_factory.mktemp("half_turn")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROTVIZ_CACHE", str(root / "cache"))
    store, out = root / "store", root / "sal"
    common = ["--dataset", "demo", "--max-images", "12", "--epochs", "1", "--batch-size", "8"]
    common += ["--rotations", "180,0", "--store", str(store), "--device", "cpu"]
    try:
        args = ["saliency", *common, "--neurons", "true", "--aggregate", "none"]
        args += ["--threshold", "pct:90", "--out", str(out), "--save-maps"]
        assert main(args) == 0
        mean_out = root / "sal_mean"
        args = ["saliency", *common, "--neurons", "true", "--aggregate", "mean"]
        args += ["--threshold", "pct:90", "--out", str(mean_out), "--save-maps"]
        assert main(args) == 0  # no false "not trained on 180 degrees"
        (card,) = CheckpointStore(store).cards()
        ckpt = CheckpointStore(store).load(card.name)
        _, test = load_split(DataConfig("demo", max_images=12), "test")
    finally:
        mp.undo()
    return {"ckpt": ckpt, "test": test, "out": out, "mean_out": mean_out, "root": root}


def captum_map(model: torch.nn.Module, image: np.ndarray, k: int, target: int) -> np.ndarray:
    """Captum Saliency(abs=True) of one logit on the image turned k quarter turns, max over
    channels, turned back to the upright frame."""
    x = torch.rot90(normalize(torch.from_numpy(image.copy())[None]), k, dims=(-2, -1))
    attr = Saliency(model.eval()).attribute(x.requires_grad_(True), target=target, abs=True)
    return torch.rot90(attr.amax(1), -k, dims=(-2, -1))[0].detach().numpy()


def assert_same_map(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float32 noise (channels-last and batched convolutions sum in another order;
    float64 equality of the fast path with Captum is tested in test_saliency.py)."""
    assert relative_error(got, expected) < 1e-2


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


def test_true_rotation_explains_the_right_logit_through_the_cli(half_turn):
    ckpt, test = half_turn["ckpt"], half_turn["test"]
    assert ckpt.rotations == (2, 0) and ckpt.model.rotations == (2, 0)
    maps = np.load(half_turn["out"] / "maps.npz")
    assert maps["trained"].shape == (len(test), 128, 128)
    for i in range(len(test)):
        upright = captum_map(ckpt.model, test.images[i], 0, target=1)  # label 1 = 0 degrees
        assert_same_map(maps["trained"][i], upright)
        wrong = captum_map(ckpt.model, test.images[i], 0, target=0)
        assert relative_error(maps["trained"][i], wrong) > 0.1  # not the other logit
    mean = np.load(half_turn["mean_out"] / "maps.npz")["trained"]
    for i in range(len(test)):
        expected = (
            captum_map(ckpt.model, test.images[i], 0, target=1)
            + captum_map(ckpt.model, test.images[i], 2, target=0)  # the 180-degree copy
        ) / 2
        assert_same_map(mean[i], expected)


def test_true_rotation_explains_the_right_logit_through_the_app(half_turn, monkeypatch):
    from rotviz.app import cached

    ckpt, test = half_turn["ckpt"], half_turn["test"]
    pair = cached.ModelPair(ckpt, random_twin_of(ckpt, "initial"))
    sal = SaliencyConfig(neurons="true", aggregate="none")
    for i in range(3):
        trained, random = cached.compute_maps(pair, test.images[i], sal)
        assert_same_map(trained, captum_map(ckpt.model, test.images[i], 0, 1))
        assert_same_map(random, captum_map(pair.random, test.images[i], 0, 1))

    monkeypatch.setenv("ROTVIZ_STORE", str(half_turn["root"] / "store"))
    monkeypatch.setenv("ROTVIZ_CACHE", str(half_turn["root"] / "cache"))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/saliency.py").run()
    at.selectbox(key="sal-neurons").set_value("true").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.metric[0].value.endswith("%")
