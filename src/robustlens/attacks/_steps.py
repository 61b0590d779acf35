"""Shared maths of the attacks, written once: per-sample norms, Lp steepest-ascent directions,
projections onto Lp balls, uniform random starts in a ball, the attack objectives and the goal test.

Every function is batched over the first dimension and works on any device.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlens.attacks._random import normal, uniform

__all__ = [
    "Norm",
    "bcast",
    "ce_objective",
    "direction",
    "goal_reached",
    "margin",
    "margin_objective",
    "norms",
    "other_max",
    "project",
    "random_in_ball",
]

Norm = Literal["linf", "l2"]
_TINY = 1e-12


def bcast(v: Tensor, like: Tensor) -> Tensor:
    """View per-sample values ``(N,)`` as ``(N, 1, 1, ...)`` to broadcast against ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def norms(delta: Tensor, norm: Norm | Literal["l1"]) -> Tensor:
    """Per-sample norm of ``delta``: ``(N, ...) -> (N,)``."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    return flat.abs().sum(1)


def direction(grad: Tensor, norm: Norm) -> Tensor:
    """Steepest-ascent direction of unit ``norm`` for a gradient: ``sign(g)`` or ``g / ||g||_2``."""
    if norm == "linf":
        return grad.sign()
    return grad / bcast(norms(grad, "l2").clamp_min(_TINY), grad)


def project(delta: Tensor, eps: Tensor | float, norm: Norm) -> Tensor:
    """Project ``delta`` onto the ``norm`` ball of radius ``eps`` (a float or per-sample ``(N,)``)."""
    if norm == "linf":
        if isinstance(eps, Tensor):
            e = bcast(eps, delta)
            return torch.clamp(delta, -e, e)
        return delta.clamp(-eps, eps)
    radius = eps if isinstance(eps, Tensor) else delta.new_full((len(delta),), float(eps))
    scale = (radius / norms(delta, "l2").clamp_min(_TINY)).clamp(max=1.0)
    return delta * bcast(scale, delta)


def random_in_ball(
    like: Tensor, eps: Tensor | float, norm: Norm, keys: Tensor, stream: int
) -> Tensor:
    """Points drawn uniformly from the ``norm`` ball of radius ``eps``, shaped like ``like``.

    Randomness is keyed per sample (see :mod:`robustlens.attacks._random`), ``stream`` tells
    restarts apart. L2: a Gaussian direction scaled by ``eps * U^(1/d)`` with ``d`` the dimension,
    which is uniform in the volume of the ball (not on its surface, nor in a cube).
    """
    radius = eps if isinstance(eps, Tensor) else like.new_full((len(like),), float(eps))
    if norm == "linf":
        u = uniform(keys, stream, like.shape, like.dtype)
        return (2 * u - 1) * bcast(radius, like)
    g = normal(keys, stream, like.shape, like.dtype)
    d = like[0].numel()
    u = uniform(keys, stream + 7919, torch.Size([len(like)]), like.dtype)
    r = radius * u.pow(1.0 / d)
    return direction(g, "l2") * bcast(r, like)


def other_max(logits: Tensor, label: Tensor) -> Tensor:
    """Largest logit among the classes other than ``label`` (correct for any logits, even all < 0)."""
    masked = logits.scatter(1, label[:, None], float("-inf"))
    return masked.amax(1)


def margin(logits: Tensor, label: Tensor) -> Tensor:
    """``z_label - max_{j != label} z_j``: positive while ``label`` wins."""
    return logits.gather(1, label[:, None]).squeeze(1) - other_max(logits, label)


def ce_objective(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Per-sample objective to *ascend*: CE of the true class, or minus CE of the target."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def margin_objective(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Per-sample objective to *ascend*: ``max_{j!=y} z_j - z_y``, or ``z_t - max_{j!=t} z_j``."""
    if target is None:
        return -margin(logits, y)
    return margin(logits, target)


def goal_reached(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Per-sample success: prediction differs from ``y`` (untargeted) or equals ``target``."""
    pred = logits.argmax(1)
    return pred != y if target is None else pred == target
