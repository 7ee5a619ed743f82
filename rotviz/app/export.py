"""Export buttons: figures as PNG/SVG/PDF, tables as CSV/LaTeX, and a bundle zip.

Figure bytes are produced only when a button is clicked (download_button takes a callable),
so a page that merely shows a figure never pays for matplotlib.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st
from matplotlib.figure import Figure

from rotviz.nets.checkpoint import Card
from rotviz.report.figures import FORMATS, close_figure, figure_bytes
from rotviz.report.tables import EXTENSIONS, format_table

MIMES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}
CARD_FIELDS_DROPPED = ("optimizer", "card_path")


def slug(text: str) -> str:
    """A file-name-safe version of text."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "rotviz"


def figure_buttons(make_figure: Callable[[], Figure], stem: str, key: str) -> None:
    """Three download buttons (PNG, SVG, PDF) for a figure built on click."""
    cols = st.columns([1, 1, 1, 3])
    for col, fmt in zip(cols, FORMATS, strict=False):

        def data(fmt: str = fmt) -> bytes:
            fig = make_figure()
            try:
                return figure_bytes(fig, fmt)
            finally:
                close_figure(fig)

        col.download_button(
            f"Figure {fmt.upper()}",
            data=data,
            file_name=f"{slug(stem)}.{fmt}",
            mime=MIMES[fmt],
            key=f"{key}-{fmt}",
            on_click="ignore",
        )


def table_buttons(df: pd.DataFrame, stem: str, key: str, caption: str | None = None) -> None:
    """Download buttons for a table as CSV and LaTeX."""
    c1, c2, _ = st.columns([1, 1, 4])
    c1.download_button(
        "Table CSV",
        data=format_table(df, "csv"),
        file_name=f"{slug(stem)}.{EXTENSIONS['csv']}",
        mime="text/csv",
        key=f"{key}-csv",
        on_click="ignore",
    )
    c2.download_button(
        "Table LaTeX",
        data=format_table(df, "latex", caption=caption),
        file_name=f"{slug(stem)}.{EXTENSIONS['latex']}",
        mime="text/x-tex",
        key=f"{key}-tex",
        on_click="ignore",
    )


def clean_card(card: Card) -> dict[str, Any]:
    """A checkpoint card without machine-local or bulky fields."""
    return {k: v for k, v in card.raw.items() if k not in CARD_FIELDS_DROPPED}


def bundle_zip(
    figures: dict[str, Callable[[], Figure]],
    tables: dict[str, pd.DataFrame],
    settings: dict[str, Any],
    cards: list[Card],
) -> bytes:
    """A zip of figures (PNG, SVG, PDF), tables (CSV, LaTeX), settings.json and checkpoint cards."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, make in figures.items():
            fig = make()
            try:
                for fmt in FORMATS:
                    zf.writestr(f"figures/{slug(name)}.{fmt}", figure_bytes(fig, fmt))
            finally:
                close_figure(fig)
        for name, df in tables.items():
            for fmt in ("csv", "latex"):
                zf.writestr(f"scores/{slug(name)}.{EXTENSIONS[fmt]}", format_table(df, fmt))
        meta = dict(settings, exported=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        zf.writestr("settings.json", json.dumps(meta, indent=2, default=str))
        for card in cards:
            zf.writestr(
                f"cards/{slug(card.name)}.json",
                json.dumps(clean_card(card), indent=2, default=str),
            )
    return buf.getvalue()


def bundle_button(
    figures: dict[str, Callable[[], Figure]],
    tables: dict[str, pd.DataFrame],
    settings: dict[str, Any],
    cards: list[Card],
    stem: str,
    key: str,
) -> None:
    """One download button for the bundle zip, built on click."""
    st.download_button(
        "Bundle (zip: figures + scores + settings + checkpoint cards)",
        data=lambda: bundle_zip(figures, tables, settings, cards),
        file_name=f"{slug(stem)}.zip",
        mime="application/zip",
        key=f"{key}-zip",
        on_click="ignore",
        type="primary",
    )
