"""Section ``defenses``: each defense audited with naive and adaptive attacks and sanity checks.

Expected schema: ``{defense_name: DEFENSE_AUDIT, ..., "seconds": float}`` where ``DEFENSE_AUDIT``
is ``robustlens.evaluation.audit_defense(...).to_dict()``::

    {
      "defense": str,                      # the preprocessor's repr, optional
      "eps": float, "norm": str, "n": int, "num_classes": int,
      "table": [{"measure": str, "attack": str, "accuracy": float}, ...],
                  # measures named "clean", "naive" and "adaptive" feed the bar chart
      "checks": [{"name": str, "passed": bool, "detail": str, "numbers": {...}}, ...],
      "verdict": str, "supported": bool,
      "claimed_accuracy": float, "robust_accuracy": float,
      "diagnosis": {...}, "notes": [str, ...]
    }

Rendered as: a summary table over the defenses, one grouped bar chart (clean, naive and adaptive
accuracy per defense), then per defense (anchor ``defenses-<name>``) its verdict, its measurements,
its checks marked pass/FAIL with their details, the probe's diagnosis and its notes.

Example:
    >>> audit = {"eps": 0.1, "norm": "linf", "n": 100, "verdict": "Not robust.",
    ...          "supported": False, "claimed_accuracy": 0.6, "robust_accuracy": 0.02,
    ...          "table": [{"measure": "naive", "attack": "PGD", "accuracy": 0.6},
    ...                    {"measure": "adaptive", "attack": "BPDA(PGD)", "accuracy": 0.02}],
    ...          "checks": [{"name": "naive vs adaptive", "passed": False, "detail": "drop"}]}
    >>> blocks, used = render({"JPEG": audit})
    >>> [b.kind for b in blocks]
    ['table', 'image', 'heading', 'paragraph', 'paragraph', 'table', 'table']
    >>> [c.text for c in blocks[6].rows[0]]
    ['naive vs adaptive', 'FAIL', 'drop']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from robustlens.errors import ParameterError
from robustlens.report._format import get_mapping, num, pct, slug, text
from robustlens.report.blocks import Block, Bullets, Cell, Heading, Image, Paragraph, Table
from robustlens.report.figures import defense_figure, figure_to_data_uri
from robustlens.report.sections.generic import kv_table, render_value

__all__ = ["BAR_MEASURES", "TITLE", "measure", "render"]

TITLE = "Defenses"
BAR_MEASURES = ("clean", "naive", "adaptive")
_KEYS = {
    "defense",
    "eps",
    "norm",
    "n",
    "num_classes",
    "table",
    "checks",
    "verdict",
    "supported",
    "claimed_accuracy",
    "robust_accuracy",
    "diagnosis",
    "notes",
}


def _records(audit: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = audit.get(key) or []
    if not isinstance(value, Sequence) or not all(isinstance(r, Mapping) for r in value):
        raise ParameterError(f"report: {where}.{key} must be a list of objects, got {value!r:.80}")
    return list(value)


def measure(audit: Mapping[str, Any], name: str) -> float | None:
    """The accuracy of the first row of ``audit["table"]`` whose measure is ``name``."""
    for row in _records(audit, "table", "defense"):
        if row.get("measure") == name:
            acc = row.get("accuracy")
            return None if acc is None else float(acc)
    return None


def _passed(ok: bool, yes: str, no: str) -> Cell:
    return Cell(yes, "ok") if ok else Cell(no, "bad")


def _one(name: str, audit: Mapping[str, Any], anchor: str) -> list[Block]:
    where = f"defenses.{name}"
    blocks: list[Block] = [Heading(name, id=anchor)]
    if "verdict" in audit:
        cls = "" if "supported" not in audit else ("ok" if audit["supported"] else "bad")
        blocks.append(Paragraph(text(audit["verdict"]), cls=cls))
    bits = []
    if "defense" in audit:
        bits.append(f"defense {text(audit['defense'])}")
    if "n" in audit:
        bits.append(f"{num(audit['n'])} images")
    if "eps" in audit:
        bits.append(f"{text(audit.get('norm', 'linf'))} eps {num(audit['eps'])}")
    if "claimed_accuracy" in audit:
        bits.append(f"claimed (naive) accuracy {pct(audit['claimed_accuracy'])}")
    if "robust_accuracy" in audit:
        bits.append(f"robust accuracy (worst case) {pct(audit['robust_accuracy'])}")
    if bits:
        blocks.append(Paragraph("; ".join(bits) + "."))
    rows = _records(audit, "table", where)
    if rows:
        blocks.append(
            Table.of(
                ["measure", "attack", "accuracy"],
                [
                    [text(r.get("measure")), text(r.get("attack")), pct(r.get("accuracy"))]
                    for r in rows
                ],
                caption="Measurements",
            )
        )
    checks = _records(audit, "checks", where)
    if checks:
        blocks.append(
            Table.of(
                ["check", "result", "detail"],
                [
                    [
                        text(c.get("name")),
                        _passed(bool(c.get("passed")), "pass", "FAIL"),
                        text(c.get("detail")),
                    ]
                    for c in checks
                ],
                caption="Sanity checks (Athalye et al. 2018; Carlini et al. 2019)",
            )
        )
    diagnosis = get_mapping(audit, "diagnosis", where)
    if diagnosis:
        blocks.append(kv_table(diagnosis, caption="What probing the defense found"))
    notes = audit.get("notes") or []
    if notes:
        blocks.append(Bullets.of([text(n) for n in notes]))
    rest = {k: v for k, v in audit.items() if k not in _KEYS}
    if rest:
        blocks += render_value(rest, where)
    return blocks


def render(data: Mapping[str, Any]) -> tuple[list[Block], set[str]]:
    audits = {str(k): v for k, v in data.items() if isinstance(v, Mapping)}
    blocks: list[Block] = []
    if not audits:
        return blocks, set()
    summary: list[list[str | Cell]] = []
    for name, audit in audits.items():
        failed = [
            text(c.get("name")) for c in _records(audit, "checks", name) if not c.get("passed")
        ]
        supported = audit.get("supported")
        holds = Cell("-") if supported is None else _passed(bool(supported), "yes", "no")
        summary.append(
            [
                name,
                *(pct(measure(audit, m)) for m in BAR_MEASURES),
                pct(audit.get("robust_accuracy")),
                holds,
                ", ".join(failed) or "none",
            ]
        )
    blocks.append(
        Table.of(
            ["defense", *BAR_MEASURES, "robust (worst case)", "claim holds", "failed checks"],
            summary,
            caption="Summary",
        )
    )
    bars = {n: {m: measure(a, m) for m in BAR_MEASURES} for n, a in audits.items()}
    if any(v is not None for row in bars.values() for v in row.values()):
        blocks.append(
            Image(
                figure_to_data_uri(defense_figure(bars)),
                alt="accuracy of each defense under the naive and the adaptive attack",
                caption="A large gap between naive and adaptive means the defense only hides "
                "gradients.",
            )
        )
    taken: set[str] = set()
    for name, audit in audits.items():
        anchor = f"defenses-{slug(name)}"
        while anchor in taken:
            anchor += "-x"
        taken.add(anchor)
        blocks += _one(name, audit, anchor)
    return blocks, set(audits) | ({"seconds"} & set(data))
