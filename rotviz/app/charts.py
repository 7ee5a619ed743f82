"""Plotly charts of the app that rotviz.report.figures does not have: live training, confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from plotly.subplots import make_subplots


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


# Static (matplotlib) versions for export. TEMPORARY here: they belong in rotviz/report/figures.py.


def confusion_figure(trained: pd.DataFrame, random: pd.DataFrame) -> Figure:
    """Two confusion matrices side by side (trained, random twin) with counts in the cells."""
    fig = Figure(figsize=(9.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
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
    fig = Figure(figsize=(9.0, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
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
