"""Tables as Markdown, CSV or LaTeX from pandas DataFrames."""

from __future__ import annotations

import pandas as pd

from rotviz.errors import RotvizError

FORMATS = ("markdown", "csv", "latex")
EXTENSIONS = {"markdown": "md", "csv": "csv", "latex": "tex"}  # file extension of each format


def format_table(df: pd.DataFrame, fmt: str = "markdown", caption: str | None = None) -> str:
    """Render a table; the index is kept as the first column."""
    if fmt == "markdown":
        text = df.to_markdown()
        return f"{caption}\n\n{text}\n" if caption else text + "\n"
    if fmt == "csv":
        return df.to_csv()
    if fmt == "latex":
        return df.to_latex(caption=caption, escape=True)
    raise RotvizError(f"unknown table format {fmt!r}: use one of {', '.join(FORMATS)}")
