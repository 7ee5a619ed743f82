"""Saliency: the fast path against Captum, neuron sets, rotation back-mapping, other methods."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from captum.attr import (
    GuidedBackprop,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from skimage import data
from torch import nn

from rotviz.attribution.aggregation import rotation_aggregated_maps
from rotviz.attribution.gradients import saliency_maps
from rotviz.attribution.methods import METHODS, attribute, method_warning
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.attribution.targets import (
    AllNeurons,
    Indices,
    Predicted,
    TopK,
    TrueRotation,
    parse_neurons,
)
from rotviz.data.rotation import normalize, rotation_batch
from rotviz.errors import RotvizError
from rotviz.nets.models import RotationNet, build_model


def photos(size: int, names=("astronaut", "chelsea")) -> torch.Tensor:
    """Bundled skimage photos, resized to size x size, normalised (N, 3, size, size) float32."""
    out = []
    for name in names:
        img = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float()
        img = nn.functional.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
        out.append(img.round().clamp(0, 255).to(torch.uint8))
    return normalize(torch.cat(out))


class _Embedding(nn.Module):
    """The embedding layer as a module (Captum's guided backprop wants a module)."""

    def __init__(self, model: RotationNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def captum_oracle(
    model: RotationNet,
    x: torch.Tensor,
    layer: str,
    neurons,
    method: str = "saliency",
    *,
    n_steps: int = 8,
    nt_samples: int = 4,
    stdevs: float = 0.15,
    seed: int = 0,
) -> torch.Tensor:
    """Captum's ``method`` looped over the selected neurons, |.| max channels, max neurons (N, H, W).

    Written from the definitions, independently of rotviz.attribution.saliency: a copy of the model in
    eval mode with out-of-place ReLUs (Captum hooks them), the layer as x -> model(x) or
    model.embed(x), SmoothGrad noise drawn from ``torch.manual_seed(seed)`` anew for each neuron
    (rotviz draws it once per batch of images and shares it across neurons), Grad-CAM upsampled bilinearly to H x W then relu.
    """
    net = copy.deepcopy(model).eval()
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    module = net if layer == "rotation" else _Embedding(net)
    with torch.no_grad():
        sel = neurons.select(module(x))  # (N, s)
    size = x.shape[-2:]

    def one_neuron(t: list[int]) -> torch.Tensor:
        if method == "saliency":
            return Saliency(module).attribute(x, target=t, abs=True)
        if method == "integrated_gradients":
            ig = IntegratedGradients(module)
            return ig.attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=n_steps)
        if method == "smoothgrad":
            return NoiseTunnel(Saliency(module)).attribute(
                x, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdevs, target=t, abs=True
            )
        if method == "gradcam":
            cam = LayerGradCam(module, net.gradcam_layer)
            small = cam.attribute(x, target=t, relu_attributions=True)  # (N, 1, h, w)
            return nn.functional.interpolate(small, size=size, mode="bilinear").relu()
        assert method == "guided_backprop", method
        return GuidedBackprop(module).attribute(x, target=t)

    ref = torch.zeros(x.shape[0], *size, dtype=x.dtype)
    with torch.random.fork_rng(devices=[]):
        for j in range(sel.shape[1]):
            torch.manual_seed(seed)  # one noise draw shared by every neuron, as rotviz draws it
            ref = torch.maximum(ref, one_neuron(sel[:, j].tolist()).detach().abs().amax(dim=1))
    return ref


def assert_maps_equal(
    ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-6, allow_zero: bool = False
) -> None:
    assert ours.shape == ref.shape
    assert allow_zero or ref.max() > 0
    # Relative to each element, or to the map's scale: the fast paths fold BatchNorm into the
    # convolutions, which moves pre-activations by an ulp and can flip a ReLU exactly at 0.
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * float(ref.max()))


@pytest.fixture(scope="module")
def six() -> RotationNet:
    return build_model("six_layer", 4, seed=0).double().eval()


@pytest.fixture(scope="module")
def x64() -> torch.Tensor:
    return photos(64).double()


@pytest.fixture(scope="module")
def x32() -> torch.Tensor:
    return photos(32).double()


# float32: float64 convolutions are several times slower on CPU; the maps still agree to 1e-5.
@pytest.fixture(scope="module")
def effnet() -> RotationNet:
    return build_model("efficientnet_b0", 4, seed=0).eval()


@pytest.fixture(scope="module")
def mobilenet() -> RotationNet:
    return build_model("mobilenet_v2", 4, seed=0).eval()


def train_briefly(
    model: RotationNet,
    images_uint8: np.ndarray,
    rotations: Sequence[int],
    steps: int,
    size: int = 32,
    lr: float = 1e-2,
) -> RotationNet:
    """Full-batch Adam steps on the rotation task at size x size, then eval mode.

    Train mode moves the BatchNorm running statistics away from their initial 0 / 1, so the
    eval-mode maps are those of a trained network, not of its initialisation. Deterministic:
    no shuffling, no dropout, one fixed batch.
    """
    u8 = torch.from_numpy(images_uint8).float()
    small = nn.functional.interpolate(u8, size=(size, size), mode="bilinear", antialias=True)
    x, y = rotation_batch(normalize(small.round().clamp(0, 255).to(torch.uint8)), rotations)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained_six(real_images) -> RotationNet:
    """six_layer trained on all four rotations of eight skimage photos (float64 after)."""
    return train_briefly(
        build_model("six_layer", 4, seed=0), real_images, (0, 1, 2, 3), 10
    ).double()


@pytest.fixture(scope="module")
def trained_half(real_images) -> RotationNet:
    """six_layer trained on rotations (2, 0): label 0 means 180 degrees, label 1 means 0."""
    return train_briefly(build_model("six_layer", 2, seed=0), real_images, (2, 0), 10).double()


@pytest.fixture(scope="module")
def trained_mobilenet(real_images) -> RotationNet:
    """mobilenet_v2 after two steps on four photos (float32: float64 is too slow here)."""
    return train_briefly(
        build_model("mobilenet_v2", 4, seed=0), real_images[:4], (0, 1, 2, 3), 2, lr=1e-3
    )


# ------------------------------------------------------------------ fast path == Captum


# (layer, neurons given to rotviz, the same neurons as Captum's oracle selects them)
NEURON_CASES = [
    ("rotation", AllNeurons(), AllNeurons()),
    ("rotation", Predicted(), Predicted()),
    ("rotation", TrueRotation([1, 3]), TrueRotation([1, 3])),
    ("rotation", TrueRotation(), Indices([0])),  # upright images: label 0 of rotations 0..3
    ("rotation", Indices([2]), Indices([2])),
    ("rotation", TopK(2), TopK(2)),
    ("embedding", AllNeurons(), AllNeurons()),
    ("embedding", Indices([0, 17, 42, 63]), Indices([0, 17, 42, 63])),
    ("embedding", TopK(5), TopK(5)),
]


@pytest.fixture(scope="module")
def oracle_maps() -> dict:
    """Captum maps computed once per (model, images, layer, neurons, method), shared by paths."""
    return {}


def cached_oracle(cache: dict, net: str, model, x, layer, neurons, method="saliency", **kw):
    """captum_oracle, computed once per module for the same arguments."""
    key = (net, tuple(x.shape), layer, repr(neurons), method, tuple(sorted(kw.items())))
    if key not in cache:
        cache[key] = captum_oracle(model, x, layer, neurons, method, **kw)
    return cache[key]


@pytest.mark.parametrize("path", ["replicate", "vmap", "loop"])
@pytest.mark.parametrize(("layer", "neurons", "oracle_neurons"), NEURON_CASES, ids=str)
@pytest.mark.parametrize("net", ["six", "trained_six"])
def test_fast_path_equals_captum_six_layer(
    net, x32, layer, neurons, oracle_neurons, path, oracle_maps, request
):
    model = request.getfixturevalue(net)
    ours = saliency_maps(model, x32, layer, neurons, chunk_size=7, path=path)
    assert ours.dtype == torch.float64
    ref = cached_oracle(oracle_maps, net, model, x32, layer, oracle_neurons)
    assert_maps_equal(ours, ref)


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
    x = photos(32)
    ours = saliency_maps(model, x, "embedding", TopK(3))
    assert ours.dtype == torch.float32 and ours.shape == (2, 32, 32)
    ref = captum_oracle(model, x, "embedding", TopK(3))
    assert_maps_equal(ours, ref, rtol=1e-5)


def fast_path_cases() -> list:
    """Every path on EfficientNet-b0; MobileNetV2's slower loop and vmap runs are marked slow."""
    cases = [pytest.param("effnet", p, id=f"effnet-{p}") for p in ("replicate", "vmap", "loop")]
    cases.append(pytest.param("mobilenet", "replicate", id="mobilenet-replicate"))
    cases += [
        pytest.param("mobilenet", p, id=f"mobilenet-{p}", marks=pytest.mark.slow)
        for p in ("vmap", "loop")
    ]
    return cases


@pytest.mark.parametrize(("arch", "path"), fast_path_cases())
def test_fast_path_equals_captum_timm_and_torchvision(arch, path, request):
    model = request.getfixturevalue(arch)
    x = photos(40)  # small: the definitions do not depend on the size
    for layer, neurons in [("rotation", AllNeurons()), ("embedding", Indices([0, 257, 901, 1279]))]:
        ours = saliency_maps(model, x, layer, neurons, chunk_size=3, path=path)
        assert_maps_equal(ours, captum_oracle(model, x, layer, neurons), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["effnet", "mobilenet"])
def test_fast_path_equals_captum_timm_and_torchvision_64px(arch, request):
    model = request.getfixturevalue(arch)
    x64 = photos(64)
    for layer, neurons in [
        ("rotation", AllNeurons()),
        ("embedding", Indices([0, 3, 100, 257, 640, 901, 1100, 1279])),
    ]:
        ours = saliency_maps(model, x64, layer, neurons, chunk_size=3)
        assert_maps_equal(ours, captum_oracle(model, x64, layer, neurons), rtol=1e-5)


# ------------------------------------------------------------------ trained networks == Captum


def test_trained_fixtures_moved_away_from_their_initialisation(trained_six, trained_mobilenet):
    for trained in (trained_six, trained_mobilenet):
        init = build_model(trained.name, trained.num_rotations, seed=0).state_dict()
        state = trained.state_dict()
        moved = [
            k for k in init if "running_mean" in k and not torch.allclose(state[k].float(), init[k])
        ]
        assert len(moved) == sum("running_mean" in k for k in init)  # every BatchNorm
        assert not torch.allclose(state["head.weight"].float(), init["head.weight"])
    x, y = rotation_batch(photos(32).double())
    with torch.no_grad():
        assert (trained_six(x).argmax(1) == y).all()  # it learnt the task on its photos


METHOD_KW = dict(n_steps=8, nt_samples=4, stdevs=0.15, seed=3)


def method_cases() -> list:
    """Every method x NEURON_CASES; all 64 embedding neurons (64 Captum calls) is slow."""
    cases = []
    for method in METHODS:
        for layer, neurons, oracle_neurons in NEURON_CASES:
            slow = layer == "embedding" and isinstance(neurons, AllNeurons)
            marks = [pytest.mark.slow] if slow else []
            cases.append(pytest.param(method, layer, neurons, oracle_neurons, marks=marks))
    return cases


@pytest.mark.parametrize(("method", "layer", "neurons", "oracle_neurons"), method_cases(), ids=str)
def test_every_method_equals_captum_on_a_trained_six_layer(
    trained_six, x32, method, layer, neurons, oracle_neurons
):
    ours = attribute(trained_six, x32, layer, neurons, method, **METHOD_KW)
    ref = captum_oracle(trained_six, x32, layer, oracle_neurons, method, **METHOD_KW)
    # Grad-CAM of a logit the network votes against can be all zero after its relu.
    assert_maps_equal(ours, ref, allow_zero=method == "gradcam")


def test_a_trained_network_left_in_train_mode_is_explained_in_eval_mode(trained_six, x32):
    in_train_mode = Saliency(copy.deepcopy(trained_six).train()).attribute(x32, target=1, abs=True)
    ref = {
        m: captum_oracle(trained_six, x32, "rotation", Indices([1]), m, **METHOD_KW)
        for m in METHODS
    }
    assert not torch.allclose(in_train_mode.amax(1), ref["saliency"], rtol=1e-2, atol=0)
    trained_six.train()  # BatchNorm would use the batch's statistics
    try:
        for method in METHODS:
            ours = attribute(trained_six, x32, "rotation", Indices([1]), method, **METHOD_KW)
            assert_maps_equal(ours, ref[method])
    finally:
        trained_six.eval()


def test_smoothgrad_oracle_depends_on_the_noise(trained_six, x32):
    """The SmoothGrad comparison is not vacuous: another seed gives other maps."""
    ours = attribute(trained_six, x32, "rotation", Predicted(), "smoothgrad", **METHOD_KW)
    other = captum_oracle(
        trained_six, x32, "rotation", Predicted(), "smoothgrad", **{**METHOD_KW, "seed": 4}
    )
    assert not torch.allclose(ours, other, rtol=1e-3, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_equals_captum_on_a_trained_mobilenet(trained_mobilenet, method):
    x = photos(40)  # 40 px: a 2 x 2 last feature map, so Grad-CAM is not flat
    for layer, neurons in [("rotation", TrueRotation([2, 1])), ("embedding", Indices([901]))]:
        ours = attribute(trained_mobilenet, x, layer, neurons, method, **METHOD_KW)
        ref = captum_oracle(trained_mobilenet, x, layer, neurons, method, **METHOD_KW)
        assert_maps_equal(ours, ref, rtol=1e-5)


@pytest.mark.parametrize("path", ["replicate", "vmap", "loop"])
def test_fast_path_equals_captum_on_a_trained_mobilenet(trained_mobilenet, path, oracle_maps):
    x = photos(40)
    for layer, neurons in [("rotation", AllNeurons()), ("embedding", TopK(3))]:
        ours = saliency_maps(trained_mobilenet, x, layer, neurons, chunk_size=3, path=path)
        ref = cached_oracle(oracle_maps, "trained_mobilenet", trained_mobilenet, x, layer, neurons)
        assert_maps_equal(ours, ref, rtol=1e-5)


@pytest.mark.parametrize("arch", ["six", "effnet", "mobilenet"])
def test_gradcam_layer_outputs_the_last_feature_map(arch, request):
    model = request.getfixturevalue(arch)
    x = photos(40).to(next(model.parameters()).dtype)
    seen = []
    handle = model.gradcam_layer.register_forward_hook(lambda m, i, out: seen.append(out))
    try:
        with torch.no_grad():
            features = model.features(x)
    finally:
        handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], features)


# ------------------------------------------------------------------ rotation subsets


def test_true_neurons_of_a_model_trained_on_180_then_0_explain_the_right_logit(trained_half, x32):
    # Label 0 means 180 degrees, label 1 means 0 degrees: upright images are logit 1.
    flipped = torch.rot90(x32, 2, dims=(-2, -1))
    with torch.no_grad():
        assert trained_half(x32).argmax(1).tolist() == [1, 1]
        assert trained_half(flipped).argmax(1).tolist() == [0, 0]
    upright = captum_oracle(trained_half, x32, "rotation", Indices([1]))
    wrong = captum_oracle(trained_half, x32, "rotation", Indices([0]))
    assert not torch.allclose(upright, wrong, rtol=1e-2, atol=0)  # the test can tell them apart
    ours = SaliencyConfig(neurons="true", aggregate="none").maps(
        trained_half, x32, model_rotations=(2, 0)
    )
    assert_maps_equal(ours, upright)
    # The copy rotated by 180 degrees is logit 0; its map is turned back to the upright frame.
    half_turn = torch.rot90(
        captum_oracle(trained_half, flipped, "rotation", Indices([0])), -2, dims=(-2, -1)
    )
    ours_180 = rotation_aggregated_maps(
        trained_half, x32, "rotation", TrueRotation(), (2,), "mean", model_rotations=(2, 0)
    )
    assert_maps_equal(ours_180, half_turn)
    # Aggregating both copies in the study's order (0, 180) raises no "not trained" error.
    mean = SaliencyConfig(neurons="true", aggregate="mean", rotations=(0, 2)).maps(
        trained_half, x32, model_rotations=(2, 0)
    )
    assert_maps_equal(mean, (upright + half_turn) / 2)
    most = SaliencyConfig(neurons="true", aggregate="max", rotations=(2, 0)).maps(
        trained_half, x32, model_rotations=(2, 0)
    )
    assert_maps_equal(most, torch.maximum(upright, half_turn))


@pytest.mark.parametrize("method", METHODS)
def test_true_neurons_of_a_rotation_subset_model_by_every_method(trained_half, x32, method):
    kw = dict(n_steps=8, nt_samples=4)
    config = SaliencyConfig(neurons="true", aggregate="none", method=method, seed=1, **kw)
    ours = config.maps(trained_half, x32, model_rotations=(2, 0))
    ref = captum_oracle(trained_half, x32, "rotation", Indices([1]), method, seed=1, **kw)
    assert_maps_equal(ours, ref)


def test_true_neurons_use_the_rotations_the_model_carries(x32):
    model = build_model("six_layer", (2, 0), seed=0).double()  # upright is logit 1
    assert model.rotations == (2, 0)
    ours = SaliencyConfig(neurons="true", aggregate="none").maps(model, x32)
    assert_maps_equal(ours, captum_oracle(model, x32, "rotation", Indices([1])))
    model.rotations = (0, 2)  # the same weights read the other way: upright is logit 0
    ours = SaliencyConfig(neurons="true", aggregate="none").maps(model, x32)
    assert_maps_equal(ours, captum_oracle(model, x32, "rotation", Indices([0])))


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


@pytest.mark.parametrize(("layer", "neurons"), [("rotation", Predicted()), ("embedding", TopK(3))])
def test_no_grad_caller_still_gets_maps(six, x64, layer, neurons):
    outside = saliency_maps(six, x64, layer, neurons)
    with torch.no_grad():
        inside = saliency_maps(six, x64, layer, neurons)
        assert not torch.is_grad_enabled()  # the caller's mode is given back
    assert outside.max() > 0
    torch.testing.assert_close(inside, outside, rtol=1e-6, atol=1e-6 * float(outside.max()))


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


def test_a_new_method_is_one_registry_entry(six, x64):
    """Registering an adapter makes a method usable by attribute() and SaliencyConfig alike."""
    from captum.attr import InputXGradient

    from rotviz.attribution import methods

    @methods.register("input_x_gradient")
    def _input_x_gradient(module, model, options, size):
        ixg = InputXGradient(module)
        return lambda x, t: ixg.attribute(x, target=t)

    try:
        ours = SaliencyConfig(method="input_x_gradient", aggregate="none").maps(six, x64)
        x = x64.clone().requires_grad_(True)
        six.eval()
        with torch.no_grad():
            targets = six(x64).argsort(dim=1)
        expected = torch.zeros(x64.shape[0], *x64.shape[-2:])
        for j in range(targets.shape[1]):
            a = InputXGradient(six).attribute(x, target=targets[:, j].tolist())
            expected = torch.maximum(expected, a.detach().abs().amax(dim=1))
        torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)
    finally:
        del methods.METHODS["input_x_gradient"]
    with pytest.raises(RotvizError, match="input_x_gradient"):
        SaliencyConfig(method="input_x_gradient")


# ------------------------------------------------------------------ Grad-CAM over a whole set


def gradcam_cases() -> list:
    """Three models x two layers; the 1,280 embedding neurons of the timm/torchvision nets
    against 1,280 Captum calls each are slow, a spread of 40 of them is not."""
    spread = Indices(list(range(0, 1280, 32)))
    cases = []
    for arch in ("trained_six", "mobilenet", "effnet"):
        cases.append(pytest.param(arch, "rotation", AllNeurons(), id=f"{arch}-rotation-all"))
        if arch == "trained_six":
            cases.append(pytest.param(arch, "embedding", AllNeurons(), id=f"{arch}-embedding-all"))
            continue
        # MobileNetV2's 40-neuron run is the slowest of the default suite: effnet covers it there
        slow = [pytest.mark.slow] if arch == "mobilenet" else []
        cases.append(pytest.param(arch, "embedding", spread, id=f"{arch}-embedding-40", marks=slow))
        cases.append(
            pytest.param(
                arch, "embedding", AllNeurons(), id=f"{arch}-embedding-all", marks=pytest.mark.slow
            )
        )
    return cases


@pytest.mark.parametrize(("arch", "layer", "neurons"), gradcam_cases())
def test_gradcam_of_a_neuron_set_equals_captum_looped_over_neurons(
    arch, layer, neurons, request, x32
):
    from rotviz.attribution.gradcam import gradcam_maps

    model = request.getfixturevalue(arch)
    x = x32[: 1 if isinstance(neurons, AllNeurons) else 2].to(next(model.parameters()).dtype)
    ref = captum_oracle(model, x, layer, neurons, "gradcam")
    assert ref.max() > 0
    for closed_form in (True, False):
        ours = gradcam_maps(model, x, layer, neurons, closed_form=closed_form)
        err = float((ours - ref).abs().max())
        assert err <= 1e-5 * float(ref.max()), (closed_form, err, float(ref.max()))
    # attribute() takes the same path
    torch.testing.assert_close(attribute(model, x, layer, neurons, "gradcam"), ours)


@pytest.mark.parametrize("arch", ["mobilenet", "effnet"])
@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "guided_backprop"])
def test_batched_methods_equal_captum_on_float32_networks(arch, method, request, x32):
    """The fast paths over neurons and points on the torchvision and timm nets, float32."""
    model = request.getfixturevalue(arch)
    neurons, x = Indices([3, 700, 1279]), x32.float()
    ours = attribute(model, x, "embedding", neurons, method, **METHOD_KW)
    ref = captum_oracle(model, x, "embedding", neurons, method, **METHOD_KW)
    err = float((ours - ref).abs().max())
    assert err <= 1e-5 * float(ref.max()), (err, float(ref.max()))


def test_the_captum_loop_is_still_offered_and_agrees(trained_six, x32):
    for method in ("integrated_gradients", "smoothgrad", "guided_backprop", "gradcam"):
        fast = attribute(trained_six, x32, "embedding", TopK(3), method, **METHOD_KW)
        loop = attribute(trained_six, x32, "embedding", TopK(3), method, fast=False, **METHOD_KW)
        assert_maps_equal(fast, loop, allow_zero=method == "gradcam")
