"""The audit's verdicts in plain words: the findings at the top of the report.

``results["verdicts"]`` (a list of ``{"level": "ok" | "warn" | "bad", "text": str}``) is shown as
given. Without it, :func:`derive_verdicts` writes them from the sections. Every finding is about the
audited model (a measurement of another model, such as a reference shape bias, is left to its
section), follows from numbers shown in the report, and states the threshold that chose its word
and level in its own sentence. Which findings appear depends only on which measurements the
results hold, never on their values: values set the level and the words, so a full audit and a
``--quick`` one give the same findings for the same numbers. The rules (levels are a reading aid;
the numbers are in the sections):

* clean accuracy per population (:func:`clean_populations`): one accuracy for each set of images
  the audit measured, labelled with its image count (``ok``; ``bad`` when the accuracy on the test
  images is no better than chance, one over the number of classes, which says the model does not
  classify these images at all; not judged for a model mapped onto part of its classes, whose
  chance is one over its own, larger count); the weakest class, ``warn`` when it
  trails the overall accuracy by more than :data:`CLASS_GAP` (15 points), else ``ok``;
* white-box robust accuracy on the attacked images: ``ok`` when at least :data:`ROBUST_OK` (70%)
  of their clean accuracy survives the worst case, ``warn`` from :data:`ROBUST_WARN` (30%), else
  ``bad``; each warning of the evaluation (``warn``); each minimum-norm attack's median normalised
  L2: ``bad`` below :data:`MIN_NORM_BAD` (5%), ``warn`` below :data:`MIN_NORM_WARN` (15%);
* black-box attacks: ``bad`` when one fools at least :data:`BLACKBOX_BAD` (half) of the attacked
  images, ``warn`` from :data:`BLACKBOX_WARN` (10%);
* each defense's verdict (``ok`` when its claim holds, else ``bad``);
* explanations: ``warn`` when any LIME explanation carries a warning (the trust flags of
  :mod:`robustlens.explain`: weighted R2 below 0.5, surrogate more than one standard deviation
  from the model at the image, deletion AUC not 10% below random order's), else ``ok``;
* shape bias of the audited model: "mostly by shape" (``ok``) from ``0.5 + SHAPE_BAND`` (0.6),
  "mostly by texture" (``warn``) up to ``0.5 - SHAPE_BAND`` (0.4), "no clear preference" (``ok``)
  in between (:data:`SHAPE_BAND`); a shape bias measured on another model is not a finding;
* corruptions: ``warn`` when the mean accuracy over corruptions is more than :data:`NOISE_COST`
  (10 points) below clean accuracy on the same images;
* random against adversarial noise of the same norm: ``warn`` when the random noise alone costs
  more than :data:`NOISE_COST` of clean accuracy, else ``ok``, saying that the adversarial noise
  is not random when it leaves at least :data:`~robustlens.report.sections.bias.RANDOM_GAP` (30
  points) less accuracy than the random noise;
* the audited model's reliance on a planted cue: ``warn`` when accuracy with the cue aligned
  exceeds accuracy with it conflicting by more than :data:`~robustlens.report.sections.bias.CUE_GAP`
  (0.1), else ``ok``;
* superpixel statistics: ``warn`` with the number of classes whose top superpixels favour the
  masked region beyond what their own objects explain (the producer's calibrated rule,
  :func:`robustlens.bias.superpixel_statistics`: Bonferroni-corrected exact tests against
  shuffled explanations), ``ok`` when none does or no mask was given (notes on where classes'
  evidence concentrates are counted, not graded);
* class hierarchy: the share of mistakes that stay within a group of similar classes,
  ``(group accuracy - class accuracy) / (1 - class accuracy)``: ``ok`` from
  :data:`WITHIN_GROUP_OK` (half), else ``warn`` (most mistakes confuse dissimilar classes).

Example:
    >>> [v.text for v in derive_verdicts({"clean": {"accuracy": 0.9, "n": 50}})]
    ['Clean accuracy is 90.0% on the 50 test images.']
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, cast

from robustlens.errors import ParameterError
from robustlens.report._format import as_float, num, pct, text
from robustlens.report.blocks import Level, Verdict
from robustlens.report.sections.bias import (
    AUDITED,
    CUE_GAP,
    RANDOM_GAP,
    cue_rows,
    shape_bias_note,
    shape_bias_rows,
    within_group_share,
)

__all__ = [
    "BLACKBOX_BAD",
    "BLACKBOX_WARN",
    "CLASS_GAP",
    "MIN_NORM_BAD",
    "MIN_NORM_WARN",
    "NOISE_COST",
    "ROBUST_OK",
    "ROBUST_WARN",
    "SHAPE_BAND",
    "WITHIN_GROUP_OK",
    "clean_populations",
    "derive_verdicts",
    "read_verdicts",
    "shape_preference",
]

CLASS_GAP = 0.15
"""The weakest class warns when its accuracy trails the overall accuracy by more than this."""
ROBUST_OK = 0.7
"""Robust accuracy is ``ok`` when at least this fraction of the clean accuracy survives ..."""
ROBUST_WARN = 0.3
"""... ``warn`` from this fraction, ``bad`` below it."""
MIN_NORM_WARN = 0.15
"""A minimum-norm attack's median normalised L2 below this warns ..."""
MIN_NORM_BAD = 0.05
"""... and below this is ``bad``: half of the images fall to a change of a few percent."""
BLACKBOX_WARN = 0.1
"""A black-box attack that fools at least this fraction of the attacked images warns ..."""
BLACKBOX_BAD = 0.5
"""... and from this fraction is ``bad``."""
NOISE_COST = 0.1
"""Accuracy lost to corruptions or to random noise (a fraction) above which the verdict warns."""
SHAPE_BAND = 0.1
"""Half-width of the "no clear preference" band around a shape bias of 0.5: a model decides
mostly by shape from ``0.5 + SHAPE_BAND``, mostly by texture up to ``0.5 - SHAPE_BAND``."""
WITHIN_GROUP_OK = 0.5
"""Share of the mistakes that stay within a group of similar classes from which the verdict is ok."""
LEVELS = ("ok", "warn", "bad")


def read_verdicts(value: Any) -> list[Verdict]:
    """Validate ``results["verdicts"]``.

    Example:
        >>> read_verdicts([{"level": "bad", "text": "Not robust."}])
        [Verdict(level='bad', text='Not robust.')]
    """
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ParameterError(
            f"report: 'verdicts' must be a list of {{'level', 'text'}} objects, got {value!r:.80}"
        )
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, Mapping) or v.get("level") not in LEVELS or "text" not in v:
            raise ParameterError(
                f"report: verdicts[{i}] must be {{'level': one of {LEVELS}, 'text': str}}, "
                f"got {v!r:.80}"
            )
        out.append(Verdict(cast(Level, v["level"]), text(v["text"])))
    return out


def _grade(value: float, ok: float, warn: float) -> Level:
    return "ok" if value >= ok else "warn" if value >= warn else "bad"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _images(n: Any, what: str = "images") -> str:
    """``"the 1000 attacked images"``, or ``"the attacked images"`` when the count is unknown."""
    return f"the {num(n)} {what}" if n is not None else f"the {what}"


# --------------------------------------------------------------------------- populations


def clean_populations(sections: Mapping[str, Any]) -> list[tuple[str, int | None, float]]:
    """Every set of images whose clean accuracy the sections report, once each:
    ``(what, image count, clean accuracy)``, the audit's test images first.

    Example:
        >>> clean_populations({"clean": {"accuracy": 0.937, "n": 10000},
        ...                    "whitebox": {"evaluation": {"clean_accuracy": 0.933, "n": 1000}}})
        [('test images', 10000, 0.937), ('attacked images (white-box)', 1000, 0.933)]
    """

    def count(value: Any) -> int | None:
        number = as_float(value)
        return None if number is None else int(number)

    out: list[tuple[str, int | None, float]] = []

    def add(what: str, n: Any, accuracy: Any) -> None:
        acc = as_float(accuracy)
        if acc is not None:
            out.append((what, count(n), acc))

    clean, wb = _mapping(sections.get("clean")), _mapping(sections.get("whitebox"))
    bias = _mapping(sections.get("bias"))
    add("test images", clean.get("n"), clean.get("accuracy"))
    ev = _mapping(wb.get("evaluation"))
    add("attacked images (white-box)", ev.get("n", wb.get("n")), ev.get("clean_accuracy"))
    min_norm = _mapping(wb.get("min_norm"))
    first = next((_mapping(v) for v in min_norm.values() if isinstance(v, Mapping)), {})
    add(
        "images of the minimum-norm attacks",
        first.get("n", wb.get("min_norm_n")),
        first.get("clean_accuracy"),
    )
    ex = _mapping(sections.get("explanations"))
    if as_float(ex.get("correct")) is not None and as_float(ex.get("n")):
        add("explained images", ex.get("n"), float(ex["correct"]) / float(ex["n"]))
    corr = _mapping(bias.get("corruptions"))
    add("images of the corruption test", corr.get("n"), corr.get("clean_accuracy"))
    rva = _mapping(bias.get("random_vs_adversarial"))
    add("images of the noise test", rva.get("n"), rva.get("clean_accuracy"))
    cue = bias.get("cue_reliance")
    if isinstance(cue, Mapping):
        row = cue_rows(cue).get(AUDITED)
        if row is not None:
            add("images of the planted-cue test", row.get("n"), row.get("clean_accuracy"))
    return out


def _clean(sections: Mapping[str, Any]) -> list[Verdict]:
    sec = _mapping(sections.get("clean"))
    pops = clean_populations(sections)
    out: list[Verdict] = []
    if pops:
        (what, n, acc), *rest = pops
        if what == "test images":
            said = f"Clean accuracy is {pct(acc)} on {_images(n, 'test images')}"
        else:
            said, rest = "Clean accuracy", pops
        if rest:
            parts = [f"{pct(a)} on {_images(m, w)}" for w, m, a in rest]
            said += ("; " if what == "test images" else ": ") + "; ".join(parts)
        # Chance is one over the classes the model chooses from; a model mapped onto some of its
        # classes (an "(other)" column for the rest) chooses from more than the data set has.
        names = list(sec.get("per_class") or {})
        classes = 0 if "(other)" in names else len(names)
        level: Level = "ok"
        if what == "test images" and classes >= 2 and acc is not None and acc <= 1 / classes:
            level = "bad"
            said += (
                f". That is no better than chance ({pct(1 / classes)} for {classes} classes): the "
                "model does not classify these images, so the other findings describe a broken "
                "set-up; check the weights, the preprocessing and the class mapping"
            )
        out.append(Verdict(level, said + "."))
    overall = as_float(sec.get("accuracy"))
    per_class = {k: as_float(v) for k, v in (sec.get("per_class") or {}).items()}
    known = {k: v for k, v in per_class.items() if v is not None}
    if known and overall is not None:
        worst = min(known, key=lambda k: known[k])
        gap = overall - known[worst]
        out.append(
            Verdict(
                "warn" if gap > CLASS_GAP else "ok",
                f"The weakest class, {worst}, is recognised {pct(known[worst])} of the time, "
                f"{100 * gap:.1f} points below the overall {pct(overall)} (a warning beyond "
                f"{100 * CLASS_GAP:.0f} points).",
            )
        )
    return out


# --------------------------------------------------------------------------- attacks


def _whitebox(sec: Mapping[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []
    ev = sec.get("evaluation") or {}
    robust, clean = as_float(ev.get("robust_accuracy")), as_float(ev.get("clean_accuracy"))
    norm = "L2" if sec.get("norm") == "l2" else "Linf"
    budget = f" at {norm} eps {num(sec['eps'])}" if "eps" in sec else ""
    if robust is not None and clean == 0:
        out.append(
            Verdict(
                "warn",
                f"No attacked image was classified correctly to begin with, so the white-box "
                f"attacks{budget} had nothing to break: robustness is not measured.",
            )
        )
    elif robust is not None:
        kept = robust / clean if clean else 0.0
        level = _grade(kept, ROBUST_OK, ROBUST_WARN)
        meaning = {
            "ok": "most correctly classified images resist the strongest attack",
            "warn": "many images can be fooled",
            "bad": "the model is not robust at this budget",
        }[level]
        on = _images(ev.get("n", sec.get("n")), "attacked images")
        was = f"from {pct(clean)} clean " if clean is not None else ""
        count = len(ev.get("attacks") or ev.get("per_attack") or [])
        out.append(
            Verdict(
                level,
                f"Under white-box attacks{budget}, accuracy on {on} falls {was}to {pct(robust)} "
                f"(worst case over {count} attacks): {meaning} (ok when at least "
                f"{ROBUST_OK:.0%} of the clean accuracy survives, bad below {ROBUST_WARN:.0%}).",
            )
        )
    out += [Verdict("warn", text(w)) for w in ev.get("warnings") or []]
    # Minimum-norm attacks: older results carry DeepFool alone under "deepfool".
    min_norm = dict(sec.get("min_norm") or {})
    if not min_norm and isinstance(sec.get("deepfool"), Mapping):
        min_norm = {"DeepFool": sec["deepfool"]}
    for name, summary in min_norm.items():
        l2n = as_float((summary or {}).get("median_l2_normalized"))
        if l2n is not None:
            out.append(
                Verdict(
                    _grade(l2n, MIN_NORM_WARN, MIN_NORM_BAD),
                    f"{text(name)} fools half of the attacked images by changing them by "
                    f"{pct(l2n)} of their L2 norm or less (a warning below "
                    f"{MIN_NORM_WARN:.0%}, bad below {MIN_NORM_BAD:.0%}).",
                )
            )
    return out


def _blackbox(sec: Mapping[str, Any]) -> list[Verdict]:
    out = []
    for name, row in (sec.get("attacks") or {}).items():
        rate = as_float(row.get("success_rate"))
        if rate is None:
            continue
        q = row.get("median_queries")
        queries = f" with a median of {num(q)} queries" if q is not None else ""
        level: Level = "bad" if rate >= BLACKBOX_BAD else "warn" if rate >= BLACKBOX_WARN else "ok"
        on = f" of {_images(sec['n'])}" if "n" in sec else " of the images"
        out.append(
            Verdict(
                level,
                f"The black-box attack {name} fools {pct(rate)}{on}{queries} (a warning from "
                f"{BLACKBOX_WARN:.0%}, bad from {BLACKBOX_BAD:.0%}).",
            )
        )
    return out


def _defenses(sec: Mapping[str, Any]) -> list[Verdict]:
    return [
        Verdict("ok" if audit.get("supported") else "bad", f"{name}: {text(audit['verdict'])}")
        for name, audit in sec.items()
        if isinstance(audit, Mapping) and "verdict" in audit
    ]


# --------------------------------------------------------------------------- explanations


def _explanations(sec: Mapping[str, Any]) -> list[Verdict]:
    items = [i for i in sec.get("items") or [] if isinstance(i, Mapping)]
    if not items:
        return []
    warned = sum(1 for i in items if i.get("warnings"))
    r2 = [float(i["r2"]) for i in items if as_float(i.get("r2")) is not None]
    fit = f" (median weighted R2 {statistics.median(r2):.2f})" if r2 else ""
    rule = (
        "flagged: weighted R2 below 0.5, a surrogate more than one standard deviation from the "
        "model at the image, a deletion AUC not 10% below random order's"
    )
    if warned:
        return [
            Verdict(
                "warn",
                f"{warned} of {len(items)} LIME explanations carry warnings{fit}: read them "
                f"before trusting their superpixels ({rule}).",
            )
        ]
    return [
        Verdict(
            "ok",
            f"None of the {len(items)} LIME explanations carries a warning{fit} ({rule}).",
        )
    ]


# --------------------------------------------------------------------------- biases


def shape_preference(score: float) -> tuple[str, Level]:
    """The words and level of a shape bias (see :data:`SHAPE_BAND`).

    Example:
        >>> [shape_preference(s)[0] for s in (0.39, 0.49, 0.61)]
        ['mostly by texture', 'no clear preference between shape and texture', 'mostly by shape']
    """
    if score >= 0.5 + SHAPE_BAND - 1e-12:
        return "mostly by shape", "ok"
    if score <= 0.5 - SHAPE_BAND + 1e-12:
        return "mostly by texture", "warn"
    return "no clear preference between shape and texture", "ok"


def _audited(
    rows: Mapping[str, Mapping[str, Any]], model: str | None, *, reference: bool = False
) -> dict[str, Mapping[str, Any]]:
    """The measurements of ``rows`` that are the audited model's: named ``"audited model"`` or
    after ``model``; without ``model``, a lone measurement, unless a note calls it a
    ``reference``."""
    if model is None and len(rows) == 1 and not reference:
        return dict(rows)
    return {n: r for n, r in rows.items() if n == AUDITED or (model is not None and n == model)}


def _who(name: str, model: str | None) -> str:
    return "The audited model" if name in (AUDITED, "model", model) else name


def _shape_bias(sec: Mapping[str, Any], model: str | None) -> list[Verdict]:
    shape = sec.get("shape_bias")
    if not isinstance(shape, Mapping):
        return []
    reference = shape_bias_note(sec.get("shape_bias_note")) is not None
    out = []
    for name, row in _audited(shape_bias_rows(shape), model, reference=reference).items():
        score = as_float(row.get("score"))
        if score is None:
            continue
        words, level = shape_preference(score)
        who = _who(name, model)
        out.append(
            Verdict(
                level,
                f"{who} has a shape bias of {score:.2f}: it decides {words} (mostly by shape "
                f"from {0.5 + SHAPE_BAND:.1f}, by texture up to {0.5 - SHAPE_BAND:.1f}; people: "
                "about 0.96).",
            )
        )
    return out


def _corruptions(sec: Mapping[str, Any]) -> list[Verdict]:
    corr = sec.get("corruptions")
    if not isinstance(corr, Mapping) or not corr.get("accuracy"):
        return []
    accs = [float(a) for v in corr["accuracy"].values() for a in v if a is not None]
    clean = as_float(corr.get("clean_accuracy"))
    if not accs or clean is None:
        return []
    mean = sum(accs) / len(accs)
    return [
        Verdict(
            "warn" if clean - mean > NOISE_COST else "ok",
            f"Common corruptions lower accuracy on {_images(corr.get('n'))} from {pct(clean)} to "
            f"{pct(mean)} on average over corruptions and severities (a warning beyond "
            f"{100 * NOISE_COST:.0f} points).",
        )
    ]


def _random_vs_adversarial(sec: Mapping[str, Any]) -> list[Verdict]:
    rva = sec.get("random_vs_adversarial")
    if not isinstance(rva, Mapping):
        return []
    adv, rand = as_float(rva.get("adversarial_accuracy")), as_float(rva.get("random_accuracy"))
    clean = as_float(rva.get("clean_accuracy"))
    if adv is None or rand is None:
        return []
    norm = {"l2": "L2", "linf": "Linf"}.get(str(rva.get("norm", "l2")), text(rva.get("norm")))
    same = f"random noise of the same {norm} norm as the {text(rva.get('attack', 'attack'))} "
    on = f" on {_images(rva['n'])}" if "n" in rva else ""
    rule = f" (a warning when random noise alone costs more than {100 * NOISE_COST:.0f} points)"
    if clean is not None and clean - rand > NOISE_COST:
        return [
            Verdict(
                "warn",
                f"{same[:1].upper()}{same[1:]}perturbations already lowers accuracy{on} from "
                f"{pct(clean)} to {pct(rand)} (adversarial noise: {pct(adv)}): the model is "
                f"fragile to noise of that size{rule}.",
            )
        ]
    lead = "Adversarial noise is not random: " if rand - adv >= RANDOM_GAP else ""
    was = f" (clean: {pct(clean)})" if clean is not None else ""
    said = (
        f"{same}perturbations leaves {pct(rand)} accuracy{on}{was}, the adversarial noise "
        f"{pct(adv)}{rule}."
    )
    if not lead:
        said = said[:1].upper() + said[1:]
    return [Verdict("ok", lead + said)]


def _cue_reliance(sec: Mapping[str, Any], model: str | None) -> list[Verdict]:
    cue = sec.get("cue_reliance")
    if not isinstance(cue, Mapping):
        return []
    out = []
    for name, row in _audited(cue_rows(cue), model).items():
        aligned, conflicting = (
            as_float(row.get("aligned_accuracy")),
            as_float(row.get("conflicting_accuracy")),
        )
        gap = as_float(row.get("gap"))
        if gap is None and aligned is not None and conflicting is not None:
            gap = aligned - conflicting
        if gap is None:
            continue
        kind = text(row.get("kind", "planted"))
        on = f" on {_images(row['n'])}" if "n" in row else ""
        numbers = (
            f"accuracy{on} {pct(aligned)} with the cue naming the true class, {pct(conflicting)} "
            f"with it naming another (gap {gap:.2f}; it follows the cue above {CUE_GAP:g})"
        )
        who = _who(name, model)
        if gap > CUE_GAP:
            out.append(Verdict("warn", f"{who} follows a planted {kind} cue: {numbers}."))
        else:
            out.append(Verdict("ok", f"{who} barely follows a planted {kind} cue: {numbers}."))
    return out


def _superpixels(sec: Mapping[str, Any]) -> list[Verdict]:
    sp = sec.get("superpixels")
    if not isinstance(sp, Mapping) or "flags" not in sp:
        return []
    flags = [text(f) for f in sp.get("flags") or []]
    notes = sp.get("notes") or []
    noted = f"; {len(notes)} notes say where classes' evidence concentrates" if notes else ""
    if "tests" not in sp:  # older results: flags against the other classes only
        if not flags:
            return [Verdict("ok", "Superpixel statistics flag no attribute value of any class.")]
        return [
            Verdict(
                "warn",
                f"Superpixel statistics flag {len(flags)} over-represented attribute values "
                f"among the top LIME superpixels (first: {flags[0]}): check that the model "
                "looks at the object and not at a spurious context.",
            )
        ]
    classes = _mapping(sp.get("classes"))
    masked = any(
        isinstance(c, Mapping) and c.get("mask_overlap") is not None for c in classes.values()
    )
    if flags:
        return [
            Verdict(
                "warn",
                f"Superpixel statistics: in {len(flags)} classes the top LIME superpixels lie "
                "inside the masked region beyond what the class's own objects explain (first: "
                f"{flags[0]}).",
            )
        ]
    if masked:
        said = (
            "No class's top LIME superpixels favour the masked region beyond what its own "
            f"objects explain{noted}."
        )
    else:
        said = (
            "Superpixel statistics raise no warning: no region was given to test as a cue (a "
            f"mask){noted}; a position alone cannot tell a part of the object from a mark."
        )
    return [Verdict("ok", said)]


def _hierarchy(sec: Mapping[str, Any]) -> list[Verdict]:
    h = sec.get("hierarchy")
    levels = h.get("levels") if isinstance(h, Mapping) else None
    if not isinstance(levels, Mapping):
        return []
    ac, ag = as_float(levels.get("classes")), as_float(levels.get("groups"))
    if ac is None or ag is None:
        return []
    share = within_group_share(ac, ag)
    if share is None:
        return []
    ok = share >= WITHIN_GROUP_OK
    meaning = "most are near misses" if ok else "most confuse dissimilar classes"
    return [
        Verdict(
            "ok" if ok else "warn",
            f"{pct(share)} of the mistakes stay within a group of similar classes (accuracy "
            f"{pct(ac)} over classes, {pct(ag)} over groups): {meaning} (ok from "
            f"{WITHIN_GROUP_OK:.0%}).",
        )
    ]


def _bias(sec: Mapping[str, Any], model: str | None) -> list[Verdict]:
    return [
        *_shape_bias(sec, model),
        *_corruptions(sec),
        *_random_vs_adversarial(sec),
        *_cue_reliance(sec, model),
        *_superpixels(sec),
        *_hierarchy(sec),
    ]


_RULES = {
    "whitebox": _whitebox,
    "blackbox": _blackbox,
    "defenses": _defenses,
    "explanations": _explanations,
}


def derive_verdicts(sections: Mapping[str, Any], *, model: str | None = None) -> list[Verdict]:
    """The findings of the known sections (see the module docstring for the rules).

    ``model`` is the audited model's name (``results["model"]``): a measurement named after it
    counts as the audited model's, as do those named ``"audited model"``; others are references
    for their section and give no finding.
    """
    out = _clean(sections)
    for name, rule in _RULES.items():
        sec = sections.get(name)
        if isinstance(sec, Mapping):
            out += rule(sec)
    bias = sections.get("bias")
    if isinstance(bias, Mapping):
        out += _bias(bias, model)
    return out
