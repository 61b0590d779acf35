"""Training: seeded supervised training (``fit``) and its augmentation helpers."""

from __future__ import annotations

from robustlens.training.fit import TrainConfig, TrainHistory, accuracy, channel_stats, fit

__all__ = ["TrainConfig", "TrainHistory", "accuracy", "channel_stats", "fit"]
