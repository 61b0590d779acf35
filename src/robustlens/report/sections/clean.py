"""Section ``clean``: accuracy on unmodified test images.

Expected schema (``robustlens.evaluation.clean_accuracy(...).to_dict()`` plus the suite's timing)::

    {
      "n": int,                          # images evaluated
      "accuracy": float,                 # fraction in [0, 1]
      "per_class": {class_name: float | null},   # in class order; null: no image of the class
      "confusion": [[int, ...], ...],    # (K, K), rows: true class, columns: predicted
      "classes": [str, ...],             # (K,) class names
      "seconds": float                   # optional
    }

Rendered as: one sentence, a per-class table (accuracy, images, the class it is most often
mistaken for, from the confusion matrix), the confusion matrix as a heat map and as a table.

Example:
    >>> blocks, used = render({"n": 4, "accuracy": 0.75, "per_class": {"a": 1.0, "b": 0.5},
    ...                        "confusion": [[2, 0], [1, 1]], "classes": ["a", "b"]})
    >>> [b.kind for b in blocks]
    ['paragraph', 'table', 'image', 'table']
    >>> [c.text for c in blocks[1].rows[1]]
    ['b', '50.0%', '2', 'a (1)']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from robustlens.errors import ShapeError
from robustlens.report._format import MISSING, get_mapping, num, pct
from robustlens.report.blocks import Block, Image, Paragraph, Table
from robustlens.report.figures import confusion_figure, figure_to_data_uri

__all__ = ["TITLE", "render"]

TITLE = "Clean accuracy"
KEYS = frozenset({"n", "accuracy", "per_class", "confusion", "classes", "seconds"})


def render(data: Mapping[str, Any]) -> tuple[list[Block], set[str]]:
    blocks: list[Block] = []
    if "accuracy" in data:
        on = f" on {num(data['n'])} test images" if "n" in data else ""
        blocks.append(Paragraph(f"Accuracy {pct(data['accuracy'])}{on}."))
    per_class = get_mapping(data, "per_class", "clean") or {}
    classes = [str(c) for c in data.get("classes") or per_class]
    confusion = data.get("confusion")
    m = None
    if confusion is not None:
        m = np.asarray(confusion, dtype=np.float64)
        if m.shape != (len(classes), len(classes)):
            raise ShapeError(
                f"report: clean.confusion must be ({len(classes)}, {len(classes)}) for the "
                f"{len(classes)} classes, got shape {m.shape}"
            )
    if classes:
        rows = []
        for i, c in enumerate(classes):
            row = [c, pct(per_class.get(c))]
            if m is not None:
                off = m[i].copy()
                off[i] = -1.0
                j = int(off.argmax())
                mistaken = f"{classes[j]} ({num(m[i, j])})" if off[j] > 0 else MISSING
                row += [num(m[i].sum()), mistaken]
            rows.append(row)
        columns = ["class", "accuracy"]
        if m is not None:
            columns += ["images", "most often taken for (count)"]
        blocks.append(Table.of(columns, rows, caption="Accuracy per class"))
    if m is not None:
        blocks.append(
            Image(
                figure_to_data_uri(confusion_figure(m.tolist(), classes)),
                alt="confusion matrix heat map",
                caption="Confusion matrix: rows are true classes, columns predictions "
                "(colour: fraction of the row).",
            )
        )
        blocks.append(
            Table.of(
                ["true \\ predicted", *classes],
                [[c, *(num(v) for v in m[i].tolist())] for i, c in enumerate(classes)],
                caption="Confusion matrix (counts)",
            )
        )
    return blocks, set(KEYS & set(data))
