"""Model-free baselines: centre prior, edge map, noise; their scores and the flag."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.color import rgb2gray
from skimage.filters import sobel

from rotviz.errors import RotvizError
from rotviz.scores.baselines import (
    baseline_comparison,
    baseline_flag,
    baseline_maps,
    baseline_rows,
    baseline_summary,
    beats_baselines,
    centre_prior,
    edge_map,
    map_scores,
    uniform_noise,
)
from rotviz.scores.metrics import Percentile, box_mask


def test_edge_map_is_skimage_sobel_of_the_grayscale_photo():
    photo = data.astronaut()[:128, :128]  # (S, S, 3) uint8
    expected = sobel(rgb2gray(photo))
    got = edge_map(photo.transpose(2, 0, 1))
    assert got.shape == (128, 128)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got.max() > 0.1  # a real photograph has edges


def test_centre_prior_peaks_in_the_middle_and_is_symmetric():
    c = centre_prior(64)
    assert c.shape == (64, 64) and c.dtype == np.float32
    assert c[31:33, 31:33].min() == c.max()
    np.testing.assert_allclose(c, c.T)
    np.testing.assert_allclose(c, c[::-1, ::-1])
    np.testing.assert_allclose(c[0, 0], np.exp(-0.5 * 2 * (31.5 / 16) ** 2), rtol=1e-5)


def test_centre_prior_scores_a_centred_box_above_a_corner_box(real_images):
    size = real_images.shape[-1]
    centred = box_mask([[40, 40, 88, 88]], (size, size))
    corner = box_mask([[0, 0, 48, 48]], (size, size))
    masks = np.stack([centred, corner])
    scores = map_scores(baseline_maps(real_images[:2], "centre"), masks)
    for col in ("q pct:95", "q box-area", "rma"):
        assert scores[col][0] > scores[col][1] + 0.2, col
    assert scores["q box-area"][0] > 0.8  # the most central pixels: a disc inside the box
    assert scores["pointing"].tolist() == [1.0, 0.0]


def test_noise_is_seeded_and_the_kinds_are_checked(real_images):
    np.testing.assert_array_equal(uniform_noise(16, 3), uniform_noise(16, 3))
    assert not np.array_equal(uniform_noise(16, 3), uniform_noise(16, 4))
    maps = baseline_maps(real_images[:3], "noise", seed=5)
    np.testing.assert_array_equal(maps[1], uniform_noise(128, 6))
    with pytest.raises(RotvizError, match="choose one of"):
        baseline_maps(real_images, "sky")


def test_rows_summary_and_flag_on_real_photos(real_images):
    size = real_images.shape[-1]
    masks = np.stack([box_mask([[32, 32, 96, 96]], (size, size))] * len(real_images))
    masks[-1] = False  # one image without a box: NaN, left out
    centre = baseline_maps(real_images, "centre")
    rows = baseline_rows(real_images, masks, {"trained": centre * 2})
    assert set(rows["source"]) == {"trained", "centre", "edges", "noise"}
    assert rows[rows.source == "noise"]["q pct:95"].isna().sum() == 1
    summary = baseline_summary(rows).set_index("source")
    assert summary.loc["centre", "n"] == len(real_images) - 1
    # a "network" equal to the centre prior does not beat it (difference exactly 0)
    cmps, flag = baseline_comparison(rows, Percentile(95))
    assert cmps["centre"].difference.estimate == 0
    assert "centre prior" in flag
    noise_q = rows[rows.source == "noise"]["q pct:95"].to_numpy()
    assert summary.loc["centre", "q pct:95"] > np.nanmean(noise_q)


def test_flag_names_only_the_baselines_not_beaten():
    rng = np.random.default_rng(0)
    base = rng.random(40) * 0.3
    cmps = beats_baselines(base + 0.3, {"edges": base, "centre": base + 0.3})
    assert baseline_flag(cmps) == "does not beat the centre prior"
    cmps = beats_baselines(base + 0.3, {"edges": base, "centre": base})
    assert baseline_flag(cmps) == ""


def _split_of(images: np.ndarray, boxes: list[list[list[float]]]):
    from rotviz.data.preprocess import PreparedSplit
    from rotviz.data.records import Record

    b = [np.asarray(x, np.float32).reshape(-1, 4) for x in boxes]
    return PreparedSplit(
        images=images,
        boxes=b,
        categories=[np.ones(len(x), np.int64) for x in b],
        crowd=[np.zeros(len(x), bool) for x in b],
        records=[Record(f"/x/{i}.png", f"{i}.png", "test", i) for i in range(len(images))],
        skipped=[],
        cache_path=None,
    )


@pytest.mark.parametrize(
    ("lam", "note"),
    [(0.0, "Q equals the boxes' share"), (0.05, ""), (10.0, "no pixel passes")],
)
def test_reach_is_the_direct_count_of_pixels_on_and_its_note(real_images, lam, note):
    from rotviz.scores.metrics import Absolute
    from rotviz.study.goodness import score_rows, split_box_masks, summarize

    split = _split_of(real_images, [[[20, 20, 80, 90]]] * len(real_images))
    masks = split_box_masks(split)
    edges = baseline_maps(real_images, "edges")  # a real map with a wide range of values
    noise = baseline_maps(real_images, "noise")
    s = summarize(score_rows(split, edges, noise, masks, Absolute(lam)))
    assert s.trained.mean_fraction_on == pytest.approx(np.mean(edges >= lam))
    assert s.random.mean_fraction_on == pytest.approx(np.count_nonzero(noise >= lam) / noise.size)
    note_trained = s.trained.reach_note
    assert (note in note_trained) if note else note_trained == ""
    if lam == 0.0:
        rows = score_rows(split, edges, noise, masks, Absolute(lam))
        np.testing.assert_allclose(rows.q_trained, rows.box_fraction)  # Q is the box share
