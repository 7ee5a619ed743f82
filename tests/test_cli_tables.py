"""The accuracy-table and goodness-table commands on the embedded demo data and the shipped demo
network: what they print is checked against numbers computed here with the core alone."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from rotviz.attribution.gradients import saliency_maps
from rotviz.attribution.targets import parse_neurons
from rotviz.cli.main import main
from rotviz.config import DataConfig
from rotviz.data.rotation import normalize
from rotviz.data.splits import load_split
from rotviz.nets.evaluate import rotation_logits
from rotviz.nets.store import load_checkpoint
from rotviz.scores.metrics import box_mask

DEMO = "demo-six_layer-e100-2dd201f2a42d7756"  # the shipped demo network: served, never trained
INTERVAL = re.compile(r"(-?\d+\.\d) \[(-?\d+\.\d), (-?\d+\.\d)\]")


def row(text: str, label: str) -> str:
    """The one table line whose first cell is label, alone or as ('dataset', label)."""

    def first_cell(line: str) -> str:
        cell = line.split("|")[1].strip()
        quoted = re.findall(r"'([^']*)'", cell)
        return quoted[-1] if cell.startswith("(") and quoted else cell

    found = [
        line for line in text.splitlines() if line.startswith("|") and first_cell(line) == label
    ]
    assert len(found) == 1, (label, text)
    return found[0]


def interval(text: str, label: str) -> tuple[float, float, float]:
    """(estimate, low, high) of the "x [lo, hi]" cell in the row labelled label."""
    m = INTERVAL.search(row(text, label))
    assert m, row(text, label)
    x, lo, hi = map(float, m.groups())
    assert lo <= x <= hi
    return x, lo, hi


def number(text: str, label: str) -> float:
    return float(row(text, label).split("|")[2].strip())


def test_accuracy_table_prints_the_served_networks_accuracy(tmp_path, capsys):
    out = tmp_path / "accuracy.md"
    args = ["accuracy-table", "--datasets", "demo", "--models", "six_layer", "--epochs", "100"]
    assert main([*args, "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert "served from the store, no training" in err and DEMO in err
    assert out.read_text().strip() == printed.strip()
    assert "Test rotation accuracy (%)" in printed and "six_layer" in printed

    ckpt = load_checkpoint(DEMO)  # oracle: its accuracy on the demo test split, computed here
    _, test = load_split(DataConfig("demo"), "test")
    logits, labels = rotation_logits(ckpt.model, test.images, ckpt.rotations, "cpu")
    accuracy = 100 * float((logits.argmax(1) == labels).float().mean())
    trained, _, _ = interval(printed, "trained")
    assert trained == pytest.approx(accuracy, abs=0.051)
    # the card's figure was measured before the weights were stored in float16: within a point
    assert trained == pytest.approx(100 * ckpt.card.test_accuracy("trained"), abs=1.0)
    random, _, _ = interval(printed, "random")
    assert 0 <= random <= 100
    difference, _, _ = interval(printed, "difference")
    assert difference == pytest.approx(trained - random, abs=0.11)
    assert re.search(r"p[<=]0?\.\d+", row(printed, "p (Wilcoxon)"))


STUDY = """
models = ["six_layer"]
twin = "initial"

[train]
epochs = 100
batch_size = 32

[datasets.demo]

[goodness]
dataset = "demo"
neurons = "topk:2"

[goodness.thresholds.rotation]
six_layer = "pct:95"

[goodness.thresholds.embedding]
six_layer = "pct:90"
"""


@pytest.mark.slow  # about a minute: maps of both layers on the demo split
def test_goodness_table_prints_the_goodness_of_the_served_network(tmp_path, capsys):
    study, out = tmp_path / "demo.toml", tmp_path / "goodness.md"
    study.write_text(STUDY)
    assert main(["goodness-table", "--study", str(study), "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert "served from the store, no training" in err and DEMO in err
    assert out.read_text().strip() == printed.strip()
    rotation, embedding = printed.split("embedding layer", 1)
    assert "rotation layer" in rotation and "six_layer (pct:95)" in rotation
    assert "six_layer (pct:90)" in embedding

    # oracle: Q = IoU of the top 5 % of each map with the box mask, mean over images with boxes
    ckpt = load_checkpoint(DEMO)
    _, test = load_split(DataConfig("demo"), "test")
    x = normalize(torch.from_numpy(np.array(test.images)))
    maps = saliency_maps(ckpt.model, x, "rotation", parse_neurons("topk:2")).numpy()
    q = []
    for s, boxes in zip(maps, test.boxes, strict=True):
        b = box_mask(boxes, s.shape)
        if not b.any():
            continue
        on = s >= np.percentile(s, 95, method="linear")
        q.append((on & b).sum() / (b.sum() + (on & ~b).sum()))
    assert len(q) > 0
    assert number(rotation, "images scored") == len(q)
    trained, _, _ = interval(rotation, "Q trained (%)")
    assert trained == pytest.approx(100 * np.mean(q), abs=0.051)
    assert number(rotation, "share of pixels on, trained (%)") == pytest.approx(5.0, abs=0.1)
    assert number(embedding, "share of pixels on, trained (%)") == pytest.approx(10.0, abs=0.1)
    for table in (rotation, embedding):
        random, _, _ = interval(table, "Q random twin (%)")
        difference, _, _ = interval(table, "difference (%)")
        assert difference == pytest.approx(interval(table, "Q trained (%)")[0] - random, abs=0.11)
