"""Faithfulness curves: rotviz's batched path vs a plain reference, vs the bound, in one run.

On the same images and rankings (each image's edge map): deletion, insertion and ROAD of
the network's probability of the true rotation (all trained rotations).

- ours: rotviz.study.faithfulness.ranking_curves (every perturbed copy of a chunk of images
  in one batched pass, cut into forward batches of --forward-batch rotated images; ROAD's
  systems built vectorised for all masks, solved one per mask);
- reference: the RISE loop (one forward per step, the step's image at its rotations) and
  ROAD as pytorch-grad-cam does it: one scipy.sparse.linalg.spsolve per image, order and
  percentage, its system built as pytorch-grad-cam's NoisyLinearImputer builds it (a
  lil_matrix filled neighbour offset by neighbour offset), then one forward per mask;
- bound: the same forward passes at full-batch efficiency (the seconds per rotated image of
  one batch of --full-batch images, times the images) plus the sparse solves timed alone.

Prints seconds per image, the ratio reference / ours, ours / bound, the share of our time in
forward passes and in solves, and the largest difference between the two paths' curves.

    python bench/faithfulness.py                        # 4 photos at 128 x 128, six-layer
    python bench/faithfulness.py --images 2 --size 64   # a quick smoke run
    python bench/faithfulness.py --checkpoint checkpoints/lfw-six_layer-e25-e6bdad5c467e6138.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import csc_matrix, lil_matrix
from scipy.sparse.linalg import spsolve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saliency_throughput import real_images  # noqa: E402

from rotviz.data.rotation import denormalize, rotation_batch  # noqa: E402
from rotviz.nets.models import build_model  # noqa: E402
from rotviz.scores.baselines import baseline_maps  # noqa: E402
from rotviz.scores.faithfulness import (  # noqa: E402
    NEIGHBOURS,
    FaithfulnessConfig,
    imputation_system,
    percentage_counts,
    pixel_rankings,
    road_masks,
    solve_blocks,
    step_counts,
)
from rotviz.study.faithfulness import (  # noqa: E402
    insertion_substrate,
    perturbed_images,
    ranking_curves,
    rotation_scores,
)


def grad_cam_system(mask_keep: np.ndarray, img: np.ndarray) -> tuple[lil_matrix, np.ndarray]:
    """pytorch-grad-cam's NoisyLinearImputer.setup_sparse_system (mask 1 = keep), signs as theirs."""
    maskflt = mask_keep.flatten()
    imgflat = img.reshape((img.shape[0], -1))
    indices = np.argwhere(maskflt == 0).flatten()
    coords_to_vidx = np.zeros(len(maskflt), dtype=int)
    coords_to_vidx[indices] = np.arange(len(indices))
    n_eq = len(indices)
    a = lil_matrix((n_eq, n_eq))
    b = np.zeros((n_eq, img.shape[0]))
    sum_neighbors = np.ones(n_eq)
    h, w = mask_keep.shape
    for dr, dc, weight in NEIGHBOURS:
        c1 = indices % w + dc
        c0 = indices // w + dr
        invalid = (c0 < 0) | (c1 < 0) | (c0 >= h) | (c1 >= w)
        valid = ~invalid
        new_coords = indices + dr * w + dc
        valid_coords = new_coords[valid]
        valid_ids = np.argwhere(valid == 1).flatten()
        has_values = maskflt[valid_coords] > 0.5
        b[valid_ids[has_values], :] -= weight * imgflat[:, valid_coords[has_values]].T
        no_values = valid_coords[~has_values]
        a[valid_ids[~has_values], coords_to_vidx[no_values]] = weight
        sum_neighbors[np.argwhere(invalid).flatten()] -= weight
    a[np.arange(n_eq), np.arange(n_eq)] = -sum_neighbors
    return a, b


def reference_curves(model, x, rankings, config, layout: str = "plain"):
    """The plain loop: one forward per step or mask (its rotations in one batch), in the
    default memory layout ("plain") or in rotviz's channels-last layout ("channels-last")."""
    n, c, h, w = x.shape
    counts = step_counts(h * w, config.steps)
    road = percentage_counts(h * w, config.percentages)
    out = {k: np.zeros((n, len(counts))) for k in ("deletion", "insertion")}
    out.update({k: np.zeros((n, len(road))) for k in ("morf", "lerf")})
    solve_time = 0.0

    @torch.no_grad()
    def score(img: torch.Tensor) -> float:
        """One forward of the image at the network's rotations."""
        if layout == "channels-last":
            return float(rotation_scores(model, img[None], model.num_rotations)[0][0])
        batch, labels = rotation_batch(img[None], model.rotations)
        probs = model(batch).softmax(1)[torch.arange(len(labels)), labels]
        return float(probs.double().mean())

    for i in range(n):
        blurred = insertion_substrate(x[i : i + 1], config)[0]
        for s, count in enumerate(counts):
            removed = torch.zeros(h * w, dtype=torch.bool)
            removed[torch.as_tensor(rankings[i][:count])] = True
            removed = removed.view(h, w)
            out["deletion"][i, s] = score(x[i] * ~removed)
            out["insertion"][i, s] = score(torch.where(removed, x[i], blurred))
        img = x[i].double().numpy()
        for o, order in enumerate(("morf", "lerf")):
            for j, count in enumerate(road):
                chosen = rankings[i][:count] if order == "morf" else rankings[i][h * w - count :]
                keep = np.ones(h * w)
                keep[chosen] = 0
                keep = keep.reshape(h, w)
                t0 = time.perf_counter()
                a, b = grad_cam_system(keep, img)
                u = spsolve(csc_matrix(a), b)
                solve_time += time.perf_counter() - t0
                filled = img.reshape(c, -1).copy()
                filled[:, np.sort(chosen)] = (
                    np.asarray(u).reshape(-1, c).T
                )  # unknowns in raster order
                filled = filled.reshape(c, h, w)
                noise = np.random.default_rng([config.seed, i, o, j]).standard_normal((c, h, w))
                filled += config.noise_std * noise * (keep == 0)
                out[order][i, j] = score(torch.from_numpy(filled).float())
    return out, solve_time


REPEAT = [3]  # our timings: the fastest of this many runs (the reference runs once)


def timed(fn, repeat: int | None = None):
    """(seconds of the fastest of repeat runs, the last run's output)."""
    best, out = float("inf"), None
    for _ in range(REPEAT[0] if repeat is None else repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument(
        "--checkpoint", help="a checkpoint card (.json); default: an untrained six-layer"
    )
    ap.add_argument("--forward-batch", type=int, default=256)
    ap.add_argument("--full-batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=3, help="our timings: fastest of N runs (3)")
    ap.add_argument(
        "--reference-layout",
        choices=["plain", "channels-last"],
        default="plain",
        help="the reference loop's forward: default memory layout, or rotviz's channels-last",
    )
    args = ap.parse_args()
    REPEAT[0] = args.repeat
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        from rotviz.nets.store import load_checkpoint

        model = load_checkpoint(args.checkpoint).model.eval()
        name = load_checkpoint(args.checkpoint).name
    else:
        model, name = build_model("six_layer", 4, seed=0).eval(), "six_layer (untrained)"
    x = real_images(args.images, args.size)
    uint8 = (denormalize(x) * 255).round().to(torch.uint8).numpy()
    rankings = pixel_rankings(baseline_maps(uint8, "edges"))
    config = FaithfulnessConfig(batch_size=args.forward_batch)
    ids = list(range(args.images))
    rotation_scores(model, x[:1])  # warm-up (and the imports timed nowhere)
    insertion_substrate(x[:1], config)

    t_ours, ours = timed(lambda: ranking_curves(model, x, rankings, config, ids))
    t_ref, (ref, ref_solves) = timed(
        lambda: reference_curves(model, x, rankings, config, args.reference_layout), 1
    )
    diff = max(float(np.abs(getattr(ours, k) - ref[k]).max()) for k in ref)

    # our parts, timed alone on the same work
    t_perturb, parts = timed(lambda: perturbed_images(x, rankings, config, ids))
    flat = torch.cat([v.flatten(0, 1) for v in parts.values()])
    t_forward, _ = timed(lambda: rotation_scores(model, flat, config.batch_size))
    h = w = args.size
    masks = np.concatenate(
        [road_masks(rankings, (h, w), config.percentages, o) for o in ("morf", "lerf")], axis=1
    ).reshape(-1, h, w)
    reps = np.repeat(x.double().numpy(), 2 * len(config.percentages), axis=0)
    t_build, (a, b) = timed(lambda: imputation_system(reps, masks))
    t_solve, _ = timed(lambda: solve_blocks(a, b, masks.reshape(len(masks), -1).sum(1)))

    # the bound: the same forward passes at full-batch efficiency, plus the solves alone
    full = flat[: max(1, args.full_batch // model.num_rotations)]
    t_full, _ = timed(lambda: rotation_scores(model, full, len(full) * model.num_rotations))
    per_image_forward = t_full / len(full)
    bound = per_image_forward * len(flat) + t_solve

    n = args.images
    print(
        f"faithfulness curves: {name}, {n} photos at {h} x {w}, K={config.steps}, "
        f"ROAD at {', '.join(f'{p:g}' for p in config.percentages)} %, "
        f"{len(flat)} perturbed images x {model.num_rotations} rotations; "
        f"{torch.get_num_threads()} torch threads"
    )
    print(
        f"  ours       {t_ours / n:7.3f} s/image  (fastest of {REPEAT[0]} runs; the reference runs once)"
    )
    print(
        f"  reference  {t_ref / n:7.3f} s/image  ({args.reference_layout} layout; ROAD systems + "
        f"spsolve {ref_solves / n:.3f})"
    )
    print(
        f"  bound      {bound / n:7.3f} s/image  (forward at full batch {per_image_forward * len(flat) / n:.3f} + solves {t_solve / n:.3f})"
    )
    print(f"  reference / ours = {t_ref / t_ours:.2f}x   ours / bound = {t_ours / bound:.2f}")
    print(
        f"  share of ours: forward passes {t_forward / t_ours:.0%}, sparse solves {t_solve / t_ours:.0%}, "
        f"system build {t_build / t_ours:.0%}, perturbation total {t_perturb / t_ours:.0%}"
    )
    print(f"  largest |ours - reference| over every curve point: {diff:.2e}")


if __name__ == "__main__":
    main()
