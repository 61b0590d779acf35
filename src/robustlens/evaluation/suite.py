"""The audit suite behind ``robustlens audit``: what exists so far, as JSON-ready sections.

Sections: ``clean`` (accuracy, per class, confusion) and ``whitebox`` (FGSM, I-FGSM, PGD and the
standard APGD ensemble at the audit budget with the worst case over them and the evaluation's
warnings; the accuracy-vs-normalised-L2 curve from DeepFool; PGD's robust accuracy against a list
of budgets).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from robustlens.attacks import FGSM, IFGSM, PGD, DeepFool, Ensemble
from robustlens.data.dataset import ImageDataset
from robustlens.evaluation.clean import clean_accuracy
from robustlens.evaluation.curves import accuracy_vs_distance, robust_accuracy_curve
from robustlens.evaluation.runner import evaluate

__all__ = ["run_suite"]


def _timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    out = fn()
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def whitebox_section(
    model: nn.Module,
    ds: ImageDataset,
    *,
    eps: float,
    eps_curve: Sequence[float],
    seed: int,
    show_progress: bool,
) -> dict[str, Any]:
    """Fixed-budget attacks with the worst case, and the lecture's two curves.

    The headline figure is the worst case over FGSM, I-FGSM, PGD-40 and the standard ensemble
    (APGD-CE then APGD-T); the single attacks are there to show how much a weak attack overstates.
    """
    attacks = [
        FGSM(eps=eps, seed=seed),
        IFGSM(eps=eps, steps=20, step=eps / 10, seed=seed),
        PGD(eps=eps, steps=40, seed=seed),
        Ensemble.standard(eps=eps, seed=seed),
    ]
    ev = evaluate(model, ds, attacks, batch_size=500, show_progress=show_progress)
    df = DeepFool(seed=seed)(model, ds.x, ds.y)
    l2_curve = accuracy_vs_distance(df)
    eps_sweep = robust_accuracy_curve(
        PGD(eps=eps, steps=40, seed=seed), model, ds.x, ds.y, eps_curve
    )
    return {
        "eps": eps,
        "n": len(ds),
        "evaluation": ev.to_dict(),
        "deepfool": df.summary(),
        "accuracy_vs_l2_normalized": l2_curve.to_dict(),
        "pgd_accuracy_vs_eps": eps_sweep.to_dict(),
    }


def run_suite(
    model: nn.Module,
    ds: ImageDataset,
    *,
    attack_ds: ImageDataset | None = None,
    eps: float = 0.1,
    eps_curve: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3),
    seed: int = 0,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every section on ``model``; attacks use ``attack_ds`` (default: ``ds``)."""
    say = log or (lambda _: None)
    sections: dict[str, dict[str, Any]] = {}
    say(f"clean accuracy on {len(ds)} images")
    sections["clean"] = _timed(
        lambda: clean_accuracy(model, ds, show_progress=show_progress).to_dict()
    )
    sub = attack_ds if attack_ds is not None else ds
    say(f"white-box attacks on {len(sub)} images at eps {eps}")
    sections["whitebox"] = _timed(
        lambda: whitebox_section(
            model, sub, eps=eps, eps_curve=eps_curve, seed=seed, show_progress=show_progress
        )
    )
    return sections
