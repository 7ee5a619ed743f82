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

from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import DataConfig, TrainConfig
from rotviz.data.records import Dataset
from rotviz.data.rotation import parse_rotations
from rotviz.errors import RotvizError
from rotviz.nets.evaluate import accuracy_comparison
from rotviz.nets.models import STUDY_MODELS
from rotviz.nets.store import CheckpointStore
from rotviz.nets.twin import DEFAULT_TWIN, TWIN_NAMES, TWINS, describe_twin, random_twin_of
from rotviz.runtime import RuntimeLike, as_runtime
from rotviz.scores.metrics import parse_threshold
from rotviz.scores.published import default_threshold
from rotviz.study.goodness import goodness_cells, goodness_run
from rotviz.study.results import interval_cells
from rotviz.training.pipeline import load_split, train_or_load


@dataclass(frozen=True)
class Study:
    """A parsed study file."""

    path: Path | None
    datasets: dict[str, DataConfig]
    models: tuple[str, ...] = STUDY_MODELS
    train: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)  # goodness, probe, sanity...
    twin: str = DEFAULT_TWIN  # the random twin every table compares with (top-level key)

    def seeds(self) -> list[int]:
        """Training seeds: [train] seeds = [0, 1, 2] when given, else [train] seed (default 0)."""
        seeds = self.train.get("seeds")
        if seeds is None:
            return [int(self.train.get("seed", TrainConfig.seed))]
        if isinstance(seeds, int):
            seeds = [seeds]
        try:
            out = [int(s) for s in seeds]
        except (TypeError, ValueError):
            raise RotvizError(
                f"study [train] seeds = {seeds!r}: give a list, e.g. [0, 1, 2]"
            ) from None
        if not out:
            raise RotvizError("study [train] seeds is empty: give at least one seed")
        return out

    def train_config(self, model: str, **overrides: Any) -> TrainConfig:
        """The TrainConfig for one model: the study's [train] section plus overrides.

        With [train] seeds = [...] the first seed is the default (override seed= for others).
        """
        values = {k: v for k, v in self.train.items() if k != "seeds"}
        if "seeds" in self.train and "seed" not in overrides:
            values["seed"] = self.seeds()[0]
        values = {**values, **overrides, "model": model}
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
    sections = {
        k: v for k, v in raw.items() if k not in ("data", "datasets", "models", "train", "twin")
    }
    twin = raw.get("twin", DEFAULT_TWIN)
    if twin not in TWINS:
        raise RotvizError(f"study twin = {twin!r}: choose one of {', '.join(TWINS)}")
    for name, keys in SECTION_KEYS.items():
        check_section(name, sections.get(name), keys, datasets)
    study = Study(path, datasets, models, dict(raw.get("train", {})), sections, twin)
    study.seeds()  # a bad seeds list fails here, not after hours of training
    return study


# Keys of the optional sections (read by rotviz.study.runs.probe_and_sanity_tables).
SECTION_KEYS = {
    "consistency": {"datasets", "models", "layer", "neurons", "method", "images"},
    "faithfulness": {
        "datasets",
        "models",
        "layer",
        "neurons",
        "method",
        "aggregate",
        "images",
        "steps",
        "percentages",
        "twins",
    },
    "probe": {
        "datasets",
        "models",
        "fractions",
        "seeds",
        "min_images",
        "unfreeze_last",
        "finetune_epochs",
        "finetune_lr",
        "tasks",
    },
    "sanity": {
        "datasets",
        "models",
        "layer",
        "neurons",
        "method",
        "aggregate",
        "threshold",
        "images",
        "data_randomisation",
    },
}


def check_section(name: str, spec: Any, keys: set[str], datasets: dict[str, DataConfig]) -> None:
    """RotvizError for a [probe]/[sanity] section with unknown keys or datasets the file lacks."""
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise RotvizError(f"study [{name}] must be a section (a table of keys)")
    unknown = set(spec) - keys
    if unknown:
        raise RotvizError(
            f"study [{name}]: unknown keys {sorted(unknown)} (known: {', '.join(sorted(keys))})"
        )
    missing = [d for d in spec.get("datasets", []) if d not in datasets]
    if missing:
        raise RotvizError(
            f"study [{name}] names datasets {missing} that have no [datasets.NAME] section"
        )


def _seed_configs(study: Study, model: str) -> list[TrainConfig]:
    """One TrainConfig per training seed of the study ([train] seeds, else its seed)."""
    return [study.train_config(model, seed=s) for s in study.seeds()]


def accuracy_table(
    study: Study,
    store: CheckpointStore,
    runtime: RuntimeLike = "auto",
    log: Callable[[str], None] = print,
    datasets: list[str] | None = None,
    models: list[str] | None = None,
) -> pd.DataFrame:
    """Test rotation accuracy (%) per dataset x model, trained and random twin, as
    "mean [95% CI]" over test images; trains only what the store lacks.

    Rows: (dataset, trained | random | difference | p (Wilcoxon)), plus
    (dataset, "trained, over seeds" | "random, over seeds") when [train] has several seeds;
    columns: models. The numeric intervals (fractions) are in df.attrs["numbers"], one row
    per dataset and model, for CSV.
    """
    runtime = as_runtime(runtime)
    datasets = datasets or list(study.datasets)
    models = models or list(study.models)
    cells: dict[tuple[str, str], dict[str, str]] = {}
    numbers = []
    for ds in datasets:
        data = study.data_config(ds)
        test = None
        for model in models:
            ckpts = [
                train_or_load(data, cfg, store, runtime, log=log).checkpoint
                for cfg in _seed_configs(study, model)
            ]
            if test is None:
                _, test = load_split(data, "test")
            if len(test) == 0:
                raise RotvizError(f"{ds}: the test split is empty, nothing to evaluate")
            twins = [random_twin_of(c, study.twin, runtime, data) for c in ckpts]
            for twin in twins:
                log(describe_twin(twin))
            cmp, seeds = accuracy_comparison(ckpts, test.images, runtime, twins=twins)
            shown, nums = interval_cells(cmp, seeds)
            for row, text in shown.items():
                cells.setdefault((ds, row), {})[model] = text
            numbers.append({"dataset": ds, "model": model, **nums})
    df = pd.DataFrame.from_dict(cells, orient="index")
    df.index = pd.MultiIndex.from_tuples(df.index, names=["dataset", "network"])
    df.attrs["numbers"] = pd.DataFrame(numbers)
    df.attrs["twin"] = TWIN_NAMES[study.twin]
    return df


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
    runtime: RuntimeLike = "auto",
    log: Callable[[str], None] = print,
    models: list[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """The study's two goodness tables (rotation and embedding layer): mean Q (%) on the test
    images with boxes, "mean [95% CI]" over images.

    Rows: trained, random, difference, p (Wilcoxon), images scored (plus "trained, over
    seeds", "random, over seeds" with several [train] seeds), the share of pixels on per
    network and the threshold's reach, Q at pct:95 of both networks and of the model-free
    baselines (rotviz.scores.baselines), and the flag "does not beat the ..."; columns: "model (threshold)";
    numeric intervals in df.attrs["numbers"]. Reads the [goodness] section:
    dataset, neurons, method, aggregate, box_categories, include_crowd, thresholds.<layer>.<model>.
    """
    runtime = as_runtime(runtime)
    spec = study.sections.get("goodness", {})
    dataset = spec.get(
        "dataset", "coco" if "coco" in study.datasets else next(iter(study.datasets))
    )
    data = study.data_config(dataset)
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
        columns, numbers = {}, []
        for model in models or list(study.models):
            given = spec.get("thresholds", {}).get(layer, {}).get(model)
            threshold = (
                parse_threshold(str(given))
                if given is not None
                else default_threshold(layer, model)
            )
            runs = []
            for cfg in _seed_configs(study, model):
                ckpt = train_or_load(data, cfg, store, runtime, log=log).checkpoint
                log(
                    f"goodness: {model} (seed {cfg.seed}), {layer} layer, "
                    f"{threshold.describe()}, {len(test)} test images"
                )
                runs.append(
                    goodness_run(
                        ckpt,
                        test,
                        sal,
                        threshold,
                        runtime,
                        keep,
                        spec.get("include_crowd", True),
                        twin=random_twin_of(ckpt, study.twin, runtime, data),
                        twin_name=TWIN_NAMES[study.twin],
                    )
                )
            shown, nums = goodness_cells(runs)
            name = f"{model} ({threshold.describe()})"
            columns[name] = shown
            numbers.append({"model": model, "threshold": threshold.describe(), **nums})
        df = pd.DataFrame(columns)
        df.index.name = f"{layer} layer"
        df.attrs["numbers"] = pd.DataFrame(numbers)
        df.attrs["twin"] = TWIN_NAMES[study.twin]
        tables[layer] = df
    return tables
