"""Networks: the model registry, checkpoints and their store, BatchNorm statistics, evaluation."""
