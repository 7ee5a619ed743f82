"""The package's shape: a few top-level modules, one folder per layer, every layer in the contract."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import rotviz

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def subpackages() -> set[str]:
    return {p.parent.name for p in (REPO / "rotviz").glob("*/__init__.py")}


def test_at_most_eight_top_level_modules():
    top = sorted(p.name for p in (REPO / "rotviz").glob("*.py"))
    assert len(top) <= 8, top


def test_every_subpackage_is_a_layer_of_the_contract():
    (layers,) = [
        c["layers"] for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    ]
    named = {m.strip().split(".")[1] for line in layers for m in line.split(":")}
    assert subpackages() <= named, subpackages() - named


def test_public_names_resolve_and_goodness_stays_the_function():
    for name in rotviz.__all__:
        assert getattr(rotviz, name) is not None, name
    importlib.import_module("rotviz.study.goodness")  # a module of that name once shadowed it
    from rotviz.scores.metrics import goodness

    assert rotviz.goodness is goodness


def test_lower_layers_load_without_the_upper_ones():
    """Loading scores, data and nets pulls in neither training, study, report, cli nor app."""
    code = (
        "import sys, rotviz.scores.metrics, rotviz.data.splits, rotviz.nets.store\n"
        "up = ('rotviz.training', 'rotviz.study', 'rotviz.report', 'rotviz.cli', 'rotviz.app', 'streamlit')\n"
        "print([m for m in sys.modules if m.startswith(up)])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_code_cites_neither_issue_numbers_nor_a_design_file_it_does_not_ship():
    pattern = re.compile(r"DESIGN\.md|\(issue \d+\)|\bissue \d+\b")
    offenders = [
        f"{p.relative_to(REPO)}:{i}"
        for folder in ("rotviz", "pages")
        for p in (REPO / folder).rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line) and "streamlit issue" not in line
    ]
    assert offenders == [], offenders
