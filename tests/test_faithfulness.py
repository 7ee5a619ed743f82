"""Faithfulness: rankings, masks, noisy linear imputation, curves on a rotation network, the
command and the study section, each against an independent computation."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from rotviz.scores.faithfulness import (
    Curves,
    FaithfulnessConfig,
    curve_auc,
    faithfulness_flag,
    noisy_linear_imputation,
    percentage_counts,
    pixel_rankings,
    random_rankings,
    road_masks,
    road_score,
    step_counts,
    step_masks,
)
from rotviz.scores.stats import compare_paired
from rotviz.study.faithfulness import (
    faithfulness_result,
    ranking_curves,
    rotation_scores,
    source_curves,
)

NEIGHBOUR_WEIGHTS = {
    (dr, dc): (1 / 12 if dr and dc else 1 / 6) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc
}


def loop_imputation(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Noise-free noisy linear imputation built pixel by pixel (a dense system, no vectorisation)."""
    c, h, w = image.shape
    unknown = [(r, q) for r in range(h) for q in range(w) if mask[r, q]]
    index = {p: i for i, p in enumerate(unknown)}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), c))
    for i, (r, q) in enumerate(unknown):
        for (dr, dc), wgt in NEIGHBOUR_WEIGHTS.items():
            rr, qq = r + dr, q + dc
            if not (0 <= rr < h and 0 <= qq < w):
                continue
            a[i, i] += wgt
            if mask[rr, qq]:
                a[i, index[(rr, qq)]] -= wgt
            else:
                b[i] += wgt * image[:, rr, qq]
    out = image.astype(np.float64).copy()
    if unknown:
        u = np.linalg.solve(a, b)
        for i, (r, q) in enumerate(unknown):
            out[:, r, q] = u[i]
    return out


# --------------------------------------------------------------------------- rankings and masks


def test_ranking_breaks_ties_in_raster_order_and_nan_ranks_last():
    m = np.array([[1.0, 3.0, 3.0], [np.nan, 1.0, 2.0]])
    assert pixel_rankings(m)[0].tolist() == [1, 2, 5, 0, 4, 3]


def test_a_constant_map_warns_and_ranks_in_raster_order():
    with pytest.warns(UserWarning, match="constant"):
        r = pixel_rankings(np.full((2, 4, 4), 0.5))
    assert (r == np.arange(16)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixel_rankings(np.arange(16.0).reshape(1, 4, 4))  # not constant: no warning


def test_step_counts_round_half_up_and_masks_grow_by_rank():
    assert step_counts(10, 4).tolist() == [0, 3, 5, 8, 10]  # 2.5 -> 3, 7.5 -> 8
    assert step_counts(16384, 16).tolist() == [1024 * i for i in range(17)]
    assert percentage_counts(10, (10, 25, 35)).tolist() == [1, 3, 4]  # 2.5 -> 3, 3.5 -> 4
    m = np.arange(16.0).reshape(1, 4, 4)
    masks = step_masks(pixel_rankings(m), (4, 4), 4)
    assert masks.shape == (1, 5, 4, 4) and masks[0, 1].sum() == 4
    assert masks[0, 1].ravel().tolist() == [False] * 12 + [True] * 4  # the 4 highest
    morf = road_masks(pixel_rankings(m), (4, 4), (25,), "morf")[0, 0]
    lerf = road_masks(pixel_rankings(m), (4, 4), (25,), "lerf")[0, 0]
    assert morf.ravel()[-4:].all() and morf.sum() == 4
    assert lerf.ravel()[:4].all() and lerf.sum() == 4


def test_random_orders_do_not_depend_on_the_batch():
    a = random_rankings([0, 1, 2], 50, seed=3)
    b = random_rankings([2], 50, seed=3)
    assert (a[2] == b[0]).all() and not (a[0] == a[1]).all()
    assert sorted(a[0]) == list(range(50))


def test_auc_is_the_trapezoid_rule_and_road_the_mean_half_difference():
    x = np.array([0.0, 0.25, 0.5, 1.0])
    y = np.array([1.0, 0.5, 0.5, 0.0])
    assert curve_auc(y, x) == pytest.approx(0.25 * 0.75 + 0.25 * 0.5 + 0.5 * 0.25)
    assert curve_auc(np.ones(5), np.linspace(0, 1, 5)) == pytest.approx(1.0)
    assert road_score([0.2, 0.4], [0.8, 0.6]) == pytest.approx((0.3 + 0.1) / 2)


# --------------------------------------------------------------------------- imputation


@pytest.mark.parametrize("channels", [1, 3])
def test_imputation_reproduces_a_linear_image_in_the_interior(channels):
    h, w = 20, 24
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    image = np.stack([0.3 * yy - 0.2 * xx + 1.0 + c for c in range(channels)])[None]
    mask = np.random.default_rng(0).random((1, h, w)) < 0.6
    mask[:, [0, -1], :] = False
    mask[:, :, [0, -1]] = False
    out = noisy_linear_imputation(image, mask, noise_std=0.0)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, image, atol=1e-4)


def test_imputation_equals_a_pixel_loop_at_the_borders_and_in_bulk():
    rng = np.random.default_rng(1)
    images = rng.standard_normal((3, 3, 9, 11))
    masks = rng.random((3, 9, 11)) < 0.7
    masks[2] = False  # nothing removed: unchanged
    out = noisy_linear_imputation(images, masks, noise_std=0.0, max_unknowns=60)
    for j in range(3):
        np.testing.assert_allclose(out[j], loop_imputation(images[j], masks[j]), atol=1e-5)


def test_imputation_noise_is_seeded_per_mask_and_only_on_removed_pixels():
    rng = np.random.default_rng(2)
    images = rng.standard_normal((2, 3, 8, 8))
    masks = rng.random((2, 8, 8)) < 0.3
    a = noisy_linear_imputation(images, masks, 0.01, seeds=[5, 6])
    b = noisy_linear_imputation(images[1:], masks[1:], 0.01, seeds=[6])
    clean = noisy_linear_imputation(images, masks, 0.0)
    np.testing.assert_array_equal(a[1], b[0])
    diff = a - clean
    assert np.abs(diff[:, :, ~masks[0]][0]).max() == 0
    expected = 0.01 * np.random.default_rng(5).standard_normal((3, 8, 8)) * masks[0]
    np.testing.assert_allclose(diff[0], expected, atol=1e-6)
    full = noisy_linear_imputation(images[:1], np.ones((1, 8, 8), bool), 0.0)
    assert (full == 0).all()


def test_imputation_matches_pytorch_grad_cam_with_noise_off():
    from pytorch_grad_cam.metrics import road  # requirements.txt pins it: the oracle always runs

    rng = np.random.default_rng(3)
    image = rng.standard_normal((3, 12, 12)).astype(np.float32)
    mask = rng.random((12, 12)) < 0.5
    theirs = road.NoisyLinearImputer(noise=0.0)(
        torch.from_numpy(image), torch.from_numpy((~mask).astype(np.float32))
    )  # their mask: 1 keeps a pixel, 0 imputes it
    ours = noisy_linear_imputation(image[None], mask[None], noise_std=0.0)[0]
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)


# --------------------------------------------------------------------------- curves on networks


class PatchNet(nn.Module):
    """Reads only the centre patch (invariant to quarter turns): logit k = beta * <patch, rot90(T, k)>.
    With T in the centre of an image, the image turned by k has rot90(T, k) there: rotation k."""

    def __init__(self, template: torch.Tensor, size: int, rotations=(0, 1, 2, 3), beta=4.0):
        super().__init__()
        self.rotations = tuple(rotations)
        self.num_rotations = len(self.rotations)
        p = template.shape[-1]
        self.lo = (size - p) // 2
        self.hi = self.lo + p
        self.register_buffer(
            "templates", torch.stack([torch.rot90(template, k, (-2, -1)) for k in self.rotations])
        )
        self.beta = beta
        self.name = "patch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = x[..., self.lo : self.hi, self.lo : self.hi]
        return self.beta * torch.einsum("nchw,mchw->nm", patch, self.templates)


def patch_images(n: int, size: int, channels: int, template: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(n, channels, size, size, generator=g)
    p = template.shape[-1]
    lo = (size - p) // 2
    x[..., lo : lo + p, lo : lo + p] = template
    return x


def loop_curves(model, x, rankings, config):
    """Deletion and insertion with one forward per step and rotation (no batching)."""
    from torchvision.transforms.functional import gaussian_blur

    n, c, h, w = x.shape
    k_ = config.steps
    dele = np.zeros((n, k_ + 1))
    ins = np.zeros((n, k_ + 1))
    for i in range(n):
        blurred = gaussian_blur(x[i : i + 1], [11, 11], [5.0, 5.0])[0]
        for s in range(k_ + 1):
            count = math.floor(s * h * w / k_ + 0.5)
            keep = torch.ones(h * w, dtype=torch.bool)
            keep[torch.as_tensor(rankings[i][:count], dtype=torch.long)] = False
            keep = keep.view(h, w)
            for arr, img in ((dele, x[i] * keep), (ins, torch.where(keep, blurred, x[i]))):
                probs = []
                for label, k in enumerate(model.rotations):
                    with torch.no_grad():
                        logits = model(torch.rot90(img, k, (-2, -1))[None])
                    probs.append(logits.softmax(1)[0, label].item())
                arr[i, s] = np.mean(probs)
    return dele, ins


def test_curves_equal_a_one_forward_per_step_loop():
    from rotviz.nets.models import build_model

    model = build_model("six_layer", 4, seed=0).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    rankings = random_rankings([0, 1], 256, seed=4)
    config = FaithfulnessConfig(steps=4, percentages=(25, 50), batch_size=7)
    curves = ranking_curves(model, x, rankings, config)
    dele, ins = loop_curves(model, x, rankings, config)
    np.testing.assert_allclose(curves.deletion, dele, atol=1e-5)
    np.testing.assert_allclose(curves.insertion, ins, atol=1e-5)
    # ROAD: the imputed images, built pixel by pixel, scored one forward per rotation
    for j, p in enumerate(config.percentages):
        count = math.floor(p * 256 / 100 + 0.5)
        for i in range(2):
            for order, got in (("morf", curves.morf), ("lerf", curves.lerf)):
                removed = np.zeros(256, bool)
                chosen = rankings[i][:count] if order == "morf" else rankings[i][256 - count :]
                removed[chosen] = True
                removed = removed.reshape(16, 16)
                img = loop_imputation(x[i].double().numpy(), removed)
                o = 0 if order == "morf" else 1
                img += (
                    0.01
                    * np.random.default_rng([0, i, o, j]).standard_normal((3, 16, 16))
                    * removed
                )
                t = torch.from_numpy(img).float()
                with torch.no_grad():
                    probs = [
                        model(torch.rot90(t, k, (-2, -1))[None]).softmax(1)[0, k].item()
                        for k in range(4)
                    ]
                assert got[i, j] == pytest.approx(np.mean(probs), abs=1e-4)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_patch_a_network_reads_is_deleted_first_by_its_map(channels):
    size, p = 16, 4
    template = torch.linspace(-1.5, 1.5, channels * p * p).view(channels, p, p) ** 3
    model = PatchNet(template, size)
    x = patch_images(6, size, channels, template)
    patch_map = np.zeros((6, size, size))
    patch_map[:, 6:10, 6:10] = 1.0
    config = FaithfulnessConfig(steps=16, percentages=(10, 50))
    curves = source_curves(model, x.numpy(), {"patch": patch_map}, config, "cpu")
    assert curves["patch"].deletion[:, 0].min() > 0.9  # the network reads its patch
    # 16 of 256 pixels: the first step removes the whole patch, and the output is chance
    np.testing.assert_allclose(curves["patch"].deletion[:, 1:], 0.25, atol=1e-6)
    scores = {s: c.scores() for s, c in curves.items()}
    assert (scores["patch"]["deletion_auc"] < scores["random"]["deletion_auc"]).all()
    assert (scores["patch"]["insertion_auc"] > scores["random"]["insertion_auc"]).all()
    assert (scores["patch"]["road"] > scores["random"]["road"]).all()
    run = faithfulness_result(curves, {"patch": patch_map})
    assert run.summary.set_index("source").loc["patch", "flag"] == ""


def test_a_network_on_a_rotation_subset_is_scored_on_its_rotations_only():
    seen = []

    class Spy(nn.Module):
        rotations, num_rotations = (2, 0), 2

        def forward(self, x):
            seen.append(x.clone())
            return torch.stack([x[:, 0, 0, 0], x[:, 0, -1, -1]], 1) * 3

    x = torch.randn(3, 1, 5, 5)
    p, acc = rotation_scores(Spy(), x, batch_size=4)
    batch = torch.cat(seen)
    assert len(batch) == 6
    for i in range(3):
        assert torch.equal(batch[2 * i], torch.rot90(x[i], 2, (-2, -1)))
        assert torch.equal(batch[2 * i + 1], x[i])
    logits = torch.stack([batch[:, 0, 0, 0], batch[:, 0, -1, -1]], 1) * 3
    truth = logits.softmax(1)[torch.arange(6), torch.tensor([0, 1] * 3)].view(3, 2).mean(1)
    np.testing.assert_allclose(p, truth.double().numpy(), atol=1e-6)
    assert acc.shape == (3,) and set(np.unique(acc)) <= {0.0, 0.5, 1.0}


def test_grey_images_keep_their_masks_shared_by_the_channels():
    from rotviz.study.faithfulness import perturbed_images

    grey = torch.randn(1, 1, 12, 12).repeat(1, 3, 1, 1)
    rankings = random_rankings([0], 144)
    parts = perturbed_images(grey, rankings, FaithfulnessConfig(steps=4, percentages=(30,)), [0])
    removed = parts["deletion"][0, 2] == 0
    assert torch.equal(removed[0], removed[1]) and torch.equal(removed[1], removed[2])
    assert int(removed[0].sum()) == 72
    road = parts["morf"][0, 0]
    changed = road != grey[0]
    assert torch.equal(changed[0], changed[1]) and int(changed[0].sum()) == 43


def test_flag_needs_insertion_and_road_above_the_random_order():
    better = compare_paired([0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.4])
    worse = compare_paired([0.1, 0.2, 0.3, 0.4], [0.6, 0.7, 0.8, 0.9])
    assert faithfulness_flag({"insertion_auc": better, "road": better}) == ""
    assert faithfulness_flag({"insertion_auc": better, "road": worse}).endswith("on ROAD")


def test_mean_curves_average_the_orders():
    a = Curves(
        np.array([0, 1.0]),
        (10.0,),
        np.ones((1, 2)),
        np.ones((1, 2)),
        np.ones((1, 1)),
        np.ones((1, 1)),
    )
    b = Curves(
        np.array([0, 1.0]),
        (10.0,),
        np.zeros((1, 2)),
        np.ones((1, 2)),
        np.zeros((1, 1)),
        np.ones((1, 1)),
    )
    m = Curves.mean([a, b])
    assert m.deletion.tolist() == [[0.5, 0.5]] and m.morf.tolist() == [[0.5]]


# --------------------------------------------------------------------------- command and study


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, real_images):
    """A six-layer net trained 1 epoch on 16 photos at 32 x 32, in its own store."""
    from PIL import Image

    from rotviz.config import DataConfig, TrainConfig
    from rotviz.nets.store import CheckpointStore
    from rotviz.training.pipeline import train_or_load

    root = tmp_path_factory.mktemp("faith")
    photos = root / "photos"
    photos.mkdir()
    for i, img in enumerate(real_images):
        hwc = img.transpose(1, 2, 0)
        Image.fromarray(hwc).save(photos / f"p{i}.png")
        Image.fromarray(hwc[:, ::-1].copy()).save(photos / f"m{i}.png")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROTVIZ_CACHE", str(root / "cache"))
    store = CheckpointStore(root / "checkpoints")
    data = DataConfig("folder", root=str(photos), image_size=32)
    ckpt = train_or_load(
        data, TrainConfig(epochs=1, batch_size=8), store, "cpu", log=lambda m: None
    )
    yield store, data, ckpt.checkpoint
    mp.undo()


def test_faithfulness_command_writes_curves_summary_and_figures(small_store, tmp_path, capsys):
    from rotviz.cli.main import main

    store, data, ckpt = small_store
    out = tmp_path / "faith"
    argv = ["faithfulness", "--checkpoint", ckpt.name, "--store", str(store.root)]
    argv += ["--dataset", "folder", "--root", data.root, "--max-images", "3", "--steps", "4"]
    argv += ["--percentages", "20,60", "--random-orders", "2", "--out", str(out)]
    argv += ["--figure-formats", "png,svg,pdf"]
    assert main(argv) == 0
    rows = pd.read_csv(out / "faithfulness.csv")
    sources = ["trained", "initial twin", "calibrated twin", "centre", "edges", "random"]
    assert list(rows.source.unique()) == sources
    assert len(rows) == 3 * len(sources) and rows.file.notna().all()
    assert rows.deletion_auc.between(0, 1).all() and rows.insertion_auc.between(0, 1).all()
    summary = json.loads((out / "faithfulness_summary.json").read_text())
    by = {r["source"]: r for r in summary["summary"]}
    assert by["random"]["flag"] == "reference" and "insertion_auc_low" in by["trained"]
    assert summary["settings"]["faithfulness"]["steps"] == 4
    for ext in ("png", "svg", "pdf"):
        assert (out / f"faithfulness.{ext}").stat().st_size > 0
    curves = pd.read_csv(out / "faithfulness_curves.csv")
    assert len(curves[(curves.source == "trained") & (curves.curve == "deletion")]) == 5
    text = capsys.readouterr()
    assert "estimate:" in text.err and "insertion AUC" in text.out


def test_faithfulness_methods_table_and_study_section(small_store, tmp_path):
    from rotviz.study.files import study_from_dict
    from rotviz.study.runs import probe_and_sanity_tables

    store, data, ckpt = small_store
    raw = {
        "models": ["six_layer"],
        "twin": "initial",
        "train": {"epochs": 1, "batch_size": 8},
        "datasets": {"folder": {"root": data.root, "image_size": 32}},
        "faithfulness": {
            "images": 2,
            "steps": 2,
            "percentages": [50],
            "method": ["saliency", "gradcam"],
            "twins": False,
        },
    }
    tables = probe_and_sanity_tables(study_from_dict(raw, Path(".")), store, "cpu")
    table = tables["faithfulness folder six_layer"]
    assert list(table.index[:2]) == ["saliency", "gradcam"]
    assert "random order (chance)" in table.index and "ROAD" in table.columns
    numbers = tables["faithfulness folder six_layer numbers"]
    assert set(numbers.method) == {"saliency", "gradcam"} and (numbers.n == 2).all()
    from rotviz.errors import RotvizError

    with pytest.raises(RotvizError, match="unknown keys"):
        study_from_dict({**raw, "faithfulness": {"imgs": 2}}, Path("."))


def test_the_run_puts_q_at_the_box_area_beside_the_curves():
    from rotviz.scores.metrics import BoxArea, goodness
    from rotviz.study.results import faithfulness_table

    rng = np.random.default_rng(5)
    maps = {"trained": rng.random((3, 8, 8)), "edges": rng.random((3, 8, 8))}
    boxes = np.zeros((3, 8, 8), bool)
    boxes[0, 2:5, 2:6] = True
    boxes[1, :3, :3] = True  # image 2 has no box

    def curves(shift):
        k = np.linspace(0, 1, 3)
        return Curves(
            k,
            (50.0,),
            np.tile(1 - k, (3, 1)) + shift,
            np.tile(k, (3, 1)) - shift,
            np.full((3, 1), 0.3 + shift),
            np.full((3, 1), 0.5),
        )

    run = faithfulness_result(
        {"trained": curves(0.0), "edges": curves(0.3), "random": curves(0.2)}, maps, boxes
    )
    q = run.rows.set_index(["source", "image"])["q_box_area"]
    expected = goodness(BoxArea().mask(maps["trained"][0], boxes[0]), boxes[0])
    assert q[("trained", 0)] == pytest.approx(expected)
    assert math.isnan(q[("trained", 2)]) and q.loc["random"].isna().all()
    table = faithfulness_table(run)
    assert table.loc["random order (chance)", "faithful"] == "reference"
    assert table.loc["trained map", "faithful"] == "beats the random order on insertion and ROAD"
    assert table.loc["edge map", "faithful"] == (
        "does not beat the random order on insertion AUC / ROAD"
    )


def test_the_estimate_counts_every_perturbed_copy_at_every_rotation():
    from rotviz.study.faithfulness import forward_passes

    config = FaithfulnessConfig(steps=4, percentages=(10, 50), random_orders=3)
    per = 2 * 5 + 2 * 2
    assert forward_passes(2, 1, config, 4) == 2 * (1 + 3) * per * 4
    assert forward_passes(2, 1, config, 2, with_random=False) == 2 * per * 2


def test_faithfulness_command_with_several_methods_writes_the_methods_table(
    small_store, tmp_path, capsys
):
    from rotviz.cli.main import main

    store, data, ckpt = small_store
    out = tmp_path / "methods"
    argv = ["faithfulness", "--checkpoint", ckpt.name, "--store", str(store.root)]
    argv += ["--dataset", "folder", "--root", data.root, "--max-images", "2", "--steps", "2"]
    argv += ["--percentages", "50", "--random-orders", "1", "--no-twins", "--out", str(out)]
    assert main([*argv, "--method", "saliency,gradcam", "--format", "csv"]) == 0
    table = pd.read_csv(out / "faithfulness_methods.csv")
    assert list(table["method"][:2]) == ["saliency", "gradcam"]
    numbers = pd.read_csv(out / "faithfulness_methods_numbers.csv")
    assert set(numbers.method) == {"saliency", "gradcam"}
    assert (out / "gradcam" / "faithfulness.csv").exists()
    assert "gradcam" in capsys.readouterr().out
    assert main([*argv, "--method", "nonsense"]) == 2


# --------------------------------------------------------------------------- the app's pieces


def test_step_pictures_show_the_deleted_and_inserted_image_of_each_step():
    from rotviz.data.rotation import IMAGENET_MEAN
    from rotviz.study.faithfulness import step_pictures

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    ranked = rng.random((8, 8))
    pics = step_pictures(image, ranked, FaithfulnessConfig(steps=4))
    assert pics["deletion"].shape == pics["insertion"].shape == (5, 8, 8, 3)
    upright = image.transpose(1, 2, 0).astype(int)
    assert np.abs(pics["deletion"][0].astype(int) - upright).max() <= 1  # nothing removed yet
    assert np.abs(pics["insertion"][-1].astype(int) - upright).max() <= 1  # all revealed
    mean_colour = np.round(np.asarray(IMAGENET_MEAN) * 255)
    assert np.abs(pics["deletion"][-1].astype(int) - mean_colour).max() <= 1  # all grey
    # after step 1 of 4, the 16 top-ranked pixels (and only those) are grey
    top = np.zeros(64, bool)
    top[np.argsort(-ranked.ravel(), kind="stable")[:16]] = True
    changed = (np.abs(pics["deletion"][1].astype(int) - upright) > 1).any(-1).ravel()
    assert not changed[~top].any() and changed.sum() >= 12  # a pixel may already be mean-coloured


def test_curve_rows_and_the_plotly_chart_of_one_image():
    from rotviz.report.charts import faithfulness_plotly
    from rotviz.scores.faithfulness import curve_rows, per_image_rows

    rng = np.random.default_rng(0)
    fr = np.linspace(0, 1, 5)

    def curves() -> Curves:
        return Curves(fr, (10.0, 50.0), *(rng.random((2, k)) for k in (5, 5, 2, 2)), accuracy={})

    both = {"trained": curves(), "random": curves()}
    rows = curve_rows(both, image=1)
    one = rows[(rows.source == "trained") & (rows.curve == "insertion")]
    assert one["score"].tolist() == pytest.approx(both["trained"].insertion[1].tolist())
    assert one["accuracy"].isna().all()
    mean = curve_rows(both)
    lerf = mean[(mean.source == "random") & (mean.curve == "lerf")]
    assert lerf["x"].tolist() == [10.0, 50.0]
    assert lerf["score"].tolist() == pytest.approx(both["random"].lerf.mean(0).tolist())
    aucs = per_image_rows(both).query("image == 1").set_index("source")
    fig = faithfulness_plotly(rows, {"trained": "trained map"}, aucs, step=0.25)
    ins_auc = aucs.loc["trained", "insertion_auc"]
    assert any(f"trained map, insertion (AUC {ins_auc:.3f})" in t.hovertemplate for t in fig.data)
    assert len(fig.data) == 2 * 4  # per source: deletion, insertion, MoRF, LeRF
    legend = [t.name for t in fig.data if t.showlegend]
    assert legend == ["trained map", "random"]  # one entry per source
