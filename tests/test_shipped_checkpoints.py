"""The checkpoints shipped in checkpoints/: they load, their cards match their weights, their
accuracy on their own test split matches the card, and on the embedded demo images (always here)
each one predicts as it did when it shipped."""

import dataclasses
import hashlib

import pytest
import torch
from safetensors.torch import load_file

from rotviz.config import DataConfig
from rotviz.data.splits import load_split
from rotviz.nets.evaluate import rotation_accuracy, rotation_logits
from rotviz.nets.models import build_model
from rotviz.nets.store import SHIPPED_STORE, CheckpointStore, checkpoint_key, load_checkpoint
from rotviz.training.runlog import read_rows, run_dir
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
    assert total <= 25 * 2**20  # float16 weights, 25 MB at most in all


@pytest.mark.parametrize("card", shipped_cards(), ids=lambda c: c.name)
def test_card_matches_weights_and_loads(card):
    weights = card.path.with_suffix(".safetensors")
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card.weights_sha256
    ckpt = CheckpointStore(SHIPPED_STORE).load(card.name)
    assert ckpt is not None and not ckpt.model.training
    assert all(p.dtype == torch.float32 for p in ckpt.model.parameters())
    card = ckpt.card
    assert card.epochs_done == ckpt.train_config.epochs
    # the key holds the training precision the card states (float32 keys: as before precision)
    key = checkpoint_key(
        card.data_config, card.train_config, card.dataset_fingerprint, card.precision
    )
    assert key == card.key and card.precision == card.raw["precision"]
    assert card.test_accuracy("trained") > card.test_accuracy("initial")
    cmd = card.command.split()
    assert cmd[:4] == ["python", "-m", "rotviz", "train"], card.command
    for flag, value in (
        ("--dataset", card.dataset),
        ("--model", card.model),
        ("--epochs", str(ckpt.train_config.epochs)),
    ):
        assert cmd[cmd.index(flag) + 1] == value, (flag, card.command)


@pytest.mark.parametrize("card", shipped_cards(), ids=lambda c: c.name)
def test_each_shipped_network_carries_its_training_curve(card):
    """metrics.csv beside the card: every epoch's training loss and test accuracy (--test-curve)."""
    rows = read_rows(run_dir(SHIPPED_STORE, card.name))
    epochs = list(range(1, card.epochs_done + 1))
    assert [int(r["epoch"]) for r in rows if r["kind"] == "epoch"] == epochs
    tests = [r for r in rows if r["kind"] == "test"]
    assert [int(r["epoch"]) for r in tests] == epochs
    assert max(float(r["accuracy"]) for r in tests) > 0.5


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


DEMO_IMAGES = 8  # the first test images of the embedded demo set, each at the four rotations
# Right answers of each shipped network on those 32 samples, measured when it shipped: the LFW
# networks are applied to photographs unlike their faces, so only the demo one is far above 8.
RIGHT_ON_DEMO = {
    "demo-six_layer-e100-2dd201f2a42d7756": 28,
    "lfw-six_layer-e25-e6bdad5c467e6138": 12,
    "lfw-mobilenet_v2-e8-0747087aceb6a98f": 8,
    "lfw-efficientnet_b0-e20-7c345ec38be6e02d": 4,
}


def test_every_shipped_network_has_its_demo_figure():
    assert set(RIGHT_ON_DEMO) == {c.name for c in shipped_cards()}


@pytest.mark.parametrize("card", shipped_cards(), ids=lambda c: c.name)
def test_shipped_network_on_the_embedded_images(card):
    ckpt = load_checkpoint(card.name)
    # float16 on disk, as the card says; float32 in memory, holding exactly those values
    stored = load_file(ckpt.path)
    assert card.weights_dtype == "float16"
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    state = ckpt.model.state_dict()
    assert state.keys() == stored.keys()
    for k, v in stored.items():
        want = v.float() if v.is_floating_point() else v
        assert state[k].dtype == want.dtype and torch.equal(state[k], want), k

    trained_on = ckpt.data_config
    data = dataclasses.replace(
        DataConfig("demo"), image_size=trained_on.image_size, resize=trained_on.resize
    )
    _, test = load_split(data, "test")
    images, rotations = test.images[:DEMO_IMAGES], ckpt.train_config.rotations
    logits, labels = rotation_logits(ckpt.model, images, rotations, "cpu")
    assert logits.shape == (len(images) * len(rotations), len(rotations))
    assert torch.isfinite(logits).all()
    again, _ = rotation_logits(ckpt.model, images, rotations, "cpu")
    assert torch.equal(again, logits)  # deterministic
    alone, _ = rotation_logits(ckpt.model, images[:2], rotations, "cpu", batch_size=1)
    n = len(alone)  # eval mode: an image's prediction does not depend on its batch
    torch.testing.assert_close(alone, logits[:n], rtol=1e-4, atol=1e-4)
    predicted = logits.argmax(1)
    assert abs(int((predicted == labels).sum()) - RIGHT_ON_DEMO[card.name]) <= 1
    assert predicted.unique().numel() > 1  # the trained network tells the samples apart ...
    twin = build_model(card.model, rotations, ckpt.train_config.seed).eval()
    twin_logits, _ = rotation_logits(twin, images, rotations, "cpu")
    assert twin_logits.argmax(1).unique().numel() == 1  # ... its random twin does not (25 %)
