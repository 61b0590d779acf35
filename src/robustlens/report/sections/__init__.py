"""One renderer per section of ``results.json``; each module's docstring gives the schema it reads.

A renderer maps the section's dict to ``(blocks, used_keys)``. :func:`render_section` adds the
generic fallback for every key the renderer did not use, so nothing is dropped, and renders sections
it does not know with the fallback alone.

Example:
    >>> sec = render_section("extra", {"answer": 42}, section_id="extra")
    >>> sec.title, [b.kind for b in sec.blocks]
    ('Extra', ['table'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from robustlens.report._format import seconds, title
from robustlens.report.blocks import Block, Heading, Section
from robustlens.report.sections import (
    bias,
    blackbox,
    clean,
    dataset_bias,
    defenses,
    explanations,
    generic,
    whitebox,
)

__all__ = ["ORDER", "RENDERERS", "render_section"]

Renderer = Callable[[Mapping[str, Any]], tuple[list[Block], set[str]]]

RENDERERS: dict[str, tuple[str, Renderer]] = {
    "clean": (clean.TITLE, clean.render),
    "whitebox": (whitebox.TITLE, whitebox.render),
    "blackbox": (blackbox.TITLE, blackbox.render),
    "defenses": (defenses.TITLE, defenses.render),
    "explanations": (explanations.TITLE, explanations.render),
    "bias": (bias.TITLE, bias.render),
    "dataset_bias": (dataset_bias.TITLE, dataset_bias.render),
}
"""Known sections: name -> (title, renderer)."""

ORDER = tuple(RENDERERS)
"""The order of known sections on the page; unknown sections follow in the order of the file."""


def render_section(name: str, data: Any, *, section_id: str) -> Section:
    """Render one section (known or not) under the HTML id ``section_id``."""
    if name in RENDERERS and isinstance(data, Mapping):
        heading, renderer = RENDERERS[name]
        blocks, used = renderer(data)
        rest = {k: v for k, v in data.items() if k not in used and k != "seconds"}
        if rest:
            blocks.append(Heading("Other results", level=4))
            blocks += generic.render_value(rest, name)
    else:
        heading = title(name)
        blocks = generic.render_value(
            {k: v for k, v in data.items() if k != "seconds"}
            if isinstance(data, Mapping)
            else data,
            name,
        )
    took = seconds(data.get("seconds")) if isinstance(data, Mapping) else ""
    return Section(id=section_id, title=heading, blocks=tuple(blocks), seconds=took)
