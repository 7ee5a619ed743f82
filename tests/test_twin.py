"""The random twin: one maker, one vocabulary, one rule for its calibration images, one default.

Library, CLI and app make the twin through rotviz.nets.twin.random_twin_of and say which images
calibrated it; these tests check the maker, the rule (own images, else the data explained with
a warning), the cards' old names, and that library, CLI and app give the same twin figures.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from rotviz.attribution.gradients import saliency_maps
from rotviz.attribution.maps import checkpoint_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.cli.main import main
from rotviz.config import DataConfig, TrainConfig
from rotviz.data.rotation import normalize
from rotviz.data.splits import load_split
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Card, Checkpoint
from rotviz.nets.models import build_model
from rotviz.nets.store import SHIPPED_STORE, CheckpointStore
from rotviz.nets.twin import (
    DEFAULT_TWIN,
    TWIN_NAMES,
    TWINS,
    TwinCalibration,
    random_twin_of,
    twin_calibration,
)
from rotviz.scores.metrics import Percentile
from rotviz.study.goodness import goodness_run
from rotviz.training.pipeline import train_or_load

CPU = torch.device("cpu")


def test_twins_keep_the_initial_weights_and_differ_only_in_statistics(real_images, demo_store):
    *_, ckpt = demo_store
    seed = ckpt.train_config.seed
    initial = random_twin_of(ckpt, "initial", CPU)
    calibrated = random_twin_of(ckpt, "calibrated", CPU, train_images=real_images)
    assert TWINS == ("initial", "calibrated") and DEFAULT_TWIN == "calibrated"
    assert not calibrated.training and not initial.training
    assert TWIN_NAMES["calibrated"] == "random (calibrated statistics)"
    assert calibrated.calibration.n_images == len(real_images)
    fresh = build_model("six_layer", 4, seed=seed)
    for (k, p), q, r in zip(
        fresh.named_parameters(), initial.parameters(), calibrated.parameters(), strict=True
    ):
        assert torch.equal(p, q) and torch.equal(p, r), k
    bn = initial.backbone[0][1]
    assert torch.equal(bn.running_mean, torch.zeros(16)) and torch.equal(
        bn.running_var, torch.ones(16)
    )
    assert not torch.equal(calibrated.backbone[0][1].running_var, torch.ones(16))
    with pytest.raises(RotvizError, match="initial, calibrated"):
        random_twin_of(ckpt, "fresh", CPU)
    with pytest.raises(RotvizError, match="initial, calibrated"):
        random_twin_of(ckpt, "random_calibrated", CPU)  # the old card name is no twin name


def demo_photos_with_boxes() -> torch.Tensor:
    """The demo's scene photos (the images with boxes, both splits), normalised (N, 3, 128, 128)."""
    photos = []
    for split in ("train", "test"):
        _, prepared = load_split(DataConfig("demo"), split)
        keep = [len(b) > 0 for b in prepared.boxes]
        photos.append(np.asarray(prepared.images)[keep])
    return normalize(torch.from_numpy(np.concatenate(photos)))


def test_calibrated_twin_has_the_trained_gradient_scale_on_the_demo_photos():
    """The shipped demo six-layer net: initial twin >= 100x smaller gradients, calibrated < 100x."""
    store = CheckpointStore(SHIPPED_STORE)
    (card,) = [c for c in store.cards() if c.dataset == "demo"]
    ckpt = store.load(card.name)
    _, train_split = load_split(DataConfig("demo"), "train")
    photos = demo_photos_with_boxes()
    assert len(photos) >= 5
    largest = {"trained": float(saliency_maps(ckpt.model, photos).max())}
    for kind in TWINS:
        twin = random_twin_of(ckpt, kind, CPU, train_images=train_split.images)
        largest[kind] = float(saliency_maps(twin, photos).max())
    assert largest["trained"] / largest["initial"] >= 100, largest  # measured 7.5e3
    assert largest["trained"] / largest["calibrated"] < 100, largest  # measured 3.7


def test_random_twin_equals_fresh_build_not_the_trained_weights(demo_store):
    *_, ckpt = demo_store
    model = ckpt.model
    twin = random_twin_of(ckpt, "initial", CPU)
    seed = ckpt.train_config.seed
    assert not torch.equal(twin.head.weight, model.head.weight)
    assert torch.equal(twin.head.weight, build_model("six_layer", 4, seed).head.weight)
    assert not twin.training


def moved_card(ckpt: Checkpoint, **data_changes) -> Checkpoint:
    """ckpt with its card saying it was trained on other data (its weights unchanged)."""
    raw = dict(ckpt.card.raw)
    raw["data_config"] = {**raw["data_config"], **data_changes}
    raw["dataset"] = raw["data_config"]["dataset"]
    return Checkpoint(ckpt.model, Card(raw), ckpt.path)


def test_calibration_rule_own_images_else_the_data_explained_with_a_warning(demo_store, tmp_path):
    *_, ckpt = demo_store
    own = random_twin_of(ckpt, "calibrated", CPU).calibration
    n_train = len(load_split(DataConfig("demo"), "train")[1])
    assert own == TwinCalibration("calibrated", "demo", "demo", min(n_train, 2000), True)
    assert (
        own.describe()
        == f"calibrated on {own.n_images:,} training images of demo (the network's own)"
    )
    assert random_twin_of(ckpt, "initial", CPU).calibration.describe().startswith("initial")

    elsewhere = moved_card(ckpt, dataset="folder", root=str(tmp_path / "gone"))
    with pytest.warns(UserWarning, match="not on this machine"):
        twin = random_twin_of(elsewhere, "calibrated", CPU, DataConfig("demo"))
    assert twin.calibration.dataset == "demo" and not twin.calibration.own
    assert "(folder) are not on this machine" in twin.calibration.describe()
    # the same statistics as the twin calibrated on the demo as its own images
    for a, b in zip(
        twin.state_dict().values(),
        random_twin_of(ckpt, "calibrated", CPU).state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    with pytest.raises(RotvizError, match="needs the network's training images"):
        random_twin_of(elsewhere, "calibrated", CPU)  # no data explained to fall back on
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the initial twin needs no images: no warning
        assert twin_calibration(random_twin_of(elsewhere, "initial", CPU)).twin == "initial"
    assert twin_calibration(build_model("six_layer", 4, 0)) is None


def test_cards_read_the_old_twin_names_and_new_ones_write_the_new(demo_store):
    *_, ckpt = demo_store
    test = ckpt.card.raw["metrics"]["test"]
    assert set(test) == {"trained", "initial", "calibrated"}  # a card written now
    assert ckpt.card.raw["twin_calibration"]["own"] is True
    old = dict(ckpt.card.raw)
    old["metrics"] = {
        "test": {
            "trained": {"accuracy": 0.9},
            "random": {"accuracy": 0.25},
            "random_calibrated": {"accuracy": 0.3},
        }
    }
    card = Card(old)
    assert card.test_accuracy("initial") == 0.25 and card.test_accuracy("calibrated") == 0.3
    with pytest.raises(RotvizError, match="trained, initial, calibrated"):
        card.test_accuracy("random")
    shipped = CheckpointStore(SHIPPED_STORE)
    for c in shipped.cards():  # the shipped cards keep their old names and are still read
        assert c.test_accuracy("initial") is not None, c.name


def test_library_functions_default_to_the_calibrated_twin(demo_store):
    *_, ckpt = demo_store
    _, test = load_split(DataConfig("demo"), "test")
    sal, thr = SaliencyConfig(aggregate="none"), Percentile(90)
    run = goodness_run(ckpt, test, sal, thr, CPU)
    assert run.summary.twin == TWIN_NAMES["calibrated"]
    assert run.summary.twin_calibration.endswith("of demo (the network's own)")
    few = np.asarray(test.images[:3])
    for kind, same in (("calibrated", True), ("initial", False)):
        twin = random_twin_of(ckpt, kind, CPU)
        _, maps = checkpoint_maps(ckpt, few, sal, CPU, twin=twin)
        assert np.allclose(maps, run.maps_random[:3], rtol=1e-5, atol=1e-12) is same, kind
    _, default = checkpoint_maps(ckpt, few, sal, CPU)
    np.testing.assert_allclose(default, run.maps_random[:3], rtol=1e-5, atol=1e-12)


# --------------------------------------------------------------------------- CLI


def store_args(demo_store) -> list[str]:
    store, _, train, _ = demo_store
    return [
        "--store",
        str(store.root),
        "--epochs",
        str(train.epochs),
        "--batch-size",
        str(train.batch_size),
        "--device",
        "cpu",
    ]


def test_neurons_twin_flag_picks_the_twin_of_the_sheets(demo_store, tmp_path, capsys):
    tables = {}
    for twin in TWINS:
        out = tmp_path / twin
        argv = ["neurons", *store_args(demo_store), "--out", str(out), "--twin", twin]
        assert main([*argv, "--top", "2", "--limit", "1", "--layer", "rotation"]) == 0
        assert f"random twin ({twin}): {twin}" in capsys.readouterr().err
        tables[twin] = pd.read_csv(out / "neurons.csv", keep_default_na=False)
    for twin, table in tables.items():
        assert set(table["network"]) == {"trained", twin}
        rows = table[table.network == twin]
        assert rows["twin_calibration"].str.startswith(twin).all()
    a, b = (t[t.network != "trained"] for t in tables.values())
    assert not np.allclose(a["activation"], b["activation"])  # different twins, different sheets
    trained = [t[t.network == "trained"].drop(columns="twin_calibration") for t in tables.values()]
    pd.testing.assert_frame_equal(*trained)


@pytest.fixture(scope="module")
def folder_network(tmp_path_factory, real_images):
    """A six-layer net trained 1 epoch on an image folder (not the demo), in its own store."""
    root = tmp_path_factory.mktemp("folder_net")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROTVIZ_CACHE", str(root / "cache"))
    images = root / "images"
    images.mkdir()
    for i, img in enumerate(np.concatenate([real_images, real_images[:, :, ::-1]])):
        Image.fromarray(img.transpose(1, 2, 0).copy()).save(images / f"{i:02d}.png")
    data = DataConfig("folder", root=str(images), test_fraction=0.25)
    store = CheckpointStore(root / "store")
    ckpt = train_or_load(
        data, TrainConfig(epochs=1, batch_size=8), store, "cpu", log=lambda m: None
    )
    yield root, images, store, ckpt.checkpoint
    mp.undo()


def test_cross_dataset_sanity_says_which_images_calibrated_the_twin(
    folder_network, tmp_path, capsys, monkeypatch
):
    root, images, store, ckpt = folder_network
    monkeypatch.setenv("ROTVIZ_CACHE", str(root / "cache"))
    argv = ["sanity", "--checkpoint", ckpt.name, "--dataset", "demo", "--store", str(store.root)]
    argv += ["--images", "2", "--no-data-randomisation", "--figures", "0", "--device", "cpu"]

    def run(out) -> tuple[str, pd.DataFrame]:
        assert main([*argv, "--out", str(out)]) == 0
        err = capsys.readouterr().err
        numbers = pd.read_csv(out / "sanity_neurons0.csv")
        calibrated = numbers[numbers.comparison.str.contains("calibrated")]
        return err, calibrated["twin_calibration"].unique().tolist()

    n_train = len(load_split(ckpt.data_config, "train")[1])
    own = f"calibrated on {n_train:,} training images of folder (the network's own)"
    err, said = run(tmp_path / "own")
    assert own in err and said == [own]
    shutil.rmtree(images)  # the network's own training images are gone: the demo's, said so
    with pytest.warns(UserWarning, match="training images of .* are not on this machine"):
        err, said = run(tmp_path / "gone")
    assert len(said) == 1 and "training images of demo" in said[0]
    assert "the network's own training images (folder) are not on this machine" in said[0]
    assert said[0] in err


# ------------------------------------------------------------------ library, CLI and app


def test_library_cli_and_app_give_the_same_twin_figures(demo_store, tmp_path, monkeypatch):
    """The default twin (calibrated) of goodness_run, `python -m rotviz saliency` and the app's
    cached path: the same maps and Q, and the same sentence on which images calibrated it."""
    pytest.importorskip("streamlit")
    from rotviz.app import scores

    store, data, _, ckpt = demo_store
    _, test = load_split(data, "test")
    sal, thr = SaliencyConfig(aggregate="none", rotations=ckpt.rotations), Percentile(90)
    library = goodness_run(ckpt, test, sal, thr, CPU)

    out = tmp_path / "sal"
    argv = ["saliency", "--dataset", "demo", *store_args(demo_store), "--out", str(out)]
    assert main([*argv, "--threshold", "pct:90", "--save-maps"]) == 0
    cli_rows = pd.read_csv(out / "goodness.csv")
    summary = json.loads((out / "summary.json").read_text())
    cli_maps = np.load(out / "maps.npz")["random"]

    monkeypatch.setenv("ROTVIZ_STORE", str(store.root))
    card = ckpt.card
    res = scores.layer_run(card, None, card.data_config, sal, DEFAULT_TWIN)
    app = scores.scored(res, thr)

    np.testing.assert_allclose(cli_maps, library.maps_random, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(app.maps_random, library.maps_random, rtol=1e-6, atol=1e-12)
    for q in (cli_rows.q_random, app.rows.q_random):
        np.testing.assert_allclose(q, library.rows.q_random, rtol=1e-9, equal_nan=True)
    assert summary["mean_q_random"] == pytest.approx(library.summary.random.mean_q, abs=1e-12)
    assert app.summary.random.mean_q == pytest.approx(library.summary.random.mean_q, abs=1e-12)
    said = library.summary.twin_calibration
    assert summary["twin_calibration"] == app.summary.twin_calibration == said
    assert res.calibration_text == f"Random twin: {said}."
    assert library.summary.twin == summary["twin"] == app.summary.twin
