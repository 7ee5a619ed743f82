"""The app says the cost before spending it: an estimate and a button before a long map set,
maps computed only on the click, then kept on disk for a reload (AppTest, shipped networks)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from rotviz.attribution import cache as map_cache
from rotviz.attribution import cost
from rotviz.nets.store import SHIPPED_STORE, CheckpointStore

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 180


def shipped(model: str) -> str:
    return str(next(c.path for c in CheckpointStore(SHIPPED_STORE).cards() if c.model == model))


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory) -> Path:
    """One preprocessing cache for the module (the demo is preprocessed once)."""
    return tmp_path_factory.mktemp("preprocessed")


@pytest.fixture()
def per_pass(monkeypatch, tmp_path, preprocessed):
    """A fixed per-pass cost (no timing) kept in a file of this test's own; an empty store."""
    monkeypatch.setenv("ROTVIZ_CACHE", str(preprocessed))
    seconds = {"value": 0.01}
    monkeypatch.setattr(cost, "pass_cost", lambda *a, **k: seconds["value"])
    monkeypatch.setattr(cost, "pass_cost_file", lambda: tmp_path / "pass_cost.json")
    return seconds


@pytest.fixture()
def computed(monkeypatch):
    """Records every map set computed (the disk cache's compute step)."""
    calls = []
    real = map_cache.cached_checkpoint_maps

    def recording(checkpoint, images, sal, *a, **k):
        if not map_cache.is_cached(checkpoint, images, sal, a[0]):
            calls.append((checkpoint.card.model, sal.layer, sal.method))
        return real(checkpoint, images, sal, *a, **k)

    monkeypatch.setattr("rotviz.app.cached.cached_checkpoint_maps", recording)
    return calls


def saliency_page(**state: str) -> AppTest:
    """The Saliency page, its widgets first set from state (widget key: value)."""
    at = AppTest.from_file(str(REPO / "pages" / "saliency.py"), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def buttons(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def test_integrated_gradients_on_the_efficientnet_embedding_waits_for_a_click(per_pass, computed):
    at = saliency_page(
        **{
            "sal-twin": "initial",
            "sal_ckpt": shipped("efficientnet_b0"),
            "sal-layer": "embedding",
            "sal-method": "integrated_gradients",
        }
    )
    assert at.selectbox(key="sal-method").value == "integrated_gradients"
    assert not at.exception and not at.error, [e.value for e in at.error]
    info = " ".join(i.value for i in at.info)
    assert "about 14 min (1,280 neurons x 32 steps x 2 networks)" in info  # 0.01 s a pass
    assert "the rotation layer" in info and "top-k" in info and "fewer integrated" in info
    assert "Compute maps (about 14 min)" in buttons(at)
    assert not [m for m in computed if m[0] == "efficientnet_b0"]  # nothing computed yet
    assert not at.metric  # no maps, no Q


def test_maps_are_computed_on_the_click_then_read_back_after_a_reload(per_pass, computed):
    per_pass["value"] = 1.0  # 4 rotation neurons x 2 networks x 1 s: over the 5 s threshold
    at = saliency_page(**{"sal-twin": "initial"})
    assert "Compute maps (about 8 s)" in buttons(at)
    assert not computed and not at.metric
    at.button(key="sal-compute").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(computed) == 1 and at.metric[0].value.endswith("%")

    reloaded = saliency_page(
        **{"sal-twin": "initial"}
    )  # another session: the maps come from the disk cache
    assert "Compute maps (about 8 s)" not in buttons(reloaded)
    assert reloaded.metric[0].value == at.metric[0].value and len(computed) == 1


def test_home_page_shows_and_clears_the_map_cache(per_pass):
    per_pass["value"] = 1e-4
    saliency_page(**{"sal-twin": "initial"})  # fills the cache with one map set
    at = AppTest.from_file(str(REPO / "pages" / "home.py"), default_timeout=TIMEOUT)
    at.run()
    assert any("Map cache: 1 map set" in c.value for c in at.caption)
    at.button(key="map-cache").click().run()
    assert any("Removed 1 map set." in s.value for s in at.success)
    assert map_cache.MapCache().entries() == []


def test_neurons_page_asks_before_a_long_page_of_maps_then_keeps_them(per_pass):
    per_pass["value"] = 1.0  # 12 neurons x 9 images x 1 s
    at = AppTest.from_file(str(REPO / "pages" / "neurons.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "about 2 min (12 neurons x 9 images)" in " ".join(i.value for i in at.info)
    assert "Compute single-neuron maps of 12 neurons (about 2 min)" in buttons(at)
    assert not at.image  # no maps yet
    at.button(key="nrn-compute").click().run()
    assert not at.exception and len(at.image) == 12

    again = AppTest.from_file(str(REPO / "pages" / "neurons.py"), default_timeout=TIMEOUT)
    again.run()  # another session: every map from the disk cache, no button
    assert not buttons(again) or "Compute" not in " ".join(buttons(again))
    assert len(again.image) == 12


def test_your_images_page_asks_before_a_long_map_set_of_an_upload(per_pass):
    from skimage import data

    per_pass["value"] = 1.0
    at = AppTest.from_file(str(REPO / "pages" / "your_images.py"), default_timeout=TIMEOUT)
    at.session_state["up-twin"] = "initial"
    at.run()
    photo = io.BytesIO()
    Image.fromarray(data.chelsea()).save(photo, "JPEG")
    at.file_uploader(key="up_files").set_value(
        [("chelsea.jpg", photo.getvalue(), "image/jpeg")]
    ).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Compute maps (about 8 s)" in buttons(at)
    assert not at.metric and at.dataframe  # the predicted rotation shows; no maps yet
    at.button(key="up0-compute").click().run()
    assert not at.exception and at.metric[0].value == "n/a (no boxes)"
