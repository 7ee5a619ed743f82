"""Faithfulness in the app (AppTest, the shipped demo network): the Saliency and Your images
pages' curves of one image equal the library's, the step slider moves the shown step, and the
Goodness page's faithfulness table appears after its button."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rotviz.app import faithfulness as app_faithfulness
from rotviz.attribution import cost
from rotviz.attribution.maps import network_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import DataConfig
from rotviz.data import uploads
from rotviz.nets.store import SHIPPED_STORE, CheckpointStore, load_checkpoint
from rotviz.scores.baselines import baseline_maps
from rotviz.scores.faithfulness import FaithfulnessConfig
from rotviz.study.faithfulness import source_curves
from rotviz.training.pipeline import load_split

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 180
SOURCES = ["trained map", "edge map", "random order (chance)"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """An empty store (the shipped networks stay visible) and one preprocessing cache."""
    return {
        "store": tmp_path_factory.mktemp("store"),
        "cache": tmp_path_factory.mktemp("preprocessed"),
    }


# fewer steps, percentages and random orders than the study's, to keep each test short
SMALL = FaithfulnessConfig(steps=8, percentages=(20.0, 50.0), random_orders=2)


@pytest.fixture(autouse=True)
def env(dirs, monkeypatch, tmp_path):
    monkeypatch.setenv("ROTVIZ_STORE", str(dirs["store"]))
    monkeypatch.setenv("ROTVIZ_CACHE", str(dirs["cache"]))
    monkeypatch.setattr(cost, "pass_cost", lambda *a, **k: 0.01)  # no timing in tests
    monkeypatch.setattr(cost, "pass_cost_file", lambda: tmp_path / "pass_cost.json")
    monkeypatch.setattr(app_faithfulness, "CONFIG", SMALL)


def demo_card() -> str:
    return str(next(c.path for c in CheckpointStore(SHIPPED_STORE).cards() if c.dataset == "demo"))


def page(script: str, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / script), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return "\n".join([c.value for c in at.caption] + [m.value for m in at.markdown])


def frame_with(at: AppTest, column: str):
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(frames) == 1, [list(d.value.columns) for d in at.dataframe]
    return frames[0]


def library_curves(image: np.ndarray, with_map: bool = True) -> dict:
    """The oracle: the demo network's curves of one uint8 image, straight from the library
    (the map of the page's default settings: rotation layer, all neurons, saliency, upright)."""
    ckpt = load_checkpoint(demo_card())
    images = image[None]
    maps = {"edges": baseline_maps(images, "edges")}
    if with_map:
        sal = SaliencyConfig(layer="rotation", neurons="all", method="saliency", aggregate="none")
        maps = {"trained": network_maps(ckpt.model, images, sal, "cpu")[0], **maps}
    return source_curves(ckpt.model, images, maps, SMALL, runtime="cpu")


def assert_scores_equal(shown, curves: dict) -> None:
    names = {"trained": "trained map", "edges": "edge map", "random": "random order (chance)"}
    for source, c in curves.items():
        row = shown.loc[names[source]]
        s = c.scores()
        assert row["deletion AUC"] == pytest.approx(s["deletion_auc"][0], abs=1e-9)
        assert row["insertion AUC"] == pytest.approx(s["insertion_auc"][0], abs=1e-9)
        assert row["ROAD score"] == pytest.approx(s["road"][0], abs=1e-9)


def test_saliency_page_shows_the_curves_of_the_library_and_the_chosen_step():
    at = page("saliency.py", **{"sal_ckpt": demo_card(), "sal-twin": "initial"})
    assert not [d for d in at.dataframe if "ROAD score" in d.value.columns]  # on a click
    at.checkbox(key="sal-faith").check().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = frame_with(at, "ROAD score")
    assert list(shown.index) == SOURCES
    _, split = load_split(DataConfig("demo"), "test")
    curves = library_curves(split.images[at.selectbox(key="sal_image").value])
    assert_scores_equal(shown, curves)
    assert "random twin sits at chance" in texts(at)

    trained = curves["trained"]
    for step in (2, 6):
        at.slider(key="sal-faith-step").set_value(step).run()
        assert not at.exception
        share = trained.fractions[step]
        shown_text = texts(at)
        assert (
            f"deletion, step {step} of 8: {share:.1%} of pixels removed; "
            f"p(true rotation) {trained.deletion[0, step]:.3f}"
        ) in shown_text
        assert (
            f"insertion, step {step} of 8: {share:.1%} of pixels revealed; "
            f"p(true rotation) {trained.insertion[0, step]:.3f}"
        ) in shown_text
    assert "step 2 of 8" not in texts(at)
    charts = [c for c in at.get("plotly_chart") if "p(true rotation)" in c.proto.spec]
    assert len(charts) == 1


def test_your_images_shows_the_curves_of_an_uploaded_image():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    pixels[20:70, 40:100] = (200, 60, 30)  # a block the maps can find
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    data = buf.getvalue()
    at = page("your_images.py", **{"up_ckpt": demo_card(), "up-twin": "initial"})
    at.file_uploader(key="up_files").set_value([("made.png", data, "image/png")]).run()
    at.checkbox(key="up0-faith").check().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = frame_with(at, "ROAD score")
    assert list(shown.index) == SOURCES
    cfg = load_checkpoint(demo_card()).card.data_config
    up = uploads.read_upload("made.png", data, None, cfg.image_size, cfg.resize)
    assert_scores_equal(shown, library_curves(up.pixels))
    assert "step 2 of 8" in texts(at)  # the slider opens on a quarter of the steps


def test_goodness_page_faithfulness_table_after_the_click():
    card = demo_card()
    at = page("goodness.py", **{"good_ckpts": [card]})
    assert not [d for d in at.dataframe if "ranking" in d.value.columns]  # on a click
    at.number_input(key="good_faith_n").set_value(2).run()
    at.button(key="good_faith_compute").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = frame_with(at, "ranking")
    assert table["ranking"].tolist() == [
        "trained map",
        "random twin's map (initial statistics)",
        "random twin's map (calibrated statistics)",
        "centre prior",
        "edge map",
        "random order (chance)",
    ]
    assert table["method"].eq("saliency").all() and table["n"].eq(2).all()
    for col in ("deletion AUC", "insertion AUC", "ROAD", "faithful"):
        assert col in table.columns
    assert table["faithful"].iloc[-1] == "reference"
    cell = r"^-?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\]$"  # "mean [low, high]"
    assert table["insertion AUC"].str.match(cell).all()
    assert table["insertion_auc"].between(0, 1).all()
    assert "Table CSV" in [b.proto.label for b in at.get("download_button")]
