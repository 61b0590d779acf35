"""``render_html(results) -> str``: the audit's results as one self-contained HTML page.

The page has the verdicts in plain words at the top, the notes, the run's metadata, then one
section per entry of ``results["sections"]`` (known sections in the order ``clean``, ``whitebox``,
``blackbox``, ``defenses``, ``explanations``, ``bias``; unknown ones after them, drawn by the generic
fallback), each under a stable id (``id="clean"``, ...) linked from a table of contents.

Expected top level (``results.json`` as written by ``robustlens audit``)::

    {
      "model": str, "data": str,                   # shown in the title
      "notes": [str, ...],
      "verdicts": [{"level": "ok" | "warn" | "bad", "text": str}, ...],   # optional; else derived
      "meta": {"robustlens": str, "torch": str, "python": str, "device": str, "seed": int,
               "command": str, "seconds": float, ...},
      "sections": {name: {..., "seconds": float}, ...}
    }

Other top-level keys are shown as sections too, so nothing is lost.

Images: ``results.json`` names them by paths relative to its folder (``"x":
"images/whitebox/gallery-0-x.png"``, written by the audit; see :mod:`robustlens._images`). The
page reads those files, from ``root`` (:func:`write_report`: the folder it writes to, unless
told otherwise), before anything is drawn, and embeds the figures made from them like every other
figure; the section renderers only ever see pixels. Pixels given directly (nested lists, as
results files from before, or tensors, as ``run_suite`` returns them without ``out``) are drawn
as they are.

Self-contained: CSS inline, figures as PNG ``data:`` URIs, no script, no font or URL to fetch, and
a Content-Security-Policy that forbids loading anything else. Every string from the results is
escaped (jinja2 autoescape).

Example:
    >>> page = render_html({"model": "<b>m</b>", "sections": {"clean": {"accuracy": 0.5, "n": 2}}})
    >>> "&lt;b&gt;m&lt;/b&gt;" in page and "<b>m</b>" not in page
    True
    >>> 'id="clean"' in page
    True
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from robustlens._images import load_images
from robustlens.errors import ParameterError
from robustlens.report._format import seconds, slug, text, title
from robustlens.report.blocks import Cell, Page, Section, Table
from robustlens.report.sections import ORDER, render_section
from robustlens.report.sections.generic import cell
from robustlens.report.verdicts import derive_verdicts, read_verdicts

__all__ = ["RESERVED_IDS", "build_page", "render_html", "write_report"]

TOP_KEYS = frozenset({"model", "data", "notes", "verdicts", "meta", "sections"})
RESERVED_IDS = frozenset({"contents", "verdicts", "notes", "meta"})
"""Ids of the page's own parts; a section with one of these names gets a suffix."""

_META_NAMES = {
    "robustlens": "robustlens version",
    "torch": "torch version",
    "python": "Python",
    "seconds": "total time",
}


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("robustlens.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _meta_table(meta: Mapping[str, Any], sections: tuple[Section, ...]) -> Table:
    rows = []  # left-aligned: versions such as 3.11 are not quantities
    for key, value in meta.items():
        shown = seconds(value) if key == "seconds" else cell(value)
        rows.append([Cell(_META_NAMES.get(key, title(key))), Cell(shown)])
    for sec in sections:
        if sec.seconds:
            rows.append([Cell(f"time: {sec.title}"), Cell(sec.seconds)])
    return Table.of(["field", "value"], rows, caption="Versions, settings and durations")


def _unique(name: str, taken: set[str]) -> str:
    base = slug(name)
    candidate, i = base, 2
    while candidate in taken or candidate in RESERVED_IDS:
        candidate, i = f"{base}-{i}", i + 1
    taken.add(candidate)
    return candidate


def build_page(results: Mapping[str, Any], *, root: str | Path | None = None) -> Page:
    """Everything the template shows, formatted (see the module docstring for ``results``).

    ``root`` is the folder of ``results.json``, which its image paths are relative to (needed
    only when the results name image files).
    """
    if not isinstance(results, Mapping):
        raise ParameterError(
            "render_html: 'results' must be a dict (the audit's results.json loaded with "
            f"json.load), got {type(results).__name__}"
        )
    results = load_images(results, root, where="render_html")
    sections_in = results.get("sections") or {}
    if not isinstance(sections_in, Mapping):
        raise ParameterError(
            f"render_html: results['sections'] must be a dict of sections, got "
            f"{type(sections_in).__name__}"
        )
    meta = results.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise ParameterError(f"render_html: results['meta'] must be a dict, got {meta!r:.80}")
    notes = results.get("notes") or []
    if isinstance(notes, str) or not isinstance(notes, list):
        notes = [notes]
    everything = dict(sections_in)
    for key, value in results.items():  # unknown top-level entries: shown, not dropped
        if key not in TOP_KEYS:
            everything[key if key not in everything else f"{key} (top level)"] = value
    names = [n for n in ORDER if n in everything] + [n for n in everything if n not in ORDER]
    taken: set[str] = set()
    sections = tuple(
        render_section(name, everything[name], section_id=_unique(name, taken)) for name in names
    )
    given = results.get("verdicts")
    model, data = results.get("model"), results.get("data")
    audited = model if isinstance(model, str) else None  # findings are about this model only
    verdicts = (
        read_verdicts(given) if given is not None else derive_verdicts(sections_in, model=audited)
    )
    heading = "robustlens audit" + (f": {text(model)}" if model is not None else "")
    subtitle = ", ".join(
        s
        for s in (
            f"model {text(model)}" if model is not None else "",
            f"data {text(data)}" if data is not None else "",
            f"{len(sections)} sections",
        )
        if s
    )
    return Page(
        title=heading,
        subtitle=subtitle,
        verdicts=tuple(verdicts),
        notes=tuple(text(n) for n in notes),
        meta=_meta_table(meta, sections),
        sections=sections,
    )


def render_html(results: Mapping[str, Any], *, root: str | Path | None = None) -> str:
    """The report of ``results`` (the dict of ``results.json``) as one self-contained HTML page;
    its image files are read from ``root``, the folder of ``results.json``."""
    page = build_page(results, root=root)
    return _environment().get_template("report.html.j2").render(page=page)


def write_report(
    results: Mapping[str, Any], out_dir: str | Path, *, root: str | Path | None = None
) -> Path:
    """Write ``out_dir/index.html`` (creating ``out_dir``) and return its path.

    The image files the results name are read from ``root``, by default ``out_dir`` (where
    ``robustlens audit`` writes ``results.json``, its ``images/`` and the page).

    Example:
        >>> import json, tempfile
        >>> results = {"model": "m", "sections": {"clean": {"accuracy": 0.9, "n": 10}}}
        >>> path = write_report(json.loads(json.dumps(results)), tempfile.mkdtemp())
        >>> path.name, "Clean accuracy is 90.0%" in path.read_text(encoding="utf-8")
        ('index.html', True)
    """
    out = Path(out_dir)
    html = render_html(results, root=out if root is None else root)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(html, encoding="utf-8")
    return path
