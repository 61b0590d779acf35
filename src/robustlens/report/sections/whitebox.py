"""Section ``whitebox``: fixed-budget attacks, their worst case, the robustness curves, a gallery.

Expected schema (every key optional; what is present is drawn)::

    {
      "eps": float, "norm": "linf" | "l2" (default "linf"), "n": int, "seconds": float,
      "evaluation": {                    # robustlens.evaluation.evaluate(...).to_dict()
        "n": int, "clean_accuracy": float, "robust_accuracy": float,   # worst case per image
        "attacks": [str, ...],
        "per_attack": {attack: {"success_rate", "robust_accuracy", "median_l2", "median_linf",
                                "median_l2_normalized", "mean_queries", ...}},
        "contribution": {attack: {"unique": int, "first": int}},
        "warnings": [str, ...]
      },
      "min_norm": {attack: {...}},       # AttackResult.summary() of each minimum-norm attack
      "min_norm_n": int,                 # images they ran on
      "deepfool": {...},                 # older form of min_norm: DeepFool's summary alone
      "accuracy_vs_l2_normalized": CURVE or [CURVE, ...],   # minimum-norm attacks, step curves
      "pgd_accuracy_vs_eps": CURVE or [CURVE, ...],         # fixed-budget attack against eps
      "gallery": [{"index": int, "label": str, "clean_pred": str, "adv_pred": str,
                   "attack": str, "x": IMAGE, "x_adv": IMAGE}, ...]
    }

with ``CURVE = {"label": str, "metric": str, "budgets": [float, ...] (increasing),
"accuracy": [float, ...]}`` (``robustlens.evaluation.Curve.to_dict()``) and ``IMAGE`` ``(C, H, W)``
in [0, 1]: in ``results.json`` the path of a PNG file beside it (``"images/whitebox/gallery-0-x.png"``),
which :func:`robustlens.report.build_page` reads before this renderer sees it (a nested list or a
tensor is used as it is).

Rendered as: a sentence with clean and worst-case robust accuracy, a table per attack (fractions
as percentages), the evaluation's warnings, DeepFool's summary, the accuracy-vs-normalised-L2 plot
with the accuracy read off at a few budgets, the accuracy-vs-eps plot with its points, and the
gallery: clean image, adversarial image and perturbation magnified (figures of
:data:`GALLERY_PER_FIGURE` examples) with a table of the examples.

Example:
    >>> blocks, used = render({"eps": 0.1, "pgd_accuracy_vs_eps": {
    ...     "label": "PGD", "metric": "eps", "budgets": [0.05, 0.1], "accuracy": [0.5, 0.25]}})
    >>> [b.kind for b in blocks]
    ['paragraph', 'heading', 'image', 'table']
    >>> [[c.text for c in r] for r in blocks[3].rows]
    [['PGD', '0.05', '50.0%'], ['PGD', '0.1', '25.0%']]
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robustlens.errors import ParameterError
from robustlens.report._format import as_float, get_mapping, num, pct, text, title
from robustlens.report.blocks import Block, Bullets, Heading, Image, Paragraph, Table
from robustlens.report.figures import (
    curves_figure,
    figure_to_data_uri,
    gallery_figure,
    to_image,
)
from robustlens.report.sections.generic import render_value, value_cell

__all__ = ["GALLERY_PER_FIGURE", "L2_BUDGETS", "TITLE", "accuracy_at", "curves", "render"]

TITLE = "White-box attacks"
KEYS = frozenset(
    {
        "eps",
        "norm",
        "n",
        "seconds",
        "evaluation",
        "deepfool",
        "min_norm",
        "min_norm_n",
        "accuracy_vs_l2_normalized",
        "pgd_accuracy_vs_eps",
        "gallery",
    }
)
L2_BUDGETS = (0.01, 0.02, 0.05, 0.1, 0.2)
"""Normalised L2 budgets at which the accuracy-vs-distance curves are read off in a table."""
GALLERY_PER_FIGURE = 8

_ATTACK_COLUMNS = {
    "robust_accuracy": "robust accuracy",
    "success_rate": "success rate",
    "median_l2": "median L2",
    "median_linf": "median Linf",
    "median_l2_normalized": "median normalised L2",
    "mean_queries": "mean forward passes",
    "mean_gradients": "mean backward passes",
}
_SUMMARY_COLUMNS = {
    "n": "images",
    "attacked": "attacked (correctly classified)",
    "clean_accuracy": "clean accuracy",
    "median_l2_normalized": "median normalised L2",
    "median_l2": "median L2",
    "median_linf": "median Linf",
    "success_rate": "success rate",
    "robust_accuracy": "robust accuracy",
}
_EVALUATION_KEYS = {
    "n",
    "clean_accuracy",
    "robust_accuracy",
    "attacks",
    "per_attack",
    "contribution",
    "warnings",
}


def curves(value: Any, where: str) -> list[Mapping[str, Any]]:
    """One curve dict or a list of them, as a list."""
    items = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, Sequence) or not all(isinstance(c, Mapping) for c in items):
        raise ParameterError(
            f"report: {where} must be a curve {{label, metric, budgets, accuracy}} or a list of "
            f"them, got {type(value).__name__}"
        )
    return list(items)


def accuracy_at(curve: Mapping[str, Any], budget: float) -> float | None:
    """A step curve's accuracy at ``budget``: the value at the last budget point <= ``budget``.

    Example:
        >>> accuracy_at({"budgets": [0.0, 0.1, 0.3], "accuracy": [0.9, 0.5, 0.1]}, 0.2)
        0.5
    """
    budgets = [float(b) for b in curve.get("budgets", [])]
    acc = curve.get("accuracy", [])
    pos = bisect.bisect_right(budgets, budget)
    return None if pos == 0 else float(acc[pos - 1])


def _evaluation(ev: Mapping[str, Any], eps: Any, norm: str) -> list[Block]:
    blocks: list[Block] = []
    per_attack = get_mapping(ev, "per_attack", "whitebox.evaluation") or {}
    attacks = [str(a) for a in ev.get("attacks") or per_attack]
    budget = f" at {norm} eps {num(eps)}" if eps is not None else ""
    parts = []
    if "clean_accuracy" in ev:
        parts.append(f"clean accuracy {pct(ev['clean_accuracy'])}")
    if "robust_accuracy" in ev:
        parts.append(
            f"robust accuracy {pct(ev['robust_accuracy'])} (the worst case per image over "
            f"{len(attacks)} attacks)"
        )
    if parts:
        on = f" on {num(ev['n'])} images" if "n" in ev else ""
        blocks.append(Paragraph(f"White-box attacks{budget}{on}: " + ", ".join(parts) + "."))
    if per_attack:
        keys = [k for k in _ATTACK_COLUMNS if any(k in r for r in per_attack.values())]
        keys += sorted({k for r in per_attack.values() for k in r} - set(keys))
        contribution = get_mapping(ev, "contribution", "whitebox.evaluation") or {}
        columns = ["attack", *(_ATTACK_COLUMNS.get(k, title(k)) for k in keys)]
        if contribution:
            columns += ["fooled only by it", "fooled first by it"]
        rows = []
        for name in attacks:
            r = per_attack.get(name, {})
            row = [name, *(value_cell(k, r.get(k)) for k in keys)]
            if contribution:
                c = contribution.get(name, {})
                row += [num(c.get("unique")), num(c.get("first"))]
            rows.append(row)
        if "robust_accuracy" in ev:
            worst = ["worst case over all"]
            worst += [pct(ev["robust_accuracy"]) if k == "robust_accuracy" else "" for k in keys]
            rows.append(worst + ["", ""] * bool(contribution))
        blocks.append(
            Table.of(columns, rows, caption="Per attack (distances over successful attacks)")
        )
    warnings = ev.get("warnings") or []
    if warnings:
        blocks.append(Bullets.of([text(w) for w in warnings], "warn"))
    rest = {k: v for k, v in ev.items() if k not in _EVALUATION_KEYS}
    if rest:
        blocks += render_value(rest, "whitebox.evaluation")
    return blocks


def _min_norm(summaries: Mapping[str, Any], n: Any) -> list[Block]:
    rows_in = {str(k): get_mapping(summaries, k, "whitebox.min_norm") or {} for k in summaries}
    keys = [k for k in _SUMMARY_COLUMNS if any(k in r for r in rows_in.values())]
    keys += sorted({k for r in rows_in.values() for k in r} - set(keys) - {"attack"})
    on = f" on {num(n)} images" if n is not None else ""
    return [
        Heading("Minimum-norm attacks", id="whitebox-min-norm"),
        Paragraph(
            f"Attacks that look for the smallest perturbation that fools the model{on}; "
            "distances over successful attacks."
        ),
        Table.of(
            [
                "attack",
                *(_SUMMARY_COLUMNS.get(k) or _ATTACK_COLUMNS.get(k) or title(k) for k in keys),
            ],
            [[name, *(value_cell(k, r.get(k)) for k in keys)] for name, r in rows_in.items()],
        ),
    ]


def _l2_curves(value: Any) -> list[Block]:
    cs = curves(value, "whitebox.accuracy_vs_l2_normalized")
    fig = curves_figure(
        cs,
        xlabel="normalised L2 distance ||x_adv - x||_2 / ||x||_2",
        title="Accuracy against perturbation size (minimum-norm attacks)",
        step=True,
    )
    rows = [[text(c.get("label")), *(pct(accuracy_at(c, b)) for b in L2_BUDGETS)] for c in cs]
    return [
        Heading("Accuracy against normalised L2 distance", id="whitebox-l2"),
        Image(
            figure_to_data_uri(fig),
            alt="accuracy against normalised L2 distance",
            caption="An image counts as correct at distance b if the attack needed more than b "
            "to fool the model.",
        ),
        Table.of(
            ["attack", *(f"<= {b:g}" for b in L2_BUDGETS)],
            rows,
            caption="Accuracy within a normalised L2 budget",
        ),
    ]


def _eps_curves(value: Any, norm: str) -> list[Block]:
    cs = curves(value, "whitebox.pgd_accuracy_vs_eps")
    metric = text(cs[0].get("metric", "eps")) if cs else "eps"
    fig = curves_figure(
        cs, xlabel=f"{norm} budget ({metric})", title="Robust accuracy against the budget"
    )
    rows = [
        [text(c.get("label")), num(b), pct(a)]
        for c in cs
        for b, a in zip(c.get("budgets", []), c.get("accuracy", []), strict=True)
    ]
    return [
        Heading("Robust accuracy against eps", id="whitebox-eps"),
        Image(figure_to_data_uri(fig), alt="robust accuracy against eps"),
        Table.of(["attack", metric, "robust accuracy"], rows, caption="Robust accuracy per budget"),
    ]


def _gallery(items: Any) -> list[Block]:
    if not isinstance(items, Sequence) or not all(isinstance(i, Mapping) for i in items):
        raise ParameterError(
            f"report: whitebox.gallery must be a list of objects, got {type(items).__name__}"
        )
    if not items:
        return []
    blocks: list[Block] = [Heading("Adversarial examples", id="whitebox-gallery")]
    for start in range(0, len(items), GALLERY_PER_FIGURE):
        chunk = items[start : start + GALLERY_PER_FIGURE]
        blocks.append(
            Image(
                figure_to_data_uri(gallery_figure(chunk)),
                alt=f"adversarial examples {start + 1} to {start + len(chunk)}",
                caption="Clean image, adversarial image, and the perturbation magnified "
                "(mid-grey: unchanged; black/white: the largest change).",
            )
        )
    rows = []
    for i, item in enumerate(items):
        # The attack's own distances when the results carry them (the images are rounded).
        x = to_image(item.get("x"), where=f"gallery item {i} 'x'")
        d = to_image(item.get("x_adv"), where=f"gallery item {i} 'x_adv'") - x
        norm = float(np.sqrt((x**2).sum()))
        l2 = as_float(item.get("l2"))
        l2 = float(np.sqrt((d**2).sum())) if l2 is None else l2
        l2n = as_float(item.get("l2_normalized"))
        l2n = (l2 / norm if norm > 0 else None) if l2n is None else l2n
        linf = as_float(item.get("linf"))
        linf = float(np.abs(d).max()) if linf is None else linf
        rows.append(
            [
                num(item.get("index")),
                text(item.get("label")),
                text(item.get("clean_pred")),
                text(item.get("adv_pred")),
                text(item.get("attack")),
                num(l2),
                "-" if l2n is None else num(l2n),
                num(linf),
            ]
        )
    blocks.append(
        Table.of(
            [
                "image",
                "true class",
                "clean prediction",
                "adversarial prediction",
                "attack",
                "L2",
                "normalised L2",
                "Linf",
            ],
            rows,
            caption="The examples above",
        )
    )
    return blocks


def render(data: Mapping[str, Any]) -> tuple[list[Block], set[str]]:
    norm = "L2" if data.get("norm") == "l2" else "Linf"
    blocks: list[Block] = []
    ev = get_mapping(data, "evaluation", "whitebox")
    if ev is not None:
        blocks += _evaluation(ev, data.get("eps"), norm)
    elif "eps" in data:
        blocks.append(Paragraph(f"Budget: {norm} eps {num(data['eps'])}."))
    min_norm = dict(get_mapping(data, "min_norm", "whitebox") or {})
    deepfool = get_mapping(data, "deepfool", "whitebox")
    if deepfool is not None:
        min_norm.setdefault(text(deepfool.get("attack", "DeepFool")), deepfool)
    if min_norm:
        blocks += _min_norm(min_norm, data.get("min_norm_n"))
    if data.get("accuracy_vs_l2_normalized") is not None:
        blocks += _l2_curves(data["accuracy_vs_l2_normalized"])
    if data.get("pgd_accuracy_vs_eps") is not None:
        blocks += _eps_curves(data["pgd_accuracy_vs_eps"], norm)
    if data.get("gallery") is not None:
        blocks += _gallery(data["gallery"])
    return blocks, set(KEYS & set(data))
