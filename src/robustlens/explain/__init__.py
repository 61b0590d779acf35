"""Explanations: superpixel segmentation, LIME with its explanation path, faithfulness and stability.

The lecture's "building trust by opening the black box" (Ribeiro et al. 2016).

Example:
    >>> import robustlens as rl
    >>> rl.explain.segmenters()
    ['felzenszwalb', 'grid', 'quickshift', 'slic']
"""

from __future__ import annotations

from robustlens.explain._solvers import LassoPath, WLSFit, lasso_path, weighted_least_squares
from robustlens.explain.lime import (
    MAX_GAP,
    MIN_R2,
    Explanation,
    Lime,
    Samples,
    gaussian_blur,
    hidden_image,
    kernel_weights,
)
from robustlens.explain.metrics import (
    DELETION_MARGIN,
    RANDOM_ORDERS,
    Faithfulness,
    Stability,
    deletion_auc,
    faithfulness,
    insertion_auc,
    perturbation_curves,
    stability,
    topk_jaccard,
)
from robustlens.explain.plots import plot_explanation, plot_path
from robustlens.explain.segmentation import (
    SEGMENTERS,
    Felzenszwalb,
    Grid,
    Quickshift,
    Segmenter,
    Slic,
    check_segments,
    segment,
)
from robustlens.explain.segmentation import create as create_segmenter
from robustlens.explain.segmentation import names as segmenters

__all__ = [
    "DELETION_MARGIN",
    "MAX_GAP",
    "MIN_R2",
    "RANDOM_ORDERS",
    "SEGMENTERS",
    "Explanation",
    "Faithfulness",
    "Felzenszwalb",
    "Grid",
    "LassoPath",
    "Lime",
    "Quickshift",
    "Samples",
    "Segmenter",
    "Slic",
    "Stability",
    "WLSFit",
    "check_segments",
    "create_segmenter",
    "deletion_auc",
    "faithfulness",
    "gaussian_blur",
    "hidden_image",
    "insertion_auc",
    "kernel_weights",
    "lasso_path",
    "perturbation_curves",
    "plot_explanation",
    "plot_path",
    "segment",
    "segmenters",
    "stability",
    "topk_jaccard",
    "weighted_least_squares",
]
