"""The fallback renderer: any JSON value as headings, key/value tables and tables of records.

Used for sections the report does not know (a producer newer than the report) and for the keys a
known renderer does not use, so nothing in ``results.json`` is left out of the page.

Expected schema: anything JSON. Rules, applied recursively:

* scalars of an object -> one key/value table (lists of scalars joined with ", ");
* a list of objects -> a table, one row per object, one column per key (union, in order of
  first appearance);
* an object whose values are all objects of scalars -> a table, one row per key;
* a 2-D list of numbers -> a table with a row index (up to :data:`MAX_TABLE_CELLS` cells);
* any other nested object -> a sub-heading and the same rules; deeper or larger arrays -> their
  shape and range.

Numbers are shown as written (4 significant digits), not as percentages: the fallback cannot know
which numbers are fractions.

Example:
    >>> blocks = render_value({"n": 3, "rows": [{"a": 1, "b": 0.5}, {"a": 2}]}, "extra")
    >>> [b.kind for b in blocks]
    ['table', 'table']
    >>> [[c.text for c in r] for r in blocks[1].rows]
    [['1', '0.5'], ['2', '-']]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robustlens.report._format import is_number, num, pct, title
from robustlens.report.blocks import Block, Heading, Paragraph, Pre, Table

__all__ = [
    "cell",
    "is_scalar",
    "kv_table",
    "records_table",
    "render_value",
    "value_cell",
]

_FRACTIONS = ("accuracy", "rate", "fraction")
MAX_TABLE_CELLS = 10_000
"""Larger 2-D arrays are summarised (shape and range), not tabulated."""


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_records(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(v, Mapping) for v in value)
    )


def _is_scalar_list(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(is_scalar(v) for v in value)
    )


def cell(value: Any) -> str:
    """Any JSON value as one cell's text: scalars formatted, lists of scalars joined, else JSON."""
    if is_scalar(value):
        return num(value)
    if _is_scalar_list(value):
        return ", ".join(num(v) for v in value)
    return json.dumps(value, default=str)


def value_cell(key: str, value: Any) -> str:
    """Like :func:`cell`, but a number whose key names a fraction (``*accuracy``, ``*rate``,
    ``*fraction``) is shown as a percentage.

    Example:
        >>> value_cell("robust_accuracy", 0.25), value_cell("median_l2", 0.25)
        ('25.0%', '0.25')
    """
    if is_number(value) and key.endswith(_FRACTIONS):
        return pct(value)
    return cell(value)


def kv_table(data: Mapping[str, Any], caption: str = "") -> Table:
    """A two-column table ``field | value``."""
    return Table.of(["field", "value"], [[title(k), cell(v)] for k, v in data.items()], caption)


def records_table(records: Sequence[Mapping[str, Any]], caption: str = "") -> Table:
    """One row per record, one column per key (the union, in order of first appearance)."""
    keys: list[str] = []
    for r in records:
        keys += [str(k) for k in r if str(k) not in keys]
    rows = [[cell(r[k]) if k in r else "-" for k in keys] for r in records]
    return Table.of([title(k) for k in keys], rows, caption)


def _numeric_array(value: Any) -> np.ndarray | None:
    if hasattr(value, "__array__") and getattr(value, "ndim", 0) >= 2:  # an array or a tensor
        return np.asarray(value, dtype=np.float64)
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        return None
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return a if a.ndim >= 2 else None


def render_value(value: Any, path: str) -> list[Block]:
    """Blocks showing ``value`` (found at ``path``, used in captions and sub-headings)."""
    if is_scalar(value) or _is_scalar_list(value):
        return [Table.of(["field", "value"], [[title(path.rsplit(".", 1)[-1]), cell(value)]])]
    if _is_records(value):
        return [records_table(value, caption=path)]
    array = _numeric_array(value)
    if array is not None:
        if array.ndim == 2 and array.size <= MAX_TABLE_CELLS:
            rows = [[str(i), *(num(float(v)) for v in r)] for i, r in enumerate(array.tolist())]
            return [Table.of(["row", *map(str, range(array.shape[1]))], rows, caption=path)]
        return [
            Paragraph(
                f"{path}: an array of shape {tuple(array.shape)}, values in "
                f"[{num(float(array.min()))}, {num(float(array.max()))}] (see results.json)"
            )
        ]
    if not isinstance(value, Mapping):  # a list of mixed items
        return [Pre(json.dumps(value, indent=1, default=str))]
    blocks: list[Block] = []
    flat = {k: v for k, v in value.items() if is_scalar(v) or _is_scalar_list(v)}
    if flat:
        blocks.append(kv_table(flat, caption=path))
    for key, sub in value.items():
        if key in flat:
            continue
        where = f"{path}.{key}"
        if (
            isinstance(sub, Mapping)
            and sub
            and all(
                isinstance(v, Mapping) and all(is_scalar(x) for x in v.values())
                for v in sub.values()
            )
        ):
            records = [{"name": k, **v} for k, v in sub.items()]
            blocks.append(records_table(records, caption=where))
        elif _is_records(sub) or _numeric_array(sub) is not None:
            blocks += render_value(sub, where)
        else:
            blocks.append(Heading(title(str(key)), level=4))
            blocks += render_value(sub, where)
    return blocks
