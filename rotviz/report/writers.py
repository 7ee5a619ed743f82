"""Save a run's files (CSV, JSON, tables, figures, settings): the CLI's commands and a notebook
write the same files with these.

Each ``save_*`` takes a typed result (rotviz.study.results) and the facts of where it came
from (RunContext), writes into a folder (created if missing) and returns the paths written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rotviz.data.preprocess import PreparedSplit
from rotviz.report import figures
from rotviz.report.tables import EXTENSIONS, FORMATS, format_table
from rotviz.scores.faithfulness import curve_rows
from rotviz.scores.metrics import Threshold
from rotviz.scores.stats import percent
from rotviz.study.results import (
    ConsistencyRun,
    FaithfulnessRun,
    GoodnessRun,
    NeuronsRun,
    ProbeRun,
    RunContext,
    SanityRun,
    faithfulness_methods_table,
    faithfulness_table,
    goodness_baselines,
    sweeps,
)


@dataclass
class Saved:
    """The files a save_* wrote, and how many of them are per-image figures."""

    folder: Path
    paths: list[Path]
    figures: int = 0


def table_file(out: Path, stem: str, fmt: str) -> Path:
    """out/stem.md, .csv or .tex for a table format (rotviz.report.tables.FORMATS)."""
    return Path(out) / f"{stem}.{EXTENSIONS[fmt]}"


def _folder(out: Path | str) -> Path:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _csv(df: pd.DataFrame, path: Path, paths: list[Path]) -> None:
    df.to_csv(path, index=False)
    paths.append(path)


def _text(text: str, path: Path, paths: list[Path]) -> None:
    path.write_text(text)
    paths.append(path)


# --------------------------------------------------------------------------- goodness


def save_goodness(
    run: GoodnessRun,
    split: PreparedSplit,
    threshold: Threshold,
    out: Path | str,
    context: RunContext,
    n_figures: int = 0,
    figure_formats: Sequence[str] = ("png",),
    save_maps: bool = False,
) -> Saved:
    """goodness.csv (per image, with provenance columns), baselines.csv, sweep.csv and sweep
    figures (when an image has boxes), summary.json (summary, provenance, settings, card),
    maps.npz when save_maps, and n_figures trained|random figures of images with boxes."""
    folder, paths = _folder(out), []
    _csv(run.rows.assign(**context.source), folder / "goodness.csv", paths)
    base, _ = goodness_baselines([run])
    _csv(base, folder / "baselines.csv", paths)
    if save_maps:
        path = folder / "maps.npz"
        np.savez_compressed(
            path,
            trained=run.maps_trained,
            random=run.maps_random,
            masks=run.masks,
            files=np.array([r.relpath for r in split.records]),
        )
        paths.append(path)
    if run.summary.n_scored:
        sweep = sweeps(run)
        _csv(sweep, folder / "sweep.csv", paths)
        fig = figures.sweep_figure(
            sweep[sweep.network == "trained"], sweep[sweep.network == "random"]
        )
        paths += figures.save_figure(fig, folder / "sweep", formats=figure_formats)
    summary = {
        **run.summary.to_dict(),
        **context.source,
        "settings": {"data": context.data, "train": context.train},
        "card": context.card,
    }
    _text(json.dumps(summary, indent=2, default=str), folder / "summary.json", paths)
    written = 0
    for i in range(len(split)):
        if written >= n_figures:
            break
        if not run.masks[i].any():
            continue
        fig = figures.trained_vs_random_figure(
            split.images[i].transpose(1, 2, 0),
            split.boxes[i],
            run.maps_trained[i],
            run.maps_random[i],
            threshold.mask(run.maps_trained[i], run.masks[i]),
            threshold.mask(run.maps_random[i], run.masks[i]),
            run.rows.q_trained[i],
            run.rows.q_random[i],
            title=f"{split.records[i].relpath} ({threshold.describe()})",
        )
        paths += figures.save_figure(fig, folder / f"figure_{written:03d}", formats=figure_formats)
        written += 1
    return Saved(folder, paths, written)


# --------------------------------------------------------------------------- consistency


def save_consistency(
    run: ConsistencyRun, files: Sequence[str], out: Path | str, fmt: str = "markdown"
) -> Saved:
    """consistency.csv (per image and rotation, with the image's file), consistency_table.csv
    (numbers) and the table as consistency.md/.csv/.tex (fmt). files: one per image row index."""
    folder, paths = _folder(out), []
    names = np.asarray(files)[run.rows["image"].to_numpy()]
    calibration = np.where(run.rows["network"] == "trained", "", run.twin_calibration)
    rows = run.rows.assign(file=names, twin_calibration=calibration)
    _csv(rows, folder / "consistency.csv", paths)
    _csv(run.numbers, folder / "consistency_table.csv", paths)
    _text(format_table(run.table, fmt), table_file(folder, "consistency", fmt), paths)
    return Saved(folder, paths)


# --------------------------------------------------------------------------- probe


def probe_caption(run: ProbeRun) -> str:
    """The probe table's caption: dataset, task, classes, chance, seeds."""
    return (
        f"Probe accuracy (%) on {run.dataset} ({run.task}, {len(run.classes)} classes, "
        f"chance {percent(run.chance)}), mean [95% CI], seeds {run.seeds}"
    )


def save_probe(
    run: ProbeRun,
    table: pd.DataFrame,
    out: Path | str,
    context: RunContext,
    figure_formats: Sequence[str] = ("png",),
) -> Saved:
    """probe_per_image.csv, probe.csv (numbers), the table (rotviz.study.probe.probe_table) as
    probe.md, probe.table.csv and probe.tex, label_efficiency figures and probe_summary.json
    (task, seeds, provenance when one network was given, data and training settings)."""
    folder, paths = _folder(out), []
    _csv(run.per_image, folder / "probe_per_image.csv", paths)
    _csv(run.numbers, folder / "probe.csv", paths)
    caption = probe_caption(run)
    for fmt in FORMATS:
        stem = "probe.table" if fmt == "csv" else "probe"  # probe.csv holds the numbers
        _text(format_table(table, fmt, caption=caption), table_file(folder, stem, fmt), paths)
    fig = figures.label_efficiency_figure(
        run.numbers, title=f"Label efficiency, {run.dataset} ({run.task})"
    )
    paths += figures.save_figure(fig, folder / "label_efficiency", formats=figure_formats)
    summary = {
        "task": run.task,
        "classes": run.classes,
        "notes": run.notes,
        "seeds": run.seeds,
        "n_train": run.n_train,
        "n_test": run.n_test,
        "chance": run.chance,
        "source": context.source or None,
        "data": context.data,
        "train": context.train,
    }
    _text(json.dumps(summary, indent=2, default=str), folder / "probe_summary.json", paths)
    return Saved(folder, paths)


# --------------------------------------------------------------------------- sanity


def sanity_caption(run: SanityRun, dataset: str, layer: str, neurons: str) -> str:
    """The caption of one neuron set's sanity table."""
    return (
        f"Saliency sanity checks, {dataset} {run.checkpoint}, {layer} layer, "
        f"neurons {neurons}: similarity to the trained map, mean [95% CI] over images"
    )


def save_sanity(
    run: SanityRun,
    dataset: str,
    layer: str,
    out: Path | str,
    n_figures: int = 1,
    figure_formats: Sequence[str] = ("png",),
) -> Saved:
    """Per neuron set i: sanity_neurons{i}.csv (numbers) and .tex, similarity_neurons{i}_*.csv
    (per image, per comparison), cascading_neurons{i}.csv and cascading_summary_neurons{i}.csv,
    the cascade's figure and n_figures per-image cascade figures."""
    folder, paths = _folder(out), []
    for i, (neurons, rep) in enumerate(run.reports.items()):
        tag = f"neurons{i}"
        caption = sanity_caption(run, dataset, layer, neurons)
        _csv(rep.numbers.assign(neurons=neurons), folder / f"sanity_{tag}.csv", paths)
        tex = format_table(rep.table, "latex", caption=caption)
        _text(tex, table_file(folder, f"sanity_{tag}", "latex"), paths)
        for name, df in rep.similarities.items():
            slug = name.replace(" ", "_").replace("-", "_")
            _csv(df, folder / f"similarity_{tag}_{slug}.csv", paths)
        _csv(rep.cascade.rows.assign(neurons=neurons), folder / f"cascading_{tag}.csv", paths)
        _csv(rep.cascade_table, folder / f"cascading_summary_{tag}.csv", paths)
        paths += figures.save_figure(
            figures.cascading_figure(
                rep.cascade.rows, title=f"Cascading randomisation, neurons {neurons}"
            ),
            folder / f"cascading_{tag}",
            formats=figure_formats,
        )
        for image in run.ids[:n_figures]:
            stem = Path(str(image)).stem
            paths += figures.save_figure(
                figures.cascading_figure(rep.cascade.rows, image=image, title=str(image)),
                folder / f"cascading_{tag}_{stem}",
                formats=figure_formats,
            )
    return Saved(folder, paths)


# --------------------------------------------------------------------------- neurons


def save_neurons(
    run: NeuronsRun, out: Path | str, figure_formats: Sequence[str] = ("png",)
) -> Saved:
    """neurons.csv (the top-k table) and one contact sheet per chosen neuron in sheets/
    (LAYER_NNNN.png...); reads run.sheets, so a run is saved once."""
    folder, paths = _folder(out), []
    _csv(run.table, folder / "neurons.csv", paths)
    n_sheets = 0
    for name, views in run.sheets:
        paths += figures.save_figure(
            figures.contact_sheet(views), folder / "sheets" / name, figure_formats
        )
        n_sheets += 1
    return Saved(folder, paths, n_sheets)


# --------------------------------------------------------------------------- faithfulness


def mean_curves(run: FaithfulnessRun) -> pd.DataFrame:
    """Each source's mean curves over images: source, curve (deletion, insertion, morf, lerf),
    x (share of pixels, or ROAD percentage), score (probability of the true rotation), accuracy."""
    return curve_rows(run.curves)


def save_faithfulness(
    run: FaithfulnessRun,
    files: Sequence[str],
    out: Path | str,
    context: RunContext,
    figure_formats: Sequence[str] = ("png",),
    fmt: str = "markdown",
    stem: str = "faithfulness",
) -> Saved:
    """stem.csv (per source and image, with the image's file and provenance columns),
    stem_curves.csv (mean curves), stem_summary.json (intervals, flags, settings, provenance,
    the twins' calibration), the table (fmt) and the curve figure stem.png/.svg/.pdf."""
    folder, paths = _folder(out), []
    names = np.asarray(files, dtype=object)[run.rows["image"].to_numpy()]
    _csv(run.rows.assign(file=names, **context.source), folder / f"{stem}.csv", paths)
    _csv(mean_curves(run), folder / f"{stem}_curves.csv", paths)
    summary = {
        "method": run.method,
        "warning": run.warning,
        "sources": {s: run.source_name(s) for s in run.curves},
        "summary": run.summary.to_dict(orient="records"),
        "twin_calibration": run.twin_calibration,
        "settings": {**run.settings, "data": context.data, "train": context.train},
        **context.source,
        "card": context.card,
    }
    path = folder / f"{stem}_summary.json"
    _text(json.dumps(summary, indent=2, default=str), path, paths)
    table = faithfulness_table(run)
    _text(format_table(table, fmt), table_file(folder, f"{stem}_table", fmt), paths)
    names_by_source = {s: run.source_name(s) for s in run.curves}
    fig = figures.faithfulness_figure(
        run.curves,
        names_by_source,
        title=f"Faithfulness of the {run.method} map (mean over images)",
    )
    paths += figures.save_figure(fig, folder / stem, formats=figure_formats)
    return Saved(folder, paths, 1)


def save_faithfulness_methods(
    runs: dict[str, FaithfulnessRun],
    files: Sequence[str],
    out: Path | str,
    context: RunContext,
    figure_formats: Sequence[str] = ("png",),
    fmt: str = "markdown",
) -> Saved:
    """faithfulness_methods (the methods table, fmt) and faithfulness_methods.csv (numbers:
    one row per method and source), plus each method's files (save_faithfulness) in out/METHOD/."""
    folder, paths = _folder(out), []
    table = faithfulness_methods_table(runs)
    _text(format_table(table, fmt), table_file(folder, "faithfulness_methods", fmt), paths)
    numbers = pd.concat([r.summary.assign(method=m) for m, r in runs.items()], ignore_index=True)
    _csv(numbers, folder / "faithfulness_methods_numbers.csv", paths)
    written = 0
    for method, run in runs.items():
        saved = save_faithfulness(run, files, folder / method, context, figure_formats, fmt)
        paths += saved.paths
        written += saved.figures
    return Saved(folder, paths, written)
