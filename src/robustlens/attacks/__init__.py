"""White-box attacks, all returning an :class:`AttackResult` with per-sample tensors.

``create(name, **kw)`` builds a registered attack; ``names()`` lists them.

Example:
    >>> import robustlens as rl
    >>> rl.attacks.names()
    ['apgd', 'cw', 'deepfool', 'ensemble', 'fgsm', 'ifgsm', 'pgd']
"""

from __future__ import annotations

from typing import Any

from robustlens.attacks.apgd import APGD
from robustlens.attacks.base import ATTACKS, Attack, AttackResult, Run
from robustlens.attacks.cw import CarliniWagner
from robustlens.attacks.deepfool import DeepFool
from robustlens.attacks.ensemble import Ensemble
from robustlens.attacks.gradient import FGSM, IFGSM, PGD

__all__ = [
    "APGD",
    "ATTACKS",
    "FGSM",
    "IFGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "CarliniWagner",
    "DeepFool",
    "Ensemble",
    "Run",
    "create",
    "names",
]


def names() -> list[str]:
    """Registered attack names."""
    return ATTACKS.names()


def create(name: str, /, **kwargs: Any) -> Attack:
    """Build the attack registered under ``name``; unknown parameters are refused."""
    attack: Attack = ATTACKS.create(name, **kwargs)
    return attack
