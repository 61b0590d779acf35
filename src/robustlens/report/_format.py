"""Number and name formatting shared by the section renderers (one place, so tables agree).

Example:
    >>> pct(0.933), num(2.39703631401062), num(None), slug("Ensemble[APGD(eps=0.1)]")
    ('93.3%', '2.397', '-', 'ensemble-apgd-eps-0-1')
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from robustlens.errors import ParameterError

__all__ = [
    "MISSING",
    "as_float",
    "get_mapping",
    "is_number",
    "num",
    "pct",
    "seconds",
    "slug",
    "text",
    "title",
]

MISSING = "-"


def is_number(value: Any) -> bool:
    """True for int and float (not bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_float(value: Any) -> float | None:
    """``value`` as a float, ``None`` for ``None``; anything else that is not a number is an error."""
    if value is None:
        return None
    if not is_number(value):
        raise ParameterError(f"report: expected a number or null, got {value!r}")
    return float(value)


def pct(value: Any, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage: ``0.933`` -> ``'93.3%'``; ``None`` -> ``'-'``."""
    v = as_float(value)
    if v is None:
        return MISSING
    if math.isnan(v):
        return "nan"
    return f"{100 * v:.{digits}f}%"


def num(value: Any, digits: int = 4) -> str:
    """Any JSON scalar as short text: floats with ``digits`` significant digits, bools as yes/no."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def seconds(value: Any) -> str:
    """Seconds as ``'31.2 s'`` (``''`` when absent)."""
    v = as_float(value)
    return "" if v is None else f"{v:.1f} s"


def text(value: Any) -> str:
    """A name or message from the results as a string (``None`` -> ``'-'``)."""
    return MISSING if value is None else str(value)


def title(key: str) -> str:
    """A results key as a heading: ``'cue_reliance'`` -> ``'Cue reliance'``."""
    words = str(key).replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else "(unnamed)"


def slug(key: str) -> str:
    """A results key as an HTML id: lower case letters, digits and ``-`` only."""
    s = re.sub(r"[^a-z0-9]+", "-", str(key).lower()).strip("-")
    return s or "section"


def get_mapping(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    """``data[key]`` if present: it must then be an object (a dict)."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ParameterError(
            f"report: {where}.{key} must be an object (a dict), got {type(value).__name__}"
        )
    return value
