"""rotviz: study self-supervised rotation prediction with saliency maps.

The public API, enough for a notebook::

    import rotviz
    ckpt = rotviz.load_checkpoint("demo-six_layer-e15-7b67db4588efa351")  # shipped
    _, test = rotviz.load_split(ckpt.data_config, "test")
    run = rotviz.goodness_run(ckpt, test, rotviz.SaliencyConfig(aggregate="none"), rotviz.Absolute(8e-4))
    print(run.summary["mean_q_trained"], run.summary["mean_q_random"])
"""

from rotviz.checkpoint import Card, Checkpoint, Recipe
from rotviz.config import DataConfig, TrainConfig, __version__
from rotviz.errors import RotvizError
from rotviz.evaluate import accuracy_comparison, rotation_accuracy
from rotviz.goodness import goodness_comparison, goodness_run, score_rows, summarize, sweeps
from rotviz.maps import checkpoint_maps, network_maps
from rotviz.metrics import Absolute, BoxArea, Percentile, goodness, parse_threshold
from rotviz.models import build_model
from rotviz.pipeline import load_split, random_twin_of, train_or_load
from rotviz.runtime import RunConfig, Runtime, as_runtime
from rotviz.saliency import SaliencyConfig
from rotviz.store import CheckpointStore, load_checkpoint

__all__ = [
    "Absolute",
    "BoxArea",
    "Card",
    "Checkpoint",
    "CheckpointStore",
    "DataConfig",
    "Percentile",
    "Recipe",
    "RotvizError",
    "RunConfig",
    "Runtime",
    "SaliencyConfig",
    "TrainConfig",
    "__version__",
    "accuracy_comparison",
    "as_runtime",
    "build_model",
    "checkpoint_maps",
    "goodness",
    "goodness_comparison",
    "goodness_run",
    "load_checkpoint",
    "load_split",
    "network_maps",
    "parse_threshold",
    "random_twin_of",
    "rotation_accuracy",
    "score_rows",
    "summarize",
    "sweeps",
    "train_or_load",
]
