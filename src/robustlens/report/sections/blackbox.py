"""Section ``blackbox``: attacks that only query the model.

Expected schema::

    {
      "n": int, "eps": float, "queries": int, "seconds": float,     # all optional
      "attacks": {
        name: {
          "success_rate": float, "robust_accuracy": float, "median_queries": float | null,
          "curve": {"queries": [int, ...], "success_rate": [float, ...]},   # optional
          ...                                        # other scalars: extra table columns
        }
      }
    }

Rendered as: a sentence, a table per attack (fractions as percentages) and the success rate
against the number of queries, one line per attack with a ``curve`` (log scale when the queries
span more than two decades).

Example:
    >>> blocks, used = render({"n": 10, "eps": 0.1, "attacks": {"NES": {
    ...     "success_rate": 0.8, "robust_accuracy": 0.1, "median_queries": 300,
    ...     "curve": {"queries": [0, 100, 1000], "success_rate": [0.0, 0.5, 0.8]}}}})
    >>> [b.kind for b in blocks]
    ['paragraph', 'table', 'image']
    >>> [c.text for c in blocks[1].rows[0]]
    ['NES', '80.0%', '10.0%', '300']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustlens.report._format import get_mapping, num, title
from robustlens.report.blocks import Block, Image, Paragraph, Table
from robustlens.report.figures import figure_to_data_uri, success_vs_queries_figure
from robustlens.report.sections.generic import value_cell

__all__ = ["TITLE", "render"]

TITLE = "Black-box attacks"
KEYS = frozenset({"n", "eps", "norm", "queries", "attacks", "seconds"})
_COLUMNS = {
    "success_rate": "success rate",
    "robust_accuracy": "robust accuracy",
    "median_queries": "median queries (successes)",
    "mean_queries": "mean queries",
    "seconds": "seconds",
}


def render(data: Mapping[str, Any]) -> tuple[list[Block], set[str]]:
    blocks: list[Block] = []
    attacks = get_mapping(data, "attacks", "blackbox") or {}
    bits = []
    if "n" in data:
        bits.append(f"{num(data['n'])} images")
    if "eps" in data:
        norm = "L2" if data.get("norm") == "l2" else "Linf"
        bits.append(f"{norm} eps {num(data['eps'])}")
    if "queries" in data:
        bits.append(f"at most {num(data['queries'])} queries per image")
    if bits:
        blocks.append(
            Paragraph(
                "Black-box attacks see only the model's outputs, never its gradients: "
                + ", ".join(bits)
                + "."
            )
        )
    if attacks:
        rows_in = {str(k): get_mapping(attacks, k, "blackbox.attacks") or {} for k in attacks}
        keys = [k for k in _COLUMNS if any(k in r for r in rows_in.values())]
        keys += sorted({k for r in rows_in.values() for k in r} - set(keys) - {"curve"})
        rows = [[name, *(value_cell(k, r.get(k)) for k in keys)] for name, r in rows_in.items()]
        blocks.append(
            Table.of(
                ["attack", *(_COLUMNS.get(k, title(k)) for k in keys)], rows, caption="Per attack"
            )
        )
        if any(isinstance(r.get("curve"), Mapping) for r in rows_in.values()):
            blocks.append(
                Image(
                    figure_to_data_uri(success_vs_queries_figure(rows_in)),
                    alt="success rate against queries",
                    caption="Fraction of attacked images fooled within a number of queries.",
                )
            )
    return blocks, set(KEYS & set(data))
