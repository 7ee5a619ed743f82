"""Tables the pages show, assembled from store cards and dataset loaders (display glue only)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd
import streamlit as st

from rotviz.app import common
from rotviz.app.cached import data_key
from rotviz.config import DataConfig
from rotviz.data.datasets import load_dataset
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Card
from rotviz.nets.models import STUDY_MODELS
from rotviz.scores.published import PUBLISHED_ACCURACY, published_accuracy


@st.cache_data(show_spinner="Counting images...", max_entries=32)
def split_counts(key: str, _cfg: DataConfig) -> dict[str, int]:
    """Images per split of a dataset."""
    ds = load_dataset(_cfg)
    counts = Counter(r.split for r in ds.records)
    return {"train": counts.get("train", 0), "test": counts.get("test", 0)}


def add_dataset(kind: str, root: str, ann: str | None) -> dict[str, int]:
    """Check a dataset path by loading it; remember it for the session; its split counts."""
    if not root.strip():
        raise RotvizError(f"give the path of the {kind} folder first")
    if kind == "coco" and not (ann or "").strip():
        raise RotvizError("COCO needs the instances json as well as the images folder")
    cfg = DataConfig(kind, root=root.strip(), ann=(ann or "").strip() or None)
    counts = split_counts(data_key(cfg), cfg)
    common.dataset_paths()[kind] = {"root": cfg.root, **({"ann": cfg.ann} if cfg.ann else {})}
    return counts


def dataset_table() -> pd.DataFrame:
    """One row per available dataset: name, source, images per split, boxes."""
    rows = []
    for name in common.available_datasets():
        cfg = common.data_config(name)
        counts = split_counts(data_key(cfg), cfg)
        paths = common.dataset_paths().get(name, {})
        rows.append(
            {
                "dataset": common.DATASET_LABELS.get(name, name),
                "source": paths.get(
                    "root",
                    "LFW patches + 9 photos with boxes, shipped by scikit-image, scikit-learn, matplotlib",
                ),
                "training images": counts["train"],
                "test images": counts["test"],
                "boxes (for Q)": "yes" if name in ("demo", "coco") else "no",
            }
        )
    return pd.DataFrame(rows)


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def checkpoint_table(cards: list[Card]) -> pd.DataFrame:
    """Store cards as a table: recipe, rotation accuracy (trained, random), trained when, name."""
    rows = [
        {
            **c.recipe.columns(),
            "epochs": c.epochs_done,
            "rotation accuracy, trained (%)": _percent(c.test_accuracy("trained")),
            "rotation accuracy, random twin (%)": _percent(c.test_accuracy("initial")),
            "test images": c.n_test_images,
            "study recipe": "yes" if c.recipe.is_study() else "no",
            "precise BN": "yes" if c.precise_bn else "no",
            "trained when": c.saved[:19].replace("T", " "),
            "store": c.origin,
            "name": c.name,
        }
        for c in cards
    ]
    return pd.DataFrame(rows)


def accuracy_tables(cards: list[Card]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(study rows, other networks): test rotation accuracy (%) recorded in the cards.

    The first table has one row per dataset x model: the newest network of the study's
    recipe (all four rotations, real labels, all images) beside the study's published number.
    Every other network (shuffled labels, rotation subsets, --max-images runs, older seeds)
    is in the second table with what sets it apart, never beside the published figures.
    """
    newest: dict[tuple[str, str], Card] = {}
    for c in cards:  # cards come newest first
        if c.recipe.is_study():
            newest.setdefault((c.dataset, c.model), c)
    shown = {id(c) for c in newest.values()}
    datasets = sorted({d for d, _ in newest} | set(PUBLISHED_ACCURACY))
    models = list(STUDY_MODELS) + sorted({m for _, m in newest} - set(STUDY_MODELS))
    rows = []
    for ds in datasets:
        for model in models:
            card = newest.get((ds, model))
            published = published_accuracy(ds, model)
            if card is None and published is None:
                continue
            rows.append(
                {
                    "dataset": ds,
                    "model": model,
                    "ours, trained (%)": _percent(card.test_accuracy("trained")) if card else None,
                    "ours, random twin, initial statistics (%)": _percent(
                        card.test_accuracy("initial")
                    )
                    if card
                    else None,
                    "ours, random twin, calibrated statistics (%)": _percent(
                        card.test_accuracy("calibrated")
                    )
                    if card
                    else None,
                    "precise BN": ("yes" if card.precise_bn else "no") if card else None,
                    "published, trained (%)": published,
                    "epochs": card.epochs_done if card else None,
                    "seed": card.recipe.seed if card else None,
                    "test images": card.n_test_images if card else None,
                    "checkpoint": card.name if card else None,
                    "store": card.origin if card else None,
                }
            )
    others = [
        {
            **c.recipe.columns(),
            "accuracy, trained (%)": _percent(c.test_accuracy("trained")),
            "accuracy, random twin, initial statistics (%)": _percent(c.test_accuracy("initial")),
            "accuracy, random twin, calibrated statistics (%)": _percent(
                c.test_accuracy("calibrated")
            ),
            "chance (%)": 100 / len(c.recipe.rotations),
            "why not beside the study": "; ".join(c.recipe.deviations())
            or "an older network of the same recipe",
            "checkpoint": c.name,
            "store": c.origin,
        }
        for c in cards
        if id(c) not in shown
    ]
    return pd.DataFrame(rows), pd.DataFrame(others)


EMPTY_CELL = "—"  # what a missing cell reads on screen (Streamlit would print "None")


def _cell_text(value: object, percent_column: bool) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return EMPTY_CELL
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if percent_column:
        return f"{value:.1f}"
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def display_frame(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """A table for the screen: every missing cell of the shown columns (all by default) reads
    "—"; a column holding one becomes text, percentages with one decimal. Complete columns, and
    columns not shown, keep their numbers."""
    out = df.copy()
    for col in out.columns if columns is None else columns:
        if out[col].isna().any():
            percent_column = str(col).endswith("(%)")
            out[col] = [_cell_text(v, percent_column) for v in out[col].astype(object)]
    return out


def percent_formats(df: pd.DataFrame) -> dict[str, st.column_config.NumberColumn]:
    """One decimal for every numeric column whose name ends in "(%)"."""
    return {
        str(c): st.column_config.NumberColumn(str(c), format="%.1f")
        for c in df.columns
        if str(c).endswith("(%)") and pd.api.types.is_float_dtype(df[c])
    }


def show_table(df: pd.DataFrame, column_order: list[str] | None = None, **kwargs: Any) -> None:
    """st.dataframe of a table as display_frame shows it, percentages with one decimal."""
    shown = display_frame(df, column_order)
    config = {**percent_formats(shown), **(kwargs.pop("column_config", None) or {})}
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_order=column_order,
        column_config=config,
        **kwargs,
    )
