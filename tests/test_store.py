import json

import pytest
import torch

from rotviz.config import DataConfig, TrainConfig
from rotviz.models import build_model
from rotviz.store import CheckpointStore, checkpoint_key, new_card

DATA = DataConfig("folder", root="/somewhere")
TRAIN = TrainConfig(epochs=1)


def card_for(train=TRAIN):
    key = checkpoint_key(DATA, train, "fp")
    return key, new_card(DATA, train, key, "fp")


def test_round_trip_restores_weights_exactly(tmp_path):
    store = CheckpointStore(tmp_path)
    model = build_model("six_layer", 4, 3)
    with torch.no_grad():
        model.head.bias.add_(0.5)
    _, card = card_for(TrainConfig(epochs=1, seed=3))
    store.write(card["name"], model, card)
    ckpt = store.load(card["name"])
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), ckpt.model.state_dict().values(), strict=True)
    )
    assert ckpt.card.weights_sha256 and ckpt.card.raw["versions"]["torch"] == torch.__version__
    assert not ckpt.model.training


def test_half_precision_weights_load_back_as_float32(tmp_path):
    store = CheckpointStore(tmp_path)
    model = build_model("six_layer", 4, 0)
    _, card = card_for()
    store.write(card["name"], model, card, half=True)
    ckpt = store.load(card["name"])
    w = ckpt.model.head.weight
    assert w.dtype == torch.float32
    assert torch.allclose(w, model.head.weight, atol=1e-3)
    assert (tmp_path / f"{card['name']}.safetensors").stat().st_size < 0.6 * 4 * 107_220


def test_key_ignores_local_paths_but_not_content_or_recipe():
    a = checkpoint_key(DataConfig("lfw", root="/a"), TRAIN, "fp")
    assert a == checkpoint_key(DataConfig("lfw", root="/b"), TRAIN, "fp")
    assert a != checkpoint_key(DataConfig("lfw", root="/a"), TRAIN, "other")
    assert a != checkpoint_key(DataConfig("lfw", root="/a"), TrainConfig(epochs=2), "fp")
    assert a != checkpoint_key(DataConfig("lfw", resize="center-crop"), TRAIN, "fp")


@pytest.mark.parametrize("damage", ["truncate", "flip", "card"])
def test_corrupt_checkpoint_is_reported_and_set_aside(tmp_path, damage):
    store = CheckpointStore(tmp_path)
    _, card = card_for()
    weights = store.write(card["name"], build_model("six_layer", 4, 0), card)
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "flip":
        blob = bytearray(weights.read_bytes())
        blob[-10] ^= 0xFF
        weights.write_bytes(bytes(blob))
    else:
        (tmp_path / f"{card['name']}.json").write_text("{not json")
    with pytest.warns(UserWarning, match="corrupt"):
        assert store.load(card["name"]) is None
    assert (tmp_path / f"{card['name']}.safetensors.corrupt").exists()
    assert store.load(card["name"]) is None  # now simply absent


def test_partial_state_carries_optimizer_and_history(tmp_path):
    store = CheckpointStore(tmp_path)
    model = build_model("six_layer", 4, 0)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-4, momentum=0.5)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    _, card = card_for()
    card.update(epochs_done=1, history=[{"epoch": 1, "loss": 1.2, "accuracy": 0.5, "lr": 1e-4}])
    store.write(card["name"], model, card, partial=True, optimizer_state=opt.state_dict())
    _, state, _ = store.resume_state(card["name"])
    assert state.epochs_done == 1 and state.history[0].loss == 1.2
    restored = torch.optim.RMSprop(model.parameters(), lr=1e-4, momentum=0.5)
    restored.load_state_dict(state.optimizer_state)
    for a, b in zip(opt.state.values(), restored.state.values(), strict=True):
        assert torch.equal(a["square_avg"], b["square_avg"])
    # the finished write removes the partial files
    store.write(card["name"], model, card)
    assert store.resume_state(card["name"]) is None
    assert [c.name for c in store.cards()] == [card["name"]]


def test_loading_never_unpickles(tmp_path):
    store = CheckpointStore(tmp_path)
    _, card = card_for()
    store.write(card["name"], build_model("six_layer", 4, 0), card)
    raw = (tmp_path / f"{card['name']}.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert "head.weight" in header  # a safetensors file, not a pickle
