"""Uploaded images and their boxes: decode (EXIF applied), validate, resize, scale boxes.

Pure functions over bytes and text (no Streamlit), so tests call them directly; problems
come back as RotvizError messages a user can act on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

from rotviz.config import IMAGE_SIZE
from rotviz.data.datasets import IMAGE_EXTENSIONS, formats_text
from rotviz.data.preprocess import ORIGINAL_SIZE, decode_image, resize_square
from rotviz.errors import RotvizError

# the folder loader's list, without dots (what st.file_uploader takes)
UPLOAD_TYPES = tuple(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))


@dataclass
class UploadedImage:
    """One usable upload: the upright RGB image, its resized pixels and boxes."""

    name: str
    digest: str  # SHA-256 of the file, the cache key of its maps
    original: Image.Image  # upright (EXIF applied), RGB, maybe a reduced JPEG decode
    pixels: np.ndarray  # (3, S, S) uint8
    boxes_original: np.ndarray  # (K, 4) xyxy in original pixels
    boxes: np.ndarray  # (K, 4) xyxy in resized pixels


def read_upload(
    name: str,
    data: bytes,
    boxes: np.ndarray | None = None,
    size: int = IMAGE_SIZE,
    resize: str = "stretch",
) -> UploadedImage:
    """Decode an uploaded file and scale its boxes (K, 4, original pixels) to the resized square."""
    if not data:
        raise RotvizError(f"{name}: the file is empty; upload a {formats_text()} image.")
    try:
        img = decode_image(data, target_size=size)
    except RotvizError as err:
        raise RotvizError(
            f"{name}: {str(err).removeprefix('cannot use the uploaded image: ')}"
        ) from err
    # a JPEG may decode at a reduced scale; boxes are in pixels of the full upright image
    width, height = img.info.get(ORIGINAL_SIZE, img.size)
    pixels, transform = resize_square(img, size, resize, source_size=(width, height))
    b = (
        np.zeros((0, 4), np.float32)
        if boxes is None
        else np.asarray(boxes, np.float32).reshape(-1, 4)
    )
    check_boxes(name, b, width, height)
    scaled = transform.apply(b)
    return UploadedImage(name, hashlib.sha256(data).hexdigest(), img, pixels, b, scaled)


def check_boxes(name: str, boxes: np.ndarray, width: int, height: int) -> None:
    """RotvizError unless every box (K, 4) has x0 < x1, y0 < y1 and overlaps the image."""
    for x0, y0, x1, y1 in boxes:
        if not (x1 > x0 and y1 > y0):
            raise RotvizError(
                f"{name}: box {x0:g},{y0:g},{x1:g},{y1:g} is empty; write x0,y0,x1,y1 with x0 < x1 and y0 < y1."
            )
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise RotvizError(
                f"{name}: box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the {width} x {height} image "
                "(boxes are in pixels of the upright image)."
            )


def parse_boxes_text(text: str) -> np.ndarray:
    """Boxes (K, 4) from text: one "x0, y0, x1, y1" per line (pixels; spaces or commas)."""
    rows = []
    for n, line in enumerate(text.strip().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise RotvizError(
                f"box line {n} ({line!r}): write four numbers x0, y0, x1, y1"
            ) from None
        if len(values) != 4:
            raise RotvizError(
                f"box line {n} ({line!r}): write four numbers x0, y0, x1, y1, got {len(values)}"
            )
        rows.append(values)
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def parse_coco_boxes(data: bytes) -> dict[str, np.ndarray]:
    """Boxes (K, 4) xyxy per file name from a COCO json (images + annotations with [x, y, w, h])."""
    try:
        coco = json.loads(data.decode("utf-8"))
        images = {im["id"]: str(im["file_name"]).rsplit("/", 1)[-1] for im in coco["images"]}
        out: dict[str, list[list[float]]] = {name: [] for name in images.values()}
        for a in coco.get("annotations", []):
            x, y, w, h = (float(v) for v in a["bbox"])
            out[images[a["image_id"]]].append([x, y, x + w, y + h])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RotvizError(
            f"the boxes file is not valid JSON ({err}); upload a COCO instances json"
        ) from err
    except (KeyError, TypeError, ValueError) as err:
        raise RotvizError(
            f"the boxes file is not a COCO json ({type(err).__name__}: {err}); it needs "
            "'images' (id, file_name) and 'annotations' (image_id, bbox as [x, y, w, h])"
        ) from err
    return {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in out.items()}
