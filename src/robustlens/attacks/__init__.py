"""White-box attacks, all returning an :class:`AttackResult` with per-sample tensors; the adaptive
wrappers BPDA and EOT; the universal adversarial patch and random transformations.

``create(name, **kw)`` builds a registered attack; ``names()`` lists them.

Example:
    >>> import robustlens as rl
    >>> rl.attacks.names()
    ['apgd', 'cw', 'deepfool', 'ensemble', 'fgsm', 'ifgsm', 'pgd', 'square']
"""

from __future__ import annotations

from typing import Any

from robustlens.attacks.adaptive import (
    BPDA,
    EOT,
    Diagnosis,
    StraightThrough,
    adaptive,
    bpda_view,
    declares_backward,
    diagnose,
    eot_view,
    identity,
)
from robustlens.attacks.apgd import APGD
from robustlens.attacks.base import ATTACKS, Attack, AttackResult, Run
from robustlens.attacks.cw import CarliniWagner
from robustlens.attacks.deepfool import DeepFool
from robustlens.attacks.ensemble import Ensemble
from robustlens.attacks.gradient import FGSM, IFGSM, PGD
from robustlens.attacks.patch import Patch, PatchResult, apply_patch
from robustlens.attacks.square import Square
from robustlens.attacks.transforms import RandomTransform, transformed_success

__all__ = [
    "APGD",
    "ATTACKS",
    "BPDA",
    "EOT",
    "FGSM",
    "IFGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "CarliniWagner",
    "DeepFool",
    "Diagnosis",
    "Ensemble",
    "Patch",
    "PatchResult",
    "RandomTransform",
    "Run",
    "Square",
    "StraightThrough",
    "adaptive",
    "apply_patch",
    "bpda_view",
    "create",
    "declares_backward",
    "diagnose",
    "eot_view",
    "identity",
    "names",
    "transformed_success",
]


def names() -> list[str]:
    """Registered attack names."""
    return ATTACKS.names()


def create(name: str, /, **kwargs: Any) -> Attack:
    """Build the attack registered under ``name``; unknown parameters are refused."""
    attack: Attack = ATTACKS.create(name, **kwargs)
    return attack
