"""Interactive Plotly charts for the app: threshold sweeps, saliency heatmaps, live training,
confusion matrices. Drawing only, from frames and arrays (static figures: rotviz.report.figures).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rotviz.errors import RotvizError
from rotviz.report.figures import Q_LABEL, _as_rgb, _auc_label, _check_hw, _kinds, _to_numpy


def sweep_plotly(df_trained: pd.DataFrame, df_random: pd.DataFrame | None = None) -> Any:
    """Interactive plotly version of sweep_figure: one subplot per threshold kind."""
    kinds = _kinds(df_trained, df_random)
    if not kinds:
        raise RotvizError(
            "sweep_plotly: the sweep tables have no rows; run a threshold sweep first."
        )
    titles = ["Q vs absolute threshold λ" if k == "absolute" else "Q vs percentile" for k in kinds]
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=titles)
    for col, kind in enumerate(kinds, start=1):
        for name, df, dash in (("trained", df_trained, "solid"), ("random", df_random, "dash")):
            if df is None or not (df["kind"] == kind).any():
                continue
            part = df[df["kind"] == kind].sort_values("value")
            fig.add_trace(
                go.Scatter(
                    x=part["value"],
                    y=part["mean_q"],
                    mode="lines+markers",
                    name=f"{_auc_label(name, df, kind)} [{kind}]",
                    line={"dash": dash},
                    customdata=part["n"],
                    hovertemplate="threshold %{x:.3g}<br>mean Q %{y:.3f}<br>n=%{customdata}",
                ),
                row=1,
                col=col,
            )
        if kind == "absolute":
            fig.update_xaxes(type="log", title_text="λ", row=1, col=col)
        else:
            fig.update_xaxes(title_text="percentile", row=1, col=col)
        fig.update_yaxes(title_text=f"mean {Q_LABEL}", rangemode="tozero", row=1, col=col)
    return fig


def saliency_heatmap_plotly(
    saliency: Any,
    image: Any = None,
    title: str = "",
    zmin: float | None = None,
    zmax: float | None = None,
    opacity: float = 0.5,
    colorscale: str = "Inferno",
) -> Any:
    """Interactive heatmap of a saliency map (H, W), over the image (H, W, 3) when given."""
    s = _to_numpy(saliency).astype(np.float64)
    if s.ndim != 2:
        raise RotvizError(f"Saliency map must be (H, W), got shape {s.shape}.")
    fig = go.Figure()
    if image is not None:
        img = _as_rgb(image)
        _check_hw(img, s, "Saliency map")
        fig.add_trace(go.Image(z=img, hoverinfo="skip"))
    finite = s[np.isfinite(s)]
    fig.add_trace(
        go.Heatmap(
            z=s,
            zmin=float(finite.min()) if zmin is None and finite.size else zmin,
            zmax=float(finite.max()) if zmax is None and finite.size else zmax,
            colorscale=colorscale,
            opacity=opacity if image is not None else 1.0,
            hovertemplate="row %{y}, col %{x}<br>S = %{z:.3g}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(title=title, margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    return fig


def training_chart(
    steps: list[dict[str, float]], history: list[dict[str, Any]] | None = None
) -> go.Figure:
    """Loss and rotation accuracy per step (thin lines) and per finished epoch (markers)."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("cross-entropy loss", "rotation accuracy (training batches)"),
    )
    if steps:
        df = pd.DataFrame(steps)
        fig.add_trace(
            go.Scatter(
                x=df["epoch"], y=df["loss"], mode="lines", name="loss per step", line={"width": 1}
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=df["epoch"],
                y=df["accuracy"],
                mode="lines",
                name="accuracy per step",
                line={"width": 1},
            ),
            row=1,
            col=2,
        )
    if history:
        h = pd.DataFrame(history)
        fig.add_trace(
            go.Scatter(x=h["epoch"], y=h["loss"], mode="markers+lines", name="epoch mean loss"),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=h["epoch"], y=h["accuracy"], mode="markers+lines", name="epoch mean accuracy"
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=2)
    fig.update_layout(
        height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h"}
    )
    return fig


def confusion_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """A RotationEval dict's confusion matrix as a labelled frame (rows true, columns predicted)."""
    degrees = metrics["rotations_degrees"]
    return pd.DataFrame(
        metrics["confusion"],
        index=[f"true {d}°" for d in degrees],
        columns=[f"predicted {d}°" for d in degrees],
    )


def confusion_chart(frame: pd.DataFrame, title: str) -> go.Figure:
    """Heatmap of a confusion frame with the counts written in the cells."""
    fig = go.Figure(
        go.Heatmap(
            z=frame.values,
            x=list(frame.columns),
            y=list(frame.index),
            colorscale="Blues",
            text=frame.values,
            texttemplate="%{text}",
            showscale=False,
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


# the curve panels of faithfulness_plotly: (curves drawn, title, x axis title)
_FAITHFULNESS_PANELS = (
    (("deletion",), "deletion (lower AUC is better)", "share of pixels removed"),
    (("insertion",), "insertion (higher AUC is better)", "share of pixels revealed"),
    (("morf", "lerf"), "ROAD: MoRF solid, LeRF dashed", "pixels removed and imputed (%)"),
)


def faithfulness_plotly(
    frame: pd.DataFrame,
    names: dict[str, str] | None = None,
    aucs: pd.DataFrame | None = None,
    step: float | None = None,
) -> go.Figure:
    """Interactive deletion, insertion and ROAD curves, one colour per ranking source.

    frame: long rows source, curve (deletion, insertion, morf, lerf), x, score
    (rotviz.scores.faithfulness.curve_rows); names: display name per source; aucs: a frame
    indexed by source with deletion_auc, insertion_auc and road shown on hover; step: a
    share of pixels marked by a dotted line on the deletion and insertion panels. One legend
    entry per source; the AUCs and ROAD scores show on hover.
    """
    names = names or {}
    if frame.empty:
        raise RotvizError("faithfulness_plotly: the curve table has no rows.")
    fig = make_subplots(rows=1, cols=3, subplot_titles=[p[1] for p in _FAITHFULNESS_PANELS])
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
    measures = {"deletion": "deletion_auc", "insertion": "insertion_auc", "morf": "road"}
    for i, source in enumerate(dict.fromkeys(frame["source"])):
        colour = palette[i % len(palette)]
        label = names.get(source, source)
        for col, (kinds, _, _) in enumerate(_FAITHFULNESS_PANELS, start=1):
            for kind in kinds:
                part = frame[(frame["source"] == source) & (frame["curve"] == kind)]
                if part.empty:
                    continue
                measure = ""
                if kind in measures and aucs is not None and source in aucs.index:
                    value = aucs.loc[source, measures[kind]]
                    measure = f" ({'ROAD score' if kind == 'morf' else 'AUC'} {value:.3f})"
                fig.add_trace(
                    go.Scatter(
                        x=part["x"],
                        y=part["score"],
                        mode="lines+markers",
                        name=label,
                        legendgroup=source,
                        showlegend=col == 1,
                        line={"color": colour, "dash": "dash" if kind == "lerf" else "solid"},
                        marker={"size": 4},
                        hovertemplate=f"{label}, {kind}{measure}<br>x %{{x:.3g}}<br>"
                        "p(true rotation) %{y:.3f}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
    for col, (_, _, x_title) in enumerate(_FAITHFULNESS_PANELS, start=1):
        fig.update_xaxes(title_text=x_title, row=1, col=col)
        fig.update_yaxes(range=[0, 1], title_text="p(true rotation)", row=1, col=col)
    if step is not None:
        for col in (1, 2):
            fig.add_vline(x=step, line_dash="dot", line_color="grey", row=1, col=col)
    fig.update_layout(
        height=400,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig
