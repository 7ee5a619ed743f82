"""Saliency sanity checks: similarity measures against scipy/skimage, cascading and data randomisation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.ndimage import uniform_filter

from rotviz.attribution.gradients import saliency_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import DataConfig, TrainConfig
from rotviz.data.rotation import normalize
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Card, Checkpoint
from rotviz.nets.models import build_model
from rotviz.report.figures import cascading_figure
from rotviz.scores.similarity import (
    MEASURES,
    cascade_summary,
    map_similarities,
    similarity_rows,
    spearman_similarity,
    ssim_similarity,
    top_intersection,
)
from rotviz.study.sanity import (
    cascading_models,
    cascading_randomization,
    data_randomization,
    image_sanity,
)

CPU = torch.device("cpu")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def maps(real_images) -> np.ndarray:
    """Saliency maps (8, 128, 128) of real photographs under two untrained nets (4 each)."""
    x = normalize(torch.from_numpy(real_images))
    a = saliency_maps(build_model("six_layer", 4, 0), x[:4]).numpy()
    b = saliency_maps(build_model("six_layer", 4, 1), x[4:]).numpy()
    return np.concatenate([a, b])


def fake_checkpoint(model, seed: int = 0, shuffle: bool = False) -> Checkpoint:
    cfg = TrainConfig(seed=seed, shuffle_labels=shuffle)
    card = {"train_config": dataclasses.asdict(cfg), "key": f"k{seed}{shuffle}", "name": "t"}
    card.update(dataset="demo", data_config=dataclasses.asdict(DataConfig("demo")))
    return Checkpoint(model.eval(), Card(card), Path("none"))


def ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 SSIM written out: 7x7 uniform window, sample covariance, data range 1."""
    w, c1, c2 = 7, 0.01**2, 0.03**2
    norm = w * w / (w * w - 1)
    ux, uy = uniform_filter(x, w), uniform_filter(y, w)
    vx = norm * (uniform_filter(x * x, w) - ux * ux)
    vy = norm * (uniform_filter(y * y, w) - uy * uy)
    vxy = norm * (uniform_filter(x * y, w) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s[3:-3, 3:-3].mean())


def test_a_map_is_identical_to_itself(maps):
    for m in maps[:3]:
        sims = map_similarities(m, m)
        assert sims == {"spearman": pytest.approx(1.0), "ssim": pytest.approx(1.0), "top5": 1.0}
        # only absolute values count: a sign flip is the same map
        assert spearman_similarity(m, -m) == pytest.approx(1.0)


def test_spearman_matches_scipy(maps):
    for a, b in [(maps[0], maps[1]), (maps[2], maps[6]), (maps[4], maps[7])]:
        ref = scipy.stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic
        assert spearman_similarity(a, b) == pytest.approx(ref, abs=1e-9)
    assert np.isnan(spearman_similarity(np.ones((8, 8)), maps[0][:8, :8]))


def test_ssim_matches_the_written_out_formula(maps):
    for a, b in [(maps[0], maps[1]), (maps[3], maps[5])]:
        ref = ssim_reference(a / a.max(), b / b.max())
        assert ssim_similarity(a, b) == pytest.approx(ref, abs=1e-6)
        assert ssim_similarity(a, b) < 0.99


def test_top_intersection_matches_a_percentile_threshold(maps):
    a, b = maps[0].astype(np.float64), maps[1].astype(np.float64)
    k = int(np.ceil(0.05 * a.size))
    ta = np.abs(a) >= np.sort(np.abs(a).ravel())[-k]
    tb = np.abs(b) >= np.sort(np.abs(b).ravel())[-k]
    assert ta.sum() == k and tb.sum() == k  # continuous maps: no ties at the cut
    assert top_intersection(a, b) == pytest.approx((ta & tb).sum() / k)
    ramp = np.arange(100.0).reshape(10, 10)
    assert top_intersection(ramp, ramp.max() - ramp) == 0.0  # top of one is the bottom of the other
    with pytest.raises(RotvizError, match="shapes"):
        map_similarities(maps[0], maps[0][:64])


def test_similarity_rows(maps):
    df = similarity_rows(maps[:4], maps[4:], image_ids=list("abcd"))
    assert list(df.columns) == ["image", *MEASURES]
    assert df["image"].tolist() == list("abcd")
    assert df.loc[1, "spearman"] == pytest.approx(spearman_similarity(maps[1], maps[5]))


def test_cascading_models_reinitialise_from_the_head_down():
    trained = build_model("six_layer", 4, 7)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    twin = build_model("six_layer", 4, 0).eval()  # the initial twin of seed 0
    steps = list(cascading_models(trained, twin))
    assert [s[0] for s in steps] == list(range(8)) and steps[1][1] == "head"
    assert steps[-1][1] == "block 1"
    for n, _, model in steps:
        for i, (mb, tb, ob) in enumerate(
            zip(model.blocks(), twin.blocks(), trained.blocks(), strict=True)
        ):
            ref = tb if i >= 7 - n else ob
            for (k, v), (_, r) in zip(
                mb.state_dict().items(), ref.state_dict().items(), strict=True
            ):
                assert torch.equal(v, r), (n, i, k)
    for k, v in trained.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k])


def test_cascade_on_real_images_embedding_layer(real_images):
    ckpt = fake_checkpoint(build_model("six_layer", 4, 5), seed=0)
    sal = SaliencyConfig(layer="embedding", neurons="topk:2", aggregate="none")
    res = cascading_randomization(ckpt, real_images[:3], sal, CPU, keep_maps=True)
    assert res.maps.shape == (8, 3, 128, 128)
    s = cascade_summary(res.rows)
    assert s["step"].tolist() == list(range(8))
    # step 0 is the trained map itself; the head does not enter the embedding layer
    for col in MEASURES:
        assert s.loc[0, col] == pytest.approx(1.0)
        assert s.loc[1, col] == pytest.approx(1.0)
        assert s.loc[7, col] < 0.9
    fig = cascading_figure(res.rows, image=0)
    assert fig.axes[0].get_xlabel().startswith("blocks randomised")


def test_cascade_q_and_image_sanity(real_images):
    ckpt = fake_checkpoint(build_model("six_layer", 4, 3), seed=0)
    from rotviz.scores.metrics import Percentile

    mask = np.zeros((128, 128), bool)
    mask[30:90, 40:100] = True
    sal = SaliencyConfig(layer="rotation", aggregate="none")
    sims, rows = image_sanity(ckpt, real_images[1], sal, CPU, mask, Percentile(90))
    assert list(sims.index) == ["trained vs random twin (initial statistics)"]
    assert rows["q"].between(0, 1).all() and len(rows) == 8
    assert rows.loc[rows.step == 7, "spearman"].item() == pytest.approx(sims["spearman"].item())


def test_data_randomisation_needs_a_shuffled_checkpoint(real_images):
    a = fake_checkpoint(build_model("six_layer", 4, 1))
    with pytest.raises(RotvizError, match="shuffle-labels"):
        data_randomization(a, a, real_images[:1], SaliencyConfig(), CPU)
    b = fake_checkpoint(build_model("six_layer", 4, 2), shuffle=True)
    df = data_randomization(a, b, real_images[:2], SaliencyConfig(aggregate="none"), CPU)
    assert len(df) == 2 and (df["spearman"] < 1).all()


@pytest.mark.slow
def test_cascading_randomisation_of_a_six_layer_net_trained_on_lfw(tmp_path):
    """Trained on 300 real LFW images: randomising more blocks moves the map further away."""
    root = SHARED / "lfw"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    from rotviz.nets.store import CheckpointStore
    from rotviz.training.pipeline import load_split, train_or_load

    data = DataConfig("lfw", root=str(root), max_images=300)
    store = CheckpointStore(tmp_path / "store")
    train_cfg = TrainConfig(epochs=3, lr=1e-3)
    ckpt = train_or_load(data, train_cfg, store, CPU, log=lambda m: None).checkpoint
    assert ckpt.card.test_accuracy("trained") > 0.4  # it learned something
    _, test = load_split(data, "test")
    images = np.asarray(test.images[:6])
    sal = SaliencyConfig(layer="rotation", aggregate="none")
    s = cascade_summary(cascading_randomization(ckpt, images, sal, CPU).rows)
    for col in MEASURES:
        values = s[col].to_numpy()
        assert values[-1] < values[1] < values[0] + 1e-9, (col, values)
        trend = scipy.stats.spearmanr(s["step"][1:], values[1:]).statistic
        assert trend < -0.5, (col, values)
    shuffled = train_or_load(
        data, dataclasses.replace(train_cfg, shuffle_labels=True), store, CPU, log=lambda m: None
    ).checkpoint
    df = data_randomization(ckpt, shuffled, images, sal, CPU)
    assert df["spearman"].mean() < 0.95
