"""Everyday use: the shipped networks are served first, any network applies to any data, and new
networks land in a per-user store, never in the repository or among the shipped ones."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from rotviz.cli.main import main
from rotviz.nets.store import SHIPPED_STORE, default_store

REPO = Path(__file__).resolve().parents[1]
DEMO = "demo-six_layer-e100-2dd201f2a42d7756"
LFW = "lfw-six_layer-e25-e6bdad5c467e6138"


def test_evaluate_without_epochs_serves_the_shipped_network(tmp_path, capsys):
    out = tmp_path / "acc.json"
    assert main(["evaluate", "--dataset", "demo", "--model", "six_layer", "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert "serving the stored network with 100 epochs" in err
    assert "[rotviz] training" not in err and "no training" in err
    result = json.loads(out.read_text())
    assert result["checkpoint"] == DEMO and result["cross_dataset"] is False


def test_checkpoint_applies_the_lfw_network_to_the_demo_boxes(tmp_path, capsys):
    out = tmp_path / "sal"
    args = ["saliency", "--dataset", "demo", "--checkpoint", LFW, "--out", str(out)]
    assert main([*args, "--figures", "0"]) == 0
    assert "[rotviz] training" not in capsys.readouterr().err
    rows = pd.read_csv(out / "goodness.csv")
    assert len(rows) and rows["q_trained"].notna().any()
    assert set(rows["network"]) == {f"{LFW} (trained on lfw)"}
    assert set(rows["data"]) == {"demo test"} and rows["cross_dataset"].all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cross_dataset"] is True and summary["network"].startswith(LFW)


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_training_with_the_default_store_leaves_the_repo_and_the_shipped_store_alone(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("ROTVIZ_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(REPO)
    before, shipped = _git_status(), sorted(p.name for p in SHIPPED_STORE.iterdir())
    # the shipped demo recipe with another seed: a new network, so it is trained
    args = ["train", "--dataset", "demo", "--epochs", "1", "--seed", "1", "--max-images", "16"]
    assert main([*args, "--batch-size", "8"]) == 0
    user = tmp_path / "xdg" / "rotviz" / "checkpoints"
    assert len(list(user.glob("demo-six_layer-e1-*.safetensors"))) == 1
    assert _git_status() == before
    assert sorted(p.name for p in SHIPPED_STORE.iterdir()) == shipped
    origins = {c.name: c.origin for c in default_store().cards()}
    assert origins[DEMO] == "shipped"
    assert sorted(v for k, v in origins.items() if k.startswith("demo-six_layer-e1-")) == ["yours"]


def test_the_store_listing_says_which_is_shipped(capsys):
    assert main(["checkpoints"]) == 0
    out = capsys.readouterr().out
    assert "store" in out and "shipped" in out


@pytest.mark.parametrize("page", [None, "pages/accuracy.py"])
def test_app_tables_have_a_store_column(page):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    tables = [d.value for d in at.dataframe if "store" in d.value.columns]
    assert tables and any((t["store"] == "shipped").any() for t in tables)
