"""Download commands for the real datasets (LFW, COCO cat/dog); Cityscapes needs a login.

Downloads are resumable (HTTP Range on a ``.part`` file), checksummed where the source
publishes sums (md5 for LFW), and renamed into place atomically, so a finished file is
never fetched again and an interrupted one continues where it stopped.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rotviz.data.datasets import coco_category_ids
from rotviz.errors import RotvizError

# The archive and checksum torchvision's LFWPeople(image_set="original") uses.
LFW_BASE_URL = "http://vis-www.cs.umass.edu/lfw/"
LFW_ARCHIVE = "lfw.tgz"
LFW_MD5 = "a17d05bd522c52d84eca14327a23d494"

COCO_ANNOTATIONS_BASE_URL = "http://images.cocodataset.org/annotations/"
COCO_ANNOTATIONS_ARCHIVE = "annotations_trainval2017.zip"
COCO_SPLITS = ("train2017", "val2017")

CITYSCAPES_INSTRUCTIONS = """\
Cityscapes cannot be downloaded automatically: its license requires a login.
1. Register and log in at https://www.cityscapes-dataset.com/ (Downloads page).
2. Download the package leftImg8bit_trainvaltest.zip (about 11 GB).
3. Extract it, e.g. `unzip leftImg8bit_trainvaltest.zip -d DIR`; this creates
   DIR/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png.
4. Use it with: --dataset cityscapes --root DIR   (DIR/leftImg8bit also works)
"""

_CHUNK = 1 << 16
_TIMEOUT_S = 60.0
_USER_AGENT = "rotviz-downloader"


# --------------------------------------------------------------------------- one file


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open(url: str, start: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if start > 0:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=_TIMEOUT_S)


def _part_is_complete(error: urllib.error.HTTPError, start: int) -> bool:
    """After a 416 reply to a Range request: does the .part already hold the whole file?"""
    content_range = error.headers.get("Content-Range", "") if error.headers else ""
    total = content_range.rpartition("/")[2]
    return total.isdigit() and int(total) == start


def fetch(
    url: str,
    dest: Path,
    md5: str | None = None,
    progress: bool = True,
) -> Path:
    """Download url to dest unless dest exists; resume a dest.part; check md5 if given."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, start)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start > 0 and _part_is_complete(e, start):
            response = None
        elif e.code == 416:
            part.unlink(missing_ok=True)  # the .part is not a prefix of this file: start over
            return fetch(url, dest, md5=md5, progress=progress)
        else:
            raise RotvizError(f"download of {url} failed: HTTP {e.code} {e.reason}.") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RotvizError(
            f"could not reach {url} ({reason}); check the network connection and run again "
            "(finished files are kept)."
        ) from e

    if response is not None:
        with response:
            resumed = start > 0 and response.status == 206
            if not resumed:
                start = 0  # the server ignored the Range header: restart from scratch
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            received = 0
            try:
                with (
                    open(part, "ab" if resumed else "wb") as f,
                    tqdm(
                        total=total,
                        initial=start,
                        unit="B",
                        unit_scale=True,
                        desc=dest.name,
                        disable=not progress,
                        leave=False,
                    ) as bar,
                ):
                    while block := response.read(_CHUNK):
                        f.write(block)
                        received += len(block)
                        bar.update(len(block))
            except (OSError, http.client.HTTPException) as e:
                raise RotvizError(
                    f"download of {url} was interrupted ({e}); run again to resume."
                ) from e
            if length and length.isdigit() and received < int(length):
                raise RotvizError(
                    f"download of {url} stopped after {start + received} bytes; run again to resume."
                )

    if md5 is not None:
        actual = _md5(part)
        if actual != md5.lower():
            part.unlink(missing_ok=True)
            raise RotvizError(
                f"checksum mismatch for {dest.name} from {url}: md5 {actual}, expected {md5}. "
                "The partial file was deleted; run again to download it afresh."
            )
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- LFW


def download_lfw(
    dest: Path,
    base_url: str = LFW_BASE_URL,
    progress: bool = True,
    md5: str | None = LFW_MD5,
) -> Path:
    """Download and extract lfw.tgz into dest; return the folder to pass as --root."""
    dest = Path(dest).expanduser()
    target = dest / "lfw"
    if target.is_dir():
        return target
    archive = fetch(_join(base_url, LFW_ARCHIVE), dest / LFW_ARCHIVE, md5=md5, progress=progress)
    staging = dest / ".lfw.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise RotvizError(f"could not extract {archive} ({e}); delete it and run again.") from e
    extracted = staging / "lfw"
    if not extracted.is_dir():
        # Not the official layout: use whatever single folder (or the whole archive) we got.
        tops = [p for p in staging.iterdir() if p.is_dir()]
        extracted = tops[0] if len(tops) == 1 else staging
    os.replace(extracted, target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- COCO


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def _image_url(coco_url: str, images_base_url: str | None) -> str:
    if images_base_url is None:
        return coco_url
    return images_base_url.rstrip("/") + urllib.parse.urlsplit(coco_url).path


def _extract_member(archive: Path, member: str, dest: Path) -> Path:
    """Extract one file of a zip to dest atomically (skipped when dest exists)."""
    if dest.is_file():
        return dest
    tmp = dest.with_name(dest.name + ".part")
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except KeyError as e:
        tmp.unlink(missing_ok=True)
        raise RotvizError(f"{archive} has no {member}; delete it and run again.") from e
    except (zipfile.BadZipFile, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise RotvizError(f"could not read {archive} ({e}); delete it and run again.") from e
    os.replace(tmp, dest)
    return dest


def _selection_tag(categories: Sequence[str], splits: Sequence[str]) -> str:
    cats = sorted({t.strip().lower() for c in categories for t in str(c).split(",") if t.strip()})
    return "_".join(["-".join(sorted(splits))] + (cats or ["all"]))


def _all_images_present(ann_path: Path, images_dir: Path) -> bool:
    try:
        with open(ann_path, encoding="utf-8") as f:
            images = json.load(f)["images"]
    except (OSError, ValueError, KeyError):
        return False
    return all((images_dir / str(im["file_name"])).is_file() for im in images)


def download_coco(
    dest: Path,
    categories: Sequence[str] = ("cat", "dog"),
    splits: Sequence[str] = COCO_SPLITS,
    base_url_annotations: str = COCO_ANNOTATIONS_BASE_URL,
    progress: bool = True,
    images_base_url: str | None = None,
    workers: int = 8,
) -> tuple[Path, Path]:
    """Download COCO 2017 images of the chosen categories; return (images_dir, ann_path).

    Writes dest/images/<file_name> and dest/instances_<splits>_<categories>.json with only
    the kept images (all their annotations). images_base_url replaces the host of each
    image's coco_url (for mirrors and tests).
    """
    dest = Path(dest).expanduser()
    unknown = [s for s in splits if s not in COCO_SPLITS]
    if unknown or not splits:
        raise RotvizError(f"unknown COCO split(s) {unknown}; choose from {', '.join(COCO_SPLITS)}.")
    images_dir = dest / "images"
    ann_path = dest / f"instances_{_selection_tag(categories, splits)}.json"
    if ann_path.is_file() and _all_images_present(ann_path, images_dir):
        return images_dir, ann_path

    archive = fetch(
        _join(base_url_annotations, COCO_ANNOTATIONS_ARCHIVE),
        dest / COCO_ANNOTATIONS_ARCHIVE,
        progress=progress,
    )
    merged: dict[str, Any] = {"images": [], "annotations": [], "categories": None}
    for split in splits:
        json_path = _extract_member(
            archive, f"annotations/instances_{split}.json", dest / f"instances_{split}.json"
        )
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
        wanted = set(coco_category_ids(categories, data["categories"]))
        keep = {
            a["image_id"] for a in data["annotations"] if not wanted or a["category_id"] in wanted
        }
        merged["images"] += [im for im in data["images"] if im["id"] in keep]
        merged["annotations"] += [a for a in data["annotations"] if a["image_id"] in keep]
        merged["categories"] = data["categories"]
        for key in ("info", "licenses"):
            if key in data:
                merged[key] = data[key]
        del data

    failures = _download_images(merged["images"], images_dir, images_base_url, progress, workers)

    tmp = ann_path.with_name(ann_path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(merged, f)
    os.replace(tmp, ann_path)
    if failures:
        url, err = failures[0]
        raise RotvizError(
            f"{len(failures)} of {len(merged['images'])} images could not be downloaded "
            f"(first: {url}: {err}). Run the command again to retry them; the images you have "
            f"already work with --root {images_dir} --ann {ann_path}."
        )
    return images_dir, ann_path


def _download_images(
    images: list[dict[str, Any]],
    images_dir: Path,
    images_base_url: str | None,
    progress: bool,
    workers: int,
) -> list[tuple[str, str]]:
    """Fetch each image (skipping those present); return (url, error) of the failures."""
    images_dir.mkdir(parents=True, exist_ok=True)
    todo = [im for im in images if not (images_dir / str(im["file_name"])).is_file()]

    def one(image: dict[str, Any]) -> tuple[str, str] | None:
        url = _image_url(str(image["coco_url"]), images_base_url)
        try:
            fetch(url, images_dir / str(image["file_name"]), progress=False)
        except RotvizError as e:
            return url, str(e)
        return None

    failures = []
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(todo), unit="img", desc="COCO images", disable=not progress) as bar,
    ):
        for result in pool.map(one, todo):
            bar.update(1)
            if result is not None:
                failures.append(result)
    return failures
