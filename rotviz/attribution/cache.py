"""Computed map sets kept on disk under the store's folder, shared by the app and the CLI.

A map set (the trained network's maps and its twin's, stacked (2, N, S, S) float32) is one
``.npy`` file in ``<store>/map_cache/`` named by ``map_set_key``: a hash of both networks'
weights and buffers (so the checkpoint, the twin kind and the images that calibrated the twin
all count), the saliency settings and the images' content. Files are written to a temporary
name and renamed into place, so a run killed mid-write never leaves a file that is read; a
file that cannot be read is a miss and is removed. The folder holds at most ``cap_bytes``
(default 2 GB, ``$ROTVIZ_MAP_CACHE_GB``): the least recently used entries (a read touches its
file) are dropped first.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from pathlib import Path

import numpy as np
import torch

from rotviz.attribution.maps import Progress, checkpoint_maps, stepped_network_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import stable_hash
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.models import RotationNet
from rotviz.nets.store import atomic_write_bytes, user_store_root
from rotviz.runtime import RuntimeLike

DEFAULT_CAP_BYTES = 2 * 1024**3
STALE_TEMP_S = 3600.0  # a temporary file older than this is left over from a killed write
CACHE_VERSION = 1  # bump when maps of the same settings change


def map_cache_root() -> Path:
    """The map cache folder: ``<store>/map_cache`` (the store: $ROTVIZ_STORE or the default)."""
    return user_store_root() / "map_cache"


def default_cap_bytes() -> int:
    """The size cap: $ROTVIZ_MAP_CACHE_GB gigabytes when set, else 2 GB."""
    text = os.environ.get("ROTVIZ_MAP_CACHE_GB")
    if not text:
        return DEFAULT_CAP_BYTES
    try:
        return int(float(text) * 1024**3)
    except ValueError:
        raise RotvizError("ROTVIZ_MAP_CACHE_GB must be a number of gigabytes, e.g. 2") from None


def network_digest(model: torch.nn.Module) -> str:
    """SHA-256 (hex, 16 digits) of a network's parameters and buffers, by name. Kept on the
    module with the tensors' storage and version counters, so it is computed again only after
    a tensor was changed in place (e.g. BatchNorm statistics recomputed) or replaced."""
    state = sorted(model.state_dict().items())
    signature = tuple((name, t.data_ptr(), t._version) for name, t in state)
    memo = getattr(model, "_rotviz_digest", None)
    if memo is not None and memo[0] == signature:
        return memo[1]
    h = hashlib.sha256()
    for name, tensor in state:
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest = h.hexdigest()[:16]
    object.__setattr__(model, "_rotviz_digest", (signature, digest))
    return digest


def images_digest(images: np.ndarray) -> str:
    """SHA-256 (hex, 16 digits) of images' content and shape."""
    a = np.ascontiguousarray(images)
    h = hashlib.sha256(f"{a.dtype}:{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def maps_key(networks: tuple[torch.nn.Module, ...], sal: SaliencyConfig, images: np.ndarray) -> str:
    """The cache key of the maps of images by these networks (in order) under sal."""
    return stable_hash(
        "maps",
        CACHE_VERSION,
        [network_digest(m) for m in networks],
        sal.key(),
        images_digest(images),
        length=32,
    )


def map_set_key(
    trained: torch.nn.Module, twin: torch.nn.Module, sal: SaliencyConfig, images: np.ndarray
) -> str:
    """The cache key of the maps of images by a trained network and its twin under sal."""
    return maps_key((trained, twin), sal, images)


class MapCache:
    """Map sets on disk, at most cap_bytes, least recently used dropped first."""

    def __init__(self, root: str | Path | None = None, cap_bytes: int | None = None):
        self.root = Path(root) if root is not None else map_cache_root()
        self.cap_bytes = default_cap_bytes() if cap_bytes is None else int(cap_bytes)

    def path(self, key: str) -> Path:
        """The file of an entry."""
        return self.root / f"{key}.npy"

    def entries(self) -> list[Path]:
        """The entry files (temporary files of writes in progress excluded)."""
        try:
            return [p for p in self.root.glob("*.npy") if p.is_file()]
        except OSError:
            return []

    def size_bytes(self) -> int:
        """Bytes held by the entries."""
        total = 0
        for p in self.entries():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def describe(self) -> str:
        """One line: entries, size, cap and folder."""
        n, size = len(self.entries()), self.size_bytes()
        return (
            f"{n} map set{'s' if n != 1 else ''}, {size / 1024**2:.1f} MB of "
            f"{self.cap_bytes / 1024**3:.1f} GB, in {self.root}"
        )

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> np.ndarray | None:
        """The stored array, or None (a missing or unreadable file; the latter is removed).
        A hit touches the file (least recently used goes first)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError):
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return array

    def put(self, key: str, array: np.ndarray) -> None:
        """Store array under key (atomically), then drop least recently used entries over the cap.
        A store that cannot be written leaves the cache as it was."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        if buf.tell() > self.cap_bytes:
            return  # bigger than the whole cache
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path(key), buf.getvalue())
        except OSError:
            return
        self.evict(keep=key)

    def evict(self, keep: str | None = None) -> int:
        """Drop least recently used entries until the cache fits its cap (never ``keep``), and
        temporary files left by killed writes; returns how many entries were dropped."""
        now = time.time()
        for tmp in self.root.glob("*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > STALE_TEMP_S:
                    tmp.unlink()
        stats = []
        for p in self.entries():
            with contextlib.suppress(OSError):
                st = p.stat()
                stats.append((st.st_mtime, p, st.st_size))
        total = sum(size for _, _, size in stats)
        dropped = 0
        for _, p, size in sorted(stats, key=lambda s: s[0]):
            if total <= self.cap_bytes:
                break
            if keep is not None and p == self.path(keep):
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                dropped += 1
            total -= size
        return dropped

    def clear(self) -> int:
        """Remove every entry (and temporary file); returns how many entries were removed."""
        removed = 0
        for p in self.entries():
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
        for tmp in self.root.glob("*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
        return removed


def cached_checkpoint_maps(
    checkpoint: Checkpoint,
    images: np.ndarray,
    sal: SaliencyConfig,
    twin: RotationNet,
    runtime: RuntimeLike = "auto",
    cache: MapCache | None = None,
    progress: Progress | None = None,
    neurons_per_step: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maps (N, S, S) float32 of a checkpoint's network and its twin on uint8 images
    (N, 3, S, S), from the map cache when there (default ``MapCache()``), else computed and
    stored: by ``stepped_network_maps`` when neurons_per_step is given (small steps, progress
    after each), else by ``checkpoint_maps`` (batches of images)."""
    cache = cache if cache is not None else MapCache()
    key = map_set_key(checkpoint.model, twin, sal, images)
    hit = cache.get(key)
    if hit is not None and hit.shape == (2, *images.shape[:1], *images.shape[-2:]):
        return hit[0], hit[1]
    if neurons_per_step:
        trained, random = stepped_network_maps(
            (checkpoint.model, twin), images, sal, runtime, neurons_per_step, progress
        )
    else:
        trained, random = checkpoint_maps(
            checkpoint, images, sal, runtime, twin=twin, progress=progress
        )
    cache.put(key, np.stack([trained, random]).astype(np.float32))
    return trained, random


def is_cached(
    checkpoint: Checkpoint,
    images: np.ndarray,
    sal: SaliencyConfig,
    twin: RotationNet,
    cache: MapCache | None = None,
) -> bool:
    """Whether the maps of images under sal are in the map cache (nothing computed)."""
    cache = cache if cache is not None else MapCache()
    return map_set_key(checkpoint.model, twin, sal, images) in cache
