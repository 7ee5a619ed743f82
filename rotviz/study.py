"""Study files (TOML): which datasets, models and settings make the study's tables.

Paths in a study file are relative to the file's own folder. See studies/*.toml.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rotviz.config import DataConfig, TrainConfig
from rotviz.errors import RotvizError
from rotviz.metrics import Absolute, Threshold, parse_threshold
from rotviz.models import STUDY_MODELS
from rotviz.pipeline import train_or_load
from rotviz.records import Dataset
from rotviz.rotation import parse_rotations
from rotviz.saliency import SaliencyConfig
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


# The seed report's thresholds and mean goodness (%) on the COCO test set, per layer and model.
STUDY_THRESHOLDS = {
    "rotation": {"efficientnet_b0": 8e-3, "mobilenet_v2": 8e-3, "six_layer": 8e-4},
    "embedding": {"efficientnet_b0": 1e-4, "mobilenet_v2": 1e-2, "six_layer": 8e-4},
}
PUBLISHED_GOODNESS = {
    "rotation": {"efficientnet_b0": 28.7, "mobilenet_v2": 31.8, "six_layer": 12.8},
    "embedding": {"efficientnet_b0": 11.6, "mobilenet_v2": 21.0, "six_layer": 6.6},
}


def default_threshold(layer: str, model: str) -> Threshold:
    """The study's absolute lambda for (layer, model); other models need an explicit threshold."""
    try:
        return Absolute(STUDY_THRESHOLDS[layer][model])
    except KeyError as err:
        raise RotvizError(
            f"the study has no threshold for {model} on the {layer} layer: give --threshold"
        ) from err


def resolve_categories(ds: Dataset, names: Sequence[str]) -> list[int] | None:
    """Category names or ids -> ids of the dataset; None (all boxes) when names is empty."""
    if not names:
        return None
    by_name = {v.lower(): k for k, v in ds.category_names.items()}
    ids = []
    for n in names:
        if str(n).isdigit() and int(n) in ds.category_names:
            ids.append(int(n))
        elif str(n).lower() in by_name:
            ids.append(by_name[str(n).lower()])
        else:
            raise RotvizError(
                f"box category {n!r} is not in {ds.name} (it has {', '.join(sorted(by_name))})"
            )
    return ids


def goodness_tables(
    study: Study,
    store: CheckpointStore,
    device: str | torch.device = "auto",
    log: Callable[[str], None] = print,
    models: list[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """The study's two goodness tables (rotation and embedding layer): mean Q (%) on the test split.

    Rows: trained, random; columns: "model (threshold)". Reads the [goodness] section:
    dataset, neurons, method, aggregate, box_categories, include_crowd, thresholds.<layer>.<model>.
    """
    from rotviz.goodness import goodness_run
    from rotviz.pipeline import load_split
    from rotviz.train import resolve_device

    spec = study.sections.get("goodness", {})
    dataset = spec.get(
        "dataset", "coco" if "coco" in study.datasets else next(iter(study.datasets))
    )
    data = study.data_config(dataset)
    dev = resolve_device(device) if isinstance(device, str) else device
    ds, test = load_split(data, "test")
    keep = resolve_categories(ds, spec.get("box_categories", []))
    tables = {}
    for layer in ("rotation", "embedding"):
        sal = SaliencyConfig(
            layer=layer,
            neurons=spec.get("neurons", "all"),
            method=spec.get("method", "saliency"),
            aggregate=spec.get("aggregate", "none"),
        )
        columns = {}
        for model in models or list(study.models):
            given = spec.get("thresholds", {}).get(layer, {}).get(model)
            threshold = (
                parse_threshold(str(given))
                if given is not None
                else default_threshold(layer, model)
            )
            ckpt = train_or_load(data, study.train_config(model), store, dev, log=log).checkpoint
            log(
                f"goodness: {model}, {layer} layer, {threshold.describe()}, {len(test)} test images"
            )
            s = goodness_run(
                ckpt, test, sal, threshold, dev, keep, spec.get("include_crowd", True)
            ).summary
            columns[f"{model} ({threshold.describe()})"] = {
                "trained": percent(s["mean_q_trained"]),
                "random": percent(s["mean_q_random"]),
                "images scored": str(s["n_scored"]),
            }
        df = pd.DataFrame(columns)
        df.index.name = f"{layer} layer"
        tables[layer] = df
    return tables
