"""Decode images once, resize them to squares, scale their boxes, and cache the result on disk.

The cache of one split is two files in the cache directory: ``<key>.npy`` (uint8
(N, 3, S, S), loaded back as a read-only memmap) and ``<key>.json`` (which records were kept,
their boxes in resized pixels, what was skipped and why). The .json is written last, so a
crash never leaves a cache that looks valid.

Resizing uses Pillow's BILINEAR filter with ``reducing_gap=None``: a triangle filter whose
support grows with the reduction factor (antialiased, like torchvision's
``resize(antialias=True)``), applied exactly, without Pillow's faster two-step reduce.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from rotviz.config import IMAGE_SIZE, stable_hash
from rotviz.data.records import Dataset, Record
from rotviz.errors import RotvizError

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when decoding or resizing changes, so old caches are rebuilt
MIN_SIDE = 8  # px: smaller images carry no usable content after a 128 px resize
# width x height; above this decoding needs gigabytes of RAM. Pillow itself warns
# (DecompressionBombWarning) from 89.5 Mpx and refuses above 179 Mpx: both sizes still get
# this module's RotvizError above MAX_PIXELS, with the image's W x H in the message.
MAX_PIXELS = 100_000_000
RESIZE_MODES = ("stretch", "center-crop")
SKIPPED_NAMES_SHOWN = 5  # skipped files named in the warning line before "and N more"
ORIGINAL_SIZE = "rotviz_original_size"  # img.info key: upright (W, H) before JPEG draft
_READ_AHEAD = 4  # decoded images waiting per worker thread, bounds memory while building

ImageSource = str | Path | bytes | BinaryIO


class _BadImage(Exception):
    """An image that cannot be used; the message is the reason, without the file name."""


# --------------------------------------------------------------------------- decoding


def decode_image(source: ImageSource, target_size: int | None = None) -> Image.Image:
    """Decode one image to 8-bit RGB, upright (EXIF orientation applied).

    Grayscale, palette, bilevel, CMYK and YCbCr convert to RGB; transparency (RGBA, LA,
    palette with a transparent colour) is composited on white; 16-bit images are scaled
    from their 0..65535 range, not clipped. When target_size is given, JPEGs decode at a
    reduced scale that still keeps both sides >= 2 * target_size (libjpeg DCT scaling);
    the upright size of the full image is in img.info[ORIGINAL_SIZE], the frame boxes are
    given in (pass it to resize_square as source_size).
    Raises RotvizError for files that are missing, not images, truncated, smaller than
    MIN_SIDE or larger than MAX_PIXELS.
    """
    try:
        return _decode(source, target_size)
    except _BadImage as err:
        raise RotvizError(f"cannot use {_describe(source)}: {err}") from err


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return "the uploaded image"
    return str(getattr(source, "name", "the image stream"))


def _decode(source: ImageSource, target_size: int | None) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        return _decode_stream(io.BytesIO(source), target_size)
    if not isinstance(source, (str, Path)):
        return _decode_stream(source, target_size)
    try:
        fp = open(source, "rb")  # noqa: SIM115 (closed below; open errors get their own message)
    except FileNotFoundError as err:
        raise _BadImage("file not found; check the dataset path") from err
    except IsADirectoryError as err:
        raise _BadImage("is a directory, not an image file") from err
    except OSError as err:
        raise _BadImage(f"cannot open the file ({err.strerror or err})") from err
    with fp:
        return _decode_stream(fp, target_size)


def _decode_stream(fp: BinaryIO, target_size: int | None) -> Image.Image:
    try:
        img = Image.open(fp)
    except Image.DecompressionBombError as err:
        size = _header_size(fp)
        shape = f"{size[0]} x {size[1]}" if size else "too large"
        raise _BadImage(
            f"image is {shape}, larger than the {MAX_PIXELS // 1_000_000} megapixel limit; "
            "downscale it before use"
        ) from err
    except UnidentifiedImageError as err:
        raise _BadImage("not an image file Pillow can read (wrong extension or corrupt)") from err
    except OSError as err:
        raise _BadImage(f"cannot be read ({err})") from err
    with img:
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise _BadImage(
                f"image is {width} x {height}, larger than the {MAX_PIXELS // 1_000_000} "
                "megapixel limit; downscale it before use"
            )
        if min(width, height) < MIN_SIDE:
            raise _BadImage(
                f"image is {width} x {height}, smaller than the {MIN_SIDE} x {MIN_SIDE} px minimum"
            )
        if target_size is not None and img.format == "JPEG":
            # DCT scaling by 1/2, 1/4 or 1/8, only while both sides stay >= the request
            img.draft("RGB", (2 * target_size, 2 * target_size))
        try:
            # a full load is what detects truncation (LOAD_TRUNCATED_IMAGES stays False)
            img.load()
        except OSError as err:
            if "truncated" in str(err):
                raise _BadImage(f"file is truncated or incomplete ({err})") from err
            raise _BadImage(f"cannot be decoded ({err})") from err
        except (SyntaxError, ValueError, EOFError) as err:
            raise _BadImage(f"cannot be decoded ({err})") from err
        try:
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
            upright = ImageOps.exif_transpose(img)
        except Exception:  # a malformed EXIF block must not lose the pixels
            orientation, upright = 1, img
        rgb = to_rgb(upright)
        rgb = rgb.copy() if rgb is img else rgb
        # orientations 5-8 turn the image a quarter: width and height swap
        rgb.info[ORIGINAL_SIZE] = (
            (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        )
        return rgb


def _header_size(fp: BinaryIO) -> tuple[int, int] | None:
    """Width and height from the header alone; Pillow's bomb check hides them in its error."""
    try:
        fp.seek(0)
        prefix = fp.read(16)
    except OSError:
        return None
    Image.init()
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        accepted = accept(prefix) if accept is not None else True
        if not accepted or isinstance(accepted, str):  # a str is Pillow's "looks like, but"
            continue
        try:
            fp.seek(0)
            # plugin classes read the header without the decompression-bomb check
            return factory(fp, "").size
        except Exception:
            continue
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (16-bit scaled, transparency on white)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_high_depth_to_uint8(np.asarray(img), mode), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise _BadImage(f"colour mode {mode} is not supported; save it as RGB") from err


def _high_depth_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16/32-bit or float pixels to 0..255 by their nominal range (not the data's)."""
    values = values.astype(np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        scaled = values / 257.0  # 65535 -> 255 exactly
    elif mode == "F" and lo >= 0 and hi <= 1.0:
        scaled = values * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = values  # "I" or "F" holding 8-bit data
    elif lo >= 0 and hi <= 65535:
        scaled = values / 257.0  # "I" holding 16-bit data (older Pillow opens 16-bit PNG so)
    else:
        scaled = (values - lo) * (255.0 / (hi - lo))  # no nominal range fits: stretch
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- resizing


@dataclass(frozen=True)
class BoxTransform:
    """How original pixel coordinates map to the resized square.

    x' = (x - offset_x) * scale_x and y' = (y - offset_y) * scale_y, where offset is the
    top-left corner of the crop in original pixels (0 for "stretch").
    """

    scale_x: float
    scale_y: float
    offset_x: float = 0.0
    offset_y: float = 0.0
    size: int = IMAGE_SIZE

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        """(K, 4) xyxy boxes in original pixels -> (K, 4) float32 in resized pixels, clipped to [0, size]."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.empty_like(b)
        out[:, 0::2] = (b[:, 0::2] - self.offset_x) * self.scale_x
        out[:, 1::2] = (b[:, 1::2] - self.offset_y) * self.scale_y
        return np.clip(out, 0, self.size).astype(np.float32)

    @staticmethod
    def degenerate(resized: np.ndarray) -> np.ndarray:
        """(K,) bool: boxes with no area left after apply (outside the crop, or empty)."""
        b = np.asarray(resized).reshape(-1, 4)
        return (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])


def resize_square(
    img: Image.Image,
    size: int = IMAGE_SIZE,
    mode: str = "stretch",
    source_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, BoxTransform]:
    """RGB image -> uint8 (3, size, size) and the BoxTransform for its boxes.

    "stretch" resizes the whole image (the study; aspect ratio not kept); "center-crop"
    takes the central square first. Bilinear, antialiased (see the module docstring).
    The transform maps img's pixels, or those of source_size (W, H) when img is a reduced
    decode of a larger image (decode_image with target_size: img.info[ORIGINAL_SIZE]).
    """
    _check_settings(size, mode)
    if img.mode != "RGB":
        img = to_rgb(img)
    width, height = img.size
    if mode == "center-crop":
        # crop first (integer offsets) so the filter never blends in pixels outside the square
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        img = img.crop((left, top, left + side, top + side))
        sx = sy = size / side
    else:
        left = top = 0
        sx, sy = size / width, size / height
    resized = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    fx, fy = (source_size[0] / width, source_size[1] / height) if source_size else (1.0, 1.0)
    transform = BoxTransform(sx / fx, sy / fy, left * fx, top * fy, size)
    return np.ascontiguousarray(np.asarray(resized).transpose(2, 0, 1)), transform


def prepare_images(
    images: Sequence[Image.Image], size: int = IMAGE_SIZE, resize: str = "stretch"
) -> np.ndarray:
    """In-memory images (e.g. uploads, already decoded) -> uint8 (N, 3, size, size)."""
    _check_settings(size, resize)
    out = np.empty((len(images), 3, size, size), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = resize_square(to_rgb(img), size, resize)[0]
    return out


def _check_settings(size: int, mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise RotvizError(f"resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    if not isinstance(size, (int, np.integer)) or size < MIN_SIDE:
        raise RotvizError(f"image size {size!r} must be an integer of at least {MIN_SIDE} px")


# --------------------------------------------------------------------------- the cache


@dataclass
class PreparedSplit:
    """One split, decoded and resized: images (N, 3, S, S) uint8 plus per-image boxes in resized pixels.

    images is a read-only memmap of the cache file. boxes[i] (K, 4) float32 xyxy,
    categories[i] (K,) int64 and crowd[i] (K,) bool belong to records[i]; boxes with no
    area after the resize (e.g. outside the centre crop) are dropped. skipped lists
    (relpath, reason) for images that could not be used.
    """

    images: np.ndarray
    boxes: list[np.ndarray]
    categories: list[np.ndarray]
    crowd: list[np.ndarray]
    records: list[Record]
    skipped: list[tuple[str, str]]
    cache_path: Path | None
    transforms: list[BoxTransform] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


def default_cache_dir() -> Path:
    """$ROTVIZ_CACHE if set, else ~/.cache/rotviz/preprocessed."""
    env = os.environ.get("ROTVIZ_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "rotviz" / "preprocessed"


def cache_key(dataset: Dataset, split: str, size: int, resize: str) -> str:
    """Hash of what determines the cached pixels and boxes: files (size, mtime), annotations, settings."""
    entries = []
    for r in dataset.split(split):
        try:
            st = os.stat(r.path)
            stamp: tuple[int | None, int | None] = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (None, None)
        entries.append([r.relpath, *stamp, r.boxes, r.categories, r.crowd])
    root = str(Path(dataset.root).expanduser().resolve())
    return stable_hash(dataset.name, root, entries, size, resize, split, CACHE_VERSION, length=24)


def prepare_split(
    dataset: Dataset,
    split: str,
    size: int = IMAGE_SIZE,
    resize: str = "stretch",
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> PreparedSplit:
    """Decode, resize and cache one split; a second call with unchanged files loads the cache instantly.

    Unreadable images are skipped (one warning line names them); RotvizError if none is usable.
    """
    _check_settings(size, resize)
    records = dataset.split(split)
    if not records:
        raise RotvizError(f"dataset {dataset.name!r} has no images in the {split!r} split")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RotvizError(
            f"cannot create the preprocessing cache {cache_dir} ({err}); set ROTVIZ_CACHE "
            "to a writable folder"
        ) from err
    key = cache_key(dataset, split, size, resize)
    npy_path, index_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    cached = _load_cache(npy_path, index_path, records, size, key)
    if cached is not None:
        if progress is not None:
            progress(len(records), len(records))
        return cached
    index_path.unlink(missing_ok=True)  # an index without valid pixels must never be trusted
    return _build_cache(
        dataset, split, records, size, resize, npy_path, index_path, key, progress, workers
    )


def _load_cache(
    npy_path: Path, index_path: Path, records: list[Record], size: int, key: str
) -> PreparedSplit | None:
    if not index_path.exists():
        return None
    try:
        index = json.loads(index_path.read_text())
        if index.get("key") != key or index.get("version") != CACHE_VERSION:
            raise ValueError("index belongs to another cache")
        kept = index["kept"]
        images = np.load(npy_path, mmap_mode="r", allow_pickle=False)
        if images.shape != (len(kept), 3, size, size) or images.dtype != np.uint8:
            raise ValueError(f"images have shape {images.shape} {images.dtype}")
        by_relpath = {r.relpath: r for r in records}
        kept_records = [by_relpath[rel] for rel in kept]
        boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in index["boxes"]]
        categories = [np.asarray(c, dtype=np.int64) for c in index["categories"]]
        crowd = [np.asarray(c, dtype=bool) for c in index["crowd"]]
        transforms = [BoxTransform(*t, size=size) for t in index["transforms"]]
        skipped = [(str(rel), str(reason)) for rel, reason in index["skipped"]]
        if not len(boxes) == len(categories) == len(crowd) == len(transforms) == len(kept):
            raise ValueError("index lists differ in length")
    except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
        log.warning("preprocessing cache %s is damaged (%s); rebuilding it", npy_path.name, err)
        return None
    return PreparedSplit(
        images, boxes, categories, crowd, kept_records, skipped, npy_path, transforms
    )


def _decode_resized(path: str, size: int, resize: str) -> tuple[np.ndarray, BoxTransform]:
    img = decode_image(path, target_size=size)
    return resize_square(img, size, resize, source_size=img.info.get(ORIGINAL_SIZE))


def _build_cache(
    dataset: Dataset,
    split: str,
    records: list[Record],
    size: int,
    resize: str,
    npy_path: Path,
    index_path: Path,
    key: str,
    progress: Callable[[int, int], None] | None,
    workers: int | None,
) -> PreparedSplit:
    total = len(records)
    workers = max(1, workers if workers is not None else min(8, os.cpu_count() or 1))
    bar = None
    if progress is None and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"preprocessing {dataset.name}/{split}", unit="img")
    tmp_paths: list[Path] = []
    kept: list[Record] = []
    transforms: list[BoxTransform] = []
    skipped: list[tuple[str, str]] = []
    try:
        tmp = _temp_path(npy_path)
        tmp_paths.append(tmp)
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(total, 3, size, size)
        )
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # in-order consumption keeps kept images contiguous; the window bounds RAM
            pending: deque[tuple[Record, Future]] = deque()
            queue = iter(records)
            done = 0
            while True:
                while len(pending) < workers * _READ_AHEAD:
                    record = next(queue, None)
                    if record is None:
                        break
                    pending.append(
                        (record, pool.submit(_decode_resized, record.path, size, resize))
                    )
                if not pending:
                    break
                record, future = pending.popleft()
                try:
                    pixels, transform = future.result()
                except RotvizError as err:
                    skipped.append((record.relpath, _reason(err)))
                except Exception as err:  # a decoder bug in one file must not stop the split
                    skipped.append((record.relpath, f"unexpected error: {err!r}"))
                else:
                    out[len(kept)] = pixels
                    kept.append(record)
                    transforms.append(transform)
                done += 1
                if progress is not None:
                    progress(done, total)
                elif bar is not None:
                    bar.update(1)
        if not kept:
            del out
            shown = "; ".join(f"{rel}: {why}" for rel, why in skipped[:SKIPPED_NAMES_SHOWN])
            raise RotvizError(
                f"none of the {total} images of {dataset.name}/{split} could be used ({shown}); "
                "check the dataset root and the files"
            )
        out.flush()
        if len(kept) < total:
            final_tmp = _temp_path(npy_path)
            tmp_paths.append(final_tmp)
            final = np.lib.format.open_memmap(
                final_tmp, mode="w+", dtype=np.uint8, shape=(len(kept), 3, size, size)
            )
            for start in range(0, len(kept), 1024):  # chunked: never the whole split in RAM
                stop = min(start + 1024, len(kept))
                final[start:stop] = out[start:stop]
            final.flush()
            del final, out
            os.replace(final_tmp, npy_path)
        else:
            del out
            os.replace(tmp, npy_path)
        boxes, categories, crowd = _scaled_annotations(kept, transforms)
        index = {
            "version": CACHE_VERSION,
            "key": key,
            "dataset": dataset.name,
            "root": str(Path(dataset.root).expanduser().resolve()),
            "split": split,
            "size": size,
            "resize": resize,
            "resample": "PIL BILINEAR, reducing_gap=None, JPEG draft at >= 2*size",
            "shape": [len(kept), 3, size, size],
            "kept": [r.relpath for r in kept],
            "boxes": [b.tolist() for b in boxes],
            "categories": [c.tolist() for c in categories],
            "crowd": [c.tolist() for c in crowd],
            "transforms": [[t.scale_x, t.scale_y, t.offset_x, t.offset_y] for t in transforms],
            "skipped": [list(s) for s in skipped],
        }
        index_tmp = _temp_path(index_path)
        tmp_paths.append(index_tmp)
        index_tmp.write_text(json.dumps(index))
        os.replace(index_tmp, index_path)  # last: only now does the cache count as valid
    finally:
        if bar is not None:
            bar.close()
        for p in tmp_paths:
            p.unlink(missing_ok=True)
    if skipped:
        log.warning("%s", _skipped_line(dataset.name, split, skipped, total))
    images = np.load(npy_path, mmap_mode="r", allow_pickle=False)
    return PreparedSplit(images, boxes, categories, crowd, kept, skipped, npy_path, transforms)


def _scaled_annotations(
    records: list[Record], transforms: list[BoxTransform]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    boxes, categories, crowd = [], [], []
    for r, t in zip(records, transforms, strict=True):
        k = len(r.boxes)
        scaled = t.apply(r.boxes_array())
        cats = np.asarray(r.categories if r.categories else [-1] * k, dtype=np.int64).reshape(-1)
        crw = np.asarray(r.crowd if r.crowd else [False] * k, dtype=bool).reshape(-1)
        keep = ~BoxTransform.degenerate(scaled)
        boxes.append(scaled[keep])
        categories.append(cats[keep])
        crowd.append(crw[keep])
    return boxes, categories, crowd


def _reason(err: RotvizError) -> str:
    cause = err.__cause__
    return str(cause) if isinstance(cause, _BadImage) else str(err)


def _skipped_line(name: str, split: str, skipped: list[tuple[str, str]], total: int) -> str:
    names = ", ".join(f"{rel} ({why})" for rel, why in skipped[:SKIPPED_NAMES_SHOWN])
    more = len(skipped) - SKIPPED_NAMES_SHOWN
    tail = f" and {more} more" if more > 0 else ""
    return f"{name}/{split}: skipped {len(skipped)} of {total} images that cannot be used: {names}{tail}"


def _temp_path(target: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    os.close(fd)
    return Path(name)
