"""Command ``faithfulness`` for ``python -m rotviz``: deletion, insertion and ROAD of the
trained network's map beside its twins' maps, the centre prior, the edge map and a random
order (the runs themselves: rotviz.study.faithfulness).

rotviz.cli.main registers it with ``faithfulness_cli.add_command(sub)`` in build_parser.
"""

from __future__ import annotations

import argparse

from rotviz import distributed
from rotviz.attribution.methods import METHODS
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.cli.options import (
    add_map_options,
    add_output_options,
    checkpoint_store,
    data_config,
    log,
    network,
    network_command,
    run_config,
)
from rotviz.errors import RotvizError
from rotviz.nets.twin import TWINS, describe_twin, random_twin_of
from rotviz.report.tables import FORMATS, format_table
from rotviz.report.writers import save_faithfulness, save_faithfulness_methods
from rotviz.runtime import as_runtime
from rotviz.scores.faithfulness import PERCENTAGES, STEPS, FaithfulnessConfig
from rotviz.study.faithfulness import faithfulness_methods, faithfulness_run, forward_passes
from rotviz.study.goodness import split_box_masks
from rotviz.study.results import faithfulness_methods_table, faithfulness_table
from rotviz.study.runs import run_context
from rotviz.training.pipeline import load_split

DEFAULT_IMAGES = 64
# attribution passes per image and neuron, relative to one gradient (the estimate's weights)
METHOD_PASSES = {"integrated_gradients": "n_steps", "smoothgrad": "nt_samples"}


def parse_percentages(text: str) -> tuple[float, ...]:
    """ "10,20,30" -> (10.0, 20.0, 30.0); RotvizError on a bad value."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise RotvizError(f"--percentages {text!r}: give numbers, e.g. 10,20,30,50,70,90") from None
    if not values:
        raise RotvizError("--percentages: give at least one percentage")
    return values


def chosen_methods(text: str) -> list[str]:
    """--method: one method, a comma-separated list, or "all" (every registered method)."""
    if text == "all":
        return list(METHODS)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise RotvizError(
            f"method {bad[0] if bad else text!r}: choose all or one of {', '.join(METHODS)}"
        )
    return methods


def estimate(
    n_images: int,
    methods: list[str],
    n_twins: int,
    config: FaithfulnessConfig,
    sal: SaliencyConfig,
    n_rotations: int,
) -> str:
    """One line: forward passes of the curves and attribution passes of the maps to come."""
    first = forward_passes(n_images, 1 + n_twins + 2, config, n_rotations)  # + random
    others = forward_passes(n_images, 1 + n_twins, config, n_rotations, with_random=False)
    curves = first + (len(methods) - 1) * others
    attribution = 0
    for m in methods:
        weight = getattr(sal, METHOD_PASSES[m]) if m in METHOD_PASSES else 1
        attribution += n_images * (1 + n_twins) * weight
    return (
        f"estimate: {n_images} images x {len(methods)} method(s): about {curves:,} rotated "
        f"images through the network for the curves and {attribution:,} attribution passes "
        f"(backward passes per image and neuron set, x the neurons of the {sal.layer} layer "
        "for methods without a batched path)"
    )


def curves_progress(done: int, total: int) -> None:
    """Log the images whose curves are done."""
    log(f"curves: {done}/{total} images")


def cmd_faithfulness(args: argparse.Namespace) -> int:
    n_images = args.max_images if args.max_images is not None else DEFAULT_IMAGES
    args.max_images = None  # this command's --max-images caps the images explained, not the split
    runtime = as_runtime(run_config(args))
    ckpt, data = network(args, data_config(args), checkpoint_store(args), runtime)
    methods = chosen_methods(args.method)
    sal = SaliencyConfig(
        layer=args.layer,
        neurons=args.neurons,
        method=methods[0],
        aggregate=args.aggregate,
        rotations=ckpt.rotations,
    )
    config = FaithfulnessConfig(
        steps=args.steps,
        percentages=parse_percentages(args.percentages),
        random_orders=args.random_orders,
        batch_size=args.forward_batch,
    )
    _, test = load_split(data, "test")
    n = min(n_images, len(test))
    if n == 0:
        raise RotvizError("the test split is empty: nothing to measure")
    images = test.images[:n]
    masks = split_box_masks(test)[:n]
    kinds = () if args.no_twins else TWINS
    log(estimate(n, methods, len(kinds), config, sal, ckpt.model.num_rotations))
    twins = {}
    for kind in kinds:
        try:
            twins[kind] = random_twin_of(ckpt, kind, runtime, data)
            log(describe_twin(twins[kind]))
        except RotvizError as err:
            log(f"no {kind} random twin: {err}")
    box_masks = masks if masks.any() else None
    context = run_context(ckpt, data)
    files = [r.relpath for r in test.records[:n]]
    if len(methods) == 1:
        run = faithfulness_run(
            ckpt.model, images, sal, config, runtime, twins, box_masks, progress=curves_progress
        )
        if not distributed.is_main():
            return 0
        if run.warning:
            log(f"warning: {run.warning}")
        saved = save_faithfulness(
            run, files, args.out, context, args.figure_formats.split(","), args.format
        )
        print(format_table(faithfulness_table(run), args.format))
    else:
        runs = faithfulness_methods(
            ckpt.model, images, methods, sal, config, runtime, twins, box_masks, log
        )
        if not distributed.is_main():
            return 0
        saved = save_faithfulness_methods(
            runs, files, args.out, context, args.figure_formats.split(","), args.format
        )
        print(format_table(faithfulness_methods_table(runs), args.format))
    log(f"wrote {len(saved.paths)} files to {saved.folder}")
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``faithfulness`` on the CLI's subparsers."""
    p, g = network_command(
        sub,
        "faithfulness",
        "deletion, insertion and ROAD of the maps on the trained network, against a random "
        "order, the centre prior, the edge map and the random twins' maps",
    )
    g.description = (
        f"--max-images N here explains the first N test images (default {DEFAULT_IMAGES}); "
        "the split itself is read whole"
    )
    add_map_options(g, f"{', '.join(METHODS)}, a comma-separated list or all (a methods table)")
    g.add_argument(
        "--aggregate",
        choices=["none", "mean", "max"],
        default="none",
        help="maps of the upright image (none, the default) or of its rotations combined",
    )
    g.add_argument(
        "--steps", type=int, default=STEPS, help=f"deletion / insertion steps K (default {STEPS})"
    )
    g.add_argument(
        "--percentages",
        default=",".join(str(p) for p in PERCENTAGES),
        help="ROAD percentages removed (default 10,20,30,50,70,90)",
    )
    g.add_argument(
        "--random-orders", type=int, default=5, help="random orders averaged (default 5)"
    )
    g.add_argument(
        "--forward-batch",
        type=int,
        default=256,
        help="rotated images per forward pass (default 256)",
    )
    g.add_argument("--no-twins", action="store_true", help="leave the random twins' maps out")
    g.add_argument("--format", choices=FORMATS, default="markdown")
    add_output_options(g, "faithfulness")
    p.set_defaults(func=cmd_faithfulness)
