"""The seed study's published figures and the protocol they were measured under.

A figure of ours is shown beside a published one only when it was measured the same way:
the study's recipe (``Recipe.is_study``) for accuracy, and for goodness also plain saliency,
no aggregation over rotations, all neurons of the layer and the study's absolute lambda.
``goodness_protocol_mismatch`` says why not, in words a table cell can show.
"""

from __future__ import annotations

from rotviz.errors import RotvizError
from rotviz.scores.metrics import Absolute, Threshold

# The seed report's rotation accuracy (%), per dataset and model.
PUBLISHED_ACCURACY = {
    "coco": {"efficientnet_b0": 54.4, "mobilenet_v2": 43.4, "six_layer": 57.6},
    "lfw": {"efficientnet_b0": 84.3, "mobilenet_v2": 60.4, "six_layer": 98.0},
    "cityscapes": {"efficientnet_b0": 99.8, "mobilenet_v2": 99.9, "six_layer": 99.4},
}

# The seed report's thresholds and mean goodness (%) on the COCO test set, per layer and model.
STUDY_THRESHOLDS = {
    "rotation": {"efficientnet_b0": 8e-3, "mobilenet_v2": 8e-3, "six_layer": 8e-4},
    "embedding": {"efficientnet_b0": 1e-4, "mobilenet_v2": 1e-2, "six_layer": 8e-4},
}
PUBLISHED_GOODNESS = {
    "rotation": {"efficientnet_b0": 28.7, "mobilenet_v2": 31.8, "six_layer": 12.8},
    "embedding": {"efficientnet_b0": 11.6, "mobilenet_v2": 21.0, "six_layer": 6.6},
}
PUBLISHED_GOODNESS_DATASET = "coco"


def study_lambda(layer: str, model: str, fallback: float = 8e-4) -> float:
    """The study's absolute lambda for (layer, model), or fallback for models it did not use."""
    return STUDY_THRESHOLDS.get(layer, {}).get(model, fallback)


def default_threshold(layer: str, model: str) -> Threshold:
    """The study's absolute lambda for (layer, model); other models need an explicit threshold."""
    try:
        return Absolute(STUDY_THRESHOLDS[layer][model])
    except KeyError as err:
        raise RotvizError(
            f"the study has no threshold for {model} on the {layer} layer: give --threshold"
        ) from err


def published_accuracy(dataset: str, model: str) -> float | None:
    """The study's rotation accuracy (%) for (dataset, model), or None."""
    return PUBLISHED_ACCURACY.get(dataset, {}).get(model)


def goodness_protocol_mismatch(
    dataset: str,
    model: str,
    layer: str,
    method: str,
    aggregate: str,
    neurons: str,
    threshold: Threshold,
) -> str | None:
    """Why a goodness figure is not comparable with the published one (None: it is)."""
    published = PUBLISHED_GOODNESS.get(layer, {}).get(model)
    if published is None:
        return f"the study has no figure for {model}"
    if dataset != PUBLISHED_GOODNESS_DATASET:
        return f"the study measured COCO, not {dataset}"
    reasons = []
    if method != "saliency":
        reasons.append(f"method {method} (the study: plain saliency)")
    if aggregate != "none":
        reasons.append(f"aggregation {aggregate} (the study: none)")
    if neurons != "all":
        reasons.append(f"neurons {neurons} (the study: all)")
    lam = STUDY_THRESHOLDS[layer][model]
    if not (isinstance(threshold, Absolute) and float(threshold.lam) == lam):
        reasons.append(f"threshold {threshold.describe()} (the study: abs:{lam:g})")
    return "; ".join(reasons) or None
