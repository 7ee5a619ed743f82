"""One list of image formats: every accepted format reads the same through a folder and an upload."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rotviz.config import DataConfig
from rotviz.data.datasets import IMAGE_EXTENSIONS, IMAGE_FORMATS, formats_text, load_dataset
from rotviz.data.preprocess import prepare_split
from rotviz.data.uploads import UPLOAD_TYPES, read_upload

LOSSY = {".jpg", ".jpeg", ".webp"}


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photograph (skimage's cat), 64 x 48 RGB."""
    from skimage import data

    return Image.fromarray(data.chelsea()).resize((64, 48), Image.Resampling.BILINEAR)


def encode(img: Image.Image, ext: str) -> bytes:
    buf = io.BytesIO()
    fmt = Image.registered_extensions()[ext]
    img.save(buf, format=fmt, **({"quality": 95} if ext in LOSSY else {}))
    return buf.getvalue()


def test_uploads_accept_exactly_the_folder_formats():
    assert {"." + t for t in UPLOAD_TYPES} == IMAGE_EXTENSIONS
    assert {".bmp", ".tif", ".tiff", ".gif"} <= IMAGE_EXTENSIONS
    for name in IMAGE_FORMATS:
        assert name in formats_text()


def test_every_format_round_trips_through_folder_and_upload(tmp_path, photo):
    """Each accepted extension: the folder loader and the upload decoder give the same pixels,
    close to the source image (exact for lossless formats but GIF's palette)."""
    size = 32
    expected = np.asarray(photo.resize((size, size), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    root = tmp_path / "imgs"
    root.mkdir()
    files = {}
    for ext in sorted(IMAGE_EXTENSIONS):
        files[f"img{ext}"] = encode(photo, ext)
        (root / f"img{ext}").write_bytes(files[f"img{ext}"])
    ds = load_dataset(DataConfig("folder", root=str(root)))
    assert sorted(r.relpath for r in ds.records) == sorted(files)
    by_name = {}
    for split in ("train", "test"):
        if any(r.split == split for r in ds.records):
            prepared = prepare_split(ds, split, size=size, cache_dir=tmp_path / "cache")
            assert prepared.skipped == []
            by_name.update({r.relpath: prepared.images[i] for i, r in enumerate(prepared.records)})
    for name, data in files.items():
        upload = read_upload(name, data, size=size)
        np.testing.assert_array_equal(upload.pixels, by_name[name], err_msg=name)
        error = np.abs(upload.pixels.astype(int) - expected.astype(int)).mean()
        assert error < (8 if name.endswith((".gif", ".jpg", ".jpeg", ".webp")) else 1), (
            name,
            error,
        )


def test_animated_gif_gives_its_first_frame(tmp_path):
    red, blue = Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 255))
    buf = io.BytesIO()
    red.save(buf, format="GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 2
    up = read_upload("anim.gif", buf.getvalue(), size=16)
    assert (up.pixels[0] > 250).all() and (up.pixels[2] < 5).all()
    (tmp_path / "anim.gif").write_bytes(buf.getvalue())
    ds = load_dataset(DataConfig("folder", root=str(tmp_path), test_fraction=0.0))
    prepared = prepare_split(ds, "train", size=16, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(prepared.images[0], up.pixels)
