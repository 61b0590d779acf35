"""Defenses: input transformations, image quilting, and adversarial training.

``defend(model, *preprocessors)`` puts a model behind preprocessing defenses; each preprocessor
declares ``differentiable`` and ``randomized``, which the adaptive attacks
(:func:`robustlens.attacks.adaptive`) read or probe.
"""

from __future__ import annotations

from robustlens.defenses.base import Defended, Preprocessor, Probe, defend, probe
from robustlens.defenses.quilting import Quilting, knn
from robustlens.defenses.training import (
    AdversarialConfig,
    OverfitGuard,
    adversarial_fit,
    lipschitz_penalty,
    pgd_perturbation,
    robust_accuracy,
)
from robustlens.defenses.transforms import (
    JPEG,
    TVM,
    BitDepth,
    Blur,
    CropRescale,
    binomial_kernel,
    tv_reconstruct,
)

__all__ = [
    "JPEG",
    "TVM",
    "AdversarialConfig",
    "BitDepth",
    "Blur",
    "CropRescale",
    "Defended",
    "OverfitGuard",
    "Preprocessor",
    "Probe",
    "Quilting",
    "adversarial_fit",
    "binomial_kernel",
    "defend",
    "knn",
    "lipschitz_penalty",
    "pgd_perturbation",
    "probe",
    "robust_accuracy",
    "tv_reconstruct",
]
