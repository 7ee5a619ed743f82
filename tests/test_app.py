"""The Streamlit app driven by AppTest on a tmp store holding one tiny demo checkpoint.

Every page is run, widgets are changed, and what the page shows (texts, metrics, tables) is
compared with what the core computes for the same settings.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from rotviz.attribution.aggregation import rotation_aggregated_maps
from rotviz.attribution.targets import AllNeurons
from rotviz.config import DataConfig, TrainConfig
from rotviz.data.rotation import normalize
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Card
from rotviz.nets.store import SHIPPED_STORE, CheckpointStore, load_checkpoint
from rotviz.nets.twin import random_twin_of
from rotviz.scores.metrics import Percentile, box_mask, format_q, goodness
from rotviz.training.pipeline import load_split, train_or_load

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
TINY_DATA = DataConfig("demo", max_images=16)
TINY_TRAIN = TrainConfig(epochs=1, batch_size=8)
TIMEOUT = 180


@pytest.fixture(scope="session")
def app_dirs(tmp_path_factory) -> dict[str, Path]:
    """A store with one tiny six_layer checkpoint trained on the demo, and a shared cache."""
    store = tmp_path_factory.mktemp("store")
    cache = tmp_path_factory.mktemp("app-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROTVIZ_CACHE", str(cache))
    try:
        outcome = train_or_load(
            TINY_DATA, TINY_TRAIN, CheckpointStore(store), "cpu", log=lambda _: None
        )
    finally:
        mp.undo()
    return {
        "store": store,
        "cache": cache,
        "card": Path(outcome.checkpoint.path).with_suffix(".json"),
    }


@pytest.fixture(autouse=True)
def app_env(app_dirs, monkeypatch):
    """Point the app at the tmp store and the session cache (the demo is preprocessed once)."""
    monkeypatch.setenv("ROTVIZ_STORE", str(app_dirs["store"]))
    monkeypatch.setenv("ROTVIZ_CACHE", str(app_dirs["cache"]))


@pytest.fixture()
def card(app_dirs) -> dict:
    return json.loads(app_dirs["card"].read_text())


def run_page(page: str = "home.py") -> AppTest:
    """One page script of pages/, run on its own."""
    at = AppTest.from_file(str(REPO / "pages" / page), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += (
        [e.value for e in at.info] + [e.value for e in at.success] + [e.value for e in at.warning]
    )
    return "\n".join(parts)


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}: {[m.label for m in at.metric]}"
    return values[0]


# --------------------------------------------------------------------------- home


def test_navigation_lists_every_page_script_once():
    from rotviz.app.navigation import HOME, page_entries

    entries = page_entries()
    scripts = [e.script for e in entries]
    assert sorted(scripts) == sorted(p.name for p in (REPO / "pages").glob("*.py"))
    assert len({e.title for e in entries}) == len(entries)
    assert entries[0] == HOME


def test_router_serves_home_then_every_page_under_streamlit_navigation():
    from rotviz.app.navigation import HOME, page_entries

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "rotviz" and "Q** = IoU" in texts(at)  # Home is the default
    assert "Checkpoint store:" in " ".join(c.value for c in at.sidebar.caption)
    for entry in page_entries():
        at.switch_page(f"pages/{entry.script}").run()  # raises unless navigation lists it
        assert not at.exception, (entry, [e.value for e in at.exception])
        assert at.title[0].value == ("rotviz" if entry == HOME else entry.title)


def test_home_lists_demo_and_the_stored_checkpoint(card):
    at = run_page()
    assert "Q** = IoU" in texts(at)
    datasets, checkpoints = at.dataframe[0].value, at.dataframe[1].value
    assert datasets["dataset"].tolist() == ["demo (embedded)"]
    assert datasets["test images"].iloc[0] > 9  # 9 photos with boxes + LFW patches
    row = checkpoints.iloc[0]
    assert (row["dataset"], row["model"], row["epochs"]) == ("demo", "six_layer", 1)
    acc = card["metrics"]["test"]["trained"]["accuracy"]
    assert row["rotation accuracy, trained (%)"] == pytest.approx(100 * acc, abs=0.05)
    assert not at.error
    columns = json.loads(at.dataframe[1].proto.columns)  # on screen: one decimal, not four
    assert columns["rotation accuracy, trained (%)"]["type_config"]["format"] == "%.1f"


def test_home_reports_a_missing_dataset_path_and_keeps_working(tmp_path):
    at = run_page()
    at.selectbox(key="add_kind").set_value("lfw")
    at.text_input(key="add_root").set_value(str(tmp_path / "nowhere"))
    at.button(key="add_button").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "does not exist" in at.error[0].value
    assert at.dataframe[0].value["dataset"].tolist() == ["demo (embedded)"]  # not added

    folder = tmp_path / "imgs"
    folder.mkdir()
    from skimage import data

    for i, img in enumerate([data.astronaut(), data.chelsea(), data.coffee(), data.rocket()] * 2):
        Image.fromarray(img).save(folder / f"p{i}.png")
    at.selectbox(key="add_kind").set_value("folder")
    at.text_input(key="add_root").set_value(str(folder))
    at.button(key="add_button").click().run()
    assert "training and" in at.success[0].value
    assert "image folder" in at.dataframe[0].value["dataset"].tolist()


# --------------------------------------------------------------------------- train


def test_train_page_serves_the_stored_checkpoint_then_trains_a_new_one(card):
    from rotviz.app.jobs import registry

    at = run_page("train.py")
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_max_images").set_value(16)
    at.number_input(key="train_bs").set_value(8)
    at.run()
    assert "The store has this checkpoint" in at.success[0].value
    acc = card["metrics"]["test"]["trained"]["accuracy"]
    assert metric(at, "Rotation accuracy, trained") == f"{acc:.1%}"
    rnd = card["metrics"]["test"]["initial"]["accuracy"]
    assert metric(at, "Rotation accuracy, random twin") == f"{rnd:.1%}"
    assert metric(at, "Chance level") == "25.0%"

    at.multiselect(key="train_rotations").set_value([0, 180]).run()  # another checkpoint
    assert any("Not in the store yet" in i.value for i in at.info)
    at.button(key="train_start").click().run()
    assert not at.exception
    assert registry().wait_all(timeout=120)
    at.run()
    assert "The store has this checkpoint" in at.success[0].value
    assert metric(at, "Chance level") == "50.0%"  # two rotations
    conf = [d.value for d in at.dataframe][0]
    assert conf["rotation"].tolist() == ["0°", "180°"]


def test_train_page_rejects_an_unknown_timm_model():
    at = run_page("train.py")
    at.selectbox(key="train_model").set_value("other timm model...").run()
    at.text_input(key="train_model-timm").set_value("no_such_net_xyz").run()
    assert not at.exception
    assert "timm has no model called 'no_such_net_xyz'" in at.error[0].value


# --------------------------------------------------------------------------- saliency


def expected_q(card: dict, index: int, p: float) -> tuple[float, float]:
    """Q of trained and random at percentile p, computed with the core alone."""
    ckpt = load_checkpoint(card["card_path"])
    twin = random_twin_of(ckpt, "initial")
    _, split = load_split(DataConfig("demo"), "test")
    x = normalize(torch.from_numpy(split.images[index : index + 1].copy()))
    maps = [  # aggregate "none": the page's default, as the study's
        rotation_aggregated_maps(net, x, "rotation", AllNeurons(), aggregate="none")
        for net in (ckpt.model, twin)
    ]
    mask = box_mask(split.boxes[index], (128, 128))
    return tuple(goodness(Percentile(p).mask(m[0].numpy()), mask) for m in maps)


def test_saliency_page_shows_q_and_follows_the_threshold(app_dirs):
    at = run_page("saliency.py")
    at.selectbox(key="sal_ckpt").set_value(str(app_dirs["card"])).run()  # the fixture's checkpoint
    assert metric(at, "Q, trained").endswith("%")
    index = at.selectbox(key="sal_image").value
    shown = next(o for o in at.selectbox(key="sal_image").options if o.startswith(f"#{index}: "))
    assert shown.endswith("boxes)")
    card = json.loads(app_dirs["card"].read_text()) | {"card_path": str(app_dirs["card"])}
    at.radio(key="sal-twin").set_value("initial")  # expected_q builds the initial twin
    at.radio(key="sal-mode").set_value("percentile").run()
    for p in (50.0, 97.5):
        at.slider(key="sal-pct").set_value(p).run()
        q_t, q_r = expected_q(card, index, p)
        assert metric(at, "Q, trained") == format_q(q_t)
        assert metric(at, "Q, random twin") == format_q(q_r)
    assert "Q = IoU of the thresholded saliency map and the box mask" in texts(at)
    assert len(at.get("plotly_chart")) == 1  # this image's Q-vs-threshold curve

    at.radio(key="sal-mode").set_value("box-area").run()
    assert metric(at, "Q, trained").endswith("%")
    last = len(at.selectbox(key="sal_image").options) - 1
    at.selectbox(key="sal_image").select_index(last).run()
    assert not at.exception and metric(at, "Q, trained").endswith("%")


def test_saliency_page_opens_scale_free_with_the_study_lambda_one_click_away():
    """On the shipped demo network the study's λ turns both maps on nearly everywhere, so trained
    and twin score the same Q; the page opens on the box area, where they can differ."""
    shipped = next(c for c in CheckpointStore(SHIPPED_STORE).cards() if c.dataset == "demo")
    at = run_page("saliency.py")
    at.selectbox(key="sal_ckpt").set_value(str(shipped.path)).run()
    assert at.radio(key="sal-mode").value == "box-area"
    # the first view tells the maps apart: an image whose boxes cover 5-50 % of it
    assert metric(at, "Q, trained") != metric(at, "Q, random twin")
    _, split = load_split(DataConfig("demo"), "test")
    share = box_mask(split.boxes[at.selectbox(key="sal_image").value], (128, 128)).mean()
    assert 0.05 <= share <= 0.5
    assert "The study's absolute λ = 8e-04 (six_layer, rotation layer)" in texts(at)
    assert "nearly all pixels on" not in texts(at)
    at.radio(key="sal-mode").set_value("absolute").run()
    assert at.select_slider(key="sal-lam-six_layer-rotation").value == 8e-4
    # nearly every pixel on in both maps: each Q is about the boxes' share of the image
    q_trained, q_twin = (
        float(metric(at, f"Q, {m}").rstrip("%")) for m in ("trained", "random twin")
    )
    assert abs(q_trained - 100 * share) < 1.0 and abs(q_twin - 100 * share) < 1.0
    assert texts(at).count("nearly all pixels on") == 2  # the reach note, trained and twin

    at.radio(key="sal-mode").set_value("box-area").run()
    images = at.selectbox(key="sal_image")
    camera = next(o for o in images.options if "camera" in o)  # "#50: skimage_camera.png (..."
    images.set_value(int(camera.split(":")[0][1:])).run()
    assert metric(at, "Q, trained") != metric(at, "Q, random twin")


def test_saliency_page_shows_value_range_and_rotation_consistency(app_dirs):
    at = run_page("saliency.py")
    at.selectbox(key="sal_ckpt").set_value(str(app_dirs["card"])).run()
    assert "Map values, percentiles — trained: 5th" in texts(at)
    at.checkbox(key="sal_consistency").check().run()
    assert not at.exception
    assert texts(at).count("turned back: Spearman 1.000") == 2  # k = 0, trained and twin
    assert texts(at).count("turned back: Spearman") == 8


def test_saliency_page_explains_impossible_settings():
    at = run_page("saliency.py")
    at.radio(key="sal-layer").set_value("embedding").run()
    at.selectbox(key="sal-neurons").set_value("predicted").run()
    assert not at.exception
    assert "no meaning on the embedding layer" in at.error[0].value
    at.selectbox(key="sal-neurons").set_value("indices").run()
    at.text_input(key="sal-indices").set_value("3, 999").run()
    assert "neuron 999 does not exist" in at.error[0].value


# --------------------------------------------------------------------------- measure pages


def test_accuracy_page_tables(card):
    at = run_page("accuracy.py")
    acc, others = at.dataframe[0].value, at.dataframe[1].value
    # the fixture's network is a --max-images quick run: never beside the published figures
    assert not (acc["checkpoint"] == card["name"]).any()
    row = others[others["checkpoint"] == card["name"]].iloc[0]
    assert row["accuracy, trained (%)"] == pytest.approx(
        100 * card["metrics"]["test"]["trained"]["accuracy"], abs=1e-9
    )
    assert "--max-images 16" in row["why not beside the study"]
    published = acc[(acc["dataset"] == "lfw") & (acc["model"] == "six_layer")].iloc[0]
    assert published["published, trained (%)"] == "98.0"  # on screen: one decimal
    # a cell with no number reads "—", never None: no network of the study's recipe on COCO
    coco = acc[(acc["dataset"] == "coco") & (acc["model"] == "six_layer")].iloc[0]
    assert coco["ours, trained (%)"] == "—" and coco["checkpoint"] == "—"
    assert not acc.isna().any().any()


def test_goodness_page_table_and_sweep(app_dirs):
    at = run_page("goodness.py")
    at.multiselect(key="good_ckpts").set_value([str(app_dirs["card"])]).run()
    at.selectbox(key="good_mode").set_value("percentile").run()
    at.slider(key="good_pct").set_value(90.0)
    at.button(key="good_compute").click().run()
    assert not at.exception and not at.error
    good = at.dataframe[0].value
    assert good["layer"].tolist() == ["rotation", "embedding"]
    assert (good["images scored"] == "9").all()  # the demo's nine photographs
    assert good["threshold"].tolist() == ["pct:90", "pct:90"]
    assert good["trained"].between(0, 1).all()
    assert good["published mean Q, trained (%)"].eq("—").all()  # not None on screen
    assert good["published: comparable?"].str.startswith("not the study's recipe").all()
    assert good["share of pixels on, trained (%)"].astype(float).between(9, 12).all()
    shown_q = good["Q trained (%)"].str.split(" ").str[0].astype(float)  # "mean [low, high]"
    assert shown_q.tolist() == pytest.approx((100 * good["trained"]).tolist(), abs=0.051)  # ~10%
    assert good["threshold's reach"].eq("informative").all()
    assert good["baselines"].str.contains("beat").all()
    assert len(at.get("plotly_chart")) == 1  # the dataset sweep


def test_accuracy_page_trains_what_is_missing_in_the_background(card, app_dirs, monkeypatch):
    import rotviz.nets.models
    from rotviz.app.jobs import registry

    # a tiny timm net stands in for the study's big ones, to keep the test fast
    monkeypatch.setattr(rotviz.nets.models, "STUDY_MODELS", ("six_layer", "test_efficientnet"))
    at = run_page("accuracy.py")
    at.number_input(key="acc_miss_epochs").set_value(1).run()
    assert "test_efficientnet on demo yet" in texts(at)
    at.button(key="acc_miss_train").click().run()
    assert not at.exception
    assert registry().wait_all(timeout=300)
    at.run()
    assert not at.exception and not at.error
    models = {c.model for c in CheckpointStore(app_dirs["store"]).cards() if c.dataset == "demo"}
    assert "test_efficientnet" in models
    assert "The store has every study model on demo" in texts(at)
    everything = pd.concat([at.dataframe[0].value, at.dataframe[1].value])
    assert (everything["model"] == "test_efficientnet").any()


CELL = r"^(\d+\.\d) \[(\d+\.\d), (\d+\.\d)\]$"  # "mean [low, high]"


def test_probe_page_shows_accuracy_intervals_and_the_probe(app_dirs):
    import re

    at = run_page("probe.py")
    assert at.selectbox(key="probe_dataset").value == "demo"
    at.selectbox(key="probe_ckpt").set_value(str(app_dirs["card"])).run()
    ci = at.dataframe[0].value  # the accuracy intervals of the chosen checkpoint
    cell = re.compile(CELL)
    for col in ("trained", "random"):
        x, lo, hi = map(float, cell.match(ci[f"{col} (%)"].iloc[0]).groups())
        assert lo <= x <= hi
        assert ci[col].iloc[0] == pytest.approx(x / 100, abs=5e-4)  # the numeric column
    at.button(key="probe_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    probe = at.dataframe[1].value
    assert {"method", "labels", "trained", "random", "p (Wilcoxon)"} <= set(probe.columns)
    assert set(probe["method"]) >= {"linear", "knn"}
    assert probe["labels"].tolist()[-1] == "100%"
    for text in probe["trained"]:
        x, lo, hi = map(float, cell.match(text).groups())
        assert 0 <= lo <= x <= hi <= 100


def test_sanity_page_shows_numbers(app_dirs):
    at = run_page("sanity.py")
    at.selectbox(key="san_ckpt").set_value(str(app_dirs["card"])).run()
    at.button(key="san_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    sims = at.dataframe[0].value
    assert sims["comparison"].tolist()[0] == "trained vs random twin (initial statistics)"
    for col in ("Spearman rank correlation", "SSIM", "top-5% pixel intersection"):
        v = float(sims[col].iloc[0])
        assert -1.0 <= v <= 1.0 and v == v  # a number, not NaN
    assert float(sims["top-5% pixel intersection"].iloc[0]) < 1.0  # the twin's map differs


# --------------------------------------------------------------------------- your images


def jpeg_bytes(img: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_your_images_upload_predicts_and_scores(app_dirs):
    from skimage import data

    at = run_page("your_images.py")
    at.selectbox(key="up_ckpt").set_value(str(app_dirs["card"])).run()
    assert "Upload one or more images" in texts(at)
    at.radio(key="up_box_mode").set_value("type numbers").run()
    at.file_uploader(key="up_files").set_value(
        [
            ("chelsea.jpg", jpeg_bytes(data.chelsea()), "image/jpeg"),
            ("notes.png", b"this is not an image", "image/png"),
        ]
    ).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "notes.png: not an image file Pillow can read (wrong extension or corrupt)"
    ]
    probs = at.dataframe[0].value
    assert list(probs.index) == [f"image turned {d}°" for d in (0, 90, 180, 270)]
    p_cols = [c for c in probs.columns if c.startswith("P(")]
    assert np.allclose(probs[p_cols].sum(axis=1), 100, atol=0.3)
    assert metric(at, "Q, trained") == "n/a (no boxes)"

    at.text_area(key="up_boxes_0").set_value("140, 40, 330, 290").run()  # the cat's head
    assert not at.error[1:]
    assert metric(at, "Q, trained").endswith("%") and metric(at, "Q, trained") != "n/a (no boxes)"
    at.text_area(key="up_boxes_0").set_value("1, 2, 3").run()
    assert "write four numbers" in " ".join(e.value for e in at.error)


# --------------------------------------------------------------------------- upload handler


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): the decompression-bomb case."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("a.png", lambda: b"GIF89a not really", "not an image file"),
        ("b.jpg", lambda: b"", "the file is empty"),
        ("c.jpg", lambda: jpeg_bytes(_noise((300, 400, 3)))[:5000], "(?i)truncated"),
        ("d.png", lambda: png_header_only(20000, 20000), "20000 x 20000"),
        ("e.png", lambda: _png(np.zeros((1, 1), np.uint8)), "1 x 1"),
    ],
)
def test_read_upload_rejects_bad_files_with_one_message(name, make, message):
    from rotviz.data.uploads import read_upload

    with pytest.raises(RotvizError, match=message) as err:
        read_upload(name, make())
    assert str(err.value).startswith(f"{name}: ")


def _noise(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def test_read_upload_converts_16bit_cmyk_and_applies_exif():
    from skimage import data

    from rotviz.data.uploads import read_upload

    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    up16 = read_upload("deep.png", _png(ramp))
    assert up16.pixels.shape == (3, 128, 128) and up16.pixels.dtype == np.uint8
    assert up16.pixels.max() > 200  # scaled from 16 bits, not clipped to 255 everywhere
    assert up16.pixels.min() < 10

    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).convert("CMYK").save(buf, "JPEG")
    cmyk = read_upload("cmyk.jpg", buf.getvalue())
    assert cmyk.original.mode == "RGB"

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100] = 255  # left half white
    turned = read_upload(
        "exif.jpg", jpeg_bytes(img, exif=exif.tobytes()), boxes=np.array([[0, 0, 100, 50]])
    )
    assert turned.original.size == (100, 200)  # upright: 100 wide, 200 tall
    assert turned.boxes.tolist() == [[0.0, 0.0, 128.0, 32.0]]


def test_boxes_from_text_and_coco_json():
    from rotviz.data.uploads import parse_boxes_text, parse_coco_boxes

    assert parse_boxes_text("1, 2, 3, 4\n# comment\n5 6 7 8\n").tolist() == [
        [1, 2, 3, 4],
        [5, 6, 7, 8],
    ]
    with pytest.raises(RotvizError, match="line 1"):
        parse_boxes_text("1, 2, x, 4")
    coco = {
        "images": [{"id": 7, "file_name": "dir/cat.jpg"}],
        "annotations": [{"image_id": 7, "bbox": [10, 20, 30, 40]}],
    }
    assert parse_coco_boxes(json.dumps(coco).encode())["cat.jpg"].tolist() == [[10, 20, 40, 60]]
    with pytest.raises(RotvizError, match="not valid JSON"):
        parse_coco_boxes(b"{oops")
    with pytest.raises(RotvizError, match="not a COCO json"):
        parse_coco_boxes(b'{"images": [{"id": 1}]}')


def test_bundle_zip_holds_figures_scores_settings_and_cards(card):
    import pandas as pd
    from matplotlib.figure import Figure

    from rotviz.app.export import bundle_zip

    def make() -> Figure:
        fig = Figure()
        fig.add_subplot().plot([0, 1], [1, 0])
        return fig

    scores = pd.DataFrame({"network": ["trained", "random"], "Q": [0.3, 0.0]})
    blob = bundle_zip({"panel": make}, {"scores": scores}, {"threshold": "pct:90"}, [Card(card)])
    zf = zipfile.ZipFile(io.BytesIO(blob))
    names = set(zf.namelist())
    assert {"figures/panel.png", "figures/panel.svg", "figures/panel.pdf"} <= names
    assert {"scores/scores.csv", "scores/scores.tex", "settings.json"} <= names
    assert zf.read("figures/panel.png")[:4] == b"\x89PNG"
    assert zf.read("figures/panel.pdf")[:4] == b"%PDF"
    assert json.loads(zf.read("settings.json"))["threshold"] == "pct:90"
    saved = json.loads(zf.read(f"cards/{card['name']}.json"))
    assert saved["weights_sha256"] == card["weights_sha256"] and "card_path" not in saved
    assert "trained,0.3" in zf.read("scores/scores.csv").decode()
