"""The command line: ``python -m rotviz COMMAND``. It parses options into configs and calls the core."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from rotviz import distributed
from rotviz.attribution.cache import cached_checkpoint_maps
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.attribution.targets import layer_size
from rotviz.cli import app as app_cli
from rotviz.cli import faithfulness as faithfulness_cli
from rotviz.cli import probe as probe_cli
from rotviz.cli.options import (
    add_checkpoint_option,
    add_data_options,
    add_map_options,
    add_output_options,
    add_run_options,
    add_store_option,
    add_train_options,
    checkpoint_store,
    data_config,
    log,
    map_cache,
    network,
    network_command,
    own_data,
    precise_bn_images,
    run_config,
    say_cost,
    served_train_config,
    step_progress_bar,
    train_config,
)
from rotviz.data import download
from rotviz.errors import RotvizError
from rotviz.nets.evaluate import rotation_accuracy
from rotviz.nets.models import STUDY_MODELS
from rotviz.nets.store import cards_table
from rotviz.nets.twin import TWIN_NAMES, TWINS, describe_twin, random_twin_of
from rotviz.report.tables import FORMATS, format_table
from rotviz.report.writers import save_consistency, save_goodness, save_neurons, table_file
from rotviz.runtime import as_runtime
from rotviz.scores.metrics import parse_threshold
from rotviz.scores.published import default_threshold
from rotviz.scores.stats import percent
from rotviz.study import neurons
from rotviz.study.consistency import consistency_run
from rotviz.study.files import (
    Study,
    accuracy_table,
    goodness_tables,
    load_study,
    resolve_categories,
)
from rotviz.study.goodness import goodness_run
from rotviz.study.results import goodness_baselines
from rotviz.study.runs import probe_and_sanity_tables, run_context
from rotviz.training.pipeline import (
    load_split,
    provenance,
    train_or_load,
    train_statistics,
)

EXAMPLES = """examples:
  python -m rotviz train --dataset lfw --root DATA/lfw --model six_layer --epochs 2
  python -m rotviz evaluate --dataset lfw --root DATA/lfw --model six_layer --epochs 2 --json acc.json
  python -m rotviz accuracy-table --study studies/shared.toml --format markdown
  python -m rotviz download coco --dest DATA/coco --categories cat,dog
  python -m rotviz cache clear
  python -m rotviz train --dataset lfw --root DATA/lfw --device cuda --amp bf16
  torchrun --nproc-per-node 4 -m rotviz train --dataset lfw --root DATA/lfw
  torchrun --nproc-per-node 4 -m rotviz study studies/paper.toml
"""


def cmd_train(args: argparse.Namespace) -> int:

    data, store = data_config(args), checkpoint_store(args)
    outcome = train_or_load(
        data,
        served_train_config(args, data, store),
        store,
        as_runtime(run_config(args)),
        on_step=step_progress_bar(args.batch_size),
        log=log,
        half=args.half,
        precise_bn=precise_bn_images(args),
        test_curve=args.test_curve,
    )
    card = outcome.checkpoint.card
    calibrated = card.test_accuracy("calibrated")
    train_acc = card.train_accuracy
    print(
        f"{card.name}: test rotation accuracy {percent(card.test_accuracy('trained'))}% "
        f"(random twin {percent(card.test_accuracy('initial'))}% with initial BatchNorm statistics"
        + (f", {percent(calibrated)}% calibrated" if calibrated is not None else "")
        + ")"
        + (
            f"; training images in eval mode {percent(train_acc['running_statistics'])}%"
            if train_acc
            else ""
        )
        + f", {card.epochs_done} epochs, precise BatchNorm statistics "
        + ("yes" if card.precise_bn else "no")
        + (" [from the store]" if outcome.from_store else "")
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    runtime = as_runtime(run_config(args))
    ckpt, data = network(args, data_config(args), checkpoint_store(args), runtime)
    _, test = load_split(data, "test")
    own = own_data(ckpt, data)
    nets = {"trained": ckpt.model}  # the names the card uses: trained, initial, calibrated
    for kind in TWINS:
        try:
            nets[kind] = random_twin_of(ckpt, kind, runtime, data)
        except RotvizError as err:
            log(f"no {kind} random twin: {err}")
            continue
        log(describe_twin(nets[kind]))
    names = {"trained": "trained", **TWIN_NAMES}
    evals = {
        who: rotation_accuracy(m, test.images, ckpt.rotations, runtime) for who, m in nets.items()
    }
    gap = None
    if own is not None:
        _, train_split = load_split(own, "train")
        gap = train_statistics(ckpt.model, train_split.images, ckpt.train_config, runtime)
    if not distributed.is_main():
        return 0
    where = provenance(ckpt, data)
    print(
        f"network {where['network']}, data {where['data']}"
        + (" (cross-dataset: not the network's own test split)" if where["cross_dataset"] else "")
    )
    result = {
        "checkpoint": ckpt.name,
        **where,
        "dataset": data.dataset,
        "model": ckpt.card.model,
        "precise_bn": ckpt.card.precise_bn,
        "n_test_images": len(test),
        "train_accuracy_eval_mode": gap,
        **{who: ev.to_dict() for who, ev in evals.items()},
        "twin_calibration": {
            kind: nets[kind].calibration.to_dict() for kind in TWINS if kind in nets
        },
    }
    for who, ev in evals.items():
        per = ", ".join(
            f"{d}°: {a:.1%}" for d, a in zip(ev.rotations_degrees, ev.per_rotation, strict=True)
        )
        print(f"{names[who]}: test accuracy {ev.accuracy:.1%}  ({per})")
        print("    confusion (rows true, columns predicted):")
        for deg, row in zip(ev.rotations_degrees, ev.confusion, strict=True):
            print(f"    {deg:>4}° " + " ".join(f"{v:6d}" for v in row))
    if gap is not None:
        print(
            f"training accuracy in eval mode: {gap['running_statistics']:.1%} on "
            f"{gap['n_images']} training images (with batch statistics "
            f"{gap['batch_statistics']:.1%})"
        )
        if gap["warning"]:
            log(f"warning: {gap['warning']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        log(f"wrote {args.json}")
    return 0


def study_for_tables(args: argparse.Namespace):

    if args.study:
        return load_study(args.study)
    if not args.datasets:
        raise RotvizError("give --study FILE, or --datasets with --root NAME=PATH options")
    datasets = {name: data_config(args, name, multi=True) for name in args.datasets.split(",")}
    models = tuple(args.models.split(",")) if args.models else STUDY_MODELS
    tcfg = train_config(args, models[0])
    train = {k: v for k, v in vars(tcfg).items() if k != "model"}
    train["rotations"] = [90 * k for k in tcfg.rotations]
    return Study(None, datasets, models, train)


def cmd_accuracy_table(args: argparse.Namespace) -> int:

    study = study_for_tables(args)
    datasets = args.datasets.split(",") if args.datasets else None
    models = args.models.split(",") if args.models else None
    runtime = as_runtime(run_config(args))
    df = accuracy_table(study, checkpoint_store(args), runtime, log, datasets, models)
    text = format_table(df, args.format, caption="Test rotation accuracy (%)")
    print(text)
    if args.out and distributed.is_main():
        Path(args.out).write_text(text)
    return 0


def cmd_saliency(args: argparse.Namespace) -> int:

    runtime = as_runtime(run_config(args))
    ckpt, data = network(args, data_config(args), checkpoint_store(args), runtime)
    sal = SaliencyConfig(
        layer=args.layer,
        neurons=args.neurons,
        method=args.method,
        aggregate=args.aggregate,
        rotations=ckpt.rotations,
    )
    threshold = (
        parse_threshold(args.threshold)
        if args.threshold
        else default_threshold(args.layer, ckpt.card.model)
    )
    ds, test = load_split(data, "test")
    keep = resolve_categories(ds, [c for c in (args.box_categories or "").split(",") if c])
    log(
        f"saliency of {len(test)} test images, trained and {TWIN_NAMES[args.twin]} "
        f"({sal.layer} layer, neurons {sal.neurons}, {sal.method})"
    )
    twin = random_twin_of(ckpt, args.twin, runtime, data)
    log(describe_twin(twin))
    cache = map_cache(args)
    say_cost(ckpt.model, sal, test.images, twin, cache)
    maps = cached_checkpoint_maps(
        ckpt, test.images, sal, twin, runtime, cache, progress=progress_printer("maps")
    )
    run = goodness_run(
        ckpt,
        test,
        sal,
        threshold,
        runtime,
        keep,
        not args.no_crowd,
        progress=progress_printer("maps"),
        twin=twin,
        maps=maps,
    )
    if (
        not distributed.is_main()
    ):  # the maps were gathered: rank 0 writes exactly a single run's files
        return 0
    if run.summary.warning:
        log(f"warning: {run.summary.warning}")

    saved = save_goodness(
        run,
        test,
        threshold,
        args.out,
        run_context(ckpt, data),
        args.figures,
        args.figure_formats.split(","),
        args.save_maps,
    )
    base, flag = goodness_baselines([run])
    out, written = saved.folder, saved.figures
    s = run.summary
    print(
        f"mean Q (IoU of thresholded map and boxes) at {s.threshold}: trained "
        f"{percent(s.trained.mean_q, '%')}, {s.twin} {percent(s.random.mean_q, '%')} over "
        f"{s.n_scored} images with boxes ({s.n_without_boxes} without); wrote {out}/goodness.csv, "
        "summary.json"
        + (", sweep.*" if s.n_scored else "")
        + (", maps.npz" if args.save_maps else "")
        + (f", {written} figures" if written else "")
    )
    for who, name in (("trained", "trained"), ("random", s.twin)):
        net = s.network(who)
        print(
            f"share of pixels on at {s.threshold}, {name}: {percent(net.mean_fraction_on, '%')}"
            + (f" ({net.reach_note})" if net.reach_note else "")
        )
    print(
        "Q at pct:95 (baselines.csv): "
        + ", ".join(f"{r.source} {percent(r['q pct:95'], '%')}" for _, r in base.iterrows())
        + (f"; the trained network {flag}" if flag else "")
    )
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    runtime = as_runtime(run_config(args))
    ckpt, data = network(args, data_config(args), checkpoint_store(args), runtime)
    sal = SaliencyConfig(layer=args.layer, neurons=args.neurons, method=args.method)
    _, test = load_split(data, "test")
    images = test.images[: args.images] if args.images else test.images
    log(
        f"rotation consistency of {len(images)} test images, trained and {TWIN_NAMES[args.twin]} "
        f"({sal.layer} layer, neurons {sal.neurons}, {sal.method})"
    )
    twin = random_twin_of(ckpt, args.twin, runtime, data)
    log(describe_twin(twin))
    # maps of the upright image and of its three quarter turns, by both networks
    say_cost(ckpt.model, replace(sal, aggregate="none"), images, twin, None, copies=4)
    run = consistency_run(ckpt, images, sal, runtime, twin)
    if not distributed.is_main():
        return 0
    out = save_consistency(run, [r.relpath for r in test.records], args.out, args.format).folder
    print(format_table(run.table, args.format))
    log(f"wrote {out}/consistency.csv, consistency_table.csv")
    return 0


def cmd_neurons(args: argparse.Namespace) -> int:
    runtime = as_runtime(run_config(args))
    ckpt, data = network(args, data_config(args), checkpoint_store(args), runtime)
    _, test = load_split(data, "test")
    for layer in neurons.LAYERS if args.layer == "both" else (args.layer,):
        n = len(args.neurons.split(",")) if args.neurons else layer_size(ckpt.model, layer)
        n = min(n, args.limit) if args.limit else n
        sheets = SaliencyConfig(layer, ",".join(map(str, range(n))), aggregate="none")
        say_cost(ckpt.model, sheets, test.images[: args.top], None, None, what="contact sheets")
    run = neurons.neurons_run(
        ckpt,
        test,
        neurons.LAYERS if args.layer == "both" else (args.layer,),
        runtime.device,
        args.top,
        args.sort,
        args.limit,
        [int(i) for i in args.neurons.split(",") if i.strip()] if args.neurons else None,
        log=log,
        progress=progress_printer,
        twin=args.twin,
        data=data,
    )
    saved = save_neurons(run, args.out, args.figure_formats.split(","))
    out = saved.folder
    print(
        f"top-{run.top} images of {run.neurons_per_layer()} neurons per layer, trained and "
        f"the {run.twin} random twin, of {run.n_images} test images: wrote {out}/neurons.csv and "
        f"{saved.figures} contact sheets in {out}/sheets"
    )
    return 0


def progress_printer(what: str):

    bar = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=what, file=sys.stderr, leave=False)
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar["bar"].close()

    return update


def cmd_cache(args: argparse.Namespace) -> int:
    cache = map_cache(args)
    if args.action == "clear":
        removed = cache.clear()
        print(f"removed {removed} map set{'s' if removed != 1 else ''} from {cache.root}")
    else:
        print(cache.describe())
    return 0


def cmd_goodness_table(args: argparse.Namespace) -> int:

    study = load_study(args.study)
    tables = goodness_tables(
        study,
        checkpoint_store(args),
        as_runtime(run_config(args)),
        log,
        args.models.split(",") if args.models else None,
    )
    parts = [
        format_table(df, args.format, caption=f"Mean goodness Q (%) on the test set, {layer} layer")
        for layer, df in tables.items()
    ]
    text = "\n".join(parts)
    print(text)
    if args.out and distributed.is_main():
        Path(args.out).write_text(text)
    return 0


def cmd_study(args: argparse.Namespace) -> int:

    study, store = load_study(args.study), checkpoint_store(args)
    run = as_runtime(run_config(args))
    tables = {"accuracy": accuracy_table(study, store, run, log)}
    captions = {"accuracy": "Test rotation accuracy (%)"}
    for layer, df in goodness_tables(study, store, run, log).items():
        tables[f"goodness_{layer}"] = df
        captions[f"goodness_{layer}"] = f"Mean goodness Q (%) on the test set, {layer} layer"
    for name, df in probe_and_sanity_tables(study, store, run, log).items():
        key = name.replace(" ", "_")
        tables[key] = df
        captions[key] = f"{name} (mean [95% CI] over images)"
    if not distributed.is_main():
        return 0
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        caption = captions[name] + (
            f"; random twin: {df.attrs['twin']}" if "twin" in df.attrs else ""
        )
        text = format_table(df, args.format, caption=caption)
        print(text)
        if out:
            table_file(out, name, args.format).write_text(text)
            if "numbers" in df.attrs:
                df.attrs["numbers"].to_csv(out / f"{name}_numbers.csv", index=False)
    if out:
        log(f"wrote {len(tables)} tables to {out}")
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:

    df = cards_table(checkpoint_store(args).cards())
    if df.empty:
        print(f"no checkpoints in {args.store}")
        return 0
    print(format_table(df, args.format))
    return 0


def cmd_download(args: argparse.Namespace) -> int:

    dest = Path(args.dest)
    if args.name == "lfw":
        root = download.download_lfw(dest)
        print(f"LFW ready: use --dataset lfw --root {root}")
    elif args.name == "coco":
        cats = tuple(c for c in args.categories.split(",") if c)
        images, ann = download.download_coco(dest, categories=cats)
        print(
            f"COCO ready: use --dataset coco --root {images} --ann {ann} --categories {args.categories}"
        )
    else:
        print(download.CITYSCAPES_INSTRUCTIONS)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rotviz",
        description="Self-supervised rotation prediction: train, evaluate, and compare saliency of trained vs random networks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a rotation predictor (or serve it from the store)")
    add_data_options(p)
    add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="rotation accuracy, per rotation and confusion, trained vs random"
    )
    add_data_options(p)
    add_train_options(p)
    add_checkpoint_option(p)
    p.add_argument("--json", help="write the results to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "accuracy-table",
        help="rotation accuracy table, datasets x models (trains what the store lacks)",
    )
    p.add_argument("--study", help="study TOML file (datasets, roots, models, settings)")
    p.add_argument("--datasets", help="comma-separated dataset names (default: all in the study)")
    p.add_argument("--models", help=f"comma-separated models (default: {','.join(STUDY_MODELS)})")
    add_data_options(p, multi=True)
    add_train_options(p, multi=True)
    p.add_argument("--format", choices=FORMATS, default="markdown")
    p.add_argument("--out", help="also write the table to this file")
    p.set_defaults(func=cmd_accuracy_table)

    p, g = network_command(
        sub,
        "saliency",
        "saliency maps trained vs random on the test split, goodness Q per image",
    )
    add_map_options(g)
    g.add_argument(
        "--aggregate",
        choices=["none", "mean", "max"],
        default="none",
        help="combine the maps of the image at each rotation (rotated back)",
    )
    g.add_argument(
        "--threshold",
        help="8e-4 (absolute lambda), pct:95 or box-area (default: the study's lambda)",
    )
    g.add_argument(
        "--box-categories",
        help="only boxes of these categories form the mask (default: all annotated objects)",
    )
    g.add_argument(
        "--no-crowd", action="store_true", help="leave COCO crowd regions out of the box mask"
    )
    add_output_options(g, "sal")
    g.add_argument("--figures", type=int, default=0, help="write N trained|random overlay figures")
    g.add_argument(
        "--save-maps",
        action="store_true",
        help="also write maps.npz: trained and random maps (N, S, S), box masks, file names",
    )
    p.set_defaults(func=cmd_saliency)

    p, g = network_command(
        sub,
        "consistency",
        "rotation consistency: maps of rotated test images, turned back, vs upright; "
        "trained vs random",
    )
    add_map_options(g)
    g.add_argument("--images", type=int, default=0, help="first N test images (default all)")
    g.add_argument("--format", choices=FORMATS, default="markdown")
    add_output_options(g, "consistency", figures=False)
    p.set_defaults(func=cmd_consistency)

    p, g = network_command(
        sub,
        "neurons",
        "neuron browser: each neuron's top test images with its saliency, trained vs random",
    )
    g.add_argument(
        "--layer",
        choices=["embedding", "rotation", "both"],
        default="embedding",
        help="embedding features or rotation logits (default embedding)",
    )
    g.add_argument("--top", type=int, default=9, help="top images per neuron (default 9)")
    g.add_argument(
        "--sort",
        choices=["neuron", "mean", "selectivity"],
        default="neuron",
        help="order of the contact sheets (by the trained network's neurons)",
    )
    g.add_argument("--limit", type=int, default=None, help="contact sheets of the first N neurons")
    g.add_argument("--neurons", help="contact sheets of these neurons only, e.g. 3,17,42")
    add_output_options(g, "neurons")
    p.set_defaults(func=cmd_neurons)

    p = sub.add_parser("goodness-table", help="the study's two goodness tables from a study file")
    p.add_argument("--study", required=True, help="study TOML file, e.g. studies/shared.toml")
    p.add_argument("--models", help="comma-separated subset of the study's models")
    p.add_argument("--format", choices=FORMATS, default="markdown")
    p.add_argument("--out", help="also write the tables to this file")
    add_run_options(p)
    add_store_option(p)
    p.set_defaults(func=cmd_goodness_table)

    p = sub.add_parser(
        "study",
        help="every table of a study file (accuracy, goodness, probe, sanity); shards across ranks under torchrun",
    )
    p.add_argument("study", help="study TOML file, e.g. studies/paper.toml")
    p.add_argument("--format", choices=FORMATS, default="markdown")
    p.add_argument("--out", help="also write each table to this folder (accuracy.md, ...)")
    add_run_options(p)
    add_store_option(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("checkpoints", help="list the checkpoints in the store")
    add_store_option(p)
    p.add_argument("--format", choices=FORMATS, default="markdown")
    p.set_defaults(func=cmd_checkpoints)

    p = sub.add_parser(
        "cache",
        help="the map cache under the store: its size (info) or empty it (clear)",
    )
    p.add_argument("action", nargs="?", choices=["info", "clear"], default="info")
    add_store_option(p)
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser(
        "download", help="download a dataset (lfw, coco) or print how to get cityscapes"
    )
    p.add_argument("name", choices=["lfw", "coco", "cityscapes"])
    p.add_argument("--dest", default="data", help="destination folder (default: data)")
    p.add_argument(
        "--categories",
        default="cat,dog",
        help="COCO categories whose images are fetched (default cat,dog)",
    )
    p.set_defaults(func=cmd_download)

    probe_cli.add_commands(sub)
    faithfulness_cli.add_command(sub)
    app_cli.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user-facing errors are printed without a traceback (exit 2 or their exit_code)."""
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"[rotviz] warning: {msg}\n"
    try:
        with distributed.session(getattr(args, "device", "auto")):
            return args.func(args)
    except RotvizError as err:
        print(f"{distributed.rank_prefix()}error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(
            "\ninterrupted; finished epochs are saved, rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
