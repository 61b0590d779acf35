"""Defenses: input transformations, image quilting, and adversarial training.

``defend(model, *preprocessors)`` puts a model behind preprocessing defenses; each preprocessor
declares ``differentiable`` and ``randomized``. BPDA reads ``differentiable`` (probing modules that
declare nothing); :func:`robustlens.attacks.adaptive` probes the defended model itself.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

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
from robustlens.errors import ParameterError
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


def build(
    name: str, /, *, clean: Tensor | None = None, seed: int = 0, **kwargs: object
) -> Preprocessor:
    """Any defense by name, quilting included: ``"quilting"`` builds its secret database from
    ``clean`` images (patch 5, k 10, 100 000 patches unless ``kwargs`` say otherwise).

    Example:
        >>> import torch
        >>> build("quilting", clean=torch.rand(20, 1, 12, 12), size=500, patch=3).k
        10
        >>> build("quilting")
        Traceback (most recent call last):
        ...
        robustlens.errors.ParameterError: defense 'quilting' builds its patch database from clean ...
    """
    if name != "quilting":
        return create(name, **kwargs)
    if clean is None:
        raise ParameterError(
            "defense 'quilting' builds its patch database from clean images: pass clean=train.x "
            "(images the attacker never sees)"
        )
    options: dict[str, Any] = {"patch": 5, "k": 10, "size": 100_000, "seed": seed, **kwargs}
    return Quilting.from_images(clean, **options)


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
    "build",
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
