"""Study files (TOML): which datasets, models and settings make the study's tables.

Paths in a study file are relative to the file's own folder. See studies/*.toml.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rotviz.config import DataConfig, TrainConfig
from rotviz.errors import RotvizError
from rotviz.models import STUDY_MODELS
from rotviz.pipeline import train_or_load
from rotviz.rotation import parse_rotations
from rotviz.store import CheckpointStore
from rotviz.tables import percent

# The seed report's rotation accuracy (%), for side-by-side display.
PUBLISHED_ACCURACY = {
    "coco": {"efficientnet_b0": 54.4, "mobilenet_v2": 43.4, "six_layer": 57.6},
    "lfw": {"efficientnet_b0": 84.3, "mobilenet_v2": 60.4, "six_layer": 98.0},
    "cityscapes": {"efficientnet_b0": 99.8, "mobilenet_v2": 99.9, "six_layer": 99.4},
}


@dataclass(frozen=True)
class Study:
    """A parsed study file."""

    path: Path | None
    datasets: dict[str, DataConfig]
    models: tuple[str, ...] = STUDY_MODELS
    train: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)  # goodness, probe, sanity...

    def train_config(self, model: str, **overrides: Any) -> TrainConfig:
        """The TrainConfig for one model: the study's [train] section plus overrides."""
        values = {**self.train, **overrides, "model": model}
        if isinstance(values.get("rotations"), str):
            values["rotations"] = parse_rotations(values["rotations"])
        elif "rotations" in values:
            values["rotations"] = tuple(int(d) // 90 for d in values["rotations"])
        try:
            return TrainConfig(**values)
        except TypeError as err:
            raise RotvizError(f"study [train] section: {err}") from err

    def data_config(self, dataset: str) -> DataConfig:
        if dataset not in self.datasets:
            raise RotvizError(
                f"dataset {dataset!r} is not in the study file (it has {', '.join(self.datasets)})"
            )
        return self.datasets[dataset]


def load_study(path: str | Path) -> Study:
    """Parse a study TOML file into a Study, resolving relative paths against its folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise RotvizError(f"study file {path} not found") from err
    except tomllib.TOMLDecodeError as err:
        raise RotvizError(f"study file {path} is not valid TOML: {err}") from err
    return study_from_dict(raw, path.parent, path)


def study_from_dict(raw: dict[str, Any], base: Path, path: Path | None = None) -> Study:
    data_defaults = raw.get("data", {})
    known = {f.name for f in dataclasses.fields(DataConfig)}
    datasets = {}
    for name, spec in raw.get("datasets", {}).items():
        spec = {**data_defaults, **spec}
        spec.setdefault("dataset", name)
        for key in ("root", "ann"):
            if spec.get(key):
                spec[key] = (
                    str((base / spec[key]).resolve())
                    if not Path(spec[key]).is_absolute()
                    else spec[key]
                )
        if isinstance(spec.get("categories"), str):
            spec["categories"] = [c for c in spec["categories"].split(",") if c]
        spec["categories"] = tuple(spec.get("categories", ()))
        unknown = set(spec) - known
        if unknown:
            raise RotvizError(f"study dataset {name!r}: unknown keys {sorted(unknown)}")
        datasets[name] = DataConfig(**spec)
    if not datasets:
        raise RotvizError("the study file names no [datasets.NAME] section")
    models = tuple(raw.get("models", STUDY_MODELS))
    sections = {k: v for k, v in raw.items() if k not in ("data", "datasets", "models", "train")}
    return Study(path, datasets, models, dict(raw.get("train", {})), sections)


def accuracy_table(
    study: Study,
    store: CheckpointStore,
    device: str | torch.device = "auto",
    log: Callable[[str], None] = print,
    datasets: list[str] | None = None,
    models: list[str] | None = None,
) -> pd.DataFrame:
    """Test rotation accuracy (%) per dataset x model, trained and random twin; trains only what the store lacks.

    Rows: (dataset, "trained" | "random"); columns: models.
    """
    datasets = datasets or list(study.datasets)
    models = models or list(study.models)
    rows = {}
    for ds in datasets:
        trained, random = {}, {}
        for model in models:
            outcome = train_or_load(
                study.data_config(ds), study.train_config(model), store, device, log=log
            )
            test = outcome.checkpoint.card["metrics"]["test"]
            trained[model] = percent(test["trained"]["accuracy"])
            random[model] = percent(test["random"]["accuracy"])
        rows[(ds, "trained")] = trained
        rows[(ds, "random")] = random
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index = pd.MultiIndex.from_tuples(df.index, names=["dataset", "network"])
    return df
