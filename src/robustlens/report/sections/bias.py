"""Section ``bias``: texture-versus-shape bias, corruption robustness and other reliance measures.

Expected schema (every key optional)::

    {
      "shape_bias": SHAPE or {model_name: SHAPE, ...},
      "corruptions": {
        "clean_accuracy": float,
        "accuracy": {corruption: [float, ...]},     # accuracy per severity, severity 1 first
        "ce": {corruption: float},                  # corruption error (relative to the baseline)
        "mce": float | null, "baseline": str | null
      },
      "cue_reliance": {...}, "superpixels": {...},  # shown by the generic renderer
      "seconds": float
    }

with ``SHAPE = {"score": float, "shape_fraction": float, "texture_fraction": float, "n": int,
"model": str, ...}``; ``score`` is the shape bias of Geirhos et al. 2019 (shape decisions over
shape-or-texture decisions).

Rendered as: a bar chart of shape bias per model with the human reference (about 0.96) and its
table; a heat map of accuracy per corruption and severity and its table (with the mean over
severities and the corruption error); the other entries as tables.

Example:
    >>> blocks, used = render({"shape_bias": {"score": 0.3, "shape_fraction": 0.2,
    ...                                       "texture_fraction": 0.5, "n": 100, "model": "cnn"}})
    >>> [b.kind for b in blocks]
    ['heading', 'paragraph', 'image', 'table']
    >>> [c.text for c in blocks[3].rows[0]]
    ['cnn', '0.300', '20.0%', '50.0%', '100']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robustlens.errors import ParameterError
from robustlens.report._format import MISSING, as_float, get_mapping, num, pct, slug, text, title
from robustlens.report.blocks import Block, Heading, Image, Paragraph, Table
from robustlens.report.figures import (
    HUMAN_SHAPE_BIAS,
    corruption_figure,
    figure_to_data_uri,
    shape_bias_figure,
)
from robustlens.report.sections.generic import render_value, value_cell

__all__ = ["TITLE", "render", "shape_bias_rows"]

TITLE = "Biases and corruptions"
KEYS = frozenset({"shape_bias", "corruptions", "seconds"})
_SHAPE_KEYS = ("score", "shape_fraction", "texture_fraction", "n")
_CORRUPTION_KEYS = {"clean_accuracy", "accuracy", "ce", "mce", "baseline"}


def shape_bias_rows(value: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``shape_bias`` as ``{model name: its dict}`` (one model's dict is keyed by its ``model``).

    Example:
        >>> list(shape_bias_rows({"score": 0.4, "model": "vgg"}))
        ['vgg']
    """
    if "score" in value:
        return {text(value.get("model", "model")): value}
    out = {}
    for name, row in value.items():
        if not isinstance(row, Mapping):
            raise ParameterError(
                f"report: bias.shape_bias must be one result with a 'score' or a dict of models "
                f"to such results; {name!r} maps to {type(row).__name__}"
            )
        out[str(name)] = row
    return out


def _score(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def _shape_bias(value: Mapping[str, Any]) -> list[Block]:
    rows_in = shape_bias_rows(value)
    scores = {n: as_float(r.get("score")) for n, r in rows_in.items()}
    extra = sorted({k for r in rows_in.values() for k in r} - set(_SHAPE_KEYS) - {"model"})
    rows = [
        [
            name,
            _score(scores[name]),
            pct(r.get("shape_fraction")),
            pct(r.get("texture_fraction")),
            num(r.get("n")),
            *(value_cell(k, r.get(k)) for k in extra),
        ]
        for name, r in rows_in.items()
    ]
    return [
        Heading("Shape or texture?", id="bias-shape"),
        Paragraph(
            "On cue-conflict images (the shape of one class, the texture of another), shape bias "
            "is the fraction of decisions that follow the shape among those that follow either "
            f"(Geirhos et al. 2019); people score about {HUMAN_SHAPE_BIAS:.2f}."
        ),
        Image(figure_to_data_uri(shape_bias_figure(scores)), alt="shape bias per model"),
        Table.of(
            [
                "model",
                "shape bias",
                "shape decisions",
                "texture decisions",
                "images",
                *(title(k) for k in extra),
            ],
            rows,
            caption="Shape bias",
        ),
    ]


def _corruptions(value: Mapping[str, Any]) -> list[Block]:
    where = "bias.corruptions"
    accuracy = get_mapping(value, "accuracy", where) or {}
    for name, accs in accuracy.items():
        if not isinstance(accs, Sequence) or isinstance(accs, str):
            raise ParameterError(
                f"report: {where}.accuracy[{name!r}] must be a list (one accuracy per severity), "
                f"got {accs!r:.60}"
            )
    ce = get_mapping(value, "ce", where) or {}
    clean = as_float(value.get("clean_accuracy"))
    blocks: list[Block] = [Heading("Common corruptions", id="bias-corruptions")]
    bits = []
    if clean is not None:
        bits.append(f"clean accuracy {pct(clean)}")
    if value.get("mce") is not None:
        base = value.get("baseline")
        rel = f" relative to {text(base)}" if base else ""
        bits.append(f"mean corruption error {pct(value['mce'])}{rel}")
    if accuracy:
        mean = float(
            np.nanmean([np.nan if a is None else float(a) for v in accuracy.values() for a in v])
        )
        bits.append(f"mean accuracy over corruptions and severities {pct(mean)}")
    if bits:
        sentence = "; ".join(bits)
        blocks.append(Paragraph(sentence[:1].upper() + sentence[1:] + "."))
    if accuracy:
        blocks.append(
            Image(
                figure_to_data_uri(corruption_figure(accuracy, clean)),
                alt="accuracy per corruption and severity",
            )
        )
        s = max(len(v) for v in accuracy.values())
        rows = []
        for name, accs in accuracy.items():
            vals = [float(a) for a in accs if a is not None]
            row = [str(name), *(pct(a) for a in accs), *([""] * (s - len(accs)))]
            row.append(pct(sum(vals) / len(vals)) if vals else "-")
            if ce:
                row.append(num(ce.get(name), 3))
            rows.append(row)
        columns = ["corruption", *(f"severity {j + 1}" for j in range(s)), "mean"]
        if ce:
            columns.append("corruption error")
        blocks.append(Table.of(columns, rows, caption="Accuracy under corruptions"))
    elif ce:
        blocks.append(
            Table.of(
                ["corruption", "corruption error"], [[str(k), num(v, 3)] for k, v in ce.items()]
            )
        )
    rest = {k: v for k, v in value.items() if k not in _CORRUPTION_KEYS}
    if rest:
        blocks += render_value(rest, where)
    return blocks


def render(data: Mapping[str, Any]) -> tuple[list[Block], set[str]]:
    blocks: list[Block] = []
    shape = get_mapping(data, "shape_bias", "bias")
    if shape is not None:
        blocks += _shape_bias(shape)
    corruptions = get_mapping(data, "corruptions", "bias")
    if corruptions is not None:
        blocks += _corruptions(corruptions)
    used = set(KEYS & set(data))
    for key, value in data.items():  # cue_reliance, superpixels and anything newer
        if key in used:
            continue
        blocks.append(Heading(title(key), id=f"bias-{slug(key)}"))
        blocks += render_value(value, f"bias.{key}")
        used.add(key)
    return blocks, used
