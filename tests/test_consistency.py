"""Rotation consistency: back-rotated maps against the upright map, trained vs random."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rotviz.attribution.maps import network_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.errors import RotvizError
from rotviz.nets.models import RotationNet, build_model
from rotviz.study.consistency import back_rotated_maps, consistency_rows, consistency_run

SAL = SaliencyConfig(layer="rotation", aggregate="none")


class RotationAveraged(RotationNet):
    """A RotationNet whose embedding averages the base network's over the four rotations of
    the input: invariant to quarter turns by construction, so its maps turn with the image."""

    def __init__(self, base: RotationNet):
        super().__init__(base.name, base.backbone, base.num_features, base.rotations)
        self.head = base.head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [super(RotationAveraged, self).embed(torch.rot90(x, k, (-2, -1))) for k in range(4)]
        ).mean(0)


def test_back_rotated_map_is_the_map_of_the_rotated_image_turned_back(real_images):
    model = build_model("six_layer", 4, seed=0).eval()
    imgs = real_images[:2]
    maps = back_rotated_maps(model, imgs, SAL, "cpu", (0, 1))
    upright = network_maps(model, imgs, SAL, "cpu")[0]
    np.testing.assert_allclose(maps[0], upright, rtol=1e-5, atol=1e-8)
    rotated = np.ascontiguousarray(np.rot90(imgs, 1, axes=(2, 3)))
    direct = np.rot90(network_maps(model, rotated, SAL, "cpu")[0], -1, axes=(1, 2))
    np.testing.assert_allclose(maps[1], direct, rtol=1e-5, atol=1e-8)


def test_an_invariant_network_is_fully_consistent_and_an_ordinary_one_is_not(real_images):
    imgs = real_images[:3]
    ordinary = build_model("six_layer", 4, seed=0).eval()
    averaged = RotationAveraged(build_model("six_layer", 4, seed=0)).eval()
    inv = consistency_rows(averaged, imgs, SAL, "cpu")
    plain = consistency_rows(ordinary, imgs, SAL, "cpu")
    assert len(inv) == 9 and sorted(set(inv.k)) == [1, 2, 3]
    assert inv.spearman.min() > 0.999 and inv.top5.min() > 0.97
    assert plain.spearman.mean() < 0.95 and plain.top5.mean() < 0.9
    with pytest.raises(RotvizError, match="other than 0"):
        consistency_rows(ordinary, imgs, SAL, "cpu", rotations=(0,))


def test_consistency_table_trained_vs_twin(demo_store):
    store, data, train, ckpt = demo_store
    from rotviz.data.splits import load_split

    _, test = load_split(data, "test")
    run = consistency_run(ckpt, test.images[:4], SAL, "cpu")
    rows, table = run.rows, run.table
    assert list(table.index) == ["spearman", "top5"]
    assert set(rows.network) == {"trained", "random"} and len(rows) == 2 * 4 * 3
    nums = run.numbers.set_index("measure")
    t = rows[rows.network == "trained"].groupby("image").spearman.mean().mean()
    assert nums.loc["spearman", "trained"] == pytest.approx(t)
    assert (table["images"] == 4).all()


def test_consistency_command_writes_rows_and_table(demo_store, tmp_path, capsys):
    import pandas as pd

    from rotviz.cli.main import main

    store, *_ = demo_store
    out = tmp_path / "cons"
    argv = ["consistency", "--dataset", "demo", "--model", "six_layer", "--epochs", "1"]
    argv += ["--batch-size", "32", "--images", "3", "--twin", "initial"]
    assert main([*argv, "--store", str(store.root), "--out", str(out)]) == 0
    rows = pd.read_csv(out / "consistency.csv")
    assert len(rows) == 2 * 3 * 3 and rows.spearman.between(-1, 1).all()
    assert rows.file.notna().all()
    nums = pd.read_csv(out / "consistency_table.csv").set_index("measure")
    assert list(nums.index) == ["spearman", "top5"] and (nums["n"] == 3).all()
    assert "spearman" in capsys.readouterr().out and (out / "consistency.md").exists()


def test_study_consistency_section_makes_a_table(demo_store):
    from rotviz.study.files import study_from_dict
    from rotviz.study.runs import probe_and_sanity_tables

    store, *_ = demo_store
    raw = {
        "models": ["six_layer"],
        "twin": "initial",
        "train": {"epochs": 1, "batch_size": 32},
        "datasets": {"demo": {}},
        "consistency": {"images": 2},
    }
    tables = probe_and_sanity_tables(study_from_dict(raw, Path(".")), store, "cpu")
    assert list(tables["consistency demo six_layer"].index) == ["spearman", "top5"]
    assert (tables["consistency demo six_layer numbers"]["n"] == 2).all()
    with pytest.raises(RotvizError, match="unknown keys"):
        study_from_dict({**raw, "consistency": {"imgs": 2}}, Path("."))
