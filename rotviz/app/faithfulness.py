"""Faithfulness on the pages: one image's deletion, insertion and ROAD curves (Saliency, Your
images) and a test set's summary table (Goodness).

Every number comes from rotviz.study.faithfulness (source_curves for one image,
faithfulness_methods / faithfulness_run and faithfulness_table for a test set), the functions
``python -m rotviz faithfulness`` calls, with the study's defaults (FaithfulnessConfig): the
page caches and lays out, it never re-derives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from rotviz.app import cached, common, explore, export, render, summaries
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Card
from rotviz.nets.models import RotationNet
from rotviz.report.charts import faithfulness_plotly
from rotviz.scores.baselines import baseline_maps
from rotviz.scores.faithfulness import (
    MEASURE_NAMES,
    MEASURES,
    RANDOM,
    Curves,
    FaithfulnessConfig,
    curve_rows,
    per_image_rows,
)
from rotviz.study.faithfulness import (
    faithfulness_methods,
    forward_passes,
    source_curves,
    step_pictures,
)
from rotviz.study.goodness import split_box_masks
from rotviz.study.results import FAITHFULNESS_SOURCES, FaithfulnessRun, faithfulness_table

CONFIG = FaithfulnessConfig()  # the study's: K = 16 steps, ROAD at 10..90 %, 5 random orders
IMAGE_SOURCES = ("trained", "edges")  # one image's rankings; the random order comes beside them
DEFAULT_IMAGES = 16  # the Goodness page's table: the first N test images
WHY_TRAINED = (
    "Every ranking is scored on the trained network's probability of the true rotation (the "
    "image is upright, so each copy is turned to every rotation the network was trained on and "
    "the probability of that rotation is averaged): the random twin sits at chance, so its own "
    "curves would be flat by construction."
)
DELETION_CAVEAT = (
    "Deletion greys pixels towards the mean: a random order scatters grey pixels everywhere and "
    "takes the image out of distribution faster than greying one region, so it often wins "
    "deletion for any coherent map. Read deletion beside insertion and ROAD, never alone."
)


def source_names(sources: list[str]) -> dict[str, str]:
    """Each ranking source's name in tables and legends ("trained map", "edge map", ...)."""
    return {s: FAITHFULNESS_SOURCES.get(s, s) for s in sources}


# --------------------------------------------------------------------------- one image


@st.cache_data(max_entries=64, show_spinner=False)
def image_curves(
    model_id: str,
    image: np.ndarray,
    trained_map: np.ndarray,
    config: FaithfulnessConfig,
    _model: RotationNet,
) -> dict[str, Curves]:
    """Curves of one uint8 image (3, S, S) ranked by the trained map (S, S), by the edge map and
    by the random order (mean of config.random_orders seeded orders), scored by _model
    (model_id: its weights, the cache key with the image, the map and the config)."""
    images = np.ascontiguousarray(image)[None]
    maps = {"trained": np.asarray(trained_map)[None], "edges": baseline_maps(images, "edges")}
    return source_curves(_model, images, maps, config, cached.runtime())


@st.cache_data(max_entries=64, show_spinner=False)
def image_step_pictures(
    image: np.ndarray, trained_map: np.ndarray, config: FaithfulnessConfig
) -> dict[str, np.ndarray]:
    """The trained map's deletion and insertion copies of one image after each step (pictures)."""
    return step_pictures(image, trained_map, config)


def image_scores(curves: dict[str, Curves]) -> pd.DataFrame:
    """One row per ranking (its name as index): deletion AUC, insertion AUC, ROAD score, the
    mean MoRF and LeRF outputs, from the per-image rows of the core."""
    rows = per_image_rows(curves).set_index("source")
    table = pd.DataFrame(
        {
            MEASURE_NAMES["deletion_auc"]: rows["deletion_auc"],
            MEASURE_NAMES["insertion_auc"]: rows["insertion_auc"],
            "ROAD score": rows["road"],
            "MoRF mean": [c.morf[0].mean() for c in curves.values()],
            "LeRF mean": [c.lerf[0].mean() for c in curves.values()],
        }
    )
    table.index = [FAITHFULNESS_SOURCES.get(s, s) for s in table.index]
    table.index.name = "ranking"
    return table


def image_verdict(curves: dict[str, Curves]) -> str:
    """One line: whether the trained map beats the random order on insertion and ROAD here."""
    trained, chance = curves["trained"].scores(), curves[RANDOM].scores()
    parts = []
    for m in ("insertion_auc", "road"):
        better = trained[m][0] > chance[m][0]
        parts.append(
            f"{MEASURE_NAMES[m]} {trained[m][0]:.3f} vs {chance[m][0]:.3f}: "
            + ("beats" if better else "does not beat")
            + " the random order"
        )
    return (
        "On this image, the trained map: "
        + "; ".join(parts)
        + ". One image has no interval: the Goodness page's faithfulness table has them over "
        "the test set."
    )


def image_section(
    pair: cached.ModelPair,
    image: np.ndarray,
    trained_map: np.ndarray,
    sal: SaliencyConfig,
    key: str,
) -> None:
    """Does the network use what the map points at? One uint8 image's (3, S, S) deletion,
    insertion and ROAD curves for the trained map (the map the page shows, of settings sal),
    the random order and the edge map, their AUCs and ROAD scores, and the perturbed images
    at a chosen step."""
    model = pair.trained
    passes = forward_passes(1, len(IMAGE_SOURCES), CONFIG, model.num_rotations)
    fills = 2 * len(CONFIG.percentages) * (len(IMAGE_SOURCES) + CONFIG.random_orders)
    st.caption(
        "Remove the pixels the map ranks first and watch the network's output: deletion greys "
        f"them towards the mean in {CONFIG.steps} steps, insertion reveals them on a blurred "
        "copy, ROAD removes the top (MoRF) or bottom (LeRF) share and fills it by noisy linear "
        "imputation. References: a random pixel order (the mean of "
        f"{CONFIG.random_orders} seeded orders: chance) and the edge map (model-free). "
        + WHY_TRAINED
    )
    st.caption(
        f"Ranked: the trained network's map shown above ({sal.method}, {sal.layer} layer, "
        f"neurons {sal.neurons}, aggregation over rotations {sal.aggregate})."
    )
    if not st.checkbox(
        f"Compute this image's curves ({passes:,} rotated copies through the network, "
        f"{fills} ROAD fills)",
        key=f"{key}-faith",
    ):
        return
    if np.ptp(trained_map) == 0:
        st.warning(
            "The trained map is constant: its pixels are ranked in raster order (row by row), "
            "which says nothing about the network."
        )
    with st.spinner("Deleting, inserting and imputing pixels..."):
        curves = image_curves(pair.checkpoint.card.ident, image, trained_map, CONFIG, model)
        pictures = image_step_pictures(image, trained_map, CONFIG)
    scores = image_scores(curves)
    st.dataframe(scores, key=f"{key}-faith-scores")
    st.caption(image_verdict(curves) + " " + DELETION_CAVEAT)
    step_panel(image, curves, pictures, key)
    export.table_buttons(
        curve_rows(curves, image=0).assign(source=lambda d: d["source"].map(FAITHFULNESS_SOURCES)),
        f"faithfulness-curves-{key}",
        key=f"{key}-faith-table",
        caption="Deletion, insertion and ROAD curves of one image",
    )


@st.fragment
def step_panel(
    image: np.ndarray,
    curves: dict[str, Curves],
    pictures: dict[str, np.ndarray],
    key: str,
) -> None:
    """The curves with the chosen step marked, and the trained map's deletion and insertion
    images at that step (only this part reruns when the step moves)."""
    with common.shown_errors("the step view"):
        trained = curves["trained"]
        step = st.slider(
            "Step (the images below and the dotted line on the curves)",
            0,
            CONFIG.steps,
            CONFIG.steps // 4,
            key=f"{key}-faith-step",
        )
        share = float(trained.fractions[step])
        aucs = per_image_rows(curves).set_index("source")[list(MEASURES)]
        fig = faithfulness_plotly(
            curve_rows(curves, image=0), source_names(list(curves)), aucs, share
        )
        st.plotly_chart(fig, key=f"{key}-faith-chart")
        c1, c2, c3 = st.columns(3)
        c1.image(render.zoom(render.hwc(image), 2), caption="the image", width="stretch")
        for col, kind, verb in ((c2, "deletion", "removed"), (c3, "insertion", "revealed")):
            col.image(render.zoom(pictures[kind][step], 2), caption=kind, width="stretch")
            col.caption(
                f"{kind}, step {step} of {CONFIG.steps}: {share:.1%} of pixels {verb}; "
                f"p(true rotation) {getattr(trained, kind)[0, step]:.3f}"
            )
        st.caption(
            "The trained map's ranking: removed pixels take the mean colour (deletion); revealed "
            f"pixels replace a Gaussian blur (kernel {CONFIG.blur_kernel}, sigma "
            f"{CONFIG.blur_sigma:g}) of the image (insertion)."
        )


# --------------------------------------------------------------------------- a test set


@st.cache_data(max_entries=16, show_spinner=False)
def checkpoint_runs(
    ckpt_id: str,
    twin_ids: tuple[str, ...],
    dkey: str,
    sal_key: str,
    n_images: int,
    methods: tuple[str, ...],
    config: FaithfulnessConfig,
    _model: RotationNet,
    _twins: dict[str, RotationNet],
    _images: np.ndarray,
    _box_masks: np.ndarray | None,
    _sal: SaliencyConfig,
    _log: Callable[[str], None] | None = None,
) -> dict[str, FaithfulnessRun]:
    """One faithfulness run per method on the first n_images test images (rotviz.study.
    faithfulness.faithfulness_methods, as the command); the keys name the weights, twins,
    data and settings."""
    return faithfulness_methods(
        _model, _images, list(methods), _sal, config, cached.runtime(), _twins, _box_masks, _log
    )


def runs_table(runs: list[tuple[Card, str, FaithfulnessRun]]) -> pd.DataFrame:
    """Rows per checkpoint, method and ranking: the cells of faithfulness_table, then the
    summary's numbers (as the command's summary JSON holds them) for the CSV."""
    frames = []
    for card, method, run in runs:
        shown = faithfulness_table(run).reset_index(drop=True)
        numbers = run.summary.drop(columns=["flag"]).reset_index(drop=True)
        frame = pd.concat([shown, numbers], axis=1)
        frame.insert(0, "ranking", [run.source_name(s) for s in run.summary["source"]])
        frame.insert(0, "method", method)
        frame.insert(0, "model", card.model)
        frame.insert(0, "checkpoint", card.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def method_progress(
    bar: Any, done_cards: int, n_cards: int, n_methods: int, name: str
) -> Callable[[str], None]:
    """A log callback for faithfulness_methods that moves the progress bar one step per
    method (the references are the first step of each checkpoint)."""
    count = 0

    def log(text: str) -> None:
        nonlocal count
        count += 1
        share = (done_cards + count / (n_methods + 1)) / n_cards
        bar.progress(min(share, 1.0), text=f"{name}: {text}")

    return log


def dataset_section(cards: list[Card], dataset: str, method: str, aggregate: str) -> None:
    """The faithfulness table of the chosen checkpoints on the first N test images of dataset:
    per checkpoint, method and ranking (trained map, both twins' maps, centre prior, edge map,
    random order), deletion AUC, insertion AUC and ROAD with intervals, and the flag."""
    st.caption(
        "Deletion, insertion and ROAD of each map used as a pixel ranking, on the rotation "
        "layer (all neurons), with 95% bootstrap intervals over the images and the paired "
        "difference to the random order. " + WHY_TRAINED + " A map counts as faithful only "
        "where it beats the random order on insertion and ROAD. " + DELETION_CAVEAT
    )
    c1, c2 = st.columns([1, 2])
    n_images = int(
        c1.number_input("Test images (the first N)", 1, 10_000, DEFAULT_IMAGES, key="good_faith_n")
    )
    methods = c2.multiselect(
        "Methods",
        list(explore.METHOD_LABELS),
        default=[method],
        format_func=explore.METHOD_LABELS.get,
        key="good_faith_methods",
    )
    if not cards or not methods:
        st.info("Choose at least one checkpoint and one method.")
        return
    passes = sum(
        forward_passes(n_images, 1 + 2 + 2, CONFIG, len(c.rotations))  # + the random order
        + (len(methods) - 1)
        * forward_passes(n_images, 1 + 2, CONFIG, len(c.rotations), with_random=False)
        for c in cards
    )
    run_key = (
        "good_faith_done",
        tuple(str(c.path) for c in cards),
        dataset,
        tuple(methods),
        aggregate,
        n_images,
    )
    done = st.session_state.get("good_faith_done") == run_key
    if not done:
        st.info(
            f"{len(cards)} checkpoint(s) x {len(methods)} method(s) on at most {n_images} test "
            f"images: about {passes:,} rotated copies through the networks, and the maps of "
            "each network and its two twins."
        )
        done = st.button("Compute the faithfulness table", key="good_faith_compute")
    if not done:
        return
    st.session_state["good_faith_done"] = run_key
    runs: list[tuple[Card, str, FaithfulnessRun]] = []
    bar = st.progress(0.0, text="Computing the faithfulness curves...")
    for i, card in enumerate(cards):
        own = common.with_local_paths(card.data_config)
        data = common.data_config(dataset) if card.dataset != dataset else None
        view_cfg = cached.viewing_config(card, data or own)
        dkey = cached.data_key(view_cfg)
        _, split = cached.split(dkey, view_cfg)
        n = min(n_images, len(split))
        if n == 0:
            st.warning(f"{card.name}: the test split is empty.")
            continue
        masks = split_box_masks(split)[:n]
        pair = cached.pair_with_twin(card, "initial")
        twins = {"initial": pair.random}
        try:
            twins["calibrated"] = cached.pair_with_twin(card, "calibrated", own, data).random
        except RotvizError as err:
            st.caption(f"{card.name}: no calibrated twin ({err}).")
        sal = SaliencyConfig(
            layer="rotation",
            neurons="all",
            method=methods[0],
            aggregate=aggregate,
            rotations=card.rotations,
        )

        log = method_progress(bar, i, len(cards), len(methods), f"{card.model} ({card.name[-8:]})")
        got = checkpoint_runs(
            card.ident,
            (*twins, ":".join(cached.data_key(d) if d else "-" for d in (own, data))),
            dkey,
            sal.key(),
            n,
            tuple(methods),
            CONFIG,
            pair.trained,
            twins,
            split.images[:n],
            masks if masks.any() else None,
            sal,
            log,
        )
        runs += [(card, m, run) for m, run in got.items()]
    bar.empty()
    if not runs:
        return
    table = runs_table(runs)
    shown = ["checkpoint", "method", "ranking"] + [
        c for c in faithfulness_table(runs[0][2]).columns
    ]
    summaries.show_table(table, column_order=shown)
    for text in dict.fromkeys(run.warning for _, _, run in runs if run.warning):
        st.warning(text)
    st.caption(
        'Intervals: 95% percentile bootstrap over the images (1,000 resamples); "- random": '
        "the paired difference to the random order on the same images. The CSV holds the "
        "numbers `python -m rotviz faithfulness` writes to faithfulness_summary.json."
    )
    export.table_buttons(
        table, f"faithfulness-{dataset}", key="good_faith", caption="Faithfulness of the maps"
    )
