"""Gradient-sign and projected-gradient attacks: FGSM, I-FGSM (BIM) and PGD, on one shared loop.

FGSM is one full step of size ``eps``; I-FGSM iterates small signed steps, clamping to ``[0, 1]``
and to the ``eps`` ball every step (Kurakin et al. 2016); PGD adds a random start uniform in the
ball, restarts, the L2 ball and the margin loss (Madry et al. 2018). All stop per sample as soon as
the goal is reached, and finished samples leave the active set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from robustlens._checks import check_at_least, check_choice, check_positive
from robustlens.attacks._steps import (
    Norm,
    ce_objective,
    direction,
    margin_objective,
    project,
    random_in_ball,
)
from robustlens.attacks.base import ATTACKS, Attack, Run
from robustlens.errors import ParameterError

__all__ = ["FGSM", "IFGSM", "PGD", "ascend"]

Objective = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
_OBJECTIVES: dict[str, Objective] = {"ce": ce_objective, "margin": margin_objective}


def _bind(objective: Objective, y: Tensor, target: Tensor | None) -> Callable[[Tensor], Tensor]:
    return lambda logits: objective(logits, y, target)


def ascend(
    run: Run,
    *,
    eps: float,
    norm: Norm,
    steps: int,
    step: float,
    random_start: bool,
    restarts: int,
    loss: Literal["ce", "margin"] = "ce",
    warm: bool = True,
) -> Tensor:
    """Projected steepest ascent of ``loss`` in the ``norm`` ball of radius ``eps`` around ``run.x``.

    Each sample stops at the first iterate that reaches the goal (that iterate is returned); the
    others return the iterate of highest objective over all steps and restarts. Restarts run only
    on samples not yet successful. ``run.x_init``, when given, warm-starts the first restart
    (projected into the ball) unless ``warm`` is false.
    """
    objective = _OBJECTIVES[loss]
    x0 = run.x
    best = x0.clone()
    best_obj = torch.full((len(x0),), float("-inf"), device=x0.device, dtype=x0.dtype)
    best_pred = torch.full((len(x0),), -1, device=x0.device, dtype=torch.long)
    done = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)

    def keep_best(idx: Tensor, xa: Tensor, obj: Tensor, pred: Tensor) -> None:
        better = obj > best_obj[idx]
        best[idx[better]] = xa[better]
        best_obj[idx[better]] = obj[better]
        best_pred[idx[better]] = pred[better]

    def keep_hits(idx: Tensor, xa: Tensor, hit: Tensor, pred: Tensor) -> None:
        best[idx[hit]] = xa[hit]
        best_pred[idx[hit]] = pred[hit]
        done[idx[hit]] = True

    for r in range(restarts):
        idx = (~done).nonzero().squeeze(1)
        if len(idx) == 0:
            break
        xo = x0[idx]
        started = True
        if warm and run.x_init is not None and r == 0:
            xa = (xo + project(run.x_init[idx] - xo, eps, norm)).clamp(0, 1)
        elif random_start:
            xa = (xo + random_in_ball(xo, eps, norm, run.keys[idx], stream=r)).clamp(0, 1)
        else:
            xa = xo.clone()
            started = False
        y = run.y
        tgt = run.target
        for k in range(steps):
            t_idx = None if tgt is None else tgt[idx]
            bound = _bind(objective, y[idx], t_idx)
            # The first step from x itself reuses the base's clean forward pass when it was kept.
            reused = run.clean_gradient(bound) if r == 0 and k == 0 and not started else None
            logits, obj, grad = reused or run.gradient(xa, idx, bound)
            hit = run.reached(logits, idx)
            pred = logits.argmax(1)
            if bool(hit.any()):
                run.mark(idx, hit, r * steps + k)
                keep_hits(idx, xa, hit, pred)
                live = ~hit
                idx, xa, xo, grad = idx[live], xa[live], xo[live], grad[live]
                obj, pred = obj[live], pred[live]
                if len(idx) == 0:
                    break
            keep_best(idx, xa, obj, pred)
            xa = (xo + project(xa + step * direction(grad, norm) - xo, eps, norm)).clamp(0, 1)
            run.progress.tick()
        run.progress.advance_to((r + 1) * steps)  # a restart that stopped early
        if len(idx):
            logits = run.logits(xa, idx)
            t_idx = None if tgt is None else tgt[idx]
            hit = run.reached(logits, idx)
            pred = logits.argmax(1)
            run.mark(idx, hit, (r + 1) * steps)
            keep_hits(idx, xa, hit, pred)
            miss = ~hit
            keep_best(idx[miss], xa[miss], objective(logits, y[idx], t_idx)[miss], pred[miss])
    run.final_step = restarts * steps
    run.pred_adv = best_pred
    return best


@ATTACKS.register("fgsm")
@dataclass(frozen=True, kw_only=True)
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): ``clamp(x + eps * sign(grad), 0, 1)``.

    The targeted form steps down the target's cross-entropy.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> AttackResult.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:8]
        >>> res = FGSM(eps=0.1)(rl.zoo.load("digits-cnn"), ds.x, ds.y)
        >>> float(res.linf.max()) <= 0.1 + 1e-6
        True
    """

    eps: float

    def __post_init__(self) -> None:
        check_positive(self, "eps")

    def _first_gradient_at_x(self) -> bool:
        return True

    def ball(self) -> tuple[Norm, float]:
        return "linf", self.eps

    def _run(self, run: Run) -> Tensor:
        # One step from x itself: FGSM ignores warm starts.
        return ascend(
            run,
            eps=self.eps,
            norm="linf",
            steps=1,
            step=self.eps,
            random_start=False,
            restarts=1,
            warm=False,
        )


@ATTACKS.register("ifgsm")
@dataclass(frozen=True, kw_only=True)
class IFGSM(Attack):
    """Iterative FGSM / basic iterative method (Kurakin et al. 2016), as in the lecture.

    ``x_{k+1} = clamp(x_k + step * sign(grad), 0, 1)``, kept in the Linf ball of radius ``eps``,
    for at most ``steps`` steps, each sample stopping once it is misclassified (or on target).
    Default ``step``: ``2.5 * eps / steps``.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:8]
        >>> res = IFGSM(eps=0.2, steps=10)(rl.zoo.load("digits-cnn"), ds.x, ds.y)
        >>> res.success_rate > 0.5
        True
    """

    eps: float
    step: float | None = None
    steps: int = 10

    def __post_init__(self) -> None:
        check_positive(self, "eps")
        check_at_least(self, "steps", 1)
        if self.step is not None:
            check_positive(self, "step")

    def _first_gradient_at_x(self) -> bool:
        return True

    def ball(self) -> tuple[Norm, float]:
        return "linf", self.eps

    def _progress_total(self) -> int:
        return self.steps

    def _run(self, run: Run) -> Tensor:
        step = self.step if self.step is not None else 2.5 * self.eps / self.steps
        return ascend(
            run,
            eps=self.eps,
            norm="linf",
            steps=self.steps,
            step=step,
            random_start=False,
            restarts=1,
        )


@ATTACKS.register("pgd")
@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018) in the Linf or L2 ball.

    Random start uniform in the ball, ``restarts`` independent runs keeping the best per sample
    (restarts only touch samples not yet broken), cross-entropy or margin loss
    (``max_{j!=y} z_j - z_y``, Carlini and Wagner's). Default ``step``: ``2.5 * eps / steps``.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:8]
        >>> res = PGD(eps=1.0, norm="l2", steps=20)(rl.zoo.load("digits-cnn"), ds.x, ds.y)
        >>> float(res.l2.max()) <= 1.0 + 1e-5
        True
    """

    eps: float
    norm: Norm = "linf"
    steps: int = 40
    step: float | None = None
    random_start: bool = True
    restarts: int = 1
    loss: Literal["ce", "margin"] = "ce"

    def __post_init__(self) -> None:
        check_positive(self, "eps")
        check_choice(self, "norm", ("linf", "l2"))
        check_at_least(self, "steps", 1)
        check_at_least(self, "restarts", 1)
        check_choice(self, "loss", ("ce", "margin"))
        if self.step is not None:
            check_positive(self, "step")
        if not isinstance(self.random_start, bool):
            raise ParameterError(f"PGD: 'random_start' must be a bool, got {self.random_start!r}")

    def _first_gradient_at_x(self) -> bool:
        return not self.random_start

    def ball(self) -> tuple[Norm, float]:
        return self.norm, self.eps

    def _progress_total(self) -> int:
        return self.steps * self.restarts

    def _run(self, run: Run) -> Tensor:
        step = self.step if self.step is not None else 2.5 * self.eps / self.steps
        return ascend(
            run,
            eps=self.eps,
            norm=self.norm,
            steps=self.steps,
            step=step,
            random_start=self.random_start,
            restarts=self.restarts,
            loss=self.loss,
        )
