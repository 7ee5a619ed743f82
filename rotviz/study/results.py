"""Typed results of the runs over a split, and the notes their tables share.

numpy and pandas only (no torch, no models): the report's writers and figures read these.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from rotviz.scores.baselines import SCALE_FREE, baseline_comparison, baseline_summary
from rotviz.scores.faithfulness import MEASURE_NAMES, MEASURES, RANDOM, Curves
from rotviz.scores.metrics import threshold_sweep
from rotviz.scores.stats import Comparison, Interval, seed_interval

NETWORKS = ("trained", "random")

# The threshold's reach: a mean share of pixels on at or above ALL_ON makes every mask the
# whole image (Q is then the boxes' share of the image); at or below NONE_ON nothing passes.
ALL_ON, NONE_ON = 0.95, 0.001
INFORMATIVE = "informative"
BEATS_BASELINES = "beats the edge map and the centre prior"


def reach_note(mean_share_on: float | None) -> str:
    """What a threshold's mean share of pixels on (0..1) means for Q; "" when it is informative."""
    if mean_share_on is None or not math.isfinite(mean_share_on):
        return ""
    if mean_share_on >= ALL_ON:
        return "nearly all pixels on: Q equals the boxes' share of the image"
    if mean_share_on <= NONE_ON:
        return "no pixel passes: Q is 0"
    return ""


def reach_cell(shares: Mapping[str, float | None]) -> str:
    """The "threshold's reach" table cell of shares of pixels on per network: "trained: ..." notes."""
    notes = [f"{who}: {reach_note(v)}" for who, v in shares.items() if reach_note(v)]
    return "; ".join(notes) or INFORMATIVE


def baseline_cell(flag: str) -> str:
    """The baselines table cell: the flag "does not beat the ..." or that it beats them."""
    return flag or BEATS_BASELINES


@dataclass(frozen=True)
class NetworkScores:
    """Dataset scores of one network (trained or its random twin) at one threshold."""

    mean_q: float | None  # over the images with boxes; None when none has
    mean_rma: float | None
    pointing: float | None
    mean_fraction_on: float | None  # over all images
    reach_note: str


@dataclass(frozen=True)
class GoodnessSummary:
    """Dataset-level goodness of one checkpoint on one split, and the settings it was measured with."""

    n_images: int
    n_scored: int  # images with boxes (Q defined)
    n_without_boxes: int
    trained: NetworkScores
    random: NetworkScores
    checkpoint: str = ""
    dataset: str = ""
    model: str = ""
    threshold: str = ""
    saliency: dict[str, Any] = field(default_factory=dict)
    box_categories: list[int] | str = "all"
    include_crowd: bool = True
    warning: str | None = None  # the method's caveat on this model
    twin: str = ""  # the random twin's name
    twin_calibration: str | None = None  # which images calibrated it (rotviz.nets.twin)
    baseline_flag: str | None = None  # "does not beat the ..."; None when no image has boxes

    def network(self, who: str) -> NetworkScores:
        """The scores of "trained" or "random"."""
        return {"trained": self.trained, "random": self.random}[who]

    def shares_on(self) -> dict[str, float | None]:
        """Mean share of pixels on per network."""
        return {who: self.network(who).mean_fraction_on for who in NETWORKS}

    def to_dict(self) -> dict[str, Any]:
        """Flat keys (mean_q_trained, ..., twin, baseline_flag) as summary.json has them."""
        out: dict[str, Any] = {"n_images": self.n_images}
        for who in NETWORKS:
            s = self.network(who)
            out[f"mean_q_{who}"] = s.mean_q
            out[f"mean_rma_{who}"] = s.mean_rma
            out[f"pointing_{who}"] = s.pointing
            out[f"mean_fraction_on_{who}"] = s.mean_fraction_on
            out[f"reach_note_{who}"] = s.reach_note
            out["n_scored"], out["n_without_boxes"] = self.n_scored, self.n_without_boxes
        scores = {"n_images", "n_scored", "n_without_boxes", "baseline_flag", *NETWORKS}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name not in scores})
        if self.baseline_flag is not None:
            out["baseline_flag"] = self.baseline_flag
        return out


@dataclass(frozen=True)
class RunContext:
    """Where a run's numbers come from: provenance (network, data, cross_dataset), the data and
    training settings, and the network's card (rotviz.study.runs.run_context builds it)."""

    source: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)


@dataclass
class GoodnessRun:
    """Per-image scores plus the maps and masks they came from (for sweeps and figures)."""

    rows: pd.DataFrame
    maps_trained: np.ndarray  # (N, S, S) float32
    maps_random: np.ndarray
    masks: np.ndarray  # (N, S, S) bool box masks
    summary: GoodnessSummary
    baselines: pd.DataFrame | None = None  # rotviz.scores.baselines.baseline_rows


@dataclass
class ConsistencyRun:
    """Rotation consistency of a network and its twin: per-image rows and the table."""

    rows: pd.DataFrame  # image, k, spearman, top5, network
    table: pd.DataFrame  # one row per measure: "mean [95% CI]" cells, p, images
    numbers: pd.DataFrame  # the table's intervals as numbers, for CSV
    twin_calibration: str = ""  # which images calibrated the twin (rotviz.nets.twin)


@dataclass
class ProbeRun:
    """A downstream probe over seeds: per-image rows, the numbers per method and fraction, the task."""

    per_image: pd.DataFrame
    numbers: pd.DataFrame  # rotviz.study.probe.probe_numbers
    task: str
    dataset: str
    classes: list[str]
    notes: list[str]
    n_train: int
    n_test: int
    chance: float  # accuracy of always predicting the most frequent test class
    seeds: list[int]


@dataclass
class CascadeResult:
    """Per step and image: similarity to the trained map (and Q when boxes are given)."""

    rows: pd.DataFrame  # step, randomised, image, spearman, ssim, top5, q
    maps: np.ndarray | None  # (L + 1, N, S, S) when kept


@dataclass
class SanityReport:
    """Everything the sanity command writes: per-image rows, tables and the cascade."""

    similarities: dict[str, pd.DataFrame]  # comparison -> per-image rows
    table: pd.DataFrame  # display strings
    numbers: pd.DataFrame  # numeric, for CSV
    cascade: CascadeResult
    cascade_table: pd.DataFrame


@dataclass
class SanityRun:
    """The checkpoint checked (its name), one report per neuron set, the test images' ids, and
    which images calibrated the twin compared (rotviz.nets.twin's rule)."""

    checkpoint: str
    reports: dict[str, SanityReport]
    ids: list[str]
    twin_calibration: str = ""  # which images calibrated the twin (rotviz.nets.twin)


@dataclass
class NeuronView:
    """One neuron of one network: its top images as the network saw them, with their maps."""

    layer: str
    network: str
    neuron: int
    label: str
    rows: np.ndarray  # (k,) rows of the split, highest activation first
    values: np.ndarray  # (k,) their activations
    images: np.ndarray  # (k, 3, S, S) uint8, turned for rotation neurons
    maps: np.ndarray  # (k, S, S) float32 single-neuron saliency

    def captions(self) -> list[str]:
        """One caption per image: row and activation (probability for rotation neurons)."""
        if self.layer == "rotation":
            return [f"#{r} p={np.exp(v):.3f}" for r, v in zip(self.rows, self.values, strict=True)]
        return [f"#{r} a={v:.3g}" for r, v in zip(self.rows, self.values, strict=True)]


@dataclass
class NeuronsRun:
    """The neuron browser's run: the top-k table of every neuron (trained and random twin, each
    layer) and the contact sheets of the chosen neurons, (name, views) computed as read (once)."""

    table: pd.DataFrame  # network, layer, neuron, label, mean, std, selectivity, rank, image, ...
    sheets: Iterator[tuple[str, list[NeuronView]]]
    top: int
    n_images: int
    twin: str = "calibrated"  # which random twin the rows beside the trained network are

    def neurons_per_layer(self) -> int:
        """The most neurons of one layer and network in the table."""
        return int(self.table.groupby(["layer", "network"])["neuron"].nunique().max())


# The sources of rankings a faithfulness run compares, in table order, and their names.
FAITHFULNESS_SOURCES = {
    "trained": "trained map",
    "initial twin": "random twin's map (initial statistics)",
    "calibrated twin": "random twin's map (calibrated statistics)",
    "centre": "centre prior",
    "edges": "edge map",
    RANDOM: "random order (chance)",
}
Q_BOX_AREA = "q_box_area"  # per-image Q of the map thresholded at the box area


@dataclass
class FaithfulnessRun:
    """Deletion, insertion and ROAD of several rankings on one network's output, per image.

    rows: rotviz.scores.faithfulness.per_image_rows plus q_box_area (NaN without boxes and for
    the random order); summary: faithfulness_summary (intervals, paired differences to the
    random order, flags) plus q_box_area with its interval; curves: each source's Curves.
    """

    rows: pd.DataFrame
    summary: pd.DataFrame
    curves: dict[str, Curves]
    method: str = "saliency"
    settings: dict[str, Any] = field(default_factory=dict)  # faithfulness and saliency settings
    twin_calibration: dict[str, str] = field(default_factory=dict)  # per twin source
    warning: str | None = None  # the method's caveat on this model

    def source_name(self, source: str) -> str:
        """The source's name in tables: "trained map", "random order (chance)", ..."""
        return FAITHFULNESS_SOURCES.get(source, source)


def _cell(row: pd.Series, col: str, digits: int = 3, scale: float = 1.0) -> str:
    """ "mean [low, high]" of a summary row's column col (with col_low, col_high)."""
    if col not in row or not math.isfinite(float(row[col])):
        return "n/a"
    iv = Interval(row[col], row[f"{col}_low"], row[f"{col}_high"], int(row["n"]))
    return iv.format(scale=scale, digits=digits)


def faithfulness_table(run: FaithfulnessRun, digits: int = 3) -> pd.DataFrame:
    """One row per source: deletion AUC, insertion AUC, ROAD (mean [95% CI] over images, the
    random order's paired difference beside insertion and ROAD), Q at the box area (%), flag."""
    shown = {}
    for _, row in run.summary.iterrows():
        cells = {MEASURE_NAMES[m]: _cell(row, m, digits) for m in MEASURES}
        for m in ("insertion_auc", "road"):
            cells[f"{MEASURE_NAMES[m]} - random"] = (
                "" if row["source"] == RANDOM else _cell(row, f"{m}_diff", digits)
            )
        cells["Q at box-area (%)"] = _cell(row, Q_BOX_AREA, 1, scale=100.0)
        cells["faithful"] = row["flag"] or "beats the random order on insertion and ROAD"
        shown[run.source_name(row["source"])] = cells
    df = pd.DataFrame.from_dict(shown, orient="index")
    df.index.name = f"ranking ({run.method})"
    return df


def faithfulness_methods_table(
    runs: Mapping[str, FaithfulnessRun], digits: int = 3
) -> pd.DataFrame:
    """Methods x (deletion AUC, insertion AUC, ROAD, Q at the box area, faithful): each method's
    trained map, then the model-free references of the first run (random order, centre, edges)."""
    rows = {}
    for method, run in runs.items():
        t = faithfulness_table(run, digits)
        rows[method] = t.loc[run.source_name("trained")]
    first = next(iter(runs.values()))
    t = faithfulness_table(first, digits)
    for source in ("centre", "edges", RANDOM):
        name = first.source_name(source)
        if name in t.index:
            rows[name] = t.loc[name]
    df = pd.DataFrame(rows).T
    df.index.name = "method"
    return df


def goodness_baselines(runs: Sequence[GoodnessRun]) -> tuple[pd.DataFrame, str]:
    """Baselines beside the networks at the scale-free thresholds, and the trained network's flag.

    runs: one per training seed (their per-image scores are averaged over seeds, as in
    goodness_comparison). Returns baseline_summary (one row per source: trained, random,
    centre, edges, noise) and "does not beat the ..." ("" when it beats edge map and centre).
    """
    rows = pd.concat([r.baselines for r in runs if r.baselines is not None], ignore_index=True)
    rows = rows.groupby(["source", "image"], sort=False).mean().reset_index()
    if not rows[f"q {SCALE_FREE[0].describe()}"].notna().any():
        return baseline_summary(rows), ""
    return baseline_summary(rows), baseline_comparison(rows)[1]


def sweeps(run: GoodnessRun) -> pd.DataFrame:
    """Dataset-level Q over log-spaced lambdas and percentiles, trained and random (column "network")."""
    has_box = run.masks.reshape(len(run.masks), -1).any(1)
    frames = []
    for who, maps in (("trained", run.maps_trained), ("random", run.maps_random)):
        df = threshold_sweep(maps[has_box], run.masks[has_box])
        frames.append(df.assign(network=who))
    return pd.concat(frames, ignore_index=True)


def interval_cells(
    cmp: Comparison, seeds: dict[str, list[float]] | None = None
) -> tuple[dict[str, str], dict[str, float]]:
    """Display cells (mean [95% CI] in %) and numeric CSV columns of one comparison.

    seeds (trained / random: one figure per training seed) adds Student-t rows over seeds.
    """
    shown = cmp.row()
    numbers = cmp.numbers()
    if seeds and len(seeds["trained"]) > 1:
        for net in ("trained", "random"):
            iv = seed_interval(seeds[net])
            shown[f"{net}, over seeds"] = iv.format()
            numbers.update(
                {
                    f"{net}_seeds": iv.estimate,
                    f"{net}_seeds_low": iv.low,
                    f"{net}_seeds_high": iv.high,
                    "n_seeds": iv.n,
                }
            )
    return shown, numbers
