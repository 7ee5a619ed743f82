import pytest
import torch

from rotviz.errors import RotvizError
from rotviz.nets.models import STUDY_MODELS, build_model, count_parameters


def test_six_layer_is_six_conv_bn_relu_blocks_of_about_100k_parameters():
    model = build_model("six_layer", 4, seed=0)
    assert 90_000 <= count_parameters(model) <= 110_000
    blocks = model.blocks()[:-1]
    assert len(blocks) == 6
    for block in blocks:
        assert [type(m).__name__ for m in block] == ["Conv2d", "BatchNorm2d", "ReLU"]


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_every_model_exposes_embedding_and_rotation_layer(name):
    model = build_model(name, 3, seed=1).eval()
    x = torch.randn(2, 3, 128, 128)
    emb = model.embed(x)
    assert emb.shape == (2, model.num_features)
    assert torch.allclose(model(x), model.head(emb))
    assert model(x).shape == (2, 3)
    assert model.blocks()[-1] is model.head


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_same_seed_same_weights_other_seed_other_weights(name):
    a, b, c = build_model(name, 4, 0), build_model(name, 4, 0), build_model(name, 4, 1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_building_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    build_model("six_layer", 4, 7)
    assert torch.equal(torch.rand(1), expected)


def test_any_timm_name_and_unknown_names():
    model = build_model("resnet18", 4, 0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    with pytest.raises(RotvizError, match="unknown model"):
        build_model("not_a_model_xyz", 4, 0)


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_gradcam_layer_outputs_the_last_feature_map(name):
    model = build_model(name, 4, 0).eval()
    seen = []
    model.gradcam_layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    x = torch.randn(1, 3, 64, 64)
    features = model.features(x)
    assert seen == [features.shape]
