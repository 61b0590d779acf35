"""DeepFool (Moosavi-Dezfooli et al. 2016): step to the nearest linearised decision boundary.

At each iterate the classifier is linearised around ``x_k``. For every candidate class ``j`` the
boundary with the true class ``y`` is the hyperplane ``f_j(x) = z_j - z_y = 0``, at distance
``|f_j| / ||grad f_j||_q`` (``q`` the dual norm). The attack takes the smallest, accumulates the
step ``r_k``, and sets ``x_{k+1} = clamp(x + (1 + overshoot) * sum_k r_k, 0, 1)``: the overshoot
multiplies the accumulated perturbation, not each step.

All candidate gradients of a batch come from one forward pass and one batched backward pass
(``torch.autograd.grad`` with ``is_grads_batched``), with a fallback that replicates the batch
per candidate when a model's operations do not support batched gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustlens._checks import check_at_least, check_choice, check_positive
from robustlens.attacks._steps import Norm, bcast, norms
from robustlens.attacks.base import ATTACKS, Attack, Run

__all__ = ["DeepFool", "candidate_gradients"]

_TINY = 1e-8


def candidate_gradients(
    run: Run, x: Tensor, idx: Tensor, cand: Tensor, label: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits and, for each candidate ``c``, ``f_c = z_c - z_label`` and its input gradient.

    Shapes: x (M, C, H, W), cand (M, J), label (M,) -> logits (M, K), f (M, J), grad (M, J, C, H, W).
    """
    m, j = cand.shape
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = run.forward(xg)
        k = logits.shape[1]
        # One-hot rows e_c - e_label for every (sample, candidate): (J, M, K).
        sel = torch.zeros(j, m, k, device=x.device, dtype=logits.dtype)
        sel.scatter_(2, cand.T.unsqueeze(2), 1.0)
        sel.scatter_add_(
            2,
            label.expand(j, m).unsqueeze(2),
            -torch.ones(j, m, 1, device=x.device, dtype=logits.dtype),
        )
        try:
            (grads,) = torch.autograd.grad(logits, xg, grad_outputs=sel, is_grads_batched=True)
            grad = grads.transpose(0, 1)  # (M, J, C, H, W)
        except RuntimeError:
            grad = _replicated(run, x, sel)
    run.queries[idx] += 1
    run.gradients[idx] += j
    f = (logits.gather(1, cand) - logits.gather(1, label[:, None])).detach()
    return logits.detach(), f, grad.detach()


def _replicated(run: Run, x: Tensor, sel: Tensor) -> Tensor:
    """Fallback: the same gradients by replicating the batch once per candidate."""
    j, m, _ = sel.shape
    xr = (
        x.detach()
        .unsqueeze(0)
        .expand(j, *x.shape)
        .reshape(j * m, *x.shape[1:])
        .requires_grad_(True)
    )
    with torch.enable_grad():
        out = run.forward(xr)
        (g,) = torch.autograd.grad((out * sel.reshape(j * m, -1)).sum(), xr)
    return g.view(j, m, *x.shape[1:]).transpose(0, 1)


@ATTACKS.register("deepfool")
@dataclass(frozen=True, kw_only=True)
class DeepFool(Attack):
    """Minimum-norm attack stepping to the closest linearised boundary among the top classes.

    ``candidates`` is the number of most likely classes considered (the given label included, as
    in the paper); the label left is the one given, not the prediction. ``norm="l2"`` (default) or
    ``"linf"``. Targeted mode crosses the boundary with the target class only.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> AttackResult.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:16]
        >>> res = DeepFool()(rl.zoo.load("digits-cnn"), ds.x, ds.y)
        >>> res.success_rate
        1.0
    """

    steps: int = 50
    overshoot: float = 0.02
    candidates: int = 10
    norm: Norm = "l2"

    def __post_init__(self) -> None:
        check_at_least(self, "steps", 1)
        check_positive(self, "overshoot", allow_zero=True)
        check_at_least(self, "candidates", 2)
        check_choice(self, "norm", ("l2", "linf"))

    def _progress_total(self) -> int:
        return self.steps

    def _run(self, run: Run) -> Tensor:
        x0, y = run.x, run.y
        m = len(x0)
        with torch.no_grad():
            logits0 = run.forward(x0)
        k = logits0.shape[1]
        if run.target is not None:
            cand = run.target[:, None]
        else:
            others = logits0.scatter(1, y[:, None], float("-inf"))
            cand = others.topk(min(self.candidates, k) - 1, dim=1).indices  # (M, J)
        r_tot = torch.zeros_like(x0)
        x_adv = x0.clone()
        idx = torch.arange(m, device=x0.device)
        dual: Norm | str = "l1" if self.norm == "linf" else "l2"
        for step in range(self.steps):
            logits, f, grad = candidate_gradients(run, x_adv[idx], idx, cand[idx], y[idx])
            run.progress.tick()
            hit = run.reached(logits, idx)
            run.mark(idx, hit, step)
            idx = idx[~hit]
            if len(idx) == 0:
                break
            f, grad = f[~hit], grad[~hit]
            gnorm = norms(grad.flatten(0, 1), dual).view(f.shape).clamp_min(_TINY)  # type: ignore[arg-type]
            dist = f.abs() / gnorm  # (M', J)
            best = dist.argmin(1)
            fb = f.gather(1, best[:, None]).squeeze(1).abs()
            wb = grad[torch.arange(len(idx), device=x0.device), best]  # (M', C, H, W)
            nb = gnorm.gather(1, best[:, None]).squeeze(1)
            if self.norm == "l2":
                r = bcast((fb + 1e-4) / nb**2, wb) * wb
            else:
                r = bcast((fb + 1e-4) / nb, wb) * wb.sign()
            r_tot[idx] += r
            x_adv[idx] = (x0[idx] + (1 + self.overshoot) * r_tot[idx]).clamp(0, 1)
        run.final_step = self.steps
        return x_adv
