"""Tables the pages show, assembled from store cards and dataset loaders (display glue only)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd
import streamlit as st

from rotviz.config import DataConfig
from rotviz.datasets import load_dataset
from rotviz.errors import RotvizError
from rotviz.models import STUDY_MODELS
from rotviz.study import PUBLISHED_ACCURACY
from rotviz.ui import common
from rotviz.ui.cached import data_key


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


def _accuracy(card: dict[str, Any], which: str) -> float | None:
    value = card.get("metrics", {}).get("test", {}).get(which, {}).get("accuracy")
    return round(100 * value, 1) if isinstance(value, (int, float)) else None


def checkpoint_table(cards: list[dict[str, Any]]) -> pd.DataFrame:
    """Store cards as a table: dataset, model, epochs, rotation accuracy (trained, random), trained when."""
    rows = [
        {
            "dataset": c.get("dataset"),
            "model": c.get("model"),
            "epochs": c.get("epochs_done"),
            "rotations (°)": ",".join(str(90 * k) for k in c["train_config"].get("rotations", [])),
            "rotation accuracy, trained (%)": _accuracy(c, "trained"),
            "rotation accuracy, random twin (%)": _accuracy(c, "random"),
            "test images": c.get("n_test_images"),
            "trained when": str(c.get("saved", ""))[:19].replace("T", " "),
            "name": c.get("name"),
        }
        for c in cards
    ]
    return pd.DataFrame(rows)


def accuracy_table(cards: list[dict[str, Any]]) -> pd.DataFrame:
    """Rotation accuracy (%) per dataset x model from the store (newest card of each pair),
    trained and random, beside the study's published numbers where it has them."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for c in cards:  # cards come newest first
        newest.setdefault((c["dataset"], c["model"]), c)
    datasets = sorted({d for d, _ in newest} | set(PUBLISHED_ACCURACY))
    models = list(STUDY_MODELS) + sorted({m for _, m in newest} - set(STUDY_MODELS))
    rows = []
    for ds in datasets:
        for model in models:
            card = newest.get((ds, model))
            published = PUBLISHED_ACCURACY.get(ds, {}).get(model)
            if card is None and published is None:
                continue
            rows.append(
                {
                    "dataset": ds,
                    "model": model,
                    "ours, trained (%)": _accuracy(card, "trained") if card else None,
                    "ours, random twin (%)": _accuracy(card, "random") if card else None,
                    "published, trained (%)": published,
                    "epochs": card.get("epochs_done") if card else None,
                    "test images": card.get("n_test_images") if card else None,
                }
            )
    return pd.DataFrame(rows)
