"""Commands ``probe`` and ``sanity`` for ``python -m rotviz`` (the runs themselves: rotviz.study.runs).

rotviz.cli.main registers them with ``probe_cli.add_commands(sub)`` in build_parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from rotviz.cli.options import (
    add_checkpoint_option,
    add_data_options,
    add_train_options,
    checkpoint_store,
    data_config,
    log,
    network,
    run_config,
    served_train_config,
)
from rotviz.errors import RotvizError
from rotviz.report import figures
from rotviz.report.tables import FORMATS, format_table
from rotviz.runtime import as_runtime
from rotviz.scores.stats import percent
from rotviz.study.probe import FinetuneConfig, probe_table
from rotviz.study.runs import run_probe, run_sanity
from rotviz.training.pipeline import provenance

Log = Callable[[str], None]


def parse_list(text: str, kind: type, what: str) -> list:
    """ "0,1,2" -> [0, 1, 2]; RotvizError naming the option on a bad value."""
    try:
        values = [kind(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise RotvizError(f"{what} {text!r}: give comma-separated numbers, e.g. 0,1,2") from None
    if not values:
        raise RotvizError(f"{what}: give at least one value")
    return values


def parse_fractions(text: str) -> list[float]:
    """ "1%,10%,100%" or "0.01,0.1,1" -> [0.01, 0.1, 1.0]."""
    out = []
    for v in str(text).split(","):
        v = v.strip()
        if not v:
            continue
        try:
            f = float(v[:-1]) / 100 if v.endswith("%") else float(v)
        except ValueError:
            raise RotvizError(
                f"--fractions {text!r}: write e.g. 1%,10%,100% or 0.01,0.1,1"
            ) from None
        if not 0 < f <= 1:
            raise RotvizError(f"--fractions: {v} is not in (0, 100%]")
        out.append(f)
    if not out:
        raise RotvizError("--fractions: give at least one fraction")
    return out


# --------------------------------------------------------------------------- probe


def cmd_probe(args: argparse.Namespace) -> int:

    data, store, runtime = data_config(args), checkpoint_store(args), as_runtime(run_config(args))
    ckpt = None
    if args.checkpoint:  # one network, as given; else each seed's network of --dataset
        ckpt, data = network(args, data, store, runtime)
    tcfg = ckpt.train_config if ckpt else served_train_config(args, data, store)
    seeds = [tcfg.seed] if ckpt or not args.seeds else parse_list(args.seeds, int, "--seeds")
    probed = run_probe(
        data,
        tcfg,
        store,
        runtime,
        args.task,
        seeds,
        parse_fractions(args.fractions),
        args.unfreeze_last,
        args.min_images,
        FinetuneConfig(epochs=args.finetune_epochs, lr=args.finetune_lr),
        log=log,
        checkpoint=ckpt,
        twin=args.twin,
    )
    numbers = probed.numbers
    table = probe_table(numbers)
    caption = (
        f"Probe accuracy (%) on {data.dataset} ({probed.task}, {len(probed.classes)} classes, "
        f"chance {percent(probed.chance)}), mean [95% CI], seeds {seeds}"
    )
    text = format_table(table, args.format, caption=caption)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    probed.per_image.to_csv(out / "probe_per_image.csv", index=False)
    numbers.to_csv(out / "probe.csv", index=False)
    for fmt in FORMATS:
        ext = {"markdown": "md", "csv": "table.csv", "latex": "tex"}[fmt]
        (out / f"probe.{ext}").write_text(format_table(table, fmt, caption=caption))
    fig = figures.label_efficiency_figure(
        numbers, title=f"Label efficiency, {data.dataset} ({probed.task})"
    )
    figures.save_figure(fig, out / "label_efficiency", formats=args.figure_formats.split(","))
    (out / "probe_summary.json").write_text(
        json.dumps(
            {
                "task": probed.task,
                "classes": probed.classes,
                "notes": probed.notes,
                "seeds": seeds,
                "n_train": probed.n_train,
                "n_test": probed.n_test,
                "chance": probed.chance,
                "source": provenance(ckpt, data) if ckpt else None,
                "data": dataclasses.asdict(data),
                "train": dataclasses.asdict(tcfg),
            },
            indent=2,
            default=str,
        )
    )
    log(f"wrote {out}/probe.csv, probe.md/.tex/.table.csv, probe_per_image.csv, label_efficiency.*")
    return 0


# --------------------------------------------------------------------------- sanity


def cmd_sanity(args: argparse.Namespace) -> int:

    data, store, runtime = data_config(args), checkpoint_store(args), as_runtime(run_config(args))
    ckpt = None
    if args.checkpoint:
        ckpt, data = network(args, data, store, runtime)
    tcfg = ckpt.train_config if ckpt else served_train_config(args, data, store)
    got = run_sanity(
        data,
        tcfg,
        store,
        runtime,
        {"layer": args.layer, "method": args.method, "aggregate": args.aggregate},
        args.neurons or ["all"],
        args.threshold,
        args.images,
        not args.no_data_randomisation,
        log=log,
        checkpoint=ckpt,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    formats = args.figure_formats.split(",")
    for i, (neurons, rep) in enumerate(got.reports.items()):
        tag = f"neurons{i}"
        caption = (
            f"Saliency sanity checks, {data.dataset} {got.checkpoint}, {args.layer} layer, "
            f"neurons {neurons}: similarity to the trained map, mean [95% CI] over images"
        )
        print(format_table(rep.table, args.format, caption=caption))
        print(
            format_table(
                rep.cascade_table.round(3),
                args.format,
                caption=f"Cascading randomisation (neurons {neurons})",
            )
        )
        rep.numbers.assign(neurons=neurons).to_csv(out / f"sanity_{tag}.csv", index=False)
        (out / f"sanity_{tag}.tex").write_text(format_table(rep.table, "latex", caption=caption))
        for name, df in rep.similarities.items():
            slug = name.replace(" ", "_").replace("-", "_")
            df.to_csv(out / f"similarity_{tag}_{slug}.csv", index=False)
        rep.cascade.rows.assign(neurons=neurons).to_csv(out / f"cascading_{tag}.csv", index=False)
        rep.cascade_table.to_csv(out / f"cascading_summary_{tag}.csv", index=False)
        figures.save_figure(
            figures.cascading_figure(
                rep.cascade.rows, title=f"Cascading randomisation, neurons {neurons}"
            ),
            out / f"cascading_{tag}",
            formats=formats,
        )
        for image in got.ids[: args.figures]:
            stem = Path(str(image)).stem
            figures.save_figure(
                figures.cascading_figure(rep.cascade.rows, image=image, title=str(image)),
                out / f"cascading_{tag}_{stem}",
                formats=formats,
            )
    log(f"wrote {out}/sanity_*.csv, cascading_*.csv and figures")
    return 0


# --------------------------------------------------------------------------- registration


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``probe`` and ``sanity`` on the CLI's subparsers."""
    p = sub.add_parser(
        "probe",
        help="downstream task on frozen features (linear, k-NN, fine-tune), trained vs random",
    )
    add_data_options(p)
    add_train_options(p)
    add_checkpoint_option(p)
    g = p.add_argument_group("probe")
    g.add_argument(
        "--task",
        default="auto",
        help="auto (by dataset), face (demo), identity (lfw), catdog (coco), folder, city (cityscapes)",
    )
    g.add_argument(
        "--min-images", type=int, default=10, help="identity: people with at least N images (10)"
    )
    g.add_argument(
        "--unfreeze-last",
        type=int,
        default=None,
        metavar="K",
        help="also fine-tune the last K blocks plus a new linear head (0: the head only)",
    )
    g.add_argument("--finetune-epochs", type=int, default=10, help="fine-tuning epochs (10)")
    g.add_argument("--finetune-lr", type=float, default=1e-3, help="fine-tuning Adam lr (1e-3)")
    g.add_argument(
        "--fractions", default="1%,10%,100%", help="training labels used (default 1%%,10%%,100%%)"
    )
    g.add_argument(
        "--seeds", default=None, help="training seeds, e.g. 0,1,2 (default: --seed); trains each"
    )
    g.add_argument("--format", choices=FORMATS, default="markdown")
    g.add_argument("--out", default="probe", help="output folder (default probe/)")
    g.add_argument("--figure-formats", default="png", help="comma-separated: png,svg,pdf")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser(
        "sanity",
        help="saliency sanity checks: model, cascading and data randomisation (Adebayo et al. 2018)",
    )
    add_data_options(p)
    add_train_options(p)
    add_checkpoint_option(p)
    g = p.add_argument_group("sanity")
    g.add_argument("--layer", choices=["rotation", "embedding"], default="rotation")
    g.add_argument(
        "--neurons",
        action="append",
        help="neuron set, repeatable: all, predicted, true, topk:K, 3,17,42 (default all)",
    )
    g.add_argument("--method", default="saliency")
    g.add_argument("--aggregate", choices=["none", "mean", "max"], default="none")
    g.add_argument(
        "--threshold",
        default="pct:95",
        help="threshold for Q along the cascade (default pct:95, scale-free); Q needs boxes",
    )
    g.add_argument("--images", type=int, default=16, help="first N test images (default 16)")
    g.add_argument(
        "--no-data-randomisation",
        action="store_true",
        help="skip training the shuffled-label model",
    )
    g.add_argument("--format", choices=FORMATS, default="markdown")
    g.add_argument("--out", default="sanity", help="output folder (default sanity/)")
    g.add_argument("--figures", type=int, default=1, help="per-image cascading plots (default 1)")
    g.add_argument("--figure-formats", default="png", help="comma-separated: png,svg,pdf")
    p.set_defaults(func=cmd_sanity)
