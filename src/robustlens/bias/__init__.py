"""Bias measurements: texture vs shape, spurious cues, superpixel statistics, dataset bias,
corruptions and label hierarchies (the lecture's "uncovering biases")."""

from __future__ import annotations

from robustlens.bias.corruptions import (
    CORRUPTIONS,
    Corruption,
    CorruptionResult,
    RandomVsAdversarial,
    corrupt,
    corruption_robustness,
    random_vs_adversarial,
)
from robustlens.bias.dataset import (
    Balance,
    CrossDataset,
    NameThatDataset,
    balance,
    cross_dataset_matrix,
    harmonize,
    name_that_dataset,
)
from robustlens.bias.labels import (
    FASHION_MNIST,
    Ambiguous,
    Hierarchy,
    ambiguous,
    multilabel_accuracy,
    topk_accuracy,
)
from robustlens.bias.shape import (
    REFERENCES_16,
    ShapeBias,
    ShapeBiasReference,
    imagenet_16_probabilities,
    shape_bias,
    shape_bias_from_decisions,
    shape_bias_imagenet,
)
from robustlens.bias.spurious import CueReliance, cue_reliance
from robustlens.bias.superpixels import (
    SuperpixelAttributes,
    SuperpixelStats,
    patch_mask,
    shuffle_baseline,
    superpixel_attributes,
    superpixel_statistics,
)

__all__: list[str] = [
    "CORRUPTIONS",
    "FASHION_MNIST",
    "REFERENCES_16",
    "Ambiguous",
    "Balance",
    "Corruption",
    "CorruptionResult",
    "CrossDataset",
    "CueReliance",
    "Hierarchy",
    "NameThatDataset",
    "RandomVsAdversarial",
    "ShapeBias",
    "ShapeBiasReference",
    "SuperpixelAttributes",
    "SuperpixelStats",
    "ambiguous",
    "balance",
    "corrupt",
    "corruption_robustness",
    "cross_dataset_matrix",
    "cue_reliance",
    "harmonize",
    "imagenet_16_probabilities",
    "multilabel_accuracy",
    "name_that_dataset",
    "patch_mask",
    "random_vs_adversarial",
    "shape_bias",
    "shape_bias_from_decisions",
    "shape_bias_imagenet",
    "shuffle_baseline",
    "superpixel_attributes",
    "superpixel_statistics",
    "topk_accuracy",
]
