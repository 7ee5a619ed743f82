"""Bootstrap intervals, seed intervals, the paired Wilcoxon test and their formatting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from skimage import data

from rotviz.data.rotation import rotation_batch
from rotviz.scores.stats import (
    Interval,
    accuracy_interval,
    bootstrap_interval,
    compare_paired,
    format_interval,
    format_p,
    goodness_interval,
    paired_difference_interval,
    rotation_correctness,
    seed_interval,
    wilcoxon_p,
)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """Real values: the camera photograph's pixels in [0, 1], shuffled reproducibly."""
    v = data.camera().ravel().astype(np.float64) / 255.0
    return np.random.default_rng(0).permutation(v)


def test_interval_covers_the_mean_and_narrows_with_n(pixels):
    widths = []
    for n in (30, 300, 3000):
        sample = pixels[:n]
        iv = bootstrap_interval(sample)
        assert iv.estimate == pytest.approx(sample.mean())
        assert iv.low <= sample.mean() <= iv.high
        assert iv.n == n
        widths.append(iv.high - iv.low)
    assert widths[0] > widths[1] > widths[2]
    # the width shrinks like 1/sqrt(n): x10 images -> about x0.32 width
    assert widths[2] / widths[1] == pytest.approx(math.sqrt(0.1), rel=0.25)


def test_interval_is_seeded_and_matches_scipy(pixels):
    sample = pixels[:500]
    a, b = bootstrap_interval(sample, seed=3), bootstrap_interval(sample, seed=3)
    assert a == b
    assert bootstrap_interval(sample, seed=4) != a
    ref = scipy.stats.bootstrap(
        (sample,), np.mean, n_resamples=5000, method="percentile", random_state=1
    ).confidence_interval
    mine = bootstrap_interval(sample, n_resamples=5000)
    width = ref.high - ref.low
    assert mine.low == pytest.approx(ref.low, abs=0.05 * width)
    assert mine.high == pytest.approx(ref.high, abs=0.05 * width)
    # the normal-theory interval agrees for a mean of 500 values
    se = sample.std(ddof=1) / math.sqrt(500)
    assert mine.high - mine.low == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_median_statistic_and_nan_values():
    v = np.array([1.0, 2.0, np.nan, 3.0, 100.0])
    iv = bootstrap_interval(v, statistic=np.median)
    assert iv.n == 4 and iv.estimate == 2.5
    assert bootstrap_interval([np.nan]).n == 0
    assert math.isnan(bootstrap_interval([]).estimate)
    one = bootstrap_interval([0.7])
    assert (one.estimate, one.low, one.high) == (0.7, 0.7, 0.7)
    assert goodness_interval([0.2, np.nan, 0.4]).estimate == pytest.approx(0.3)


def test_accuracy_interval_takes_images_as_units():
    correct = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    iv = accuracy_interval(correct, n_resamples=2000)
    assert iv.estimate == pytest.approx(5 / 12)
    assert iv.n == 3  # three images, not twelve samples
    assert 0 <= iv.low <= iv.estimate <= iv.high <= 1


def test_rotation_correctness_follows_the_image_major_order():
    images = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    _, labels = rotation_batch(images, (0, 1, 2, 3))
    logits = torch.nn.functional.one_hot(labels, 4).float()
    logits[5] = torch.tensor([0.0, 0.0, 0.0, 9.0])  # image 1 at rotation 1 predicted wrong
    c = rotation_correctness(logits, labels, 3)
    assert c.shape == (3, 4)
    assert c.sum() == 11 and not c[1, 1]


def test_seed_interval_is_student_t():
    v = [0.80, 0.84, 0.83]
    iv = seed_interval(v)
    half = scipy.stats.t.ppf(0.975, 2) * np.std(v, ddof=1) / math.sqrt(3)
    assert iv.estimate == pytest.approx(np.mean(v))
    assert iv.high - iv.estimate == pytest.approx(half)
    assert seed_interval([0.5]).low == 0.5


def test_wilcoxon_matches_scipy_and_detects_a_shift(pixels):
    a = pixels[:60]
    b = pixels[60:120]
    assert wilcoxon_p(a, b) == pytest.approx(scipy.stats.wilcoxon(a, b).pvalue)
    assert wilcoxon_p(a + 0.2, a) < 1e-6
    assert math.isnan(wilcoxon_p(a, a))
    with pytest.raises(Exception, match="equal lengths"):
        wilcoxon_p(a, b[:10])


def test_paired_difference_and_comparison(pixels):
    a, b = pixels[:200], pixels[:200] * 0.5
    d = paired_difference_interval(a, b)
    assert d.estimate == pytest.approx((a - b).mean())
    assert d.low <= d.estimate <= d.high
    cmp = compare_paired(a, b)
    assert cmp.p_value < 0.001
    row = cmp.row()
    assert row["p (Wilcoxon)"] == "p<0.001"
    assert set(cmp.numbers()) >= {"trained_low", "diff_high", "p_wilcoxon"}


def test_formatting():
    iv = Interval(0.8432, 0.8211, 0.8644, 100)
    assert format_interval(iv) == "84.3 [82.1, 86.4]"
    assert iv.format(scale=1, digits=2) == "0.84 [0.82, 0.86]"
    assert format_interval(Interval(math.nan, math.nan, math.nan, 0)) == "n/a"
    assert format_p(0.0321) == "p=0.032"
    assert format_p(1e-5) == "p<0.001"
    assert format_p(math.nan) == "n/a"
    assert iv.to_dict("acc") == {"acc": 0.8432, "acc_low": 0.8211, "acc_high": 0.8644, "acc_n": 100}
