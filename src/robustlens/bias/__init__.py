"""Bias measurements: texture vs shape, spurious cues, superpixel statistics, dataset bias,
corruptions and label hierarchies (the lecture's "uncovering biases")."""

from __future__ import annotations

__all__: list[str] = []
