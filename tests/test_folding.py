"""BatchNorm folded into convolutions for attribution: same function, the network untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rotviz.attribution.methods import attribute
from rotviz.attribution.targets import AllNeurons
from rotviz.nets.folding import fold_batchnorm, inference_net
from rotviz.nets.models import STUDY_MODELS, build_model


def with_random_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_every_batchnorm_folds_and_the_function_stays(name):
    model = with_random_statistics(build_model(name, 4, seed=0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert batchnorms(model) > 0 and batchnorms(folded) == 0
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(folded.embed(x), model.embed(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_batchnorm_not_after_a_convolution_stays():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with_random_statistics(model)
    folded = fold_batchnorm(model)
    assert batchnorms(folded) == 1 and isinstance(folded[0], nn.BatchNorm2d)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_the_copy_is_remade_when_the_weights_change():
    model = with_random_statistics(build_model("six_layer", 4, seed=0))
    first = inference_net(model)
    assert inference_net(model) is first
    assert inference_net(first) is first
    with torch.no_grad():
        model.head.weight.add_(1.0)
    second = inference_net(model)
    assert second is not first
    torch.testing.assert_close(second.head.weight, model.head.weight)


def test_mixed_train_eval_modes_come_back_exactly():
    model = build_model("six_layer", 4, seed=0).train()
    model.backbone[1].eval()
    modes = [m.training for m in model.modules()]
    fold_batchnorm(model)
    assert [m.training for m in model.modules()] == modes


def test_maps_on_the_folded_copy_equal_captum_on_the_network():
    model = with_random_statistics(build_model("six_layer", 4, seed=0))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for method in ("saliency", "gradcam", "integrated_gradients"):
        ours = attribute(model, x, "embedding", AllNeurons(), method, n_steps=4)
        ref = attribute(model, x, "embedding", AllNeurons(), method, n_steps=4, fast=False)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5 * float(ref.max()))


def test_smoothgrad_equals_captum_on_the_folded_copy():
    """Noisy copies can put a ReLU input within rounding of 0, where folding may flip its
    gradient: against Captum on the same folded copy the fast path is exact."""
    model = with_random_statistics(build_model("six_layer", 4, seed=0))
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    ours = attribute(model, x, "rotation", AllNeurons(), "smoothgrad", nt_samples=4)
    ref = attribute(
        inference_net(model), x, "rotation", AllNeurons(), "smoothgrad", nt_samples=4, fast=False
    )
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5 * float(ref.max()))
