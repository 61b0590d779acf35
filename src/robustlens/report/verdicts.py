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
* shape bias per model (``warn`` below 0.5: texture decides); corruptions (``warn`` when the mean
  accuracy over corruptions is more than 10 points below clean).

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
from robustlens.report.sections.bias import shape_bias_rows

__all__ = ["CLASS_GAP", "ROBUST_OK", "ROBUST_WARN", "derive_verdicts", "read_verdicts"]

CLASS_GAP = 0.15
ROBUST_OK = 0.7
ROBUST_WARN = 0.3
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


def _bias(sec: Mapping[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []
    shape = sec.get("shape_bias")
    if isinstance(shape, Mapping):
        for name, row in shape_bias_rows(shape).items():
            score = as_float(row.get("score"))
            if score is None:
                continue
            by = "shape" if score >= 0.5 else "texture"
            out.append(
                Verdict(
                    "ok" if score >= 0.5 else "warn",
                    f"{name} has a shape bias of {score:.2f}: it decides mostly by {by} "
                    "(people: about 0.96).",
                )
            )
    corr = sec.get("corruptions")
    if isinstance(corr, Mapping) and corr.get("accuracy"):
        accs = [float(a) for v in corr["accuracy"].values() for a in v if a is not None]
        clean = as_float(corr.get("clean_accuracy"))
        if accs and clean is not None:
            mean = sum(accs) / len(accs)
            out.append(
                Verdict(
                    "warn" if clean - mean > 0.1 else "ok",
                    f"Common corruptions lower accuracy from {pct(clean)} to {pct(mean)} on "
                    "average over corruptions and severities.",
                )
            )
    return out


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
