"""Download commands against a local fixture HTTP server; nothing but 127.0.0.1 is contacted."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from rotviz.cli.main import main
from rotviz.data import download
from rotviz.data.datasets import load_coco
from rotviz.data.download import (
    CITYSCAPES_INSTRUCTIONS,
    COCO_ANNOTATIONS_ARCHIVE,
    LFW_MD5,
    download_coco,
    download_lfw,
    fetch,
)
from rotviz.errors import RotvizError

try:
    from http_fixture import http_server  # noqa: F401 (a pytest fixture)
except ImportError:  # tests/ imported as a package
    from tests.http_fixture import http_server  # noqa: F401

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture(autouse=True)
def only_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse any connection or name lookup other than 127.0.0.1 during these tests."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in LOCAL_HOSTS:
            raise OSError(f"test socket guard: connection to {address!r} refused")

    def connect(self: socket.socket, address: object) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object):
        check((host,))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _jpeg(image: np.ndarray, size: tuple[int, int] = (40, 32)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).convert("RGB").resize(size).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


SOURCES = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@pytest.fixture
def lfw_archive(http_server) -> tuple[bytes, dict[str, bytes]]:  # noqa: F811
    """A tiny lfw.tgz (official layout) served at /lfw.tgz; returns (archive, files)."""
    files = {
        "lfw/Ann_Smith/Ann_Smith_0001.jpg": _jpeg(SOURCES[0]),
        "lfw/Ann_Smith/Ann_Smith_0002.jpg": _jpeg(SOURCES[1]),
        "lfw/Bo_Li/Bo_Li_0001.jpg": _jpeg(SOURCES[2]),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    archive = buf.getvalue()
    (http_server.root / "lfw.tgz").write_bytes(archive)
    return archive, files


def test_socket_guard_refuses_other_hosts() -> None:
    with pytest.raises(OSError, match="socket guard"):
        socket.create_connection(("10.255.255.1", 80), timeout=0.1)
    with pytest.raises(OSError, match="socket guard"):
        urllib.request.urlopen("http://images.cocodataset.org/x.jpg", timeout=0.1)


def test_lfw_md5_is_torchvisions() -> None:
    assert LFW_MD5 == "a17d05bd522c52d84eca14327a23d494"
    assert "leftImg8bit_trainvaltest.zip" in CITYSCAPES_INSTRUCTIONS
    assert "cityscapes-dataset.com" in CITYSCAPES_INSTRUCTIONS
    assert "--root" in CITYSCAPES_INSTRUCTIONS


def test_lfw_full_download_then_nothing(tmp_path: Path, http_server, lfw_archive) -> None:  # noqa: F811
    archive, files = lfw_archive
    dest = tmp_path / "dest"
    root = download_lfw(dest, base_url=http_server.url + "/", progress=False, md5=_md5(archive))
    assert root == dest / "lfw"
    for name, content in files.items():
        assert (dest / name).read_bytes() == content
    assert (dest / "lfw.tgz").read_bytes() == archive
    assert not list(dest.glob("*.part")) and not (dest / ".lfw.extracting").exists()
    assert [(h.path, h.range, h.status) for h in http_server.hits] == [("/lfw.tgz", None, 200)]

    again = download_lfw(dest, base_url=http_server.url, progress=False, md5=_md5(archive))
    assert again == root
    assert len(http_server.hits) == 1  # the second call contacted nobody


def test_lfw_resumes_a_truncated_part(tmp_path: Path, http_server, lfw_archive) -> None:  # noqa: F811
    archive, files = lfw_archive
    dest = tmp_path / "dest"
    dest.mkdir()
    half = len(archive) // 2
    (dest / "lfw.tgz.part").write_bytes(archive[:half])
    download_lfw(dest, base_url=http_server.url, progress=False, md5=_md5(archive))
    assert [(h.range, h.status, h.body_bytes) for h in http_server.hits] == [
        (f"bytes={half}-", 206, len(archive) - half)
    ]
    assert (dest / "lfw.tgz").read_bytes() == archive
    assert (dest / "lfw" / "Bo_Li" / "Bo_Li_0001.jpg").read_bytes() == files[
        "lfw/Bo_Li/Bo_Li_0001.jpg"
    ]


def test_resume_when_server_ignores_range(tmp_path: Path, http_server, lfw_archive) -> None:  # noqa: F811
    archive, _ = lfw_archive
    http_server.ignore_range = True
    part = tmp_path / "lfw.tgz.part"
    part.write_bytes(archive[:100])
    fetch(http_server.url + "/lfw.tgz", tmp_path / "lfw.tgz", md5=_md5(archive), progress=False)
    assert (tmp_path / "lfw.tgz").read_bytes() == archive
    assert http_server.hits[0].status == 200


def test_complete_part_is_only_verified(tmp_path: Path, http_server, lfw_archive) -> None:  # noqa: F811
    archive, _ = lfw_archive
    (tmp_path / "lfw.tgz.part").write_bytes(archive)  # interrupted just before the rename
    fetch(http_server.url + "/lfw.tgz", tmp_path / "lfw.tgz", md5=_md5(archive), progress=False)
    assert (tmp_path / "lfw.tgz").read_bytes() == archive
    assert [(h.status, h.body_bytes) for h in http_server.hits] == [(416, 0)]


def test_checksum_mismatch_deletes_part(tmp_path: Path, http_server, lfw_archive) -> None:  # noqa: F811
    dest = tmp_path / "dest"
    # The official md5 cannot match the tiny generated archive.
    with pytest.raises(RotvizError, match="checksum mismatch"):
        download_lfw(dest, base_url=http_server.url, progress=False)
    assert not (dest / "lfw.tgz.part").exists()
    assert not (dest / "lfw.tgz").exists()
    assert not (dest / "lfw").exists()


def test_corrupt_part_fails_checksum_then_recovers(
    tmp_path: Path,
    http_server,  # noqa: F811
    lfw_archive,
) -> None:
    archive, _ = lfw_archive
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "lfw.tgz.part").write_bytes(b"\0" * 64)  # not a prefix of the archive
    with pytest.raises(RotvizError, match="checksum mismatch"):
        download_lfw(dest, base_url=http_server.url, progress=False, md5=_md5(archive))
    assert not (dest / "lfw.tgz.part").exists()
    download_lfw(dest, base_url=http_server.url, progress=False, md5=_md5(archive))
    assert (dest / "lfw.tgz").read_bytes() == archive
    assert http_server.hits[-1].range is None


def test_http_error_is_a_rotviz_error(tmp_path: Path, http_server) -> None:  # noqa: F811
    with pytest.raises(RotvizError, match="HTTP 404"):
        download_lfw(tmp_path, base_url=http_server.url + "/nowhere", progress=False)
    assert not list(tmp_path.glob("*.part"))


# --------------------------------------------------------------------------- COCO


CATEGORIES = [
    {"supercategory": "person", "id": 1, "name": "person"},
    {"supercategory": "animal", "id": 17, "name": "cat"},
    {"supercategory": "animal", "id": 18, "name": "dog"},
]


def _coco_split(split: str, specs: list[tuple[int, list[int]]]) -> dict:
    images, anns = [], []
    for image_id, cats in specs:
        name = f"{image_id:012d}.jpg"
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "width": 40,
                "height": 32,
                "coco_url": f"http://images.cocodataset.org/{split}/{name}",
            }
        )
        for k, cat in enumerate(cats):
            anns.append(
                {
                    "id": image_id * 10 + k,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [1.0 + k, 2.0, 10.0, 8.0],
                    "area": 80.0,
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": anns, "categories": CATEGORIES, "licenses": []}


@pytest.fixture
def coco_server(http_server):  # noqa: F811
    """Annotations zip at /annotations/, images at /<split>/ on the fixture server."""
    jsons = {
        "train2017": _coco_split("train2017", [(1, [17]), (2, [1]), (3, [18, 1])]),
        "val2017": _coco_split("val2017", [(4, [18]), (5, [1, 1])]),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for split, d in jsons.items():
            zf.writestr(f"annotations/instances_{split}.json", json.dumps(d))
        zf.writestr("annotations/captions_train2017.json", "{}")
    (http_server.root / "annotations").mkdir()
    (http_server.root / "annotations" / COCO_ANNOTATIONS_ARCHIVE).write_bytes(buf.getvalue())
    for split, d in jsons.items():
        (http_server.root / split).mkdir()
        for i, im in enumerate(d["images"]):
            (http_server.root / split / im["file_name"]).write_bytes(
                _jpeg(SOURCES[(im["id"] + i) % len(SOURCES)])
            )
    return http_server


def _coco_download(dest: Path, server, **kw) -> tuple[Path, Path]:
    return download_coco(
        dest,
        base_url_annotations=server.url + "/annotations/",
        images_base_url=server.url,
        progress=False,
        **kw,
    )


def test_coco_downloads_only_chosen_categories(tmp_path: Path, coco_server) -> None:
    images_dir, ann = _coco_download(tmp_path / "coco", coco_server)
    got = sorted(p.name for p in images_dir.iterdir())
    assert got == ["000000000001.jpg", "000000000003.jpg", "000000000004.jpg"]
    for name in got:
        split = "val2017" if name == "000000000004.jpg" else "train2017"
        assert (images_dir / name).read_bytes() == (coco_server.root / split / name).read_bytes()
    requested = set(coco_server.paths())
    assert "/train2017/000000000002.jpg" not in requested
    assert "/val2017/000000000005.jpg" not in requested

    filtered = json.loads(ann.read_text())
    assert sorted(im["id"] for im in filtered["images"]) == [1, 3, 4]
    # every annotation of a kept image, the person on image 3 included
    assert sorted(a["id"] for a in filtered["annotations"]) == [10, 30, 31, 40]

    ds = load_coco(images_dir, ann, categories=("cat", "dog"))
    assert [(r.image_id, r.split) for r in ds.records] == [(1, "train"), (3, "train"), (4, "test")]
    assert ds.records[1].boxes == ((1.0, 2.0, 11.0, 10.0), (2.0, 2.0, 12.0, 10.0))

    n = len(coco_server.hits)
    assert _coco_download(tmp_path / "coco", coco_server) == (images_dir, ann)
    assert len(coco_server.hits) == n  # nothing fetched the second time


def test_coco_split_and_category_by_id(tmp_path: Path, coco_server) -> None:
    images_dir, ann = _coco_download(
        tmp_path / "coco", coco_server, categories=("17",), splits=("train2017",)
    )
    assert sorted(p.name for p in images_dir.iterdir()) == ["000000000001.jpg"]
    assert "/annotations/" + COCO_ANNOTATIONS_ARCHIVE in coco_server.paths()


def test_coco_unknown_category(tmp_path: Path, coco_server) -> None:
    with pytest.raises(RotvizError, match="unknown COCO category 'unicorn'.*cat"):
        _coco_download(tmp_path / "coco", coco_server, categories=("unicorn",))


def test_coco_missing_image_reported_and_retried(tmp_path: Path, coco_server) -> None:
    moved = coco_server.root / "val2017" / "000000000004.jpg"
    content = moved.read_bytes()
    moved.unlink()
    with pytest.raises(RotvizError, match="1 of 3 images could not be downloaded"):
        _coco_download(tmp_path / "coco", coco_server)
    images_dir = tmp_path / "coco" / "images"
    ann = next((tmp_path / "coco").glob("instances_*cat*.json"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_coco(images_dir, ann, categories=("cat", "dog"))
    assert len(ds.records) == 2
    assert sum("missing" in str(w.message) for w in caught) == 1

    moved.write_bytes(content)
    n = len(coco_server.hits)
    _coco_download(tmp_path / "coco", coco_server)
    assert coco_server.paths()[n:] == ["/val2017/000000000004.jpg"]


# --------------------------------------------------------------------------- the command


OFFICIAL_HOSTS = ("http://vis-www.cs.umass.edu", "http://images.cocodataset.org")


@pytest.fixture
def official_urls_served_locally(http_server, monkeypatch):  # noqa: F811
    """The command keeps its official URLs; each request to them is answered by the fixture
    server at the same path (any other URL fails the test)."""
    real_open = download._open

    def local_open(url: str, start: int):
        host = next((h for h in OFFICIAL_HOSTS if url.startswith(h + "/")), None)
        assert host, f"the command asked for {url}"
        return real_open(http_server.url + url[len(host) :], start)

    monkeypatch.setattr(download, "_open", local_open)
    return http_server


def test_download_coco_command_fetches_the_chosen_images_and_says_how_to_use_them(
    tmp_path: Path, coco_server, official_urls_served_locally, capsys
) -> None:
    dest = tmp_path / "data"
    assert main(["download", "coco", "--dest", str(dest), "--categories", "cat,dog"]) == 0
    printed = capsys.readouterr().out.strip()
    m = re.fullmatch(
        r"COCO ready: use --dataset coco --root (\S+) --ann (\S+) --categories cat,dog", printed
    )
    assert m, printed
    root, ann = Path(m.group(1)), Path(m.group(2))
    assert root == dest / "images" and ann.parent == dest
    assert sorted(p.name for p in root.iterdir()) == [
        "000000000001.jpg",
        "000000000003.jpg",
        "000000000004.jpg",
    ]
    assert "/annotations/" + COCO_ANNOTATIONS_ARCHIVE in coco_server.paths()
    assert "/train2017/000000000002.jpg" not in coco_server.paths()  # a person only
    ds = load_coco(root, ann, categories=("cat", "dog"))  # the options printed work
    assert [(r.image_id, r.split) for r in ds.records] == [(1, "train"), (3, "train"), (4, "test")]


def test_download_lfw_command_checks_the_official_checksum(
    tmp_path: Path, lfw_archive, official_urls_served_locally, capsys
) -> None:
    served = official_urls_served_locally
    (served.root / "lfw").mkdir()
    (served.root / "lfw" / "lfw.tgz").write_bytes(lfw_archive[0])  # not the official archive
    dest = tmp_path / "data"
    assert main(["download", "lfw", "--dest", str(dest)]) == 2
    out, err = capsys.readouterr()
    assert served.paths() == ["/lfw/lfw.tgz"]
    message = err.rsplit("\r", 1)[-1]  # after the progress bar
    assert message.startswith(
        "error: checksum mismatch for lfw.tgz from http://vis-www.cs.umass.edu/"
    )
    assert f"expected {LFW_MD5}" in message and message.count("\n") == 1
    assert "Traceback" not in err and not out
    assert sorted(p.name for p in dest.iterdir()) == []  # the bad file is gone, nothing extracted

    (dest / "lfw" / "Ann_Smith").mkdir(parents=True)  # already there: nothing is fetched
    assert main(["download", "lfw", "--dest", str(dest)]) == 0
    assert capsys.readouterr().out.strip() == f"LFW ready: use --dataset lfw --root {dest / 'lfw'}"
    assert served.paths() == ["/lfw/lfw.tgz"]


def test_download_cityscapes_command_prints_how_to_get_it(capsys) -> None:
    assert main(["download", "cityscapes"]) == 0
    assert capsys.readouterr().out.strip() == CITYSCAPES_INSTRUCTIONS.strip()
