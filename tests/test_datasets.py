"""Dataset sources -> records: real LFW/COCO excerpts when present, generated trees always."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from rotviz.config import DataConfig
from rotviz.data.datasets import (
    DATASETS,
    dataset_fingerprint,
    load_coco,
    load_dataset,
    split_for,
)
from rotviz.errors import RotvizError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket(), skdata.camera()]


def _save(path: Path, k: int = 0, size: tuple[int, int] = (24, 16)) -> Path:
    """Write a small real image (from skimage.data) at path; format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(SOURCES[k % len(SOURCES)]).convert("RGB").resize(size)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}
    img.save(path, format=fmt[path.suffix.lower()])
    return path


def _caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught]


# --------------------------------------------------------------------------- registry, splits


def test_registry_names() -> None:
    assert {"lfw", "coco", "cityscapes", "folder", "demo"} <= set(DATASETS)


def test_unknown_dataset() -> None:
    with pytest.raises(RotvizError, match="unknown dataset 'imagenet'.*cityscapes.*lfw"):
        load_dataset(DataConfig("imagenet", root="."))


def test_split_for_fraction_and_determinism() -> None:
    paths = [f"p{i}/img_{i:05d}.jpg" for i in range(4000)]
    splits = [split_for(p, 0.25) for p in paths]
    assert set(splits) == {"train", "test"}
    assert abs(splits.count("test") / len(paths) - 0.25) < 0.03
    assert splits == [split_for(p, 0.25) for p in paths]
    assert all(split_for(p, 0.0) == "train" for p in paths[:200])
    assert all(split_for(p, 1.0) == "test" for p in paths[:200])
    # a larger fraction only moves files from train to test, never back
    assert all(
        split_for(p, 0.5) == "test" for p, s in zip(paths, splits, strict=True) if s == "test"
    )


def test_split_stable_when_files_are_added(tmp_path: Path) -> None:
    for i in range(12):
        _save(tmp_path / f"a/{i}.png", i)
    before = {
        r.relpath: r.split for r in load_dataset(DataConfig("folder", root=str(tmp_path))).records
    }
    for i in range(12, 40):
        _save(tmp_path / f"{'ab'[i % 2]}/{i}.png", i)
    after = {
        r.relpath: r.split for r in load_dataset(DataConfig("folder", root=str(tmp_path))).records
    }
    assert len(after) == 40
    assert {k: after[k] for k in before} == before


def test_max_images_per_split_is_stable(tmp_path: Path) -> None:
    for i in range(40):
        _save(tmp_path / f"{i:02d}.png", i, size=(4, 4))
    cfg = DataConfig("folder", root=str(tmp_path), test_fraction=0.5, max_images=5)
    ds = load_dataset(cfg)
    assert len(ds.split("train")) == 5 and len(ds.split("test")) == 5
    assert [r.relpath for r in ds.records] == sorted(r.relpath for r in ds.records)
    assert ds == load_dataset(cfg)
    _save(tmp_path / "new.png", 1, size=(4, 4))
    again = load_dataset(cfg)
    kept_before = {r.relpath for r in ds.records}
    kept_after = {r.relpath for r in again.records}
    assert len(kept_before - kept_after) <= 1  # the new file displaces at most one


# --------------------------------------------------------------------------- lfw


def _lfw_tree(root: Path) -> None:
    _save(root / "Ann_Smith" / "Ann_Smith_0001.jpg", 0)
    _save(root / "Ann_Smith" / "Ann_Smith_0002.jpg", 1)
    _save(root / "Bo_Li" / "Bo_Li_0001.jpg", 2)
    (root / "Bo_Li" / "notes.txt").write_text("not an image")


def test_lfw_generated_tree(tmp_path: Path) -> None:
    _lfw_tree(tmp_path / "lfw")
    ds = load_dataset(DataConfig("lfw", root=str(tmp_path / "lfw")))
    assert ds.name == "lfw"
    assert [(r.relpath, r.label, r.image_id) for r in ds.records] == [
        ("Ann_Smith/Ann_Smith_0001.jpg", "Ann_Smith", "Ann_Smith_0001"),
        ("Ann_Smith/Ann_Smith_0002.jpg", "Ann_Smith", "Ann_Smith_0002"),
        ("Bo_Li/Bo_Li_0001.jpg", "Bo_Li", "Bo_Li_0001"),
    ]
    assert all(r.boxes == () and Path(r.path).is_file() for r in ds.records)
    assert [r.split for r in ds.records] == [split_for(r.relpath, 0.25) for r in ds.records]


def test_lfw_root_may_be_a_parent_with_one_lfw_folder(tmp_path: Path) -> None:
    # torchvision's LFWPeople layout: <root>/lfw-py/lfw_funneled/<Person>/...
    _lfw_tree(tmp_path / "lfw-py" / "lfw_funneled")
    (tmp_path / "lfw-py" / "lfw-names.txt").write_text("Ann_Smith 2\n")
    direct = load_dataset(DataConfig("lfw", root=str(tmp_path / "lfw-py" / "lfw_funneled")))
    for root in (tmp_path / "lfw-py", tmp_path):
        ds = load_dataset(DataConfig("lfw", root=str(root)))
        assert ds.records == direct.records
        assert ds.root == direct.root


@pytest.mark.skipif(not (SHARED / "lfw").is_dir(), reason="shared LFW excerpt absent")
def test_lfw_real_excerpt() -> None:
    ds = load_dataset(DataConfig("lfw", root=str(SHARED / "lfw")))
    assert len(ds.records) == 2258
    assert len({r.label for r in ds.records}) == 989
    assert sum(r.label == "Colin_Powell" for r in ds.records) == 236
    assert abs(len(ds.split("test")) / 2258 - 0.25) < 0.03
    via_parent = load_dataset(DataConfig("lfw", root=str(SHARED)))
    assert [r.relpath for r in via_parent.records] == [r.relpath for r in ds.records]
    capped = load_dataset(DataConfig("lfw", root=str(SHARED / "lfw"), max_images=50))
    assert len(capped.split("train")) == 50 and len(capped.split("test")) == 50


# --------------------------------------------------------------------------- coco (real)

COCO = SHARED / "coco"
needs_coco = pytest.mark.skipif(not COCO.is_dir(), reason="shared COCO excerpt absent")


def _coco_cfg(**kw) -> DataConfig:
    return DataConfig("coco", root=str(COCO / "images"), ann=str(COCO / "annotations.json"), **kw)


@needs_coco
def test_coco_real_cat_dog() -> None:
    ds = load_dataset(_coco_cfg(categories=("cat", "dog")))
    assert len(ds.records) == 20
    cats = [c for r in ds.records for c in r.categories]
    assert sum(c in (17, 18) for c in cats) == 21
    assert all(any(c in (17, 18) for c in r.categories) for r in ds.records)
    raw = json.loads((COCO / "annotations.json").read_text())
    kept = {r.image_id for r in ds.records}
    assert sum(len(r.boxes) for r in ds.records) == sum(
        a["image_id"] in kept for a in raw["annotations"]
    )  # all objects of kept images, not only cats and dogs
    assert ds.category_names[17] == "cat" and ds.category_names[18] == "dog"
    assert len(ds.category_names) == 80
    # COCO's own split from coco_url: 14 train2017, 6 val2017
    assert (len(ds.split("train")), len(ds.split("test"))) == (14, 6)
    r42 = next(r for r in ds.records if r.image_id == 42)  # bbox [214.15, 41.29, 348.26, 243.78]
    assert r42.relpath == "000000000042.jpg" and r42.split == "train"
    np.testing.assert_allclose(r42.boxes_array(), [[214.15, 41.29, 562.41, 285.07]], rtol=1e-6)
    assert r42.categories == (18,) and r42.crowd == (False,)
    for r in ds.records:
        assert len(r.boxes) == len(r.categories) == len(r.crowd)


@needs_coco
def test_coco_real_category_by_id_equals_by_name() -> None:
    by_id = load_dataset(_coco_cfg(categories=("17,18",)))
    by_name = load_dataset(_coco_cfg(categories=("cat", "dog")))
    assert by_id.records == by_name.records
    assert len(load_dataset(_coco_cfg(categories=("Cat",))).records) == 7


@needs_coco
def test_coco_real_all_images_and_crowd() -> None:
    ds = load_dataset(_coco_cfg())
    assert len(ds.records) == 218
    assert sum(c for r in ds.records for c in r.crowd) == 17
    assert sum(len(r.boxes) for r in ds.records) == 1808
    assert dataset_fingerprint(ds) == dataset_fingerprint(load_dataset(_coco_cfg()))


@needs_coco
def test_coco_real_unknown_category_lists_names() -> None:
    with pytest.raises(RotvizError, match="unknown COCO category 'unicorn'.*cat.*dog"):
        load_dataset(_coco_cfg(categories=("unicorn",)))
    with pytest.raises(RotvizError, match="unknown COCO category '999'"):
        load_dataset(_coco_cfg(categories=("999",)))


# --------------------------------------------------------------------------- coco (generated)


def _coco_tree(root: Path, images: list[dict], anns: list[dict]) -> tuple[Path, Path]:
    cats = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}]
    ann = root / "instances.json"
    root.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root / "images", ann


def _img(i: int, w: int = 24, h: int = 16, url: str = "") -> dict:
    d = {"id": i, "file_name": f"{i:03d}.jpg", "width": w, "height": h}
    if url:
        d["coco_url"] = url
    return d


def _ann(i: int, image_id: int, cat: int, bbox: list[float], crowd: int = 0) -> dict:
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": crowd}


def test_coco_generated_missing_images_clip_and_hash_split(tmp_path: Path) -> None:
    images = [_img(1), _img(2), _img(3), _img(4)]
    anns = [
        _ann(1, 1, 17, [2, 3, 4, 5]),
        _ann(2, 1, 1, [-5, 10, 10, 20], crowd=1),  # -> (0, 10, 5, 16), clipped
        _ann(3, 2, 18, [30, 2, 5, 5]),  # entirely right of the 24 px image: dropped
        _ann(4, 2, 18, [0, 0, 24, 16]),
        _ann(5, 3, 17, [1, 1, 2, 2]),  # image 3 is missing on disk
        _ann(6, 4, 1, [1, 1, 2, 2]),  # person only
    ]
    img_dir, ann = _coco_tree(tmp_path, images, anns)
    for i in (1, 2, 4):
        _save(img_dir / f"{i:03d}.jpg", i, size=(24, 16))
    ds, msgs = _caught(lambda: load_coco(img_dir, ann, categories=("cat", "dog")))
    assert [r.image_id for r in ds.records] == [1, 2]
    assert ds.records[0].boxes == ((2.0, 3.0, 6.0, 8.0), (0.0, 10.0, 5.0, 16.0))
    assert ds.records[0].crowd == (False, True) and ds.records[0].categories == (17, 1)
    assert ds.records[1].boxes == ((0.0, 0.0, 24.0, 16.0),)
    assert [r.split for r in ds.records] == [split_for(r.relpath, 0.25) for r in ds.records]
    missing = [m for m in msgs if "missing" in m]
    assert len(missing) == 1 and missing[0].startswith("1 of 3 images")
    clipped = [m for m in msgs if "clipped" in m]
    assert len(clipped) == 1 and clipped[0].startswith("2 boxes") and "1 empty boxes" in clipped[0]


def test_coco_generated_split_folders_and_official_split(tmp_path: Path) -> None:
    base = "http://images.cocodataset.org"
    images = [
        _img(1, url=f"{base}/train2017/001.jpg"),
        _img(2, url=f"{base}/val2017/002.jpg"),
    ]
    anns = [_ann(1, 1, 17, [1, 1, 3, 3]), _ann(2, 2, 17, [1, 1, 3, 3])]
    img_dir, ann = _coco_tree(tmp_path, images, anns)
    _save(img_dir / "train2017" / "001.jpg", 1)
    _save(img_dir / "val2017" / "002.jpg", 2)
    ds = load_coco(img_dir, ann, test_fraction=0.0)
    assert [(r.relpath, r.split) for r in ds.records] == [
        ("train2017/001.jpg", "train"),
        ("val2017/002.jpg", "test"),
    ]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not a valid JSON"),
        ("[1, 2]", "not a COCO instances json"),
        (json.dumps({"images": [], "annotations": []}), "missing key.*categories"),
        (
            json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}),
            "entry 0 of 'images' lacks",
        ),
    ],
)
def test_coco_malformed_json(tmp_path: Path, content: str, match: str) -> None:
    ann = tmp_path / "bad.json"
    ann.write_text(content)
    with pytest.raises(RotvizError, match=match):
        load_dataset(DataConfig("coco", root=str(tmp_path), ann=str(ann)))


def test_coco_needs_ann_and_root(tmp_path: Path) -> None:
    with pytest.raises(RotvizError, match="--ann"):
        load_dataset(DataConfig("coco", root=str(tmp_path)))
    with pytest.raises(RotvizError, match="does not exist"):
        load_dataset(DataConfig("coco", root=str(tmp_path), ann=str(tmp_path / "nope.json")))
    with pytest.raises(RotvizError, match="--root"):
        load_dataset(DataConfig("coco", ann=str(tmp_path / "x.json")))


def test_coco_no_image_present(tmp_path: Path) -> None:
    img_dir, ann = _coco_tree(tmp_path, [_img(1)], [_ann(1, 1, 17, [1, 1, 2, 2])])
    img_dir.mkdir()
    with pytest.raises(RotvizError, match="no images found"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_coco(img_dir, ann)


# --------------------------------------------------------------------------- cityscapes


def _cityscapes_tree(root: Path) -> list[str]:
    rels = [
        "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
        "leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png",
        "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png",
        "leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png",
    ]
    for k, rel in enumerate(rels):
        _save(root / rel, k, size=(32, 16))
    (root / "leftImg8bit/train/aachen/readme.txt").write_text("x")
    _save(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_color.png", 0)
    return rels


def test_cityscapes_generated(tmp_path: Path) -> None:
    rels = _cityscapes_tree(tmp_path)
    ds = load_dataset(DataConfig("cityscapes", root=str(tmp_path)))
    assert [r.relpath for r in ds.records] == sorted(rels)
    got = {r.relpath.split("/")[2]: (r.split, r.label, r.image_id) for r in ds.records}
    assert got == {
        "aachen": ("train", "aachen", "aachen_000000_000019"),
        "bochum": ("train", "bochum", "bochum_000000_000313"),
        "frankfurt": ("val", "frankfurt", "frankfurt_000000_000294"),
        "berlin": ("test", "berlin", "berlin_000000_000019"),
    }
    inner = load_dataset(DataConfig("cityscapes", root=str(tmp_path / "leftImg8bit")))
    assert inner.records == ds.records


def test_cityscapes_without_leftimg8bit(tmp_path: Path) -> None:
    with pytest.raises(RotvizError, match="no leftImg8bit folder"):
        load_dataset(DataConfig("cityscapes", root=str(tmp_path)))


# --------------------------------------------------------------------------- folder


def test_folder_nested(tmp_path: Path) -> None:
    _save(tmp_path / "top.JPG", 0)
    _save(tmp_path / "cats" / "a.png", 1)
    _save(tmp_path / "cats" / "deep" / "b.jpeg", 2)
    _save(tmp_path / "dogs" / "c.Png", 3)
    _save(tmp_path / "dogs" / "d.bmp", 4)
    _save(tmp_path / ".hidden" / "e.png", 0)
    (tmp_path / "dogs" / "notes.txt").write_text("no")
    ds = load_dataset(DataConfig("folder", root=str(tmp_path)))
    assert [(r.relpath, r.label) for r in ds.records] == [
        ("cats/a.png", "cats"),
        ("cats/deep/b.jpeg", "cats"),
        ("dogs/c.Png", "dogs"),
        ("dogs/d.bmp", "dogs"),
        ("top.JPG", None),
    ]
    assert ds.root == str(tmp_path.resolve())


def test_folder_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(RotvizError, match="does not exist"):
        load_dataset(DataConfig("folder", root=str(tmp_path / "missing")))
    with pytest.raises(RotvizError, match="--root"):
        load_dataset(DataConfig("folder"))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(RotvizError, match="no images found under .*empty"):
        load_dataset(DataConfig("folder", root=str(tmp_path / "empty")))
    with pytest.raises(RotvizError, match="no images found"):
        load_dataset(DataConfig("lfw", root=str(tmp_path / "empty")))
    with pytest.raises(RotvizError, match="only apply to the coco"):
        load_dataset(DataConfig("folder", root=str(tmp_path), categories=("cat",)))
    with pytest.raises(RotvizError, match="test_fraction"):
        load_dataset(DataConfig("folder", root=str(tmp_path), test_fraction=1.5))


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_ignores_root_but_sees_content(tmp_path: Path) -> None:
    _lfw_tree(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    fp1 = dataset_fingerprint(load_dataset(DataConfig("lfw", root=str(tmp_path / "one"))))
    fp2 = dataset_fingerprint(load_dataset(DataConfig("lfw", root=str(tmp_path / "two"))))
    assert fp1 == fp2
    _save(tmp_path / "two" / "Bo_Li" / "Bo_Li_0001.jpg", 3, size=(40, 30))  # new content
    fp3 = dataset_fingerprint(load_dataset(DataConfig("lfw", root=str(tmp_path / "two"))))
    assert fp3 != fp1

    img_dir, ann = _coco_tree(tmp_path / "c", [_img(1)], [_ann(1, 1, 17, [1, 1, 2, 2])])
    _save(img_dir / "001.jpg", 0)
    fp_a = dataset_fingerprint(load_coco(img_dir, ann))
    _coco_tree(tmp_path / "c", [_img(1)], [_ann(1, 1, 17, [1, 1, 3, 2])])
    assert dataset_fingerprint(load_coco(img_dir, ann)) != fp_a
