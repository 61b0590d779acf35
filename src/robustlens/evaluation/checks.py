"""Checks that a robustness evaluation is strong enough to be believed.

A robustness figure is only as good as the attack behind it. These checks look for the usual ways an
evaluation goes wrong (Carlini et al. 2019, "On evaluating adversarial robustness"):

* the model outputs probabilities, not logits: gradients of the cross-entropy vanish where the
  softmax saturates, and gradient attacks look weaker than they are;
* the model is random: two identical calls disagree, so gradients must be averaged (EOT);
* input gradients are zero or not finite for many images: gradient masking, for which attacks
  need BPDA;
* a single attack leaves robust accuracy more than a point above the ensemble's: that attack is
  weak, and a figure based on it alone would overstate robustness.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens._runtime import inference_mode

__all__ = ["gradient_report", "model_warnings", "weak_attacks"]


def model_warnings(model: nn.Module, x: Tensor, y: Tensor) -> list[str]:
    """Warnings about ``model``'s outputs and input gradients on a sample batch ``x``, ``y``."""
    out: list[str] = []
    with inference_mode(model):
        with torch.no_grad():
            a, b = model(x), model(x)
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
            out.append(
                "the model's outputs change between two identical calls: it is randomised, so "
                "gradient attacks need Expectation over Transformation (rl.attacks.EOT) to be trusted"
            )
        rows = a.sum(1)
        if bool((a >= 0).all()) and bool(((rows - 1).abs() < 1e-3).all()):
            out.append(
                "the model's outputs are non-negative and sum to 1: they look like probabilities. "
                "Attacks expect logits; remove the final softmax, or gradients vanish and attacks "
                "look weaker than they are"
            )
    grads = gradient_report(model, x, y)
    if grads["missing"]:
        out.append(
            "the model's output does not depend differentiably on its input: gradient attacks "
            "cannot work; use BPDA (rl.attacks.BPDA) or a black-box attack"
        )
        return out
    bad = grads["zero"] + grads["non_finite"]
    if bad > 0.1:
        out.append(
            f"input gradients are zero or not finite for {bad:.0%} of the "
            "images: a sign of gradient masking; a robustness figure from gradient attacks alone "
            "is not reliable (use BPDA or black-box attacks)"
        )
    return out


def gradient_report(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """Input-gradient health of ``model`` on ``x``: fractions of images whose cross-entropy
    gradient is missing, zero or not finite, and the mean cosine similarity between the gradients
    of two identical calls (1 for a deterministic model; low when gradients are random).
    """

    def grad() -> Tensor | None:
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xg), y, reduction="sum")
            if not loss.requires_grad:
                return None
            (g,) = torch.autograd.grad(loss, xg, allow_unused=True)
        return g

    with inference_mode(model):
        g1, g2 = grad(), grad()
    n = len(x)
    if g1 is None or g2 is None:
        return {"missing": 1.0, "zero": 0.0, "non_finite": 0.0, "cosine": math.nan}
    a, b = g1.flatten(1), g2.flatten(1)
    finite = torch.isfinite(a).all(1) & torch.isfinite(b).all(1)
    zero = finite & (a.abs().amax(1) == 0)
    ok = finite & ~zero
    cos = F.cosine_similarity(a[ok], b[ok], dim=1) if bool(ok.any()) else torch.empty(0)
    return {
        "missing": 0.0,
        "zero": float(zero.sum()) / n,
        "non_finite": float((~finite).sum()) / n,
        "cosine": float(cos.mean()) if len(cos) else math.nan,
    }


def weak_attacks(
    per_attack: dict[str, float], worst_case: float, *, slack: float = 0.01
) -> list[str]:
    """Names of attacks whose robust accuracy exceeds the worst case over all by more than ``slack``.

    Example:
        >>> weak_attacks({"FGSM": 0.40, "PGD": 0.205, "APGD": 0.20}, worst_case=0.20)
        ['FGSM']
    """
    return [name for name, acc in per_attack.items() if acc > worst_case + slack]
