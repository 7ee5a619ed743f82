"""The record of one image in a dataset: where it is, its boxes, its split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Record:
    """One image of a dataset.

    boxes are (x0, y0, x1, y1) in pixels of the original image; categories and crowd
    run parallel to boxes. label is a class for downstream tasks (person, city, subfolder).
    """

    path: str
    relpath: str
    split: str  # "train" or "test"
    image_id: int | str
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    categories: tuple[int, ...] = ()
    crowd: tuple[bool, ...] = ()
    label: str | None = None

    def boxes_array(self) -> np.ndarray:
        """Boxes as a (K, 4) float32 array in original pixels."""
        return np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)


@dataclass(frozen=True)
class Dataset:
    """Records of one source plus what is needed to interpret them."""

    name: str
    root: str
    records: tuple[Record, ...]
    category_names: dict[int, str] = field(default_factory=dict)

    def split(self, split: str) -> list[Record]:
        """Records of one split ("train" or "test"), in a stable order."""
        return [r for r in self.records if r.split == split]
