"""Configuration as frozen dataclasses with a stable hash (the checkpoint store's key)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__version__ = "0.1.0"  # the package version (rotviz.__version__ re-exports it)

IMAGE_SIZE = 128
ALL_ROTATIONS = (0, 1, 2, 3)


@dataclass(frozen=True)
class DataConfig:
    """Which images, and how they are preprocessed.

    root and ann locate the files on this machine; they are not part of the hash, so a
    checkpoint trained on the same files elsewhere is found again (the store keys on the
    dataset's content fingerprint instead).
    """

    dataset: str
    root: str | None = None
    ann: str | None = None
    categories: tuple[str, ...] = ()
    test_fraction: float = 0.25
    image_size: int = IMAGE_SIZE
    resize: str = "stretch"  # "stretch" (the study) or "center-crop"
    max_images: int | None = None  # per split, for quick runs

    def identity(self) -> dict[str, Any]:
        """The fields that define the data, without machine-local paths."""
        d = dataclasses.asdict(self)
        d.pop("root")
        d.pop("ann")
        d["categories"] = sorted(self.categories)
        return d


@dataclass(frozen=True)
class TrainConfig:
    """The rotation pretext training recipe; defaults are the study's preset."""

    model: str = "six_layer"
    rotations: tuple[int, ...] = ALL_ROTATIONS
    epochs: int = 10
    batch_size: int = 32  # images; each brings all its rotations into the batch
    lr: float = 1e-4
    momentum: float = 0.5
    lr_step: int = 10
    lr_gamma: float = 1.0  # the study lists "Regularization = 1": no decay by default
    seed: int = 0
    shuffle_labels: bool = False  # data-randomisation baseline


def stable_hash(*parts: Any, length: int = 16) -> str:
    """A hex digest of JSON-serialisable parts (dataclasses allowed), stable across runs."""

    def encode(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {k: encode(v) for k, v in dataclasses.asdict(obj).items()}
        if isinstance(obj, dict):
            return {str(k): encode(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [encode(v) for v in obj]
        return obj

    text = json.dumps([encode(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def bundled(folder: str) -> Path:
    """A folder that ships beside the package (``checkpoints``, ``pages``, ``.streamlit``).

    An installed wheel carries it inside the package (pyproject maps it in); a checkout or an
    editable install has it at the repository's top level.
    """
    inside = Path(__file__).parent / folder.lstrip(".")
    return inside if inside.is_dir() else Path(__file__).parent.parent / folder
