"""The audit's self-contained HTML report: pure functions of the audit's results.

``render_html(results) -> str`` turns the dict of ``results.json`` into one HTML page (inline CSS,
figures embedded as PNG data URIs, no script, nothing fetched); ``write_report(results, out_dir)``
writes it to ``out_dir/index.html``. The report only reads the results: re-render it at any time
from a saved ``results.json`` (its images are PNG files beside it, read from ``root=``, by default
``out_dir``; see :mod:`robustlens.report.html`). Figures live in
:mod:`robustlens.report.figures`, one renderer per section (with the schema it expects) in
:mod:`robustlens.report.sections`.

Example:
    >>> import robustlens as rl
    >>> html = rl.report.render_html({"sections": {"clean": {"accuracy": 0.9, "n": 10}}})
    >>> html.startswith("<!DOCTYPE html>"), 'id="clean"' in html
    (True, True)
"""

from __future__ import annotations

from robustlens.report.html import build_page, render_html, write_report

__all__ = ["build_page", "render_html", "write_report"]
