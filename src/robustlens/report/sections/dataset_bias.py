"""Section ``dataset_bias``: name that dataset, cross-dataset generalisation and class balance
(Torralba and Efros 2011), as ``robustlens dataset-bias`` writes it.

Expected schema (each part optional; the parts are the ``to_dict()`` of the results of
:mod:`robustlens.bias.dataset`)::

    {
      "data": [{"name": str, "source": str, "images": int, "classes": int,
                "skipped": int}, ...],
      "name_that_dataset": {"names": [str], "accuracy": float, "chance": float,
                            "p_value": float, "per_dataset": [float], "confusion": [[int]],
                            "n_train": int, "n_test": int, "description": str,
                            "backbone": {...} | null, "warnings": [str], ...},
      "cross_dataset": {"names": [str], "accuracy": [[float]], "drop": [float],
                        "n_train": [int], "n_test": [int], "description": str, ...},
      "balance": {"names": [str], "classes": [str], "counts": [[int]], "sizes": [int],
                  "class_entropy": [float], "imbalance_ratio": [float],
                  "dataset_entropy": float, "cramers_v": float, ...},
      "notes": [str],
      "seconds": float
    }

Rendered as: the data sets, then for name that dataset a sentence saying which classifier saw
what (thumbnails at which size, or which backbone's features with which weights), its accuracy
against chance, the warnings, and the confusion between data sets; the cross-dataset matrix with
each row's relative drop; the class counts per data set with the balance statistics.

Example:
    >>> blocks, used = render({"name_that_dataset": {
    ...     "names": ["a", "b"], "accuracy": 0.9, "chance": 0.5, "p_value": 1e-9,
    ...     "per_dataset": [0.9, 0.9], "confusion": [[9, 1], [1, 9]], "n_train": 40,
    ...     "n_test": 20, "description": "logistic regression on 32x32 RGB thumbnails"}})
    >>> [b.kind for b in blocks]
    ['heading', 'paragraph', 'table']
    >>> blocks[1].text.startswith("A logistic regression on 32x32 RGB thumbnails names")
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from robustlens.report._format import MISSING, get_mapping, num, pct, text
from robustlens.report.blocks import Block, Bullets, Heading, Paragraph, Table

__all__ = ["TITLE", "render"]

TITLE = "Dataset bias"
KEYS = frozenset({"data", "name_that_dataset", "cross_dataset", "balance", "notes", "seconds"})


def _p(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return MISSING
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


def _rate(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return MISSING
    return pct(value)


def _what(part: Mapping[str, Any]) -> str:
    """The classifier and what it saw, as a noun phrase."""
    return str(part.get("description") or part.get("classifier") or "classifier")


def _warnings(part: Mapping[str, Any]) -> list[Block]:
    return [Paragraph(f"Warning: {text(w)}", cls="warn") for w in part.get("warnings") or []]


def _backbone(part: Mapping[str, Any], where: str) -> list[Block]:
    bb = get_mapping(part, "backbone", where)
    if not bb:
        return []
    trained = bb.get("trained")
    weights = (
        f"random (seed {text(bb.get('seed'))}): not a meaningful backbone"
        if trained is False
        else f"from {text(bb.get('weights'))}"
        if bb.get("weights")
        else "as given (unknown origin)"
    )
    pre = get_mapping(bb, "preprocessing", f"{where}.backbone") or {}
    return [
        Bullets.of(
            [
                f"Backbone: {text(bb.get('name'))}, {num(bb.get('dim'))} features",
                f"Features: {text(bb.get('rule'))}",
                f"Weights: {weights}",
                f"Input: {text(pre.get('description'))}",
            ]
        )
    ]


def _name_that_dataset(part: Mapping[str, Any]) -> list[Block]:
    names = [str(n) for n in part.get("names") or []]
    blocks: list[Block] = [Heading("Name that dataset", level=4)]
    what = _what(part)
    sentence = (
        f"A {what} names the data set of a held-out image {pct(part.get('accuracy'))} of the "
        f"time (chance {pct(part.get('chance'))}, one-sided binomial p = "
        f"{_p(part.get('p_value'))}), on {num(part.get('n_test'))} test images after "
        f"{num(part.get('n_train'))} training images."
    )
    blocks.append(Paragraph(sentence))
    blocks += _warnings(part)
    blocks += _backbone(part, "dataset_bias.name_that_dataset")
    confusion = part.get("confusion") or []
    recall = part.get("per_dataset") or []
    if names and len(confusion) == len(names):
        rows = []
        for i, name in enumerate(names):
            row = confusion[i] if i < len(confusion) else []
            rows.append(
                [
                    name,
                    num(sum(row)),
                    _rate(recall[i]) if i < len(recall) else MISSING,
                    *(num(v) for v in row),
                ]
            )
        blocks.append(
            Table.of(
                ["data set", "test images", "named correctly", *(f"named {n}" for n in names)],
                rows,
                caption="Which data set the classifier names for each data set's test images",
            )
        )
    return blocks


def _cross(part: Mapping[str, Any]) -> list[Block]:
    names = [str(n) for n in part.get("names") or []]
    acc: Sequence[Sequence[float]] = part.get("accuracy") or []
    drop = part.get("drop") or []
    blocks: list[Block] = [
        Heading("Cross-dataset generalisation", level=4),
        Paragraph(
            f"A {_what(part)}, trained on each data set's labels and tested on every data set. "
            "Rows: trained on; columns: tested on; drop: (own accuracy - mean elsewhere) / own "
            "accuracy."
        ),
    ]
    blocks += _warnings(part)
    if names and len(acc) == len(names):
        rows = [
            [
                name,
                *(_rate(v) for v in acc[i]),
                _rate(drop[i]) if i < len(drop) else MISSING,
            ]
            for i, name in enumerate(names)
        ]
        blocks.append(
            Table.of(
                ["trained on \\ tested on", *names, "drop"],
                rows,
                caption="Accuracy of each data set's classifier on every data set",
            )
        )
    return blocks


def _balance(part: Mapping[str, Any]) -> list[Block]:
    names = [str(n) for n in part.get("names") or []]
    classes = [str(c) for c in part.get("classes") or []]
    counts = part.get("counts") or []
    entropy = part.get("class_entropy") or []
    ratio = part.get("imbalance_ratio") or []
    blocks: list[Block] = [
        Heading("Class balance and dataset balance", level=4),
        Paragraph(
            f"Pooled, the data sets' sizes have normalised entropy "
            f"{num(part.get('dataset_entropy'), 3)} (1: equal sizes); Cramér's V between data "
            f"set and class is {num(part.get('cramers_v'), 3)} (0: the same class proportions "
            "everywhere; 1: the class gives the data set away)."
        ),
    ]
    if names and len(counts) == len(names):
        rows = [
            [
                name,
                *(num(v) for v in counts[i]),
                num(sum(counts[i])),
                num(entropy[i], 3) if i < len(entropy) else MISSING,
                num(ratio[i], 3) if i < len(ratio) else MISSING,
            ]
            for i, name in enumerate(names)
        ]
        blocks.append(
            Table.of(
                ["data set", *classes, "images", "class entropy", "max/min"],
                rows,
                caption="Images per class and data set",
            )
        )
    return blocks


def render(data: Mapping[str, Any]) -> tuple[list[Block], set[str]]:
    blocks: list[Block] = []
    sets = data.get("data") or []
    if sets:
        blocks.append(
            Table.of(
                ["data set", "source", "images", "classes", "unreadable files"],
                [
                    [
                        text(d.get("name")),
                        text(d.get("source")),
                        num(d.get("images")),
                        num(d.get("classes")),
                        num(d.get("skipped", 0)),
                    ]
                    for d in sets
                    if isinstance(d, Mapping)
                ],
                caption="The data sets compared",
            )
        )
    for note in data.get("notes") or []:
        blocks.append(Paragraph(text(note)))
    named = get_mapping(data, "name_that_dataset", "dataset_bias")
    if named:
        blocks += _name_that_dataset(named)
    cross = get_mapping(data, "cross_dataset", "dataset_bias")
    if cross:
        blocks += _cross(cross)
    bal = get_mapping(data, "balance", "dataset_bias")
    if bal:
        blocks += _balance(bal)
    return blocks, set(KEYS & set(data))
