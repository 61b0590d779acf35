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
``ess``, ``local_pred``, ``warnings``, ...) plus what the audit adds: ``label`` (the true class
name) and ``pred`` (the predicted class name), ``deletion_auc`` and ``insertion_auc``; any other
scalar the audit adds to an item becomes a column of the table.

The figures are ``robustlens.explain.plot_explanation(exp, k=K)`` and ``plot_path(exp)`` of
``Explanation.from_dict(item)`` (imported when the section is drawn).

Rendered as: a sentence, a table (fit quality, faithfulness, top superpixels with their weights,
number of warnings), then per image its two figures and its warnings.
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

__all__ = ["TITLE", "render", "top_superpixels"]

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
}


def top_superpixels(weights: Any, k: int) -> list[tuple[int, float]]:
    """The ``k`` largest positive weights as ``(superpixel id, weight)``, largest first.

    Example:
        >>> top_superpixels([0.1, -0.5, 0.4, 0.0], 3)
        [(2, 0.4), (0, 0.1)]
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1:
        raise ParameterError(
            f"report: explanation weights must be a list (S,), got shape {w.shape}"
        )
    order = np.argsort(-w, kind="stable")[:k]
    return [(int(i), float(w[i])) for i in order if w[i] > 0]


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
    blocks: list[Block] = [
        Paragraph(
            "LIME fits a sparse linear model on superpixels around each image (Ribeiro et al. "
            "2016): " + ", ".join(bits) + "."
        )
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
                cell(item.get("target")),
                num(item.get("r2"), 3),
                num(item.get("ess"), 4),
                num(item.get("local_pred"), 3),
                num(item.get("deletion_auc"), 3),
                num(item.get("insertion_auc"), 3),
                ", ".join(f"{s} ({w:+.2g})" for s, w in top) or "none",
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
                    "target",
                    "R2",
                    "ESS",
                    "local prediction",
                    "deletion AUC",
                    "insertion AUC",
                    "top superpixels (weight)",
                    "warnings",
                    *(title(key) for key in extra),
                ],
                rows,
                caption="Fit of the local model (R2, effective sample size) and faithfulness "
                "(deletion AUC: lower is better; insertion AUC: higher is better)",
            )
        )
    for i, (item, k) in enumerate(zip(items, ks, strict=True)):
        blocks.append(
            Heading(
                f"Image {i + 1}: {text(item.get('label'))}, predicted {text(item.get('pred'))}",
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
