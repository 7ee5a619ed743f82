"""The random twin: one maker, one vocabulary, one rule for its calibration images, one default.

A network's random twin is the same architecture and rotations with the same seed, untrained:
the study's baseline. It comes in two kinds (``TWINS``):

- ``initial``: BatchNorm statistics as initialised (mean 0, variance 1), the study's twin;
- ``calibrated``: statistics recomputed with precise BatchNorm on training images, weights
  still the initial ones (initial statistics shrink an untrained net's input gradients by
  orders of magnitude). The default everywhere (``DEFAULT_TWIN``): library, CLI and app.

Which images calibrate a twin is decided here only: the network's own training images (its
card's DataConfig, or the paths given for its dataset) when they are on this machine, else the
training images of the data being explained, with a warning. The decision is a
``TwinCalibration`` that the twin carries as ``twin.calibration`` (as timm models carry their
``pretrained_cfg``), so whoever writes twin results can say it (``twin_calibration``).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from rotviz.config import DataConfig
from rotviz.data.splits import load_split
from rotviz.errors import RotvizError
from rotviz.nets.batchnorm import DEFAULT_N_IMAGES, precise_bn
from rotviz.nets.checkpoint import Checkpoint
from rotviz.nets.models import RotationNet, build_model
from rotviz.runtime import RuntimeLike, as_runtime

TWINS = ("initial", "calibrated")
TWIN_NAMES = {
    "initial": "random (initial statistics)",
    "calibrated": "random (calibrated statistics)",
}
DEFAULT_TWIN = "calibrated"
NETWORKS = ("trained", *TWINS)  # a network or one of its twins, as rows of tables and CSVs


@dataclass(frozen=True)
class TwinCalibration:
    """Which images set a twin's BatchNorm statistics (none for the initial twin), and why."""

    twin: str  # "initial" or "calibrated"
    trained_on: str  # the network's own dataset
    dataset: str | None = None  # whose training images calibrated it
    n_images: int = 0
    own: bool = True  # the network's own training images (else those of the data explained)

    def describe(self) -> str:
        """One line, e.g. "calibrated on 2,000 training images of lfw (the network's own)"."""
        if self.twin == "initial":
            return "initial BatchNorm statistics (mean 0, variance 1), no images"
        text = f"calibrated on {self.n_images:,} training images of {self.dataset}"
        if self.own:
            return f"{text} (the network's own)"
        return (
            f"{text}: the network's own training images ({self.trained_on}) are not on this machine"
        )

    def to_dict(self) -> dict:
        """The fields and the description, for JSON outputs."""
        return {**dataclasses.asdict(self), "description": self.describe()}


def check_twin(kind: str) -> str:
    """kind if it names a twin, else RotvizError listing the choices."""
    if kind not in TWINS:
        raise RotvizError(f"random twin {kind!r}: choose one of {', '.join(TWINS)}")
    return kind


def twin_calibration(twin: torch.nn.Module) -> TwinCalibration | None:
    """How a twin made by random_twin_of was calibrated (None for any other model)."""
    return getattr(twin, "calibration", None)


def describe_twin(twin: torch.nn.Module) -> str:
    """The log line of a twin: its name and how it was calibrated."""
    calibration = twin_calibration(twin)
    if calibration is None:
        return "random twin: made outside rotviz.nets.twin, calibration unknown"
    return f"random twin ({calibration.twin}): {calibration.describe()}"


def calibration_caption(twin: torch.nn.Module | None) -> str:
    """Which images calibrated a twin, as a sentence for a page caption ("" if not known)."""
    calibration = None if twin is None else twin_calibration(twin)
    return f"Random twin: {calibration.describe()}." if calibration else ""


def _untrained(model: RotationNet, seed: int) -> RotationNet:
    """Same architecture and rotations, same seed, initial weights, eval mode."""
    return build_model(model.name, model.rotations, seed).eval()


def _same_dataset(data: DataConfig, trained_on: DataConfig) -> bool:
    """Whether data names the network's own dataset (an image folder: the same folder too)."""
    if data.dataset != trained_on.dataset:
        return False
    return data.dataset != "folder" or data.root == trained_on.root


def _calibration_images(
    checkpoint: Checkpoint, data: DataConfig | None, own: DataConfig | None
) -> tuple[np.ndarray, str, bool]:
    """(uint8 training images, their dataset, whether the network's own): the one rule."""
    trained_on = checkpoint.data_config
    explained = data if data is not None and not _same_dataset(data, trained_on) else None
    own = own or (data if data is not None and explained is None else trained_on)
    own = dataclasses.replace(own, image_size=trained_on.image_size, resize=trained_on.resize)
    try:
        _, split = load_split(own, "train")
        return split.images, trained_on.dataset, True
    except RotvizError as err:
        if explained is None:
            raise RotvizError(
                f"the calibrated random twin needs the network's training images ({err}); "
                "give the dataset's path, or compare with the initial twin (--twin initial)"
            ) from err
    warnings.warn(
        f"the {trained_on.dataset} training images of {checkpoint.name} are not on this "
        f"machine: its calibrated random twin takes its BatchNorm statistics from the "
        f"{explained.dataset} training images instead",
        UserWarning,
        stacklevel=3,
    )
    explained = dataclasses.replace(
        explained, image_size=trained_on.image_size, resize=trained_on.resize
    )
    _, split = load_split(explained, "train")
    return split.images, explained.dataset, False


def random_twin_of(
    checkpoint: Checkpoint,
    kind: str = DEFAULT_TWIN,
    runtime: RuntimeLike = "auto",
    data: DataConfig | None = None,
    own: DataConfig | None = None,
    train_images: np.ndarray | None = None,
    n_images: int | None = DEFAULT_N_IMAGES,
) -> RotationNet:
    """The checkpoint's random twin of that kind (``TWINS``), in eval mode on the runtime's device.

    The one maker of twins. data: the data being explained (default: the network's own);
    own: where the network's own training images are on this machine (default: data when it
    is the network's dataset, else its card's DataConfig); train_images: the network's own
    training images, uint8 (N, 3, S, S), when the caller holds them. A calibrated twin takes
    its BatchNorm statistics from the network's own training images, else (with a warning)
    from those of data. The twin carries the decision as ``.calibration`` (TwinCalibration).
    """
    check_twin(kind)
    device = as_runtime(runtime).device
    twin = _untrained(checkpoint.model, checkpoint.train_config.seed).to(device)
    trained_on = checkpoint.data_config.dataset
    if kind == "initial":
        twin.calibration = TwinCalibration("initial", trained_on)
        return twin
    if train_images is not None:
        images, dataset, is_own = train_images, trained_on, True
    else:
        images, dataset, is_own = _calibration_images(checkpoint, data, own)
    info = precise_bn(
        twin, images, checkpoint.rotations, device, n_images, seed=checkpoint.train_config.seed
    )
    twin.calibration = TwinCalibration("calibrated", trained_on, dataset, info.n_images, is_own)
    return twin.eval()


def trained_or_twin(
    checkpoint: Checkpoint,
    network: str,
    runtime: RuntimeLike = "auto",
    data: DataConfig | None = None,
) -> RotationNet:
    """The trained network ("trained") or its twin ("initial" / "calibrated", random_twin_of)."""
    if network == "trained":
        return checkpoint.model
    if network not in TWINS:
        raise RotvizError(f"network {network!r}: choose one of {', '.join(NETWORKS)}")
    return random_twin_of(checkpoint, network, runtime, data)
