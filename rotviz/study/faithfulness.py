"""Faithfulness on a rotation network: deletion, insertion and ROAD of rankings, scored by the
trained network's probability of the true rotation.

A perturbed upright image is turned to each rotation the network was trained on
(``model.rotations``, rotviz.data.rotation.rotation_batch) and scored by the softmax
probability of that rotation's label, averaged over the rotations; the accuracy (argmax ==
label) is kept beside it. All perturbed images of a chunk of images (every step of the
deletion and insertion curves, every ROAD mask) go through the network in one batched pass,
cut into forward batches of ``FaithfulnessConfig.batch_size`` rotated images.

Deletion sets removed pixels to 0 of the normalised input (the per-channel mean); insertion
starts from a Gaussian blur of the normalised image (kernel 11, sigma 5,
torchvision.transforms.functional.gaussian_blur, reflect padding) and puts the original
pixels back; ROAD fills removed pixels by noisy linear imputation
(rotviz.scores.faithfulness). The rankings compared: the trained network's map, the maps of
both random twins, the centre prior, the edge map and a random order (the mean curve of
``random_orders`` seeded orders). The untrained twin's own output sits at chance, so every
ranking is scored by the trained network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace

import numpy as np
import torch

from rotviz.attribution.gradients import channels_last
from rotviz.attribution.maps import network_maps
from rotviz.attribution.methods import method_warning
from rotviz.attribution.saliency import SaliencyConfig
from rotviz.data.rotation import denormalize, normalize, rotation_batch
from rotviz.errors import RotvizError
from rotviz.nets.folding import inference_net
from rotviz.nets.models import RotationNet
from rotviz.nets.twin import twin_calibration
from rotviz.runtime import RuntimeLike, as_runtime
from rotviz.scores.baselines import baseline_maps
from rotviz.scores.faithfulness import (
    RANDOM,
    Curves,
    FaithfulnessConfig,
    faithfulness_summary,
    noisy_linear_imputation,
    per_image_rows,
    pixel_rankings,
    random_rankings,
    road_masks,
    step_fractions,
    step_masks,
)
from rotviz.scores.metrics import BoxArea, goodness
from rotviz.scores.stats import bootstrap_interval
from rotviz.study.results import Q_BOX_AREA, FaithfulnessRun

Progress = Callable[[int, int], None]
IMAGES_PER_PASS = 8  # images whose perturbed copies go through the network together
_ORDERS = {"morf": 0, "lerf": 1}


def upright_saliency(sal: SaliencyConfig | None = None, **kw: object) -> SaliencyConfig:
    """The default map ranked: the study's (rotation layer, all neurons, saliency, upright image)."""
    return sal or SaliencyConfig(
        layer="rotation", neurons="all", method="saliency", aggregate="none", **kw
    )


@torch.no_grad()
def rotation_scores(
    model: RotationNet, x: torch.Tensor, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """For normalised images x (B, C, S, S): the probability of the true rotation and whether
    it is the argmax, each averaged over the rotations the network was trained on, (B,) each.

    Forward batches hold at most batch_size rotated images (at least one image's rotations).
    The network runs in eval mode, with its BatchNorms folded into the convolutions.
    """
    model = inference_net(model)
    m = model.num_rotations
    per = max(1, batch_size // m)
    probs, correct = [], []
    with channels_last(model):  # oneDNN's fast layout for big batches
        for start in range(0, len(x), per):
            batch, labels = rotation_batch(x[start : start + per], model.rotations)
            logits = model(batch.contiguous(memory_format=torch.channels_last)).float()
            p = logits.softmax(dim=1).gather(1, labels[:, None])[:, 0]
            probs.append(p.view(-1, m).mean(1).cpu())
            correct.append((logits.argmax(1) == labels).float().view(-1, m).mean(1).cpu())
    if not probs:
        return np.zeros(0), np.zeros(0)
    return torch.cat(probs).double().numpy(), torch.cat(correct).double().numpy()


def insertion_substrate(x: torch.Tensor, config: FaithfulnessConfig) -> torch.Tensor:
    """The blurred copy insertion starts from: Gaussian blur (kernel, sigma of config) of x."""
    from torchvision.transforms.functional import gaussian_blur

    k, s = config.blur_kernel, config.blur_sigma
    return gaussian_blur(x, [k, k], [s, s])


def step_images(
    x: torch.Tensor, rankings: np.ndarray, config: FaithfulnessConfig
) -> dict[str, torch.Tensor]:
    """The deletion and insertion copies of normalised images x (N, C, S, S) under rankings
    (N, S*S) after each step: "deletion" and "insertion" (N, K + 1, C, S, S)."""
    h, w = x.shape[-2:]
    steps = torch.from_numpy(step_masks(rankings, (h, w), config.steps)).to(x.device)[:, :, None]
    deletion = x[:, None] * ~steps
    insertion = torch.where(steps, x[:, None], insertion_substrate(x, config)[:, None])
    return {"deletion": deletion, "insertion": insertion}


def step_pictures(
    image: np.ndarray, ranked_map: np.ndarray, config: FaithfulnessConfig = FaithfulnessConfig()
) -> dict[str, np.ndarray]:
    """The deletion and insertion copies of one uint8 image (3, S, S) with pixels ranked by
    ranked_map (S, S), after each step, as pictures: "deletion" and "insertion"
    (K + 1, S, S, 3) uint8 (denormalised; deleted pixels show the mean colour)."""
    x = _as_input(np.asarray(image)[None], torch.device("cpu"))
    parts = step_images(x, pixel_rankings(ranked_map, warn=False), config)
    return {
        k: (denormalize(v[0]) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for k, v in parts.items()
    }


def perturbed_images(
    x: torch.Tensor,
    rankings: np.ndarray,
    config: FaithfulnessConfig,
    image_ids: Sequence[int],
) -> dict[str, torch.Tensor]:
    """Every perturbed copy of normalised images x (N, C, S, S) under rankings (N, S*S):
    "deletion" and "insertion" (N, K + 1, C, S, S), "morf" and "lerf" (N, P, C, S, S).

    ROAD's noise of image i, order o (0 MoRF, 1 LeRF) and percentage j is drawn from
    numpy.random.default_rng([seed, i, o, j]) with i = image_ids[i]: the same for every
    ranking of an image, whatever batch it is in.
    """
    n, c, h, w = x.shape
    device = x.device
    out = step_images(x, rankings, config)
    xs = x.detach().cpu().double().numpy()
    n_p = len(config.percentages)
    for order, o in _ORDERS.items():
        masks = road_masks(rankings, (h, w), config.percentages, order)  # (N, P, H, W)
        seeds = [[config.seed, int(i), o, j] for i in image_ids for j in range(n_p)]
        imputed = noisy_linear_imputation(
            np.repeat(xs, n_p, axis=0), masks.reshape(-1, h, w), config.noise_std, seeds
        )
        out[order] = torch.from_numpy(imputed).to(device, x.dtype).view(n, n_p, c, h, w)
    return out


def ranking_curves(
    model: RotationNet,
    x: torch.Tensor,
    rankings: np.ndarray,
    config: FaithfulnessConfig = FaithfulnessConfig(),
    image_ids: Sequence[int] | None = None,
) -> Curves:
    """Deletion, insertion and ROAD outputs of model on normalised images x (N, C, S, S) with
    pixels ranked by rankings (N, S*S): all perturbed copies in one batched pass."""
    n, _, h, w = x.shape
    ids = list(range(n)) if image_ids is None else list(image_ids)
    parts = perturbed_images(x, rankings, config, ids)
    sizes = {k: v.shape[1] for k, v in parts.items()}
    flat = torch.cat([v.flatten(0, 1) for v in parts.values()])
    p, acc = rotation_scores(model, flat, config.batch_size)
    scores, accuracy, start = {}, {}, 0
    for k, size in sizes.items():
        stop = start + n * size
        scores[k] = p[start:stop].reshape(n, size)
        accuracy[k] = acc[start:stop].reshape(n, size)
        start = stop
    return Curves(
        step_fractions(h * w, config.steps), config.percentages, **scores, accuracy=accuracy
    )


def source_curves(
    model: RotationNet,
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    config: FaithfulnessConfig = FaithfulnessConfig(),
    runtime: RuntimeLike = "auto",
    with_random: bool = True,
    image_ids: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> dict[str, Curves]:
    """{source: Curves} of the trained model on uint8 images (N, 3, S, S) (or normalised float
    ones, (N, C, S, S)) for each source's maps (N, S, S) used as rankings, plus, with
    with_random, "random": the mean of config.random_orders seeded random orders."""
    device = as_runtime(runtime).device
    model = model.to(device).eval()
    n = len(images)
    ids = list(range(n)) if image_ids is None else list(image_ids)
    ranked = {name: pixel_rankings(m) for name, m in maps.items()}
    names = [*ranked, *([RANDOM] if with_random else [])]
    chunks: dict[str, list[Curves]] = {name: [] for name in names}
    for start in range(0, n, IMAGES_PER_PASS):
        rows = slice(start, min(n, start + IMAGES_PER_PASS))
        x = _as_input(images[rows], device)
        part_ids = ids[rows]
        hw = x.shape[-2] * x.shape[-1]
        for name, r in ranked.items():
            chunks[name].append(ranking_curves(model, x, r[rows], config, part_ids))
        if with_random:
            orders = [
                ranking_curves(
                    model, x, random_rankings(part_ids, hw, config.seed, o), config, part_ids
                )
                for o in range(config.random_orders)
            ]
            chunks[RANDOM].append(Curves.mean(orders))
        if progress:
            progress(rows.stop, n)
    return {name: _concat(parts) for name, parts in chunks.items()}


def _as_input(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 images are normalised (ImageNet mean/std); float images are taken as normalised."""
    t = torch.from_numpy(np.array(images))  # a copy: split images may be read-only
    return normalize(t.to(device)) if t.dtype == torch.uint8 else t.to(device, torch.float32)


def _concat(parts: Sequence[Curves]) -> Curves:
    first = parts[0]
    cat = {
        k: np.concatenate([getattr(p, k) for p in parts])
        for k in ("deletion", "insertion", "morf", "lerf")
    }
    acc = {k: np.concatenate([p.accuracy[k] for p in parts]) for k in first.accuracy}
    return Curves(first.fractions, first.percentages, **cat, accuracy=acc)


def ranking_maps(
    model: RotationNet,
    images: np.ndarray,
    sal: SaliencyConfig,
    runtime: RuntimeLike = "auto",
    twins: Mapping[str, RotationNet] | None = None,
    baselines: bool = True,
) -> dict[str, np.ndarray]:
    """The maps ranked, (N, S, S) each, on uint8 images (N, 3, S, S): "trained", "<kind> twin"
    for each twin given ({"initial": twin, ...}), and with baselines "centre" and "edges"."""
    nets = (model, *(twins or {}).values())
    maps = network_maps(nets, images, sal, runtime)
    out = {"trained": maps[0]}
    out.update({f"{kind} twin": m for kind, m in zip(twins or {}, maps[1:], strict=True)})
    if baselines:
        out["centre"] = baseline_maps(images, "centre")
        out["edges"] = baseline_maps(images, "edges")
    return out


def box_area_q(maps: np.ndarray, box_masks: np.ndarray | None) -> np.ndarray:
    """Per image Q of the map thresholded at the box area (BoxArea); NaN without boxes."""
    if box_masks is None:
        return np.full(len(maps), math.nan)
    thr = BoxArea()
    return np.array(
        [
            goodness(thr.mask(m, b), b) if b.any() else math.nan
            for m, b in zip(maps, box_masks, strict=True)
        ]
    )


def faithfulness_result(
    curves: Mapping[str, Curves],
    maps: Mapping[str, np.ndarray],
    box_masks: np.ndarray | None = None,
    method: str = "saliency",
    settings: dict | None = None,
    twin_calibration: dict[str, str] | None = None,
    warning: str | None = None,
    seed: int = 0,
) -> FaithfulnessRun:
    """The typed run from curves per source: per-image rows, Q at the box area of each map
    source, the summary with intervals and paired differences to the random order."""
    rows = per_image_rows(curves)
    q = np.concatenate(
        [
            box_area_q(maps[s], box_masks) if s in maps else np.full(len(c.deletion), math.nan)
            for s, c in curves.items()
        ]
    )
    rows[Q_BOX_AREA] = q
    summary = faithfulness_summary(rows, seed)
    ivs = {
        s: bootstrap_interval(p[Q_BOX_AREA].to_numpy(float), seed=seed)
        for s, p in rows.groupby("source", sort=False)
    }
    summary[Q_BOX_AREA] = summary["source"].map(lambda s: ivs[s].estimate)
    summary[f"{Q_BOX_AREA}_low"] = summary["source"].map(lambda s: ivs[s].low)
    summary[f"{Q_BOX_AREA}_high"] = summary["source"].map(lambda s: ivs[s].high)
    return FaithfulnessRun(
        rows, summary, dict(curves), method, settings or {}, twin_calibration or {}, warning
    )


def faithfulness_run(
    model: RotationNet,
    images: np.ndarray,
    sal: SaliencyConfig | None = None,
    config: FaithfulnessConfig = FaithfulnessConfig(),
    runtime: RuntimeLike = "auto",
    twins: Mapping[str, RotationNet] | None = None,
    box_masks: np.ndarray | None = None,
    references: Mapping[str, Curves] | None = None,
    progress: Progress | None = None,
) -> FaithfulnessRun:
    """Deletion, insertion and ROAD of the trained network's map, its twins' maps (twins:
    {"initial": twin, "calibrated": twin}, either may be left out), the centre prior, the edge
    map and a random order, all scored by model on uint8 images (N, 3, S, S).

    references: curves of "centre", "edges" and "random" already measured on these images
    (a methods table measures them once); box_masks (N, S, S) bool add Q at the box area.
    """
    sal = upright_saliency(sal)
    if images.ndim != 4 or images.shape[0] == 0:
        raise RotvizError("faithfulness needs at least one image (N, 3, S, S)")
    maps = ranking_maps(model, images, sal, runtime, twins, baselines=references is None)
    curves = source_curves(
        model, images, maps, config, runtime, with_random=references is None, progress=progress
    )
    if references is not None:
        curves.update(references)
        maps = {
            **maps,
            **{k: baseline_maps(images, k) for k in ("centre", "edges") if k in references},
        }
    order = ["trained", *(f"{k} twin" for k in (twins or {})), "centre", "edges", RANDOM]
    curves = {k: curves[k] for k in order if k in curves}
    calibration = {
        f"{k} twin": (c.describe() if (c := twin_calibration(t)) is not None else "")
        for k, t in (twins or {}).items()
    }
    settings = {"faithfulness": config.to_dict(), "saliency": asdict(sal), "model": model.name}
    settings["rotations_degrees"] = [90 * k for k in model.rotations]
    return faithfulness_result(
        curves,
        maps,
        box_masks,
        sal.method,
        settings,
        calibration,
        method_warning(model, sal.method),
        config.seed,
    )


def reference_curves(
    model: RotationNet,
    images: np.ndarray,
    config: FaithfulnessConfig = FaithfulnessConfig(),
    runtime: RuntimeLike = "auto",
) -> dict[str, Curves]:
    """The model-free references' curves (centre, edges, random), measured once for a table."""
    maps = {k: baseline_maps(images, k) for k in ("centre", "edges")}
    return source_curves(model, images, maps, config, runtime)


def faithfulness_methods(
    model: RotationNet,
    images: np.ndarray,
    methods: Sequence[str],
    sal: SaliencyConfig | None = None,
    config: FaithfulnessConfig = FaithfulnessConfig(),
    runtime: RuntimeLike = "auto",
    twins: Mapping[str, RotationNet] | None = None,
    box_masks: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, FaithfulnessRun]:
    """One faithfulness run per attribution method (sal's layer, neurons and aggregation with
    each method), sharing the references' curves (measured once)."""
    base = upright_saliency(sal)
    refs = reference_curves(model, images, config, runtime)
    out = {}
    for method in methods:
        if log:
            log(f"faithfulness: {method}, {len(images)} images")
        one = replace(base, method=method)
        out[method] = faithfulness_run(model, images, one, config, runtime, twins, box_masks, refs)
    return out


def forward_passes(
    n_images: int,
    n_rankings: int,
    config: FaithfulnessConfig,
    n_rotations: int,
    with_random: bool = True,
) -> int:
    """Rotated images the network sees: images x rankings (with_random adds random_orders
    rankings) x (2 (K + 1) + 2 P perturbed copies) x rotations."""
    per = 2 * (config.steps + 1) + 2 * len(config.percentages)
    rankings = n_rankings + (config.random_orders if with_random else 0)
    return n_images * rankings * per * n_rotations
