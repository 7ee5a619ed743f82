"""Saliency: the fast path against Captum, neuron sets, rotation back-mapping, other methods."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from skimage import data
from torch import nn

from rotviz.errors import RotvizError
from rotviz.models import RotationNet, build_model, random_twin
from rotviz.rotation import normalize
from rotviz.saliency import (
    AllNeurons,
    Indices,
    Predicted,
    SaliencyConfig,
    TopK,
    TrueRotation,
    attribute,
    layer_forward,
    method_warning,
    parse_neurons,
    rotation_aggregated_maps,
    saliency_maps,
    trained_and_random_maps,
)


def real_images(size: int, names=("astronaut", "chelsea")) -> torch.Tensor:
    """Bundled skimage photos, resized to size x size, normalised (N, 3, size, size) float32."""
    out = []
    for name in names:
        img = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float()
        img = nn.functional.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
        out.append(img.round().clamp(0, 255).to(torch.uint8))
    return normalize(torch.cat(out))


def captum_oracle(model: RotationNet, x: torch.Tensor, layer: str, neurons) -> torch.Tensor:
    """Captum Saliency(abs=True) looped over the selected neurons, max channels, max neurons."""
    model.eval()
    forward = layer_forward(model, layer)
    with torch.no_grad():
        sel = neurons.select(forward(x))
    ref = torch.zeros(x.shape[0], *x.shape[-2:], dtype=x.dtype)
    for j in range(sel.shape[1]):
        grads = Saliency(forward).attribute(x, target=sel[:, j].tolist(), abs=True)
        ref = torch.maximum(ref, grads.amax(dim=1))
    return ref


def assert_maps_equal(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-6) -> None:
    assert ours.shape == ref.shape
    assert ref.max() > 0
    # Relative to each element, with an absolute floor far below the map's scale.
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * 1e-3 * float(ref.max()))


@pytest.fixture(scope="module")
def six() -> RotationNet:
    return build_model("six_layer", 4, seed=0).double().eval()


@pytest.fixture(scope="module")
def x64() -> torch.Tensor:
    return real_images(64).double()


@pytest.fixture(scope="module")
def x32() -> torch.Tensor:
    return real_images(32).double()


# float32: float64 convolutions are several times slower on CPU; the maps still agree to 1e-5.
@pytest.fixture(scope="module")
def effnet() -> RotationNet:
    return build_model("efficientnet_b0", 4, seed=0).eval()


@pytest.fixture(scope="module")
def mobilenet() -> RotationNet:
    return build_model("mobilenet_v2", 4, seed=0).eval()


# ------------------------------------------------------------------ fast path == Captum


SIX_CASES = [
    ("rotation", AllNeurons()),
    ("rotation", Predicted()),
    ("rotation", TrueRotation([1, 3])),
    ("rotation", Indices([2])),
    ("rotation", TopK(2)),
    ("embedding", AllNeurons()),
    ("embedding", Indices([0, 17, 42, 63])),
    ("embedding", TopK(5)),
]


@pytest.mark.parametrize("path", ["replicate", "vmap", "loop"])
@pytest.mark.parametrize(("layer", "neurons"), SIX_CASES, ids=lambda v: str(v))
def test_fast_path_equals_captum_six_layer(six, x32, layer, neurons, path):
    ours = saliency_maps(six, x32, layer, neurons, chunk_size=7, path=path)
    assert ours.dtype == torch.float64
    assert_maps_equal(ours, captum_oracle(six, x32, layer, neurons))


def test_fast_path_chunking_and_image_batches_do_not_change_maps(six, x32):
    x = torch.cat([x32, x32.flip(-1)])  # 4 images
    neurons = TrueRotation([0, 1, 2, 3])  # per-image labels must follow the image batches
    whole = saliency_maps(six, x, "rotation", neurons, chunk_size=64, batch_size=None)
    split = saliency_maps(six, x, "rotation", neurons, chunk_size=1, batch_size=3)
    assert_maps_equal(split, whole)
    assert_maps_equal(whole, captum_oracle(six, x, "rotation", neurons))
    emb_whole = saliency_maps(six, x, "embedding", AllNeurons(), chunk_size=64, batch_size=None)
    emb_split = saliency_maps(six, x, "embedding", AllNeurons(), chunk_size=5, batch_size=1)
    assert_maps_equal(emb_split, emb_whole)


def test_fast_path_float32_default_dtype():
    model = build_model("six_layer", 4, seed=1).eval()
    x = real_images(32)
    ours = saliency_maps(model, x, "embedding", TopK(3))
    assert ours.dtype == torch.float32 and ours.shape == (2, 32, 32)
    ref = captum_oracle(model, x, "embedding", TopK(3))
    assert_maps_equal(ours, ref, rtol=1e-5)


@pytest.mark.parametrize("path", ["replicate", "vmap", "loop"])
@pytest.mark.parametrize("arch", ["effnet", "mobilenet"])
def test_fast_path_equals_captum_timm_and_torchvision(arch, path, request):
    model = request.getfixturevalue(arch)
    x = real_images(40)  # small: the definitions do not depend on the size
    for layer, neurons in [("rotation", AllNeurons()), ("embedding", Indices([0, 257, 901, 1279]))]:
        ours = saliency_maps(model, x, layer, neurons, chunk_size=3, path=path)
        assert_maps_equal(ours, captum_oracle(model, x, layer, neurons), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["effnet", "mobilenet"])
def test_fast_path_equals_captum_timm_and_torchvision_64px(arch, request):
    model = request.getfixturevalue(arch)
    x64 = real_images(64)
    for layer, neurons in [
        ("rotation", AllNeurons()),
        ("embedding", Indices([0, 3, 100, 257, 640, 901, 1100, 1279])),
    ]:
        ours = saliency_maps(model, x64, layer, neurons, chunk_size=3)
        assert_maps_equal(ours, captum_oracle(model, x64, layer, neurons), rtol=1e-5)


# ------------------------------------------------------------------ neuron sets


def test_neuron_sets_select_by_hand():
    acts = torch.tensor([[0.1, 2.0, -1.0, 0.5], [3.0, -2.0, 0.0, 4.0]])
    assert AllNeurons().select(acts).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert Predicted().select(acts).tolist() == [[1], [3]]
    assert TrueRotation([2, 0]).select(acts).tolist() == [[2], [0]]
    assert TrueRotation(torch.tensor([3, 1])).select(acts).tolist() == [[3], [1]]
    assert Indices([3, 0]).select(acts).tolist() == [[3, 0], [3, 0]]
    assert sorted(TopK(2).select(acts)[0].tolist()) == [1, 3]
    assert sorted(TopK(2).select(acts)[1].tolist()) == [0, 3]
    assert TopK(1).select(acts).tolist() == [[1], [3]]


def test_topk_picks_the_most_active_embedding_neurons(six, x64):
    emb = six.embed(x64).detach()
    sel = TopK(4).select(emb)
    for i in range(emb.shape[0]):
        chosen = emb[i, sel[i]]
        others = emb[i, [j for j in range(emb.shape[1]) if j not in set(sel[i].tolist())]]
        assert chosen.min() >= others.max()


def test_predicted_and_true_select_the_right_logit(six, x64):
    with torch.no_grad():
        logits = six(x64)
    pred = logits.argmax(1)
    via_pred = saliency_maps(six, x64, "rotation", Predicted())
    via_idx = torch.stack(
        [
            saliency_maps(six, x64[i : i + 1], "rotation", Indices([int(pred[i])]))[0]
            for i in range(2)
        ]
    )
    assert_maps_equal(via_pred, via_idx)
    labels = [(int(p) + 1) % 4 for p in pred]  # deliberately not the predicted one
    via_true = saliency_maps(six, x64, "rotation", TrueRotation(labels))
    via_idx = torch.stack(
        [saliency_maps(six, x64[i : i + 1], "rotation", Indices([labels[i]]))[0] for i in range(2)]
    )
    assert_maps_equal(via_true, via_idx)
    assert not torch.allclose(via_true, via_pred)


def test_parse_neurons():
    assert parse_neurons("all") == AllNeurons()
    assert parse_neurons(" Predicted ") == Predicted()
    assert isinstance(parse_neurons("true"), TrueRotation)
    assert parse_neurons("3,17,42") == Indices([3, 17, 42])
    assert parse_neurons("topk:5") == TopK(5)
    for bad in ["topk:x", "banana", "", "topk:0"]:
        with pytest.raises(RotvizError):
            parse_neurons(bad)
    assert "top-5" in TopK(5).describe()


def test_user_errors(six, x64):
    for neurons in [Predicted(), TrueRotation([0, 1]), parse_neurons("true")]:
        with pytest.raises(RotvizError, match="embedding"):
            saliency_maps(six, x64, "embedding", neurons)
    with pytest.raises(RotvizError, match="0..63"):
        saliency_maps(six, x64, "embedding", Indices([64]))
    with pytest.raises(RotvizError, match="labels"):
        saliency_maps(six, x64, "rotation", TrueRotation([0]))
    with pytest.raises(RotvizError, match="layer"):
        saliency_maps(six, x64, "conv3", AllNeurons())
    with pytest.raises(RotvizError, match="method"):
        attribute(six, x64, "rotation", AllNeurons(), method="lime")
    with pytest.raises(RotvizError, match="aggregate"):
        rotation_aggregated_maps(six, x64, aggregate="median")


# ------------------------------------------------------------------ rotations


def equivariant_net() -> RotationNet:
    """1x1 convolutions + global pooling: rotating the input rotates its gradient map."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        backbone = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Tanh(), nn.Conv2d(8, 6, 1), nn.ReLU())
        return RotationNet("equivariant", backbone, 6, 4).double().eval()


def test_map_of_rotated_copy_rotated_back_equals_map_for_equivariant_model(x64):
    model = equivariant_net()
    # Make it position-dependent inside the image (varying pixel intensities), not trivially flat.
    base = saliency_maps(model, x64, "rotation", AllNeurons())
    assert base.std() > 0
    for k in (1, 2, 3):
        rotated_map = saliency_maps(model, torch.rot90(x64, k, dims=(-2, -1)), "rotation")
        back = torch.rot90(rotated_map, -k, dims=(-2, -1))
        assert_maps_equal(back, base)
        if k != 2:  # the wrong direction is caught
            wrong = torch.rot90(rotated_map, k, dims=(-2, -1))
            assert not torch.allclose(wrong, base)
    for aggregate in ("mean", "max"):
        agg = rotation_aggregated_maps(model, x64, "rotation", AllNeurons(), aggregate=aggregate)
        assert_maps_equal(agg, base)


@pytest.mark.parametrize("aggregate", ["mean", "max", "none"])
def test_aggregated_map_combines_maps_rotated_back(six, x64, aggregate):
    rotations = (0, 1, 2, 3)
    agg = rotation_aggregated_maps(six, x64, "embedding", TopK(3), rotations, aggregate)
    ks = (0,) if aggregate == "none" else rotations
    backs = torch.stack(
        [
            torch.rot90(
                saliency_maps(six, torch.rot90(x64, k, dims=(-2, -1)), "embedding", TopK(3)),
                -k,
                dims=(-2, -1),
            )
            for k in ks
        ]
    )
    expected = backs.amax(0) if aggregate == "max" else backs.mean(0)
    assert_maps_equal(agg, expected)


def test_true_rotation_of_each_rotated_copy_is_its_label(six, x64):
    agg = rotation_aggregated_maps(six, x64, "rotation", parse_neurons("true"), (0, 1, 2, 3))
    backs = [
        torch.rot90(
            saliency_maps(six, torch.rot90(x64, k, dims=(-2, -1)), "rotation", Indices([k])),
            -k,
            dims=(-2, -1),
        )
        for k in range(4)
    ]
    assert_maps_equal(agg, torch.stack(backs).mean(0))
    # Images already rotated by label 1: the copy rotated by k carries label (1 + k) % 4.
    agg1 = rotation_aggregated_maps(six, x64, "rotation", TrueRotation([1, 1]), (0, 1), "max")
    backs1 = [
        torch.rot90(
            saliency_maps(six, torch.rot90(x64, k, dims=(-2, -1)), "rotation", Indices([1 + k])),
            -k,
            dims=(-2, -1),
        )
        for k in (0, 1)
    ]
    assert_maps_equal(agg1, torch.maximum(*backs1))


def test_true_rotation_with_a_rotation_subset_model(x64):
    model = build_model("six_layer", 2, seed=0).double().eval()  # trained on (0, 180)
    agg = rotation_aggregated_maps(
        model, x64, "rotation", TrueRotation(), (0, 2), "mean", model_rotations=(0, 2)
    )
    backs = [
        torch.rot90(
            saliency_maps(model, torch.rot90(x64, k, dims=(-2, -1)), "rotation", Indices([i])),
            -k,
            dims=(-2, -1),
        )
        for i, k in enumerate((0, 2))
    ]
    assert_maps_equal(agg, torch.stack(backs).mean(0))
    with pytest.raises(RotvizError, match="90"):
        rotation_aggregated_maps(
            model, x64, "rotation", TrueRotation(), (0, 1), model_rotations=(0, 2)
        )


# ------------------------------------------------------------------ model state


def test_eval_mode_and_requires_grad_restored(x64):
    model = build_model("six_layer", 4, seed=0).double()
    model.train()
    model.backbone[2].eval()  # a mixed state must come back exactly
    model.head.weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    for method in ("saliency", "guided_backprop", "gradcam"):
        attribute(model, x64, "rotation", AllNeurons(), method)
        assert [m.training for m in model.modules()] == modes
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_maps_do_not_depend_on_the_batch(x64):
    model = build_model("six_layer", 4, seed=0).double().train()  # train mode would mix BN stats
    both = saliency_maps(model, x64, "rotation", AllNeurons())
    alone = saliency_maps(model, x64[:1], "rotation", AllNeurons())
    assert_maps_equal(both[:1], alone)


def test_no_grad_caller_still_gets_maps(six, x64):
    with torch.no_grad():
        maps = saliency_maps(six, x64, "rotation", Predicted())
    assert maps.max() > 0


# ------------------------------------------------------------------ other methods


def test_guided_backprop_warning(six, effnet, mobilenet):
    assert method_warning(six, "guided_backprop") is None
    for model in (effnet, mobilenet):
        warning = method_warning(model, "guided_backprop")
        assert warning and "nn.ReLU" in warning and "plain gradients" in warning
        assert method_warning(model, "saliency") is None


def test_guided_backprop_equals_saliency_without_relu(mobilenet, six, x64):
    gbp = attribute(mobilenet, x64.float(), "rotation", Predicted(), "guided_backprop")
    sal = attribute(mobilenet, x64.float(), "rotation", Predicted(), "saliency")
    assert_maps_equal(gbp, sal, rtol=1e-5)  # what the warning says
    gbp6 = attribute(six, x64, "rotation", Predicted(), "guided_backprop")
    sal6 = attribute(six, x64, "rotation", Predicted(), "saliency")
    assert not torch.allclose(gbp6, sal6)


@pytest.mark.parametrize(
    "method", ["integrated_gradients", "smoothgrad", "gradcam", "guided_backprop"]
)
@pytest.mark.parametrize(("layer", "neurons"), [("rotation", Predicted()), ("embedding", TopK(3))])
def test_other_methods_give_nonnegative_finite_maps(six, x64, method, layer, neurons):
    maps = attribute(six, x64, layer, neurons, method, n_steps=8, nt_samples=4)
    assert maps.shape == (2, 64, 64)
    assert torch.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0


def test_gradcam_on_efficientnet_hooks_the_feature_map(effnet, x64):
    maps = attribute(effnet, x64[:1].float(), "embedding", Indices([5, 9]), "gradcam")
    assert maps.shape == (1, 64, 64) and torch.isfinite(maps).all() and maps.max() > 0


def test_integrated_gradients_matches_captum_per_neuron(six, x64):
    ours = attribute(six, x64, "embedding", Indices([4, 11]), "integrated_gradients", n_steps=8)
    ig = IntegratedGradients(six.embed)
    ref = torch.maximum(
        *[
            ig.attribute(x64, baselines=torch.zeros_like(x64), target=j, n_steps=8).abs().amax(1)
            for j in (4, 11)
        ]
    )
    assert_maps_equal(ours, ref)


def test_smoothgrad_is_reproducible_with_a_seed(six, x64):
    a = attribute(six, x64, "rotation", AllNeurons(), "smoothgrad", nt_samples=3, seed=5)
    b = attribute(six, x64, "rotation", AllNeurons(), "smoothgrad", nt_samples=3, seed=5)
    c = attribute(six, x64, "rotation", AllNeurons(), "smoothgrad", nt_samples=3, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_aggregation_applies_to_other_methods(six, x64):
    agg = rotation_aggregated_maps(six, x64, "rotation", Predicted(), (0, 2), "max", "gradcam")
    backs = [
        torch.rot90(
            attribute(six, torch.rot90(x64, k, dims=(-2, -1)), "rotation", Predicted(), "gradcam"),
            -k,
            dims=(-2, -1),
        )
        for k in (0, 2)
    ]
    assert_maps_equal(agg, torch.maximum(*backs))


# ------------------------------------------------------------------ trained vs random, config


def test_trained_and_random_maps_on_same_inputs(six, x64):
    random = random_twin(six, seed=7).double()
    trained_maps, random_maps = trained_and_random_maps(
        six, random, x64, "embedding", TopK(2), (0, 1), "mean"
    )
    assert_maps_equal(
        trained_maps, rotation_aggregated_maps(six, x64, "embedding", TopK(2), (0, 1), "mean")
    )
    assert_maps_equal(
        random_maps, rotation_aggregated_maps(random, x64, "embedding", TopK(2), (0, 1), "mean")
    )
    assert not torch.allclose(trained_maps, random_maps)


def test_saliency_config(six, x64):
    config = SaliencyConfig(layer="embedding", neurons="topk:2", aggregate="max", rotations=[0, 2])
    assert config.rotations == (0, 2)
    assert (
        config.key()
        == SaliencyConfig("embedding", "topk:2", aggregate="max", rotations=(0, 2)).key()
    )
    assert config.key() != SaliencyConfig("embedding", "topk:3", aggregate="max").key()
    with pytest.raises(AttributeError):
        config.layer = "rotation"  # frozen
    maps = config.maps(six, x64)
    expected = rotation_aggregated_maps(six, x64, "embedding", TopK(2), (0, 2), "max")
    assert_maps_equal(maps, expected)
    for bad in [
        dict(layer="conv"),
        dict(method="lime"),
        dict(aggregate="sum"),
        dict(layer="embedding", neurons="predicted"),
        dict(neurons="nope"),
    ]:
        with pytest.raises(RotvizError):
            SaliencyConfig(**bad)


def test_replicate_path_leaves_the_model_layout_as_it_was(six, x32):
    before = {k: v.is_contiguous() for k, v in six.state_dict().items()}
    saliency_maps(six, x32, "embedding", AllNeurons(), path="replicate")
    assert {k: v.is_contiguous() for k, v in six.state_dict().items()} == before
