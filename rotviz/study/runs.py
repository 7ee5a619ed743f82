"""Runs of the downstream probe and the saliency sanity checks over seeds, neuron sets and the
datasets x models of a study file; the CLI commands and ``rotviz study`` both call these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from rotviz.attribution.methods import METHODS
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.config import DataConfig, TrainConfig
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.store import CheckpointStore, checkpoint_key, checkpoint_name
from rotviz.nets.twin import (
    DEFAULT_TWIN,
    TWIN_NAMES,
    TWINS,
    describe_twin,
    random_twin_of,
)
from rotviz.runtime import RuntimeLike, as_runtime, preferring
from rotviz.scores.faithfulness import PERCENTAGES, STEPS, FaithfulnessConfig
from rotviz.scores.metrics import parse_threshold
from rotviz.study.consistency import consistency_run
from rotviz.study.faithfulness import faithfulness_methods
from rotviz.study.files import Study
from rotviz.study.goodness import split_box_masks
from rotviz.study.probe import (
    FRACTIONS,
    FinetuneConfig,
    probe_result,
    probe_run,
    probe_table,
    task_data,
)
from rotviz.study.results import (
    ProbeRun,
    RunContext,
    SanityRun,
    faithfulness_methods_table,
    faithfulness_table,
)
from rotviz.study.sanity import sanity_report, shuffled_config
from rotviz.training.pipeline import load_split, provenance, train_or_load

Log = Callable[[str], None]


def quiet(_: str) -> None:
    pass


def run_probe(
    data: DataConfig,
    train_cfg: TrainConfig,
    store: CheckpointStore,
    runtime: RuntimeLike = "auto",
    task: str = "auto",
    seeds: list[int] | None = None,
    fractions: list[float] | None = None,
    unfreeze_last: int | None = None,
    min_images: int = 10,
    finetune: FinetuneConfig | None = None,
    log: Log = quiet,
    checkpoint: Checkpoint | None = None,
    twin: str = DEFAULT_TWIN,
) -> ProbeRun:
    """The probe for every training seed (trains what the store lacks); with checkpoint, of that
    one network only (train_cfg unused; seeds name its seed).
    twin: which random twin each network is compared with (rotviz.nets.twin.TWINS), calibrated
    by rotviz.nets.twin's rule (said in the log)."""
    runtime = as_runtime(runtime)
    td = task_data(data, task, min_images)
    log(
        f"probe task {td.task} on {data.dataset}: {len(td.classes)} classes, "
        f"{len(td.y_train)} training and {len(td.y_test)} test images"
        + (f" ({'; '.join(td.notes)})" if td.notes else "")
    )
    frames, seeds = [], list(seeds or [train_cfg.seed])
    for seed in [None] if checkpoint else seeds:
        ckpt = (
            checkpoint
            or train_or_load(
                data, dataclasses.replace(train_cfg, seed=seed), store, runtime, log=log
            ).checkpoint
        )
        twin_model = random_twin_of(ckpt, twin, runtime, data)
        log(describe_twin(twin_model))
        frames.append(
            probe_run(
                ckpt,
                td,
                runtime,
                fractions or FRACTIONS,
                unfreeze_last,
                finetune or FinetuneConfig(),
                log=log,
                twin=twin_model,
            )
        )
    return probe_result(td, pd.concat(frames, ignore_index=True), seeds)


def run_context(
    checkpoint: Checkpoint | None, data: DataConfig, train: TrainConfig | None = None
) -> RunContext:
    """Where a run's numbers come from, for rotviz.report.writers: the network and data
    (provenance; empty without a checkpoint), the data and training settings, the card."""
    train = train or (checkpoint.train_config if checkpoint else None)
    return RunContext(
        provenance(checkpoint, data) if checkpoint else {},
        dataclasses.asdict(data),
        dataclasses.asdict(train) if train else {},
        checkpoint.card.to_dict() if checkpoint else {},
    )


def stored_shuffled_twin(ckpt: Checkpoint, store: CheckpointStore) -> Checkpoint | None:
    """The shuffled-label network of ckpt's recipe (data randomisation), if the store has it."""
    data, cfg = ckpt.data_config, shuffled_config(ckpt.train_config)
    for precision in preferring(ckpt.card.precision):
        key = checkpoint_key(data, cfg, ckpt.card.dataset_fingerprint, precision)
        if (shuffled := store.load(checkpoint_name(data, cfg, key))) is not None:
            return shuffled
    return None


def run_sanity(
    data: DataConfig,
    train_cfg: TrainConfig,
    store: CheckpointStore,
    runtime: RuntimeLike,
    sal_kwargs: dict[str, Any],
    neuron_sets: list[str],
    threshold: str | None = None,
    n_images: int = 16,
    data_randomisation: bool = True,
    log: Log = quiet,
    checkpoint: Checkpoint | None = None,
) -> SanityRun:
    """Sanity reports per neuron set on the first n_images test images (trains what the store
    lacks); with checkpoint, of that network, its shuffled-label twin read from the store if there
    (data randomisation is skipped otherwise)."""
    runtime = as_runtime(runtime)
    ckpt = checkpoint or train_or_load(data, train_cfg, store, runtime, log=log).checkpoint
    shuffled = None
    if data_randomisation and checkpoint is not None:
        shuffled = stored_shuffled_twin(checkpoint, store)
        if shuffled is None:
            log(f"data randomisation skipped: the store has no shuffled-label twin of {ckpt.name}")
    elif data_randomisation:
        log("data randomisation: the same recipe on shuffled rotation labels")
        shuffled = train_or_load(
            data, shuffled_config(train_cfg), store, runtime, log=log
        ).checkpoint
    _, test = load_split(data, "test")
    n = min(n_images, len(test))
    images = np.asarray(test.images[:n])
    masks = split_box_masks(test)[:n]
    thr = parse_threshold(threshold) if threshold else None
    ids = [r.relpath for r in test.records[:n]]
    calibrated = random_twin_of(ckpt, "calibrated", runtime, data)
    log(describe_twin(calibrated))
    reports = {}
    for neurons in neuron_sets:
        sal = SaliencyConfig(neurons=neurons, rotations=ckpt.rotations, **sal_kwargs)
        log(f"sanity checks: {n} test images, {sal.layer} layer, neurons {neurons}, {sal.method}")
        reports[neurons] = sanity_report(
            ckpt,
            images,
            sal,
            runtime,
            shuffled,
            masks if masks.any() else None,
            thr,
            ids,
            calibrated_twin=calibrated,
        )
    return SanityRun(ckpt.name, reports, ids, calibrated.calibration.describe())


def probe_and_sanity_tables(
    study: Study,
    store: CheckpointStore,
    runtime: RuntimeLike = "auto",
    log: Log = quiet,
) -> dict[str, pd.DataFrame]:
    """Tables of a study's [probe], [sanity], [consistency] and [faithfulness] sections: "probe
    <dataset> <model>", "sanity ...", "cascading ...", "consistency <dataset> <model>" and
    "faithfulness <dataset> <model>" frames (display strings with intervals; numeric ones end
    in " numbers")."""
    runtime = as_runtime(runtime)
    tables: dict[str, pd.DataFrame] = {}
    spec = study.sections.get("probe")
    if spec:
        datasets = spec.get("datasets", list(study.datasets))
        models = spec.get("models", list(study.models))
        fractions = [float(f) for f in spec.get("fractions", [0.01, 0.1, 1.0])]
        ft = FinetuneConfig(
            epochs=int(spec.get("finetune_epochs", 10)), lr=float(spec.get("finetune_lr", 1e-3))
        )
        for ds in datasets:
            for model in models:
                cfg = study.train_config(model)
                numbers = run_probe(
                    study.data_config(ds),
                    cfg,
                    store,
                    runtime,
                    spec.get("tasks", {}).get(ds, "auto"),
                    [int(s) for s in spec.get("seeds", [cfg.seed])],
                    fractions,
                    spec.get("unfreeze_last"),
                    int(spec.get("min_images", 10)),
                    ft,
                    log,
                    twin=study.twin,
                ).numbers
                tables[f"probe {ds} {model}"] = probe_table(numbers)
                tables[f"probe {ds} {model} numbers"] = numbers
    spec = study.sections.get("sanity")
    if spec:
        datasets = spec.get("datasets", [next(iter(study.datasets))])
        models = spec.get("models", list(study.models))
        sal = {
            "layer": spec.get("layer", "rotation"),
            "method": spec.get("method", "saliency"),
            "aggregate": spec.get("aggregate", "none"),
        }
        for ds in datasets:
            for model in models:
                got = run_sanity(
                    study.data_config(ds),
                    study.train_config(model),
                    store,
                    runtime,
                    sal,
                    list(spec.get("neurons", ["all"])),
                    spec.get("threshold", "pct:95"),
                    int(spec.get("images", 16)),
                    bool(spec.get("data_randomisation", True)),
                    log,
                )
                for neurons, rep in got.reports.items():
                    tables[f"sanity {ds} {model} {neurons}"] = rep.table
                    tables[f"sanity {ds} {model} {neurons} numbers"] = rep.numbers
                    tables[f"cascading {ds} {model} {neurons}"] = rep.cascade_table
    spec = study.sections.get("consistency")
    if spec:
        sal = SaliencyConfig(
            layer=spec.get("layer", "rotation"),
            neurons=spec.get("neurons", "all"),
            method=spec.get("method", "saliency"),
        )
        for ds in spec.get("datasets", [next(iter(study.datasets))]):
            data = study.data_config(ds)
            _, test = load_split(data, "test")
            images = test.images[: int(spec.get("images", 32))]
            for model in spec.get("models", list(study.models)):
                ckpt = train_or_load(data, study.train_config(model), store, runtime, log=log)
                log(f"consistency: {ds} {model}, {len(images)} test images")
                twin = random_twin_of(ckpt.checkpoint, study.twin, runtime, data)
                log(describe_twin(twin))
                run = consistency_run(ckpt.checkpoint, images, sal, runtime, twin)
                table = run.table
                table.attrs.update(numbers=run.numbers, twin=TWIN_NAMES[study.twin])
                tables[f"consistency {ds} {model}"] = table
                tables[f"consistency {ds} {model} numbers"] = run.numbers
    tables.update(faithfulness_tables(study, store, runtime, log))
    return tables


def faithfulness_tables(
    study: Study,
    store: CheckpointStore,
    runtime: RuntimeLike = "auto",
    log: Log = quiet,
) -> dict[str, pd.DataFrame]:
    """The [faithfulness] section's tables: per dataset and model, "faithfulness <dataset>
    <model>" (one row per ranking source; with several methods, one per method and the
    references) and its numbers. Keys: datasets, models, layer, neurons, method (a name, a
    list or "all"), aggregate, images (default 64), steps, percentages, twins (default true)."""
    spec = study.sections.get("faithfulness")
    if not spec:
        return {}
    runtime = as_runtime(runtime)
    method = spec.get("method", "saliency")
    methods = (
        list(METHODS)
        if method == "all"
        else ([method] if isinstance(method, str) else list(method))
    )
    sal = SaliencyConfig(
        layer=spec.get("layer", "rotation"),
        neurons=spec.get("neurons", "all"),
        method=methods[0],
        aggregate=spec.get("aggregate", "none"),
    )
    config = FaithfulnessConfig(
        steps=int(spec.get("steps", STEPS)),
        percentages=tuple(spec.get("percentages", PERCENTAGES)),
    )
    tables: dict[str, pd.DataFrame] = {}
    for ds in spec.get("datasets", [next(iter(study.datasets))]):
        data = study.data_config(ds)
        _, test = load_split(data, "test")
        n = min(int(spec.get("images", 64)), len(test))
        images = test.images[:n]
        masks = split_box_masks(test)[:n]
        for model in spec.get("models", list(study.models)):
            ckpt = train_or_load(
                data, study.train_config(model), store, runtime, log=log
            ).checkpoint
            twins = {}
            if spec.get("twins", True):
                for kind in TWINS:
                    twins[kind] = random_twin_of(ckpt, kind, runtime, data)
                    log(describe_twin(twins[kind]))
            log(f"faithfulness: {ds} {model}, {n} test images, {', '.join(methods)}")
            runs = faithfulness_methods(
                ckpt.model,
                images,
                methods,
                sal,
                config,
                runtime,
                twins,
                masks if masks.any() else None,
            )
            table = (
                faithfulness_table(runs[methods[0]])
                if len(methods) == 1
                else faithfulness_methods_table(runs)
            )
            numbers = pd.concat(
                [r.summary.assign(method=m) for m, r in runs.items()], ignore_index=True
            )
            table.attrs.update(numbers=numbers)
            tables[f"faithfulness {ds} {model}"] = table
            tables[f"faithfulness {ds} {model} numbers"] = numbers
    return tables
