"""Defenses: input transformations, image quilting, and adversarial training.

``defend(model, *preprocessors)`` puts a model behind preprocessing defenses; each preprocessor
declares ``differentiable`` and ``randomized``. BPDA reads ``differentiable`` (probing modules that
declare nothing); :func:`robustlens.attacks.adaptive` probes the defended model itself.
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
from robustlens.registry import Registry

#: The built-in preprocessors by name (``create(name, **kw)``); quilting needs clean images, so it is
#: built with ``Quilting.from_images`` instead.
PREPROCESSORS: Registry[type[Preprocessor]] = Registry("defense")
for _name, _cls in (
    ("blur", Blur),
    ("jpeg", JPEG),
    ("bitdepth", BitDepth),
    ("crop", CropRescale),
    ("tvm", TVM),
):
    PREPROCESSORS.register(_name)(_cls)


def names() -> list[str]:
    """Names of the built-in preprocessors that ``create`` builds."""
    return PREPROCESSORS.names()


def create(name: str, /, **kwargs: object) -> Preprocessor:
    """Build the built-in preprocessor ``name``; unknown parameters are refused."""
    pre: Preprocessor = PREPROCESSORS.create(name, **kwargs)
    return pre


__all__ = [
    "JPEG",
    "PREPROCESSORS",
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
    "create",
    "defend",
    "knn",
    "lipschitz_penalty",
    "names",
    "pgd_perturbation",
    "probe",
    "robust_accuracy",
    "tv_reconstruct",
]
