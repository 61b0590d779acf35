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
Classes with no test image that were never predicted (a 1000-class model audited on a folder of a
few classes) are counted in a sentence and left out of the tables; above ``CONFUSION_MAX`` classes
the confusion matrix is left to results.json.

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
#: Above this many classes the confusion matrix is left to results.json.
CONFUSION_MAX = 30


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
    # A 1000-class model on a folder of a few classes: the classes with neither an image nor a
    # prediction say nothing and would make tables and a heat map of 1000 rows.
    if m is not None:
        seen = (m.sum(axis=1) > 0) | (m.sum(axis=0) > 0)
    else:
        seen = np.array([per_class.get(c) is not None for c in classes], dtype=bool)
    shown = [i for i in range(len(classes)) if seen[i]] or list(range(len(classes)))
    left = len(classes) - len(shown)
    if left:
        blocks.append(
            Paragraph(
                f"{num(left)} of the model's {num(len(classes))} classes have no test image"
                + (" and were never predicted" if m is not None else "")
                + ": they are left out of the tables below."
            )
        )
        m = m[np.ix_(shown, shown)] if m is not None else None
    classes = [classes[i] for i in shown]
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
    if m is not None and len(classes) > CONFUSION_MAX:
        blocks.append(
            Paragraph(
                f"The confusion matrix over {num(len(classes))} classes is too large to read "
                "here: it is in results.json (clean.confusion)."
            )
        )
    elif m is not None:
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
