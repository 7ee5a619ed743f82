"""Commands ``probe`` and ``sanity`` for ``python -m rotviz`` (the runs themselves: rotviz.study.runs).

rotviz.cli.main registers them with ``probe_cli.add_commands(sub)`` in build_parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rotviz.cli.options import (
    add_output_options,
    checkpoint_store,
    data_config,
    log,
    network,
    network_command,
    run_config,
    served_train_config,
)
from rotviz.config import DataConfig, TrainConfig
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.store import CheckpointStore
from rotviz.report.tables import FORMATS, format_table
from rotviz.report.writers import probe_caption, sanity_caption, save_probe, save_sanity
from rotviz.runtime import Runtime, as_runtime
from rotviz.study.probe import FinetuneConfig, probe_table
from rotviz.study.runs import run_context, run_probe, run_sanity

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


def given_network_or_recipe(
    args: argparse.Namespace,
) -> tuple[Checkpoint | None, DataConfig, TrainConfig, CheckpointStore, Runtime]:
    """(--checkpoint's network or None, the data, the recipe, the store, the runtime): with
    --checkpoint one network as given; else the recipe whose networks (one per seed) are run."""
    data, store, runtime = data_config(args), checkpoint_store(args), as_runtime(run_config(args))
    ckpt = None
    if args.checkpoint:
        ckpt, data = network(args, data, store, runtime)
    tcfg = ckpt.train_config if ckpt else served_train_config(args, data, store)
    return ckpt, data, tcfg, store, runtime


# --------------------------------------------------------------------------- probe


def cmd_probe(args: argparse.Namespace) -> int:

    ckpt, data, tcfg, store, runtime = given_network_or_recipe(args)
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
    table = probe_table(probed.numbers)
    print(format_table(table, args.format, caption=probe_caption(probed)))
    context = run_context(ckpt, data, tcfg)
    out = save_probe(probed, table, args.out, context, args.figure_formats.split(",")).folder
    log(f"wrote {out}/probe.csv, probe.md/.tex/.table.csv, probe_per_image.csv, label_efficiency.*")
    return 0


# --------------------------------------------------------------------------- sanity


def cmd_sanity(args: argparse.Namespace) -> int:

    ckpt, data, tcfg, store, runtime = given_network_or_recipe(args)
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
    for neurons, rep in got.reports.items():
        print(
            format_table(
                rep.table,
                args.format,
                caption=sanity_caption(got, data.dataset, args.layer, neurons),
            )
        )
        print(
            format_table(
                rep.cascade_table.round(3),
                args.format,
                caption=f"Cascading randomisation (neurons {neurons})",
            )
        )
    formats = args.figure_formats.split(",")
    out = save_sanity(got, data.dataset, args.layer, args.out, args.figures, formats).folder
    log(f"wrote {out}/sanity_*.csv, cascading_*.csv and figures")
    return 0


# --------------------------------------------------------------------------- registration


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``probe`` and ``sanity`` on the CLI's subparsers."""
    p, g = network_command(
        sub,
        "probe",
        "downstream task on frozen features (linear, k-NN, fine-tune), trained vs random",
    )
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
    add_output_options(g, "probe")
    p.set_defaults(func=cmd_probe)

    p, g = network_command(
        sub,
        "sanity",
        "saliency sanity checks: model, cascading and data randomisation (Adebayo et al. 2018)",
    )
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
    add_output_options(g, "sanity")
    g.add_argument("--figures", type=int, default=1, help="per-image cascading plots (default 1)")
    p.set_defaults(func=cmd_sanity)
