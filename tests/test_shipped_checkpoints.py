"""The checkpoints shipped in checkpoints/: they load, their cards match their weights, and their
accuracy on their own test split matches the card."""

import dataclasses
import hashlib

import pytest
import torch

from rotviz.data.splits import load_split
from rotviz.nets.evaluate import rotation_accuracy
from rotviz.nets.store import SHIPPED_STORE, CheckpointStore
from tests.helpers import SHARED_DATA

EXPECTED = {
    ("demo", "six_layer"),
    ("lfw", "six_layer"),
    ("lfw", "efficientnet_b0"),
    ("lfw", "mobilenet_v2"),
}


def shipped_cards():
    return CheckpointStore(SHIPPED_STORE).cards()


def test_the_promised_checkpoints_are_shipped_and_small():
    have = {(c.dataset, c.model) for c in shipped_cards()}
    assert have >= EXPECTED
    total = sum(p.stat().st_size for p in SHIPPED_STORE.glob("*.safetensors"))
    assert total < 30 * 2**20


@pytest.mark.parametrize("card", shipped_cards(), ids=lambda c: c.name)
def test_card_matches_weights_and_loads(card):
    weights = card.path.with_suffix(".safetensors")
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card.weights_sha256
    ckpt = CheckpointStore(SHIPPED_STORE).load(card.name)
    assert ckpt is not None and not ckpt.model.training
    assert all(p.dtype == torch.float32 for p in ckpt.model.parameters())
    card = ckpt.card
    assert card.epochs_done == ckpt.train_config.epochs
    assert card.test_accuracy("trained") > card.test_accuracy("initial")
    cmd = card.command.split()
    assert cmd[:4] == ["python", "-m", "rotviz", "train"], card.command
    for flag, value in (
        ("--dataset", card.dataset),
        ("--model", card.model),
        ("--epochs", str(ckpt.train_config.epochs)),
    ):
        assert cmd[cmd.index(flag) + 1] == value, (flag, card.command)


def check_accuracy(card, root=None):
    ckpt = CheckpointStore(SHIPPED_STORE).load(card.name)
    data = dataclasses.replace(ckpt.data_config, root=root) if root else ckpt.data_config
    _, test = load_split(data, "test")
    ev = rotation_accuracy(
        ckpt.model, test.images, ckpt.train_config.rotations, torch.device("cpu")
    )
    assert len(test) == card.n_test_images
    assert abs(ev.accuracy - card.test_accuracy("trained")) <= 0.01


def test_demo_checkpoint_accuracy_matches_its_card():
    (card,) = [c for c in shipped_cards() if c.dataset == "demo"]
    check_accuracy(card)


@pytest.mark.slow
@pytest.mark.parametrize(
    "card", [c for c in shipped_cards() if c.dataset == "lfw"], ids=lambda c: c.name
)
def test_lfw_checkpoint_accuracy_matches_its_card(card):
    lfw = SHARED_DATA / "lfw"
    if not lfw.exists():
        pytest.skip("../shared/data/lfw not present")
    check_accuracy(card, root=str(lfw))
