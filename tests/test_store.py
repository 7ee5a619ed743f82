import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from rotviz.config import DataConfig, TrainConfig
from rotviz.nets.models import build_model
from rotviz.nets.store import CheckpointStore, card_digest, checkpoint_key, new_card

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


class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_loading_never_unpickles_a_malicious_file(tmp_path, kind):
    store = CheckpointStore(tmp_path / "store")
    _, card = card_for()
    weights = store.write(card["name"], build_model("six_layer", 4, 0), card)
    marker = tmp_path / "code-ran"
    if kind == "pickle":
        blob = pickle.dumps({"head.weight": Payload(marker)})
    else:
        buf = io.BytesIO()
        torch.save({"head.weight": Payload(marker)}, buf)
        blob = buf.getvalue()
    # the card vouches for the payload, so only the file format stands between it and exec
    card_path = tmp_path / "store" / f"{card['name']}.json"
    forged = json.loads(card_path.read_text())
    forged["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    forged["card_sha256"] = card_digest(forged)
    weights.write_bytes(blob)
    card_path.write_text(json.dumps(forged))
    with pytest.warns(UserWarning, match="corrupt"):
        assert store.load(card["name"]) is None
    assert not marker.exists()
    assert (tmp_path / "store" / f"{card['name']}.safetensors.corrupt").exists()
    # the payload is live: unpickling it would have run it
    if kind == "pickle":
        pickle.loads(blob)
    else:
        torch.load(io.BytesIO(blob), weights_only=False)
    assert marker.read_text() == "pwned"


def test_an_edited_card_is_reported_and_set_aside(tmp_path):
    store = CheckpointStore(tmp_path)
    _, card = card_for()
    card["metrics"] = {"test": {"trained": {"accuracy": 0.5}}}
    store.write(card["name"], build_model("six_layer", 4, 0), card)
    card_path = tmp_path / f"{card['name']}.json"
    edited = json.loads(card_path.read_text())
    edited["metrics"]["test"]["trained"]["accuracy"] = 0.99
    card_path.write_text(json.dumps(edited, indent=2))
    with pytest.warns(UserWarning, match="edited or damaged"):
        assert store.cards() == []
    with pytest.warns(UserWarning, match="corrupt.*edited or damaged"):
        assert store.load(card["name"]) is None
    assert (tmp_path / f"{card['name']}.json.corrupt").exists()
    assert (tmp_path / f"{card['name']}.safetensors.corrupt").exists()


def test_a_card_without_its_own_hash_still_loads(tmp_path):
    store = CheckpointStore(tmp_path)
    _, card = card_for()
    store.write(card["name"], build_model("six_layer", 4, 0), card)
    card_path = tmp_path / f"{card['name']}.json"
    old = json.loads(card_path.read_text())
    del old["card_sha256"]
    card_path.write_text(json.dumps(old, indent=2))
    assert store.load(card["name"]).card.key == card["key"]
    assert [c.name for c in store.cards()] == [card["name"]]


def test_a_reader_waits_for_a_writer_between_its_two_renames(tmp_path):
    store = CheckpointStore(tmp_path)
    _, card = card_for()
    weights = store.write(card["name"], build_model("six_layer", 4, 0), card)
    card_path = tmp_path / f"{card['name']}.json"
    card_text = card_path.read_text()
    got: list = []
    with store.pair_lock(card["name"]):  # a writer has renamed the weights, not yet the card
        card_path.unlink()
        reader = threading.Thread(target=lambda: got.append(store.load(card["name"])))
        reader.start()
        reader.join(timeout=1.0)
        assert reader.is_alive()  # it waits for the writer instead of deciding
        card_path.write_text(card_text)
    reader.join()
    assert got[0] is not None and got[0].card.key == card["key"]
    assert weights.exists() and not list(tmp_path.glob("*.corrupt"))


READER = """
import json, os, sys, warnings
from rotviz.nets.store import CheckpointStore
root, name, k = sys.argv[1], sys.argv[2], sys.argv[3]
store = CheckpointStore(root)
bad, reads, markers = [], 0, set()

def check(model, card, what):
    written = model.head.bias[0].item()
    if written != card["marker"]:
        bad.append(f"{what}: weights of round {written} with card {card['marker']}")
    markers.add(card["marker"])
    if len(markers) == 3:
        open(f"{root}/seen-{k}", "w").close()

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print("ready", flush=True)
    while not os.path.exists(f"{root}/stop"):
        ckpt = store.load(name)
        if ckpt is None:
            bad.append("load() found nothing")
        else:
            check(ckpt.model, ckpt.card.raw, "final")
        partial = store.read(name, partial=True)
        if partial is not None:
            check(partial[0], partial[1], "partial")
        reads += 1
warned = [str(w.message) for w in caught if "checkpoint" in str(w.message)]
print(json.dumps({"bad": bad, "reads": reads, "markers": len(markers), "warnings": warned}))
"""


def test_concurrent_writer_and_readers_lose_nothing(tmp_path):
    """This process rewrites one checkpoint (partial, then final, as training does) while two
    reader processes load it in a loop: every read is a consistent pair, nothing is set aside."""
    store = CheckpointStore(tmp_path)
    _, card = card_for()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def write_round(i: int, partial: bool) -> None:
        model = build_model("six_layer", 4, 0)
        with torch.no_grad():
            model.head.bias[0] = i  # the card's marker says which weights it belongs to
        store.write(card["name"], model, dict(card, marker=i), partial=partial)

    write_round(0, partial=False)
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(tmp_path), card["name"], str(k)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(2)
    ]
    for r in readers:
        assert r.stdout.readline().strip() == "ready"
    i = 0
    # rewrite until every reader has seen 3 rounds go by, so reads and writes overlap
    while i < 10 or not all((tmp_path / f"seen-{k}").exists() for k in range(len(readers))):
        i += 1
        assert i < 5000 and all(r.poll() is None for r in readers), "the readers stopped"
        write_round(i, partial=True)
        write_round(i, partial=False)
    (tmp_path / "stop").touch()
    results = [json.loads(r.communicate(timeout=120)[0]) for r in readers]
    assert all(r.returncode == 0 for r in readers)
    for res in results:
        assert res["bad"] == [] and res["warnings"] == []
        assert res["markers"] >= 3  # it read while the writer wrote
    assert not list(tmp_path.glob("*.corrupt"))
    final = store.load(card["name"])
    assert final.card.raw["marker"] == i and final.model.head.bias[0].item() == i
    assert store.read(card["name"], partial=True) is None
