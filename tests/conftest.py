"""Shared fixtures: real images from skimage.data, the optional ../shared/data, isolated caches."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own preprocessing cache and store unless it asks otherwise."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("ROTVIZ_CACHE", str(cache))
    monkeypatch.setenv("ROTVIZ_STORE", str(cache / "store"))  # never the user's own store
    return cache


@pytest.fixture(scope="session")
def real_images() -> np.ndarray:
    """Eight real photographs from skimage.data, uint8 (8, 3, 128, 128)."""
    from skimage import data
    from skimage.transform import resize

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    gray = [data.camera(), data.moon(), data.coins(), data.page()]
    out = []
    for img in photos + [np.stack([g] * 3, -1) for g in gray]:
        small = resize(img, (128, 128), anti_aliasing=True, preserve_range=True).astype(np.uint8)
        out.append(small.transpose(2, 0, 1))
    return np.stack(out)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory):
    """A store holding a six-layer net trained 1 epoch on the demo set (built once per session)."""
    from rotviz.config import DataConfig, TrainConfig
    from rotviz.nets.store import CheckpointStore
    from rotviz.training.pipeline import train_or_load

    root = tmp_path_factory.mktemp("demo_store")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROTVIZ_CACHE", str(root / "cache"))
    store = CheckpointStore(root / "checkpoints")
    data, train = DataConfig("demo"), TrainConfig(epochs=1, batch_size=32)
    outcome = train_or_load(data, train, store, "cpu", log=lambda m: None)
    yield store, data, train, outcome.checkpoint
    mp.undo()
