"""The lecture's robustness curves.

* :func:`accuracy_vs_distance`: accuracy as a function of the perturbation size, from **one** run of
  a minimum-norm attack (DeepFool, Carlini-Wagner): an input still counts as correct at budget
  ``b`` if the attack needed more than ``b`` to fool the model (or failed).
* :func:`robust_accuracy_curve`: robust accuracy against a list of ``eps`` for a fixed-budget
  attack (FGSM, I-FGSM, PGD), without a full re-run per ``eps``. Budgets are visited in increasing
  order; an input broken at ``eps_i`` is broken at every larger budget (the smaller ball lies in
  the larger one), so only the inputs still robust are attacked again, each warm-started from its
  best point at the previous budget. The per-sample minimal ``eps`` comes out as a by-product.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from robustlens.attacks.base import Attack, AttackResult
from robustlens.errors import ParameterError

__all__ = ["Curve", "accuracy_vs_distance", "robust_accuracy_curve"]

Metric = Literal["l2_normalized", "l2", "linf"]


@dataclass(frozen=True)
class Curve:
    """Accuracy (``(B,)``) at each budget (``(B,)``, increasing) of one attack."""

    label: str
    metric: str
    budgets: Tensor
    accuracy: Tensor
    per_sample: Tensor | None = (
        None  # minimal budget that fooled each input (inf: never; 0: misclassified)
    )

    def at(self, budget: float) -> float:
        """Accuracy at ``budget`` (step function: the last budget point <= ``budget``)."""
        pos = int(
            torch.searchsorted(
                self.budgets, torch.tensor([budget], dtype=self.budgets.dtype), right=True
            )
        )
        return float(self.accuracy[max(pos - 1, 0)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "metric": self.metric,
            "budgets": self.budgets.tolist(),
            "accuracy": self.accuracy.tolist(),
        }


def accuracy_vs_distance(result: AttackResult, *, metric: Metric = "l2_normalized") -> Curve:
    """Accuracy against budget from one minimum-norm attack run.

    Budgets are 0 and every distance at which some input became adversarial; accuracy at ``b`` is
    the fraction of all inputs correctly classified and not fooled within ``b``.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:50]
        >>> res = rl.attacks.DeepFool()(rl.zoo.load("digits-cnn"), ds.x, ds.y)
        >>> curve = accuracy_vs_distance(res)
        >>> curve.accuracy[0].item() == res.clean_accuracy, curve.accuracy[-1].item()
        (True, 0.0)
    """
    dist = getattr(result, metric).detach().double().cpu()
    fooled = (result.success & result.attacked).cpu()
    need = torch.where(fooled, dist, torch.full_like(dist, math.inf))
    need = torch.where(result.attacked.cpu(), need, torch.zeros_like(need))
    budgets = torch.cat([torch.zeros(1, dtype=torch.float64), dist[fooled].unique()])
    n = max(len(result), 1)
    ordered = need[result.attacked.cpu()].sort().values
    still = len(ordered) - torch.searchsorted(ordered, budgets, right=True)
    return Curve(result.attack, metric, budgets, still.double() / n, per_sample=need)


def robust_accuracy_curve(
    attack: Attack,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Sequence[float],
    *,
    warm_start: bool = True,
    batch_size: int | None = None,
) -> Curve:
    """Robust accuracy of ``model`` under ``attack`` at each budget in ``eps``.

    ``attack`` must have an ``eps`` field (FGSM, IFGSM, PGD, ...); its other settings are kept. The
    step size, when the attack derives it from ``eps``, scales with each budget. ``batch_size``:
    at most that many images attacked at a time (see :class:`~robustlens.attacks.Attack`).

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:50]
        >>> curve = robust_accuracy_curve(rl.attacks.PGD(eps=0.1, steps=10),
        ...                               rl.zoo.load("digits-cnn"), ds.x, ds.y, [0.05, 0.1, 0.2])
        >>> bool((curve.accuracy[1:] <= curve.accuracy[:-1]).all())
        True
    """
    if not any(f.name == "eps" for f in dataclasses.fields(attack)):
        raise ParameterError(f"robust_accuracy_curve: {type(attack).__name__} has no 'eps' budget")
    budgets = sorted(float(e) for e in eps)
    if not budgets or budgets[0] <= 0:
        raise ParameterError(
            f"robust_accuracy_curve: 'eps' must be a non-empty list of floats > 0, got {eps}"
        )
    n = len(x)
    min_eps = torch.full((n,), math.inf, dtype=torch.float64)
    warm = x.clone()
    robust = torch.ones(n, dtype=torch.bool, device=x.device)
    accuracy = []
    for i, e in enumerate(budgets):
        atk: Attack = dataclasses.replace(attack, **cast(dict[str, Any], {"eps": e}))
        idx = robust.nonzero().squeeze(1)
        if len(idx) == 0:
            accuracy.append(0.0)
            continue
        init = warm[idx] if warm_start and i > 0 else None
        res = atk(model, x[idx], y[idx], x_init=init, batch_size=batch_size)
        if i == 0:  # inputs the model already gets wrong need no budget at all
            min_eps[~res.attacked.cpu()] = 0.0
            robust &= res.attacked
        warm[idx] = res.x_adv
        newly = idx[res.success]
        robust[newly] = False
        min_eps[newly.cpu()] = e  # robust until now: this is its smallest breaking budget
        accuracy.append(float(robust.double().mean()))
    return Curve(
        label=type(attack).__name__,
        metric="eps",
        budgets=torch.tensor(budgets, dtype=torch.float64),
        accuracy=torch.tensor(accuracy, dtype=torch.float64),
        per_sample=min_eps,
    )
