"""Model-free baseline maps and the scores that put every goodness figure beside them.

A saliency map that localises objects no better than a centred Gaussian (photographers put
objects in the middle) or an edge detector on the image itself (Adebayo et al., "Sanity Checks
for Saliency Maps", NeurIPS 2018, compare saliency with edge detectors) says nothing about
what the network learned. Baselines are scored with scale-free thresholds only (their values
have no common scale with gradients), and with the pointing game and relevance mass accuracy.

numpy and scikit-image only: nothing here knows about models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rotviz.errors import RotvizError
from rotviz.scores.metrics import (
    BoxArea,
    Percentile,
    Threshold,
    goodness,
    pointing_game,
    relevance_mass_accuracy,
)
from rotviz.scores.stats import Comparison, bootstrap_interval, compare_paired

BASELINES = ("centre", "edges", "noise")
BASELINE_NAMES = {"centre": "centre prior", "edges": "edge map", "noise": "uniform noise"}
# The baselines a trained network must beat for its maps to be about more than the trivial.
MUST_BEAT = ("edges", "centre")
SCALE_FREE: tuple[Threshold, ...] = (Percentile(95.0), BoxArea())
CENTRE_SIGMA = 0.25  # the centre prior's standard deviation, as a fraction of the image side


def centre_prior(size: int, sigma: float = CENTRE_SIGMA) -> np.ndarray:
    """A Gaussian (S, S) float32 centred on the image, standard deviation sigma * S, peak 1."""
    c = (np.arange(size) + 0.5 - size / 2) / (sigma * size)
    return np.exp(-0.5 * (c[:, None] ** 2 + c[None, :] ** 2)).astype(np.float32)


def edge_map(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude (S, S) float32 of a uint8 image (3, S, S) in grayscale."""
    from skimage.color import rgb2gray
    from skimage.filters import sobel

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[0] != 3:
        raise RotvizError(f"edge_map needs an image (3, S, S), got shape {img.shape}")
    return sobel(rgb2gray(img.transpose(1, 2, 0))).astype(np.float32)


def uniform_noise(size: int, seed: int = 0) -> np.ndarray:
    """Uniform noise (S, S) float32 in [0, 1), the same for the same seed."""
    return np.random.default_rng(seed).random((size, size), dtype=np.float32)


def baseline_maps(images: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """Baseline maps (N, S, S) float32 for uint8 images (N, 3, S, S); noise uses seed + image index."""
    if kind not in BASELINES:
        raise RotvizError(f"baseline {kind!r}: choose one of {', '.join(BASELINES)}")
    n, size = len(images), images.shape[-1]
    if kind == "centre":
        return np.broadcast_to(centre_prior(size), (n, size, size)).copy()
    if kind == "edges":
        return np.stack([edge_map(im) for im in images]) if n else np.zeros((0, size, size))
    return (
        np.stack([uniform_noise(size, seed + i) for i in range(n)])
        if n
        else np.zeros((0, size, size), np.float32)
    )


def map_scores(
    maps: np.ndarray, masks: np.ndarray, thresholds: Sequence[Threshold] = SCALE_FREE
) -> pd.DataFrame:
    """One row per image: Q at each threshold (column "q <describe>"), pointing game, RMA.

    maps (N, S, S) >= 0, masks (N, S, S) bool; images without a box score NaN.
    """
    rows = []
    for s, b in zip(maps, masks, strict=True):
        has_box = bool(b.any())
        row: dict[str, float] = {
            f"q {t.describe()}": goodness(t.mask(s, b), b) if has_box else np.nan
            for t in thresholds
        }
        row["pointing"] = float(pointing_game(s, b)) if has_box else np.nan
        row["rma"] = relevance_mass_accuracy(s, b) if has_box else np.nan
        rows.append(row)
    cols = [f"q {t.describe()}" for t in thresholds] + ["pointing", "rma"]
    return pd.DataFrame(rows, columns=cols)


def baseline_rows(
    images: np.ndarray,
    masks: np.ndarray,
    networks: Mapping[str, np.ndarray] | None = None,
    thresholds: Sequence[Threshold] = SCALE_FREE,
    seed: int = 0,
) -> pd.DataFrame:
    """Per image and source ("source" column): map_scores of each baseline and of networks.

    images (N, 3, S, S) uint8; masks (N, S, S) bool; networks: e.g. {"trained": maps,
    "random": maps} scored the same way, so every figure of the table is comparable.
    """
    sources = {**(networks or {}), **{k: baseline_maps(images, k, seed) for k in BASELINES}}
    frames = [
        map_scores(maps, masks, thresholds).assign(source=name, image=np.arange(len(maps)))
        for name, maps in sources.items()
    ]
    return pd.concat(frames, ignore_index=True)


def baseline_summary(rows: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per source: mean of each score with a bootstrap interval over images (fractions).

    Columns: source, then for each score (q ..., pointing, rma) the estimate, _low, _high; n.
    """
    scores = [c for c in rows.columns if c not in ("source", "image")]
    out = []
    for source, part in rows.groupby("source", sort=False):
        row: dict[str, Any] = {"source": source}
        for col in scores:
            iv = bootstrap_interval(part[col].to_numpy(float), seed=seed)
            row.update({col: iv.estimate, f"{col}_low": iv.low, f"{col}_high": iv.high})
            row["n"] = iv.n
        out.append(row)
    return pd.DataFrame(out)


def beats_baselines(
    trained_q: np.ndarray,
    baseline_q: Mapping[str, np.ndarray],
    seed: int = 0,
) -> dict[str, Comparison]:
    """Paired comparison (trained - baseline, per image) of Q for each baseline."""
    return {name: compare_paired(trained_q, q, seed=seed) for name, q in baseline_q.items()}


def baseline_flag(
    comparisons: Mapping[str, Comparison], must_beat: Sequence[str] = MUST_BEAT
) -> str:
    """ "does not beat the edge map / centre prior" for each baseline whose paired difference's
    interval is not above 0; "" when the network beats them all."""
    lost = [
        BASELINE_NAMES[name]
        for name in must_beat
        if name in comparisons and not comparisons[name].difference.low > 0
    ]
    return f"does not beat the {' / '.join(lost)}" if lost else ""


def baseline_comparison(
    rows: pd.DataFrame, threshold: Threshold = SCALE_FREE[0], seed: int = 0
) -> tuple[dict[str, Comparison], str]:
    """The trained network's Q at threshold against each baseline (paired) and the flag text.

    rows: baseline_rows with a "trained" source.
    """
    col = f"q {threshold.describe()}"
    by = {s: p.sort_values("image")[col].to_numpy(float) for s, p in rows.groupby("source")}
    if "trained" not in by:
        raise RotvizError("baseline_comparison needs the trained network's rows (source 'trained')")
    cmps = beats_baselines(by["trained"], {k: by[k] for k in BASELINES if k in by}, seed)
    return cmps, baseline_flag(cmps)
