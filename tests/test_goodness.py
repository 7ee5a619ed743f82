"""Goodness over a split, the saliency command and the study's goodness tables, on the demo's real photos."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rotviz.attribution.saliency import SaliencyConfig
from rotviz.data.preprocess import PreparedSplit
from rotviz.data.records import Record
from rotviz.data.splits import load_split
from rotviz.errors import RotvizError
from rotviz.scores.metrics import Absolute, BoxArea, goodness
from rotviz.study.files import goodness_tables, study_from_dict
from rotviz.study.goodness import goodness_run, score_rows, split_box_masks, summarize
from rotviz.study.results import sweeps

REPO = Path(__file__).resolve().parents[1]


def tiny_split() -> PreparedSplit:
    recs = [Record(f"/x/{i}.png", f"{i}.png", "test", i) for i in range(3)]
    boxes = [
        np.array([[0, 0, 2, 2]], np.float32),
        np.array([[2, 2, 4, 4]], np.float32),
        np.zeros((0, 4), np.float32),
    ]
    return PreparedSplit(
        images=np.zeros((3, 3, 4, 4), np.uint8),
        boxes=boxes,
        categories=[np.ones(len(b), np.int64) for b in boxes],
        crowd=[np.zeros(len(b), bool) for b in boxes],
        records=recs,
        skipped=[],
        cache_path=None,
    )


def test_rows_score_each_image_and_never_average_nan():
    split = tiny_split()
    masks = split_box_masks(split)
    assert masks[0, :2, :2].all() and masks[0].sum() == 4 and not masks[2].any()
    trained = np.zeros((3, 4, 4), np.float32)
    trained[0, :2, :2] = 1.0  # exactly the box: Q = 1
    trained[1, 0, 0] = 1.0  # outside the box: Q = 0
    random = np.ones((3, 4, 4), np.float32)  # everything on: Q = 4 / 16
    rows = score_rows(split, trained, random, masks, Absolute(0.9))
    assert rows.q_trained.tolist()[:2] == [1.0, 0.0]
    assert (
        rows.q_random[0]
        == pytest.approx(goodness(np.ones((4, 4), bool), masks[0]))
        == pytest.approx(0.25)
    )
    assert np.isnan(rows.q_trained[2])
    s = summarize(rows)
    assert s.trained.mean_q == pytest.approx(0.5) and s.random.mean_q == pytest.approx(0.25)
    assert s.n_scored == 2 and s.n_without_boxes == 1
    assert s.to_dict()["mean_q_trained"] == s.trained.mean_q and "baseline_flag" not in s.to_dict()
    rows_box_area = score_rows(split, trained, random, masks, BoxArea())
    assert rows_box_area.fraction_on_trained[0] == pytest.approx(4 / 16)


def test_goodness_run_on_demo_photos_and_sweeps(demo_store):
    store, data, train, ckpt = demo_store
    ds, test = load_split(data, "test")
    photos = [i for i, r in enumerate(test.records) if r.label == "scene"]
    sub = PreparedSplit(
        test.images[photos],
        [test.boxes[i] for i in photos],
        [test.categories[i] for i in photos],
        [test.crowd[i] for i in photos],
        [test.records[i] for i in photos],
        [],
        None,
    )
    run = goodness_run(
        ckpt,
        sub,
        SaliencyConfig(layer="rotation", aggregate="none"),
        BoxArea(),
        torch.device("cpu"),
    )
    assert len(run.rows) == len(photos) >= 5
    assert run.maps_trained.shape == (len(photos), 128, 128)
    assert not np.allclose(run.maps_trained, run.maps_random)  # the twin is a different network
    assert run.rows.q_trained.between(0, 1).all()
    # with the box-area threshold the map has exactly as many pixels on as the boxes
    assert np.allclose(run.rows.fraction_on_trained, run.rows.box_fraction, atol=1e-9)
    df = sweeps(run)
    assert set(df.network) == {"trained", "random"} and set(df.kind) == {"absolute", "percentile"}
    assert df.mean_q.between(0, 1).all()


def test_saliency_command_writes_every_output(demo_store, tmp_path):
    store, *_ = demo_store
    out = tmp_path / "sal"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "rotviz",
            "saliency",
            "--dataset",
            "demo",
            "--model",
            "six_layer",
            "--epochs",
            "1",
            "--layer",
            "embedding",
            "--neurons",
            "topk:3",
            "--threshold",
            "pct:90",
            "--aggregate",
            "none",
            "--out",
            str(out),
            "--figures",
            "2",
            "--figure-formats",
            "png,pdf",
            "--store",
            str(store.root),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "served from the store" in res.stderr
    rows = pd.read_csv(out / "goodness.csv")
    assert {
        "image_id",
        "file",
        "q_trained",
        "q_random",
        "fraction_on_trained",
        "box_fraction",
    } <= set(rows.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"] == "pct:90" and summary["saliency"]["neurons"] == "topk:3"
    assert summary["n_scored"] == rows.q_trained.notna().sum() > 0
    assert summary["mean_q_trained"] == pytest.approx(rows.q_trained.mean())
    for name in ("figure_000.png", "figure_001.png", "figure_001.pdf", "sweep.png", "sweep.csv"):
        assert (out / name).stat().st_size > 0
    assert "mean Q" in res.stdout
    assert summary["mean_fraction_on_trained"] == pytest.approx(rows.fraction_on_trained.mean())
    assert "share of pixels on at pct:90" in res.stdout and "Q at pct:95" in res.stdout
    base = pd.read_csv(out / "baselines.csv")
    assert list(base.source) == ["trained", "random", "centre", "edges", "noise"]
    assert base["q pct:95"].between(0, 1).all()


@pytest.mark.slow
def test_goodness_tables_have_both_layers_thresholds_and_both_networks(demo_store):
    store, *_ = demo_store
    study = study_from_dict(
        {
            "models": ["six_layer"],
            "train": {"epochs": 1, "batch_size": 32},
            "datasets": {"demo": {}},
            "goodness": {"dataset": "demo", "thresholds": {"rotation": {"six_layer": "box-area"}}},
        },
        REPO,
    )
    tables = goodness_tables(study, store, "cpu", log=lambda m: None)
    assert set(tables) == {"rotation", "embedding"}
    assert list(tables["rotation"].columns) == ["six_layer (box-area)"]
    assert list(tables["embedding"].columns) == ["six_layer (abs:0.0008)"]  # the study's lambda
    for df in tables.values():
        assert list(df.index) == [
            "Q trained (%)",
            "Q random twin (%)",
            "difference (%)",
            "p (Wilcoxon)",
            "images scored",
            "share of pixels on, trained (%)",
            "share of pixels on, random (%)",
            "threshold's reach",
            "Q at pct:95, trained",
            "Q at pct:95, random twin",
            "Q at pct:95, centre prior",
            "Q at pct:95, edge map",
            "Q at pct:95, uniform noise",
            "baselines",
        ]
        assert "nan" not in df.to_markdown().lower()
    # box-area switches on exactly the boxes' share: never "all on" nor "none"
    assert tables["rotation"].loc["threshold's reach"].iloc[0] == "informative"
    nums = tables["embedding"].attrs["numbers"].iloc[0]
    assert 0 <= nums["share_on_trained"] <= 1 and 0 <= nums["q_pct95_edges"] <= 1


def test_models_without_a_study_threshold_need_one(demo_store):
    store, *_ = demo_store
    study = study_from_dict(
        {"models": ["resnet18"], "datasets": {"demo": {}}, "goodness": {"dataset": "demo"}}, REPO
    )
    with pytest.raises(RotvizError, match="threshold"):
        goodness_tables(study, store, "cpu", log=lambda m: None)
