"""Saliency widgets shared by the Saliency and Your images pages: settings, thresholds, panels."""

from __future__ import annotations

import random as _random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from rotviz.app import cached, common, export, render
from rotviz.attribution.methods import METHODS, method_warning
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.nets.twin import DEFAULT_TWIN, TWIN_NAMES, TWINS
from rotviz.report.charts import sweep_plotly
from rotviz.report.figures import trained_vs_random_figure
from rotviz.scores.metrics import Absolute, BoxArea, Percentile, Threshold, format_q, fraction_on
from rotviz.scores.published import study_lambda
from rotviz.scores.similarity import spearman_similarity
from rotviz.study.consistency import back_rotated_maps
from rotviz.study.results import reach_note

METHOD_LABELS = {
    "saliency": "saliency |∂a/∂x| (the study)",
    "integrated_gradients": "integrated gradients",
    "smoothgrad": "SmoothGrad",
    "gradcam": "Grad-CAM",
    "guided_backprop": "guided backprop",
}
AGGREGATE_LABELS = {  # the study's choice first: it is the default of every page
    "none": "none (upright image only; the study)",
    "mean": "mean of the rotated copies",
    "max": "max of the rotated copies",
}
NEURON_CHOICES = {
    "all": "all neurons of the layer",
    "predicted": "the predicted rotation",
    "true": "the true rotation (0°)",
    "indices": "neuron indices...",
    "topk": "top-k most active...",
}
MODES = {
    "absolute": "absolute λ (the study)",
    "percentile": "percentile of the map",
    "box-area": "box area (as many pixels as the boxes)",
}


def twin_select(key: str) -> str:
    """Which random twin to compare with (default: calibrated BatchNorm statistics)."""
    return st.radio(
        "Random twin",
        list(TWINS),
        index=list(TWINS).index(DEFAULT_TWIN),
        format_func=TWIN_NAMES.get,
        horizontal=True,
        key=f"{key}-twin",
        help="The same network untrained. Initial statistics: BatchNorm as initialised (mean 0, "
        "variance 1), the study's baseline; its gradients are orders of magnitude smaller, so "
        "at an absolute λ it scores 0 by construction. Calibrated: the same weights with "
        "BatchNorm statistics recomputed on the training images.",
    )


def lambda_options() -> list[float]:
    """Absolute thresholds on a log grid from 1e-7 to 1, plus the study's values."""
    grid = {float(f"{v:.2g}") for v in np.logspace(-7, 0, 57)}
    grid |= {8e-3, 8e-4, 1e-4, 1e-2}
    return sorted(grid)


def settings_widgets(key: str) -> SaliencyConfig:
    """Layer, neuron set, method and aggregation; the validated SaliencyConfig."""
    c1, c2, c3, c4 = st.columns(4)
    layer = c1.radio(
        "Layer",
        ["rotation", "embedding"],
        key=f"{key}-layer",
        help="rotation: the output logits of the rotation head; embedding: the pooled features before it.",
    )
    choice = c2.selectbox(
        "Neuron set",
        list(NEURON_CHOICES),
        format_func=NEURON_CHOICES.get,
        key=f"{key}-neurons",
        help="The map of a set is the pixel-wise max of its neurons' maps.",
    )
    neurons = choice
    if choice == "indices":
        neurons = c2.text_input("Indices (comma-separated)", "0,1", key=f"{key}-indices")
    elif choice == "topk":
        neurons = f"topk:{c2.number_input('k', 1, 4096, 5, key=f'{key}-k')}"
    method = c3.selectbox("Method", METHODS, format_func=METHOD_LABELS.get, key=f"{key}-method")
    aggregate = c4.selectbox(
        "Aggregation over rotations",
        list(AGGREGATE_LABELS),
        format_func=AGGREGATE_LABELS.get,
        key=f"{key}-aggregate",
        help="Each rotated copy's map is rotated back to the upright frame, then combined.",
    )
    return SaliencyConfig(layer=layer, neurons=neurons, method=method, aggregate=aggregate)


def threshold_widgets(key: str, model: str, layer: str, has_boxes: bool) -> Threshold:
    """Threshold mode and value. It opens scale-free (box area where the image has boxes, else
    the 95th percentile), where trained and twin maps differ at first sight; the study's absolute
    λ (log-scale slider at the study's value, with its reach note) is one click away."""
    c1, c2 = st.columns([1, 2])
    first = "box-area" if has_boxes else "percentile"
    mode = c1.radio(
        "Threshold",
        list(MODES),
        index=list(MODES).index(first),
        format_func=MODES.get,
        key=f"{key}-mode",
    )
    study = study_lambda(layer, model)
    if mode == "absolute":
        lam = c2.select_slider(
            "λ: S_p = 1 where saliency S ≥ λ (log scale)",
            options=lambda_options(),
            value=study,
            format_func=lambda v: f"{v:.1e}",
            key=f"{key}-lam-{model}-{layer}",
            help=f"The study used λ = {study:.0e} for {model} on the {layer} layer.",
        )
        return Absolute(float(lam))
    if mode == "percentile":
        p = c2.slider(
            "p: S_p = 1 where S ≥ the p-th percentile of the map",
            0.0,
            100.0,
            95.0,
            0.5,
            key=f"{key}-pct",
        )
        threshold: Threshold = Percentile(float(p))
    else:
        c2.caption(
            "S_p = the |B| most salient pixels, |B| = the number of pixels inside the boxes."
        )
        threshold = BoxArea()
    c2.caption(
        f"Scale-free: the same share of pixels in both maps. The study's absolute λ = {study:.0e} "
        f"({model}, {layer} layer): choose “{MODES['absolute']}”."
    )
    return threshold


@dataclass
class Shown:
    """What one image's panel showed (for exports)."""

    view: render.ThresholdView
    scores: pd.DataFrame


def color_strip(vmin: float, vmax: float) -> np.ndarray:
    """A horizontal colour bar (20, 256, 3) for the shared scale."""
    strip = np.tile(np.linspace(vmin, vmax, 256), (20, 1))
    return render.colorize(strip, vmin, vmax)


def maps_panel(
    image: np.ndarray, boxes: np.ndarray, maps: tuple[np.ndarray, np.ndarray], caption: str
) -> None:
    """The image with its boxes, then the trained and random maps on one colour scale."""
    img = render.hwc(image)
    vmin, vmax = render.shared_scale(*maps)
    c1, c2, c3 = st.columns(3)
    c1.image(
        render.draw_boxes(render.zoom(img), boxes, render.ZOOM), caption=caption, width="stretch"
    )
    c2.image(
        render.draw_boxes(
            render.zoom(render.overlay(img, maps[0], vmin, vmax)), boxes, render.ZOOM
        ),
        caption="trained: saliency",
        width="stretch",
    )
    c3.image(
        render.draw_boxes(
            render.zoom(render.overlay(img, maps[1], vmin, vmax)), boxes, render.ZOOM
        ),
        caption="random twin: saliency",
        width="stretch",
    )
    st.image(color_strip(vmin, vmax), width=384)
    st.caption(
        f"Shared colour scale for both maps: dark = {vmin:.2e}, bright = {vmax:.2e} "
        f"(max trained {maps[0].max():.2e}, max random {maps[1].max():.2e}). Yellow: boxes."
    )


def value_range_text(maps: tuple[np.ndarray, np.ndarray], threshold: Threshold) -> str:
    """Where each map's values lie (5th, 50th, 95th percentile) beside the threshold, and what
    an absolute λ then does (rotviz.study.results.reach_note)."""
    parts = []
    for name, m in zip(("trained", "random twin"), maps, strict=True):
        p5, p50, p95 = np.percentile(m, (5, 50, 95))
        text = f"{name}: 5th {p5:.1e}, median {p50:.1e}, 95th {p95:.1e}"
        if isinstance(threshold, Absolute):
            note = reach_note(fraction_on(threshold.mask(m)))
            text += f" ({note})" if note else ""
        parts.append(text)
    lam = f" λ = {threshold.lam:.1e}." if isinstance(threshold, Absolute) else ""
    return "Map values, percentiles — " + "; ".join(parts) + "." + lam


def consistency_panel(pair: cached.ModelPair, image: np.ndarray, sal: SaliencyConfig) -> None:
    """The four back-rotated maps of one image, trained and twin, with Spearman vs the upright map."""
    for name, model in (("trained", pair.trained), ("random twin", pair.random)):
        maps = back_rotated_maps(model, image[None], sal, next(model.parameters()).device)
        vmin, vmax = render.shared_scale(*[m[0] for m in maps.values()])
        cols = st.columns(4)
        for col, (k, m) in zip(cols, maps.items(), strict=True):
            rho = spearman_similarity(m[0], maps[0][0])
            col.image(render.zoom(render.overlay(render.hwc(image), m[0], vmin, vmax)))
            col.caption(f"{name}, rotated {90 * k}°, turned back: Spearman {rho:.3f}")


def threshold_panel(
    image: np.ndarray,
    boxes: np.ndarray,
    maps: tuple[np.ndarray, np.ndarray],
    threshold: Threshold,
    sweeps: tuple[pd.DataFrame, pd.DataFrame] | None,
    key: str,
) -> Shown:
    """Masks with box outlines and Q for trained and random, and this image's Q-vs-threshold curve."""
    size = image.shape[-1]
    mask = cached.boxes_mask(boxes, size)
    if isinstance(threshold, BoxArea) and not mask.any():
        st.warning(
            "This image has no boxes, so the box-area threshold is empty; choose another mode."
        )
    view = render.threshold_view(image, boxes, mask, maps, threshold)
    c1, c2 = st.columns(2)
    for col, name, q, frac, pic in (
        (c1, "trained", view.q_trained, view.fraction_trained, view.picture_trained),
        (c2, "random twin", view.q_random, view.fraction_random, view.picture_random),
    ):
        col.metric(f"Q, {name}", format_q(q), help=common.Q_HELP)
        col.image(
            pic,
            caption=f"{name}: thresholded map S_p (cyan) and boxes (yellow); {frac:.1%} of pixels on",
            width=384,
        )
    st.caption(common.Q_HELP + f" Threshold: {threshold.describe()}.")
    st.caption(value_range_text(maps, threshold))
    if isinstance(threshold, Absolute) and view.fraction_trained == 0 and view.fraction_random == 0:
        st.info(
            f"No pixel reaches λ = {threshold.lam:.1e} in either map (max trained {maps[0].max():.1e}, "
            f"random {maps[1].max():.1e}): lower λ, or use a percentile threshold, which does not "
            "depend on the model's gradient scale."
        )
    if sweeps is not None:
        fig = sweep_plotly(*sweeps)
        if isinstance(threshold, Absolute):
            fig.add_vline(x=threshold.lam, line_dash="dot", line_color="grey", row=1, col=1)
        elif isinstance(threshold, Percentile):
            fig.add_vline(x=threshold.p, line_dash="dot", line_color="grey", row=1, col=2)
        fig.update_layout(
            title="This image's Q vs threshold (dotted: the threshold above)",
            height=360,
            margin={"l": 10, "r": 10, "t": 60, "b": 10},
            legend={"orientation": "h", "y": -0.25},
        )
        fig.update_yaxes(title_text="Q (IoU)")
        st.plotly_chart(fig, key=f"{key}-sweep")
    scores = pd.DataFrame(
        [
            {
                "network": name,
                "threshold": threshold.describe(),
                "Q (IoU of S_p and boxes)": q,
                "fraction of pixels on": frac,
                "box fraction": float(mask.mean()),
            }
            for name, q, frac in (
                ("trained", view.q_trained, view.fraction_trained),
                ("random twin", view.q_random, view.fraction_random),
            )
        ]
    )
    return Shown(view, scores)


def exports(
    image: np.ndarray,
    boxes: np.ndarray,
    maps: tuple[np.ndarray, np.ndarray],
    shown: Shown,
    threshold: Threshold,
    title: str,
    settings: dict[str, Any],
    cards: list[dict[str, Any]],
    key: str,
) -> None:
    """Figure (PNG/SVG/PDF), scores (CSV/LaTeX) and bundle downloads of one image's panel."""
    view = shown.view

    def make_figure() -> Any:
        return trained_vs_random_figure(
            render.hwc(image),
            boxes,
            maps[0],
            maps[1],
            view.mask_trained,
            view.mask_random,
            view.q_trained,
            view.q_random,
            title=title,
            threshold=threshold.describe(),
        )

    st.caption("Export")
    export.figure_buttons(make_figure, f"saliency-{title}", key=f"{key}-fig")
    export.table_buttons(shown.scores, f"scores-{title}", key=f"{key}-tab", caption=title)
    export.bundle_button(
        {"trained_vs_random": make_figure},
        {"scores": shown.scores},
        settings,
        cards,
        f"rotviz-{title}",
        key=f"{key}-bundle",
    )


def warn_method(model: Any, method: str) -> None:
    """Show the method's caveat for this model (e.g. guided backprop on SiLU), if any."""
    text = method_warning(model, method)
    if text:
        st.warning(text)


def random_choice(options: list[int], state_key: str) -> None:
    """on_click: put a random option into a widget's session_state slot."""
    if options:
        st.session_state[state_key] = _random.choice(options)


# Boxes covering most of an image make every map score about the boxes' share at the box-area
# threshold: the page opens on an image whose boxes leave the maps room to differ.
FIRST_IMAGE_BOX_SHARE = (0.05, 0.5)


def first_image(boxes: list[np.ndarray], candidates: list[int], size: int) -> int:
    """The candidate the page opens on: the first whose boxes cover 5-50 % of the image, else
    the first candidate."""
    low, high = FIRST_IMAGE_BOX_SHARE
    for i in candidates:
        if len(boxes[i]) and low <= cached.boxes_mask(boxes[i], size).mean() <= high:
            return i
    return candidates[0]
