"""Similarity of two saliency maps (Spearman rank correlation, SSIM, top-5 % pixel intersection)
and their summaries over images; numpy only.

The measures of the sanity checks (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
2018) and of rotation consistency: each is 1 for identical maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from rotviz.errors import RotvizError
from rotviz.scores.stats import bootstrap_interval

TOP_FRACTION = 0.05
MEASURES = ("spearman", "ssim", "top5")
MEASURE_LABELS = {
    "spearman": "Spearman rank correlation",
    "ssim": "SSIM",
    "top5": "top-5% pixel intersection",
}


def _map(a: object) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()  # type: ignore[union-attr]
    m = np.abs(np.asarray(a, dtype=np.float64))
    if m.ndim != 2:
        raise RotvizError(f"a saliency map must be 2-D (H, W), got shape {m.shape}")
    return m


def _pair(a: object, b: object) -> tuple[np.ndarray, np.ndarray]:
    ma, mb = _map(a), _map(b)
    if ma.shape != mb.shape:
        raise RotvizError(f"maps of different shapes cannot be compared: {ma.shape} vs {mb.shape}")
    return ma, mb


def _ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v, method="average")


def spearman_similarity(a: object, b: object) -> float:
    """Spearman rank correlation of |a| and |b|, maps (H, W); NaN if either map is constant."""
    ma, mb = _pair(a, b)
    ra, rb = _ranks(ma.ravel()), _ranks(mb.ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den > 0 else math.nan


def _unit_scale(m: np.ndarray) -> np.ndarray:
    top = m.max()
    return m / top if top > 0 else m


def ssim_similarity(a: object, b: object) -> float:
    """SSIM (skimage.metrics.structural_similarity, 7x7 window) of |a| and |b| each divided by its max."""
    from skimage.metrics import structural_similarity

    ma, mb = _pair(a, b)
    return float(structural_similarity(_unit_scale(ma), _unit_scale(mb), data_range=1.0))


def top_pixels(m: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Flat indices of the ceil(fraction * H * W) largest pixels of |m| (ties: lower index first)."""
    flat = _map(m).ravel()
    k = max(1, math.ceil(fraction * flat.size))
    return np.argsort(-flat, kind="stable")[:k]


def top_intersection(a: object, b: object, fraction: float = TOP_FRACTION) -> float:
    """Share of the top-fraction pixels of |a| that are also among the top-fraction pixels of |b|."""
    ma, mb = _pair(a, b)
    ta, tb = top_pixels(ma, fraction), top_pixels(mb, fraction)
    return float(np.intersect1d(ta, tb, assume_unique=True).size / ta.size)


def map_similarities(a: object, b: object, fraction: float = TOP_FRACTION) -> dict[str, float]:
    """All three similarities of two maps (H, W): spearman, ssim, top5 (each 1 for identical maps)."""
    return {
        "spearman": spearman_similarity(a, b),
        "ssim": ssim_similarity(a, b),
        "top5": top_intersection(a, b, fraction),
    }


def similarity_rows(
    maps_a: np.ndarray, maps_b: np.ndarray, image_ids: Sequence[object] | None = None
) -> pd.DataFrame:
    """One row per image: image, spearman, ssim, top5 for maps (N, H, W) vs maps (N, H, W)."""
    if len(maps_a) != len(maps_b):
        raise RotvizError(f"{len(maps_a)} maps against {len(maps_b)}: give one of each per image")
    ids = list(range(len(maps_a))) if image_ids is None else list(image_ids)
    rows = [
        {"image": i, **map_similarities(a, b)} for i, a, b in zip(ids, maps_a, maps_b, strict=True)
    ]
    return pd.DataFrame(rows, columns=["image", *MEASURES])


def cascade_summary(rows: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per step: mean similarity (and Q) with 95% bootstrap intervals over images (numeric columns)."""
    out = []
    for (step, name), part in rows.groupby(["step", "randomised"], sort=False):
        rec: dict[str, object] = {"step": step, "randomised": name, "n": len(part)}
        for col in (*MEASURES, "q"):
            iv = bootstrap_interval(part[col], seed=seed)
            rec[col], rec[f"{col}_low"], rec[f"{col}_high"] = iv.estimate, iv.low, iv.high
        out.append(rec)
    return pd.DataFrame(out).sort_values("step", ignore_index=True)
