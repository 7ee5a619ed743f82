"""Precise BatchNorm statistics and the statistics gap, on real images (the twins: test_twin.py)."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rotviz.config import DataConfig, TrainConfig
from rotviz.data.rotation import normalize, rotation_batch
from rotviz.data.splits import load_split
from rotviz.nets.batchnorm import (
    batch_statistics,
    batchnorm_layers,
    precise_bn,
    sample_indices,
    statistics_gap,
    statistics_warning,
)
from rotviz.nets.models import build_model
from rotviz.training.loop import train

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
ROTS = (0, 1, 2, 3)


@pytest.fixture
def one_thread():
    """One torch thread (as each rank of the DDP job; also faster on a small shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_precise_bn_is_the_equal_weight_average_of_batch_statistics(real_images):
    model = build_model("six_layer", 4, seed=1)
    oracle = copy.deepcopy(model)
    info = precise_bn(model, real_images, ROTS, CPU, n_images=None, batch_size=3)
    assert (info.n_images, info.n_batches, info.n_layers) == (8, 3, 6)

    # PyTorch's own cumulative moving average (momentum None) over the same batches
    for bn in batchnorm_layers(oracle):
        bn.reset_running_stats()
        bn.momentum = None
    oracle.train()
    order = sample_indices(len(real_images), None, seed=0)
    with torch.no_grad():
        for start in range(0, 8, 3):
            x, _ = rotation_batch(torch.from_numpy(real_images[order[start : start + 3]]), ROTS)
            oracle(normalize(x))
    got, want = buffers(model), buffers(oracle)
    assert got.keys() == want.keys() and len(got) == 12
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got["backbone.0.1.running_var"], torch.ones(16))


def test_precise_bn_touches_no_weight_restores_modes_and_is_deterministic(real_images):
    model = build_model("six_layer", 4, seed=0)
    model.backbone[2][1].momentum = 0.3
    model.train()
    model.head.eval()
    params = {k: v.clone() for k, v in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    tracked = model.backbone[0][1].num_batches_tracked.clone()

    precise_bn(model, real_images, ROTS, CPU, n_images=6, batch_size=4, seed=3)
    first = buffers(model)
    precise_bn(model, real_images, ROTS, CPU, n_images=6, batch_size=4, seed=3)

    for k, v in model.named_parameters():
        assert torch.equal(v, params[k]), k  # bitwise
    for k, v in buffers(model).items():
        assert torch.equal(v, first[k]), k  # deterministic, bitwise
    assert [m.training for m in model.modules()] == modes
    assert model.backbone[2][1].momentum == 0.3 and model.backbone[0][1].momentum == 0.1
    assert torch.equal(model.backbone[0][1].num_batches_tracked, tracked)
    precise_bn(model, real_images, ROTS, CPU, n_images=6, batch_size=4, seed=4)
    assert not torch.equal(
        buffers(model)["backbone.0.1.running_mean"], first["backbone.0.1.running_mean"]
    )


def test_sample_indices_are_a_seeded_subset():
    a = sample_indices(100, 20, seed=0)
    assert len(a) == 20 and len(set(a.tolist())) == 20
    assert np.array_equal(a, sample_indices(100, 20, seed=0))
    assert not np.array_equal(a, sample_indices(100, 20, seed=1))
    assert sorted(sample_indices(7, None).tolist()) == list(range(7))
    assert len(sample_indices(7, 50)) == 7  # a split smaller than n_images: all of it


def test_sync_batchnorm_recalibrates_like_batchnorm_and_comes_back(real_images):
    plain = build_model("six_layer", 4, seed=0)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))
    precise_bn(plain, real_images, ROTS, CPU, n_images=None, batch_size=4)
    precise_bn(synced, real_images, ROTS, CPU, n_images=None, batch_size=4)
    assert all(type(bn) is nn.SyncBatchNorm for bn in batchnorm_layers(synced))
    for (k, a), b in zip(buffers(plain).items(), buffers(synced).values(), strict=True):
        assert torch.equal(a, b), k


def test_batch_statistics_use_the_batch_and_leave_running_statistics(real_images):
    model = build_model("six_layer", 4, seed=0).eval()
    before = buffers(model)
    x = normalize(torch.from_numpy(real_images[:4]))
    with torch.no_grad(), batch_statistics(model):
        got = model(x)
    after = buffers(model)
    train_mode = copy.deepcopy(model).train()
    with torch.no_grad():
        want = train_mode(x)
    torch.testing.assert_close(got, want)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training

    acc_batch, acc_running = statistics_gap(model, real_images, ROTS, CPU)
    assert 0 <= acc_batch <= 1 and acc_running == pytest.approx(0.25)  # untrained: one class
    assert all(torch.equal(before[k], v) for k, v in buffers(model).items())


def test_statistics_warning_names_both_accuracies_beyond_ten_points():
    assert statistics_warning(0.96, 0.90) is None
    line = statistics_warning(0.958, 0.252)
    assert "95.8%" in line and "25.2%" in line and "--precise-bn" in line and "\n" not in line
    assert statistics_warning(0.30, 0.45) is not None


@pytest.mark.slow
def test_mobilenet_v2_eval_accuracy_recovers_with_precise_bn(one_thread):
    """Three short epochs at lr 1e-3 on the demo's 152 training images (32 px): the running
    statistics lag far behind (eval mode predicts one rotation), precise BN recovers them."""
    _, split = load_split(DataConfig("demo", image_size=32), "train")
    model = build_model("mobilenet_v2", 4, seed=0)
    cfg = TrainConfig(model="mobilenet_v2", epochs=3, batch_size=8, lr=1e-3)
    train(model, split.images, cfg, CPU)
    params = {k: v.clone() for k, v in model.named_parameters()}
    acc_batch, acc_before = statistics_gap(model, split.images, ROTS, CPU)
    assert acc_batch >= 0.45 and acc_before <= acc_batch - 0.2, (acc_batch, acc_before)
    assert statistics_warning(acc_batch, acc_before) is not None
    precise_bn(model, split.images, ROTS, CPU, n_images=None)
    _, acc_after = statistics_gap(model, split.images, ROTS, CPU)
    assert acc_after >= acc_batch - 0.05, (acc_batch, acc_before, acc_after)
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from rotviz import distributed
    from rotviz.nets.batchnorm import precise_bn
    from rotviz.nets.models import build_model

    torch.set_num_threads(1)
    images = np.load(sys.argv[1])
    with distributed.session("cpu"):
        assert distributed.world_size() == 2
        model = build_model("six_layer", 4, seed=0)
        precise_bn(model, images, (0, 1, 2, 3), torch.device("cpu"), n_images=7, batch_size=2)
        state = {k: v.contiguous() for k, v in model.state_dict().items() if "running" in k}
        save_file(state, f"{sys.argv[2]}/rank{distributed.rank()}.safetensors")
    """
)


@pytest.mark.distributed
def test_ddp_recalibration_equals_one_process(real_images, tmp_path, one_thread):
    """gloo, 2 ranks, 4 batches (2 + 2, the last of one image): every rank holds the one-process statistics."""
    from safetensors.torch import load_file

    np.save(tmp_path / "images.npy", real_images)
    (tmp_path / "entry.py").write_text(DDP_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(port), str(tmp_path / "entry.py")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*cmd, str(tmp_path / "images.npy"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    model = build_model("six_layer", 4, seed=0)
    precise_bn(model, real_images, ROTS, CPU, n_images=7, batch_size=2)
    want = buffers(model)
    for r in (0, 1):
        got = load_file(tmp_path / f"rank{r}.safetensors")
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), (r, k)
