"""Faithfulness of a map: remove or reveal pixels in the order it ranks them and watch the output.

Deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018) and ROAD (Rong et al., "A
Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022), the parts
that need no network: pixel rankings, the masks of every step, noisy linear imputation, areas
under curves, the combined ROAD score and the paired intervals against a random pixel order.
rotviz.study.faithfulness feeds the masked images to a network.

Conventions (docs/STUDY.md states them for anyone recomputing a figure):

- Ranking: pixels (H x W, shared by the channels) sorted by decreasing map value with a
  stable sort, so ties go to the pixel earlier in raster order (smaller row, then column),
  the tie rule of the box-area threshold. NaN counts as the lowest value. A constant map
  warns and ranks in raster order.
- Steps: step i of K removes (or reveals) round_half_up(i * n / K) pixels, i = 0..K, n =
  H * W, i.e. floor((2 i n + K) / (2 K)); the curve's x is that count over n.
- AUC: the trapezoid rule over those x values in [0, 1]; scores in [0, 1] give an AUC in [0, 1].
- ROAD at p %: MoRF removes the round_half_up(p n / 100) top-ranked pixels, LeRF the same
  number of bottom-ranked ones; combined score = mean over p of (LeRF - MoRF) / 2.
- Noisy linear imputation: every removed pixel equals the weighted mean of its 8 neighbours
  (1/6 for the 4 edge neighbours, 1/12 for the 4 diagonal ones); at the image border only the
  neighbours that exist count and their weights are renormalised to sum 1. All removed
  pixels of a mask are solved together as one sparse linear system with every channel as a
  right-hand side; then Gaussian noise of std 0.01 (normalised units), seeded per mask, is
  added to the removed pixels only. A mask that removes every pixel has no known value to
  spread: its pixels become 0 (the per-channel mean of normalised input) plus the noise.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from rotviz.errors import RotvizError
from rotviz.scores.stats import Comparison, bootstrap_interval, compare_paired

STEPS = 16
PERCENTAGES = (10, 20, 30, 50, 70, 90)
NOISE_STD = 0.01
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0
RANDOM_ORDERS = 5
# scores per image: AUCs of the two curves and the combined ROAD score
MEASURES = ("deletion_auc", "insertion_auc", "road")
MEASURE_NAMES = {"deletion_auc": "deletion AUC", "insertion_auc": "insertion AUC", "road": "ROAD"}
# which direction is better: a lower deletion AUC, a higher insertion AUC and ROAD score
HIGHER_IS_BETTER = {"deletion_auc": False, "insertion_auc": True, "road": True}
# a map is faithful only where it beats the random order on these (deletion has a caveat)
MUST_BEAT_RANDOM = ("insertion_auc", "road")
RANDOM = "random"  # the name of the random-order reference among the sources

# (row offset, column offset, weight) of the 8 neighbours in noisy linear imputation
NEIGHBOURS = (
    (-1, 0, 1 / 6),
    (1, 0, 1 / 6),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (-1, -1, 1 / 12),
    (-1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (1, 1, 1 / 12),
)


@dataclass(frozen=True)
class FaithfulnessConfig:
    """How the curves are measured: steps K, ROAD percentages, imputation noise, the blur of
    the insertion substrate, the random orders averaged for the chance curve, the seed, and
    how many perturbed images one forward pass takes (the memory budget)."""

    steps: int = STEPS
    percentages: tuple[float, ...] = PERCENTAGES
    noise_std: float = NOISE_STD
    blur_kernel: int = BLUR_KERNEL
    blur_sigma: float = BLUR_SIGMA
    random_orders: int = RANDOM_ORDERS
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise RotvizError(f"steps must be at least 1, got {self.steps}")
        pcts = tuple(float(p) for p in self.percentages)
        if not pcts or any(not 0 < p < 100 for p in pcts):
            raise RotvizError(f"ROAD percentages must lie in (0, 100), got {self.percentages}")
        object.__setattr__(self, "percentages", pcts)
        if self.random_orders < 1:
            raise RotvizError("random_orders must be at least 1")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise RotvizError(f"blur kernel must be odd and positive, got {self.blur_kernel}")
        if self.batch_size < 1:
            raise RotvizError("batch_size must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- rankings


def pixel_rankings(maps: Any, warn: bool = True) -> np.ndarray:
    """Flat pixel indices (N, H*W) int64, most relevant first, of maps (N, H, W) or one map (H, W).

    Stable sort on the negated value: ties go to the pixel earlier in raster order; NaN ranks
    last. A constant map warns (its order is the raster order) unless warn is False.
    """
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise RotvizError(f"rank maps (N, H, W) or one map (H, W), got shape {m.shape}")
    flat = np.nan_to_num(m.reshape(len(m), -1), nan=-np.inf)
    if warn and len(flat):
        constant = (flat == flat[:, :1]).all(axis=1)
        if constant.any():
            warnings.warn(
                f"{int(constant.sum())} of {len(flat)} maps are constant: their pixels are "
                "ranked in raster order (row by row), which says nothing about the network",
                UserWarning,
                stacklevel=2,
            )
    return np.argsort(-flat, axis=1, kind="stable")


def random_rankings(
    image_ids: Sequence[int], n_pixels: int, seed: int = 0, order: int = 0
) -> np.ndarray:
    """Random pixel orders (N, n_pixels) int64: image j's is the argsort of
    numpy.random.default_rng([seed, order, image_ids[j]]).random(n_pixels), so an image's
    order does not depend on the batch it is in."""
    out = np.empty((len(image_ids), n_pixels), dtype=np.int64)
    for j, image in enumerate(image_ids):
        u = np.random.default_rng([seed, order, int(image)]).random(n_pixels)
        out[j] = np.argsort(u, kind="stable")
    return out


def pixel_ranks(rankings: np.ndarray) -> np.ndarray:
    """The rank of every pixel (N, H*W) int64 (0 = most relevant): the inverse permutation."""
    r = np.asarray(rankings)
    ranks = np.empty_like(r)
    rows = np.arange(len(r))[:, None]
    ranks[rows, r] = np.arange(r.shape[1])
    return ranks


def round_half_up(numerator: np.ndarray | int, denominator: int) -> np.ndarray:
    """round(numerator / denominator) with halves up, in integers: floor((2 a + b) / (2 b))."""
    return (2 * np.asarray(numerator, dtype=np.int64) + denominator) // (2 * denominator)


def step_counts(n_pixels: int, steps: int = STEPS) -> np.ndarray:
    """Pixels removed (or revealed) after step i = 0..K: round_half_up(i * n / K), (K + 1,) int64."""
    if steps < 1:
        raise RotvizError(f"steps must be at least 1, got {steps}")
    return round_half_up(np.arange(steps + 1) * n_pixels, steps)


def percentage_counts(n_pixels: int, percentages: Sequence[float] = PERCENTAGES) -> np.ndarray:
    """Pixels removed at each ROAD percentage: round_half_up(p * n / 100), (P,) int64.

    Non-integer percentages are taken in hundredths of a percent.
    """
    hundredths = np.rint(np.asarray(percentages, dtype=np.float64) * 100).astype(np.int64)
    return round_half_up(hundredths * n_pixels, 10000)


def step_fractions(n_pixels: int, steps: int = STEPS) -> np.ndarray:
    """The curves' x values: step_counts / n, (K + 1,) float64 from 0 to 1."""
    return step_counts(n_pixels, steps) / n_pixels


def top_masks(rankings: np.ndarray, counts: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """Masks (N, len(counts), H, W) bool: True on the counts[j] top-ranked pixels of each image."""
    ranks = pixel_ranks(rankings)
    c = np.asarray(counts, dtype=np.int64)
    return (ranks[:, None, :] < c[None, :, None]).reshape(len(ranks), len(c), *shape)


def bottom_masks(rankings: np.ndarray, counts: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """Masks (N, len(counts), H, W) bool: True on the counts[j] bottom-ranked pixels of each image."""
    ranks = pixel_ranks(rankings)
    n = ranks.shape[1]
    c = np.asarray(counts, dtype=np.int64)
    return (ranks[:, None, :] >= n - c[None, :, None]).reshape(len(ranks), len(c), *shape)


def step_masks(rankings: np.ndarray, shape: tuple[int, int], steps: int = STEPS) -> np.ndarray:
    """Masks (N, K + 1, H, W) bool of the pixels removed (deletion) or revealed (insertion)
    after each step: the step_counts top-ranked pixels."""
    return top_masks(rankings, step_counts(shape[0] * shape[1], steps), shape)


def road_masks(
    rankings: np.ndarray,
    shape: tuple[int, int],
    percentages: Sequence[float] = PERCENTAGES,
    order: str = "morf",
) -> np.ndarray:
    """Masks (N, P, H, W) bool of the pixels ROAD removes at each percentage: the top p %
    ("morf", most relevant first) or the bottom p % ("lerf", least relevant first)."""
    counts = percentage_counts(shape[0] * shape[1], percentages)
    if order == "morf":
        return top_masks(rankings, counts, shape)
    if order == "lerf":
        return bottom_masks(rankings, counts, shape)
    raise RotvizError(f"ROAD order {order!r}: choose morf or lerf")


# --------------------------------------------------------------------------- imputation


def imputation_system(images: np.ndarray, masks: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """The sparse system A u = b of noisy linear imputation (without the noise) for a batch.

    images (M, C, H, W) float, masks (M, H, W) bool (True = removed). One unknown per removed
    pixel, numbered in raster order through the batch (so the system is block diagonal, one
    block per mask); equation of pixel p: s_p u_p - sum of w_q u_q over removed neighbours
    q = sum of w_q x_q over kept neighbours, where s_p is the sum of the weights of p's
    neighbours inside the image. Returns A (U, U) and b (U, C).
    """
    imgs = np.asarray(images, dtype=np.float64)
    m = np.asarray(masks, dtype=bool)
    if imgs.ndim != 4 or m.shape != (imgs.shape[0], *imgs.shape[2:]):
        raise RotvizError(
            f"imputation needs images (M, C, H, W) and masks (M, H, W), got {imgs.shape}, {m.shape}"
        )
    n_masks, c, h, w = imgs.shape
    flat_mask = m.reshape(-1)
    unknown = np.flatnonzero(flat_mask)  # global pixel index over the batch
    var = np.full(flat_mask.size, -1, dtype=np.int64)
    var[unknown] = np.arange(unknown.size)
    values = imgs.transpose(0, 2, 3, 1).reshape(-1, c)  # (M*H*W, C)
    pix = unknown % (h * w)
    row, col = pix // w, pix % w
    eq = np.arange(unknown.size)
    diag = np.zeros(unknown.size)
    b = np.zeros((unknown.size, c))
    rows_a, cols_a, vals_a = [eq], [eq], []
    for dr, dc, weight in NEIGHBOURS:  # eight offsets, each vectorised over every pixel
        inside = (row + dr >= 0) & (row + dr < h) & (col + dc >= 0) & (col + dc < w)
        nb = unknown[inside] + dr * w + dc
        diag[inside] += weight
        removed = flat_mask[nb]
        rows_a.append(eq[inside][removed])
        cols_a.append(var[nb[removed]])
        vals_a.append(np.full(int(removed.sum()), -weight))
        # an equation appears at most once per offset, so a fancy-index add is a scatter-add
        b[eq[inside][~removed]] += weight * values[nb[~removed]]
    # a pixel without neighbours (a 1 x 1 image) keeps the diagonal 1 and b 0
    diag[diag == 0] = 1.0
    a = sp.csr_matrix(
        (np.concatenate([diag, *vals_a]), (np.concatenate(rows_a), np.concatenate(cols_a))),
        shape=(unknown.size, unknown.size),
    )
    return a, b


def _solve_one(a: sp.csc_matrix, b: np.ndarray) -> np.ndarray:
    """A symmetric, diagonally dominant system solved exactly: SuperLU in symmetric mode
    (minimum-degree ordering of A^T + A, diagonal pivots), every column of b at once."""
    lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    return lu.solve(b)


def solve_blocks(
    a: sp.csr_matrix, b: np.ndarray, sizes: Sequence[int], threads: int | None = None
) -> np.ndarray:
    """Solve a block-diagonal system A u = b block by block (sizes: unknowns per block), each
    block one sparse direct solve with all columns of b at once, blocks on threads (SuperLU
    releases the GIL; default: one per CPU core). The result does not depend on threads.

    One factorisation per block beats one of the whole batch: the fill-in of a batch's
    factor grows faster than its size.
    """
    a = a.tocsr()
    bounds = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))])
    blocks = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
    u = np.zeros_like(b)

    def solve(block: tuple[int, int]) -> None:
        lo, hi = block
        u[lo:hi] = _solve_one(a[lo:hi, lo:hi].tocsc(), b[lo:hi]).reshape(hi - lo, -1)

    workers = min(len(blocks), threads or os.cpu_count() or 1)
    if workers <= 1:
        for block in blocks:
            solve(block)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(solve, blocks))
    return u


def noisy_linear_imputation(
    images: np.ndarray,
    masks: np.ndarray,
    noise_std: float = NOISE_STD,
    seeds: Sequence[Any] | int = 0,
    max_unknowns: int = 1_000_000,
) -> np.ndarray:
    """ROAD's fill of removed pixels: images (M, C, H, W) float with masks (M, H, W) bool
    (True = removed) -> imputed images (M, C, H, W) float32.

    The systems of many masks are built at once (vectorised, up to max_unknowns removed
    pixels per build) and solved one mask at a time, every channel a right-hand side. Noise:
    for mask j, std noise_std Gaussian drawn from numpy.random.default_rng(seeds[j]) with
    shape (C, H, W), added on the removed pixels (an int seed s means seeds s, s + 1, ...).
    A mask that removes every pixel becomes 0 plus the noise there.
    """
    imgs = np.asarray(images, dtype=np.float64)
    m = np.asarray(masks, dtype=bool)
    n_masks = len(imgs)
    seed_list = list(range(seeds, seeds + n_masks)) if isinstance(seeds, int) else list(seeds)
    if len(seed_list) != n_masks:
        raise RotvizError(f"imputation needs one seed per mask, got {len(seed_list)} for {n_masks}")
    flat = m.reshape(n_masks, -1)
    out = imgs.copy()
    full = flat.all(axis=1)
    out[full] = 0.0
    todo = np.flatnonzero(~full & flat.any(axis=1))
    removed = flat.sum(axis=1)
    start = 0
    while start < todo.size:
        stop, total = start, 0
        while stop < todo.size and (stop == start or total + removed[todo[stop]] <= max_unknowns):
            total += removed[todo[stop]]
            stop += 1
        part = todo[start:stop]
        a, b = imputation_system(imgs[part], m[part])
        u = solve_blocks(a, b, removed[part])  # (U, C), raster order of the removed pixels
        filled = out[part].transpose(0, 2, 3, 1)  # (p, H, W, C)
        filled[m[part]] = u
        out[part] = filled.transpose(0, 3, 1, 2)
        start = stop
    if noise_std:
        for j in np.flatnonzero(flat.any(axis=1)):
            noise = np.random.default_rng(seed_list[j]).standard_normal(imgs.shape[1:])
            out[j] += noise_std * noise * m[j][None]
    return out.astype(np.float32)


# --------------------------------------------------------------------------- scores


def curve_auc(scores: Any, fractions: Any) -> np.ndarray:
    """Area under curves scores (..., K + 1) over x = fractions (K + 1,) by the trapezoid rule."""
    y = np.asarray(scores, dtype=np.float64)
    x = np.asarray(fractions, dtype=np.float64)
    return np.sum((y[..., 1:] + y[..., :-1]) * np.diff(x) / 2, axis=-1)


def road_score(morf: Any, lerf: Any) -> np.ndarray:
    """Combined ROAD score: mean over the percentages of (LeRF - MoRF) / 2, from (..., P) outputs."""
    return np.mean((np.asarray(lerf, np.float64) - np.asarray(morf, np.float64)) / 2, axis=-1)


@dataclass
class Curves:
    """One ranking's outputs per image: deletion and insertion curves (N, K + 1) at x =
    fractions, ROAD outputs (N, P) at the percentages for MoRF and LeRF; each as the score
    (probability of the true rotation) and as the accuracy."""

    fractions: np.ndarray
    percentages: tuple[float, ...]
    deletion: np.ndarray
    insertion: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray
    accuracy: dict[str, np.ndarray] = field(default_factory=dict)  # same keys, accuracies

    def scores(self) -> dict[str, np.ndarray]:
        """Per image: deletion_auc, insertion_auc, road (N,) each."""
        return {
            "deletion_auc": curve_auc(self.deletion, self.fractions),
            "insertion_auc": curve_auc(self.insertion, self.fractions),
            "road": road_score(self.morf, self.lerf),
        }

    @staticmethod
    def mean(curves: Sequence[Curves]) -> Curves:
        """The element-wise mean of several rankings' curves (the random orders' chance curve)."""
        first = curves[0]
        avg = {
            k: np.mean([getattr(c, k) for c in curves], axis=0)
            for k in ("deletion", "insertion", "morf", "lerf")
        }
        acc = {k: np.mean([c.accuracy[k] for c in curves], axis=0) for k in first.accuracy}
        return Curves(first.fractions, first.percentages, **avg, accuracy=acc)


def per_image_rows(curves: Mapping[str, Curves]) -> pd.DataFrame:
    """One row per source and image: source, image, deletion_auc, insertion_auc, road,
    morf_<p>, lerf_<p> (scores at each percentage) and the same AUCs of the accuracy."""
    frames = []
    for source, c in curves.items():
        n = len(c.deletion)
        row: dict[str, Any] = {"source": [source] * n, "image": np.arange(n)}
        row.update(c.scores())
        for j, p in enumerate(c.percentages):
            row[f"morf_{p:g}"] = c.morf[:, j]
            row[f"lerf_{p:g}"] = c.lerf[:, j]
        if c.accuracy:
            row["deletion_auc_accuracy"] = curve_auc(c.accuracy["deletion"], c.fractions)
            row["insertion_auc_accuracy"] = curve_auc(c.accuracy["insertion"], c.fractions)
            row["road_accuracy"] = road_score(c.accuracy["morf"], c.accuracy["lerf"])
        frames.append(pd.DataFrame(row))
    return pd.concat(frames, ignore_index=True)


def curve_rows(curves: Mapping[str, Curves], image: int | None = None) -> pd.DataFrame:
    """Each source's curves, the mean over images (or image number image's own): source, curve
    (deletion, insertion, morf, lerf), x (share of pixels, or ROAD percentage), score
    (probability of the true rotation), accuracy."""
    frames = []
    for source, c in curves.items():
        for kind, x in (
            ("deletion", c.fractions),
            ("insertion", c.fractions),
            ("morf", np.asarray(c.percentages)),
            ("lerf", np.asarray(c.percentages)),
        ):
            values = getattr(c, kind)
            y = values.mean(axis=0) if image is None else values[image]
            if not c.accuracy:
                acc = np.full(len(x), np.nan)
            else:
                acc = c.accuracy[kind].mean(axis=0) if image is None else c.accuracy[kind][image]
            frames.append(
                pd.DataFrame({"source": source, "curve": kind, "x": x, "score": y, "accuracy": acc})
            )
    return pd.concat(frames, ignore_index=True)


def against_random(rows: pd.DataFrame, seed: int = 0) -> dict[str, dict[str, Comparison]]:
    """{source: {measure: Comparison}} of every source's per-image scores paired with the
    random order's on the same images (trained = the source, random = the random order)."""
    by = {s: p.sort_values("image") for s, p in rows.groupby("source", sort=False)}
    if RANDOM not in by:
        raise RotvizError("faithfulness comparisons need the random order's rows (source 'random')")
    ref = by[RANDOM]
    return {
        source: {
            m: compare_paired(part[m].to_numpy(float), ref[m].to_numpy(float), seed=seed)
            for m in MEASURES
        }
        for source, part in by.items()
        if source != RANDOM
    }


def beats_random(cmp: Comparison, measure: str) -> bool:
    """Whether the paired difference's interval lies on the better side of 0 for measure."""
    d = cmp.difference
    return bool(d.low > 0) if HIGHER_IS_BETTER[measure] else bool(d.high < 0)


def faithfulness_flag(comparisons: Mapping[str, Comparison]) -> str:
    """ "does not beat the random order on insertion AUC / ROAD" for each of insertion and ROAD
    the source does not beat (paired 95 % interval); "" for a faithful map."""
    lost = [
        MEASURE_NAMES[m]
        for m in MUST_BEAT_RANDOM
        if m in comparisons and not beats_random(comparisons[m], m)
    ]
    return f"does not beat the random order on {' / '.join(lost)}" if lost else ""


def faithfulness_summary(rows: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per source: each measure's mean with its 95 % bootstrap interval over images, the
    paired difference to the random order with its interval and Wilcoxon p, and the flag.

    Columns: source, n, then for each measure m: m, m_low, m_high, m_diff, m_diff_low,
    m_diff_high, m_p; and flag ("" for a faithful map, "reference" for the random order).
    """
    cmps = against_random(rows, seed)
    out = []
    for source, part in rows.groupby("source", sort=False):
        row: dict[str, Any] = {"source": source, "n": int(part["image"].nunique())}
        for m in MEASURES:
            if source == RANDOM:
                iv = bootstrap_interval(part[m].to_numpy(float), seed=seed)
                row.update({m: iv.estimate, f"{m}_low": iv.low, f"{m}_high": iv.high})
                row.update(
                    {
                        f"{m}_diff": 0.0,
                        f"{m}_diff_low": 0.0,
                        f"{m}_diff_high": 0.0,
                        f"{m}_p": math.nan,
                    }
                )
                continue
            c = cmps[source][m]
            row.update(
                {m: c.trained.estimate, f"{m}_low": c.trained.low, f"{m}_high": c.trained.high}
            )
            row.update(
                {
                    f"{m}_diff": c.difference.estimate,
                    f"{m}_diff_low": c.difference.low,
                    f"{m}_diff_high": c.difference.high,
                    f"{m}_p": c.p_value,
                }
            )
        row["flag"] = "reference" if source == RANDOM else faithfulness_flag(cmps[source])
        out.append(row)
    return pd.DataFrame(out)
