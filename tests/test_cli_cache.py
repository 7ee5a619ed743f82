"""The command line says the cost before a long map set, keeps map sets in the map cache, and
shows or clears that cache (``python -m rotviz cache``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rotviz.attribution import cost
from rotviz.attribution.cache import MapCache, map_set_key
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.cli.main import main
from rotviz.cli.options import say_cost
from rotviz.nets.models import build_model

DEMO = "demo-six_layer-e100-2dd201f2a42d7756"  # shipped


@pytest.fixture()
def slow_machine(monkeypatch, tmp_path):
    """One pass costs 1 s (no timing), kept in this test's own file."""
    monkeypatch.setattr(cost, "pass_cost", lambda *a, **k: 1.0)
    monkeypatch.setattr(cost, "pass_cost_file", lambda: tmp_path / "pass_cost.json")


@pytest.mark.slow  # the demo is materialised and preprocessed in this test's own cache
def test_saliency_says_the_estimate_then_reads_the_map_cache(slow_machine, tmp_path, capsys):
    args = ["saliency", "--dataset", "demo", "--checkpoint", DEMO, "--twin", "initial"]
    args += ["--threshold", "pct:90", "--max-images", "12"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "maps: about" in err and "(4 neurons x" in err and "x 2 networks)" in err
    assert len(MapCache().entries()) == 1

    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "maps: from the map cache" in err and "maps: about" not in err
    first, again = (pd.read_csv(tmp_path / d / "goodness.csv") for d in "ab")
    pd.testing.assert_series_equal(first["q_trained"], again["q_trained"])

    assert main(["cache"]) == 0
    assert "1 map set," in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 map set from" in capsys.readouterr().out
    assert MapCache().entries() == []
    assert main(["cache", "info"]) == 0
    assert capsys.readouterr().out.startswith("0 map sets, 0.0 MB of 2.0 GB")


def test_cache_command_reads_the_store_option(tmp_path, capsys):
    cache = MapCache(tmp_path / "elsewhere" / "map_cache")
    cache.put("k", np.zeros((2, 1, 4, 4), np.float32))
    assert main(["cache", "info", "--store", str(tmp_path / "elsewhere")]) == 0
    assert "1 map set," in capsys.readouterr().out


def test_say_cost_logs_the_estimate_only_over_the_threshold_or_the_cache(
    slow_machine, tmp_path, capsys
):
    model, twin = build_model("six_layer", 4, seed=0), build_model("six_layer", 4, seed=1)
    images = np.zeros((3, 3, 32, 32), np.uint8)
    sal = SaliencyConfig(
        layer="embedding", method="integrated_gradients", n_steps=4, aggregate="none"
    )
    cache = MapCache(tmp_path / "maps")
    say_cost(model, sal, images, twin, cache)
    assert "maps: about 26 min (64 neurons x 4 steps x 3 images x 2 networks)" in (
        capsys.readouterr().err
    )
    cache.put(map_set_key(model, twin, sal, images), np.zeros((2, 3, 32, 32), np.float32))
    say_cost(model, sal, images, twin, cache)
    assert "maps: from the map cache" in capsys.readouterr().err
    say_cost(model, SaliencyConfig(neurons="predicted", aggregate="none"), images[:1], twin, cache)
    assert capsys.readouterr().err == ""  # 2 s: nothing to say
