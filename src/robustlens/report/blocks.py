"""The report's document model: what a section renderer returns and the template lays out.

A section renderer turns one section of ``results.json`` into a list of blocks. Every block holds
finished text (numbers already formatted) and finished images (PNG data URIs), so the template only
places them: it loops and picks the tag by ``kind``, it never computes. Text is escaped by the
template (jinja2 autoescape), so blocks hold raw, untrusted strings.

Example:
    >>> t = Table.of(["class", "accuracy"], [["Coat", "88.0%"]])
    >>> t.rows[0][1].text, t.kind
    ('88.0%', 'table')
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

__all__ = [
    "Block",
    "Bullet",
    "Bullets",
    "Cell",
    "Heading",
    "Image",
    "Page",
    "Paragraph",
    "Pre",
    "Section",
    "Table",
    "Verdict",
]

Level = Literal["ok", "warn", "bad"]


@dataclass(frozen=True)
class Heading:
    """A sub-heading inside a section (``<h3>``, or ``<h4>`` with ``level=4``); ``id`` is an anchor."""

    text: str
    level: int = 3
    id: str = ""
    kind: ClassVar[str] = "heading"


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of plain text; ``cls`` (``"ok"``, ``"warn"``, ``"bad"`` or ``""``) colours it."""

    text: str
    cls: str = ""
    kind: ClassVar[str] = "paragraph"


@dataclass(frozen=True)
class Bullet:
    """One item of a :class:`Bullets` list; ``cls`` as for :class:`Paragraph`."""

    text: str
    cls: str = ""


@dataclass(frozen=True)
class Bullets:
    """A bulleted list."""

    items: tuple[Bullet, ...]
    kind: ClassVar[str] = "bullets"

    @classmethod
    def of(cls, texts: Sequence[str], item_cls: str = "") -> Bullets:
        return cls(tuple(Bullet(t, item_cls) for t in texts))


@dataclass(frozen=True)
class Cell:
    """One table cell: its text and a CSS class (``"num"`` right-aligns; ``"ok"``/``"bad"`` colour)."""

    text: str
    cls: str = ""


@dataclass(frozen=True)
class Table:
    """A table with a header row; ``caption`` says what the numbers are."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""
    kind: ClassVar[str] = "table"

    @classmethod
    def of(
        cls, columns: Sequence[str], rows: Sequence[Sequence[str | Cell]], caption: str = ""
    ) -> Table:
        """Build a table from strings; a string that reads as a number is right-aligned."""
        return cls(
            tuple(columns),
            tuple(tuple(c if isinstance(c, Cell) else Cell(c, _align(c)) for c in r) for r in rows),
            caption,
        )


def _align(text: str) -> str:
    s = text.strip().rstrip("%").replace("\N{MULTIPLICATION SIGN}", "").removesuffix(" s")
    try:
        float(s)
    except ValueError:
        return ""
    return "num"


@dataclass(frozen=True)
class Image:
    """A figure embedded as a ``data:image/png;base64,...`` URI, with alt text and a caption.

    ``width`` and ``height`` are the PNG's pixels and ``min_width`` the narrowest the page may
    draw it with its text still readable (:func:`robustlens.report.figures.readable_width`), both
    read from the layout the report's figures store in their PNG (``None`` for other images).
    """

    uri: str
    alt: str
    caption: str = ""
    kind: ClassVar[str] = "image"

    @functools.cached_property
    def layout(self) -> dict[str, Any] | None:
        from robustlens.report.figures import png_layout

        try:
            return png_layout(self.uri) if self.uri.startswith("data:image/png") else None
        except (ValueError, KeyError, struct.error):  # not a PNG we wrote: no layout
            return None

    @property
    def width(self) -> int | None:
        layout = self.layout
        return int(layout["size"][0]) if layout and layout.get("size") else None

    @property
    def height(self) -> int | None:
        layout = self.layout
        return int(layout["size"][1]) if layout and layout.get("size") else None

    @property
    def min_width(self) -> int | None:
        from robustlens.report.figures import readable_width

        return readable_width(self.layout)

    @property
    def text_px(self) -> float | None:
        """Height in pixels of the figure's smallest text at its natural size."""
        layout = self.layout
        return None if not layout or layout.get("text_px") is None else float(layout["text_px"])


@dataclass(frozen=True)
class Pre:
    """Preformatted text (a value the report has no better way to show)."""

    text: str
    kind: ClassVar[str] = "pre"


Block = Heading | Paragraph | Bullets | Table | Image | Pre


@dataclass(frozen=True)
class Section:
    """One section of the page: a stable ``id`` (the anchor), its title and its blocks."""

    id: str
    title: str
    blocks: tuple[Block, ...]
    seconds: str = ""


@dataclass(frozen=True)
class Verdict:
    """One sentence of the summary at the top of the page, with its level."""

    level: Level
    text: str


@dataclass(frozen=True)
class Page:
    """Everything the template needs, already formatted."""

    title: str
    subtitle: str
    verdicts: tuple[Verdict, ...]
    notes: tuple[str, ...]
    meta: Table
    sections: tuple[Section, ...] = field(default_factory=tuple)
