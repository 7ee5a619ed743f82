"""The library saves a run exactly as the CLI does: rotviz.report.writers' save_* write the same
files, byte for byte, as ``python -m rotviz saliency / consistency / sanity / neurons / probe``."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotviz.attribution.saliency import SaliencyConfig
from rotviz.cli.main import main
from rotviz.config import DataConfig
from rotviz.data.splits import load_split
from rotviz.nets.store import default_store, load_checkpoint
from rotviz.nets.twin import TWIN_NAMES, random_twin_of
from rotviz.report.tables import EXTENSIONS, FORMATS
from rotviz.report.writers import (
    save_consistency,
    save_goodness,
    save_neurons,
    save_probe,
    save_sanity,
    table_file,
)
from rotviz.scores.metrics import parse_threshold
from rotviz.study import neurons
from rotviz.study.consistency import consistency_run
from rotviz.study.goodness import goodness_run
from rotviz.study.probe import probe_table
from rotviz.study.runs import run_context, run_probe, run_sanity

DEMO = "demo-six_layer-e100-2dd201f2a42d7756"
LFW = "lfw-six_layer-e25-e6bdad5c467e6138"
SMALL = ["--dataset", "demo", "--max-images", "12", "--device", "cpu"]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_same_files(cli: Path, library: Path) -> None:
    got, expected = files_of(library), files_of(cli)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name


@pytest.fixture(scope="module")
def demo():
    ckpt = load_checkpoint(DEMO, default_store())
    data = DataConfig("demo", max_images=12)
    _, test = load_split(data, "test")
    return ckpt, data, test


def test_save_goodness_writes_what_the_saliency_command_writes(demo, tmp_path):
    ckpt, data, test = demo
    cli = tmp_path / "cli"
    args = ["saliency", *SMALL, "--checkpoint", DEMO, "--threshold", "pct:90", "--save-maps"]
    assert main([*args, "--figures", "1", "--figure-formats", "png,svg", "--out", str(cli)]) == 0
    threshold = parse_threshold("pct:90")
    twin = random_twin_of(ckpt, "calibrated", "cpu", data)
    sal = SaliencyConfig(aggregate="none", rotations=ckpt.rotations)
    run = goodness_run(
        ckpt, test, sal, threshold, "cpu", twin=twin, twin_name=TWIN_NAMES["calibrated"]
    )
    saved = save_goodness(
        run, test, threshold, tmp_path / "lib", run_context(ckpt, data), 1, ("png", "svg"), True
    )
    assert saved.figures == 1 and (tmp_path / "lib" / "maps.npz") in saved.paths
    assert_same_files(cli, tmp_path / "lib")


def test_consistency_takes_a_checkpoint_and_saves_as_the_library(demo, tmp_path, capsys):
    """--checkpoint applies the LFW network to the demo images, as the other commands do."""
    _, data, test = demo
    cli = tmp_path / "cli"
    args = ["consistency", *SMALL, "--checkpoint", LFW, "--images", "2", "--twin", "initial"]
    assert main([*args, "--format", "latex", "--out", str(cli)]) == 0
    assert f"network {LFW} (trained on lfw), data demo" in capsys.readouterr().err
    lfw = load_checkpoint(LFW, default_store())
    sal = SaliencyConfig()
    run = consistency_run(lfw, test.images[:2], sal, "cpu", random_twin_of(lfw, "initial"))
    files = [r.relpath for r in test.records]
    saved = save_consistency(run, files, tmp_path / "lib", "latex")
    assert table_file(tmp_path / "lib", "consistency", "latex") in saved.paths
    assert_same_files(cli, tmp_path / "lib")
    own = tmp_path / "own"
    args = ["consistency", *SMALL, "--checkpoint", DEMO, "--images", "2", "--twin", "initial"]
    assert main([*args, "--format", "latex", "--out", str(own)]) == 0
    assert (own / "consistency.csv").read_bytes() != (cli / "consistency.csv").read_bytes()


def test_save_sanity_writes_what_the_sanity_command_writes(demo, tmp_path):
    ckpt, data, _ = demo
    cli = tmp_path / "cli"
    args = ["sanity", *SMALL, "--checkpoint", DEMO, "--images", "2", "--no-data-randomisation"]
    assert main([*args, "--neurons", "all", "--neurons", "predicted", "--out", str(cli)]) == 0
    got = run_sanity(
        data,
        ckpt.train_config,
        default_store(),
        "cpu",
        {"layer": "rotation", "method": "saliency", "aggregate": "none"},
        ["all", "predicted"],
        "pct:95",
        2,
        False,
        checkpoint=ckpt,
    )
    save_sanity(got, "demo", "rotation", tmp_path / "lib", 1, ("png",))
    assert_same_files(cli, tmp_path / "lib")


def test_save_neurons_writes_what_the_neurons_command_writes(demo, tmp_path):
    ckpt, data, test = demo
    cli = tmp_path / "cli"
    args = ["neurons", *SMALL, "--checkpoint", DEMO, "--layer", "both", "--limit", "1"]
    assert main([*args, "--top", "3", "--out", str(cli)]) == 0
    run = neurons.neurons_run(ckpt, test, neurons.LAYERS, "cpu", top=3, limit=1, data=data)
    saved = save_neurons(run, tmp_path / "lib")
    assert saved.figures == 2
    assert_same_files(cli, tmp_path / "lib")


def test_save_probe_writes_what_the_probe_command_writes(tmp_path):
    cli = tmp_path / "cli"
    args = ["probe", "--dataset", "demo", "--device", "cpu", "--checkpoint", DEMO]
    assert main([*args, "--fractions", "100%", "--twin", "initial", "--out", str(cli)]) == 0
    ckpt, data = load_checkpoint(DEMO, default_store()), DataConfig("demo")
    probed = run_probe(
        data,
        ckpt.train_config,
        default_store(),
        "cpu",
        fractions=[1.0],
        checkpoint=ckpt,
        twin="initial",
    )
    assert probed.seeds == [ckpt.train_config.seed] and probed.n_test > 0
    save_probe(probed, probe_table(probed.numbers), tmp_path / "lib", run_context(ckpt, data))
    assert_same_files(cli, tmp_path / "lib")


def test_one_extension_per_table_format():
    assert set(EXTENSIONS) == set(FORMATS)
    assert table_file(Path("out"), "probe", "latex") == Path("out/probe.tex")
