"""Scores of saliency maps against box masks: goodness Q, thresholds, sweeps, RMA, pointing game.

Pure numpy (torch tensors are accepted and converted); nothing here knows about models.

Conventions used throughout:

- A box is (x0, y0, x1, y1) in pixels of the (resized) image, x to the right, y down.
  Pixel (r, c) covers the square [c, c+1) x [r, r+1); its centre is (c + 0.5, r + 0.5).
  The pixel is inside the box when x0 <= c + 0.5 < x1 and y0 <= r + 0.5 < y1 (half-open,
  so a box with integer corners covers exactly (x1 - x0) x (y1 - y0) pixels and two boxes
  that share an edge never share a pixel). A box narrower than a pixel may cover no centre
  and then contributes nothing.
- Saliency maps are converted to float64 before any comparison, so a float32 map and a
  Python float threshold compare exactly (numpy 2 would otherwise round the threshold to
  float32).
- Undefined scores are NaN at the per-image level; `mean_goodness` drops them and reports
  how many were dropped, so tables never print NaN.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from rotviz.errors import RotvizError

# The one sweep grid (CLI, study files and app): 5 values per decade from 1e-7 to 1, wide enough
# for the tiny gradients of random twins.
DEFAULT_LAMBDAS: np.ndarray = np.logspace(-7, 0, 36)
DEFAULT_PERCENTILES: np.ndarray = np.arange(50, 100, dtype=np.float64)
NO_BOX_TEXT = "n/a (no boxes)"


def _to_numpy(x: Any) -> np.ndarray:
    """Any array-like (numpy, list, torch tensor on any device, with or without grad) as numpy."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_map(s: Any, name: str = "saliency") -> np.ndarray:
    """A 2-D float64 map (H, W)."""
    arr = _to_numpy(s).astype(np.float64, copy=False)
    if arr.ndim != 2:
        raise RotvizError(f"{name} must be a 2-D (H, W) map, got shape {arr.shape}.")
    return arr


def _as_mask(b: Any, name: str = "box mask") -> np.ndarray:
    """A 2-D bool mask (H, W); nonzero means on."""
    arr = _to_numpy(b)
    if arr.ndim != 2:
        raise RotvizError(f"{name} must be a 2-D (H, W) mask, got shape {arr.shape}.")
    return arr.astype(bool, copy=False)


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise RotvizError(f"{what}: shapes differ ({a.shape} vs {b.shape}); resize them to match.")


# ---------------------------------------------------------------------------------------------
# Box mask
# ---------------------------------------------------------------------------------------------


def box_mask(
    boxes: Any,
    shape: tuple[int, int],
    categories: Sequence[int] | None = None,
    keep_categories: Iterable[int] | None = None,
    crowd: Sequence[bool] | None = None,
    include_crowd: bool = True,
) -> np.ndarray:
    """Box mask B (H, W) bool: True at pixels whose centre lies in any kept box (K, 4) xyxy.

    Pixel (r, c) is inside box (x0, y0, x1, y1) when x0 <= c + 0.5 < x1 and
    y0 <= r + 0.5 < y1. keep_categories keeps only boxes whose category (parallel to
    boxes) is listed; include_crowd=False drops boxes flagged in crowd (parallel to boxes).
    """
    h, w = (int(v) for v in shape)
    arr = _to_numpy(boxes).astype(np.float64).reshape(-1, 4)
    keep = np.ones(len(arr), dtype=bool)
    if keep_categories is not None:
        if categories is None:
            raise RotvizError(
                "box_mask: keep_categories was given but the boxes have no categories; "
                "pass categories (one per box) or drop keep_categories."
            )
        cats = _to_numpy(categories).reshape(-1)
        if len(cats) != len(arr):
            raise RotvizError(f"box_mask: {len(cats)} categories for {len(arr)} boxes.")
        keep &= np.isin(cats, np.asarray(list(keep_categories)))
    if not include_crowd and crowd is not None:
        flags = _to_numpy(crowd).astype(bool).reshape(-1)
        if len(flags) != len(arr):
            raise RotvizError(f"box_mask: {len(flags)} crowd flags for {len(arr)} boxes.")
        keep &= ~flags
    mask = np.zeros((h, w), dtype=bool)
    xc = np.arange(w) + 0.5
    yc = np.arange(h) + 0.5
    for x0, y0, x1, y1 in arr[keep]:
        cols = (xc >= x0) & (xc < x1)
        rows = (yc >= y0) & (yc < y1)
        mask |= rows[:, None] & cols[None, :]
    return mask


# ---------------------------------------------------------------------------------------------
# Thresholds (denoising S -> S_p)
# ---------------------------------------------------------------------------------------------


class Threshold(ABC):
    """Turns a saliency map into the binary map S_p; one interface for all kinds."""

    kind: str

    @abstractmethod
    def mask(self, saliency: Any, box_mask: Any = None) -> np.ndarray:
        """S_p (H, W) bool from a saliency map (H, W); box_mask (H, W) only used by BoxArea."""

    @abstractmethod
    def describe(self) -> str:
        """Short text for tables and headers; parse_threshold(describe()) rebuilds it."""


@dataclass(frozen=True)
class Absolute(Threshold):
    """S_p = S >= lam: the study's denoising with an absolute threshold lambda."""

    lam: float
    kind = "absolute"

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.lam)):
            raise RotvizError(f"Absolute threshold must be a finite number, got {self.lam!r}.")

    def mask(self, saliency: Any, box_mask: Any = None) -> np.ndarray:
        """S_p (H, W) bool: pixels with S >= lam."""
        return _as_map(saliency) >= float(self.lam)

    def describe(self) -> str:
        """E.g. "abs:0.0008"."""
        return f"abs:{float(self.lam)!r}"


@dataclass(frozen=True)
class Percentile(Threshold):
    """S_p = S >= the p-th percentile of the map (numpy's linear interpolation); scale-free.

    Ties at the threshold are all kept, so S_p may hold more than (100 - p)% of the pixels.
    """

    p: float
    kind = "percentile"

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.p) <= 100.0:
            raise RotvizError(f"Percentile must be between 0 and 100, got {self.p!r}.")

    def cutoff(self, saliency: Any) -> float:
        """The value t with S_p = S >= t."""
        return float(np.percentile(_as_map(saliency), float(self.p), method="linear"))

    def mask(self, saliency: Any, box_mask: Any = None) -> np.ndarray:
        """S_p (H, W) bool: pixels at or above the p-th percentile."""
        s = _as_map(saliency)
        return s >= np.percentile(s, float(self.p), method="linear")

    def describe(self) -> str:
        """E.g. "pct:95"."""
        return f"pct:{float(self.p):g}"


@dataclass(frozen=True)
class BoxArea(Threshold):
    """S_p = the |B| most salient pixels, |B| = pixels of the box mask; scale-free.

    Ties are broken deterministically: among equal values the pixel earlier in row-major
    order (smaller r, then smaller c) wins. With no box pixel S_p is empty.
    """

    kind = "box-area"

    def mask(self, saliency: Any, box_mask: Any = None) -> np.ndarray:
        """S_p (H, W) bool with exactly sum(box_mask) pixels on."""
        if box_mask is None:
            raise RotvizError(
                "The box-area threshold needs the image's box mask; use an absolute or "
                "percentile threshold for images without boxes."
            )
        s = _as_map(saliency)
        b = _as_mask(box_mask)
        _same_shape(s, b, "box-area threshold")
        k = int(b.sum())
        out = np.zeros(s.size, dtype=bool)
        order = np.argsort(-s.ravel(), kind="stable")
        out[order[:k]] = True
        return out.reshape(s.shape)

    def describe(self) -> str:
        """Always "box-area"."""
        return "box-area"


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_threshold(text: str) -> Threshold:
    """A Threshold from "8e-4" or "abs:8e-4" (absolute), "pct:95" (percentile) or "box-area"."""
    t = str(text).strip().lower().replace(" ", "")
    if t in {"box-area", "boxarea", "box_area", "box"}:
        return BoxArea()
    m = re.fullmatch(rf"(?:(abs|absolute|pct|percentile|p)[:=])?({_NUMBER})", t)
    if m is None:
        raise RotvizError(
            f"Cannot read threshold {text!r}; write a number like 8e-4 or abs:8e-4 "
            "(absolute), pct:95 (percentile of the map) or box-area."
        )
    prefix, number = m.group(1), float(m.group(2))
    if prefix in {"pct", "percentile", "p"}:
        return Percentile(number)
    return Absolute(number)


# ---------------------------------------------------------------------------------------------
# Goodness Q
# ---------------------------------------------------------------------------------------------


def goodness(sp: Any, b: Any) -> float:
    """Q = sum(Sp*B) / (sum(B) + sum(max(Sp - B, 0))) for Sp, B (H, W); the IoU for binary maps.

    NaN when the image has no box pixel (sum(B) = 0); 0 for an empty map on an image
    with boxes. Sp may be bool or values in [0, 1] (the formula is applied as written).
    """
    spa = _to_numpy(sp).astype(np.float64)
    ba = _as_mask(b).astype(np.float64)
    if spa.ndim != 2:
        raise RotvizError(f"Thresholded map must be 2-D (H, W), got shape {spa.shape}.")
    _same_shape(spa, ba, "goodness")
    area_b = ba.sum()
    if area_b == 0:
        return float("nan")
    inter = (spa * ba).sum()
    outside = np.maximum(spa - ba, 0.0).sum()
    return float(inter / (area_b + outside))


@dataclass(frozen=True)
class GoodnessResult:
    """Q of one image with the counts it came from; q is NaN when the image has no box."""

    q: float
    intersection: int
    box_pixels: int
    map_pixels: int
    total_pixels: int

    @property
    def defined(self) -> bool:
        """False when the image has no box pixel (Q undefined)."""
        return self.box_pixels > 0

    @property
    def fraction_on(self) -> float:
        """Fraction of pixels on in S_p."""
        return self.map_pixels / self.total_pixels

    @property
    def box_fraction(self) -> float:
        """Fraction of pixels inside boxes."""
        return self.box_pixels / self.total_pixels

    def display(self, digits: int = 1) -> str:
        """Q as a percentage ("28.7%") or "n/a (no boxes)"."""
        return format_q(self.q, digits)


def format_q(q: float | None, digits: int = 1) -> str:
    """Q in [0, 1] as a percentage text, "n/a (no boxes)" when undefined (NaN or None)."""
    if q is None or not math.isfinite(q):
        return NO_BOX_TEXT
    return f"{100.0 * q:.{digits}f}%"


def goodness_result(saliency: Any, b: Any, threshold: Threshold) -> GoodnessResult:
    """Threshold one saliency map (H, W), score it against its box mask (H, W)."""
    s = _as_map(saliency)
    ba = _as_mask(b)
    _same_shape(s, ba, "goodness")
    sp = threshold.mask(s, ba)
    return GoodnessResult(
        q=goodness(sp, ba),
        intersection=int((sp & ba).sum()),
        box_pixels=int(ba.sum()),
        map_pixels=int(sp.sum()),
        total_pixels=int(sp.size),
    )


def goodness_scores(
    saliency_maps: Any, box_masks: Any, threshold: Threshold
) -> list[GoodnessResult]:
    """GoodnessResult per image for maps (N, H, W) and box masks (N, H, W)."""
    maps = _to_numpy(saliency_maps)
    masks = _to_numpy(box_masks)
    if maps.ndim != 3 or masks.shape != maps.shape:
        raise RotvizError(
            f"goodness_scores needs maps and box masks of the same shape (N, H, W), got "
            f"{maps.shape} and {masks.shape}."
        )
    return [goodness_result(s, b, threshold) for s, b in zip(maps, masks, strict=True)]


class MeanGoodness(NamedTuple):
    """Dataset score: mean Q over the images where Q is defined, and the counts."""

    mean: float | None
    n_used: int
    n_undefined: int

    def display(self, digits: int = 1) -> str:
        """E.g. "28.7% (n=860, 7 without boxes)"; "n/a (no boxes)" when nothing is defined."""
        if self.mean is None:
            return f"{NO_BOX_TEXT} ({self.n_undefined} images)"
        text = f"{format_q(self.mean, digits)} (n={self.n_used}"
        if self.n_undefined:
            text += f", {self.n_undefined} without boxes"
        return text + ")"


def mean_goodness(values: Iterable[float | GoodnessResult]) -> MeanGoodness:
    """(mean, n_used, n_undefined) over per-image Q values or GoodnessResults; NaN values are
    counted as undefined, never averaged. mean is None (not NaN) when no value is defined."""
    qs = np.array(
        [v.q if isinstance(v, GoodnessResult) else float(v) for v in values], dtype=np.float64
    )
    ok = np.isfinite(qs)
    n_used = int(ok.sum())
    n_undefined = int(qs.size - n_used)
    mean = float(qs[ok].mean()) if n_used else None
    return MeanGoodness(mean, n_used, n_undefined)


# ---------------------------------------------------------------------------------------------
# Threshold sweeps
# ---------------------------------------------------------------------------------------------


def _counts_at_or_above(sorted_values: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """How many of sorted_values are >= each cutoff."""
    return sorted_values.size - np.searchsorted(sorted_values, cutoffs, side="left")


def threshold_sweep(
    saliency_maps: Any,
    box_masks: Any,
    lambdas: Sequence[float] | np.ndarray | None = None,
    percentiles: Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Mean Q per threshold for maps (N, H, W) and box masks (N, H, W).

    Returns columns [kind ("absolute" / "percentile"), value, mean_q, n] where n counts the
    images with boxes (the others are left out; their number is in df.attrs["n_undefined"]).
    lambdas=None uses DEFAULT_LAMBDAS (np.logspace(-7, 0, 36)); percentiles=None uses 50..99; pass an empty
    list to skip a kind. Each row equals mean_goodness over Absolute(value) or
    Percentile(value) masks, computed with one sort per image instead of one mask per value.
    """
    lams = DEFAULT_LAMBDAS if lambdas is None else np.asarray(lambdas, dtype=np.float64)
    pcts = DEFAULT_PERCENTILES if percentiles is None else np.asarray(percentiles, dtype=np.float64)
    maps = [_as_map(s) for s in saliency_maps]
    masks = [_as_mask(b) for b in box_masks]
    if len(maps) != len(masks):
        raise RotvizError(f"threshold_sweep: {len(maps)} maps but {len(masks)} box masks.")
    if np.any((pcts < 0) | (pcts > 100)):
        raise RotvizError("threshold_sweep: percentiles must lie between 0 and 100.")
    q_abs: list[np.ndarray] = []
    q_pct: list[np.ndarray] = []
    n_undefined = 0
    for s, b in zip(maps, masks, strict=True):
        _same_shape(s, b, "threshold_sweep")
        area_b = int(b.sum())
        if area_b == 0:
            n_undefined += 1
            continue
        inside = np.sort(s[b].ravel())
        outside = np.sort(s[~b].ravel())
        for cutoffs, out in (
            (lams, q_abs),
            (np.percentile(s, pcts, method="linear") if pcts.size else pcts, q_pct),
        ):
            inter = _counts_at_or_above(inside, cutoffs)
            extra = _counts_at_or_above(outside, cutoffs)
            out.append(inter / (area_b + extra))
    if not q_abs and not q_pct:
        raise RotvizError(
            f"threshold_sweep: none of the {len(maps)} images has a box pixel, so Q is "
            "undefined everywhere; choose images with boxes (or other categories)."
        )
    rows = []
    for kind, values, qs in (("absolute", lams, q_abs), ("percentile", pcts, q_pct)):
        if values.size == 0:
            continue
        mean_q = np.mean(np.stack(qs), axis=0)
        rows += [
            {"kind": kind, "value": float(v), "mean_q": float(q), "n": len(qs)}
            for v, q in zip(values, mean_q, strict=True)
        ]
    df = pd.DataFrame(rows, columns=["kind", "value", "mean_q", "n"])
    df.attrs["n_undefined"] = n_undefined
    return df


def sweep_auc(df: pd.DataFrame, kind: str | None = None) -> float:
    """Normalised area under mean Q of a sweep: the average Q over the swept interval, in [0, 1].

    absolute: trapezoidal area under mean_q vs log10(lambda), divided by the log10 range;
    percentile: area under mean_q vs percentile / 100, divided by that range. kind=None
    takes "absolute" when the frame has absolute rows, else "percentile". A single row
    returns its mean_q.
    """
    if kind is None:
        kind = "absolute" if (df["kind"] == "absolute").any() else "percentile"
    if kind not in {"absolute", "percentile"}:
        raise RotvizError(f"sweep_auc: kind must be 'absolute' or 'percentile', got {kind!r}.")
    part = df[df["kind"] == kind].sort_values("value")
    if part.empty:
        raise RotvizError(f"sweep_auc: the sweep has no {kind} rows.")
    values = part["value"].to_numpy(dtype=np.float64)
    y = part["mean_q"].to_numpy(dtype=np.float64)
    if kind == "absolute":
        if np.any(values <= 0):
            raise RotvizError("sweep_auc: absolute thresholds must be > 0 for a log10 axis.")
        x = np.log10(values)
    else:
        x = values / 100.0
    if len(x) == 1 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


# ---------------------------------------------------------------------------------------------
# Other localisation scores and per-image fractions
# ---------------------------------------------------------------------------------------------


def relevance_mass_accuracy(s: Any, b: Any) -> float:
    """Relevance mass accuracy sum(S*B) / sum(S) for a map S (H, W) >= 0 and box mask B (H, W).

    Arras, Osman & Samek, "CLEVR-XAI: A benchmark dataset for the ground truth evaluation
    of neural network explanations", Information Fusion 81 (2022) 14-40; as in Quantus'
    RelevanceMassAccuracy (without its optional normalisation). NaN when B is empty (as
    Quantus) or when the map has no mass (sum(S) = 0).
    """
    sa = _as_map(s)
    ba = _as_mask(b)
    _same_shape(sa, ba, "relevance_mass_accuracy")
    if np.any(sa < 0):
        raise RotvizError(
            "relevance_mass_accuracy needs a non-negative map; take the absolute value first."
        )
    total = sa.sum()
    if not ba.any() or total == 0:
        return float("nan")
    return float(sa[ba].sum() / total)


def pointing_game(s: Any, b: Any) -> bool | float:
    """Pointing game hit: is a maximum of the map S (H, W) inside the box mask B (H, W)?

    Zhang et al., "Top-Down Neural Attention by Excitation Backprop", IJCV 126 (2018)
    1084-1102; as Quantus' PointingGame (weighted=False): with several equal maxima it is a
    hit when any of them lies in B (so a constant map hits whenever B is non-empty).
    NaN (not a bool) when B is empty, like Quantus, so mean_goodness can drop it.
    """
    sa = _as_map(s)
    ba = _as_mask(b)
    _same_shape(sa, ba, "pointing_game")
    if not ba.any():
        return float("nan")
    return bool(np.any(ba[sa == sa.max()]))


def fraction_on(sp: Any) -> float:
    """Fraction of pixels on in a thresholded map S_p (H, W) (mean of its 0/1 values)."""
    return float(_to_numpy(sp).astype(np.float64).mean())


def box_fraction(b: Any) -> float:
    """Fraction of pixels inside boxes for a box mask B (H, W)."""
    return float(_as_mask(b).mean())
