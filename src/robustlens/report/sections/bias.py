"""Section ``bias``: what the model relies on (shape or texture, noise, planted cues, superpixels,
labels) and how it copes with corruptions.

Expected schema (every key optional)::

    {
      "shape_bias": SHAPE or {model_name: SHAPE, ...},
      "shape_bias_note": {"note": str} or str,     # e.g. the shapes are a reference model's
      "corruptions": {                              # CorruptionResult.to_dict() + "baseline"
        "severities": [int, ...],                   # default 1..S
        "n": int, "clean_accuracy": float, "mean_accuracy": float,
        "accuracy": {corruption: [float, ...]},     # accuracy per severity, in that order
        "ce": {corruption: float}, "relative_ce": {corruption: float},   # 100 = the baseline
        "mce": float | null, "relative_mce": float | null,
        "baseline": str | null, "baseline_clean_accuracy": float | null,
        "table": "cifar" | "imagenet", "ce_baseline": "model" | "alexnet" | null,
        "ce_note": str,                             # what an AlexNet-normalised CE divides
        ...                                         # corruptions, seed, errors, corruption_accuracy
      },
      "random_vs_adversarial": {                    # RandomVsAdversarial.to_dict() + "n"
        "attack": str, "norm": "l2" | "linf", "clean_accuracy": float,
        "adversarial_accuracy": float, "random_accuracy": float,
        "median_adversarial_norm": float, "median_random_norm": float, "trials": int, "n": int
      },
      "cue_reliance": CUE or {model_name: CUE, ...},
      "superpixels": {                              # SuperpixelStats.to_dict()
        "k": int, "images_per_class": int, "target": "label" | "pred",
        "min_ratio": float, "alpha": float,         # the rule (default 2 and 0.01) ...
        "tests": int, "foreground": float,          # ... p-values below alpha / tests
        "classes": {class: {"n_images": int, "n_top": int, "mask_overlap": float | null,
                            "attributes": {attribute: {value: {"class": float, "others": float,
                                                               "all": float, "expected": float,
                                                               "ratio": float, "p": float,
                                                               "excess": float,
                                                               "p_shape": float}}}}},
        "flags": [str, ...],                        # warnings
        "notes": [str, ...],
        "data": str,                                # optional: which images were explained
        "examples": {class: [{"image": IMAGE, "top": MASK}, ...]}
      },
      "ambiguous": {"n": int, "items": [{"index": int, "classes": [top, second],
                                         "probs": [p1, p2], "label": str,
                                         "image": IMAGE}, ...]},
      "hierarchy": {"levels": {"classes": float, "groups": float, ...},
                    "groups": [str, ...], "confusion": [[int, ...], ...]},   # (G, G) counts
      "seconds": float
    }

with ``SHAPE`` = ``robustlens.bias.ShapeBias.to_dict()`` (``score``, ``shape_fraction``,
``texture_fraction``, ``other_fraction``, ``n``, ``per_class``: {shape class: {``n``, ``score``,
``shape_fraction``, ``texture_fraction``}}; an optional ``model`` names it), ``score`` being the
shape bias of Geirhos et al. 2019 (shape decisions over shape-or-texture decisions), and ``CUE`` =
``robustlens.bias.CueReliance.to_dict()`` (``kind``, ``n``, ``clean_accuracy``,
``aligned_accuracy``, ``conflicting_accuracy``, ``gap``, ``cue_following``; an optional ``model``).
``IMAGE`` is ``(C, H, W)`` in [0, 1] and ``MASK`` ``(H, W)`` of 0/1: in ``results.json`` the path of
a PNG file beside it (``"images/bias/ambiguous-items-0-image.png"``), which
:func:`robustlens.report.build_page` reads before this renderer sees it (a nested list or a tensor
is used as it is).

Rendered as:

* shape bias: bars per model with the human reference (about 0.96), or beside the published
  reference points the results carry (``references``, e.g. people and ResNet-50 on Geirhos'
  stimuli, with their source named) and the stimuli they say were used (``stimuli``); a table per
  model and one per shape class; the note, when there is one, highlighted;
* corruptions: a heat map of accuracy per corruption and severity and its table (with the mean
  over severities, the corruption error and the relative corruption error; CE and mCE are on
  Hendrycks and Dietterich's scale, 100 meaning as many errors as the baseline);
* random against adversarial noise: bars (clean, random noise, adversarial noise of the same
  norm), a table and the lecture's point in a sentence (the adversarial noise is not random);
* cue reliance: bars (no cue, cue aligned with the label, cue naming another class) and a table;
* superpixel statistics: the rule with its thresholds, the warnings (the mask's region beyond the
  class's own objects), the notes (other values beyond the class's objects and unlike the other
  classes), a table per class (images, top superpixels, mask overlap, warnings, notes), a table
  of the warnings and notes with their shares, ratios and p-values (:func:`finding_kind`, the
  producer's rule; :data:`OVER_RATIO` and :data:`OVER_P` when the results do not say; older
  results without ``p_shape`` are read with :func:`over_represented`) and the examples with their
  top superpixels outlined;
* ambiguous images: a gallery titled ``top (p1) / second (p2)`` with the true label (the
  lecture's "guess the class"), and its table;
* hierarchy: accuracy per level with the share of mistakes that stay inside a group, the group
  confusion matrix as a heat map, and tables;
* any other entry: the generic renderer, under its own heading.

Example:
    >>> blocks, used = render({"shape_bias": {"score": 0.3, "shape_fraction": 0.2,
    ...                                       "texture_fraction": 0.5, "n": 100, "model": "cnn"}})
    >>> [b.kind for b in blocks]
    ['heading', 'paragraph', 'image', 'table']
    >>> [c.text for c in blocks[3].rows[0]]
    ['cnn', '0.300', '20.0%', '50.0%', '100']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robustlens.errors import ParameterError, ShapeError
from robustlens.report._format import (
    MISSING,
    as_float,
    get_mapping,
    is_number,
    num,
    pct,
    slug,
    text,
    title,
)
from robustlens.report.blocks import Block, Bullets, Heading, Image, Paragraph, Table
from robustlens.report.figures import (
    HUMAN_SHAPE_BIAS,
    ambiguous_figure,
    bars_figure,
    confusion_figure,
    corruption_figure,
    figure_to_data_uri,
    shape_bias_figure,
    superpixel_examples_figure,
)
from robustlens.report.sections.generic import render_value, value_cell

__all__ = [
    "AMBIGUOUS_PER_FIGURE",
    "AUDITED",
    "CUE_GAP",
    "OVER_P",
    "OVER_RATIO",
    "RANDOM_GAP",
    "TITLE",
    "cue_rows",
    "finding_kind",
    "over_represented",
    "render",
    "shape_bias_note",
    "shape_bias_rows",
    "within_group_share",
]

TITLE = "Biases and corruptions"
KEYS = frozenset(
    {
        "shape_bias",
        "shape_bias_note",
        "corruptions",
        "random_vs_adversarial",
        "cue_reliance",
        "superpixels",
        "ambiguous",
        "hierarchy",
        "seconds",
    }
)
RANDOM_GAP = 0.3
"""Random noise of the adversarial norm is "far" less harmful when it leaves at least this much more
accuracy (a fraction) than the adversarial noise."""
CUE_GAP = 0.1
"""A model follows a planted cue when its accuracy with the cue aligned exceeds its accuracy with
the cue conflicting by more than this."""
OVER_RATIO = 2.0
"""An attribute value is over-represented among a class's top superpixels when it is at least this
many times as frequent as among the other classes' top superpixels ... (the default of
``robustlens.bias.superpixel_statistics``; results that carry ``min_ratio`` use theirs)"""
OVER_P = 0.01
"""... and the producer's test of the difference gives p below this (results that carry ``alpha``
use theirs)."""
AMBIGUOUS_PER_FIGURE = 10
AUDITED = "audited model"
"""The name of a cue-reliance measurement that names no model (the audit measures its model)."""

_SHAPE_KEYS = ("score", "shape_fraction", "texture_fraction", "other_fraction", "n", "per_class")
_SHAPE_CONTEXT = ("stimuli", "references")  # said in sentences and on the plot, not in columns
_CORRUPTION_KEYS = {  # CorruptionResult.to_dict() and the audit's "baseline"
    "corruptions",  # the keys of "accuracy", in order
    "severities",
    "n",
    "seed",
    "clean_accuracy",
    "mean_accuracy",
    "accuracy",
    "corruption_accuracy",  # the "mean" column
    "errors",  # 1 - accuracy
    "ce",
    "relative_ce",
    "mce",
    "relative_mce",
    "mce_corruptions",
    "baseline_clean_accuracy",
    "baseline",
    "table",  # the severity table: "cifar" (32x32) or "imagenet" (224x224)
    "ce_baseline",  # "model" or "alexnet" (AlexNet's published ImageNet-C errors)
    "ce_note",  # what the CE normalises, when the baseline is AlexNet's published errors
}
_RVA_KEYS = {
    "attack",
    "norm",
    "clean_accuracy",
    "adversarial_accuracy",
    "random_accuracy",
    "median_adversarial_norm",
    "median_random_norm",
    "trials",
    "n",
}
_CUE_KEYS = (
    "kind",
    "n",
    "clean_accuracy",
    "aligned_accuracy",
    "conflicting_accuracy",
    "gap",
    "cue_following",
    "model",
)
_SUPERPIXEL_KEYS = {
    "k",
    "images_per_class",
    "target",
    "min_ratio",
    "alpha",
    "tests",
    "foreground",
    "classes",
    "flags",
    "notes",
    "examples",
    "data",
}
_AMBIGUOUS_ITEM_KEYS = {"index", "classes", "probs", "label", "image"}
_HIERARCHY_KEYS = {"levels", "groups", "confusion", "n"}
_GREY, _GREEN, _RED, _BLUE = "#9e9e9e", "#1e7b34", "#c0392b", "#4c72b0"


def _norm_name(norm: Any) -> str:
    return {"l2": "L2", "linf": "Linf"}.get(str(norm), text(norm))


def _records(value: Any, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ParameterError(f"report: {where} must be a list of objects, got {value!r:.60}")
    for i, v in enumerate(value):
        if not isinstance(v, Mapping):
            raise ParameterError(f"report: {where}[{i}] must be an object, got {v!r:.60}")
    return list(value)


# --------------------------------------------------------------------------- shape bias


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


def shape_bias_note(value: Any) -> str | None:
    """The text of ``bias.shape_bias_note`` (``{"note": str}`` or a plain string).

    Example:
        >>> shape_bias_note({"note": "reference model"}), shape_bias_note(None)
        ('reference model', None)
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("note"), str):
        return str(value["note"])
    raise ParameterError(
        f"report: bias.shape_bias_note must be {{'note': str}} or a string, got {value!r:.80}"
    )


def _score(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def _shape_references(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[float, str]]:
    """``{observer: (score, source)}`` of the published points the results carry
    (``references``: ``[{"observer", "score", "source"}, ...]``), first mention kept."""
    out: dict[str, tuple[float, str]] = {}
    for name, r in rows.items():
        refs = r.get("references")
        if refs is None:
            continue
        for i, ref in enumerate(_records(refs, f"bias.shape_bias[{name!r}].references")):
            score = as_float(ref.get("score"))
            if not isinstance(ref.get("observer"), str) or score is None:
                raise ParameterError(
                    f"report: bias.shape_bias[{name!r}].references[{i}] must be "
                    f"{{'observer': str, 'score': number, 'source': str}}, got {ref!r:.80}"
                )
            out.setdefault(str(ref["observer"]), (score, str(ref.get("source") or "")))
    return out


def _shape_bias(value: Mapping[str, Any] | None, note: Any) -> list[Block]:
    blocks: list[Block] = [
        Heading("Shape or texture?", id="bias-shape"),
        Paragraph(
            "On cue-conflict images (the shape of one class, the texture of another), shape bias "
            "is the fraction of decisions that follow the shape among those that follow either "
            f"(Geirhos et al. 2019); people score about {HUMAN_SHAPE_BIAS:.2f}."
        ),
    ]
    said = shape_bias_note(note)
    if said is not None:
        blocks.append(Paragraph(f"Note: {said}", cls="warn"))
    if isinstance(note, Mapping) and len(note) > 1:
        blocks += render_value({k: v for k, v in note.items() if k != "note"}, "bias.note")
    if value is None:
        return blocks
    rows_in = shape_bias_rows(value)
    scores = {n: as_float(r.get("score")) for n, r in rows_in.items()}
    other = any("other_fraction" in r for r in rows_in.values())
    extra = sorted(
        {k for r in rows_in.values() for k in r} - {*_SHAPE_KEYS, *_SHAPE_CONTEXT, "model"}
    )
    for name, r in rows_in.items():
        if isinstance(r.get("stimuli"), str):
            who = "" if len(rows_in) == 1 else f" ({name})"
            blocks.append(Paragraph(f"Stimuli{who}: {r['stimuli']}."))
    references = _shape_references(rows_in)
    if references:
        points = ", ".join(f"{who} {score:.2f}" for who, (score, _) in references.items())
        sources = "; ".join(sorted({src for _, src in references.values() if src}))
        blocks.append(
            Paragraph(
                f"Published shape bias on these stimuli, drawn beside the measurement: {points}"
                + (f" (source: {sources})." if sources else ".")
            )
        )
    rows = [
        [
            name,
            _score(scores[name]),
            pct(r.get("shape_fraction")),
            pct(r.get("texture_fraction")),
            *([pct(r.get("other_fraction"))] if other else []),
            num(r.get("n")),
            *(value_cell(k, r.get(k)) for k in extra),
        ]
        for name, r in rows_in.items()
    ]
    blocks += [
        Image(
            figure_to_data_uri(
                shape_bias_figure(scores, {k: v for k, (v, _) in references.items()})
            ),
            alt="shape bias per model" + (" beside the published references" if references else ""),
        ),
        Table.of(
            [
                "model",
                "shape bias",
                "shape decisions",
                "texture decisions",
                *(["other decisions"] if other else []),
                "images",
                *(title(k) for k in extra),
            ],
            rows,
            caption="Shape bias",
        ),
    ]
    per_class = []
    for name, r in rows_in.items():
        classes = get_mapping(r, "per_class", f"bias.shape_bias[{name!r}]") or {}
        for cls, c in classes.items():
            if not isinstance(c, Mapping):
                raise ParameterError(
                    f"report: bias.shape_bias[{name!r}].per_class[{cls!r}] must be an object "
                    f"{{n, score, shape_fraction, texture_fraction}}, got {c!r:.60}"
                )
            per_class.append(
                [
                    *([name] if len(rows_in) > 1 else []),
                    str(cls),
                    _score(as_float(c.get("score"))),
                    pct(c.get("shape_fraction")),
                    pct(c.get("texture_fraction")),
                    num(c.get("n")),
                ]
            )
    if per_class:
        blocks.append(
            Table.of(
                [
                    *(["model"] if len(rows_in) > 1 else []),
                    "shape class",
                    "shape bias",
                    "shape decisions",
                    "texture decisions",
                    "images",
                ],
                per_class,
                caption="Shape bias per shape class (the cue-conflict images grouped by the "
                "class of their shape)",
            )
        )
    return blocks


# --------------------------------------------------------------------------- corruptions


def _corruptions(value: Mapping[str, Any]) -> list[Block]:
    where = "bias.corruptions"
    accuracy = get_mapping(value, "accuracy", where) or {}
    for name, accs in accuracy.items():
        if not isinstance(accs, Sequence) or isinstance(accs, str):
            raise ParameterError(
                f"report: {where}.accuracy[{name!r}] must be a list (one accuracy per severity), "
                f"got {accs!r:.60}"
            )
    s = max((len(v) for v in accuracy.values()), default=0)
    severities = value.get("severities")
    if severities is not None and (
        isinstance(severities, str)
        or not isinstance(severities, Sequence)
        or (accuracy and len(severities) != s)
    ):
        raise ParameterError(
            f"report: {where}.severities must list the severity of each accuracy ({s} per "
            f"corruption), got {severities!r:.60}"
        )
    levels = [num(v) for v in severities] if severities is not None else []
    levels = levels or [str(j + 1) for j in range(s)]
    ce = get_mapping(value, "ce", where) or {}
    relative = get_mapping(value, "relative_ce", where) or {}
    clean = as_float(value.get("clean_accuracy"))
    blocks: list[Block] = [Heading("Common corruptions", id="bias-corruptions")]
    bits = []
    if clean is not None:
        on = f" on {num(value['n'])} images" if "n" in value else ""
        bits.append(f"clean accuracy {pct(clean)}{on}")
    if accuracy:
        mean = as_float(value.get("mean_accuracy"))
        if mean is None:
            mean = float(
                np.nanmean(
                    [np.nan if a is None else float(a) for v in accuracy.values() for a in v]
                )
            )
        bits.append(f"mean accuracy over corruptions and severities {pct(mean)}")
    base = value.get("baseline")
    against = f"the baseline {text(base)}" if base else "the baseline"
    if value.get("ce_baseline") == "alexnet":
        against = "AlexNet's published ImageNet-C errors"
    if value.get("table") in ("cifar", "imagenet"):
        reference = "ImageNet-C's (224x224)" if value["table"] == "imagenet" else "CIFAR-10-C's"
        bits.append(f"severities from {reference} table")
    base_clean = as_float(value.get("baseline_clean_accuracy"))
    if base_clean is not None:
        against += f" (clean accuracy {pct(base_clean)})"
    for key, what in (("mce", "mean corruption error (mCE)"), ("relative_mce", "relative mCE")):
        if value.get(key) is not None:
            bits.append(f"{what} {num(as_float(value[key]), 3)}")
    if value.get("mce") is not None or value.get("relative_mce") is not None:
        bits.append(
            f"both relative to {against}: 100 means as many errors as the baseline, less is "
            "better (Hendrycks and Dietterich 2019)"
        )
        averaged = value.get("mce_corruptions") or []
        if averaged:
            bits.append(
                f"the means are over the {len(averaged)} benchmark corruptions run "
                f"({text(', '.join(map(str, averaged)))})"
            )
    if bits:
        sentence = "; ".join(bits)
        blocks.append(Paragraph(sentence[:1].upper() + sentence[1:] + "."))
    if value.get("ce_note"):
        blocks.append(Paragraph(text(value["ce_note"])))
    if accuracy:
        blocks.append(
            Image(
                figure_to_data_uri(corruption_figure(accuracy, clean, severities=severities)),
                alt="accuracy per corruption and severity",
            )
        )
        rows = []
        for name, accs in accuracy.items():
            vals = [float(a) for a in accs if a is not None]
            row = [str(name), *(pct(a) for a in accs), *([""] * (s - len(accs)))]
            row.append(pct(sum(vals) / len(vals)) if vals else "-")
            if ce:
                row.append(num(as_float(ce.get(name)), 3))
            if relative:
                row.append(num(as_float(relative.get(name)), 3))
            rows.append(row)
        columns = ["corruption", *(f"severity {v}" for v in levels), "mean"]
        if ce:
            columns.append("corruption error")
        if relative:
            columns.append("relative CE")
        blocks.append(Table.of(columns, rows, caption="Accuracy under corruptions"))
    elif ce:
        blocks.append(
            Table.of(
                ["corruption", "corruption error"],
                [[str(k), num(as_float(v), 3)] for k, v in ce.items()],
            )
        )
    rest = {k: v for k, v in value.items() if k not in _CORRUPTION_KEYS}
    if rest:
        blocks += render_value(rest, where)
    return blocks


# --------------------------------------------------------------------------- noise


def _random_vs_adversarial(value: Mapping[str, Any]) -> list[Block]:
    where = "bias.random_vs_adversarial"
    clean = as_float(value.get("clean_accuracy"))
    adv = as_float(value.get("adversarial_accuracy"))
    rand = as_float(value.get("random_accuracy"))
    norm = _norm_name(value.get("norm", "l2"))
    attack = text(value.get("attack", "the attack"))
    blocks: list[Block] = [Heading("Random or adversarial noise?", id="bias-random-vs-adversarial")]
    each = f"Each of the {num(value['n'])} images" if "n" in value else "Each image"
    trials = f", drawn {num(value['trials'])} times per image" if "trials" in value else ""
    sentence = (
        f"{each} receives the perturbation {attack} found for it (median {norm} norm "
        f"{num(as_float(value.get('median_adversarial_norm')))}) and, separately, random noise "
        f"of the same {norm} norm{trials}."
    )
    if adv is not None and rand is not None:
        sentence += (
            f" Accuracy is {pct(rand)} under the random noise and {pct(adv)} under the "
            f"adversarial noise (clean: {pct(clean)}"
            + (f" on these {num(value['n'])} images)." if "n" in value else ").")
        )
    blocks.append(Paragraph(sentence))
    if adv is not None and rand is not None:
        if rand - adv >= RANDOM_GAP:
            blocks.append(
                Paragraph(
                    "The adversarial noise is not random: the same amount of noise in random "
                    "directions changes far fewer decisions, so an adversarial example does not "
                    "happen by accident.",
                    cls="ok",
                )
            )
        else:
            blocks.append(
                Paragraph(
                    "Random noise of this size costs nearly as much accuracy as the attack: "
                    "either the attack found little, or the model is fragile to any noise of "
                    "this size.",
                    cls="warn",
                )
            )
        bars = {"clean": clean, "random noise": rand, "adversarial noise": adv}
        blocks.append(
            Image(
                figure_to_data_uri(
                    bars_figure(
                        {attack: bars},
                        title=f"Accuracy under noise of one {norm} norm",
                        colours={"clean": _GREY, "random noise": _BLUE, "adversarial noise": _RED},
                    )
                ),
                alt="accuracy: clean, random noise, adversarial noise of the same norm",
            )
        )
    blocks.append(
        Table.of(
            ["noise", "accuracy", f"median {norm} norm"],
            [
                ["none (clean images)", pct(clean), MISSING],
                [
                    f"random, same {norm} norm",
                    pct(rand),
                    num(as_float(value.get("median_random_norm"))),
                ],
                [
                    f"adversarial ({attack})",
                    pct(adv),
                    num(as_float(value.get("median_adversarial_norm"))),
                ],
            ],
            caption="Accuracy under random and adversarial noise of the same size",
        )
    )
    rest = {k: v for k, v in value.items() if k not in _RVA_KEYS}
    if rest:
        blocks += render_value(rest, where)
    return blocks


# --------------------------------------------------------------------------- planted cues


def cue_rows(value: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``cue_reliance`` as ``{model name: its dict}``: one ``CueReliance.to_dict()`` (named by its
    ``model``, else :data:`AUDITED`) or a dict of model names to such dicts.

    Example:
        >>> list(cue_rows({"kind": "patch", "gap": 0.4, "model": "cnn"}))
        ['cnn']
    """
    if any(k in value for k in ("aligned_accuracy", "conflicting_accuracy", "gap")):
        return {text(value.get("model", AUDITED)): value}
    out = {}
    for name, row in value.items():
        if not isinstance(row, Mapping):
            raise ParameterError(
                "report: bias.cue_reliance must be one CueReliance.to_dict() or a dict of model "
                f"names to such dicts; {name!r} maps to {type(row).__name__}"
            )
        out[str(name)] = row
    return out


def _gap(row: Mapping[str, Any]) -> float | None:
    gap = as_float(row.get("gap"))
    if gap is not None:
        return gap
    aligned, conflicting = (
        as_float(row.get("aligned_accuracy")),
        as_float(row.get("conflicting_accuracy")),
    )
    return None if aligned is None or conflicting is None else aligned - conflicting


def _cue_reliance(value: Mapping[str, Any]) -> list[Block]:
    rows_in = cue_rows(value)
    blocks: list[Block] = [
        Heading("Planted cue: aligned or conflicting?", id="bias-cue-reliance"),
        Paragraph(
            "A cue (a patch, a tint, ...) is planted in every test image, once naming the true "
            "class and once naming another class. A model that recognises the object scores the "
            f"same on both; a gap above {CUE_GAP:g} means its answers follow the cue."
        ),
    ]
    for name, r in rows_in.items():
        gap = _gap(r)
        if gap is None:
            continue
        follows = as_float(r.get("cue_following"))
        tail = (
            f"; {pct(follows)} of the conflicting images are classified as the cue's class"
            if follows is not None
            else ""
        )
        blocks.append(
            Paragraph(
                f"{name}: {pct(r.get('aligned_accuracy'))} with the {text(r.get('kind', 'cue'))} "
                f"cue aligned, {pct(r.get('conflicting_accuracy'))} with it conflicting (gap "
                f"{gap:.3f}; no cue: {pct(r.get('clean_accuracy'))}){tail}.",
                cls="warn" if gap > CUE_GAP else "ok",
            )
        )
    bars = {
        name: {
            "no cue": as_float(r.get("clean_accuracy")),
            "cue aligned": as_float(r.get("aligned_accuracy")),
            "cue conflicting": as_float(r.get("conflicting_accuracy")),
        }
        for name, r in rows_in.items()
    }
    if any(v is not None for b in bars.values() for v in b.values()):
        blocks.append(
            Image(
                figure_to_data_uri(
                    bars_figure(
                        bars,
                        title="Accuracy with a planted cue",
                        colours={"no cue": _GREY, "cue aligned": _GREEN, "cue conflicting": _RED},
                    )
                ),
                alt="accuracy with the cue aligned and conflicting",
            )
        )
    extra = sorted({k for r in rows_in.values() for k in r} - set(_CUE_KEYS))
    rows = [
        [
            name,
            text(r.get("kind")),
            num(r.get("n")),
            pct(r.get("clean_accuracy")),
            pct(r.get("aligned_accuracy")),
            pct(r.get("conflicting_accuracy")),
            num(_gap(r), 3),
            pct(r.get("cue_following")),
            *(value_cell(k, r.get(k)) for k in extra),
        ]
        for name, r in rows_in.items()
    ]
    blocks.append(
        Table.of(
            [
                "model",
                "cue",
                "images",
                "no cue",
                "cue aligned",
                "cue conflicting",
                "gap",
                "follows the cue",
                *(title(k) for k in extra),
            ],
            rows,
            caption="Accuracy with the cue aligned and conflicting; 'follows the cue': the "
            "conflicting images classified as the class the cue names",
        )
    )
    return blocks


# --------------------------------------------------------------------------- superpixels


def over_represented(
    row: Mapping[str, Any], *, min_ratio: float = OVER_RATIO, alpha: float = OVER_P
) -> bool:
    """Whether one attribute value's statistics ``{"class", "others", "ratio", "p"}`` meet the
    rule of older results of :func:`robustlens.bias.superpixel_statistics` (no ``p_shape``):
    ``ratio >= min_ratio`` and ``p < alpha`` (a missing ratio with ``others == 0`` counts as
    infinite). Current results use :func:`finding_kind`.

    Example:
        >>> over_represented({"class": 0.6, "others": 0.1, "ratio": 6.0, "p": 1e-5})
        True
        >>> over_represented({"class": 0.6, "others": 0.1, "ratio": 6.0, "p": 0.02})
        False
        >>> over_represented({"class": 0.6, "others": 0.1, "ratio": 6.0, "p": 0.02}, alpha=0.05)
        True
    """
    ratio, p = as_float(row.get("ratio")), as_float(row.get("p"))
    if ratio is None:
        share, others = as_float(row.get("class")), as_float(row.get("others"))
        ratio = math.inf if share and others == 0 else None
    return ratio is not None and p is not None and ratio >= min_ratio and p < alpha


def finding_kind(
    attribute: str,
    value: str,
    row: Mapping[str, Any],
    *,
    min_ratio: float = OVER_RATIO,
    level: float = OVER_P,
) -> str | None:
    """``"warning"``, ``"note"`` or ``None`` for one attribute value of a class, by the rule of
    :func:`robustlens.bias.superpixel_statistics` (``level`` is ``alpha / tests``): beyond the
    class's own objects means ``excess >= min_ratio`` and ``p_shape < level``; the mask's
    ``inside`` beyond them is a warning; any other value beyond them and unlike the other classes
    (``ratio >= min_ratio`` and ``p < level``) is a note. Rows without ``p_shape`` (older
    results) follow :func:`over_represented` and count as notes.

    Example:
        >>> row = {"class": 0.3, "others": 0.25, "ratio": 1.2, "p": 0.2, "excess": 7.4,
        ...        "p_shape": 1e-20, "expected": 0.04}
        >>> finding_kind("mask", "inside", row), finding_kind("position", "top-left", row)
        ('warning', None)
        >>> finding_kind("position", "top-left", {**row, "ratio": 3.0, "p": 1e-9})
        'note'
    """
    p_shape = as_float(row.get("p_shape"))
    if p_shape is None:
        old = over_represented(row, min_ratio=min_ratio, alpha=level)
        return "note" if old else None
    excess = as_float(row.get("excess"))
    share = as_float(row.get("class"))
    beyond = bool(share) and excess is not None and excess >= min_ratio and p_shape < level
    if not beyond:
        return None
    if attribute == "mask":
        return "warning" if value == "inside" else None
    return "note" if over_represented(row, min_ratio=min_ratio, alpha=level) else None


def _attribute_rows(
    classes: Mapping[str, Any], min_ratio: float, level: float, with_all: bool, shuffled: bool
) -> list[list[str]]:
    """The warnings and notes as table rows, class by class, most significant first (by
    ``p_shape``, then ``p``, as the producer orders its findings)."""
    out = []
    for cls, c in classes.items():
        found = []
        attributes = get_mapping(c, "attributes", f"bias.superpixels.classes[{cls!r}]") or {}
        for attr, values in attributes.items():
            where = f"bias.superpixels.classes[{cls!r}].attributes[{attr!r}]"
            if not isinstance(values, Mapping):
                raise ParameterError(
                    f"report: {where} must map values to {{class, others, ratio, p}}, got "
                    f"{values!r:.60}"
                )
            for val, row in values.items():
                if not isinstance(row, Mapping):
                    raise ParameterError(
                        f"report: {where}[{val!r}] must be {{class, others, ratio, p}}, got "
                        f"{row!r:.60}"
                    )
                kind = finding_kind(str(attr), str(val), row, min_ratio=min_ratio, level=level)
                if kind is None:
                    continue
                ratio, p = as_float(row.get("ratio")), as_float(row.get("p"))
                p_shape = as_float(row.get("p_shape"))
                cells = [
                    str(cls),
                    kind,
                    str(attr),
                    str(val),
                    pct(row.get("class")),
                    pct(row.get("others")),
                    *([pct(row.get("all"))] if with_all else []),
                    *([pct(row.get("expected"))] if shuffled else []),
                    "inf" if ratio is None else num(ratio, 3),
                    num(p, 2),
                    *([num(as_float(row.get("excess")), 3), num(p_shape, 2)] if shuffled else []),
                ]
                key = (p_shape if p_shape is not None else p, p)
                found.append((key, -(math.inf if ratio is None else ratio), cells))
        out += [cells for *_, cells in sorted(found, key=lambda t: (t[0], t[1]))]
    return out


def _superpixels(value: Mapping[str, Any]) -> list[Block]:
    where = "bias.superpixels"
    min_ratio = as_float(value.get("min_ratio"))
    alpha = as_float(value.get("alpha"))
    min_ratio = OVER_RATIO if min_ratio is None else min_ratio
    alpha = OVER_P if alpha is None else alpha
    tests = as_float(value.get("tests"))
    level = alpha / tests if tests else alpha
    bits = []
    if "images_per_class" in value:
        by = {"label": "their label", "pred": "the model's prediction"}
        chosen = (
            f", chosen by {by.get(str(value['target']), text(value['target']))}"
            if "target" in value
            else ""
        )
        bits.append(f"up to {num(value['images_per_class'])} images per class{chosen}")
    if "k" in value:
        bits.append(f"the top {num(value['k'])} superpixels of each")
    if value.get("data"):
        bits.append(text(value["data"]))
    intro = (
        "LIME explains many images of each class"
        + (f" ({'; '.join(bits)})" if bits else "")
        + ". Each top superpixel is described by simple attributes (position, brightness, size, "
        "overlap with a mask) and their frequencies are compared with those of the other "
        "classes' top superpixels"
    )
    if tests:
        fg = as_float(value.get("foreground"))
        fg_text = f" (hiding them changes their pixels by at least {fg:g})" if fg else ""
        blocks: list[Block] = [
            Heading("Superpixel statistics over a class", id="bias-superpixels"),
            Paragraph(
                intro + " and with what the class's own objects offer: the shares expected if "
                "each image's top superpixels were drawn at random from its foreground "
                f"superpixels{fg_text} (Stock and Cisse 2018: the evidence is the object, or a "
                "context the model learnt instead)."
            ),
            Paragraph(
                f"Rule: a value counts beyond the class's objects when it is at least "
                f"{min_ratio:g} times as frequent as expected (excess) with p_shape < {alpha:g} / "
                f"{num(tests)} tests = {level:.1e} (Bonferroni: under the shuffle, a false "
                f"finding anywhere in the run has a chance below {alpha:g}). A warning is the "
                "mask's region beyond the class's objects: the model looks at the region you "
                "named. A note is any other value beyond the class's objects that is also at "
                f"least {min_ratio:g} times as frequent as in the other classes (p < "
                f"{level:.1e}): where the class's evidence concentrates. A position alone cannot "
                "tell a part of the object (a boot's heel) from a mark at a fixed place: look at "
                "the examples, and test a suspected region by giving it as the mask."
            ),
        ]
    else:  # older results: one comparison, with the other classes
        blocks = [
            Heading("Superpixel statistics over a class", id="bias-superpixels"),
            Paragraph(
                intro + ". A value over-represented in one class (at least "
                f"{min_ratio:g} times as frequent, p < {alpha:g}) points at what the model looks "
                "at there: the object, or a spurious context (Stock and Cisse 2018)."
            ),
        ]
    flags = value.get("flags") or []
    notes = value.get("notes") or []
    for key, items in (("flags", flags), ("notes", notes)):
        if isinstance(items, str) or not isinstance(items, Sequence):
            raise ParameterError(
                f"report: {where}.{key} must be a list of strings, got {items!r:.60}"
            )
    if flags:
        blocks.append(Bullets.of([text(f) for f in flags], "warn"))
    elif "flags" in value:
        said = (
            "No warning: no class's top superpixels favour the masked region beyond what its "
            "own objects explain."
            if _has_mask(value)
            else "No warning: no mask (a region to test as a cue) was given."
        )
        blocks.append(Paragraph(said, cls="ok"))
    if notes:
        blocks.append(Paragraph("Notes: where a class's evidence concentrates."))
        blocks.append(Bullets.of([text(n) for n in notes]))
    classes = get_mapping(value, "classes", where) or {}
    for cls, c in classes.items():
        if not isinstance(c, Mapping):
            raise ParameterError(
                f"report: {where}.classes[{cls!r}] must be an object {{n_images, attributes, "
                f"mask_overlap}}, got {c!r:.60}"
            )
    rows_in = [
        row
        for c in classes.values()
        for values in (c.get("attributes") or {}).values()
        if isinstance(values, Mapping)
        for row in values.values()
        if isinstance(row, Mapping)
    ]
    with_all = any("all" in row for row in rows_in)
    shuffled = any("p_shape" in row for row in rows_in)
    found = _attribute_rows(classes, min_ratio, level if tests else alpha, with_all, shuffled)
    if classes:
        mask = any(c.get("mask_overlap") is not None for c in classes.values())
        n_top = any("n_top" in c for c in classes.values())
        counts = {str(cls): [0, 0] for cls in classes}
        for r in found:
            counts[r[0]][0 if r[1] == "warning" else 1] += 1
        blocks.append(
            Table.of(
                [
                    "class",
                    "images",
                    *(["top superpixels"] if n_top else []),
                    *(["mask overlap of the top superpixels"] if mask else []),
                    "warnings",
                    "notes",
                ],
                [
                    [
                        str(cls),
                        num(c.get("n_images")),
                        *([num(c.get("n_top"))] if n_top else []),
                        *([pct(c.get("mask_overlap"))] if mask else []),
                        str(counts[str(cls)][0]),
                        str(counts[str(cls)][1]),
                    ]
                    for cls, c in classes.items()
                ],
                caption="Per class; mask overlap: the mean fraction of the top superpixels "
                "inside the mask"
                if mask
                else "Per class",
            )
        )
    if found:
        blocks.append(
            Table.of(
                [
                    "class",
                    "kind",
                    "attribute",
                    "value",
                    "share in the class",
                    "share in the other classes",
                    *(["share among all its superpixels"] if with_all else []),
                    *(["share expected from its objects"] if shuffled else []),
                    "ratio",
                    "p",
                    *(["excess", "p_shape"] if shuffled else []),
                ],
                found,
                caption="Warnings and notes among the attribute values of the top superpixels "
                + (
                    f"(ratios >= {min_ratio:g}, p-values < {level:.1e})"
                    if tests
                    else f"(ratio >= {min_ratio:g} and p < {alpha:g})"
                )
                + ", most significant first",
            )
        )
    elif classes:
        blocks.append(
            Paragraph(
                "No attribute value of any class passes the rule"
                + (f" (p-values < {level:.1e})." if tests else f" (p < {alpha:g}).")
            )
        )
    examples = get_mapping(value, "examples", where) or {}
    shown = {str(k): _records(v, f"{where}.examples[{k!r}]") for k, v in examples.items()}
    shown = {k: v for k, v in shown.items() if v}
    if shown:
        blocks.append(
            Image(
                figure_to_data_uri(superpixel_examples_figure(shown)),
                alt="examples per class with their top superpixels outlined",
                caption="Examples per class, their top superpixels outlined in yellow.",
            )
        )
    rest = {k: v for k, v in value.items() if k not in _SUPERPIXEL_KEYS}
    if rest:
        blocks += render_value(rest, where)
    return blocks


def _has_mask(value: Mapping[str, Any]) -> bool:
    classes = value.get("classes")
    return isinstance(classes, Mapping) and any(
        isinstance(c, Mapping) and c.get("mask_overlap") is not None for c in classes.values()
    )


# --------------------------------------------------------------------------- labels


def _ambiguous(value: Mapping[str, Any]) -> list[Block]:
    where = "bias.ambiguous"
    items = _records(value.get("items") or [], f"{where}.items")
    rows = []
    in_top2 = 0
    for i, item in enumerate(items):
        pair, probs = item.get("classes"), item.get("probs")
        if (
            not isinstance(pair, Sequence)
            or isinstance(pair, str)
            or len(pair) != 2
            or not isinstance(probs, Sequence)
            or len(probs) != 2
            or not all(is_number(p) for p in probs)
        ):
            raise ParameterError(
                f"report: {where}.items[{i}] needs 'classes' (the two most likely class names, "
                f"top first) and 'probs' (their two probabilities), got {pair!r:.40} and "
                f"{probs!r:.40}"
            )
        hit = text(item.get("label")) in (str(pair[0]), str(pair[1]))
        in_top2 += hit
        rows.append(
            [
                num(item.get("index")),
                str(pair[0]),
                pct(probs[0]),
                str(pair[1]),
                pct(probs[1]),
                text(item.get("label")),
                "yes" if hit else "no",
            ]
        )
    of = f" of the {num(value['n'])} test images" if "n" in value else ""
    blocks: list[Block] = [Heading("Guess the class", id="bias-ambiguous")]
    if not items:
        blocks.append(Paragraph(f"The model hesitates between two classes on none{of}."))
    else:
        blocks.append(
            Paragraph(
                f"The {len(items)} images{of} on which the model hesitates most between two "
                "classes (close top probabilities that together hold most of the mass), most "
                f"ambiguous first; the true label is one of the two for {in_top2} of them. As in "
                "the lecture's game, guess the class before reading the label: would a person "
                "do better?"
            )
        )
    with_image = [it for it in items if it.get("image") is not None]
    for start in range(0, len(with_image), AMBIGUOUS_PER_FIGURE):
        chunk = with_image[start : start + AMBIGUOUS_PER_FIGURE]
        blocks.append(
            Image(
                figure_to_data_uri(ambiguous_figure(chunk)),
                alt=f"ambiguous images {start + 1} to {start + len(chunk)}",
                caption="Titles: top class (probability) / second class (probability), then the "
                "true label (in red when it is neither).",
            )
        )
    if rows:
        blocks.append(
            Table.of(
                [
                    "image",
                    "top class",
                    "probability",
                    "second class",
                    "probability",
                    "true label",
                    "label in the two",
                ],
                rows,
                caption="Ambiguous images",
            )
        )
    extra = [
        {"index": it.get("index"), **{k: v for k, v in it.items() if k not in _AMBIGUOUS_ITEM_KEYS}}
        for it in items
        if set(it) - _AMBIGUOUS_ITEM_KEYS
    ]
    rest = {k: v for k, v in value.items() if k not in ("n", "items")}
    if extra:
        rest["items"] = extra
    if rest:
        blocks += render_value(rest, where)
    return blocks


def within_group_share(class_accuracy: float, group_accuracy: float) -> float | None:
    """Share of the mistakes between classes that stay inside the true class's group:
    ``(group accuracy - class accuracy) / (1 - class accuracy)``; ``None`` without mistakes.

    Example:
        >>> round(within_group_share(0.8, 0.95), 6)
        0.75
    """
    if class_accuracy >= 1.0:
        return None
    return (group_accuracy - class_accuracy) / (1.0 - class_accuracy)


def _hierarchy(value: Mapping[str, Any]) -> list[Block]:
    where = "bias.hierarchy"
    levels = get_mapping(value, "levels", where) or {}
    groups = value.get("groups") or []
    if isinstance(groups, str) or not isinstance(groups, Sequence):
        raise ParameterError(f"report: {where}.groups must be a list of names, got {groups!r:.60}")
    groups = [str(g) for g in groups]
    blocks: list[Block] = [Heading("Mistakes within or across groups", id="bias-hierarchy")]
    acc = {str(k): as_float(v) for k, v in levels.items()}
    ac, ag = acc.get("classes"), acc.get("groups")
    if ac is not None and ag is not None:
        share = within_group_share(ac, ag)
        named = f"the {len(groups)} groups of similar classes ({', '.join(groups)})"
        on = f" on {num(value['n'])} images" if "n" in value else ""
        sentence = (
            f"Accuracy{on} is {pct(ac)} over the classes and {pct(ag)} over "
            f"{named if groups else 'groups of similar classes'}: "
        )
        if share is None:
            sentence += "no mistake to analyse."
        else:
            sentence += (
                f"{pct(share)} of the mistakes confuse two classes of one group (a shirt for a "
                f"T-shirt), {pct(1 - share)} cross groups. A flat accuracy counts both kinds "
                "alike."
            )
        blocks.append(Paragraph(sentence))
    if acc:
        blocks.append(
            Table.of(
                ["level", "accuracy", "error rate"],
                [[title(k), pct(v), pct(None if v is None else 1 - v)] for k, v in acc.items()],
                caption="Accuracy at each level of the class hierarchy",
            )
        )
    confusion = value.get("confusion")
    if confusion is not None:
        m = np.asarray(confusion, dtype=np.float64)
        g = len(groups)
        if m.shape != (g, g):
            raise ShapeError(
                f"report: {where}.confusion must be ({g}, {g}) for the {g} groups, got shape "
                f"{m.shape}"
            )
        blocks.append(
            Image(
                figure_to_data_uri(confusion_figure(m.tolist(), groups, what="group")),
                alt="confusion matrix among groups",
                caption="Confusion among groups: rows are true groups, columns predicted groups "
                "(colour: fraction of the row).",
            )
        )
        rows = []
        for i, name in enumerate(groups):
            total = m[i].sum()
            off = m[i].copy()
            off[i] = -1.0
            j = int(off.argmax())
            rows.append(
                [
                    name,
                    num(total),
                    pct(m[i, i] / total if total else None),
                    f"{groups[j]} ({num(m[i, j])})" if off[j] > 0 else MISSING,
                    *(num(v) for v in m[i].tolist()),
                ]
            )
        blocks.append(
            Table.of(
                ["true group", "images", "kept in the group", "most often taken for (count)"]
                + [f"predicted {name}" for name in groups],
                rows,
                caption="Confusion among groups (counts)",
            )
        )
    rest = {k: v for k, v in value.items() if k not in _HIERARCHY_KEYS}
    if rest:
        blocks += render_value(rest, where)
    return blocks


# --------------------------------------------------------------------------- the section


def render(data: Mapping[str, Any]) -> tuple[list[Block], set[str]]:
    blocks: list[Block] = []
    shape = get_mapping(data, "shape_bias", "bias")
    if shape is not None or data.get("shape_bias_note") is not None:
        blocks += _shape_bias(shape, data.get("shape_bias_note"))
    parts = (
        ("corruptions", _corruptions),
        ("random_vs_adversarial", _random_vs_adversarial),
        ("cue_reliance", _cue_reliance),
        ("superpixels", _superpixels),
        ("ambiguous", _ambiguous),
        ("hierarchy", _hierarchy),
    )
    for key, part in parts:
        value = get_mapping(data, key, "bias")
        if value is not None:
            blocks += part(value)
    used = set(KEYS & set(data))
    for key, value in data.items():  # anything newer
        if key in used:
            continue
        blocks.append(Heading(title(key), id=f"bias-{slug(key)}"))
        blocks += render_value(value, f"bias.{key}")
        used.add(key)
    return blocks, used
