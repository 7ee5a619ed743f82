"""The embedded demo: offline, complete, hand-made boxes that fit, written once, COCO code path."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rotviz.config import DataConfig
from rotviz.data.datasets import load_dataset, load_demo, split_for
from rotviz.data.demo import (
    COCO_FILE_NAME,
    demo_version,
    hand_annotations,
    materialize_demo,
)
from rotviz.errors import RotvizError

SCENE_FILES = {
    "skimage_astronaut.png",
    "skimage_camera.png",
    "skimage_chelsea.png",
    "skimage_coffee.png",
    "skimage_rocket.png",
    "skimage_motorcycle_left.png",
    "sklearn_china.png",
    "sklearn_flower.png",
    "matplotlib_grace_hopper.png",
}


class NetworkUsed(AssertionError):
    pass


def _no_network(*args, **kwargs):
    raise NetworkUsed(f"the demo tried to use the network: {args!r}")


def guard_sockets(mp: pytest.MonkeyPatch) -> None:
    """Make every outgoing connection (and DNS lookup) fail loudly."""
    mp.setattr(socket.socket, "connect", _no_network)
    mp.setattr(socket.socket, "connect_ex", _no_network)
    mp.setattr(socket, "create_connection", _no_network)
    mp.setattr(socket, "getaddrinfo", _no_network)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo loaded once per module, offline, into a fresh cache: (dataset, cache dir)."""
    cache = tmp_path_factory.mktemp("demo_cache")
    with pytest.MonkeyPatch.context() as mp:
        guard_sockets(mp)
        with pytest.raises(NetworkUsed):  # the guard itself works
            socket.create_connection(("127.0.0.1", 9))
        mp.setenv("ROTVIZ_CACHE", str(cache))
        ds = load_demo(DataConfig("demo"))
    return ds, cache


@pytest.fixture
def coco(demo) -> dict:
    ds, _ = demo
    return json.loads((Path(ds.root) / COCO_FILE_NAME).read_text(encoding="utf-8"))


def by_file(ds) -> dict:
    return {r.relpath: r for r in ds.records}


def test_loads_offline_into_the_cache(demo):
    ds, cache = demo
    assert ds.name == "demo"
    assert Path(ds.root) == cache / "demo" / demo_version() / "images"
    assert len(ds.records) == 200 + len(SCENE_FILES)
    assert all(Path(r.path).is_file() and Path(r.path).parent == Path(ds.root) for r in ds.records)


def test_registry_name_demo_gives_the_same_records(demo, monkeypatch):
    ds, cache = demo
    guard_sockets(monkeypatch)
    monkeypatch.setenv("ROTVIZ_CACHE", str(cache))
    assert load_dataset(DataConfig("demo")).records == ds.records


def test_faces_and_nonfaces_are_lfw_subset_with_labels_and_hash_splits(demo):
    from skimage import data

    ds, _ = demo
    patches = [r for r in ds.records if r.label in ("face", "nonface")]
    assert len(patches) == 200
    assert Counter(r.label for r in patches) == {"face": 100, "nonface": 100}
    assert all(r.boxes == () for r in patches)
    assert {r.split for r in patches} == {"train", "test"}
    assert all(r.split == split_for(r.relpath, 0.25) for r in patches)
    lfw = np.round(data.lfw_subset() * 255).astype(np.uint8)  # floats in [0, 1] in the file
    records = by_file(ds)
    for i in (0, 37, 99, 100, 163, 199):
        label = "face" if i < 100 else "nonface"
        record = records[f"lfw_{label}_{i % 100:03d}.png"]
        assert record.label == label
        with Image.open(record.path) as img:
            assert img.mode == "L" and img.size == (25, 25)
            np.testing.assert_array_equal(np.asarray(img), lfw[i])


def test_scene_photos_are_test_images_with_hand_made_boxes(demo):
    ds, _ = demo
    scenes = [r for r in ds.records if r.label == "scene"]
    assert {r.relpath for r in scenes} == SCENE_FILES
    assert all(r.split == "test" for r in scenes)
    assert all(len(r.boxes) >= 1 and len(r.categories) == len(r.boxes) for r in scenes)
    astronaut = by_file(ds)["skimage_astronaut.png"]
    names = [ds.category_names[c] for c in astronaut.categories]
    assert sorted(names) == ["face", "helmet", "person", "rocket"]


def test_every_box_lies_inside_its_image_and_is_not_degenerate(coco):
    images = {im["id"]: im for im in coco["images"]}
    category_ids = {c["id"] for c in coco["categories"]}
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for a in coco["annotations"]:
        im = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert w >= 8 and h >= 8, a
        assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"], a
        assert a["area"] == w * h and a["iscrowd"] == 0
        assert a["category_id"] in category_ids
    boxed = {a["image_id"] for a in coco["annotations"]}
    assert {images[i]["file_name"] for i in boxed} == SCENE_FILES


def test_categories_use_coco_ids_where_coco_has_them(coco):
    ids = {c["name"]: c["id"] for c in coco["categories"]}
    coco_ids = {"person": 1, "bicycle": 2, "motorcycle": 4, "bench": 15, "cat": 17, "cup": 47}
    assert {k: ids[k] for k in coco_ids} == coco_ids
    assert all(ids[n] >= 100 for n in ("rocket", "flower", "building", "face"))
    assert "by hand" in coco["info"]["description"]


def test_image_sizes_in_the_json_match_the_files(demo, coco):
    ds, _ = demo
    for im in coco["images"]:
        with Image.open(Path(ds.root) / im["file_name"]) as img:
            assert img.size == (im["width"], im["height"]), im["file_name"]


def test_scene_pixels_equal_the_libraries_own_loaders(demo):
    import matplotlib.cbook
    from skimage import data
    from sklearn.datasets import load_sample_image

    ds, _ = demo
    expected = {
        "skimage_astronaut.png": data.astronaut(),
        "skimage_camera.png": data.camera(),
        "skimage_rocket.png": data.rocket(),
        "skimage_motorcycle_left.png": data.stereo_motorcycle()[0],
        "sklearn_china.png": load_sample_image("china.jpg"),
        "matplotlib_grace_hopper.png": np.asarray(
            Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        ),
    }
    for name, pixels in expected.items():
        with Image.open(Path(ds.root) / name) as img:
            np.testing.assert_array_equal(np.asarray(img), pixels, err_msg=name)


def test_second_materialize_rewrites_nothing(demo, monkeypatch):
    ds, cache = demo
    root = Path(ds.root)
    before = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    assert len(before) == 200 + len(SCENE_FILES) + 1  # + the COCO json
    guard_sockets(monkeypatch)
    monkeypatch.setenv("ROTVIZ_CACHE", str(cache))
    assert materialize_demo() == (root, root / COCO_FILE_NAME)
    assert materialize_demo(root) == (root, root / COCO_FILE_NAME)
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == before
    assert [p.name for p in root.parent.iterdir()] == ["images"]  # no temporary folder left


def test_refuses_a_foreign_non_empty_destination(tmp_path):
    dest = tmp_path / "images"
    dest.mkdir()
    (dest / "mine.txt").write_text("not a demo")
    with pytest.raises(RotvizError, match="not a complete demo folder"):
        materialize_demo(dest)
    assert [p.name for p in tmp_path.iterdir()] == ["images"]


def test_category_filter_keeps_matching_photos_only(demo, monkeypatch):
    ds, cache = demo
    monkeypatch.setenv("ROTVIZ_CACHE", str(cache))
    cats = load_demo(DataConfig("demo", categories=("cat",)))
    assert [r.relpath for r in cats.records] == ["skimage_chelsea.png"]
    people = load_demo(DataConfig("demo", categories=("person", "motorcycle")))
    assert {r.relpath for r in people.records} == {
        "skimage_astronaut.png",
        "skimage_camera.png",
        "matplotlib_grace_hopper.png",
        "skimage_motorcycle_left.png",
    }
    assert all(r.split == "test" and r.label == "scene" for r in people.records)
    with pytest.raises(RotvizError, match="unknown COCO category"):
        load_demo(DataConfig("demo", categories=("zebra",)))


def test_test_fraction_moves_only_the_patches(demo, monkeypatch):
    ds, cache = demo
    monkeypatch.setenv("ROTVIZ_CACHE", str(cache))
    all_train = load_demo(DataConfig("demo", test_fraction=0.0))
    assert Counter((r.label, r.split) for r in all_train.records) == {
        ("face", "train"): 100,
        ("nonface", "train"): 100,
        ("scene", "test"): len(SCENE_FILES),
    }


def iou(a, b) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def boxes_of(record, ds, name: str) -> list[tuple[float, float, float, float]]:
    return [
        b
        for b, c in zip(record.boxes, record.categories, strict=True)
        if ds.category_names[c] == name
    ]


@pytest.mark.parametrize("file_name", ["skimage_astronaut.png", "matplotlib_grace_hopper.png"])
def test_face_boxes_agree_with_skimages_face_detector(demo, file_name):
    """An independent oracle: skimage's bundled LBP frontal-face cascade finds the same face."""
    from skimage import color, data, feature

    ds, _ = demo
    record = by_file(ds)[file_name]
    with Image.open(record.path) as img:
        gray = color.rgb2gray(np.asarray(img.convert("RGB")))
    detector = feature.Cascade(data.lbp_frontal_face_cascade_filename())
    found = detector.detect_multi_scale(
        img=gray, scale_factor=1.2, step_ratio=1, min_size=(60, 60), max_size=(300, 300)
    )
    assert len(found) == 1
    d = found[0]
    detected = (d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"])
    (face,) = boxes_of(record, ds, "face")
    assert iou(face, detected) > 0.6
    (person,) = boxes_of(record, ds, "person")
    assert person[0] <= detected[0] and person[1] <= detected[1]
    assert detected[2] <= person[2] and detected[3] <= person[3]


def test_flower_boxes_match_the_orange_blossoms(demo):
    """Oracle: bounding boxes of the large orange connected regions of the flower photo."""
    from scipy import ndimage

    ds, _ = demo
    record = by_file(ds)["sklearn_flower.png"]
    with Image.open(record.path) as img:
        rgb = np.asarray(img).astype(int)
    orange = (rgb[..., 0] > 140) & (rgb[..., 0] > rgb[..., 2] + 40)
    labels, _ = ndimage.label(orange)
    found = [
        (s[1].start, s[0].start, s[1].stop, s[0].stop)
        for s in ndimage.find_objects(labels)
        if (s[0].stop - s[0].start) * (s[1].stop - s[1].start) > 5000
    ]
    flowers = boxes_of(record, ds, "flower")
    assert len(found) == len(flowers) == 2
    for f in flowers:
        assert max(iou(f, g) for g in found) > 0.9


def test_hand_annotations_cover_exactly_the_scene_photos():
    coco = hand_annotations()
    assert {im["file_name"] for im in coco["images"]} == SCENE_FILES
    per_image = Counter(a["image_id"] for a in coco["annotations"])
    assert all(per_image[im["id"]] >= 1 for im in coco["images"])
