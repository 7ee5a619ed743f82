"""Rotation consistency of saliency maps: does a map follow the object when the image turns?

For each image x and rotation k, the map of the rotated image rot90(x, k), turned back by -k,
is compared with the map of the upright image (Spearman rank correlation and the share of
shared top-5 % pixels, rotviz.study.sanity). A network whose maps are about the image's content
scores near 1; maps tied to the frame (borders, a fixed position) score lower. A network that
is rotation-invariant by construction scores exactly 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from rotviz.attribution.maps import network_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.models import RotationNet
from rotviz.nets.twin import random_twin_of, twin_calibration
from rotviz.runtime import RuntimeLike
from rotviz.scores.similarity import spearman_similarity, top_intersection
from rotviz.scores.stats import Comparison, compare_paired
from rotviz.study.results import ConsistencyRun

CONSISTENCY_MEASURES = ("spearman", "top5")
Progress = Callable[[int, int], None]


def back_rotated_maps(
    model: RotationNet,
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    rotations: Sequence[int] = (0, 1, 2, 3),
    progress: Progress | None = None,
) -> dict[int, np.ndarray]:
    """{k: maps (N, S, S) float32 of the images rotated by k, turned back by -k} for uint8 images.

    Each is network_maps with the one rotation k (so a "true" neuron set reads rotation k).
    """
    out = {}
    for k in rotations:
        one = dataclasses.replace(sal, rotations=(int(k),), aggregate="mean")
        out[int(k)] = network_maps(model, images, one, runtime, progress=progress)[0]
    return out


def consistency_rows(
    model: RotationNet,
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    rotations: Sequence[int] = (1, 2, 3),
    maps: dict[int, np.ndarray] | None = None,
) -> pd.DataFrame:
    """One row per image and rotation k: spearman and top5 of the back-rotated map vs the upright map.

    maps: back_rotated_maps (with k = 0 and every k in rotations) when the caller has them.
    """
    ks = [int(k) % 4 for k in rotations if int(k) % 4]
    if not ks:
        raise RotvizError("rotation consistency needs at least one rotation other than 0")
    maps = maps or back_rotated_maps(model, images, sal, runtime, (0, *ks))
    rows = [
        {
            "image": i,
            "k": k,
            "spearman": spearman_similarity(maps[k][i], maps[0][i]),
            "top5": top_intersection(maps[k][i], maps[0][i]),
        }
        for i in range(len(images))
        for k in ks
    ]
    return pd.DataFrame(rows, columns=["image", "k", *CONSISTENCY_MEASURES])


def consistency_comparison(trained: pd.DataFrame, random: pd.DataFrame) -> dict[str, Comparison]:
    """Per measure: trained vs random, each image's mean over rotations one bootstrap unit."""
    t = trained.groupby("image")[list(CONSISTENCY_MEASURES)].mean()
    r = random.groupby("image")[list(CONSISTENCY_MEASURES)].mean().reindex(t.index)
    return {m: compare_paired(t[m].to_numpy(), r[m].to_numpy()) for m in CONSISTENCY_MEASURES}


def consistency_run(
    checkpoint: Checkpoint,
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    twin: RotationNet | None = None,
    rotations: Sequence[int] = (1, 2, 3),
) -> ConsistencyRun:
    """Rotation consistency of a checkpoint's network and its random twin on uint8 images (N, 3, S, S).

    twin: the random twin (rotviz.nets.twin.random_twin_of; default the calibrated one).
    Returns the per-image rows (column "network": trained | random), the table (one row per
    measure with trained, random, difference ("mean [95% CI]", unscaled), p (Wilcoxon) and
    images) and its numeric intervals.
    """
    twin = twin if twin is not None else random_twin_of(checkpoint, runtime=runtime)
    rows = {
        net: consistency_rows(model, images, sal, runtime, rotations)
        for net, model in (("trained", checkpoint.model), ("random", twin))
    }
    cmps = consistency_comparison(rows["trained"], rows["random"])
    table = pd.DataFrame({m: c.row(scale=1.0, digits=3) for m, c in cmps.items()}).T
    table.index.name = "measure"
    table["images"] = [c.trained.n for c in cmps.values()]
    numbers = pd.DataFrame([{"measure": m, **c.numbers()} for m, c in cmps.items()])
    all_rows = pd.concat([r.assign(network=n) for n, r in rows.items()], ignore_index=True)
    calibration = twin_calibration(twin)
    return ConsistencyRun(all_rows, table, numbers, calibration.describe() if calibration else "")
