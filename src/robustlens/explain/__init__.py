"""Explanations: superpixel segmentation, LIME with its explanation path, faithfulness and stability.

The lecture's "building trust by opening the black box" (Ribeiro et al. 2016).
"""

from __future__ import annotations

__all__: list[str] = []
