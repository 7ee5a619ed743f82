"""Drawing only: saliency overlays, masks with boxes, trained-vs-random panels, sweep plots.

Knows nothing of models. Static figures are matplotlib `Figure` objects on the Agg canvas,
created without pyplot, so they never pile up in pyplot's figure registry (the usual leak
in a long-running app) and the global backend is left alone; they export PNG, SVG and PDF
offline. The app's interactive Plotly charts: rotviz.report.charts.

Images are drawn with extent (0, W, H, 0), so pixel (r, c) covers [c, c+1) x [r, r+1) and a
box (x0, y0, x1, y1) in pixels is drawn at exactly those coordinates (the convention of
rotviz.scores.metrics.box_mask).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from rotviz.errors import RotvizError
from rotviz.scores.faithfulness import Curves
from rotviz.scores.metrics import format_q, sweep_auc
from rotviz.scores.similarity import MEASURE_LABELS, MEASURES, cascade_summary
from rotviz.study.results import NeuronView

Q_LABEL = "Q (IoU of thresholded map and boxes)"
FORMATS = ("png", "svg", "pdf")
_MASK_COLOUR = (0.0, 0.85, 1.0)  # cyan: visible on skin, fur and sky alike
_BOX_COLOUR = "#ffd400"
# Reproducible files: no timestamps, fixed SVG element ids.
_SAVE_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_rgb(image: Any) -> np.ndarray:
    """(H, W, 3) uint8 from (H, W, 3) or (3, H, W) uint8/float in [0, 1], or (H, W) grey."""
    img = _to_numpy(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise RotvizError(f"Image must be (H, W, 3) or (3, H, W), got shape {img.shape}.")
    if img.dtype != np.uint8:
        f = img.astype(np.float64)
        if f.size and f.max() <= 1.0:
            f = f * 255.0
        img = np.clip(np.round(f), 0, 255).astype(np.uint8)
    return img


def _check_hw(img: np.ndarray, other: np.ndarray, what: str) -> None:
    if other.shape != img.shape[:2]:
        raise RotvizError(
            f"{what} has shape {other.shape} but the image is {img.shape[:2]}; they must match."
        )


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _new_axes() -> Axes:
    return _new_figure((4.0, 4.0)).add_subplot()


def _show_image(ax: Axes, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    ax.imshow(img, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def overlay(
    image: Any,
    saliency: Any,
    ax: Axes | None = None,
    cmap: str = "inferno",
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
) -> AxesImage:
    """Draw a saliency map (H, W) over an image (H, W, 3) uint8; returns the map's AxesImage.

    The returned image is the mappable for a colorbar (its figure: `.figure`, axes: `.axes`).
    vmin/vmax default to the map's own min/max; pass shared values to compare maps.
    """
    img = _as_rgb(image)
    s = _to_numpy(saliency).astype(np.float64)
    _check_hw(img, s, "Saliency map")
    ax = ax if ax is not None else _new_axes()
    _show_image(ax, img)
    h, w = s.shape
    return ax.imshow(
        s,
        cmap=cmap,
        alpha=alpha,
        vmin=float(np.nanmin(s)) if vmin is None else vmin,
        vmax=float(np.nanmax(s)) if vmax is None else vmax,
        extent=(0, w, h, 0),
        interpolation="nearest",
    )


def draw_boxes(ax: Axes, boxes: Any, color: str = _BOX_COLOUR, linewidth: float = 1.5) -> None:
    """Outline boxes (K, 4) xyxy in pixels on an axes showing an image with extent (0, W, H, 0)."""
    for x0, y0, x1, y1 in _to_numpy(boxes).astype(np.float64).reshape(-1, 4):
        ax.add_patch(
            Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=linewidth)
        )


def mask_with_boxes(
    image: Any,
    mask: Any,
    boxes: Any,
    ax: Axes | None = None,
    color: tuple[float, float, float] = _MASK_COLOUR,
    alpha: float = 0.55,
) -> Axes:
    """Draw a thresholded map (H, W) bool tinted on the image (H, W, 3), with box outlines (K, 4)."""
    img = _as_rgb(image)
    m = _to_numpy(mask).astype(bool)
    _check_hw(img, m, "Mask")
    ax = ax if ax is not None else _new_axes()
    _show_image(ax, img)
    tint = np.zeros((*m.shape, 4), dtype=np.float64)
    tint[m] = (*color, alpha)
    h, w = m.shape
    ax.imshow(tint, extent=(0, w, h, 0), interpolation="nearest")
    draw_boxes(ax, boxes)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    return ax


def trained_vs_random_figure(
    image: Any,
    boxes: Any,
    map_trained: Any,
    map_random: Any,
    mask_trained: Any,
    mask_random: Any,
    q_trained: float | None,
    q_random: float | None,
    title: str = "",
    threshold: str | None = None,
    cmap: str = "inferno",
) -> Figure:
    """2x2 panel: saliency overlays (top, one shared colour scale and colorbar), thresholded
    maps with box outlines (bottom); Q in every panel title ("n/a (no boxes)" when NaN).

    Maps and masks are (H, W); the figure has 5 axes (4 panels + the colorbar). threshold is
    shown in the figure title (e.g. Absolute(8e-4).describe()), since Q depends on it.
    """
    img = _as_rgb(image)
    s_t = _to_numpy(map_trained).astype(np.float64)
    s_r = _to_numpy(map_random).astype(np.float64)
    _check_hw(img, s_t, "Trained map")
    _check_hw(img, s_r, "Random map")
    finite = np.concatenate([s_t[np.isfinite(s_t)], s_r[np.isfinite(s_r)]])
    vmin = float(finite.min()) if finite.size else 0.0
    vmax = float(finite.max()) if finite.size else 1.0

    fig = _new_figure((8.0, 8.4))
    axes = fig.subplots(2, 2)
    panels = (("trained", s_t, mask_trained, q_trained), ("random", s_r, mask_random, q_random))
    mappable = None
    for col, (name, s, mask, q) in enumerate(panels):
        qtext = format_q(q)
        mappable = overlay(img, s, ax=axes[0, col], cmap=cmap, vmin=vmin, vmax=vmax)
        draw_boxes(axes[0, col], boxes)
        axes[0, col].set_title(f"{name}: saliency\nQ = {qtext}", fontsize=10)
        mask_with_boxes(img, mask, boxes, ax=axes[1, col])
        axes[1, col].set_title(f"{name}: thresholded map + boxes\n{Q_LABEL} = {qtext}", fontsize=9)
    fig.colorbar(mappable, ax=list(axes[0, :]), shrink=0.9, label="saliency (shared scale)")
    heading = " | ".join(t for t in (title, f"threshold {threshold}" if threshold else "") if t)
    if heading:
        fig.suptitle(heading)
    return fig


def _kinds(*dfs: pd.DataFrame | None) -> list[str]:
    present = set()
    for df in dfs:
        if df is not None:
            present |= set(df["kind"])
    return [k for k in ("absolute", "percentile") if k in present]


def _auc_label(name: str, df: pd.DataFrame, kind: str) -> str:
    try:
        return f"{name} (AUC {sweep_auc(df, kind=kind):.3f})"
    except RotvizError:
        return name


def sweep_figure(df_trained: pd.DataFrame, df_random: pd.DataFrame | None = None) -> Figure:
    """Mean Q vs threshold from threshold_sweep frames: one axes per kind present (absolute on a
    log10 lambda axis, percentile on a linear axis), trained and random as two lines each."""
    kinds = _kinds(df_trained, df_random)
    if not kinds:
        raise RotvizError(
            "sweep_figure: the sweep tables have no rows; run a threshold sweep first."
        )
    fig = _new_figure((5.0 * len(kinds), 4.0))
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        for name, df, style in (("trained", df_trained, "-o"), ("random", df_random, "--s")):
            if df is None or not (df["kind"] == kind).any():
                continue
            part = df[df["kind"] == kind].sort_values("value")
            ax.plot(
                part["value"], part["mean_q"], style, markersize=3, label=_auc_label(name, df, kind)
            )
        if kind == "absolute":
            ax.set_xscale("log")
            ax.set_xlabel("absolute threshold λ (S ≥ λ)")
            ax.set_title("Q vs absolute threshold")
        else:
            ax.set_xlabel("percentile p (S ≥ p-th percentile of the map)")
            ax.set_title("Q vs percentile threshold")
        ax.set_ylabel(f"mean {Q_LABEL}", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def _check_format(fmt: str) -> str:
    f = fmt.lower().lstrip(".")
    if f not in FORMATS:
        raise RotvizError(f"Cannot export figure as {fmt!r}; choose one of {', '.join(FORMATS)}.")
    return f


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 150) -> bytes:
    """The figure encoded as png, svg or pdf bytes (for download buttons); reproducible output."""
    f = _check_format(fmt)
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "rotviz", "svg.fonttype": "path"}):
        fig.savefig(buf, format=f, dpi=dpi, metadata=_SAVE_METADATA[f])
    return buf.getvalue()


def save_figure(
    fig: Figure, path_stem: Path | str, formats: Sequence[str] = FORMATS, close: bool = True
) -> list[Path]:
    """Write the figure to path_stem + ".png"/".svg"/".pdf" (atomically); returns the paths.

    path_stem has no extension (a dot in it is kept: "fig_lam8e-4.0" -> "fig_lam8e-4.0.png").
    close=True releases the figure afterwards (also from pyplot, if it was made there).
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        f = _check_format(fmt)
        path = stem.with_name(f"{stem.name}.{f}")
        data = figure_bytes(fig, f)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(path)
    if close:
        close_figure(fig)
    return written


def close_figure(fig: Figure) -> None:
    """Release a figure: drop it from pyplot if it was made there, and clear its artists."""
    plt = sys.modules.get("matplotlib.pyplot")  # only if the caller already uses pyplot
    if plt is not None:
        plt.close(fig)
    fig.clear()


# ---------------------------------------------------------------------------------------------
# Sanity checks, probe, neurons, training
# ---------------------------------------------------------------------------------------------


def cascading_figure(
    rows: pd.DataFrame, image: object | None = None, title: str | None = None
) -> Figure:
    """Similarity to the trained map and Q against blocks randomised .

    image=None plots the mean over images with 95% bootstrap bands; otherwise that image's curves.
    """
    fig = _new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    if image is None:
        summary = cascade_summary(rows)
        x = summary["step"].to_numpy()
        labels = summary["randomised"].tolist()
        for col in (*MEASURES, "q"):
            if summary[col].isna().all():
                continue
            label = MEASURE_LABELS.get(col, "Q (goodness)")
            ax.plot(x, summary[col], marker="o", label=label)
            ax.fill_between(x, summary[f"{col}_low"], summary[f"{col}_high"], alpha=0.2)
    else:
        part = rows[rows["image"] == image].sort_values("step")
        if part.empty:
            raise RotvizError(f"image {image!r} is not in the cascading-randomisation rows")
        x = part["step"].to_numpy()
        labels = part["randomised"].tolist()
        for col in (*MEASURES, "q"):
            if part[col].isna().all():
                continue
            ax.plot(x, part[col], marker="o", label=MEASURE_LABELS.get(col, "Q (goodness)"))
    ax.set_xticks(x, [f"{s}\n{n}" for s, n in zip(x, labels, strict=True)], fontsize=7)
    ax.set_xlabel("blocks randomised (from the head down)")
    ax.set_ylabel("similarity to the trained map / Q")
    ax.set_ylim(-0.1, 1.05)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=7)
    ax.set_title(title or "Cascading randomisation")
    return fig


def label_efficiency_figure(numbers: pd.DataFrame, title: str | None = None) -> Figure:
    """Accuracy vs fraction of training labels, trained (solid) vs random (dashed), 95 % bars."""
    fig = _new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    for i, (method, part) in enumerate(numbers.groupby("method", sort=False)):
        part = part.sort_values("fraction")
        x = part["fraction"].to_numpy(dtype=float)
        for net, style in (("trained", "-"), ("random", "--")):
            y = part[net].to_numpy(dtype=float)
            err = np.stack([y - part[f"{net}_low"], part[f"{net}_high"] - y])
            ax.errorbar(
                x,
                100 * y,
                yerr=100 * err,
                fmt="o" + style,
                color=f"C{i}",
                capsize=3,
                label=f"{method}, {net}",
            )
    ax.set_xscale("log")
    xs = sorted(numbers["fraction"].unique())
    ax.set_xticks(xs, [f"{x:.0%}" for x in xs])
    ax.set_xlabel("training labels used")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7)
    ax.set_title(title or "Label efficiency: rotation-pretrained vs random")
    return fig


def contact_sheet(views: Sequence[NeuronView], title: str | None = None) -> Figure:
    """One row per view (e.g. trained, random twin): its top images with the neuron's map
    overlaid (colour scale per row, from 0 to the row's largest value)."""
    if not views:
        raise RotvizError("a contact sheet needs at least one neuron view")
    cols = max(len(v.rows) for v in views)
    fig = _new_figure((1.3 * cols + 0.4, 1.55 * len(views) + 0.4))
    grid = fig.add_gridspec(len(views), cols)
    for r, view in enumerate(views):
        vmax = float(view.maps.max()) if view.maps.size else 1.0
        for c in range(cols):
            ax = fig.add_subplot(grid[r, c])
            if c >= len(view.rows):
                ax.set_axis_off()
                continue
            overlay(view.images[c], view.maps[c], ax=ax, vmin=0.0, vmax=vmax or 1.0)
            ax.set_title(view.captions()[c], fontsize=6)
            if c == 0:
                ax.set_ylabel(f"{view.network}\n{view.layer} {view.label}", fontsize=7)
    v = views[0]
    fig.suptitle(title or f"{v.layer} neuron {v.label}: top {len(v.rows)} images", fontsize=9)
    return fig


def confusion_figure(trained: pd.DataFrame, random: pd.DataFrame) -> Figure:
    """Two confusion matrices side by side (trained, random twin) with counts in the cells."""
    fig = _new_figure((9.0, 4.0))
    for ax, (title, frame) in zip(
        fig.subplots(1, 2), (("trained", trained), ("random twin", random)), strict=True
    ):
        values = frame.to_numpy()
        ax.imshow(values, cmap="Blues")
        ax.set_xticks(
            range(len(frame.columns)), [c.replace("predicted ", "") for c in frame.columns]
        )
        ax.set_yticks(range(len(frame.index)), [i.replace("true ", "") for i in frame.index])
        ax.set_xlabel("predicted rotation")
        ax.set_ylabel("true rotation")
        ax.set_title(f"Confusion matrix, {title}")
        for (r, c), v in np.ndenumerate(values):
            ax.text(
                c,
                r,
                str(v),
                ha="center",
                va="center",
                color="black" if v < values.max() / 2 else "white",
            )
    return fig


def history_figure(history: list[dict[str, Any]]) -> Figure:
    """Mean loss and rotation accuracy per finished epoch."""
    h = pd.DataFrame(history)
    fig = _new_figure((9.0, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(h["epoch"], h["loss"], "-o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy loss")
    ax2.plot(h["epoch"], h["accuracy"], "-o")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("rotation accuracy (training)")
    ax2.set_ylim(0, 1)
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    return fig


def faithfulness_figure(
    curves: Mapping[str, Curves],
    names: Mapping[str, str] | None = None,
    image: int | None = None,
    title: str | None = None,
) -> Figure:
    """Deletion, insertion and ROAD (MoRF solid, LeRF dashed) of each ranking source: the mean
    over images of the probability of the true rotation, or one image's (image index)."""
    names = names or {}
    fig = _new_figure((13.0, 3.8))
    ax_del, ax_ins, ax_road = fig.subplots(1, 3)
    pick = (lambda a: a.mean(axis=0)) if image is None else (lambda a: a[image])
    for i, (source, c) in enumerate(curves.items()):
        colour = f"C{i}"
        label = names.get(source, source)
        scores = c.scores()
        at = slice(None) if image is None else image
        auc = {k: float(np.mean(v[at])) for k, v in scores.items()}
        ax_del.plot(
            c.fractions,
            pick(c.deletion),
            "-",
            color=colour,
            label=f"{label} ({auc['deletion_auc']:.3f})",
        )
        ax_ins.plot(
            c.fractions,
            pick(c.insertion),
            "-",
            color=colour,
            label=f"{label} ({auc['insertion_auc']:.3f})",
        )
        ax_road.plot(
            c.percentages,
            pick(c.morf),
            "-o",
            color=colour,
            markersize=3,
            label=f"{label} ({auc['road']:.3f})",
        )
        ax_road.plot(c.percentages, pick(c.lerf), "--s", color=colour, markersize=3)
    ax_del.set_title("deletion (towards the mean; lower AUC is better)", fontsize=9)
    ax_del.set_xlabel("share of pixels removed")
    ax_ins.set_title("insertion (onto a blurred copy; higher is better)", fontsize=9)
    ax_ins.set_xlabel("share of pixels revealed")
    ax_road.set_title("ROAD: MoRF solid, LeRF dashed (score higher is better)", fontsize=9)
    ax_road.set_xlabel("pixels removed and imputed (%)")
    for ax in (ax_del, ax_ins, ax_road):
        ax.set_ylabel("p(true rotation)", fontsize=8)
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
