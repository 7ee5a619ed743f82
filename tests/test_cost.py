"""The cost estimate: neurons x points x images x networks x a per-pass cost measured once and kept."""

from __future__ import annotations

import json

import pytest
import torch

from rotviz.attribution import cost
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.nets.models import build_model


@pytest.fixture(scope="module")
def six_layer():
    return build_model("six_layer", 4, seed=0).eval()


def fixed(seconds: float):
    return lambda model, layer, size: seconds


def test_estimate_is_neurons_times_points_times_images_times_networks(six_layer):
    ig = SaliencyConfig(layer="embedding", method="integrated_gradients", aggregate="none")
    est = cost.estimate_seconds(six_layer, ig, per_pass=fixed(0.01))
    n = six_layer.num_features
    assert (est.neurons, est.points, est.images, est.networks) == (n, 32, 1, 2)
    assert est.seconds == pytest.approx(n * 32 * 2 * 0.01)
    assert (
        est.text
        == f"about {cost.format_duration(n * 32 * 2 * 0.01)} ({n} neurons x 32 steps x 2 networks)"
    )
    assert est.needs_confirmation

    sg = SaliencyConfig(layer="embedding", neurons="topk:5", method="smoothgrad", nt_samples=8)
    est = cost.estimate_seconds(six_layer, sg, n_images=3, networks=1, per_pass=fixed(0.01))
    assert est.seconds == pytest.approx(5 * 8 * 3 * 4 * 0.01)  # 4 rotated copies (mean)
    assert est.text.endswith("(5 neurons x 8 samples x 12 images)")

    sal = SaliencyConfig(layer="rotation", neurons="predicted", aggregate="none")
    est = cost.estimate_seconds(six_layer, sal, per_pass=fixed(0.01))
    assert est.seconds == pytest.approx(0.02) and not est.needs_confirmation
    assert est.text == "under 1 s (1 neuron x 2 networks)"


def test_gradcam_is_one_pass_per_image_whatever_the_neurons(six_layer):
    cam = SaliencyConfig(layer="embedding", method="gradcam", aggregate="none")
    est = cost.estimate_seconds(six_layer, cam, per_pass=fixed(0.5))
    assert est.closed_form and est.seconds == pytest.approx(1.0)
    assert "closed form" in est.text


def test_the_issue_example_reads_as_minutes():
    est = cost.Estimate(1280 * 32 * 2 * 0.0139, "integrated_gradients", 1280, 32, 1, 2, 0.0139)
    assert est.text == "about 19 min (1,280 neurons x 32 steps x 2 networks)"
    assert cost.format_duration(2 * 3600 + 300) == "2 h 5 min"
    assert cost.format_duration(40) == "40 s"


def test_cheaper_choices_name_the_rotation_layer_topk_and_fewer_steps(six_layer):
    ig = SaliencyConfig(layer="embedding", method="integrated_gradients")
    text = " ".join(cost.cheaper_choices(six_layer, ig))
    assert (
        "rotation layer" in text and "top-k" in text and "fewer integrated-gradients steps" in text
    )


def test_pass_cost_is_measured_once_then_read_and_remeasured_when_corrupt(
    six_layer, tmp_path, monkeypatch
):
    calls = []

    def fake(model, layer, x, device, batch=cost.FULL_BATCH, repeats=3):
        calls.append((layer, tuple(x.shape)))
        return 0.25

    monkeypatch.setattr(cost, "pass_cost", fake)
    path = tmp_path / "machine" / "pass_cost.json"
    cpu = torch.device("cpu")
    assert cost.measured_pass_cost(six_layer, "embedding", 32, cpu, path) == 0.25
    assert cost.measured_pass_cost(six_layer, "embedding", 32, cpu, path) == 0.25
    assert calls == [("embedding", (1, 3, 32, 32))]  # kept, not measured again
    kept = json.loads(path.read_text())
    assert list(kept) == [cost.pass_cost_key(six_layer, "embedding", 32, cpu)]

    cost.measured_pass_cost(six_layer, "rotation", 32, cpu, path)  # another layer: measured
    assert len(calls) == 2 and len(json.loads(path.read_text())) == 2

    path.write_text("{not json")
    assert cost.measured_pass_cost(six_layer, "embedding", 32, cpu, path) == 0.25
    assert len(calls) == 3 and json.loads(path.read_text())  # rewritten whole
    assert not list(path.parent.glob("*.tmp"))


def test_default_file_lives_under_the_store(monkeypatch, tmp_path):
    monkeypatch.setenv("ROTVIZ_STORE", str(tmp_path / "store"))
    assert cost.pass_cost_file() == tmp_path / "store" / "machine" / "pass_cost.json"


def test_real_pass_cost_is_positive(six_layer):
    x = torch.rand(1, 3, 32, 32)
    assert cost.pass_cost(six_layer, "rotation", x, torch.device("cpu"), batch=4, repeats=1) > 0
