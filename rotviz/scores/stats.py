"""Uncertainty for every headline figure: bootstrap intervals, seed intervals, paired tests.

Intervals over images are percentile bootstraps (Efron & Tibshirani 1993), seeded, 1,000
resamples by default; intervals across training seeds use Student's t (few seeds make a
bootstrap meaningless); a trained-vs-random difference on the same images comes with the
Wilcoxon signed-rank test (scipy.stats.wilcoxon) and a paired bootstrap interval.
Formatting helpers write "84.3 [82.1, 86.4]" for tables, CSV and LaTeX.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rotviz.errors import RotvizError

N_RESAMPLES = 1000
LEVEL = 0.95
_CHUNK = 200  # resamples drawn at once: bounds memory at _CHUNK x n indices

Statistic = Callable[..., np.ndarray]  # f(values (B, n), axis=1) -> (B,)


@dataclass(frozen=True)
class Interval:
    """An estimate with a confidence interval [low, high] from n values."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = LEVEL
    method: str = "bootstrap"

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """E.g. "84.3 [82.1, 86.4]" (scale 100 for percentages); "n/a" when undefined."""
        return format_interval(self, scale, digits)

    def to_dict(self, prefix: str = "") -> dict[str, Any]:
        """Flat columns for CSV: {prefix: estimate, prefix_low, prefix_high, prefix_n}."""
        p = f"{prefix}_" if prefix else ""
        return {
            prefix or "estimate": self.estimate,
            f"{p}low": self.low,
            f"{p}high": self.high,
            f"{p}n": self.n,
        }

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(values: Any) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def _nan_interval(n: int, level: float, method: str) -> Interval:
    return Interval(math.nan, math.nan, math.nan, n, level, method)


def bootstrap_interval(
    values: Any,
    statistic: Statistic = np.mean,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of statistic over values (n,); NaN values are left out.

    statistic is called as statistic(resamples (B, n), axis=1) (np.mean, np.median work).
    The same (values, seed) always gives the same interval. One value gives [v, v].
    """
    if not 0 < level < 1:
        raise RotvizError(f"confidence level must lie in (0, 1), got {level}")
    if n_resamples < 1:
        raise RotvizError(f"n_resamples must be at least 1, got {n_resamples}")
    v = _finite(values)
    n = v.size
    if n == 0:
        return _nan_interval(0, level, "bootstrap")
    estimate = float(statistic(v[None, :], axis=1)[0])
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, _CHUNK):
        b = min(_CHUNK, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        stats[start : start + b] = statistic(v[idx], axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Interval(estimate, float(low), float(high), n, level, "bootstrap")


def paired_difference_interval(
    a: Any,
    b: Any,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of mean(a - b) resampling pairs (images); pairs with a NaN are dropped."""
    a, b = _paired(a, b)
    return bootstrap_interval(a - b, np.mean, n_resamples, level, seed)


def seed_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean over training seeds with a Student-t interval (values (k,), one per seed).

    k = 1 gives [v, v] (no spread is known, shown as such).
    """
    from scipy import stats as st

    v = _finite(values)
    if v.size == 0:
        return _nan_interval(0, level, "t over seeds")
    mean = float(v.mean())
    if v.size == 1:
        return Interval(mean, mean, mean, 1, level, "t over seeds")
    half = float(st.t.ppf((1 + level) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return Interval(mean, mean - half, mean + half, int(v.size), level, "t over seeds")


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise RotvizError(f"paired comparison needs equal lengths, got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def wilcoxon_p(a: Any, b: Any) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of paired values a, b (n,).

    Zero differences are dropped (zero_method="wilcox"); NaN when no pair differs (nothing
    to test) or no pair is finite.
    """
    from scipy.stats import wilcoxon

    a, b = _paired(a, b)
    if a.size == 0 or np.all(a == b):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about small samples; the p-value says it
        return float(wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def accuracy_interval(correct: Any, **kw: Any) -> Interval:
    """Accuracy with a bootstrap interval over images.

    correct: (N,) bool per image, or (N, m) bool per image and rotation (each image's mean
    over its rotations is one bootstrap unit, so rotations of one image are never split).
    """
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim == 2:
        c = c.mean(axis=1)
    return bootstrap_interval(c, np.mean, **kw)


def goodness_interval(q_values: Any, **kw: Any) -> Interval:
    """Mean goodness Q with a bootstrap interval over the images that have boxes (NaN Q left out)."""
    return bootstrap_interval(q_values, np.mean, **kw)


def rotation_correctness(logits: Any, labels: Any, n_images: int) -> np.ndarray:
    """Per image and rotation correctness (N, m) bool from rotation_logits' image-major
    logits (N*m, m) and labels (N*m,)."""
    lg = np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits)
    lb = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if n_images == 0:
        return np.zeros((0, lg.shape[-1] if lg.ndim == 2 else 0), dtype=bool)
    return (lg.argmax(axis=1) == lb).reshape(n_images, -1)


@dataclass(frozen=True)
class Comparison:
    """Trained vs random on the same images: both intervals, the paired difference and its p."""

    trained: Interval
    random: Interval
    difference: Interval
    p_value: float

    def row(self, scale: float = 100.0, digits: int = 1) -> dict[str, str]:
        """Display strings: trained, random, difference, p."""
        return {
            "trained": self.trained.format(scale, digits),
            "random": self.random.format(scale, digits),
            "difference": self.difference.format(scale, digits),
            "p (Wilcoxon)": format_p(self.p_value),
        }

    def numbers(self, prefix: str = "") -> dict[str, float]:
        """Numeric columns for CSV: estimate, low, high of each part and the p-value."""
        p = f"{prefix}_" if prefix else ""
        out: dict[str, float] = {}
        for name, iv in (
            ("trained", self.trained),
            ("random", self.random),
            ("diff", self.difference),
        ):
            out[f"{p}{name}"] = iv.estimate
            out[f"{p}{name}_low"] = iv.low
            out[f"{p}{name}_high"] = iv.high
        out[f"{p}p_wilcoxon"] = self.p_value
        out[f"{p}n"] = self.trained.n
        return out


def compare_paired(
    trained: Any,
    random: Any,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Comparison:
    """Intervals of trained (n,), random (n,) and of their paired difference, plus Wilcoxon's p.

    Per-image values (correctness, Q, ...); NaN entries (e.g. images without boxes) are left
    out of each interval and their pair out of the difference and the test.
    """
    kw = dict(n_resamples=n_resamples, level=level, seed=seed)
    return Comparison(
        bootstrap_interval(trained, **kw),
        bootstrap_interval(random, **kw),
        paired_difference_interval(trained, random, **kw),
        wilcoxon_p(trained, random),
    )


def format_interval(iv: Interval | None, scale: float = 100.0, digits: int = 1) -> str:
    """ "84.3 [82.1, 86.4]" (estimate and bounds times scale); "n/a" for a missing estimate."""
    if iv is None or not math.isfinite(iv.estimate):
        return "n/a"
    f = f"{{:.{digits}f}}"
    return (
        f"{f.format(iv.estimate * scale)} [{f.format(iv.low * scale)}, {f.format(iv.high * scale)}]"
    )


def percent(value: float | None, unit: str = "") -> str:
    """A fraction in percent with one decimal: 0.843 -> "84.3" (unit "%": "84.3%"); missing -> "n/a"."""
    return "n/a" if value is None or value != value else f"{100 * value:.1f}{unit}"


def format_p(p: float | None) -> str:
    """ "p=0.032", "p<0.001"; "n/a" when the test is undefined."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def interval_frame_columns(ivs: dict[str, Interval], scale: float = 100.0) -> dict[str, float]:
    """Numeric CSV columns name, name_low, name_high (scaled) for several intervals."""
    out = {}
    for name, iv in ivs.items():
        out[name] = iv.estimate * scale
        out[f"{name}_low"] = iv.low * scale
        out[f"{name}_high"] = iv.high * scale
    return out
