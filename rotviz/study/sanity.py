"""Sanity checks for saliency maps (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

A map that barely changes when the model's weights are randomised is not explaining the
model. Three comparisons, each per image and neuron set, with three similarities of the
absolute maps: Spearman rank correlation, SSIM (scikit-image, maps scaled to [0, 1] by
their maximum) and the intersection of their top 5 % pixels (shared pixels / pixels in a set):

- model randomisation: the trained network vs its random twin (same seed, untrained);
- cascading randomisation: the trained network's blocks re-initialised from the head down
  (to the random twin's initial weights, BatchNorm statistics included), one more per step;
- data randomisation: the same architecture trained on shuffled rotation labels.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from rotviz.attribution.maps import network_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import TrainConfig
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.models import RotationNet
from rotviz.nets.twin import TwinCalibration, random_twin_of, twin_calibration
from rotviz.runtime import RuntimeLike
from rotviz.scores.metrics import Threshold, goodness
from rotviz.scores.similarity import (
    MEASURE_LABELS,
    MEASURES,
    cascade_summary,
    similarity_rows,
)
from rotviz.scores.stats import bootstrap_interval, format_interval, wilcoxon_p
from rotviz.study.results import CascadeResult, SanityReport

INITIAL_COMPARISON = "trained vs random twin (initial statistics)"
CALIBRATED_COMPARISON = "trained vs random twin (calibrated statistics)"


# --------------------------------------------------------------------------- maps


def block_names(model: RotationNet) -> list[str]:
    """Names of model.blocks() for plots: "block 1".."block L-1", then "head"."""
    n = len(model.blocks())
    return [f"block {i + 1}" for i in range(n - 1)] + ["head"]


def cascading_models(
    model: RotationNet, twin: RotationNet
) -> Iterator[tuple[int, str, RotationNet]]:
    """(n_randomised, last block randomised, model) for n = 0..L: the top n blocks re-initialised.

    Step n re-initialises blocks()[-n:] (head first) to the weights and buffers of twin, the
    initial random twin (rotviz.nets.twin.random_twin_of(..., "initial")); n = L equals it.
    The input model is left unchanged.
    """
    names = block_names(model)
    current = copy.deepcopy(model).eval()
    yield 0, "none", current
    for n in range(1, len(names) + 1):
        current = copy.deepcopy(current)
        current.blocks()[-n].load_state_dict(twin.blocks()[-n].state_dict())
        yield n, names[-n], current.eval()


def cascading_randomization(
    checkpoint: Checkpoint,
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    masks: np.ndarray | None = None,
    threshold: Threshold | None = None,
    image_ids: Sequence[object] | None = None,
    keep_maps: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CascadeResult:
    """Cascading model-parameter randomisation on uint8 images (N, 3, S, S).

    Rows: step (blocks randomised, 0..L), randomised (name of the last one), image, the
    three similarities of the step's map to the trained map, and Q = goodness of the
    thresholded map with masks (N, S, S) when masks and threshold are given (else NaN).
    """
    ids = list(range(len(images))) if image_ids is None else list(image_ids)
    n_steps = len(checkpoint.model.blocks()) + 1
    reference = None
    frames, kept = [], []
    initial = random_twin_of(checkpoint, "initial", runtime)
    for n, name, model in cascading_models(checkpoint.model, initial):
        (maps,) = network_maps(model, images, sal, runtime)
        if reference is None:
            reference = maps
        df = similarity_rows(reference, maps, ids)
        df.insert(0, "randomised", name)
        df.insert(0, "step", n)
        if masks is not None and threshold is not None:
            df["q"] = [
                goodness(threshold.mask(m, b), b) if b.any() else math.nan
                for m, b in zip(maps, masks, strict=True)
            ]
        else:
            df["q"] = math.nan
        frames.append(df)
        if keep_maps:
            kept.append(maps)
        if progress:
            progress(n + 1, n_steps)
    rows = pd.concat(frames, ignore_index=True)
    return CascadeResult(rows, np.stack(kept) if keep_maps else None)


# --------------------------------------------------------------------------- comparisons


def compare_models(
    model_a: RotationNet,
    model_b: RotationNet,
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    image_ids: Sequence[object] | None = None,
) -> pd.DataFrame:
    """Per-image similarities of model_a's maps and model_b's maps on uint8 images (N, 3, S, S)."""
    return similarity_rows(*network_maps((model_a, model_b), images, sal, runtime), image_ids)


def model_randomization(
    checkpoint: Checkpoint,
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    image_ids: Sequence[object] | None = None,
    twin: RotationNet | None = None,
) -> pd.DataFrame:
    """Per-image similarity of the trained map and its random twin's (default: the calibrated
    twin, rotviz.nets.twin.random_twin_of)."""
    twin = twin if twin is not None else random_twin_of(checkpoint, runtime=runtime)
    return compare_models(checkpoint.model, twin, images, sal, runtime, image_ids)


def data_randomization(
    checkpoint: Checkpoint,
    shuffled: Checkpoint,
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    image_ids: Sequence[object] | None = None,
) -> pd.DataFrame:
    """Per-image similarity of the trained map and the map of the model trained on shuffled labels."""
    if not shuffled.train_config.shuffle_labels:
        raise RotvizError(
            "data randomisation needs a checkpoint trained with shuffled labels "
            "(train --shuffle-labels)"
        )
    return compare_models(checkpoint.model, shuffled.model, images, sal, runtime, image_ids)


def shuffled_config(train_cfg: TrainConfig) -> TrainConfig:
    """The same recipe with shuffled rotation labels (the data-randomisation baseline)."""
    return replace(train_cfg, shuffle_labels=True)


def similarity_table(
    frames: dict[str, pd.DataFrame], seed: int = 0, digits: int = 2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display, numbers) tables: per comparison and measure, mean [95% CI] over images.

    frames maps a comparison name ("trained vs random twin", ...) to similarity rows. The
    Wilcoxon p tests each similarity against 1 (identical maps) per image; a map that
    explains the model should sit well below 1.
    """
    shown, numbers = {}, []
    for name, df in frames.items():
        row = {}
        for col in MEASURES:
            iv = bootstrap_interval(df[col], seed=seed)
            row[MEASURE_LABELS[col]] = format_interval(iv, scale=1.0, digits=digits)
            numbers.append(
                {
                    "comparison": name,
                    "measure": col,
                    "mean": iv.estimate,
                    "low": iv.low,
                    "high": iv.high,
                    "n": iv.n,
                    "p_vs_identical": wilcoxon_p(df[col], np.ones(len(df))),
                }
            )
        row["images"] = str(len(df))
        shown[name] = row
    display = pd.DataFrame.from_dict(shown, orient="index")
    display.index.name = "comparison"
    return display, pd.DataFrame(numbers)


def sanity_report(
    checkpoint: Checkpoint,
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    shuffled: Checkpoint | None = None,
    masks: np.ndarray | None = None,
    threshold: Threshold | None = None,
    image_ids: Sequence[object] | None = None,
    keep_maps: bool = False,
    progress: Callable[[int, int], None] | None = None,
    calibrated_twin: RotationNet | None = None,
) -> SanityReport:
    """Model, cascading and (with shuffled) data randomisation on uint8 images (N, 3, S, S).

    The cascade ends in the random twin with initial BatchNorm statistics; calibrated_twin
    (rotviz.nets.twin.random_twin_of(..., "calibrated")) adds the comparison with the twin
    whose statistics were recomputed on training images. The numbers' twin_calibration
    column says which images calibrated each twin compared.
    """
    cascade = cascading_randomization(
        checkpoint, images, sal, runtime, masks, threshold, image_ids, keep_maps, progress
    )
    last = cascade.rows["step"].max()
    # the fully randomised step is the random twin: reuse its rows (no second pass)
    frames = {
        INITIAL_COMPARISON: cascade.rows[cascade.rows["step"] == last][
            ["image", *MEASURES]
        ].reset_index(drop=True)
    }
    if calibrated_twin is not None:
        frames[CALIBRATED_COMPARISON] = compare_models(
            checkpoint.model, calibrated_twin, images, sal, runtime, image_ids
        )
    if shuffled is not None:
        frames["trained vs shuffled-label model"] = data_randomization(
            checkpoint, shuffled, images, sal, runtime, image_ids
        )
    table, numbers = similarity_table(frames)
    initial = TwinCalibration("initial", checkpoint.data_config.dataset)
    calibrations = {INITIAL_COMPARISON: initial.describe()}
    if calibrated_twin is not None and (c := twin_calibration(calibrated_twin)) is not None:
        calibrations[CALIBRATED_COMPARISON] = c.describe()
    numbers["twin_calibration"] = numbers["comparison"].map(calibrations)
    return SanityReport(frames, table, numbers, cascade, cascade_summary(cascade.rows))


def image_sanity(
    checkpoint: Checkpoint,
    image: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    box_mask: np.ndarray | None = None,
    threshold: Threshold | None = None,
    shuffled: Checkpoint | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For one uint8 image (3, S, S): (similarities per comparison, cascade rows) for the app.

    The first frame has one row per comparison (trained vs random twin, and vs the
    shuffled-label model when given) and the three similarities; the second is the
    cascading-randomisation rows of this image (draw it with cascading_figure(rows, 0)).
    """
    images = np.asarray(image)[None]
    masks = None if box_mask is None else np.asarray(box_mask, dtype=bool)[None]
    report = sanity_report(checkpoint, images, sal, runtime, shuffled, masks, threshold)
    sims = pd.concat(
        {name: df[list(MEASURES)] for name, df in report.similarities.items()}, names=["comparison"]
    ).droplevel(1)
    return sims, report.cascade.rows
