"""A network given by path is the user's file: it is read and nothing else. A damaged one gives
one line naming the file and what is wrong (exit status 1 on the command line), and its folder
is left byte for byte as it was: nothing renamed, locked or written. The store's own names keep
the store's behaviour (set aside, retrained; see test_store.py)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from safetensors.torch import save as save_safetensors

from rotviz.cli.main import build_parser, main
from rotviz.config import DataConfig, TrainConfig
from rotviz.nets import store as store_module
from rotviz.nets.models import build_model
from rotviz.nets.store import (
    SHIPPED_STORE,
    CheckpointStore,
    UnreadableCheckpoint,
    card_digest,
    checkpoint_key,
    load_checkpoint,
    new_card,
    read_checkpoint_file,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = "demo-six_layer-e100-2dd201f2a42d7756"
LFW = "lfw-six_layer-e25-e6bdad5c467e6138"


def card_for() -> tuple[str, dict]:
    data, train = DataConfig("folder", root="/somewhere"), TrainConfig(epochs=1)
    key = checkpoint_key(data, train, "fp")
    return key, new_card(data, train, key, "fp")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every entry of folder and its bytes (folders as b"<dir>")."""
    return {p.name: b"<dir>" if p.is_dir() else p.read_bytes() for p in sorted(folder.iterdir())}


def forge(card_path: Path, blob: bytes) -> None:
    """Make the card vouch for blob (weights hash and card hash both updated)."""
    card = json.loads(card_path.read_text())
    card["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    card["card_sha256"] = card_digest(card)
    card_path.write_text(json.dumps(card, indent=2))


def damage(folder: Path, how: str) -> tuple[Path, str]:
    """Copy the shipped demo network into folder, damage it; the path to give and the fault's words."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(SHIPPED_STORE / f"{DEMO}{suffix}", folder / f"net{suffix}")
    weights, card = folder / "net.safetensors", folder / "net.json"
    blob = weights.read_bytes()
    if how == "truncated weights":
        weights.write_bytes(blob[: len(blob) // 2])
        return weights, "truncated"
    if how == "weights cut inside the header":
        weights.write_bytes(blob[:100])
        return weights, "truncated"
    if how == "garbage weights":
        weights.write_bytes((bytes(range(256)) * len(blob))[: len(blob)])
        return weights, "not a safetensors file"
    if how == "empty weights":
        weights.write_bytes(b"")
        return weights, "empty file"
    if how == "another network's weights":
        shutil.copy(SHIPPED_STORE / f"{LFW}.safetensors", weights)
        return card, "do not match the SHA-256 in the card net.json"
    if how == "weights of another architecture":
        other = build_model("six_layer", 2, 0).state_dict()
        blob = save_safetensors({k: v.contiguous() for k, v in other.items()})
        weights.write_bytes(blob)
        forge(card, blob)
        return weights, "do not fit the network the card describes (six_layer, 4 rotations)"
    if how == "a pickle vouched for by the card":
        blob = pickle.dumps({"head.weight": [1.0]})
        weights.write_bytes(blob)
        forge(card, blob)
        return card, "a pickle; rotviz never unpickles"
    if how == "missing card":
        card.unlink()
        return weights, "no card net.json beside it"
    if how == "missing weights":
        weights.unlink()
        return card, "no weights net.safetensors beside the card"
    if how == "card not JSON":
        card.write_text("{not json")
        return weights, "the card is not JSON"
    if how == "edited card":
        edited = json.loads(card.read_text())
        edited["card_sha256"] = card_digest(
            edited
        )  # as rotviz writes it (shipped cards predate it)
        edited["metrics"]["test"]["trained"]["accuracy"] = 0.99
        card.write_text(json.dumps(edited, indent=2))
        return weights, "the card was edited or damaged"
    if how == "card without a recipe":
        edited = json.loads(card.read_text())
        del edited["train_config"]
        edited["card_sha256"] = card_digest(edited)
        card.write_text(json.dumps(edited, indent=2))
        return weights, "the card has no valid train_config"
    if how == "a folder":
        (folder / "net.d").mkdir()
        return folder / "net.d", "a folder, not a checkpoint"
    if how == "a nonexistent path":
        return folder / "nope.safetensors", "no such file"
    if how == "another kind of file":
        (folder / "net.pt").write_bytes(blob)
        return folder / "net.pt", "not a checkpoint file"
    raise AssertionError(how)


DAMAGES = [
    "truncated weights",
    "weights cut inside the header",
    "garbage weights",
    "empty weights",
    "another network's weights",
    "weights of another architecture",
    "a pickle vouched for by the card",
    "missing card",
    "missing weights",
    "card not JSON",
    "edited card",
    "card without a recipe",
    "a folder",
    "a nonexistent path",
    "another kind of file",
]
FILE_AT_FAULT = {  # damages whose message names the other file of the pair
    "another network's weights": "net.safetensors",
    "a pickle vouched for by the card": "net.safetensors",
    "missing card": "net.safetensors",
    "missing weights": "net.json",
    "card not JSON": "net.json",
    "edited card": "net.json",
    "card without a recipe": "net.json",
}


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_file_is_named_and_left_as_it_was(tmp_path, how):
    given, words = damage(tmp_path, how)
    before = snapshot(tmp_path)
    card = given.with_suffix(".json")
    for ref in [given, card] if given.suffix == ".safetensors" and card.exists() else [given]:
        with pytest.raises(UnreadableCheckpoint) as err:
            load_checkpoint(ref)
        message = str(err.value)
        assert "\n" not in message and words in message
        at_fault = tmp_path / FILE_AT_FAULT[how] if how in FILE_AT_FAULT else given
        assert message.startswith(f"checkpoint {at_fault}: ")
        assert err.value.exit_code == 1
    assert snapshot(tmp_path) == before  # nothing renamed, locked or written


def test_an_intact_file_loads_from_any_folder_and_stays_as_it_was(tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(SHIPPED_STORE / f"{DEMO}{suffix}", tmp_path / f"mine{suffix}")
    before = snapshot(tmp_path)
    by_weights = read_checkpoint_file(tmp_path / "mine.safetensors")
    by_card = load_checkpoint(tmp_path / "mine.json")
    shipped = load_checkpoint(DEMO)
    assert by_weights.card.key == by_card.card.key == shipped.card.key
    assert by_card.path == tmp_path / "mine.safetensors"
    mine, theirs = by_card.model.state_dict(), shipped.model.state_dict()
    assert mine.keys() == theirs.keys() and all(mine[k].equal(theirs[k]) for k in mine)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("how", ["truncated weights", "missing card"])
def test_a_damaged_file_inside_the_store_is_reported_by_path_and_set_aside_by_name(tmp_path, how):
    store = CheckpointStore(tmp_path / "store")
    store.root.mkdir()
    given, words = damage(store.root, how)
    before = {k: v for k, v in snapshot(store.root).items() if not k.endswith(".lock")}
    with pytest.raises(UnreadableCheckpoint, match=re.escape(f"checkpoint {given}: {words}")):
        load_checkpoint(given, store)
    after = {k: v for k, v in snapshot(store.root).items() if not k.endswith(".lock")}
    assert after == before  # by path: read again once no writer holds it, never set aside
    with pytest.warns(UserWarning, match=f"corrupt.*{words}.*retrained"):
        assert store.load("net") is None  # by name: the store's own behaviour, kept
    assert sorted(p.name for p in store.root.glob("*.corrupt")) == sorted(
        f"{name}.corrupt" for name in before
    )


def test_a_path_inside_the_store_waits_for_a_writer_between_its_two_renames(tmp_path):
    store = CheckpointStore(tmp_path)
    _, card = card_for()
    weights = store.write(card["name"], build_model("six_layer", 4, 0), card)
    card_path = weights.with_suffix(".json")
    card_text = card_path.read_text()
    got: list = []
    with store.pair_lock(card["name"]):  # a writer has renamed the weights, not yet the card
        card_path.unlink()
        reader = threading.Thread(target=lambda: got.append(load_checkpoint(weights, store)))
        reader.start()
        reader.join(timeout=1.0)
        assert reader.is_alive()  # it waits for the writer instead of deciding
        card_path.write_text(card_text)
    reader.join()
    assert got[0].card.key == card["key"] and not list(tmp_path.glob("*.corrupt"))


def test_a_damaged_shipped_network_is_not_used_and_not_touched(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(SHIPPED_STORE / f"{DEMO}{suffix}", shipped / f"{DEMO}{suffix}")
    weights = shipped / f"{DEMO}.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    monkeypatch.setattr(store_module, "SHIPPED_STORE", shipped)
    before = snapshot(shipped)
    store = CheckpointStore(tmp_path / "user", shipped=True)
    with pytest.warns(UserWarning, match=f"shipped checkpoint {DEMO} is damaged.*truncated"):
        assert store.load(DEMO) is None
    assert snapshot(shipped) == before


def commands_with_checkpoint() -> list[str]:
    """The commands whose parser takes --checkpoint."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(
        name
        for name, p in sub.choices.items()
        if any("--checkpoint" in a.option_strings for a in p._actions)
    )


def test_every_command_that_applies_a_network_takes_checkpoint():
    assert {"evaluate", "saliency", "probe", "sanity", "neurons"} <= set(commands_with_checkpoint())


@pytest.mark.parametrize("command", commands_with_checkpoint())
def test_every_command_reports_a_damaged_file_in_one_line(tmp_path, monkeypatch, capsys, command):
    folder = tmp_path / "mine"
    folder.mkdir()
    given, words = damage(folder, "truncated weights")
    before = snapshot(folder)
    monkeypatch.chdir(tmp_path)
    assert main([command, "--dataset", "demo", "--checkpoint", str(given)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: checkpoint {given}: truncated ({len(given.read_bytes())} of " + (
        f"{2 * len(given.read_bytes())} bytes)\n"
    )
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no output folder either


@pytest.mark.parametrize("how", ["missing card", "edited card", "garbage weights"])
def test_the_command_line_exits_1_without_a_traceback(tmp_path, how):
    given, words = damage(tmp_path, how)
    before = snapshot(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "rotviz", "evaluate", "--checkpoint", str(given)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and words in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]  # one line
    assert snapshot(tmp_path) == before
