"""Registry of dataset sources: each turns a DataConfig into a Dataset of Records.

Sources: ``lfw`` (person folders), ``coco`` (images + instances json), ``cityscapes``
(official leftImg8bit tree), ``folder`` (any image folder) and ``demo`` (embedded).
Problems a user can fix (missing folders, malformed files, unknown categories) raise
RotvizError; recoverable oddities (images missing on disk, boxes outside their image)
are reported with one ``warnings.warn`` each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rotviz.config import DataConfig, stable_hash
from rotviz.data.demo import SCENE_LABEL, materialize_demo
from rotviz.data.records import Dataset, Record
from rotviz.errors import RotvizError

# The one list of accepted image formats, for folder datasets and uploads alike:
# format name (as said to users) -> file extensions. An animated GIF gives its first frame.
IMAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "WebP": (".webp",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
    "GIF": (".gif",),
}
IMAGE_EXTENSIONS = frozenset(ext for exts in IMAGE_FORMATS.values() for ext in exts)


def formats_text() -> str:
    """The accepted formats in words, e.g. "JPEG, PNG, ... or GIF (first frame)"."""
    names = [n + (" (first frame of an animation)" if n == "GIF" else "") for n in IMAGE_FORMATS]
    return ", ".join(names[:-1]) + " or " + names[-1]


CITYSCAPES_SPLITS = {"train": "train", "val": "val", "test": "test"}
COCO_SPLITS = {"train2017": "train", "val2017": "test"}
# Boxes overshooting their image by less than this (float rounding in COCO) are clipped silently.
_CLIP_TOLERANCE = 1.0

Loader = Callable[[DataConfig], Dataset]


# --------------------------------------------------------------------------- splits


def _unit_hash(text: str, salt: str = "") -> float:
    """A number uniform in [0, 1) determined only by text (and salt)."""
    digest = hashlib.sha1((salt + text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_for(relpath: str, test_fraction: float) -> str:
    """ "test" or "train" for a relative POSIX path, from a hash of the path alone.

    A file keeps its split when other files are added or removed.
    """
    return "test" if _unit_hash(relpath) < test_fraction else "train"


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 <= test_fraction <= 1.0:
        raise RotvizError(f"test_fraction must lie in [0, 1], got {test_fraction}.")


def _cap_per_split(records: Sequence[Record], max_images: int | None) -> list[Record]:
    """Keep at most max_images records per split: those first in order of a path hash."""
    if max_images is None:
        return list(records)
    if max_images < 1:
        raise RotvizError(f"max_images must be at least 1 (or unset), got {max_images}.")
    by_split: dict[str, list[Record]] = {}
    for r in records:
        by_split.setdefault(r.split, []).append(r)
    kept: list[Record] = []
    for group in by_split.values():
        # A salt distinct from split_for's, so the chosen subset is not biased within a split.
        group.sort(key=lambda r: (_unit_hash(r.relpath, salt="max_images:"), r.relpath))
        kept.extend(group[:max_images])
    return kept


def _finish(
    name: str,
    root: Path,
    records: Iterable[Record],
    category_names: dict[int, str] | None = None,
) -> Dataset:
    records = sorted(records, key=lambda r: r.relpath)
    if not records:
        raise RotvizError(f"no images found under {root} for dataset '{name}'.")
    return Dataset(
        name=name, root=str(root), records=tuple(records), category_names=category_names or {}
    )


# --------------------------------------------------------------------------- helpers


def _require_root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise RotvizError(f"dataset '{cfg.dataset}' needs a root folder: pass --root DIR.")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise RotvizError(
            f"root folder {root} of dataset '{cfg.dataset}' does not exist or is not a folder."
        )
    return root.resolve()


def _refuse_categories(cfg: DataConfig) -> None:
    if any(c.strip() for c in cfg.categories):
        raise RotvizError(
            f"categories only apply to the coco dataset, not to '{cfg.dataset}': drop --categories."
        )


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _relpath(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# --------------------------------------------------------------------------- lfw


def _lfw_people_root(root: Path) -> Path:
    """The folder holding <Person>/ folders: root itself, or a single lfw*/ below it."""
    for _ in range(3):
        if any(p.is_file() and _is_image(p) for d in _subdirs(root) for p in d.iterdir()):
            return root
        lfw_dirs = [d for d in _subdirs(root) if d.name.lower().startswith("lfw")]
        if len(lfw_dirs) != 1:
            return root
        root = lfw_dirs[0]
    return root


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def load_lfw(cfg: DataConfig) -> Dataset:
    """LFW in the <root>/<Person>/<Person>_NNNN.jpg layout; label = person, split by image."""
    _check_fraction(cfg.test_fraction)
    _refuse_categories(cfg)
    root = _lfw_people_root(_require_root(cfg))
    records = []
    for person in _subdirs(root):
        for path in sorted(person.iterdir()):
            if not (path.is_file() and _is_image(path)):
                continue
            rel = _relpath(path, root)
            records.append(
                Record(
                    path=str(path),
                    relpath=rel,
                    split=split_for(rel, cfg.test_fraction),
                    image_id=path.stem,
                    label=person.name,
                )
            )
    return _finish(cfg.dataset, root, records)


# --------------------------------------------------------------------------- coco


def coco_category_ids(requested: Iterable[str], categories: list[dict[str, Any]]) -> list[int]:
    """COCO category ids from names or ids ("cat,dog", "17"; names case-insensitive), in order."""
    by_name = {str(c["name"]).lower(): int(c["id"]) for c in categories}
    ids = {int(c["id"]) for c in categories}
    chosen: list[int] = []
    for item in requested:
        for token in str(item).split(","):
            token = token.strip()
            if not token:
                continue
            if token.isdigit() and int(token) in ids:
                cid = int(token)
            elif token.lower() in by_name:
                cid = by_name[token.lower()]
            else:
                valid = ", ".join(f"{c['name']} ({c['id']})" for c in categories)
                raise RotvizError(f"unknown COCO category '{token}'. Valid categories: {valid}.")
            if cid not in chosen:
                chosen.append(cid)
    return chosen


def _read_coco_json(ann: Path) -> dict[str, Any]:
    try:
        with open(ann, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RotvizError(
            f"{ann} is not a valid JSON file ({e}); pass a COCO instances json."
        ) from e
    if not isinstance(data, dict):
        raise RotvizError(f"{ann} is not a COCO instances json (top level is not an object).")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise RotvizError(
            f"{ann} is not a COCO instances json: missing key(s) {', '.join(missing)}. "
            "Pass an instances_*.json file (not captions or keypoints)."
        )
    required = {
        "images": ("id", "file_name", "width", "height"),
        "annotations": ("image_id", "category_id", "bbox"),
        "categories": ("id", "name"),
    }
    for key, fields in required.items():
        if not isinstance(data[key], list):
            raise RotvizError(f"{ann}: '{key}' must be a list.")
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict) or any(f not in entry for f in fields):
                raise RotvizError(
                    f"{ann}: entry {i} of '{key}' lacks one of the fields {', '.join(fields)}."
                )
    return data


def _coco_split(image: dict[str, Any], relpath: str, test_fraction: float) -> str:
    text = f"{image.get('file_name', '')} {image.get('coco_url', '')}"
    for marker, split in COCO_SPLITS.items():
        if marker in text:
            return split
    return split_for(relpath, test_fraction)


def _find_coco_image(root: Path, image: dict[str, Any]) -> Path | None:
    """The file of a COCO image: root/file_name, or root/<train2017|val2017>/file_name."""
    file_name = str(image["file_name"])
    candidates = [root / file_name]
    for marker in COCO_SPLITS:
        if marker in str(image.get("coco_url", "")):
            candidates.append(root / marker / file_name)
    for c in candidates:
        if c.is_file():
            return c
    return None


def _clip_box(
    bbox: Sequence[float], width: float, height: float
) -> tuple[tuple[float, float, float, float] | None, bool]:
    """xywh -> xyxy clipped to the image; (None, _) when degenerate; flag if clipped notably."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0, x1, y1 = x, y, x + w, y + h
    c = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
    notable = (
        c[0] - x0 > _CLIP_TOLERANCE
        or c[1] - y0 > _CLIP_TOLERANCE
        or x1 - c[2] > _CLIP_TOLERANCE
        or y1 - c[3] > _CLIP_TOLERANCE
    )
    if c[2] <= c[0] or c[3] <= c[1]:
        return None, notable
    return c, notable


def load_coco(
    root: str | Path,
    ann: str | Path,
    categories: Iterable[str] = (),
    test_fraction: float = 0.25,
    name: str = "coco",
) -> Dataset:
    """COCO images under root with boxes from an instances json (xyxy, original pixels).

    Keeps images containing any of the categories (names or ids; all images when empty),
    with the boxes of all their annotated objects. Split: COCO's own (train2017 -> train,
    val2017 -> test) when the file name or coco_url tells, else the hash split.
    """
    from pycocotools.coco import COCO

    _check_fraction(test_fraction)
    if root is None or str(root) == "":
        raise RotvizError(f"dataset '{name}' needs the images folder: pass --root DIR.")
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise RotvizError(f"COCO images folder {root_path} does not exist or is not a folder.")
    root_path = root_path.resolve()
    if ann is None or str(ann) == "":
        raise RotvizError(f"dataset '{name}' needs an instances json: pass --ann FILE.")
    ann_path = Path(ann).expanduser()
    if not ann_path.is_file():
        raise RotvizError(f"COCO annotation file {ann_path} does not exist.")

    data = _read_coco_json(ann_path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()

    category_names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    wanted = coco_category_ids(categories, data["categories"])
    if wanted:
        image_ids: set[int] = set()
        for cid in wanted:
            image_ids.update(coco.catToImgs.get(cid, []))
    else:
        image_ids = set(coco.imgs)

    records: list[Record] = []
    n_missing = n_clipped = n_dropped = 0
    for image_id in sorted(image_ids):
        image = coco.imgs[image_id]
        path = _find_coco_image(root_path, image)
        if path is None:
            n_missing += 1
            continue
        boxes, cats, crowd = [], [], []
        for a in sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a.get("id", 0)):
            box, notable = _clip_box(a["bbox"], image["width"], image["height"])
            n_clipped += notable
            if box is None:
                n_dropped += 1
                continue
            boxes.append(box)
            cats.append(int(a["category_id"]))
            crowd.append(bool(a.get("iscrowd", 0)))
        rel = _relpath(path, root_path)
        records.append(
            Record(
                path=str(path),
                relpath=rel,
                split=_coco_split(image, rel, test_fraction),
                image_id=int(image_id),
                boxes=tuple(boxes),
                categories=tuple(cats),
                crowd=tuple(crowd),
            )
        )
    if n_missing:
        warnings.warn(
            f"{n_missing} of {len(image_ids)} images listed in {ann_path.name} are missing "
            f"under {root_path}; they are skipped.",
            stacklevel=2,
        )
    if n_clipped or n_dropped:
        warnings.warn(
            f"{n_clipped} boxes in {ann_path.name} extend outside their image and were clipped; "
            f"{n_dropped} empty boxes were dropped.",
            stacklevel=2,
        )
    return _finish(name, root_path, records, category_names)


def _load_coco_cfg(cfg: DataConfig) -> Dataset:
    if not cfg.root:
        raise RotvizError("dataset 'coco' needs the images folder: pass --root DIR.")
    if not cfg.ann:
        raise RotvizError("dataset 'coco' needs an instances json: pass --ann FILE.")
    return load_coco(cfg.root, cfg.ann, cfg.categories, cfg.test_fraction, name=cfg.dataset)


# --------------------------------------------------------------------------- cityscapes

_CITYSCAPES_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.png$")


def load_cityscapes(cfg: DataConfig) -> Dataset:
    """Cityscapes leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png; label = city."""
    _check_fraction(cfg.test_fraction)
    _refuse_categories(cfg)
    root = _require_root(cfg)
    if root.name == "leftImg8bit":
        root = root.parent
    images = root / "leftImg8bit"
    if not images.is_dir():
        raise RotvizError(
            f"{root} has no leftImg8bit folder: pass --root the folder where "
            "leftImg8bit_trainvaltest.zip was extracted."
        )
    records = []
    for folder, split in CITYSCAPES_SPLITS.items():
        split_dir = images / folder
        if not split_dir.is_dir():
            continue
        for city in _subdirs(split_dir):
            for path in sorted(city.iterdir()):
                m = _CITYSCAPES_NAME.match(path.name)
                if not (m and path.is_file()):
                    continue
                records.append(
                    Record(
                        path=str(path),
                        relpath=_relpath(path, root),
                        split=split,
                        image_id=path.name[: -len("_leftImg8bit.png")],
                        label=city.name,
                    )
                )
    return _finish(cfg.dataset, root, records)


# --------------------------------------------------------------------------- folder


def load_folder(cfg: DataConfig) -> Dataset:
    """Every image under root, recursively; label = first-level subfolder (None at top)."""
    _check_fraction(cfg.test_fraction)
    _refuse_categories(cfg)
    root = _require_root(cfg)
    records = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            if not _is_image(path):
                continue
            rel = _relpath(path, root)
            parts = rel.split("/")
            records.append(
                Record(
                    path=str(path),
                    relpath=rel,
                    split=split_for(rel, cfg.test_fraction),
                    image_id=rel,
                    label=parts[0] if len(parts) > 1 else None,
                )
            )
    return _finish(cfg.dataset, root, records)


# --------------------------------------------------------------------------- demo


def load_demo(cfg: DataConfig) -> Dataset:
    """The demo as a Dataset: scene photos (label "scene", always "test") and LFW patches.

    Faces and non-faces (labels "face"/"nonface") are split by a hash of their file name
    with cfg.test_fraction. cfg.categories keeps the scene photos showing any of them (and
    no patches, which have no boxes). cfg.root and cfg.ann are ignored; cfg.max_images is
    applied per split by rotviz.data.datasets.load_dataset, like for every source.
    """
    images_dir, coco_json = materialize_demo()
    ds = load_coco(
        images_dir, coco_json, cfg.categories, test_fraction=cfg.test_fraction, name="demo"
    )
    coco = json.loads(coco_json.read_text(encoding="utf-8"))
    labels = {str(im["file_name"]): str(im["label"]) for im in coco["images"]}
    records = []
    for r in ds.records:
        label = labels[r.relpath]
        split = "test" if label == SCENE_LABEL else split_for(r.relpath, cfg.test_fraction)
        records.append(dataclasses.replace(r, label=label, split=split))
    return dataclasses.replace(ds, records=tuple(records))


# --------------------------------------------------------------------------- registry

DATASETS: dict[str, Loader] = {
    "lfw": load_lfw,
    "coco": _load_coco_cfg,
    "cityscapes": load_cityscapes,
    "folder": load_folder,
    "demo": load_demo,
}


def load_dataset(cfg: DataConfig) -> Dataset:
    """The Dataset a DataConfig names: records sorted by relpath, capped per split."""
    if cfg.dataset not in DATASETS:
        raise RotvizError(
            f"unknown dataset '{cfg.dataset}'. Choose one of: {', '.join(sorted(DATASETS))}."
        )
    ds = DATASETS[cfg.dataset](cfg)
    records = sorted(_cap_per_split(ds.records, cfg.max_images), key=lambda r: r.relpath)
    return Dataset(
        name=ds.name, root=ds.root, records=tuple(records), category_names=dict(ds.category_names)
    )


def dataset_fingerprint(ds: Dataset) -> str:
    """A hash of the data itself (relpaths, file sizes, boxes), independent of the root folder."""
    items = []
    for r in sorted(ds.records, key=lambda r: r.relpath):
        try:
            size = os.path.getsize(r.path)
        except OSError as e:
            raise RotvizError(f"image {r.path} disappeared since the dataset was loaded.") from e
        items.append([r.relpath, size, [list(b) for b in r.boxes], list(r.categories)])
    return stable_hash(items)
