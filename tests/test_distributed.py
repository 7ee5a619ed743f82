"""Data-parallel runs: torchrun-launched DDP training, sharded studies, a killed rank, the speed knobs.

The multi-process tests (marked ``distributed``) start ``python -m torch.distributed.run
--nproc-per-node 2`` as users do, with gloo on 127.0.0.1. A tiny entry script in tmp_path
wraps ``rotviz.cli.main.main`` to log every checkpoint write and to SIGKILL one rank at a chosen
training step; everything else is the real command line.

Why the DDP weights can equal a single process: BatchNorm in train mode normalises with the
statistics of the samples it sees, and under DDP each rank sees only its share of the
global batch (SyncBatchNorm, which would make them global, has no CPU kernel). The oracle
below is therefore a single process that runs each rank's share through the model
separately ("ghost" BatchNorm), sums the share-weighted losses, keeps rank 0's running
statistics, and steps once; the first test checks that with one share it is exactly
``rotviz.training.loop.train``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rotviz import distributed
from rotviz.config import DataConfig, TrainConfig
from rotviz.data.rotation import normalize, rotation_batch
from rotviz.errors import RotvizError
from rotviz.nets.models import build_model
from rotviz.nets.store import CheckpointStore
from rotviz.runtime import RunConfig, resolve_amp
from rotviz.training.loop import (
    CompiledOrEager,
    check_world,
    epoch_order,
    lr_at,
    make_optimizer,
    train,
)

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")

ENTRY = textwrap.dedent(
    """
    import json, os, signal, sys
    import rotviz.nets.store, rotviz.training.loop
    rank = int(os.environ.get("RANK", "0"))
    writes = os.environ.get("TEST_WRITES")
    if writes:
        original_write = rotviz.nets.store.CheckpointStore.write
        def write(self, name, model, card, partial=False, **kw):
            with open(writes, "a") as f:
                f.write(json.dumps([rank, partial, card.get("epochs_done")]) + "\\n")
            return original_write(self, name, model, card, partial=partial, **kw)
        rotviz.nets.store.CheckpointStore.write = write
    die = os.environ.get("TEST_DIE")  # "RANK:STEP": SIGKILL that rank at its STEP-th batch
    if die and int(die.split(":")[0]) == rank:
        original_batch, calls = rotviz.training.loop.rotation_batch, [0]
        def rotation_batch(*a, **k):
            calls[0] += 1
            if calls[0] == int(die.split(":")[1]):
                os.kill(os.getpid(), signal.SIGKILL)
            return original_batch(*a, **k)
        rotviz.training.loop.rotation_batch = rotation_batch
    from rotviz.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """100 real photo crops from skimage.data as small JPEGs (with --test-fraction 0.85: 20 train, 80 test).

    More than 64 test images, so a sharded evaluation (batches of 64) really uses both ranks.
    """
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    for p, img in enumerate([data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]):
        h, w = img.shape[:2]
        for i in range(25):
            y, x = (i % 5) * h // 10, (i // 5) * w // 10
            crop = Image.fromarray(img[y : y + h // 2, x : x + w // 2]).resize((160, 160))
            crop.save(root / f"p{p}_{i:02d}.jpg", quality=90)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def torchrun(tmp: Path, *args: str, nproc: int = 2, **extra: str) -> subprocess.CompletedProcess:
    """Run the CLI under torchrun (through the hook script) and return the finished process."""
    entry = tmp / "entry.py"
    entry.write_text(ENTRY)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(entry), *args]
    extra.setdefault("ROTVIZ_DIST_TIMEOUT", "120")
    return subprocess.run(cmd, capture_output=True, text=True, env=env(**extra), timeout=400)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rotviz", *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )


def folder_args(root: Path, store: Path, epochs: int, batch: int = 8) -> list[str]:
    return ["--dataset", "folder", "--root", str(root), "--test-fraction", "0.85"] + [
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch),
        "--store",
        str(store),
    ]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def ghost_bn_training(images: np.ndarray, cfg: TrainConfig, world: int) -> torch.nn.Module:
    """One process doing what `world` DDP ranks with per-rank BatchNorm do (see module docstring).

    One thread, as each torchrun worker has (OMP_NUM_THREADS=1): with RMSprop's first steps
    close to lr * sign(gradient), reduction-order noise in near-zero gradients would
    otherwise show up as 1e-3 weight differences.
    """
    with one_thread():
        model = build_model(cfg.model, len(cfg.rotations), cfg.seed).train()
        model.to(memory_format=torch.channels_last)  # the layout the training loop uses
        optimizer = make_optimizer(model, cfg)
        data, m = torch.from_numpy(np.array(images)), len(cfg.rotations)
        steps = check_world(len(data), cfg.batch_size, world)
        for epoch in range(cfg.epochs):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch, cfg)
            order = torch.from_numpy(epoch_order(len(data), cfg.seed, epoch))
            for step in range(steps):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                optimizer.zero_grad()
                for r in range(world):
                    x, y = rotation_batch(data[idx[distributed.rank_slice(len(idx), r, world)]])
                    x = normalize(x).contiguous(memory_format=torch.channels_last)
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    (loss * len(y) / (len(idx) * m)).backward()
                    if r == 0:
                        rank0_buffers = {k: b.clone() for k, b in model.named_buffers()}
                for k, b in model.named_buffers():
                    b.copy_(rank0_buffers[k])
                optimizer.step()
        return model.eval()


# --------------------------------------------------------------------------- single process


def test_sharding_arithmetic():
    assert distributed.split_sizes(7, 2) == [4, 3] and distributed.split_sizes(8, 3) == [3, 3, 2]
    assert [distributed.rank_slice(7, r, 2) for r in (0, 1)] == [slice(0, 4), slice(4, 7)]
    assert distributed.shard_batches(20, 8) == [slice(0, 8), slice(8, 16), slice(16, 20)]
    assert distributed.gather_batches(["a", "b"], 2) == ["a", "b"]
    assert distributed.broadcast(5) == 5 and distributed.all_gather(5) == [5]
    assert distributed.rank_prefix() == "" and distributed.world_size() == 1


def test_world_size_rules():
    assert check_world(15, 8, 2) == 2  # tail of 7 images: 4 + 3 across the ranks
    assert check_world(17, 8, 2) == 2  # tail of 1 image < 2 ranks: dropped
    assert check_world(17, 8, 1) == 3
    with pytest.raises(RotvizError, match="at least 4"):
        check_world(32, 2, 4)


def test_run_config_and_precision():
    assert resolve_amp("auto", CPU) is None and resolve_amp("off", CPU) is None
    assert resolve_amp("bf16", CPU) is torch.bfloat16
    with pytest.raises(RotvizError, match="fp16 needs CUDA"):
        resolve_amp("fp16", CPU)
    with pytest.raises(RotvizError, match="--amp"):
        RunConfig(amp="fp8")
    card = RunConfig(amp="bf16").card(CPU)
    assert card["amp_used"] == "bfloat16" and card["device_used"] == "cpu"


def test_bf16_autocast_trains_on_cpu(real_images):
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-3)
    model = build_model("six_layer", 4, 0)
    state = train(model, real_images, cfg, RunConfig(device="cpu", amp="bf16"))
    assert np.isfinite(state.history[0].loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


def test_compile_failure_falls_back_with_one_warning(monkeypatch):
    def broken(net):
        def call(x):
            raise RuntimeError("no compiler backend here\nsecond line")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    net = torch.nn.Linear(3, 2)
    runner = CompiledOrEager(net, enabled=True)
    x = torch.ones(1, 3)
    with pytest.warns(RuntimeWarning, match="running eagerly") as caught:
        out = runner(x)
        runner(x)
    assert len(caught) == 1 and "second line" not in str(caught[0].message)
    assert torch.equal(out, net(x))


def test_ghost_bn_oracle_with_one_share_is_the_training_loop(real_images):
    cfg = TrainConfig(epochs=2, batch_size=3)
    model = build_model("six_layer", 4, 0)
    with one_thread():
        train(model, real_images, cfg, RunConfig(device="cpu", amp="off"))  # the oracle is float32
    oracle = ghost_bn_training(real_images, cfg, world=1)
    a, b = model.state_dict(), oracle.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-7) for k in a)


# --------------------------------------------------------------------------- torchrun, 2 ranks


@pytest.mark.distributed
def test_ddp_training_equals_one_process_on_the_global_batch(photos, tmp_path):
    from rotviz.data.splits import load_split

    store, writes = tmp_path / "store", tmp_path / "writes.jsonl"
    # the training loop itself is compared: BatchNorm statistics as trained (precise BN's own
    # DDP equality is tested in tests/test_batchnorm.py)
    # and in float32, as the oracle below (--amp auto would train the six-layer net in bf16 on
    # a CPU with native bf16)
    args = [*folder_args(photos, store, 2, batch=7), "--no-precise-bn", "--amp", "off"]
    res = torchrun(tmp_path, "train", *args, TEST_WRITES=str(writes))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "global batch 7 images (28 samples), per rank 4/3 images" in res.stderr
    assert res.stdout.count("test rotation accuracy") == 1  # printed once, by rank 0

    # only rank 0 writes: one partial per finished epoch, then the finished checkpoint
    logged = [json.loads(line) for line in writes.read_text().splitlines()]
    assert logged == [[0, True, 1], [0, True, 2], [0, False, 2]]
    (card,) = [c.raw for c in CheckpointStore(store).cards()]
    assert card["world_size"] == 2 and card["global_batch"] == 7
    assert card["per_rank_batch"] == [4, 3] and card["batch_norm"] == "per rank"
    assert card["run"]["amp_used"] == "off" and [h["world_size"] for h in card["history"]] == [2, 2]
    assert not list(store.glob("*.partial.*")) and not list(store.glob("*.tmp"))

    _, split = load_split(DataConfig("folder", root=str(photos), test_fraction=0.85), "train")
    assert len(split) == 20  # steps of 7, 7, 6 images: uneven shares 4/3, 4/3, 3/3
    cfg = TrainConfig(epochs=2, batch_size=7)
    ddp = CheckpointStore(store).load(card["name"]).model.state_dict()
    same = ghost_bn_training(split.images, cfg, world=2).state_dict()
    single = ghost_bn_training(split.images, cfg, world=1).state_dict()
    worst = max((ddp[k].float() - same[k].float()).abs().max().item() for k in ddp)
    assert worst < 1e-6, f"DDP differs from the per-rank-BN oracle by {worst}"
    # ...and the comparison can fail: global BatchNorm statistics give other weights
    assert max((ddp[k].float() - single[k].float()).abs().max().item() for k in ddp) > 1e-4


@pytest.mark.distributed
def test_sharded_study_writes_exactly_the_single_process_tables(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(
        textwrap.dedent(
            """
            models = ["six_layer"]
            [train]
            epochs = 1
            batch_size = 8
            [datasets.demo]
            max_images = 24
            [goodness]
            dataset = "demo"
            neurons = "all"
            aggregate = "none"
            """
        )
    )
    store = tmp_path / "store"
    single = cli("study", str(study), "--store", str(store), "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = torchrun(
        tmp_path, "study", str(study), "--store", str(store), "--out", str(tmp_path / "two")
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "served from the store" in sharded.stderr
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    tables = ["accuracy", "goodness_embedding", "goodness_rotation"]
    assert names == sorted([f"{t}.md" for t in tables] + [f"{t}_numbers.csv" for t in tables])
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    rotation = (tmp_path / "one" / "goodness_rotation.md").read_text()
    assert "| images scored" in rotation
    assert sharded.stdout == single.stdout  # rank 0 printed the tables once


@pytest.mark.distributed
def test_a_killed_rank_fails_the_job_and_a_rerun_with_another_world_size_resumes(photos, tmp_path):
    store, writes = tmp_path / "store", tmp_path / "writes.jsonl"
    args = folder_args(photos, store, 3)
    # 20 images in batches of 8: 3 steps per epoch; rank 1 dies at its 5th step (epoch 2 of 3)
    dead = torchrun(tmp_path, "train", *args, TEST_WRITES=str(writes), TEST_DIE="1:5")
    assert dead.returncode != 0
    assert "rank" in dead.stderr and "1 (local_rank: 1)" in dead.stderr, dead.stderr[-3000:]
    assert "Signal 9" in dead.stderr or "-9" in dead.stderr
    assert [json.loads(line) for line in writes.read_text().splitlines()] == [[0, True, 1]]
    (partial,) = store.glob("*.partial.json")
    assert json.loads(partial.read_text())["epochs_done"] == 1  # nothing of the dying epoch
    assert not list(store.glob("*.tmp")) and not [
        p for p in store.glob("*.safetensors") if ".partial." not in p.name
    ]

    out_single = tmp_path / "one.json"
    rerun = cli("evaluate", *args, "--json", str(out_single))  # one process now
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "after epoch 1 of 3" in rerun.stderr
    (card,) = [c.raw for c in CheckpointStore(store).cards()]
    assert [h["world_size"] for h in card["history"]] == [2, 1, 1]
    assert card["world_size"] == 1 and not list(store.glob("*.partial.*"))

    # the same evaluation sharded over two ranks gives the same JSON
    out_sharded = tmp_path / "two.json"
    sharded = torchrun(tmp_path, "evaluate", *args, "--json", str(out_sharded))
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert json.loads(out_sharded.read_text()) == json.loads(out_single.read_text())
