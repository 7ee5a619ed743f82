"""rotviz: study self-supervised rotation prediction with saliency maps.

The public API, enough for a notebook::

    import rotviz
    ckpt = rotviz.load_checkpoint("demo-six_layer-e15-7b67db4588efa351")  # shipped
    _, test = rotviz.load_split(ckpt.data_config, "test")
    run = rotviz.goodness_run(ckpt, test, rotviz.SaliencyConfig(aggregate="none"), rotviz.Absolute(8e-4))
    print(run.summary["mean_q_trained"], run.summary["mean_q_random"])
"""

import importlib
from typing import Any

from rotviz.config import __version__

# The public API, imported on first use: `import rotviz.store` (loading a checkpoint) must not
# pull in the training loop, the app or the CLI.
_PUBLIC = {
    "Absolute": "rotviz.metrics",
    "BoxArea": "rotviz.metrics",
    "Card": "rotviz.checkpoint",
    "Checkpoint": "rotviz.checkpoint",
    "CheckpointStore": "rotviz.store",
    "DataConfig": "rotviz.config",
    "Percentile": "rotviz.metrics",
    "Recipe": "rotviz.checkpoint",
    "RotvizError": "rotviz.errors",
    "RunConfig": "rotviz.runtime",
    "Runtime": "rotviz.runtime",
    "SaliencyConfig": "rotviz.saliency",
    "TrainConfig": "rotviz.config",
    "accuracy_comparison": "rotviz.evaluate",
    "as_runtime": "rotviz.runtime",
    "build_model": "rotviz.models",
    "checkpoint_maps": "rotviz.maps",
    "goodness": "rotviz.metrics",
    "goodness_comparison": "rotviz.goodness",
    "goodness_run": "rotviz.goodness",
    "load_checkpoint": "rotviz.store",
    "load_split": "rotviz.pipeline",
    "network_maps": "rotviz.maps",
    "parse_threshold": "rotviz.metrics",
    "random_twin_of": "rotviz.pipeline",
    "rotation_accuracy": "rotviz.evaluate",
    "score_rows": "rotviz.goodness",
    "summarize": "rotviz.goodness",
    "sweeps": "rotviz.goodness",
    "train_or_load": "rotviz.pipeline",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'rotviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
