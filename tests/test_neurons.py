"""Neuron browser: top images vs a direct forward pass, maps vs Captum, cache reuse,
selectivity by hand, the CLI's files and the Neurons page."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rotviz.cli.main import main
from rotviz.data.rotation import normalize
from rotviz.data.splits import load_split
from rotviz.nets.twin import NETWORKS, trained_or_twin
from rotviz.report.figures import contact_sheet
from rotviz.study import neurons

CPU = torch.device("cpu")
APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture()
def demo(demo_store):
    """(checkpoint, preprocessed demo test split) of the session's demo checkpoint."""
    _, data, _, ckpt = demo_store
    _, test = load_split(data, "test")
    return ckpt, test


def _direct(model, images: np.ndarray, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(embed features, rotation logits) of images turned k quarter turns, one forward pass."""
    x = normalize(torch.rot90(torch.from_numpy(np.array(images)), k, dims=(-2, -1)))
    with torch.no_grad():
        feats = model.eval().embed(x)
        return feats.numpy(), model.head(feats).double().numpy()


def _top_values(values: np.ndarray, k: int) -> np.ndarray:
    return -np.sort(-values, axis=0)[:k]


def test_top_images_are_the_argmax_of_a_direct_forward_pass(demo, tmp_path):
    ckpt, test = demo
    for net in NETWORKS:
        model = trained_or_twin(ckpt, net)
        acts = neurons.activations(ckpt, test, "embedding", net, CPU, cache_dir=tmp_path)
        direct, _ = _direct(model, test.images)
        np.testing.assert_allclose(acts, direct, rtol=1e-4, atol=1e-6)
        top = neurons.top_images(acts, 9)  # (64, 9)
        assert top.shape == (direct.shape[1], 9)
        shown = np.take_along_axis(direct, top.T, axis=0)  # direct values of the shown images
        np.testing.assert_allclose(shown, _top_values(direct, 9), rtol=1e-4, atol=1e-6)

    model = ckpt.model
    acts = neurons.activations(ckpt, test, "rotation", "trained", CPU, cache_dir=tmp_path)
    for j, k in enumerate(ckpt.train_config.rotations):
        _, logits = _direct(model, test.images, k)
        log_p = torch.log_softmax(torch.from_numpy(logits), dim=1)[:, j].numpy()
        np.testing.assert_allclose(acts[:, j], log_p, rtol=1e-4, atol=1e-6)
        assert acts[neurons.top_images(acts, 1)[j, 0], j] == acts[:, j].max()
        assert log_p[neurons.top_images(acts, 1)[j, 0]] == pytest.approx(log_p.max(), abs=1e-6)


def test_sheet_shows_the_single_neuron_saliency_captum_computes(demo, tmp_path):
    from captum.attr import Saliency

    ckpt, test = demo
    model = ckpt.model.eval()
    for layer, neuron in (("embedding", 5), ("rotation", 1)):
        acts = neurons.activations(ckpt, test, layer, "trained", CPU, cache_dir=tmp_path)
        view = neurons.neuron_view(ckpt, model, "trained", test, acts, layer, neuron, k=3)
        turns = ckpt.train_config.rotations[neuron] if layer == "rotation" else 0
        image = np.rot90(np.array(test.images[view.rows[0]]), turns, axes=(-2, -1))
        np.testing.assert_array_equal(view.images[0], image)
        forward = model.embed if layer == "embedding" else model
        x = normalize(torch.from_numpy(image.copy())[None])
        ref = Saliency(forward).attribute(x, target=neuron, abs=True).amax(dim=1)[0]
        np.testing.assert_allclose(view.maps[0], ref.numpy(), rtol=1e-4, atol=1e-7)

        fig = contact_sheet([view])
        drawn = fig.axes[0].images[1].get_array()  # the map layer over the first image
        np.testing.assert_allclose(np.asarray(drawn), view.maps[0].astype(np.float64))
        assert len(fig.axes) == 3 and "#" in fig.axes[0].get_title()


def test_activations_are_computed_once_then_served_from_the_cache(demo, tmp_path):
    ckpt, test = demo
    model = copy.deepcopy(ckpt.model)
    passes: list[int] = []
    embed = model.embed
    model.embed = lambda x: passes.append(len(x)) or embed(x)  # counts forward passes
    first = neurons.activations(ckpt, test, "embedding", "trained", CPU, model, tmp_path)
    assert sum(passes) == len(test)
    passes.clear()
    again = neurons.activations(ckpt, test, "embedding", "trained", CPU, model, tmp_path)
    assert passes == []
    np.testing.assert_array_equal(first, again)

    seen: list[tuple[int, int]] = []
    rot = neurons.activations(
        ckpt, test, "rotation", "trained", CPU, model, tmp_path, lambda d, t: seen.append((d, t))
    )
    m = len(ckpt.train_config.rotations)
    assert sum(passes) == (m - 1) * len(test)  # upright features came from the embedding cache
    assert seen[0][0] > len(test) and seen[-1] == (m * len(test), m * len(test))  # 0° cached
    passes.clear()
    seen.clear()
    again = neurons.activations(
        ckpt, test, "rotation", "trained", CPU, model, tmp_path, lambda d, t: seen.append((d, t))
    )
    assert passes == [] and seen == []
    np.testing.assert_array_equal(rot, again)


def test_stats_selectivity_and_sorting_by_hand():
    acts = np.array(
        [[1.0, 0.0, 5.0], [2.0, 0.0, 5.0], [3.0, 0.0, 5.0], [10.0, 0.0, 6.0]], dtype=np.float32
    )
    stats = neurons.neuron_stats(acts, k=2)
    assert stats["mean"].tolist() == [4.0, 0.0, 5.25]
    assert stats["top_mean"].tolist() == [6.5, 0.0, 5.5]
    assert stats.loc[0, "selectivity"] == pytest.approx(2.5 / np.sqrt(12.5))
    assert stats.loc[1, "selectivity"] == 0.0  # constant neuron
    assert stats.loc[2, "selectivity"] == pytest.approx(0.25 / np.sqrt(0.1875))
    assert neurons.sorted_neurons(stats, "neuron") == [0, 1, 2]
    assert neurons.sorted_neurons(stats, "mean") == [2, 0, 1]
    assert neurons.sorted_neurons(stats, "selectivity") == [0, 2, 1]  # 0.71 > 0.58 > 0
    assert neurons.top_images(acts, 2).tolist() == [[3, 2], [0, 1], [3, 0]]  # ties: lower row

    table = neurons.top_table(acts, ["a", "b", "c", "d"], ["n0", "n1", "n2"], k=2)
    assert len(table) == 6
    first = table.iloc[0]
    assert (first["neuron"], first["rank"], first["file"], first["activation"]) == (0, 1, "d", 10)
    assert table[table.neuron == 2]["file"].tolist() == ["d", "a"]


def test_rotation_log_probs_stay_precise_near_certainty():
    logits = np.array([[50.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    lp = neurons.rotation_log_probs(logits, 0)
    assert lp[0] == pytest.approx(-3 * np.exp(-50.0), rel=1e-9)  # softmax alone would say 1.0
    assert lp[1] == pytest.approx(np.log(0.25))
    assert neurons.rotation_log_probs(logits, 1)[0] == pytest.approx(-50.0, abs=1e-9)


def test_cli_writes_a_csv_and_one_sheet_per_neuron(demo_store, tmp_path):
    store, data, train, ckpt = demo_store
    out = tmp_path / "out"
    argv = ["neurons", "--epochs", str(train.epochs), "--batch-size", str(train.batch_size)]
    argv += ["--store", str(store.root), "--out", str(out), "--top", "3", "--limit", "1"]
    argv += ["--layer", "both", "--sort", "selectivity", "--figure-formats", "png,svg"]
    assert main(argv) == 0
    table = pd.read_csv(out / "neurons.csv")
    n_emb, m = ckpt.model.num_features, len(train.rotations)
    assert len(table) == 2 * 3 * (n_emb + m)  # networks x top x neurons
    _, test = load_split(data, "test")
    acts = neurons.activations(ckpt, test, "embedding", "trained", CPU)
    part = table[(table.network == "trained") & (table.layer == "embedding")]
    assert part[part["rank"] == 1]["image"].tolist() == neurons.top_images(acts, 1)[:, 0].tolist()
    rot = table[(table.network == "trained") & (table.layer == "rotation")]
    assert rot["label"].unique().tolist() == ["0°", "90°", "180°", "270°"]
    best = neurons.sorted_neurons(neurons.neuron_stats(acts, 3), "selectivity")[0]
    sheets = sorted(p.name for p in (out / "sheets").iterdir())
    assert f"embedding_{best:04d}.png" in sheets and f"embedding_{best:04d}.svg" in sheets
    assert len(sheets) == 4  # one neuron per layer, two formats


def test_neurons_page_lists_sorted_neurons_with_maps(demo, demo_store, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    ckpt, test = demo
    monkeypatch.setenv("ROTVIZ_STORE", str(demo_store[0].root))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/neurons.py").run()
    at.selectbox(key="nrn-sort").set_value("selectivity").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]

    def headers() -> list[str]:
        return [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**")]

    acts = neurons.activations(ckpt, test, "embedding", "trained", CPU)
    order = neurons.sorted_neurons(neurons.neuron_stats(acts, 9), "selectivity")
    assert headers() == [f"embedding neuron {i}" for i in order[: neurons.PAGE_SIZE]]
    top = neurons.top_images(acts, 9)
    assert len(at.image) == neurons.PAGE_SIZE
    assert [c.split()[0] for c in at.image[0].captions] == [f"#{r}" for r in top[order[0]]]

    at.number_input(key="nrn-page").set_value(2).run()
    assert headers() == [f"embedding neuron {i}" for i in order[12:24]]
    at.radio(key="nrn-layer").set_value("rotation").run()
    at.radio(key="nrn-network").set_value("initial").run()
    assert not at.exception and not at.error
    assert sorted(headers()) == sorted(f"rotation neuron {d}°" for d in (0, 90, 180, 270))
