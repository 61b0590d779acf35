"""The Square attack (Andriushchenko, Croce, Flammarion and Hein 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search"): score-based, no gradients.

Random search on the boundary of the threat model. The current image ``x_best`` is changed inside
one square window at a time, at a position drawn per image; the change is kept only if the loss
decreases (a success is always kept). The loss is the margin ``z_y - max_{j != y} z_j`` (targeted:
``-(z_t - max_{j != t} z_j)``) or the cross-entropy's ``log p_y`` (targeted: ``-log p_t``).

The window covers a fraction ``p`` of the pixels, side ``s = round(sqrt(p * H * W))``, and ``p``
starts at ``p_init`` and halves at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of
a 10000-query run (rescaled to ``queries``), see :func:`p_schedule`.

- **Linf**: initialised with vertical stripes (each column of each channel at ``+eps`` or
  ``-eps``); a new square sets its window to ``+eps`` or ``-eps`` per channel. A draw that would
  leave the window unchanged is drawn again (up to 8 times), as in the authors' code, so that
  queries are not spent on no-ops.
- **L2**: initialised with a grid of ``(min(H, W) // 5)``-sided cells, each holding the
  paper's window perturbation (two halves of opposite sign, each a sum of concentric rectangles
  weighted ``1 / (k + 1)^2``, randomly transposed) with a random sign per channel, rescaled to
  norm ``eps``. An update draws two windows of the same odd side ``s >= 3``: it empties the second
  and gives the first a new window perturbation plus its old content, rescaled so that the window
  takes the mass of both plus the budget still free; the image is then rescaled to norm ``eps``.

Every image has its own positions and signs, drawn from its own key (see
:mod:`robustlens.attacks._random`), so a batch gives what its images give one at a time. An image
leaves the active set at its first success. The first query evaluates the initialisation, every
later one a candidate: at most ``queries`` forward passes per image, counted exactly, and no
gradient at all, which is why the standard ensemble includes it (a model whose gradients are
masked still gives scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from robustlens._checks import check_at_least, check_choice, check_positive
from robustlens.attacks._random import uniform
from robustlens.attacks._steps import Norm, bcast, ce_objective, margin_objective, norms, project
from robustlens.attacks.base import ATTACKS, Attack, Run
from robustlens.errors import ParameterError

__all__ = ["Square", "p_schedule", "square_side", "window_perturbation"]

#: Iterations (of a 10000-query run) after which ``p`` halves, as in the paper's code.
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
#: Redraws of a Linf square that would not change the image.
_REDRAWS = 8
_TINY = 1e-12


def p_schedule(p_init: float, i: int, queries: int) -> float:
    """Fraction of pixels the square covers at iteration ``i`` of a ``queries``-query run.

    ``p_init`` halves once for each of :data:`HALVINGS` that ``i * 10000 / queries`` exceeds.

    Example:
        >>> [p_schedule(0.8, i, 10_000) for i in (0, 10, 11, 50, 51, 9_999)]
        [0.8, 0.8, 0.4, 0.4, 0.2, 0.0015625]
        >>> p_schedule(0.8, 6, 5_000)  # 6 of 5000 is 12 of 10000
        0.4
    """
    it = i * 10_000 // queries
    return p_init / 2 ** sum(it > t for t in HALVINGS)


def square_side(p: float, height: int, width: int, norm: Norm) -> int:
    """Side of the square covering a fraction ``p`` of an ``height x width`` image.

    ``round(sqrt(p * H * W))``, at least 1 (Linf) or at least 3 and odd (L2, as in the paper),
    and at most ``min(H, W) - 1`` so that the square has more than one position. On images too
    small for that (side 3 or less), L2 falls back to single pixels.

    Example:
        >>> square_side(0.8, 28, 28, "linf"), square_side(0.0015625, 28, 28, "linf")
        (25, 1)
        >>> square_side(0.1, 28, 28, "l2"), square_side(0.01, 28, 28, "l2")
        (9, 3)
        >>> square_side(0.9, 9, 9, "l2"), square_side(0.9, 3, 3, "l2")  # capped, still odd
        (7, 1)
    """
    s = round(math.sqrt(p * height * width))
    if norm == "l2":
        s = max(s, 3)
        s += 1 - s % 2
    s = max(1, min(s, min(height, width) - 1))
    if norm == "l2" and s % 2 == 0:
        s -= 1
    return s


def _rectangles(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Concentric rectangles around the centre, the k-th weighted ``1 / (k + 1)^2``, unit norm."""
    if rows == 0:
        return torch.zeros(0, cols, dtype=dtype, device=device)
    depth = max(rows // 2, cols // 2) + 1
    weights = 1.0 / torch.arange(1, depth + 1, dtype=torch.float64, device=device) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k >= d} weights[k]
    di = (torch.arange(rows, device=device) - rows // 2).abs()
    dj = (torch.arange(cols, device=device) - cols // 2).abs()
    out = tail[torch.maximum(di[:, None], dj[None, :])]
    return (out / out.norm()).to(dtype)


def window_perturbation(s: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The L2 attack's ``s x s`` window perturbation, unit norm: the top half is a set of
    concentric rectangles, the bottom half the same with the opposite sign.

    Shape: ``(s, s)``.

    Example:
        >>> w = window_perturbation(4, torch.float64, torch.device("cpu"))
        >>> round(float(w.norm()), 6), bool((w[:2] > 0).all() and (w[2:] < 0).all())
        (1.0, True)
    """
    top = _rectangles(s // 2, s, torch.float64, device)
    bottom = -_rectangles(s - s // 2, s, torch.float64, device)
    out = torch.cat([top, bottom])
    return (out / out.norm()).to(dtype)


def _windows(u: Tensor, s: int, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image square windows from uniform numbers ``u`` (M, 2).

    Returns the mask (M, 1, H, W) and the offsets of every row (M, H) and column (M, W) from the
    window's top-left corner (negative or ``>= s`` outside the window).
    """
    dev = u.device
    top = (u[:, 0] * (height - s + 1)).long().clamp_max(height - s)
    left = (u[:, 1] * (width - s + 1)).long().clamp_max(width - s)
    di = torch.arange(height, device=dev)[None, :] - top[:, None]
    dj = torch.arange(width, device=dev)[None, :] - left[:, None]
    inside_i = (di >= 0) & (di < s)
    inside_j = (dj >= 0) & (dj < s)
    mask = (inside_i[:, :, None] & inside_j[:, None, :])[:, None]
    return mask, di, dj


def _place(pattern: Tensor, di: Tensor, dj: Tensor, flip: Tensor) -> Tensor:
    """``pattern`` (s, s), transposed where ``flip`` (M,), at the offsets ``di`` (M, H) and ``dj``
    (M, W); zero outside ``0 <= d < s``. Shape: (M, H, W)."""
    s = pattern.shape[0]
    a = di.clamp(0, s - 1)[:, :, None]
    b = dj.clamp(0, s - 1)[:, None, :]
    f = flip[:, None, None]
    vals = pattern[torch.where(f, b, a), torch.where(f, a, b)]
    inside = ((di >= 0) & (di < s))[:, :, None] & ((dj >= 0) & (dj < s))[:, None, :]
    return vals * inside


def _to_radius(x: Tensor, delta: Tensor, eps: float) -> Tensor:
    """``clamp(x + eps * delta / ||delta||_2, 0, 1)``."""
    scale = eps / norms(delta, "l2").clamp_min(_TINY)
    return (x + delta * bcast(scale, delta)).clamp(0, 1)


def _init_linf(x: Tensor, keys: Tensor, eps: float) -> Tensor:
    """Vertical stripes: each column of each channel at ``x + eps`` or ``x - eps``."""
    m, c, _, w = x.shape
    u = uniform(keys, 0, torch.Size([m, c, 1, w]), x.dtype)
    return (x + eps * torch.where(u < 0.5, -1.0, 1.0).to(x.dtype)).clamp(0, 1)


def _init_l2(x: Tensor, keys: Tensor, eps: float) -> Tensor:
    """A grid of window perturbations with random signs per channel and cell, norm ``eps``."""
    m, c, h, w = x.shape
    dev = x.device
    s = max(min(h, w) // 5, 1)
    nh, nw = h // s, w // s
    u = uniform(keys, 0, torch.Size([m, nh * nw * (c + 1)]), torch.float64)
    flip = (u[:, : nh * nw] < 0.5).view(m, nh, nw)
    sign = torch.where(u[:, nh * nw :] < 0.5, -1.0, 1.0).view(m, c, nh, nw).to(x.dtype)
    ri = torch.arange(h, device=dev) - (h - s * nh) // 2
    rj = torch.arange(w, device=dev) - (w - s * nw) // 2
    valid_i = (ri >= 0) & (ri < s * nh)
    valid_j = (rj >= 0) & (rj < s * nw)
    ci, cj = ri.clamp(0, s * nh - 1) // s, rj.clamp(0, s * nw - 1) // s  # cell of each row, column
    a, b = (ri % s)[:, None], (rj % s)[None, :]
    pattern = window_perturbation(s, x.dtype, dev)
    f = flip[:, ci[:, None], cj[None, :]]  # (M, H, W)
    vals = pattern[torch.where(f, b, a), torch.where(f, a, b)]
    delta = vals[:, None] * sign[:, :, ci[:, None], cj[None, :]]
    delta = delta * (valid_i[:, None] & valid_j[None, :])
    return _to_radius(x, delta, eps)


def _step_linf(x: Tensor, xb: Tensor, u: Tensor, s: int, eps: float) -> Tensor:
    """Candidate images: ``xb`` with one window per image set to ``clamp(x +- eps)`` per channel."""
    m, c, h, w = x.shape
    mask, _, _ = _windows(u[:, :2], s, h, w)
    hi, lo = (x + eps).clamp(max=1), (x - eps).clamp(min=0)
    # Per channel: is the window already at hi (at lo) everywhere? A draw is a no-op if so for
    # the sign it gives every channel.
    at_hi = ((xb == hi) | ~mask).flatten(2).all(2)
    at_lo = ((xb == lo) | ~mask).flatten(2).all(2)
    up = (u[:, 2:] < 0.5).view(m, _REDRAWS, c)
    noop = torch.where(up, at_hi[:, None], at_lo[:, None]).all(2)  # (M, redraws)
    pick = torch.where(noop.all(1), _REDRAWS - 1, (~noop).int().argmax(1))
    sign = up[torch.arange(m, device=x.device), pick]  # (M, C)
    return torch.where(mask, torch.where(sign[:, :, None, None], hi, lo), xb)


def _step_l2(x: Tensor, xb: Tensor, u: Tensor, s: int, eps: float) -> Tensor:
    """Candidate images: window 2 emptied into window 1, which gets a new perturbation."""
    _, c, h, w = x.shape
    delta = xb - x
    mask1, di, dj = _windows(u[:, 0:2], s, h, w)
    mask2, _, _ = _windows(u[:, 2:4], s, h, w)
    both = mask1 | mask2
    pattern = window_perturbation(s, x.dtype, x.device)
    placed = _place(pattern, di, dj, u[:, 4] < 0.5)  # (M, H, W)
    sign = torch.where(u[:, 5 : 5 + c] < 0.5, -1.0, 1.0).to(x.dtype)
    old = delta * mask1
    old_norm = old.flatten(2).norm(dim=2)  # (M, C)
    new = placed[:, None] * sign[:, :, None, None] + old / (old_norm[:, :, None, None] + 1e-10)
    free = (eps**2 - norms(delta, "l2") ** 2).clamp_min(0) / c  # (M,)
    mass = (free[:, None] + (delta * both).flatten(2).norm(dim=2) ** 2).sqrt()  # (M, C)
    new_norm = new.flatten(2).norm(dim=2).clamp_min(_TINY)
    new = new * (mass / new_norm)[:, :, None, None]
    return _to_radius(x, torch.where(both, 0.0, delta) + new, eps)


@ATTACKS.register("square")
@dataclass(frozen=True, kw_only=True)
class Square(Attack):
    """Square attack: score-based random search in the Linf or L2 ball (Andriushchenko et al. 2020).

    ``queries`` forward passes per image at most (the first on the initialisation), ``p_init``
    the fraction of the image the first squares cover, ``loss`` the objective whose decrease
    accepts a square (``"margin"`` or ``"ce"``). Defaults: ``queries=5000``, ``p_init=0.8``, margin
    loss, as in AutoAttack's standard version. Uses the model's logits only: ``gradients`` stay 0.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> AttackResult with x_adv (N, C, H, W).

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:16]
        >>> res = Square(eps=0.2, queries=200)(rl.zoo.load("digits-cnn"), ds.x, ds.y)
        >>> res.success_rate > 0.5, float(res.linf.max()) <= 0.2 + 1e-6
        (True, True)
        >>> int(res.queries.max()) <= 200, int(res.gradients.sum())
        (True, 0)
    """

    eps: float
    norm: Norm = "linf"
    queries: int = 5000
    p_init: float = 0.8
    loss: Literal["margin", "ce"] = "margin"

    def __post_init__(self) -> None:
        check_positive(self, "eps")
        check_choice(self, "norm", ("linf", "l2"))
        check_at_least(self, "queries", 1)
        p = self.p_init
        if not isinstance(p, int | float) or isinstance(p, bool) or not 0 < p <= 1:
            raise ParameterError(
                f"Square: 'p_init' must be a float in (0, 1] (the fraction of the image the first "
                f"squares cover), got {p!r}"
            )
        check_choice(self, "loss", ("margin", "ce"))

    def ball(self) -> tuple[Norm, float]:
        return self.norm, self.eps

    def _progress_total(self) -> int:
        return self.queries - 1

    def _loss(self, run: Run, logits: Tensor, rows: Tensor) -> Tensor:
        """Per-image loss to *decrease* at ``logits`` of the images ``rows``."""
        target = None if run.target is None else run.target[rows]
        ascend = margin_objective if self.loss == "margin" else ce_objective
        return -ascend(logits, run.y[rows], target)

    def _run(self, run: Run) -> Tensor:
        x = run.x
        m, c, h, w = x.shape
        dev = x.device
        if run.x_init is not None:
            start = (x + project(run.x_init - x, self.eps, self.norm)).clamp(0, 1)
        elif self.norm == "linf":
            start = _init_linf(x, run.keys, self.eps)
        else:
            start = _init_l2(x, run.keys, self.eps)
        out = start.clone()
        ids = torch.arange(m, device=dev)
        logits = run.logits(start, ids)
        loss = self._loss(run, logits, ids)
        pred_out = logits.argmax(1)
        hit = run.reached(logits, ids)
        run.mark(ids, hit, 0)
        # Active-set state, aligned with `ids`.
        keep = ~hit
        ids, xa, xb, best, keys = ids[keep], x[keep], start[keep], loss[keep], run.keys[keep]
        pred = pred_out[keep]
        step = _step_linf if self.norm == "linf" else _step_l2
        width = 2 + _REDRAWS * c if self.norm == "linf" else 5 + c
        for i in range(self.queries - 1):
            if len(ids) == 0:
                break
            s = square_side(p_schedule(self.p_init, i, self.queries), h, w, self.norm)
            u = uniform(keys, 1 + i, torch.Size([len(ids), width]), torch.float64)
            cand = step(xa, xb, u, s, self.eps)
            logits = run.logits(cand, ids)
            run.progress.tick()
            loss = self._loss(run, logits, ids)
            hit = run.reached(logits, ids)
            take = (loss < best) | hit
            xb = torch.where(bcast(take, xb), cand, xb)
            best = torch.where(take, loss, best)
            pred = torch.where(take, logits.argmax(1), pred)
            if bool(hit.any()):
                run.mark(ids, hit, i + 1)
                out[ids[hit]] = xb[hit]
                pred_out[ids[hit]] = pred[hit]
                keep = ~hit
                ids, xa, xb, best, keys, pred = (
                    ids[keep],
                    xa[keep],
                    xb[keep],
                    best[keep],
                    keys[keep],
                    pred[keep],
                )
        out[ids] = xb
        pred_out[ids] = pred
        run.pred_adv = pred_out
        run.final_step = self.queries - 1
        return out
