"""One preprocessed split of a dataset: the records and the cached pixels every run starts from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rotviz import distributed
from rotviz.config import DataConfig
from rotviz.data.datasets import load_dataset
from rotviz.data.preprocess import PreparedSplit, prepare_split
from rotviz.data.records import Dataset


def load_split(
    data: DataConfig,
    split: str,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Dataset, PreparedSplit]:
    """The dataset and one preprocessed split of it (cached on disk; under torchrun rank 0 builds it, the others then load it)."""
    ds = load_dataset(data)
    with distributed.main_first():
        prepared = prepare_split(
            ds,
            split,
            size=data.image_size,
            resize=data.resize,
            cache_dir=cache_dir,
            progress=progress,
        )
    return ds, prepared
