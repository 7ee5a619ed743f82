"""Tests of rotviz.scores.metrics against hand-computed values and independent oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score

from rotviz.errors import RotvizError
from rotviz.scores.metrics import (
    Absolute,
    BoxArea,
    GoodnessResult,
    MeanGoodness,
    Percentile,
    box_fraction,
    box_mask,
    format_q,
    fraction_on,
    goodness,
    goodness_result,
    goodness_scores,
    mean_goodness,
    parse_threshold,
    pointing_game,
    relevance_mass_accuracy,
    sweep_auc,
    threshold_sweep,
)


def _mask(shape, *cells):
    m = np.zeros(shape, dtype=bool)
    for r, c in cells:
        m[r, c] = True
    return m


# --- box mask --------------------------------------------------------------------------------


def test_box_mask_integer_box_covers_exactly_its_pixels():
    m = box_mask([[1, 0, 3, 2]], (4, 5))
    expected = np.zeros((4, 5), dtype=bool)
    expected[0:2, 1:3] = True
    np.testing.assert_array_equal(m, expected)


def test_box_mask_pixel_centre_half_open_convention():
    # centres 0.5 and 1.5 lie in [0.4, 1.6): columns 0 and 1 of row 0
    np.testing.assert_array_equal(
        box_mask([[0.4, 0, 1.6, 1]], (2, 3)), _mask((2, 3), (0, 0), (0, 1))
    )
    # [0.5, 1.5): centre 0.5 in (closed low end), centre 1.5 out (open high end)
    np.testing.assert_array_equal(box_mask([[0.5, 0.5, 1.5, 1.5]], (2, 2)), _mask((2, 2), (0, 0)))
    # a box between centres covers nothing
    assert not box_mask([[0.6, 0.6, 1.4, 1.4]], (3, 3)).any()


def test_box_mask_adjacent_boxes_do_not_overlap_and_clip_to_image():
    left = box_mask([[0, 0, 2, 4]], (4, 4))
    right = box_mask([[2, 0, 4, 4]], (4, 4))
    assert left.sum() == 8 and right.sum() == 8 and not (left & right).any()
    assert box_mask([[0, 0, 2, 4], [2, 0, 4, 4]], (4, 4)).all()
    assert box_mask([[-5, -5, 100, 1]], (3, 4)).sum() == 4  # row 0 only, clipped
    assert not box_mask(np.zeros((0, 4)), (3, 3)).any()


def test_box_mask_categories_and_crowd():
    boxes = [[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]]
    cats = [17, 18, 17]
    crowd = [False, False, True]
    m = box_mask(boxes, (3, 3), categories=cats, keep_categories=[17])
    np.testing.assert_array_equal(m, _mask((3, 3), (0, 0), (2, 2)))
    m = box_mask(
        boxes, (3, 3), categories=cats, keep_categories={17}, crowd=crowd, include_crowd=False
    )
    np.testing.assert_array_equal(m, _mask((3, 3), (0, 0)))
    m = box_mask(boxes, (3, 3), crowd=crowd, include_crowd=True)
    assert m.sum() == 3
    with pytest.raises(RotvizError, match="categories"):
        box_mask(boxes, (3, 3), keep_categories=[17])


# --- thresholds ------------------------------------------------------------------------------


RAMP = np.arange(16, dtype=np.float64).reshape(4, 4)


def test_absolute_threshold_is_inclusive_and_accepts_float32_tensors():
    m = Absolute(0.5).mask(RAMP / 16)
    assert m.sum() == 8 and m[2, 0] and not m[1, 3]  # 8/16 == 0.5 is kept
    s = torch.tensor([[8e-4, 7e-4], [1.0, 0.0]], dtype=torch.float32, requires_grad=True)
    # compared exactly: float32(7e-4) = 6.99999975e-4 < 7e-4 (numpy would round 7e-4 to float32)
    assert float(np.float32(7e-4)) < 7e-4
    np.testing.assert_array_equal(Absolute(7e-4).mask(s), [[True, False], [True, False]])
    np.testing.assert_array_equal(
        Absolute(float(np.float32(7e-4))).mask(s), [[True, True], [True, False]]
    )


def test_percentile_threshold_counts():
    assert Percentile(75).mask(RAMP).sum() == 4  # cutoff 11.25 -> 12..15
    assert Percentile(50).mask(RAMP).sum() == 8  # cutoff 7.5
    assert Percentile(75).cutoff(RAMP) == pytest.approx(11.25)
    assert Percentile(0).mask(RAMP).all()


def test_percentile_threshold_keeps_all_ties():
    s = np.array([0] * 4 + [1] * 8 + [2] * 4, dtype=float).reshape(4, 4)
    assert Percentile(50).mask(s).sum() == 12  # cutoff 1.0, all eight 1s tie and stay
    assert Percentile(75).mask(s).sum() == 4  # cutoff 1.25


def test_box_area_threshold_top_pixels_and_ties():
    b = _mask((4, 4), (0, 0), (0, 1), (1, 0))
    np.testing.assert_array_equal(BoxArea().mask(RAMP, b), _mask((4, 4), (3, 3), (3, 2), (3, 1)))
    flat = np.ones((4, 4))
    b5 = np.zeros((4, 4), dtype=bool)
    b5[2:, 2:] = True
    b5[0, 0] = True
    expected = _mask((4, 4), (0, 0), (0, 1), (0, 2), (0, 3), (1, 0))  # row-major wins ties
    np.testing.assert_array_equal(BoxArea().mask(flat, b5), expected)
    s = np.array([[5.0, 1.0], [5.0, 5.0]])
    np.testing.assert_array_equal(
        BoxArea().mask(s, _mask((2, 2), (0, 1), (1, 1))), _mask((2, 2), (0, 0), (1, 0))
    )
    assert not BoxArea().mask(RAMP, np.zeros((4, 4), bool)).any()
    with pytest.raises(RotvizError, match="box mask"):
        BoxArea().mask(RAMP)


def test_parse_threshold_forms_and_round_trip():
    assert parse_threshold("8e-4") == Absolute(8e-4)
    assert parse_threshold("abs:8e-4") == Absolute(8e-4)
    assert parse_threshold(" PCT:99.5 ") == Percentile(99.5)
    assert parse_threshold("pct:95") == Percentile(95)
    assert parse_threshold("box-area") == BoxArea()
    for t in (
        Absolute(8e-4),
        Absolute(1e-5),
        Absolute(0.01),
        Percentile(95),
        Percentile(99.5),
        BoxArea(),
    ):
        assert parse_threshold(t.describe()) == t
    assert Absolute(8e-4).describe() == "abs:0.0008"
    assert Percentile(95).describe() == "pct:95"
    for bad in ("foo", "pct:120", "abs:", "abs:nan", ""):
        with pytest.raises(RotvizError):
            parse_threshold(bad)


# --- goodness --------------------------------------------------------------------------------


def test_goodness_hand_computed_4x4():
    b = np.zeros((4, 4), bool)
    b[0:2, 0:2] = True
    sp = np.zeros((4, 4), bool)
    sp[1:3, 1:3] = True
    # intersection 1 (pixel (1,1)); sum B = 4; Sp outside B = 3 -> 1/7
    assert goodness(sp, b) == pytest.approx(1 / 7)
    assert goodness(b, b) == 1.0
    assert goodness(~b, b) == 0.0
    assert goodness(np.zeros((4, 4)), b) == 0.0  # empty map with boxes is defined
    assert math.isnan(goodness(sp, np.zeros((4, 4), bool)))


def test_goodness_soft_map_uses_formula_as_written():
    b = _mask((4, 4), (0, 0))
    sp = np.zeros((4, 4))
    sp[0, 0], sp[3, 3] = 0.5, 1.0
    assert goodness(sp, b) == pytest.approx(0.5 / (1 + 1))


def test_goodness_equals_iou_oracle():
    rng = np.random.default_rng(0)
    for _ in range(20):
        sp = rng.random((16, 16)) < rng.random()
        b = rng.random((16, 16)) < 0.3
        expected = jaccard_score(b.ravel(), sp.ravel(), zero_division=0.0)
        assert goodness(sp, b) == pytest.approx(expected)
        assert goodness(torch.from_numpy(sp), torch.from_numpy(b)) == pytest.approx(expected)


def test_goodness_shape_mismatch_is_user_error():
    with pytest.raises(RotvizError, match="shapes differ"):
        goodness(np.zeros((4, 4)), np.zeros((4, 5)))


def test_goodness_result_counts_and_display():
    b = np.zeros((4, 4), bool)
    b[0:2, 0:2] = True
    r = goodness_result(RAMP, b, Percentile(75))  # on: bottom row (12..15)
    assert r == GoodnessResult(q=0.0, intersection=0, box_pixels=4, map_pixels=4, total_pixels=16)
    assert r.defined and r.fraction_on == 0.25 and r.box_fraction == 0.25
    assert r.display() == "0.0%"
    r = goodness_result(RAMP, np.zeros((4, 4), bool), Absolute(0.0))
    assert not r.defined and r.display() == "n/a (no boxes)"
    assert format_q(0.287) == "28.7%" and format_q(float("nan")) == "n/a (no boxes)"


def test_mean_goodness_drops_undefined_and_never_returns_nan():
    assert mean_goodness([0.5, float("nan"), 0.25]) == MeanGoodness(0.375, 2, 1)
    empty = mean_goodness([float("nan"), float("nan")])
    assert empty == MeanGoodness(None, 0, 2) and "n/a" in empty.display()
    assert mean_goodness([]) == MeanGoodness(None, 0, 0)
    maps = np.stack([RAMP, RAMP, RAMP])
    masks = np.stack([np.eye(4, dtype=bool), np.zeros((4, 4), bool), np.ones((4, 4), bool)])
    results = goodness_scores(maps, masks, Absolute(8.0))
    m = mean_goodness(results)
    # eye: on = 8..15 (8 px), diag in it: 10, 15 -> 2/(4+6); all-ones: 8/16
    assert m.mean == pytest.approx((0.2 + 0.5) / 2)
    assert (m.n_used, m.n_undefined) == (2, 1)
    assert not any(isinstance(v, float) and math.isnan(v) for v in m)
    assert m.display() == "35.0% (n=2, 1 without boxes)"


# --- sweeps ----------------------------------------------------------------------------------


def _two_level_case():
    b = np.zeros((4, 4), bool)
    b[0:2, 0:2] = True
    s = np.where(b, 1.0, 0.01)
    return s, b


def test_threshold_sweep_hand_computed_and_auc():
    s, b = _two_level_case()
    df = threshold_sweep([s], [b], lambdas=[1e-3, 1e-1, 1.0, 10.0], percentiles=[50, 75, 80])
    assert list(df.columns) == ["kind", "value", "mean_q", "n"]
    absolute = df[df.kind == "absolute"]
    np.testing.assert_allclose(absolute.mean_q, [0.25, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(df[df.kind == "percentile"].mean_q, [0.25, 1.0, 1.0])
    assert (df.n == 1).all()
    # absolute: x = log10 = [-3,-1,0,1]; area 1.25 + 1 + 0.5 = 2.75 over range 4
    assert sweep_auc(df) == pytest.approx(2.75 / 4)
    assert sweep_auc(df, kind="absolute") == pytest.approx(0.6875)
    # percentile: x = [.5,.75,.8]; area 0.15625 + 0.05 over range 0.3
    assert sweep_auc(df, kind="percentile") == pytest.approx(0.20625 / 0.3)
    assert sweep_auc(df[df.kind == "percentile"]) == pytest.approx(0.20625 / 0.3)
    assert sweep_auc(df[df.value == 0.1]) == 1.0


def test_threshold_sweep_matches_mask_by_mask_oracle():
    rng = np.random.default_rng(1)
    maps = rng.random((5, 12, 12)).astype(np.float32) ** 3
    masks = np.stack([box_mask([[i, i, i + 6, i + 5]], (12, 12)) for i in range(5)])
    masks[2] = False
    lams, pcts = [1e-3, 0.05, 0.2, 0.5], [50, 80, 95, 99]
    df = threshold_sweep(torch.from_numpy(maps), masks, lambdas=lams, percentiles=pcts)
    assert df.attrs["n_undefined"] == 1 and (df.n == 4).all()
    for kind, values, cls in (("absolute", lams, Absolute), ("percentile", pcts, Percentile)):
        got = df[df.kind == kind].mean_q.to_numpy()
        want = [mean_goodness(goodness_scores(maps, masks, cls(v))).mean for v in values]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_threshold_sweep_defaults_and_monotone_behaviour():
    yy, xx = np.mgrid[0:32, 0:32]
    blob = np.exp(-((yy - 10.0) ** 2 + (xx - 12.0) ** 2) / 20.0)  # salient object at (10, 12)
    b = box_mask([[7, 7, 18, 14]], (32, 32))  # ~7% of the image around it
    df = threshold_sweep([blob], [b])
    assert (df.kind == "absolute").sum() == 36 and (df.kind == "percentile").sum() == 50
    np.testing.assert_allclose(df[df.kind == "absolute"].value, np.logspace(-7, 0, 36))
    pct = df[df.kind == "percentile"].set_index("value").mean_q
    assert pct[50] < pct[70] < pct[90]  # tighter maps fit the box better until |S_p| ~ |B|
    assert pct[50] == pytest.approx(b.sum() / (32 * 32 / 2), rel=0.05)
    assert 0.0 <= sweep_auc(df) <= 1.0


def test_threshold_sweep_without_any_box_is_user_error():
    with pytest.raises(RotvizError, match="none of the 2 images"):
        threshold_sweep(np.ones((2, 4, 4)), np.zeros((2, 4, 4), bool))


# --- RMA, pointing game, fractions -----------------------------------------------------------


def test_relevance_mass_accuracy_hand_computed():
    s = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.eye(2, dtype=bool)
    assert relevance_mass_accuracy(s, b) == pytest.approx(5 / 10)
    assert relevance_mass_accuracy(s, np.ones((2, 2))) == 1.0
    assert math.isnan(relevance_mass_accuracy(s, np.zeros((2, 2))))
    assert math.isnan(relevance_mass_accuracy(np.zeros((2, 2)), b))
    with pytest.raises(RotvizError, match="non-negative"):
        relevance_mass_accuracy(-s, b)


def test_pointing_game_hand_computed_and_ties():
    s = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert pointing_game(s, _mask((2, 2), (1, 1))) is True
    assert pointing_game(s, _mask((2, 2), (0, 0), (1, 0))) is False
    ties = np.array([[4.0, 0.0], [0.0, 4.0]])
    assert pointing_game(ties, _mask((2, 2), (1, 1))) is True  # any maximum inside counts
    assert pointing_game(ties, _mask((2, 2), (0, 1))) is False
    assert math.isnan(pointing_game(s, np.zeros((2, 2))))


def test_fractions():
    sp = _mask((4, 4), (0, 0), (1, 1), (2, 2), (3, 3))
    assert fraction_on(sp) == 0.25 and box_fraction(sp) == 0.25
    assert fraction_on(np.full((2, 2), 0.5)) == 0.5
