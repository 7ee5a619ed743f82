"""The training loop, its run logs, and train-or-load orchestration."""
