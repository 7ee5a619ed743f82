"""The embedded ``demo`` dataset: real images shipped by rotviz's own dependencies, never downloaded.

Object-centric part: the 200 grayscale 25x25 patches of ``skimage.data.lfw_subset()``, kept at
their size as 8-bit PNG (the first 100 are faces, the last 100 non-face background patches, as
its docstring says).
Scene-centric part: nine photographs bundled with scikit-image, scikit-learn and matplotlib,
whose salient objects were boxed by hand in ``demo_annotations.json`` (COCO instances format).
``materialize_demo`` writes them once as PNG files plus one COCO json; ``rotviz.data.datasets.load_demo`` reads
them back through ``rotviz.data.datasets.load_coco``, exactly like a user's COCO folder.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rotviz.config import stable_hash
from rotviz.errors import RotvizError

DEMO_VERSION = "1"  # bump when the set of images or the file layout changes
ANNOTATIONS_RESOURCE = "demo_annotations.json"
COCO_FILE_NAME = "instances_demo.json"
N_FACES = 100  # lfw_subset(): images [0, 100) are faces, [100, 200) non-faces
FACE_ID_OFFSET = 1000  # COCO image ids of the LFW patches; scene photos use 1..99
SCENE_LABEL, FACE_LABEL, NONFACE_LABEL = "scene", "face", "nonface"


def hand_annotations() -> dict[str, Any]:
    """The hand-made COCO instances json of the scene photos (boxes are [x, y, w, h] pixels)."""
    text = resources.files("rotviz.data").joinpath(ANNOTATIONS_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


def demo_version() -> str:
    """The cache folder name: DEMO_VERSION plus a hash of the hand annotations."""
    data = resources.files("rotviz.data").joinpath(ANNOTATIONS_RESOURCE).read_bytes()
    return f"v{DEMO_VERSION}-{stable_hash(data.decode('utf-8'), length=10)}"


def default_demo_dir() -> Path:
    """<$ROTVIZ_CACHE or ~/.cache/rotviz>/demo/<version>/images."""
    env = os.environ.get("ROTVIZ_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "rotviz"
    return base / "demo" / demo_version() / "images"


def bundled_file(library: str, file_name: str) -> Path:
    """The path of a sample file inside an installed package (skimage, sklearn, matplotlib)."""
    if library == "skimage":
        import skimage.data

        folder = Path(skimage.data.__file__).parent
    elif library == "sklearn":
        import sklearn.datasets

        folder = Path(sklearn.datasets.__file__).parent / "images"
    elif library == "matplotlib":
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "sample_data"
    else:
        raise ValueError(f"unknown library {library!r}")
    path = folder / file_name
    if not path.is_file():
        # Reading the file ourselves (not via skimage.data.*) guarantees no download attempt.
        raise RotvizError(
            f"the demo image {file_name} that {library} ships is missing from {folder}; "
            f"reinstall it (pip install --force-reinstall {library}). The demo never downloads."
        )
    return path


def lfw_patches() -> np.ndarray:
    """skimage's lfw_subset as (200, 25, 25) uint8, faces first then non-faces.

    The file holds floats in [0, 1] (its docstring says uint8); PNG needs 8 bits, so round.
    """
    patches = np.load(bundled_file("skimage", "lfw_subset.npy"))
    if patches.shape != (2 * N_FACES, 25, 25):
        raise RotvizError(
            f"skimage's lfw_subset.npy has shape {patches.shape}, expected (200, 25, 25); "
            "reinstall scikit-image."
        )
    if patches.dtype == np.uint8:
        return patches
    return np.round(np.clip(patches, 0.0, 1.0) * 255.0).astype(np.uint8)


def _face_entries() -> list[dict[str, Any]]:
    entries = []
    for i in range(2 * N_FACES):
        is_face = i < N_FACES
        label = FACE_LABEL if is_face else NONFACE_LABEL
        entries.append(
            {
                "id": FACE_ID_OFFSET + i,
                "file_name": f"lfw_{label}_{i % N_FACES:03d}.png",
                "width": 25,
                "height": 25,
                "library": "skimage",
                "source": f"skimage.data.lfw_subset()[{i}]",
                "label": label,
            }
        )
    return entries


def _is_complete(images_dir: Path) -> bool:
    coco_json = images_dir / COCO_FILE_NAME
    if not coco_json.is_file():
        return False
    try:
        data = json.loads(coco_json.read_text(encoding="utf-8"))
        names = [str(im["file_name"]) for im in data["images"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((images_dir / n).is_file() for n in names)


def _write_all(folder: Path) -> None:
    """Every demo PNG, then the COCO json (scene photos with boxes, patches without)."""
    coco = hand_annotations()
    for image in coco["images"]:
        with Image.open(bundled_file(image["library"], image["source_file"])) as img:
            img.load()
            if (img.width, img.height) != (image["width"], image["height"]):
                raise RotvizError(
                    f"{image['source_file']} from {image['library']} is {img.width}x{img.height}, "
                    f"the demo annotations expect {image['width']}x{image['height']}; "
                    "this version of the library ships a different image."
                )
            img.save(folder / image["file_name"], format="PNG")
        image["label"] = SCENE_LABEL
    patches = lfw_patches()
    faces = _face_entries()
    for entry, patch in zip(faces, patches, strict=True):
        Image.fromarray(patch).save(folder / entry["file_name"], format="PNG")
    coco["images"] = coco["images"] + faces
    (folder / COCO_FILE_NAME).write_text(json.dumps(coco, indent=1), encoding="utf-8")


def materialize_demo(dest: Path | None = None) -> tuple[Path, Path]:
    """Write the demo images (PNG) and their COCO json into dest once; (images_dir, json_path).

    dest defaults to default_demo_dir(). The folder appears atomically (built beside it, then
    renamed), so a complete folder is reused as is and an interrupted run leaves no half state.
    """
    images_dir = Path(dest).expanduser() if dest is not None else default_demo_dir()
    coco_json = images_dir / COCO_FILE_NAME
    if _is_complete(images_dir):
        return images_dir, coco_json
    if images_dir.exists() and (not images_dir.is_dir() or any(images_dir.iterdir())):
        raise RotvizError(
            f"{images_dir} exists but is not a complete demo folder; delete it (or choose "
            "another destination) and run again."
        )
    try:
        images_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = images_dir.parent / f".{images_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as err:
        raise RotvizError(
            f"cannot create the demo folder {images_dir} ({err}); set ROTVIZ_CACHE to a "
            "writable folder."
        ) from err
    try:
        _write_all(tmp)
        if images_dir.is_dir():
            images_dir.rmdir()  # empty (checked above); rename cannot replace it otherwise
        os.rename(tmp, images_dir)
    except OSError as err:
        if not _is_complete(images_dir):  # else a concurrent writer finished first: fine
            raise RotvizError(
                f"could not write the demo into {images_dir} ({err}); free some space or set "
                "ROTVIZ_CACHE to a writable folder."
            ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return images_dir, coco_json
