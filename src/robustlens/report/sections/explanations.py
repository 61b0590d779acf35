"""Section ``explanations``: LIME superpixel explanations with their explanation paths.

Expected schema::

    {
      "samples": int, "K": int, "seconds": float,   # optional; K defaults to each item's K
      "stability": float,                           # optional: mean top-K Jaccard across seeds
      "items": [EXPLANATION, ...]
    }

``EXPLANATION`` is ``robustlens.explain.Explanation.to_dict()`` (``image`` (C, H, W) in [0, 1],
``segments`` (H, W) (in ``results.json`` both are paths of PNG files beside it,
``"images/explanations/items-0-image.png"``, read by :func:`robustlens.report.build_page` before
this renderer sees them), ``weights`` (S,), ``intercept``, ``target``, ``K``, ``path``, ``r2``,
``ess``, ``local_pred``, ``model_output``, ``output_std``, ``prediction``, ``warnings``, ...) plus
what the audit adds: ``label`` (the true class name) and ``pred`` (the predicted class name),
``deletion_auc``, ``insertion_auc`` and ``random_deletion_auc`` (the mean deletion AUC of random
superpixel orders), its ``warnings`` holding the fit's flags and the deletion flag; any other
scalar the audit adds to an item becomes a column of the table.

The figures are ``robustlens.explain.plot_explanation(exp, k=K)`` and ``plot_path(exp)`` of
``Explanation.from_dict(item)`` (imported when the section is drawn).

Rendered as: a sentence, the trust flags with their thresholds, a table (the explained class and
whether it is the prediction or the label, fit quality, the gap between the surrogate and the
model at the image, faithfulness against random order, top superpixels with their weights, number
of warnings), then per image its two figures and its warnings.

Example:
    >>> explained_as({"target": 3, "prediction": 3, "class_names": list("abcd"), "label": "d"})
    'd (the prediction and the label)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robustlens.errors import ParameterError
from robustlens.report._format import as_float, num, text, title
from robustlens.report.blocks import Block, Bullets, Heading, Image, Paragraph, Table
from robustlens.report.figures import figure_to_data_uri
from robustlens.report.sections.generic import cell, is_scalar, render_value

__all__ = ["TITLE", "explained_as", "render", "top_cell", "top_superpixels"]

TITLE = "Explanations (LIME)"
KEYS = frozenset({"samples", "K", "items", "stability", "seconds"})
_ITEM_KEYS = {  # shown in the table or the figures
    "image",
    "segments",
    "weights",
    "intercept",
    "target",
    "K",
    "path",
    "r2",
    "ess",
    "local_pred",
    "warnings",
    "label",
    "pred",
    "deletion_auc",
    "insertion_auc",
    "class_names",
    "model_output",
    "output",
    "kernel",
    "sigma",
    "hide",
    "hide_value",
    "samples",
    "seed",
    "output_std",
    "prediction",
    "random_deletion_auc",
}


def top_superpixels(weights: Any, k: int) -> list[tuple[int, float]]:
    """The ``k`` top superpixels as ``(superpixel id, weight)``, as the explanation's figure
    numbers them (:func:`~robustlens.explain.lime.shown_superpixels`: largest positive weights,
    or largest ``|weight|`` when none is positive).

    Example:
        >>> top_superpixels([0.1, -0.5, 0.4, 0.0], 3)
        [(2, 0.4), (0, 0.1)]
        >>> top_superpixels([-0.1, -0.5], 1)
        [(1, -0.5)]
    """
    import torch

    from robustlens.explain.lime import shown_superpixels

    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w.ndim != 1:
        raise ParameterError(
            f"report: explanation weights must be a list (S,), got shape {tuple(w.shape)}"
        )
    return [(int(i), float(w[i])) for i in shown_superpixels(w, k).tolist()]


def top_cell(top: Sequence[tuple[int, float]]) -> str:
    """The table's cell for :func:`top_superpixels`: each one's rank (the number written on it in
    the figure), its id (as in the explanation path's legend) and its weight.

    Example:
        >>> top_cell([(22, 0.00011), (27, 8.7e-05)])
        '1: #22 (+0.00011), 2: #27 (+8.7e-05)'
    """
    return ", ".join(f"{r}: #{s} ({w:+.2g})" for r, (s, w) in enumerate(top, start=1)) or "none"


def explained_as(item: Mapping[str, Any]) -> str:
    """The explained class's name and whether it is the model's prediction, the label, both or
    neither (from ``target``, ``prediction``, ``class_names`` and ``label``)."""
    target = item.get("target")
    names = item.get("class_names") or []
    if not isinstance(target, int) or isinstance(target, bool):
        return text(target)
    name = str(names[target]) if 0 <= target < len(names) else str(target)
    roles = []
    prediction = item.get("prediction")
    pred_name = item.get("pred")
    if (isinstance(prediction, int) and prediction >= 0 and prediction == target) or (
        prediction is None and pred_name is not None and text(pred_name) == name
    ):
        roles.append("the prediction")
    if item.get("label") is not None and text(item.get("label")) == name:
        roles.append("the label")
    said = " and ".join(roles) if roles else "neither the prediction nor the label"
    return f"{name} ({said})"


def _gap(item: Mapping[str, Any]) -> str:
    """The surrogate's distance from the model at the image, in standard deviations of the
    explained output over the samples."""
    local, model, std = (
        as_float(item.get(k)) for k in ("local_pred", "model_output", "output_std")
    )
    if local is None or model is None or not std:
        return num(None)
    return num(abs(local - model) / std, 3)


def _figures(item: Mapping[str, Any], k: int, i: int) -> list[Image]:
    from robustlens.explain import Explanation, plot_explanation, plot_path

    exp = Explanation.from_dict(dict(item))
    return [
        Image(figure_to_data_uri(plot_explanation(exp, k=k)), alt=f"image {i}: top superpixels"),
        Image(figure_to_data_uri(plot_path(exp)), alt=f"image {i}: explanation path"),
    ]


def render(data: Mapping[str, Any]) -> tuple[list[Block], set[str]]:
    items = data.get("items") or []
    if not isinstance(items, Sequence) or not all(isinstance(i, Mapping) for i in items):
        raise ParameterError(
            f"report: explanations.items must be a list of objects, got {type(items).__name__}"
        )
    ks = [int(data["K"]) if "K" in data else int(item.get("K", 5)) for item in items]
    bits = [f"{len(items)} images"]
    if "samples" in data:
        bits.append(f"{num(data['samples'])} perturbed samples each")
    if "K" in data:
        bits.append(f"top K = {num(data['K'])} superpixels")
    from robustlens.explain import DELETION_MARGIN, MAX_GAP, MIN_R2, RANDOM_ORDERS

    blocks: list[Block] = [
        Paragraph(
            "LIME fits a sparse linear model on superpixels around each image (Ribeiro et al. "
            "2016): " + ", ".join(bits) + "."
        ),
        Paragraph(
            "An explanation carries a warning when its surrogate cannot be trusted: a weighted "
            f"R2 below {MIN_R2:g}; the surrogate at the image more than {MAX_GAP:g} standard "
            "deviation(s) of the explained output (over the samples) away from the model "
            f"there; or a deletion AUC not at least {DELETION_MARGIN:.0%} below the mean deletion "
            f"AUC of {RANDOM_ORDERS} random superpixel orders (hiding its top superpixels first "
            "costs the prediction no more than hiding any)."
        ),
    ]
    stability = data.get("stability")
    if stability is not None and is_scalar(stability):
        blocks.append(
            Paragraph(
                f"Stability: the top superpixels agree across seeds with a mean Jaccard index of "
                f"{num(as_float(stability), 3)} (1: always the same)."
            )
        )
    elif stability is not None:
        blocks += render_value(stability, "explanations.stability")
    extra = sorted(
        {k for item in items for k, v in item.items() if k not in _ITEM_KEYS and is_scalar(v)}
    )
    rows = []
    for i, (item, k) in enumerate(zip(items, ks, strict=True)):
        top = top_superpixels(item.get("weights", []), k)
        rows.append(
            [
                str(i + 1),
                text(item.get("label")),
                text(item.get("pred")),
                explained_as(item),
                num(item.get("r2"), 3),
                num(item.get("ess"), 4),
                num(item.get("local_pred"), 3),
                _gap(item),
                num(item.get("deletion_auc"), 3),
                num(item.get("random_deletion_auc"), 3),
                num(item.get("insertion_auc"), 3),
                top_cell(top),
                str(len(item.get("warnings") or [])),
                *(cell(item.get(key)) for key in extra),
            ]
        )
    if rows:
        blocks.append(
            Table.of(
                [
                    "image",
                    "true class",
                    "prediction",
                    "explained class",
                    "R2",
                    "ESS",
                    "local prediction",
                    "gap at the image (std)",
                    "deletion AUC",
                    "deletion AUC, random order",
                    "insertion AUC",
                    "top superpixels (rank: #id, weight)",
                    "warnings",
                    *(title(key) for key in extra),
                ],
                rows,
                caption="Fit of the local model (R2, effective sample size, the surrogate's "
                "distance from the model at the image in standard deviations of the output) and "
                "faithfulness (deletion AUC: lower is better, and should be below random order's; "
                "insertion AUC: higher is better)",
            )
        )
    for i, (item, k) in enumerate(zip(items, ks, strict=True)):
        blocks.append(
            Heading(
                f"Image {i + 1}: {text(item.get('label'))}, predicted {text(item.get('pred'))}; "
                f"explained: {explained_as(item)}",
                level=4,
            )
        )
        blocks += _figures(item, k, i + 1)
        warnings = item.get("warnings") or []
        if warnings:
            blocks.append(Bullets.of([text(w) for w in warnings], "warn"))
        rest = {k: v for k, v in item.items() if k not in _ITEM_KEYS and not is_scalar(v)}
        if rest:
            blocks += render_value(rest, f"explanations.items[{i}]")
    return blocks, set(KEYS & set(data))
