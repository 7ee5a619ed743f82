"""Study files and the study's accuracy table with intervals, on the demo's real images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rotviz.data.splits import load_split
from rotviz.errors import RotvizError
from rotviz.nets.evaluate import rotation_logits
from rotviz.nets.twin import random_twin_of
from rotviz.study.files import accuracy_table, load_study, study_from_dict

REPO = Path(__file__).resolve().parents[1]
CELL = re.compile(r"^(-?\d+\.\d) \[(-?\d+\.\d), (-?\d+\.\d)\]$")


def demo_study(twin: str = "initial", **train):
    return study_from_dict(
        {
            "models": ["six_layer"],
            "train": {"epochs": 1, "batch_size": 32, **train},
            "datasets": {"demo": {}},
            "twin": twin,
        },
        REPO,
    )


def test_accuracy_table_shows_intervals_and_a_paired_p(demo_store):
    """With the study's twin (initial statistics); the calibrated one: tests/test_one_path.py."""
    store, data, train, ckpt = demo_store
    df = accuracy_table(demo_study(), store, "cpu", log=lambda m: None)
    assert list(df.index) == [
        ("demo", "trained"),
        ("demo", "random"),
        ("demo", "difference"),
        ("demo", "p (Wilcoxon)"),
    ]
    assert list(df.columns) == ["six_layer"]
    for net in ("trained", "random", "difference"):
        m = CELL.match(df.loc[("demo", net), "six_layer"])
        assert m, df.loc[("demo", net), "six_layer"]
        x, lo, hi = map(float, m.groups())
        assert lo <= x <= hi
    # oracle: the point estimates are the plain test accuracies, computed here independently,
    # and the p-value is scipy's Wilcoxon on each image's share of rotations right
    _, test = load_split(data, "test")
    per_image = {}
    twin = random_twin_of(ckpt, "initial", "cpu")
    for net, model in (("trained", ckpt.model), ("random", twin)):
        logits, labels = rotation_logits(model, test.images, train.rotations, "cpu")
        right = (logits.argmax(1) == labels).float().numpy().reshape(len(test), -1)
        per_image[net] = right.mean(1)
        x = float(CELL.match(df.loc[("demo", net), "six_layer"]).group(1))
        assert x == pytest.approx(100 * right.mean(), abs=0.051)
        card_name = {"trained": "trained", "random": "initial"}[net]
        assert x == pytest.approx(100 * ckpt.card.test_accuracy(card_name), abs=0.051)
    p_cell = df.loc[("demo", "p (Wilcoxon)"), "six_layer"]
    if np.array_equal(per_image["trained"], per_image["random"]):
        assert p_cell == "n/a"  # no image differs: nothing to test (1 epoch on the demo)
    else:
        from scipy.stats import wilcoxon

        p = wilcoxon(per_image["trained"], per_image["random"], zero_method="wilcox").pvalue
        assert p_cell == ("p<0.001" if p < 0.001 else f"p={p:.3f}")
    nums = df.attrs["numbers"]
    row = nums.iloc[0]
    assert row["trained_low"] <= row["trained"] <= row["trained_high"]
    assert row["n"] == len(test)
    assert "nan" not in df.to_markdown().lower()


def test_several_seeds_add_rows_over_seeds():
    study = demo_study(seeds=[0, 1, 2])
    assert study.seeds() == [0, 1, 2]
    assert study.train_config("six_layer").seed == 0
    assert study.train_config("six_layer", seed=2).seed == 2
    with pytest.raises(RotvizError, match="seeds"):
        demo_study(seeds="zero")


def test_study_files_with_probe_and_sanity_sections_parse():
    for name in ("paper.toml", "shared.toml"):
        study = load_study(REPO / "studies" / name)
        probe, sanity = study.sections["probe"], study.sections["sanity"]
        assert probe["models"] == ["six_layer"] and probe["fractions"][-1] == 1.0
        assert set(probe["datasets"]) <= set(study.datasets)
        assert set(sanity["datasets"]) <= set(study.datasets)
        assert sanity["threshold"] == "pct:95"
        study.train_config("six_layer")  # the [train] section still builds a TrainConfig


def test_a_misspelt_probe_key_is_reported():
    raw = {"datasets": {"demo": {}}, "probe": {"fractoins": [0.1]}}
    with pytest.raises(RotvizError, match="fractoins"):
        study_from_dict(raw, REPO)
    raw = {"datasets": {"demo": {}}, "sanity": {"datasets": ["coco"]}}
    with pytest.raises(RotvizError, match="coco"):
        study_from_dict(raw, REPO)


def test_seed_rows_never_show_nan():
    from rotviz.scores.stats import compare_paired
    from rotviz.study.results import interval_cells

    cmp = compare_paired(np.array([1.0, np.nan, 0.5]), np.array([0.0, np.nan, 0.25]))
    shown, nums = interval_cells(cmp, {"trained": [0.7, 0.8], "random": [0.1, 0.2]})
    assert set(shown) >= {"trained", "random", "trained, over seeds", "random, over seeds"}
    assert "nan" not in " ".join(shown.values()).lower()
    assert nums["n"] == 2
