"""rotviz: study self-supervised rotation prediction with saliency maps.

The public API, enough for a notebook::

    import rotviz
    ckpt = rotviz.load_checkpoint("demo-six_layer-e100-2dd201f2a42d7756")  # shipped
    _, test = rotviz.load_split(ckpt.data_config, "test")
    run = rotviz.goodness_run(ckpt, test, rotviz.SaliencyConfig(aggregate="none"), rotviz.Absolute(8e-4))
    print(run.summary.trained.mean_q, run.summary.random.mean_q)
    rotviz.save_goodness(run, test, rotviz.Absolute(8e-4), "sal", rotviz.run_context(ckpt, ckpt.data_config))
"""

import importlib
from typing import Any

from rotviz.config import __version__

# The public API, imported on first use: `import rotviz.nets.store` (loading a checkpoint) must not
# pull in the training loop, the app or the CLI.
_PUBLIC = {
    "Absolute": "rotviz.scores.metrics",
    "BoxArea": "rotviz.scores.metrics",
    "Card": "rotviz.nets.checkpoint",
    "Checkpoint": "rotviz.nets.checkpoint",
    "CheckpointStore": "rotviz.nets.store",
    "DataConfig": "rotviz.config",
    "FaithfulnessConfig": "rotviz.scores.faithfulness",
    "Percentile": "rotviz.scores.metrics",
    "Recipe": "rotviz.nets.checkpoint",
    "RotvizError": "rotviz.errors",
    "RunConfig": "rotviz.runtime",
    "Runtime": "rotviz.runtime",
    "SaliencyConfig": "rotviz.attribution.saliency",
    "TrainConfig": "rotviz.config",
    "accuracy_comparison": "rotviz.nets.evaluate",
    "as_runtime": "rotviz.runtime",
    "build_model": "rotviz.nets.models",
    "checkpoint_maps": "rotviz.attribution.maps",
    "faithfulness_run": "rotviz.study.faithfulness",
    "goodness": "rotviz.scores.metrics",
    "goodness_comparison": "rotviz.study.goodness",
    "goodness_run": "rotviz.study.goodness",
    "load_checkpoint": "rotviz.nets.store",
    "load_split": "rotviz.data.splits",
    "network_maps": "rotviz.attribution.maps",
    "parse_threshold": "rotviz.scores.metrics",
    "random_twin_of": "rotviz.nets.twin",
    "twin_calibration": "rotviz.nets.twin",
    "rotation_accuracy": "rotviz.nets.evaluate",
    "score_rows": "rotviz.study.goodness",
    "summarize": "rotviz.study.goodness",
    "run_context": "rotviz.study.runs",
    "save_consistency": "rotviz.report.writers",
    "save_faithfulness": "rotviz.report.writers",
    "save_goodness": "rotviz.report.writers",
    "save_neurons": "rotviz.report.writers",
    "save_probe": "rotviz.report.writers",
    "save_sanity": "rotviz.report.writers",
    "sweeps": "rotviz.study.results",
    "train_or_load": "rotviz.training.pipeline",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'rotviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
