"""The disk cache of map sets: hits, misses, keys, LRU under a cap, corrupt and half-written files."""

from __future__ import annotations

import copy
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rotviz.attribution import cache as mc
from rotviz.attribution.maps import network_maps, stepped_network_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.nets.models import build_model


def entry(value: float, n: int = 1) -> np.ndarray:
    return np.full((2, n, 8, 8), value, np.float32)


def test_hit_miss_and_clear(tmp_path):
    c = mc.MapCache(tmp_path / "maps")
    assert c.get("k1") is None and "k1" not in c
    c.put("k1", entry(1.0))
    assert "k1" in c
    np.testing.assert_array_equal(c.get("k1"), entry(1.0))
    assert c.size_bytes() > 0 and "1 map set" in c.describe()
    assert c.clear() == 1 and c.get("k1") is None and c.size_bytes() == 0


def test_least_recently_used_is_dropped_first_under_a_tiny_cap(tmp_path):
    c = mc.MapCache(tmp_path, cap_bytes=10**9)
    c.put("a", entry(1.0))
    size = c.size_bytes()
    c = mc.MapCache(tmp_path, cap_bytes=2 * size)  # room for two entries
    c.put("b", entry(2.0))
    os.utime(c.path("a"), (1000, 1000))
    os.utime(c.path("b"), (2000, 2000))
    assert c.get("a") is not None  # a read touches a: b is now the least recently used
    c.put("c", entry(3.0))
    assert "a" in c and "c" in c and "b" not in c
    assert c.size_bytes() <= 2 * size


def test_corrupt_or_half_written_files_are_misses(tmp_path):
    c = mc.MapCache(tmp_path)
    c.put("k", entry(1.0))
    data = c.path("k").read_bytes()
    c.path("k").write_bytes(data[: len(data) // 2])  # cut short
    assert c.get("k") is None and not c.path("k").exists()  # removed
    (tmp_path / "x.npy.123.tmp").write_bytes(b"half")  # a write killed before its rename
    assert c.entries() == [] and c.get("x") is None
    c.path("k").write_bytes(b"not an npy file")
    assert c.get("k") is None


def test_cap_from_the_environment(monkeypatch):
    monkeypatch.setenv("ROTVIZ_MAP_CACHE_GB", "0.5")
    assert mc.MapCache().cap_bytes == 512 * 1024**2
    monkeypatch.delenv("ROTVIZ_MAP_CACHE_GB")
    assert mc.MapCache().cap_bytes == mc.DEFAULT_CAP_BYTES
    assert mc.MapCache().root.name == "map_cache"


@pytest.fixture(scope="module")
def nets():
    trained = build_model("six_layer", 4, seed=0).eval()
    other = build_model("six_layer", 4, seed=1).eval()
    twin = build_model("six_layer", 4, seed=2).eval()
    return trained, other, twin


def test_key_changes_with_every_setting_the_twin_and_the_image(nets, real_images):
    trained, other, twin = nets
    image = real_images[:1]
    sal = SaliencyConfig(layer="embedding", method="integrated_gradients")
    base = mc.map_set_key(trained, twin, sal, image)
    assert base == mc.map_set_key(trained, twin, sal, image.copy())
    changed = [
        mc.map_set_key(other, twin, sal, image),
        mc.map_set_key(trained, other, sal, image),
        mc.map_set_key(trained, twin, sal, real_images[1:2]),
        *(
            mc.map_set_key(trained, twin, SaliencyConfig(**{**sal.__dict__, k: v}), image)
            for k, v in (
                ("layer", "rotation"),
                ("neurons", "topk:3"),
                ("method", "smoothgrad"),
                ("aggregate", "max"),
                ("n_steps", 8),
                ("nt_samples", 4),
                ("stdevs", 0.2),
                ("seed", 1),
                ("rotations", (0, 2)),
            )
        ),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_twin_calibration_changes_the_key(nets):
    """A twin whose BatchNorm statistics were recomputed (other images) is another network."""
    trained, _, twin = nets
    images = np.zeros((1, 3, 32, 32), np.uint8)
    sal = SaliencyConfig()
    before = mc.map_set_key(trained, twin, sal, images)
    calibrated = copy.deepcopy(twin)
    assert mc.map_set_key(trained, calibrated, sal, images) == before
    bn = next(m for m in calibrated.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean += 0.5  # in place, as precise BatchNorm statistics are set
    assert mc.map_set_key(trained, calibrated, sal, images) != before
    assert mc.map_set_key(trained, twin, sal, images) == before


def test_cached_maps_are_computed_once_then_read(nets, real_images, tmp_path, monkeypatch):
    trained, _, twin = nets
    ckpt = SimpleNamespace(model=trained)  # checkpoint_maps reads only its network
    sal = SaliencyConfig(layer="embedding", neurons="1,2,3", aggregate="mean", rotations=(0, 1))
    cache = mc.MapCache(tmp_path)
    images = real_images[:1, :, :64, :64]
    first = mc.cached_checkpoint_maps(ckpt, images, sal, twin, "cpu", cache, neurons_per_step=2)
    assert mc.is_cached(ckpt, images, sal, twin, cache)
    assert not mc.is_cached(ckpt, images[:, :, ::-1].copy(), sal, twin, cache)

    def no_compute(*a, **k):
        raise AssertionError("computed again")

    monkeypatch.setattr(mc, "stepped_network_maps", no_compute)
    monkeypatch.setattr(mc, "checkpoint_maps", no_compute)
    again = mc.cached_checkpoint_maps(ckpt, images, sal, twin, "cpu", cache, neurons_per_step=2)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[0].shape == (1, 64, 64)


@pytest.mark.parametrize(
    "sal",
    [
        SaliencyConfig(layer="embedding", neurons="0,3,9,12", aggregate="mean", rotations=(0, 1)),
        SaliencyConfig(layer="rotation", neurons="true", aggregate="max"),
        SaliencyConfig(
            layer="embedding",
            neurons="2,5,7,8",
            method="smoothgrad",
            nt_samples=2,
            aggregate="none",
        ),
    ],
)
def test_stepped_maps_equal_network_maps(nets, real_images, sal):
    trained, _, twin = nets
    images = real_images[:1, :, :48, :48]
    steps = []
    got = stepped_network_maps(
        (trained, twin), images, sal, "cpu", 3, lambda d, t: steps.append((d, t))
    )
    want = network_maps((trained, twin), images, sal, "cpu")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * float(np.abs(w).max()))
    assert [d for d, _ in steps] == list(range(1, len(steps) + 1))
    assert steps[-1][1] == len(steps) >= 2
