"""The audit's verdicts in plain words: the sentences at the top of the report.

``results["verdicts"]`` (a list of ``{"level": "ok" | "warn" | "bad", "text": str}``) is shown as
given. Without it, :func:`derive_verdicts` writes a few from the sections, with these rules of thumb
(levels are a reading aid; the numbers are in the sections):

* clean accuracy (``ok``), and the weakest class when it trails the overall accuracy by more than
  :data:`CLASS_GAP` (``warn``);
* white-box robust accuracy: ``ok`` when at least :data:`ROBUST_OK` of the clean accuracy survives
  the worst case, ``warn`` from :data:`ROBUST_WARN`, else ``bad``; each warning of the evaluation
  (``warn``); each minimum-norm attack's median normalised L2: ``bad`` below 0.05, ``warn`` below
  0.15;
* black-box attacks: ``bad`` when one fools half the attacked images, ``warn`` from 10%;
* each defense's verdict (``ok`` when its claim holds, else ``bad``);
* explanations with warnings (``warn``), else the median R2 of the local fits (``warn`` below 0.5);
* shape bias per model (``warn`` below 0.5: texture decides; ``ok`` and marked as a reference
  when ``bias.shape_bias_note`` says the shapes were measured on another model than the audited
  one); corruptions (``warn`` when the mean accuracy over corruptions is more than
  :data:`NOISE_COST` below clean);
* random against adversarial noise of the same norm: ``warn`` when the random noise alone costs
  more than :data:`NOISE_COST` of clean accuracy, else ``ok``, saying that the adversarial noise
  is not random when it leaves at least :data:`~robustlens.report.sections.bias.RANDOM_GAP` less
  accuracy than the random noise;
* each planted-cue measurement: ``warn`` when accuracy with the cue aligned exceeds accuracy with it
  conflicting by more than :data:`~robustlens.report.sections.bias.CUE_GAP` (the model follows
  the cue), else ``ok``;
* superpixel statistics: ``warn`` with the number of flags when the producer flagged
  over-represented attribute values, ``ok`` when it flagged none;
* class hierarchy: the share of mistakes that stay within a group of similar classes,
  ``(group accuracy - class accuracy) / (1 - class accuracy)``: ``ok`` from
  :data:`WITHIN_GROUP_OK`, else ``warn`` (most mistakes confuse dissimilar classes).

Example:
    >>> [v.text for v in derive_verdicts({"clean": {"accuracy": 0.9, "n": 50}})]
    ['Clean accuracy is 90.0% on 50 test images.']
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
    "CLASS_GAP",
    "NOISE_COST",
    "ROBUST_OK",
    "ROBUST_WARN",
    "WITHIN_GROUP_OK",
    "derive_verdicts",
    "read_verdicts",
]

CLASS_GAP = 0.15
ROBUST_OK = 0.7
ROBUST_WARN = 0.3
NOISE_COST = 0.1
"""Accuracy lost to corruptions or to random noise (a fraction) above which the verdict warns."""
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


def _clean(sec: Mapping[str, Any]) -> list[Verdict]:
    acc = as_float(sec.get("accuracy"))
    if acc is None:
        return []
    on = f" on {num(sec['n'])} test images" if "n" in sec else ""
    out = [Verdict("ok", f"Clean accuracy is {pct(acc)}{on}.")]
    per_class = {k: as_float(v) for k, v in (sec.get("per_class") or {}).items()}
    known = {k: v for k, v in per_class.items() if v is not None}
    if known:
        worst = min(known, key=lambda k: known[k])
        if known[worst] < acc - CLASS_GAP:
            out.append(
                Verdict(
                    "warn",
                    f"The weakest class, {worst}, is recognised only {pct(known[worst])} of the "
                    f"time ({100 * (acc - known[worst]):.0f} points below the overall accuracy).",
                )
            )
    return out


def _whitebox(sec: Mapping[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []
    ev = sec.get("evaluation") or {}
    robust, clean = as_float(ev.get("robust_accuracy")), as_float(ev.get("clean_accuracy"))
    norm = "L2" if sec.get("norm") == "l2" else "Linf"
    budget = f" at {norm} eps {num(sec['eps'])}" if "eps" in sec else ""
    if robust is not None:
        kept = robust / clean if clean else 0.0
        level = _grade(kept, ROBUST_OK, ROBUST_WARN)
        meaning = {
            "ok": "most correctly classified images resist the strongest attack",
            "warn": "many images can be fooled",
            "bad": "the model is not robust at this budget",
        }[level]
        was = f" from {pct(clean)} clean" if clean is not None else ""
        out.append(
            Verdict(
                level,
                f"Under white-box attacks{budget}, accuracy falls to {pct(robust)}{was} "
                f"(worst case over {len(ev.get('attacks') or ev.get('per_attack') or [])} "
                f"attacks): {meaning}.",
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
                    _grade(l2n, 0.15, 0.05),
                    f"{text(name)} fools half of the attacked images by changing them by "
                    f"{pct(l2n)} of their L2 norm or less.",
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
        level: Level = "bad" if rate >= 0.5 else "warn" if rate >= 0.1 else "ok"
        out.append(
            Verdict(level, f"The black-box attack {name} fools {pct(rate)} of the images{queries}.")
        )
    return out


def _defenses(sec: Mapping[str, Any]) -> list[Verdict]:
    return [
        Verdict("ok" if audit.get("supported") else "bad", f"{name}: {text(audit['verdict'])}")
        for name, audit in sec.items()
        if isinstance(audit, Mapping) and "verdict" in audit
    ]


def _explanations(sec: Mapping[str, Any]) -> list[Verdict]:
    items = [i for i in sec.get("items") or [] if isinstance(i, Mapping)]
    if not items:
        return []
    warned = sum(1 for i in items if i.get("warnings"))
    if warned:
        return [
            Verdict(
                "warn",
                f"{warned} of {len(items)} LIME explanations carry warnings: read them before "
                "trusting their superpixels.",
            )
        ]
    r2 = [float(i["r2"]) for i in items if i.get("r2") is not None]
    if not r2:
        return []
    med = statistics.median(r2)
    return [
        Verdict(
            "ok" if med >= 0.5 else "warn",
            f"LIME's local linear models fit with a median R2 of {med:.2f} over {len(items)} "
            "explanations.",
        )
    ]


def _shape_bias(sec: Mapping[str, Any]) -> list[Verdict]:
    shape = sec.get("shape_bias")
    if not isinstance(shape, Mapping):
        return []
    reference = shape_bias_note(sec.get("shape_bias_note")) is not None
    out = []
    for name, row in shape_bias_rows(shape).items():
        score = as_float(row.get("score"))
        if score is None:
            continue
        by = "shape" if score >= 0.5 else "texture"
        said = (
            f"{name} has a shape bias of {score:.2f}: it decides mostly by {by} (people: about "
            "0.96)."
        )
        if reference:
            out.append(Verdict("ok", f"For reference, not the audited model: {said}"))
        else:
            out.append(Verdict("ok" if score >= 0.5 else "warn", said))
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
            f"Common corruptions lower accuracy from {pct(clean)} to {pct(mean)} on average over "
            "corruptions and severities.",
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
    if clean is not None and clean - rand > NOISE_COST:
        return [
            Verdict(
                "warn",
                f"{same[:1].upper()}{same[1:]}perturbations already lowers accuracy from "
                f"{pct(clean)} to {pct(rand)} (adversarial noise: {pct(adv)}): the model is "
                "fragile to noise of that size.",
            )
        ]
    lead = "Adversarial noise is not random: " if rand - adv >= RANDOM_GAP else ""
    said = f"{same}perturbations leaves {pct(rand)} accuracy, the adversarial noise {pct(adv)}."
    if not lead:
        said = said[:1].upper() + said[1:]
    return [Verdict("ok", lead + said)]


def _cue_reliance(sec: Mapping[str, Any]) -> list[Verdict]:
    cue = sec.get("cue_reliance")
    if not isinstance(cue, Mapping):
        return []
    out = []
    for name, row in cue_rows(cue).items():
        aligned, conflicting = (
            as_float(row.get("aligned_accuracy")),
            as_float(row.get("conflicting_accuracy")),
        )
        gap = as_float(row.get("gap"))
        if gap is None and aligned is not None and conflicting is not None:
            gap = aligned - conflicting
        if gap is None:
            continue
        who = "The audited model" if name == AUDITED else name
        kind = text(row.get("kind", "planted"))
        numbers = (
            f"accuracy {pct(aligned)} with the cue naming the true class, {pct(conflicting)} with "
            f"it naming another (gap {gap:.2f})"
        )
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
    if not flags:
        return [
            Verdict(
                "ok",
                "No attribute of the top LIME superpixels (position, intensity, size, mask) is "
                "over-represented in any class.",
            )
        ]
    values = "value" if len(flags) == 1 else "values"
    return [
        Verdict(
            "warn",
            f"Superpixel statistics flag {len(flags)} over-represented attribute {values} among "
            f"the top LIME superpixels (first: {flags[0]}): check that the model looks at the "
            "object and not at a spurious context.",
        )
    ]


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
            f"{pct(ac)} over classes, {pct(ag)} over groups): {meaning}.",
        )
    ]


def _bias(sec: Mapping[str, Any]) -> list[Verdict]:
    return [
        *_shape_bias(sec),
        *_corruptions(sec),
        *_random_vs_adversarial(sec),
        *_cue_reliance(sec),
        *_superpixels(sec),
        *_hierarchy(sec),
    ]


_RULES = {
    "clean": _clean,
    "whitebox": _whitebox,
    "blackbox": _blackbox,
    "defenses": _defenses,
    "explanations": _explanations,
    "bias": _bias,
}


def derive_verdicts(sections: Mapping[str, Any]) -> list[Verdict]:
    """A few verdicts from the known sections (see the module docstring for the rules)."""
    out: list[Verdict] = []
    for name, rule in _RULES.items():
        sec = sections.get(name)
        if isinstance(sec, Mapping):
            out += rule(sec)
    return out
