"""Training precision: what --amp auto chooses on a CPU, and the store never mixing precisions."""

import pytest
import torch

from rotviz import runtime as rt
from rotviz.config import DataConfig, TrainConfig, stable_hash
from rotviz.nets.store import CheckpointStore, checkpoint_key
from rotviz.runtime import RunConfig, as_runtime, resolve_amp
from rotviz.training.pipeline import find_checkpoint, train_or_load

CPU = torch.device("cpu")
DATA = DataConfig("demo", max_images=24)
TRAIN = TrainConfig(epochs=1, batch_size=8)


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend this CPU has native bf16 (the choice must not depend on the machine CI runs on)."""
    monkeypatch.setattr(rt, "cpu_has_native_bf16", lambda: True)


def test_auto_takes_bf16_on_a_bf16_cpu_only_for_the_architectures_it_speeds_up(monkeypatch):
    monkeypatch.setattr(rt, "cpu_has_native_bf16", lambda: True)
    assert resolve_amp("auto", CPU, "six_layer") is torch.bfloat16
    assert resolve_amp("auto", CPU, "efficientnet_b0") is None
    assert resolve_amp("auto", CPU, "mobilenet_v2") is None
    assert resolve_amp("auto", CPU) is None  # no architecture (the probe's head): float32
    assert resolve_amp("off", CPU, "six_layer") is None
    run = as_runtime(RunConfig(device="cpu"))
    assert "native bf16" in run.precision_choice("six_layer")
    assert "no faster" in run.precision_choice("efficientnet_b0")
    assert run.card("six_layer")["amp_used"] == "bfloat16"

    monkeypatch.setattr(rt, "cpu_has_native_bf16", lambda: False)
    assert resolve_amp("auto", CPU, "six_layer") is None
    assert "no native bf16" in as_runtime(RunConfig(device="cpu")).precision_choice("six_layer")
    assert resolve_amp("bf16", CPU, "six_layer") is torch.bfloat16  # asked for: given


def test_the_cpu_flags_are_read():
    assert isinstance(rt.cpu_has_native_bf16(), bool)


def test_precision_is_in_the_key_and_float32_keys_are_unchanged():
    old = stable_hash(DATA.identity(), TRAIN, "fp")  # the key before precision was keyed
    assert checkpoint_key(DATA, TRAIN, "fp") == old
    assert checkpoint_key(DATA, TRAIN, "fp", "float32") == old
    assert checkpoint_key(DATA, TRAIN, "fp", "bfloat16") != old
    assert checkpoint_key(DATA, TRAIN, "fp", "bfloat16") != checkpoint_key(
        DATA, TRAIN, "fp", "float16"
    )


def test_the_store_never_serves_one_precision_for_the_other(tmp_path, native_bf16):
    store = CheckpointStore(tmp_path)
    off = RunConfig(device="cpu", amp="off")
    bf16 = RunConfig(device="cpu", amp="bf16")
    auto = RunConfig(device="cpu", amp="auto")  # bf16 for the six-layer net here

    first = train_or_load(DATA, TRAIN, store, off, log=lambda m: None)
    assert not first.from_store and first.checkpoint.card.precision == "float32"
    assert first.checkpoint.card.raw["run"]["amp_used"] == "off"

    logs: list[str] = []
    served = train_or_load(DATA, TRAIN, store, auto, log=logs.append)
    assert served.from_store and served.checkpoint.name == first.checkpoint.name
    assert any("trained in float32" in line for line in logs)
    assert find_checkpoint(DATA, TRAIN, store, bf16)[1] is None

    logs.clear()
    second = train_or_load(DATA, TRAIN, store, bf16, log=logs.append)
    assert not second.from_store and second.checkpoint.card.precision == "bfloat16"
    assert second.checkpoint.name != first.checkpoint.name
    assert any("bfloat16 autocast (--amp bf16)" in line for line in logs)
    # two networks of one recipe now: each explicit request gets its own, auto its own first
    assert find_checkpoint(DATA, TRAIN, store, off)[1].card.precision == "float32"
    assert find_checkpoint(DATA, TRAIN, store, bf16)[1].card.precision == "bfloat16"
    assert find_checkpoint(DATA, TRAIN, store, auto)[1].card.precision == "bfloat16"
    a, b = (c.checkpoint.model.state_dict() for c in (first, second))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # really trained in another precision


def test_a_bf16_network_is_not_served_for_float32(tmp_path, native_bf16):
    store = CheckpointStore(tmp_path)
    train_or_load(DATA, TRAIN, store, RunConfig(device="cpu"), log=lambda m: None)
    assert [c.precision for c in store.cards()] == ["bfloat16"]
    assert find_checkpoint(DATA, TRAIN, store, RunConfig(device="cpu", amp="off"))[1] is None
