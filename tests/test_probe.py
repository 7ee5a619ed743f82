"""Downstream probes: tasks, cached features, no test image in any fit, beating chance, fine-tuning, CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from PIL import Image

from rotviz.config import DataConfig, TrainConfig
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Card, Checkpoint
from rotviz.nets.models import build_model
from rotviz.report.figures import label_efficiency_figure
from rotviz.study import probe
from rotviz.training.loop import train
from tests.helpers import shared_path

CPU = torch.device("cpu")


def fake_checkpoint(model, seed: int = 0) -> Checkpoint:
    card = {
        "train_config": dataclasses.asdict(TrainConfig(seed=seed)),
        "key": f"test-{seed}",
        "weights_sha256": str(sum(float(p.detach().sum()) for p in model.parameters())),
        "name": "t",
        "dataset": "demo",
        "data_config": dataclasses.asdict(DataConfig("demo")),  # its twin calibrates on the demo
    }
    return Checkpoint(model.eval(), Card(card), Path("none"))


@pytest.fixture(scope="module")
def demo_task(tmp_path_factory) -> probe.TaskData:
    mp = pytest.MonkeyPatch()
    mp.setenv("ROTVIZ_CACHE", str(tmp_path_factory.mktemp("probe_cache")))
    td = probe.task_data(DataConfig("demo"))
    yield td
    mp.undo()


@pytest.fixture(scope="module")
def demo_trained(demo_task) -> Checkpoint:
    """A six-layer net trained 1 epoch on rotations of the demo's training patches (no labels)."""
    model = build_model("six_layer", 4, 0)
    train(model, demo_task.images("train"), TrainConfig(epochs=1, lr=1e-3), CPU)
    return fake_checkpoint(model.eval())


def test_demo_task_is_faces_vs_nonfaces_with_disjoint_images(demo_task):
    td = demo_task
    assert td.classes == ["face", "nonface"]
    train_files, test_files = td.ids("train"), td.ids("test")
    assert not set(train_files) & set(test_files)
    assert len(train_files) + len(test_files) == 200  # the 9 scene photos are not in the task
    for f, y in zip(test_files, td.y_test, strict=True):
        assert ("_nonface_" in f) == (y == 1)
    assert td.images("test").shape == (len(test_files), 3, 128, 128)


def test_label_subset_is_stratified_seeded_and_keeps_every_class():
    y = np.array([0] * 90 + [1] * 10 + [2] * 3)
    sub = probe.label_subset(y, 0.1, seed=0)
    assert np.bincount(y[sub]).tolist() == [9, 1, 1]
    assert np.array_equal(sub, probe.label_subset(y, 0.1, seed=0))
    assert not np.array_equal(sub, probe.label_subset(y, 0.1, seed=1))
    assert np.array_equal(probe.label_subset(y, 1.0, 0), np.arange(len(y)))
    with pytest.raises(RotvizError):
        probe.label_subset(y, 0.0, 0)


def test_linear_probe_on_trained_features_beats_chance(demo_task, demo_trained):
    x_train, x_test = probe.task_features(demo_trained.model, demo_task, "trained-test", CPU)
    fit = probe.linear_probe(x_train, demo_task.y_train, x_test, seed=0)
    correct = fit.correct(demo_task.y_test)
    chance = probe.chance_accuracy(demo_task.y_test)
    assert correct.mean() > chance + 0.15
    p = scipy.stats.binomtest(int(correct.sum()), len(correct), chance, "greater").pvalue
    assert p < 0.01
    assert fit.c in probe.C_GRID and len(fit.val_accuracy) == len(probe.C_GRID)


def test_no_test_image_enters_any_fit_or_the_choice_of_c(demo_task, demo_trained, monkeypatch):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline

    seen: list[tuple[str, np.ndarray, object]] = []
    pipe_fit, knn_fit = Pipeline.fit, KNeighborsClassifier.fit

    def spy_pipe(self, X, y=None, **kw):
        seen.append(("linear", np.asarray(X).copy(), self))
        return pipe_fit(self, X, y, **kw)

    def spy_knn(self, X, y=None, **kw):
        seen.append(("knn", np.asarray(X).copy(), self))
        return knn_fit(self, X, y, **kw)

    monkeypatch.setattr(Pipeline, "fit", spy_pipe)
    monkeypatch.setattr(KNeighborsClassifier, "fit", spy_knn)
    x_train, x_test = probe.task_features(demo_trained.model, demo_task, "trained-test", CPU)
    train_rows = {r.tobytes() for r in x_train}
    test_rows = {r.tobytes() for r in x_test}
    assert not train_rows & test_rows  # the check below can tell them apart

    per_image = probe.probe_run(demo_trained, demo_task, CPU, fractions=(0.1,))
    assert len(seen) == 2 * (1 + len(probe.C_GRID) + 1)  # nets x fractions x fits
    for _, X, _ in seen:
        rows = {r.tobytes() for r in X}
        assert not rows & test_rows
    trained_rows = [X for kind, X, _ in seen[: len(seen) // 2]]
    assert all({r.tobytes() for r in X} <= train_rows for X in trained_rows)

    # poison the test side: labels permuted, images replaced; nothing about the fits may change
    coefs = [m[-1].coef_.copy() for kind, _, m in seen if kind == "linear"]
    poisoned = dataclasses.replace(
        demo_task,
        test=[
            dataclasses.replace(p, y=np.random.default_rng(0).permutation(p.y))
            for p in demo_task.test
        ],
    )
    seen.clear()
    per_image2 = probe.probe_run(demo_trained, poisoned, CPU, fractions=(0.1,))
    coefs2 = [m[-1].coef_ for kind, _, m in seen if kind == "linear"]
    assert all(np.array_equal(a, b) for a, b in zip(coefs, coefs2, strict=True))
    assert per_image["c"].equals(per_image2["c"])

    x_noise = np.random.default_rng(1).normal(size=x_test.shape).astype(np.float32)
    a = probe.linear_probe(x_train, demo_task.y_train, x_test)
    b = probe.linear_probe(x_train, demo_task.y_train, x_noise)
    assert a.c == b.c and a.val_accuracy == b.val_accuracy
    assert np.array_equal(a.model[-1].coef_, b.model[-1].coef_)


def test_probe_tables_and_curve(demo_task, demo_trained):
    per_image = probe.probe_run(demo_trained, demo_task, CPU, fractions=(0.1, 1.0))
    assert set(per_image["network"]) == {"trained", "random"}
    assert set(per_image["method"]) == {"linear", "knn"}
    numbers = probe.probe_numbers(per_image, n_resamples=200)
    assert len(numbers) == 4
    r = numbers.iloc[-1]
    assert r["trained_low"] <= r["trained"] <= r["trained_high"]
    acc = per_image.query("network == 'trained' and method == 'knn' and fraction == 1.0")
    assert r["trained"] == pytest.approx(acc["correct"].mean())
    table = probe.probe_table(numbers)
    assert list(table.columns[:4]) == ["trained", "random", "difference", "p (Wilcoxon)"]
    assert "[" in table.iloc[0, 0]
    fig = label_efficiency_figure(numbers)
    assert fig.axes[0].get_xscale() == "log"


def test_features_are_cached(demo_task, monkeypatch, tmp_path):
    model = build_model("six_layer", 4, 0)
    part = demo_task.test[0]
    a = probe.split_features(model, part.split, "k", CPU, tmp_path)
    assert a.shape == (len(part.split), model.num_features)

    def boom(*a, **k):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(probe, "embed_images", boom)
    b = probe.split_features(model, part.split, "k", CPU, tmp_path)
    assert np.array_equal(a, b)
    with pytest.raises(AssertionError):
        probe.split_features(model, part.split, "another network", CPU, tmp_path)


def test_finetune_moves_only_the_last_blocks_and_the_new_head(real_images):
    model = build_model("six_layer", 4, 0)
    before = [p.clone() for p in model.parameters()]
    y = np.array([0, 1] * 4)
    fit = probe.finetune_probe(
        model, real_images, y, real_images[:3], 2, 2, CPU, 0, probe.FinetuneConfig(epochs=1)
    )
    assert fit.predictions.shape == (3,) and fit.method == "finetune-2"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    tuned = fit.model.net.blocks()
    orig = model.blocks()
    for i in range(6):
        same = all(
            torch.equal(a, b)
            for a, b in zip(tuned[i].parameters(), orig[i].parameters(), strict=True)
        )
        assert same == (i < 4), i
    assert fit.model.classifier.out_features == 2
    with pytest.raises(RotvizError, match="unfreeze-last 7"):
        probe.finetune_probe(model, real_images, y, real_images, 2, 7, CPU)


def test_city_task_splits_unseen_images_by_hash(tmp_path):
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((64, 32))
    for split, cities in (
        ("train", ["aachen"]),
        ("val", ["lindau", "munster"]),
        ("test", ["bonn"]),
    ):
        for city in cities:
            folder = tmp_path / "leftImg8bit" / split / city
            folder.mkdir(parents=True)
            for i in range(12):
                photo.rotate(i * 5).save(folder / f"{city}_{i:06d}_000019_leftImg8bit.png")
    td = probe.task_data(DataConfig("cityscapes", root=str(tmp_path), test_fraction=0.3))
    assert td.classes == ["bonn", "lindau", "munster"]  # aachen trained the rotation net
    assert not set(td.ids("train")) & set(td.ids("test"))
    assert len(td.ids("train")) + len(td.ids("test")) == 36
    with pytest.raises(RotvizError, match="needs the lfw dataset"):
        probe.task_data(DataConfig("cityscapes", root=str(tmp_path)), task="identity")


def test_catdog_task_on_real_coco():
    root = shared_path("coco")
    data = DataConfig(
        "coco",
        root=str(root / "images"),
        ann=str(root / "annotations.json"),
        categories=("cat", "dog"),
        test_fraction=0.5,
    )
    td = probe.task_data(data)  # the split is seeded: both classes land on both sides
    assert td.classes == ["cat", "dog"]
    assert set(td.y_train) == set(td.y_test) == {0, 1}
    from rotviz.data.datasets import load_dataset

    ds = load_dataset(data)
    names = {k: v for k, v in ds.category_names.items()}
    by_path = {r.relpath: r for r in ds.records}
    for which, ys in (("train", td.y_train), ("test", td.y_test)):
        for f, y in zip(td.ids(which), ys, strict=True):
            found = {names[c] for c in by_path[f].categories} & {"cat", "dog"}
            assert found == {td.classes[y]}


@pytest.mark.slow
def test_identity_task_on_real_lfw():
    root = shared_path("lfw")
    data = DataConfig("lfw", root=str(root), max_images=150)
    td = probe.task_data(data, "identity", min_images=3)
    from rotviz.data.datasets import load_dataset

    ds = load_dataset(data)
    counts = {}
    for r in ds.records:
        counts[r.label] = counts.get(r.label, 0) + 1
    assert set(td.classes) <= {p for p, n in counts.items() if n >= 3}
    assert not set(td.ids("train")) & set(td.ids("test"))
    assert set(td.y_test) <= set(td.y_train)


@pytest.mark.slow
def test_cli_probe_and_sanity_on_the_demo(tmp_path, capsys):
    import argparse

    from rotviz.cli.probe import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    common = ["--max-images", "40", "--epochs", "1", "--store", str(tmp_path / "s")]
    args = parser.parse_args(
        ["probe", *common, "--fractions", "10%,100%", "--out", str(tmp_path / "p")]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "p (Wilcoxon)" in out and "[" in out
    assert (tmp_path / "p" / "probe.csv").exists() and (
        tmp_path / "p" / "label_efficiency.png"
    ).exists()
    tex = (tmp_path / "p" / "probe.tex").read_text()
    assert "\\begin{table}" in tex and "[" in tex
    args = parser.parse_args(
        [
            "sanity",
            *common,
            "--images",
            "2",
            "--no-data-randomisation",
            "--out",
            str(tmp_path / "q"),
        ]
    )
    assert args.func(args) == 0
    assert "Spearman" in capsys.readouterr().out
    assert (tmp_path / "q" / "cascading_neurons0.png").exists()
