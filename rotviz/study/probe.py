"""Downstream evaluation, trained vs random: does rotation pretraining help a labelled task?

On frozen ``embed()`` features (computed once per split and network, cached under the
rotviz cache folder): a linear probe (logistic regression, L2 strength C chosen from a small
grid on a validation part of the *training* split only, then refitted on all of it) and
k-NN (k = 20, cosine). Optionally ``unfreeze_last = K``: fine-tune the last K backbone
blocks plus a new linear head, with the same budget and seed for the trained network and
its random twin. Label efficiency: the same with 1 %, 10 %, 100 % of the training labels
(stratified, seeded, at least one image per class). Test images are only ever predicted.

Tasks, from labels the datasets really have:
- ``face`` (demo): the LFW patches, face vs non-face;
- ``identity`` (lfw): people with at least ``min_images`` images; the dataset's by-image
  split, the set of people fixed;
- ``catdog`` (coco): images with exactly one of cat and dog;
- ``folder``: the first-level subfolders are the classes;
- ``city`` (cityscapes): the city, from the file name; Cityscapes' official splits hold
  disjoint cities, so the images the rotation network never saw (val and test) are split
  by a hash of their path (``test_fraction``).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from rotviz.config import DataConfig, stable_hash
from rotviz.data.datasets import load_dataset, split_for
from rotviz.data.preprocess import PreparedSplit, prepare_split
from rotviz.data.records import Dataset, Record
from rotviz.data.rotation import normalize, rotate
from rotviz.errors import RotvizError
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.models import RotationNet
from rotviz.nets.twin import NETWORKS, TwinCalibration, random_twin_of, twin_calibration
from rotviz.runtime import RuntimeLike, as_runtime
from rotviz.scores.stats import (
    Interval,
    accuracy_interval,
    bootstrap_interval,
    format_interval,
    format_p,
    seed_interval,
    wilcoxon_p,
)
from rotviz.study.results import ProbeRun

TASKS = ("auto", "face", "identity", "catdog", "folder", "city")
DEFAULT_TASK = {
    "demo": "face",
    "lfw": "identity",
    "coco": "catdog",
    "folder": "folder",
    "cityscapes": "city",
}
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
KNN_K = 20
VAL_FRACTION = 0.2
FRACTIONS = (0.01, 0.1, 1.0)
FEATURE_VERSION = 1

Log = Callable[[str], None]


# --------------------------------------------------------------------------- tasks


@dataclass
class Part:
    """Rows of one preprocessed split that belong to a task, with their class indices."""

    split: PreparedSplit
    rows: np.ndarray  # (n,) int indices into split.images
    y: np.ndarray  # (n,) int class indices


@dataclass
class TaskData:
    """A labelled task: train and test parts (never sharing an image) and the class names."""

    task: str
    dataset: str
    classes: list[str]
    train: list[Part]
    test: list[Part]
    notes: list[str] = field(default_factory=list)

    @property
    def y_train(self) -> np.ndarray:
        return np.concatenate([p.y for p in self.train])

    @property
    def y_test(self) -> np.ndarray:
        return np.concatenate([p.y for p in self.test])

    def images(self, which: str) -> np.ndarray:
        """uint8 images (n, 3, S, S) of the "train" or "test" side, in label order."""
        parts = self.train if which == "train" else self.test
        return np.concatenate([np.asarray(p.split.images[p.rows]) for p in parts])

    def ids(self, which: str) -> list[str]:
        """Relative paths of the images of one side, in label order."""
        parts = self.train if which == "train" else self.test
        return [p.split.records[i].relpath for p in parts for i in p.rows]


def _part(
    split: PreparedSplit, label_of: Callable[[Record], str | None], classes: list[str]
) -> Part:
    index = {c: i for i, c in enumerate(classes)}
    rows, ys = [], []
    for i, rec in enumerate(split.records):
        label = label_of(rec)
        if label is not None and label in index:
            rows.append(i)
            ys.append(index[label])
    return Part(split, np.asarray(rows, dtype=np.int64), np.asarray(ys, dtype=np.int64))


def _catdog_label(ds: Dataset) -> Callable[[Record], str | None]:
    names = {k: v.lower() for k, v in ds.category_names.items()}

    def label(rec: Record) -> str | None:
        found = {names.get(c) for c in rec.categories} & {"cat", "dog"}
        return found.pop() if len(found) == 1 else None

    return label


def _record_label(rec: Record) -> str | None:
    return rec.label


def task_data(
    data: DataConfig,
    task: str = "auto",
    min_images: int = 10,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TaskData:
    """The labelled task of a dataset, preprocessed (cached) and split into train and test parts."""
    if task not in TASKS:
        raise RotvizError(f"task {task!r}: choose one of {', '.join(TASKS)}")
    if task == "auto":
        task = DEFAULT_TASK.get(data.dataset, "folder")
    expected = {v: k for k, v in DEFAULT_TASK.items()}[task]
    if data.dataset != expected:
        raise RotvizError(
            f"task {task!r} needs the {expected} dataset, not {data.dataset!r}; "
            f"for {data.dataset} use --task {DEFAULT_TASK.get(data.dataset, 'folder')}"
        )
    ds = load_dataset(data)

    def prep(split: str) -> PreparedSplit:
        return prepare_split(ds, split, data.image_size, data.resize, cache_dir, progress)

    notes: list[str] = []
    if task == "city":
        unseen = [s for s in ("val", "test") if ds.split(s)]
        if not unseen:
            unseen = ["train"]
            notes.append("no val/test images: the probe splits the pretext training images")
        splits = [prep(s) for s in unseen]
        classes = sorted({r.label for s in splits for r in s.records if r.label})

        def side(which: str) -> Callable[[Record], str | None]:
            return lambda r: r.label if split_for(r.relpath, data.test_fraction) == which else None

        train = [_part(s, side("train"), classes) for s in splits]
        test = [_part(s, side("test"), classes) for s in splits]
        return _checked(TaskData(task, data.dataset, classes, train, test, notes))

    label_of = _catdog_label(ds) if task == "catdog" else _record_label
    if task == "identity":
        counts: dict[str, int] = {}
        for r in ds.records:
            if r.label:
                counts[r.label] = counts.get(r.label, 0) + 1
        classes = sorted(p for p, n in counts.items() if n >= min_images)
        notes.append(f"{len(classes)} people with at least {min_images} images")
    elif task == "catdog":
        classes = ["cat", "dog"]
    elif task == "face":
        classes = ["face", "nonface"]
    else:
        classes = sorted({r.label for r in ds.records if r.label})
    if not classes:
        raise RotvizError(
            f"the {data.dataset} dataset has no classes for task {task!r}"
            + (
                f": no person has {min_images} images; lower --min-images"
                if task == "identity"
                else ""
            )
        )
    train_split, test_split = prep("train"), prep("test")
    train = [_part(train_split, label_of, classes)]
    test = [_part(test_split, label_of, classes)]
    return _checked(TaskData(task, data.dataset, classes, train, test, notes))


def _checked(td: TaskData) -> TaskData:
    ytr, yte = td.y_train, td.y_test
    present = sorted(set(ytr.tolist()))
    if len(present) < 2:
        raise RotvizError(
            f"task {td.task} on {td.dataset}: the training split has {len(present)} class(es); "
            "a probe needs at least 2 (use more images or another task)"
        )
    if len(yte) == 0:
        raise RotvizError(f"task {td.task} on {td.dataset}: no test image has a label")
    if len(present) < len(td.classes):
        keep = set(present)
        missing = [td.classes[i] for i in range(len(td.classes)) if i not in keep]
        td.notes.append(f"{len(missing)} classes have no training image and are left out")
        remap = {old: new for new, old in enumerate(present)}
        for p in td.train + td.test:
            ok = np.isin(p.y, present)
            p.rows, p.y = p.rows[ok], np.asarray([remap[v] for v in p.y[ok]], dtype=np.int64)
        td.classes = [td.classes[i] for i in present]
    return td


# --------------------------------------------------------------------------- features


def feature_cache_dir() -> Path:
    """<$ROTVIZ_CACHE or ~/.cache/rotviz>/features."""
    env = os.environ.get("ROTVIZ_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "rotviz"
    return base / "features"


def network_key(
    checkpoint: Checkpoint, network: str, calibration: TwinCalibration | None = None
) -> str:
    """Identity of the trained network or its random twin ("initial" / "calibrated"), for the
    feature cache; calibration: how the twin was calibrated (rotviz.nets.twin.twin_calibration)."""
    card = checkpoint.card
    if network == "trained":
        return stable_hash("trained", card.key, card.weights_sha256)
    cfg = checkpoint.train_config
    if network == "initial":
        return stable_hash("random", cfg.model, len(cfg.rotations), cfg.seed)
    if network == "calibrated":
        # calibrated statistics depend on the training images, hence on the checkpoint's data
        key = stable_hash("random", network, cfg.model, card.key)
        if calibration is not None and not calibration.own:  # calibrated on other images
            return stable_hash(key, calibration.dataset, calibration.n_images)
        return key
    raise RotvizError(f"network {network!r}: choose one of {', '.join(NETWORKS)}")


@torch.no_grad()
def embed_images(
    model: RotationNet,
    images: np.ndarray,
    device: torch.device,
    batch_size: int = 64,
    rotation: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """embed() features (N, D) float32 of uint8 images (N, 3, S, S) turned ``rotation`` quarter
    turns counter-clockwise first; eval mode; progress(done, total) after each batch."""
    model = model.to(device).eval()
    out = []
    for s in range(0, len(images), batch_size):
        x = rotate(torch.from_numpy(np.array(images[s : s + batch_size])).to(device), rotation)
        out.append(model.embed(normalize(x)).float().cpu().numpy())
        if progress is not None:
            progress(min(s + batch_size, len(images)), len(images))
    return np.concatenate(out) if out else np.zeros((0, model.num_features), np.float32)


def split_features(
    model: RotationNet,
    split: PreparedSplit,
    net_key: str,
    device: torch.device,
    cache_dir: Path | None = None,
    rotation: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Features (N, D) of every image of a preprocessed split (turned ``rotation`` quarter turns),
    cached by (split key, network key, rotation); progress(done, total) only while computing."""
    split_key = (
        split.cache_path.stem
        if split.cache_path is not None
        else stable_hash([r.relpath for r in split.records])
    )
    folder = Path(cache_dir) if cache_dir is not None else feature_cache_dir()
    turned = (int(rotation) % 4,) if rotation % 4 else ()  # upright keys stay as they were
    path = folder / f"{stable_hash('features', FEATURE_VERSION, split_key, net_key, *turned)}.npy"
    if path.exists():
        try:
            feats = np.load(path, allow_pickle=False)
            if feats.shape[0] == len(split):
                return feats
        except (OSError, ValueError):
            pass
    feats = embed_images(model, split.images, device, rotation=rotation, progress=progress)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, feats)
    os.replace(tmp, path)
    return feats


def task_features(
    model: RotationNet,
    td: TaskData,
    net_key: str,
    device: torch.device,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train features (n_train, D), test features (n_test, D)) of a task, from the cache."""

    def side(parts: list[Part]) -> np.ndarray:
        return np.concatenate(
            [split_features(model, p.split, net_key, device, cache_dir)[p.rows] for p in parts]
        )

    return side(td.train), side(td.test)


# --------------------------------------------------------------------------- label subsets


def label_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified fraction of labels: per class max(1, round(fraction * n_c))."""
    if not 0 < fraction <= 1:
        raise RotvizError(f"label fraction must lie in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(len(y))
    rng = np.random.default_rng([seed, int(round(fraction * 1e6))])
    chosen = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        take = max(1, int(round(fraction * idx.size)))
        chosen.append(rng.permutation(idx)[:take])
    return np.sort(np.concatenate(chosen))


# --------------------------------------------------------------------------- probes


@dataclass
class ProbeFit:
    """A probe's predictions on the test images and how it was chosen."""

    method: str
    predictions: np.ndarray  # (n_test,) class indices
    c: float | None = None  # chosen L2 strength (linear probe)
    val_accuracy: dict[float, float] = field(default_factory=dict)
    note: str = ""
    model: object = None

    def correct(self, y_test: np.ndarray) -> np.ndarray:
        return self.predictions == y_test


def _logistic(c: float, seed: int):  # noqa: ANN202 (an sklearn Pipeline)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)
    )


def choose_c(
    x_train: np.ndarray, y_train: np.ndarray, seed: int, grid: Sequence[float] = C_GRID
) -> tuple[float | None, dict[float, float], str]:
    """(C, validation accuracy per C, note): C with the best accuracy on a stratified 20 %
    validation part of the training data (ties: the smaller C). None when too few labels."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y_train)
    counts = counts[counts > 0]
    n_val = int(np.ceil(VAL_FRACTION * len(y_train)))
    if counts.min() < 2 or n_val < len(counts) or len(y_train) - n_val < len(counts):
        return None, {}, "too few labels for a validation part: C = 1"
    fit_idx, val_idx = train_test_split(
        np.arange(len(y_train)), test_size=n_val, stratify=y_train, random_state=seed
    )
    scores = {}
    for c in grid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings on tiny folds
            model = _logistic(c, seed).fit(x_train[fit_idx], y_train[fit_idx])
        scores[c] = float((model.predict(x_train[val_idx]) == y_train[val_idx]).mean())
    best = max(scores.values())
    return min(c for c, s in scores.items() if s == best), scores, ""


def linear_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0
) -> ProbeFit:
    """Logistic regression on features (n, D): C from choose_c on the training data, refit on all of it.

    The test features are only predicted; no test label is ever passed in.
    """
    c, scores, note = choose_c(x_train, y_train, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _logistic(1.0 if c is None else c, seed).fit(x_train, y_train)
    return ProbeFit(
        "linear", model.predict(x_test), c if c is not None else 1.0, scores, note, model
    )


def knn_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, k: int = KNN_K
) -> ProbeFit:
    """k-nearest-neighbour vote (cosine distance, k = 20 or all training images if fewer)."""
    from sklearn.neighbors import KNeighborsClassifier

    k_used = min(k, len(y_train))
    model = KNeighborsClassifier(n_neighbors=k_used, metric="cosine", algorithm="brute")
    model.fit(x_train, y_train)
    note = f"k = {k_used}" if k_used != k else ""
    return ProbeFit("knn", model.predict(x_test), note=note, model=model)


# --------------------------------------------------------------------------- fine-tuning


@dataclass(frozen=True)
class FinetuneConfig:
    """The budget of --unfreeze-last: the same for the trained network and its random twin."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.0


class _Finetuned(nn.Module):
    def __init__(self, net: RotationNet, n_classes: int):
        super().__init__()
        self.net = net
        self.classifier = nn.Linear(net.num_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.net.embed(x))


def finetune_probe(
    model: RotationNet,
    images_train: np.ndarray,
    y_train: np.ndarray,
    images_test: np.ndarray,
    n_classes: int,
    unfreeze_last: int,
    runtime: RuntimeLike = "auto",
    seed: int = 0,
    cfg: FinetuneConfig = FinetuneConfig(),
) -> ProbeFit:
    """Fine-tune the last K backbone blocks plus a new linear head on uint8 images (n, 3, S, S).

    Frozen blocks stay in eval mode (their BatchNorm statistics fixed). The head's
    initial weights and the batch order depend on seed only, so the trained network and
    its random twin get the same budget and the same draws. The runtime's autocast dtype
    (--amp) applies to the training forward passes.
    """
    runtime = as_runtime(runtime)
    device, amp_dtype = runtime.device, runtime.amp_dtype
    stages = model.blocks()[:-1]
    if not 0 <= unfreeze_last <= len(stages):
        raise RotvizError(
            f"--unfreeze-last {unfreeze_last}: {model.name} has {len(stages)} blocks below the head"
        )
    net = copy.deepcopy(model).to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    trainable = net.blocks()[:-1][len(stages) - unfreeze_last :]
    for block in trainable:
        for p in block.parameters():
            p.requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = _Finetuned(net, n_classes).to(device)
    params = [p for p in clf.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    x_all = torch.from_numpy(np.array(images_train))
    y_all = torch.from_numpy(np.asarray(y_train, dtype=np.int64))
    for epoch in range(cfg.epochs):
        clf.eval()
        for block in trainable:
            block.train()
        order = np.random.default_rng([seed, epoch]).permutation(len(y_all))
        for s in range(0, len(order), cfg.batch_size):
            idx = torch.from_numpy(order[s : s + cfg.batch_size])
            if len(idx) < 2 and trainable:
                continue  # BatchNorm in train mode needs more than one image
            x = normalize(x_all[idx].to(device))
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = clf(x)
            loss = loss_fn(logits.float(), y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    clf.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, len(images_test), 64):
            x = normalize(torch.from_numpy(np.array(images_test[s : s + 64])).to(device))
            preds.append(clf(x).argmax(1).cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return ProbeFit(
        f"finetune-{unfreeze_last}", pred, note=f"{cfg.epochs} epochs, Adam lr {cfg.lr}", model=clf
    )


# --------------------------------------------------------------------------- runs


def probe_run(
    checkpoint: Checkpoint,
    td: TaskData,
    runtime: RuntimeLike = "auto",
    fractions: Sequence[float] = FRACTIONS,
    unfreeze_last: int | None = None,
    finetune: FinetuneConfig = FinetuneConfig(),
    probe_seed: int | None = None,
    cache_dir: Path | None = None,
    log: Log = lambda _: None,
    twin: RotationNet | None = None,
) -> pd.DataFrame:
    """Per test image, network, method and label fraction: whether the prediction is right.

    twin: the random twin to probe beside the trained network (rotviz.nets.twin.random_twin_of;
    default the calibrated one, on the network's own training images).

    Columns: seed (the checkpoint's training seed), network (trained / random), method
    (linear / knn / finetune-K), fraction, image (test index), file, correct, c,
    twin_calibration (which images calibrated the twin, on its rows).
    probe_seed (default: the training seed) draws the label subsets and the fine-tuning.
    """
    runtime = as_runtime(runtime)
    device = runtime.device
    seed = checkpoint.train_config.seed
    pseed = seed if probe_seed is None else probe_seed
    y_train, y_test = td.y_train, td.y_test
    files = td.ids("test")
    twin = twin if twin is not None else random_twin_of(checkpoint, runtime=runtime)
    nets = {"trained": checkpoint.model, "random": twin}
    calibration = twin_calibration(twin)
    keys = {
        "trained": network_key(checkpoint, "trained"),
        "random": network_key(
            checkpoint, calibration.twin if calibration else "initial", calibration
        ),
    }
    said = {"trained": "", "random": calibration.describe() if calibration else ""}
    images_train = images_test = None
    if unfreeze_last is not None:
        images_train, images_test = td.images("train"), td.images("test")
    frames = []
    for network, model in nets.items():
        x_train, x_test = task_features(model, td, keys[network], device, cache_dir)
        for fraction in fractions:
            sub = label_subset(y_train, fraction, pseed)
            fits = [
                linear_probe(x_train[sub], y_train[sub], x_test, pseed),
                knn_probe(x_train[sub], y_train[sub], x_test),
            ]
            if unfreeze_last is not None:
                fits.append(
                    finetune_probe(
                        model,
                        images_train[sub],
                        y_train[sub],
                        images_test,
                        len(td.classes),
                        unfreeze_last,
                        runtime,
                        pseed,
                        finetune,
                    )
                )
            for fit in fits:
                correct = fit.correct(y_test)
                log(
                    f"probe {td.task}: {network}, {fit.method}, {fraction:.0%} of labels "
                    f"({len(sub)} images): accuracy {correct.mean():.1%}"
                )
                frames.append(
                    pd.DataFrame(
                        {
                            "seed": seed,
                            "network": network,
                            "method": fit.method,
                            "fraction": fraction,
                            "n_train": len(sub),
                            "image": np.arange(len(y_test)),
                            "file": files,
                            "correct": correct,
                            "c": fit.c,
                            "twin_calibration": said[network],
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


def chance_accuracy(y_test: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent test class (the floor to beat)."""
    return float(np.bincount(y_test).max() / len(y_test)) if len(y_test) else float("nan")


def probe_numbers(per_image: pd.DataFrame, n_resamples: int = 1000) -> pd.DataFrame:
    """Per method and fraction: accuracy of trained and random with 95 % intervals, paired p.

    Over images: a bootstrap of each image's correctness averaged over seeds; over seeds
    (when there are several): Student-t of the per-seed accuracies. The paired Wilcoxon
    test compares each image's mean correctness, trained vs random.
    """
    rows = []
    for (method, fraction), part in per_image.groupby(["method", "fraction"], sort=False):
        rec: dict[str, object] = {"method": method, "fraction": fraction}
        per_net = {}
        for net in ("trained", "random"):
            p = part[part["network"] == net]
            by_image = p.groupby("image")["correct"].mean().sort_index()
            per_net[net] = by_image
            iv = accuracy_interval(by_image.to_numpy(), n_resamples=n_resamples)
            seeds = p.groupby("seed")["correct"].mean()
            siv = seed_interval(seeds.to_numpy())
            rec.update(
                {
                    net: iv.estimate,
                    f"{net}_low": iv.low,
                    f"{net}_high": iv.high,
                    f"{net}_seeds_low": siv.low,
                    f"{net}_seeds_high": siv.high,
                }
            )
        t, r = per_net["trained"].align(per_net["random"], join="inner")
        diff = bootstrap_interval(t.to_numpy() - r.to_numpy(), n_resamples=n_resamples)
        rec.update(
            {
                "difference": diff.estimate,
                "difference_low": diff.low,
                "difference_high": diff.high,
                "p_wilcoxon": wilcoxon_p(t.to_numpy(), r.to_numpy()),
                "n_images": len(t),
                "n_train": int(part["n_train"].iloc[0]),
                "n_seeds": int(part["seed"].nunique()),
            }
        )
        rows.append(rec)
    return pd.DataFrame(rows)


def probe_result(td: TaskData, per_image: pd.DataFrame, seeds: Sequence[int]) -> ProbeRun:
    """The typed result of a probe: its per-image rows, probe_numbers and the task's facts."""
    return ProbeRun(
        per_image,
        probe_numbers(per_image),
        td.task,
        td.dataset,
        list(td.classes),
        list(td.notes),
        len(td.y_train),
        len(td.y_test),
        chance_accuracy(td.y_test),
        list(seeds),
    )


def probe_table(numbers: pd.DataFrame) -> pd.DataFrame:
    """Display table (%): rows (method, labels), columns trained, random, difference, p[, seeds]."""
    shown = {}
    for _, r in numbers.iterrows():
        row = {}
        for net in ("trained", "random"):
            row[net] = format_interval(Interval(r[net], r[f"{net}_low"], r[f"{net}_high"], 0))
        row["difference"] = format_interval(
            Interval(r["difference"], r["difference_low"], r["difference_high"], 0)
        )
        row["p (Wilcoxon)"] = format_p(r["p_wilcoxon"])
        if r["n_seeds"] > 1:
            for net in ("trained", "random"):
                row[f"{net}, over seeds"] = format_interval(
                    Interval(r[net], r[f"{net}_seeds_low"], r[f"{net}_seeds_high"], 0)
                )
        row["train images"] = str(r["n_train"])
        row["test images"] = str(r["n_images"])
        shown[(r["method"], f"{r['fraction']:.0%}")] = row
    df = pd.DataFrame.from_dict(shown, orient="index")
    df.index = pd.MultiIndex.from_tuples(df.index, names=["method", "labels"])
    return df
