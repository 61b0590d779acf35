"""Auto-PGD (Croce and Hein 2020): PGD whose step size adapts itself, with momentum.

The step size starts at ``2 * eps`` and is halved at checkpoints of the iteration schedule when
progress stalls: fewer than ``rho`` of the steps since the last checkpoint raised the objective,
or the step size and the best objective are both unchanged since it. After a halving the
iterate restarts from the best point found. Each step moves to a gradient step ``z`` and then
``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))`` with momentum
``alpha = 0.75``.

Losses: cross-entropy, and the difference of logits ratio (DLR), invariant to shifting and to
positive scaling of the logits:

* untargeted: ``-(z_y - max_{i != y} z_i) / (z_(1) - z_(3))``
* targeted: ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)``

with ``z_(k)`` the k-th largest logit. ``APGD(loss="dlr", targets=9)`` is APGD-T: for each of the
``targets`` most likely other classes in turn, the targeted DLR is ascended on the images not yet
fooled, and success means any misclassification.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlens._checks import check_at_least, check_choice, check_positive, check_probability
from robustlens.attacks._steps import Norm, bcast, direction, other_max, project, random_in_ball
from robustlens.attacks.base import ATTACKS, Attack, Run
from robustlens.errors import ParameterError

__all__ = ["APGD", "checkpoints", "dlr_loss", "dlr_targeted_loss"]

_TINY = 1e-12


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted DLR, per sample, to ascend: ``-(z_y - max_{i!=y} z_i) / (z_(1) - z_(3))``.

    With two classes there is no third logit to scale by, and the loss is the plain margin.
    """
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    margin = z_y - other_max(logits, y)
    if logits.shape[1] < 3:
        return -margin
    return -margin / (top[:, 0] - top[:, 2] + _TINY)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR, per sample, to ascend: ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)``.

    The scale needs four classes; with three it is ``z_(1) - z_(3)`` (the untargeted DLR's), with
    two the loss is the plain margin ``-(z_y - z_t)``.
    """
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    k = logits.shape[1]
    if k < 3:
        return -(z_y - z_t)
    low = (top[:, 2] + top[:, 3]) / 2 if k >= 4 else top[:, 2]
    return -(z_y - z_t) / (top[:, 0] - low + _TINY)


def checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step: ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``,
    ``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``.

    Example:
        >>> checkpoints(100)
        [0, 22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    ws = sorted({math.ceil(round(q * steps, 6)) for q in p if q <= 1})
    return [w for w in ws if w < steps]


Loss = Callable[[Tensor], Tensor]


def _restrict(loss_for: Callable[[Tensor], Loss], idx: Tensor) -> Callable[[Tensor], Loss]:
    """``loss_for`` re-indexed to positions within ``idx``."""
    return lambda rows: loss_for(idx[rows])


def _apgd(
    run: Run,
    idx: Tensor,
    start: Tensor,
    loss_for: Callable[[Tensor], Loss],
    *,
    eps: float,
    norm: Norm,
    steps: int,
    rho: float,
    alpha: float,
    step_offset: int,
) -> tuple[Tensor, Tensor]:
    """One APGD run on the samples ``idx`` from ``start``; returns (adversarial found, best x).

    Samples leave the active set when they reach the goal; the returned images are the first
    adversarial iterate where one was found, else the point of highest objective.
    """
    x0 = run.x[idx]
    m = len(idx)
    dev = x0.device
    best = start.clone()
    best_obj = torch.full((m,), -math.inf, device=dev, dtype=x0.dtype)
    best_grad = torch.zeros_like(start)
    found = torch.zeros(m, dtype=torch.bool, device=dev)
    eta = torch.full((m,), 2 * eps, device=dev, dtype=x0.dtype)
    marks = set(checkpoints(steps)[1:])
    last_mark = 0
    # Active-set state, aligned with `act`.
    act = torch.arange(m, device=dev)
    xk = start.clone()
    xprev = start.clone()
    increases = torch.zeros(m, dtype=torch.long, device=dev)
    obj_prev = torch.full((m,), -math.inf, device=dev, dtype=x0.dtype)
    eta_at_mark = eta.clone()
    best_at_mark = torch.full((m,), -math.inf, device=dev, dtype=x0.dtype)

    def step_to(xa: Tensor, xo: Tensor, g: Tensor, e: Tensor) -> Tensor:
        return (xo + project(xa + bcast(e, xa) * direction(g, norm) - xo, eps, norm)).clamp(0, 1)

    for k in range(steps + 1):
        ids = idx[act]
        logits, obj, grad = run.gradient(xk[act], ids, loss_for(act))
        run.progress.tick()
        hit = run.reached(logits, ids)
        if bool(hit.any()):
            run.mark(ids, hit, step_offset + k)
            best[act[hit]] = xk[act[hit]]
            found[act[hit]] = True
            keep = ~hit
            act, logits, obj, grad = act[keep], logits[keep], obj[keep], grad[keep]
            if len(act) == 0:
                break
        improved = obj > best_obj[act]
        best[act[improved]] = xk[act[improved]]
        best_grad[act[improved]] = grad[improved]
        best_obj[act] = torch.maximum(best_obj[act], obj)
        increases[act] += (obj > obj_prev[act]).long()
        obj_prev[act] = obj
        if k == steps:
            break
        if k in marks:
            span = k - last_mark
            cond1 = increases[act] < rho * span
            cond2 = (eta_at_mark[act] == eta[act]) & (best_at_mark[act] == best_obj[act])
            halve = cond1 | cond2
            eta[act] = torch.where(halve, eta[act] / 2, eta[act])
            eta_at_mark[act] = eta[act]
            best_at_mark[act] = best_obj[act]
            increases[act] = 0
            last_mark = k
            # Restart the halved samples from their best point, with that point's gradient.
            if bool(halve.any()):
                h = act[halve]
                xk[h] = best[h]
                xprev[h] = best[h]
                grad = torch.where(bcast(halve, grad), best_grad[act], grad)
        xa, xo = xk[act], x0[act]
        z = step_to(xa, xo, grad, eta[act])
        if k == 0:
            new = z
        else:
            mom = xa + alpha * (z - xa) + (1 - alpha) * (xa - xprev[act])
            new = (xo + project(mom - xo, eps, norm)).clamp(0, 1)
        xprev[act] = xa
        xk[act] = new
    return found, best


@ATTACKS.register("apgd")
@dataclass(frozen=True, kw_only=True)
class APGD(Attack):
    """Auto-PGD with cross-entropy (APGD-CE) or DLR loss; ``targets=n`` gives APGD-T.

    Default ``steps=100``, ``restarts=1``, ``rho=0.75``, momentum ``alpha=0.75``, random start
    uniform in the ball, as in Croce and Hein (2020). Every sample stops at its first adversarial
    iterate.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> AttackResult.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:16]
        >>> res = APGD(eps=0.2, steps=20)(rl.zoo.load("digits-cnn"), ds.x, ds.y)
        >>> float(res.linf.max()) <= 0.2 + 1e-6
        True
    """

    eps: float
    norm: Norm = "linf"
    steps: int = 100
    loss: Literal["ce", "dlr"] = "ce"
    restarts: int = 1
    targets: int | None = None
    rho: float = 0.75
    alpha: float = 0.75

    def __post_init__(self) -> None:
        check_positive(self, "eps")
        check_choice(self, "norm", ("linf", "l2"))
        check_at_least(self, "steps", 1)
        check_choice(self, "loss", ("ce", "dlr"))
        check_at_least(self, "restarts", 1)
        check_probability(self, "rho", closed=True)
        check_probability(self, "alpha", closed=True)
        if self.targets is not None:
            check_at_least(self, "targets", 1)
            if self.loss != "dlr":
                raise ParameterError("APGD: 'targets' (APGD-T) needs loss='dlr'")

    def ball(self) -> tuple[Norm, float]:
        return self.norm, self.eps

    def _progress_total(self) -> int:
        return (self.targets or 1) * self.restarts * (self.steps + 1)

    def _loss(self, run: Run, target: Tensor | None) -> Callable[[Tensor], Loss]:
        """``loss_for(rows)``: the objective of the samples at positions ``rows``."""
        y = run.y

        def loss_for(rows: Tensor) -> Loss:
            yr = y[rows]
            if target is not None:
                tr = target[rows]
                if self.loss == "ce":
                    return lambda z: -F.cross_entropy(z, tr, reduction="none")
                return lambda z: dlr_targeted_loss(z, yr, tr)
            if self.loss == "ce":
                return lambda z: F.cross_entropy(z, yr, reduction="none")
            return lambda z: dlr_loss(z, yr)

        return loss_for

    def _run(self, run: Run) -> Tensor:
        m = len(run.x)
        dev = run.x.device
        out = run.x.clone()
        done = torch.zeros(m, dtype=torch.bool, device=dev)
        offset = 0
        if self.targets is not None and run.target is None:
            with torch.no_grad():
                logits = run.forward(run.x)
            k = logits.shape[1]
            order = logits.scatter(1, run.y[:, None], -math.inf).argsort(1, descending=True)
            plans: list[Tensor | None] = [order[:, j] for j in range(min(self.targets, k - 1))]
        else:
            plans = [run.target]
        run.progress.set_total(len(plans) * self.restarts * (self.steps + 1))
        for target in plans:
            for r in range(self.restarts):
                idx = (~done).nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                x0 = run.x[idx]
                start = (
                    x0 + random_in_ball(x0, self.eps, self.norm, run.keys[idx], stream=r + offset)
                ).clamp(0, 1)
                found, best = _apgd(
                    run,
                    idx,
                    start,
                    _restrict(self._loss(run, target), idx),
                    eps=self.eps,
                    norm=self.norm,
                    steps=self.steps,
                    rho=self.rho,
                    alpha=self.alpha,
                    step_offset=offset,
                )
                out[idx] = best
                done[idx[found]] = True
                offset += self.steps + 1
                run.progress.advance_to(offset)  # a run whose images all broke early
        run.final_step = offset
        return out
