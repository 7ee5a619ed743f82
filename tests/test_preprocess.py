"""Tests for rotviz.data.preprocess: decoding, resizing with boxes, and the on-disk cache."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from rotviz.data import preprocess
from rotviz.data.preprocess import (
    MAX_PIXELS,
    MIN_SIDE,
    BoxTransform,
    decode_image,
    default_cache_dir,
    prepare_images,
    prepare_split,
    resize_square,
)
from rotviz.data.records import Dataset, Record
from rotviz.errors import RotvizError

# ----------------------------------------------------------------------------- helpers


def save(arr_or_img: np.ndarray | Image.Image, path: Path, **kw) -> Path:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    img.save(path, **kw)
    return path


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 arrays."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def make_dataset(root: Path, files: list[str], **annotations) -> Dataset:
    """A Dataset whose train split is the given files (paths relative to root)."""
    records = []
    for i, rel in enumerate(files):
        ann = annotations.get(rel, {})
        records.append(
            Record(
                path=str(root / rel),
                relpath=rel,
                split="train",
                image_id=i,
                boxes=ann.get("boxes", ()),
                categories=ann.get("categories", ()),
                crowd=ann.get("crowd", ()),
            )
        )
    records.append(Record(str(root / "other.png"), "other.png", "test", 99))
    return Dataset(name="fixture", root=str(root), records=tuple(records))


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """Three real images (JPEG/PNG) of different shapes."""
    root = tmp_path / "images"
    root.mkdir()
    save(data.chelsea(), root / "chelsea.jpg", quality=92)  # 451 x 300
    save(data.coffee(), root / "coffee.png")  # 600 x 400
    save(data.astronaut()[:, :256], root / "astronaut.jpg", quality=92)  # 256 x 512
    return root


TREE_FILES = ["chelsea.jpg", "coffee.png", "astronaut.jpg"]


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("orientation", "stored_k"),
    [(3, 2), (6, 1), (8, -1)],  # stored = np.rot90(upright, stored_k), counter-clockwise
)
def test_exif_orientation_gives_upright_image(tmp_path: Path, orientation: int, stored_k: int):
    upright = data.chelsea()  # 300 x 451, not square so a wrong turn changes the shape
    stored = np.ascontiguousarray(np.rot90(upright, stored_k))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(stored, tmp_path / "rotated.jpg", quality=95, exif=exif.tobytes())
    decoded = np.asarray(decode_image(path))
    assert decoded.shape == upright.shape
    assert mad(decoded, upright) < 3.0
    # the same file without applying the tag would be the stored orientation, far from upright
    if stored_k == 2:
        assert mad(np.asarray(Image.open(path).convert("RGB")), upright) > 20


def test_decode_accepts_path_str_bytes_and_stream(tmp_path: Path):
    path = save(data.coffee(), tmp_path / "coffee.png")
    ref = np.asarray(decode_image(path))
    assert np.array_equal(ref, data.coffee())
    assert np.array_equal(np.asarray(decode_image(str(path))), ref)
    assert np.array_equal(np.asarray(decode_image(path.read_bytes())), ref)
    with open(path, "rb") as fp:
        assert np.array_equal(np.asarray(decode_image(fp)), ref)


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path: Path):
    gray = data.camera()
    img = decode_image(save(gray, tmp_path / "camera.png"))
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(arr[..., c], gray)


def test_rgba_is_composited_on_white(tmp_path: Path):
    rgb = data.astronaut()[:64, :64]
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :32] = 0  # left half fully transparent
    alpha[:, 32:40] = 128
    img = decode_image(save(np.dstack([rgb, alpha]), tmp_path / "rgba.png"))
    arr = np.asarray(img).astype(int)
    assert img.mode == "RGB"
    assert (arr[:, :32] == 255).all()
    assert np.array_equal(arr[:, 40:], rgb[:, 40:])
    half = (rgb[:, 32:40].astype(int) * 128 + 255 * 127) / 255
    assert np.abs(arr[:, 32:40] - half).max() <= 1


def test_palette_with_and_without_transparency(tmp_path: Path):
    pal = Image.fromarray(data.coffee()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    decoded = decode_image(save(pal, tmp_path / "pal.png"))
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(pal.convert("RGB")))

    idx = np.zeros((16, 16), np.uint8)
    idx[8:] = 1
    tpal = Image.fromarray(idx, "P")
    tpal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    decoded = np.asarray(decode_image(save(tpal, tmp_path / "tpal.png", transparency=0)))
    assert (decoded[:8] == 255).all()  # transparent index -> white
    assert (decoded[8:] == [200, 100, 50]).all()


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path):
    values = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    arr = np.asarray(decode_image(path))
    assert arr.dtype == np.uint8 and arr.shape == (64, 64, 3)
    assert arr.min() == 0 and arr.max() == 255
    assert np.abs(arr[..., 0].astype(int) - values / 257.0).max() <= 0.5
    assert len(np.unique(arr)) > 200  # clipping at 255 would leave a handful of levels


def test_32bit_integer_tiff_with_16bit_values(tmp_path: Path):
    values = np.linspace(0, 65535, 32 * 32).astype(np.int32).reshape(32, 32)
    path = save(Image.fromarray(values, "I"), tmp_path / "deep.tif")
    assert Image.open(path).mode == "I"
    arr = np.asarray(decode_image(path))[..., 1]
    assert arr.min() == 0 and arr.max() == 255
    assert np.abs(arr.astype(int) - values / 257.0).max() <= 0.5


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path):
    rgb = data.astronaut()
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(jpeg_bytes(Image.fromarray(rgb).convert("CMYK"), quality=95))
    assert Image.open(path).mode == "CMYK"
    img = decode_image(path)
    assert img.mode == "RGB"
    assert mad(np.asarray(img), rgb) < 5.0


def test_draft_decoding_matches_full_decoding(tmp_path: Path):
    big = Image.fromarray(data.astronaut()).resize((1024, 1024), Image.Resampling.LANCZOS)
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes(big, quality=92))
    full = decode_image(path)
    drafted = decode_image(path, target_size=128)
    assert full.size == (1024, 1024)
    assert drafted.size == (256, 256)  # 1/4 DCT scaling, still >= 2 x 128
    for mode in ("stretch", "center-crop"):
        a, ta = resize_square(full, 128, mode)
        b, tb = resize_square(drafted, 128, mode)
        assert mad(a, b) < 2.0
        assert np.allclose(ta.apply([[0, 0, 1024, 1024]]), [[0, 0, 128, 128]])
        assert np.allclose(tb.apply([[0, 0, 256, 256]]), [[0, 0, 128, 128]])


def test_draft_never_goes_below_twice_the_target(tmp_path: Path):
    path = tmp_path / "wide.jpg"
    path.write_bytes(jpeg_bytes(Image.new("RGB", (2000, 300), (9, 9, 9))))
    assert decode_image(path, target_size=128).size == (2000, 300)  # 300 // 256 = 1: no draft


def test_truncated_jpeg_is_an_error(tmp_path: Path):
    raw = jpeg_bytes(Image.fromarray(data.astronaut()), quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RotvizError, match="truncated"):
        decode_image(path)
    with pytest.raises(RotvizError, match="truncated"):
        decode_image(path, target_size=128)


def test_text_file_named_jpg_is_an_error(tmp_path: Path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(RotvizError, match="not an image"):
        decode_image(path)


def test_tiny_image_is_an_error(tmp_path: Path):
    path = save(np.zeros((1, 1, 3), np.uint8), tmp_path / "dot.png")
    with pytest.raises(RotvizError, match=r"1 x 1, smaller than"):
        decode_image(path)
    ok = save(np.zeros((MIN_SIDE, MIN_SIDE, 3), np.uint8), tmp_path / "ok.png")
    assert decode_image(ok).size == (MIN_SIDE, MIN_SIDE)


def test_huge_image_header_is_an_error(tmp_path: Path):
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 Mpx, compresses to a few kB
    assert path.stat().st_size < 200_000
    with pytest.raises(RotvizError, match=r"20000 x 20000, larger than the 100 megapixel"):
        decode_image(path)


def test_over_our_limit_but_under_pillows_is_an_error(tmp_path: Path, recwarn):
    side = int(MAX_PIXELS**0.5) + 10  # over MAX_PIXELS; Pillow only warns below 2 x 89 Mpx
    path = tmp_path / "big.png"
    Image.new("1", (side, side)).save(path)
    with pytest.raises(RotvizError, match=rf"{side} x {side}, larger than"):
        decode_image(path)


def test_missing_file_is_an_error(tmp_path: Path):
    with pytest.raises(RotvizError, match="not found"):
        decode_image(tmp_path / "nope.jpg")


# ----------------------------------------------------------------------------- resizing


def test_stretch_resize_boxes_hand_computed():
    img = Image.new("RGB", (200, 100))
    pixels, t = resize_square(img, 128, "stretch")
    assert pixels.shape == (3, 128, 128) and pixels.dtype == np.uint8
    assert (t.scale_x, t.scale_y, t.offset_x, t.offset_y) == (0.64, 1.28, 0.0, 0.0)
    boxes = np.array([[50, 25, 150, 75], [-10, -10, 250, 50], [0, 0, 200, 100]])
    out = t.apply(boxes)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[32, 32, 96, 96], [0, 0, 128, 64], [0, 0, 128, 128]])


def test_center_crop_boxes_hand_computed_and_outside_box_is_degenerate():
    img = Image.new("RGB", (200, 100))
    _, t = resize_square(img, 128, "center-crop")
    assert (t.scale_x, t.scale_y, t.offset_x, t.offset_y) == (1.28, 1.28, 50.0, 0.0)
    boxes = np.array(
        [
            [50, 0, 150, 100],  # exactly the crop
            [75, 25, 125, 75],  # centre quarter
            [0, 10, 40, 50],  # entirely left of the crop
            [25, 10, 75, 50],  # straddles the left edge
        ]
    )
    out = t.apply(boxes)
    np.testing.assert_allclose(
        out, [[0, 0, 128, 128], [32, 32, 96, 96], [0, 12.8, 0, 64], [0, 12.8, 32, 64]], rtol=1e-6
    )
    assert BoxTransform.degenerate(out).tolist() == [False, False, True, False]


def test_center_crop_takes_the_middle_pixels_only():
    a = np.zeros((100, 200, 3), np.uint8)
    a[:, :50] = (255, 0, 0)
    a[:, 50:150] = (0, 255, 0)
    a[:, 150:] = (0, 0, 255)
    cropped, _ = resize_square(Image.fromarray(a), 64, "center-crop")
    assert (cropped[1] == 255).all() and (cropped[0] == 0).all() and (cropped[2] == 0).all()
    stretched, _ = resize_square(Image.fromarray(a), 64, "stretch")
    assert (stretched[0, :, :15] == 255).all()  # first quarter (16 px) is the red band
    assert (stretched[2, :, 49:] == 255).all()  # last quarter is the blue band


def test_resize_matches_pillow_bilinear_of_the_same_image():
    img = Image.fromarray(data.chelsea())
    pixels, _ = resize_square(img, 128)
    ref = np.asarray(img.resize((128, 128), Image.Resampling.BILINEAR, reducing_gap=None))
    assert np.array_equal(pixels, ref.transpose(2, 0, 1))


def test_bad_resize_settings():
    with pytest.raises(RotvizError, match="resize mode"):
        resize_square(Image.new("RGB", (16, 16)), 128, "letterbox")
    with pytest.raises(RotvizError, match="image size"):
        resize_square(Image.new("RGB", (16, 16)), 0)


def test_prepare_images_mixed_modes_and_sizes():
    imgs = [
        Image.fromarray(data.chelsea()),
        Image.fromarray(data.camera()),
        Image.fromarray(np.dstack([data.astronaut(), np.full((512, 512), 255, np.uint8)])),
    ]
    out = prepare_images(imgs, size=32, resize="center-crop")
    assert out.shape == (3, 3, 32, 32) and out.dtype == np.uint8
    assert np.array_equal(out[0], resize_square(imgs[0], 32, "center-crop")[0])
    assert np.array_equal(out[1][0], out[1][2])  # grayscale -> equal channels
    assert np.array_equal(out[2], resize_square(imgs[2].convert("RGB"), 32, "center-crop")[0])
    assert prepare_images([], size=32).shape == (0, 3, 32, 32)


# ----------------------------------------------------------------------------- the cache


def test_prepare_split_boxes_and_second_call_uses_the_cache(
    image_tree: Path, tmp_path: Path, monkeypatch
):
    ds = make_dataset(
        image_tree,
        TREE_FILES,
        **{
            "coffee.png": {  # 600 x 400 -> x * 128/600, y * 128/400
                "boxes": ((150, 100, 450, 300), (0, 0, 600, 400)),
                "categories": (17, 18),
                "crowd": (False, True),
            }
        },
    )
    cache = tmp_path / "cache"
    seen: list[tuple[int, int]] = []
    first = prepare_split(
        ds, "train", size=64, cache_dir=cache, progress=lambda d, t: seen.append((d, t))
    )
    assert len(first) == 3 and first.images.shape == (3, 3, 64, 64)
    assert [r.relpath for r in first.records] == TREE_FILES
    assert seen[-1] == (3, 3) and [d for d, _ in seen] == [1, 2, 3]
    assert first.skipped == []
    np.testing.assert_allclose(first.boxes[1], [[16, 16, 48, 48], [0, 0, 64, 64]])
    assert first.categories[1].dtype == np.int64 and first.categories[1].tolist() == [17, 18]
    assert first.crowd[1].dtype == bool and first.crowd[1].tolist() == [False, True]
    assert first.boxes[0].shape == (0, 4) and first.boxes[0].dtype == np.float32
    expected = resize_square(decode_image(image_tree / "coffee.png"), 64)[0]
    assert np.array_equal(first.images[1], expected)
    assert isinstance(first.images, np.memmap) and first.cache_path.parent == cache
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]  # no temp files left

    def boom(*args, **kwargs):
        raise AssertionError("decode_image must not run when the cache is valid")

    monkeypatch.setattr(preprocess, "decode_image", boom)
    second = prepare_split(ds, "train", size=64, cache_dir=cache)
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    assert [r.relpath for r in second.records] == TREE_FILES
    for a, b in zip(first.boxes, second.boxes, strict=True):
        assert np.array_equal(a, b) and b.dtype == np.float32
    assert second.crowd[1].tolist() == [False, True]
    assert second.transforms == first.transforms


def count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = preprocess.decode_image

    def counting(path, target_size=None):
        calls.append(Path(path).name)
        return real(path, target_size=target_size)

    monkeypatch.setattr(preprocess, "decode_image", counting)
    return calls


def test_truncated_npy_is_detected_and_rebuilt(image_tree: Path, tmp_path: Path, monkeypatch):
    ds = make_dataset(image_tree, TREE_FILES)
    first = prepare_split(ds, "train", size=32, cache_dir=tmp_path)
    reference = np.array(first.images)
    npy = first.cache_path
    del first
    with open(npy, "r+b") as fp:
        fp.truncate(npy.stat().st_size // 2)
    calls = count_decodes(monkeypatch)
    rebuilt = prepare_split(ds, "train", size=32, cache_dir=tmp_path)
    assert sorted(calls) == sorted(TREE_FILES)
    assert np.array_equal(np.asarray(rebuilt.images), reference)


def test_npy_without_index_is_not_trusted(image_tree: Path, tmp_path: Path, monkeypatch):
    ds = make_dataset(image_tree, TREE_FILES)
    first = prepare_split(ds, "train", size=32, cache_dir=tmp_path)
    first.cache_path.with_suffix(".json").unlink()  # as if the process died before the index
    calls = count_decodes(monkeypatch)
    prepare_split(ds, "train", size=32, cache_dir=tmp_path)
    assert len(calls) == 3


def test_changed_file_invalidates_the_cache(image_tree: Path, tmp_path: Path, monkeypatch):
    ds = make_dataset(image_tree, TREE_FILES)
    first = prepare_split(ds, "train", size=32, cache_dir=tmp_path)
    path = image_tree / "coffee.png"
    st = path.stat()
    save(255 - data.coffee(), path)  # same size in pixels, different content
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    calls = count_decodes(monkeypatch)
    second = prepare_split(ds, "train", size=32, cache_dir=tmp_path)
    assert calls  # rebuilt
    assert second.cache_path != first.cache_path
    assert mad(np.asarray(second.images[1]), np.asarray(first.images[1])) > 50
    assert np.array_equal(np.asarray(second.images[0]), np.asarray(first.images[0]))

    # only the mtime changes: still a new key
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
    third = prepare_split(ds, "train", size=32, cache_dir=tmp_path)
    assert third.cache_path not in (first.cache_path, second.cache_path)


def test_settings_give_separate_caches(image_tree: Path, tmp_path: Path):
    ds = make_dataset(image_tree, TREE_FILES)
    a = prepare_split(ds, "train", size=32, cache_dir=tmp_path)
    b = prepare_split(ds, "train", size=32, resize="center-crop", cache_dir=tmp_path)
    c = prepare_split(ds, "train", size=40, cache_dir=tmp_path)
    assert len({a.cache_path, b.cache_path, c.cache_path}) == 3
    assert c.images.shape == (3, 3, 40, 40)
    assert mad(np.asarray(a.images[1]), np.asarray(b.images[1])) > 1  # 600x400: crop differs


def test_unreadable_files_are_skipped_with_one_warning(image_tree: Path, tmp_path: Path, caplog):
    raw = jpeg_bytes(Image.fromarray(data.astronaut()))
    (image_tree / "cut.jpg").write_bytes(raw[: len(raw) // 3])
    (image_tree / "notes.jpg").write_text("hello")
    save(np.zeros((1, 1, 3), np.uint8), image_tree / "dot.png")
    Image.new("1", (20000, 20000)).save(image_tree / "huge.png")
    files = ["chelsea.jpg", "cut.jpg", "notes.jpg", "dot.png", "huge.png", "missing.jpg"]
    ds = make_dataset(image_tree, files, **{"chelsea.jpg": {"boxes": ((0, 0, 451, 300),)}})
    with caplog.at_level(logging.WARNING, logger="rotviz.data.preprocess"):
        prepared = prepare_split(ds, "train", size=32, cache_dir=tmp_path)
    assert [r.relpath for r in prepared.records] == ["chelsea.jpg"]
    assert prepared.images.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(prepared.boxes[0], [[0, 0, 32, 32]])
    reasons = dict(prepared.skipped)
    assert list(reasons) == files[1:]
    assert "truncated" in reasons["cut.jpg"]
    assert "not an image" in reasons["notes.jpg"]
    assert "smaller than" in reasons["dot.png"]
    assert "20000 x 20000" in reasons["huge.png"]
    assert "not found" in reasons["missing.jpg"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "skipped 5 of 6" in line and "\n" not in line
    assert "cut.jpg" in line and "missing.jpg" in line and not line.endswith("more")

    # the cache keeps the skip list, and loading it warns nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rotviz.data.preprocess"):
        again = prepare_split(ds, "train", size=32, cache_dir=tmp_path)
    assert again.skipped == prepared.skipped and not caplog.records
    assert np.array_equal(np.asarray(again.images), np.asarray(prepared.images))


def test_many_unreadable_files_are_summarised(image_tree: Path, tmp_path: Path, caplog):
    bad = [f"bad{i}.jpg" for i in range(9)]
    for name in bad:
        (image_tree / name).write_text("x")
    ds = make_dataset(image_tree, ["coffee.png", *bad])
    with caplog.at_level(logging.WARNING, logger="rotviz.data.preprocess"):
        prepared = prepare_split(ds, "train", size=16, cache_dir=tmp_path, workers=3)
    assert len(prepared) == 1 and len(prepared.skipped) == 9
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    line = record.getMessage()
    assert "skipped 9 of 10" in line and line.endswith("and 4 more")
    assert "bad0.jpg" in line and "bad8.jpg" not in line


def test_everything_unreadable_is_an_error(tmp_path: Path):
    (tmp_path / "a.jpg").write_text("x")
    ds = make_dataset(tmp_path, ["a.jpg", "b.jpg"])
    with pytest.raises(RotvizError, match=r"none of the 2 images"):
        prepare_split(ds, "train", size=16, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # no half cache, no temp files


def test_empty_split_is_an_error(image_tree: Path, tmp_path: Path):
    ds = make_dataset(image_tree, TREE_FILES)
    with pytest.raises(RotvizError, match="no images in the 'val' split"):
        prepare_split(ds, "val", cache_dir=tmp_path)


def test_center_crop_split_drops_boxes_outside_the_crop(image_tree: Path, tmp_path: Path):
    # coffee is 600 x 400: crop x in [100, 500], scale 64 / 400 = 0.16
    ann = {
        "boxes": ((0, 0, 80, 400), (100, 0, 300, 200), (550, 0, 600, 50)),
        "categories": (1, 2, 3),
        "crowd": (True, False, True),
    }
    ds = make_dataset(image_tree, ["coffee.png"], **{"coffee.png": ann})
    prepared = prepare_split(ds, "train", size=64, resize="center-crop", cache_dir=tmp_path)
    np.testing.assert_allclose(prepared.boxes[0], [[0, 0, 32, 32]])
    assert prepared.categories[0].tolist() == [2]
    assert prepared.crowd[0].tolist() == [False]
    assert prepared.transforms[0] == BoxTransform(0.16, 0.16, 100.0, 0.0, 64)


def test_boxes_stay_in_original_pixels_when_jpeg_draft_reduces(tmp_path: Path):
    big = Image.fromarray(data.astronaut()).resize((1200, 800))
    big.save(tmp_path / "big.jpg", quality=90)
    ann = {"boxes": ((200, 0, 1000, 800), (600, 400, 800, 600), (0, 0, 1200, 800))}
    ds = make_dataset(tmp_path, ["big.jpg"], **{"big.jpg": ann})
    # size 64 asks for >= 128 px: 1200 x 800 decodes at 1/4, 300 x 200
    assert decode_image(tmp_path / "big.jpg", target_size=64).size == (300, 200)
    crop = prepare_split(ds, "train", size=64, resize="center-crop", cache_dir=tmp_path / "c")
    np.testing.assert_allclose(
        crop.boxes[0], [[0, 0, 64, 64], [32, 32, 48, 48], [0, 0, 64, 64]], atol=1e-4
    )
    stretch = prepare_split(ds, "train", size=64, cache_dir=tmp_path / "c")
    sx, sy = 64 / 1200, 64 / 800
    expected = [
        [200 * sx, 0, 1000 * sx, 64],
        [600 * sx, 400 * sy, 800 * sx, 600 * sy],
        [0, 0, 64, 64],
    ]
    np.testing.assert_allclose(stretch.boxes[0], expected, rtol=1e-5)


def test_exif_rotated_draft_jpeg_boxes_land_on_the_object(tmp_path: Path):
    upright = np.full((800, 1600, 3), 128, np.uint8)  # H x W, upright frame
    upright[200:600, 400:1200] = (220, 30, 30)  # the object, box (400, 200, 1200, 600)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter counter-clockwise; viewers turn it back
    stored = np.ascontiguousarray(np.rot90(upright, 1))
    save(stored, tmp_path / "phone.jpg", quality=92, exif=exif.tobytes())
    ann = {"boxes": ((400, 200, 1200, 600),)}
    ds = make_dataset(tmp_path, ["phone.jpg"], **{"phone.jpg": ann})
    prepared = prepare_split(ds, "train", size=64, cache_dir=tmp_path / "c")
    np.testing.assert_allclose(prepared.boxes[0], [[16, 16, 48, 48]])
    img = np.asarray(prepared.images[0]).astype(int)
    assert np.abs(img[:, 18:46, 18:46] - np.array([220, 30, 30])[:, None, None]).max() < 20
    assert np.abs(img[:, :, :14] - 128).max() < 20 and np.abs(img[:, :14, :] - 128).max() < 20


def test_real_coco_excerpt(tmp_path: Path):
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco"
    if not (root / "annotations.json").exists():
        pytest.skip("../shared/data/coco is not present")
    ann = json.loads((root / "annotations.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for a in ann["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = sorted(ann["images"], key=lambda im: im["file_name"])[:60]
    records = []
    for im in images:
        anns = by_image.get(im["id"], [])
        records.append(
            Record(
                path=str(root / "images" / im["file_name"]),
                relpath=f"images/{im['file_name']}",
                split="train",
                image_id=im["id"],
                boxes=tuple((x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in anns)),
                categories=tuple(a["category_id"] for a in anns),
                crowd=tuple(bool(a["iscrowd"]) for a in anns),
            )
        )
    ds = Dataset("coco-excerpt", str(root), tuple(records))
    prepared = prepare_split(ds, "train", size=128, cache_dir=tmp_path)
    assert len(prepared) == len(images) and not prepared.skipped
    for im, boxes, cats in zip(images, prepared.boxes, prepared.categories, strict=True):
        anns = by_image.get(im["id"], [])
        sx, sy = 128 / im["width"], 128 / im["height"]  # sizes from the json, not the decode
        expected = [
            [x * sx, y * sy, (x + w) * sx, (y + h) * sy] for x, y, w, h in (a["bbox"] for a in anns)
        ]
        np.testing.assert_allclose(boxes, np.clip(np.reshape(expected, (-1, 4)), 0, 128), atol=1e-3)
        assert cats.tolist() == [a["category_id"] for a in anns]
    first = images[0]
    reference = np.asarray(Image.open(root / "images" / first["file_name"]).convert("RGB"))
    full, _ = resize_square(Image.fromarray(reference), 128)
    assert mad(np.asarray(prepared.images[0]), full) < 3.0  # draft decode ~ full decode


def test_default_cache_dir(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("ROTVIZ_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ROTVIZ_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "rotviz" / "preprocessed"
