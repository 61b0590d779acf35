"""The report's figures: pure functions from result values to :class:`matplotlib.figure.Figure`.

Figures are built with the object-oriented API (``Figure(...)``, never ``pyplot``), so they touch no
global state and need no display; PNG output goes through the Agg renderer.
:func:`figure_to_data_uri` turns a figure into the ``data:image/png;base64,...`` URI the HTML embeds.
Names from the results (class, attack, model names) reach matplotlib through :func:`label`, which
escapes ``$`` so a name is drawn as written, never parsed as mathtext.

matplotlib is imported inside the functions: ``import robustlens`` does not pay for it.

**Layout rules** (checked in a real browser by ``tests/test_report_browser.py``): a legend never
sits on the plotted data (it goes below the axes, :func:`legend_below`); numbers written on a heat
map are at least :data:`HEATMAP_FONT` points, in black or white, whichever contrasts more with
their cell (:func:`text_colour`). Each PNG carries its layout (:func:`figure_layout`: the smallest
text in pixels, the boxes of its axes and legends) in a ``tEXt`` chunk that :func:`png_layout`
reads back; the report uses it to keep every figure wide enough for its text to stay readable
(:data:`READABLE_TEXT_PX`) on a narrow screen (the figure scrolls instead of shrinking further).

Example:
    >>> fig = curves_figure(
    ...     [{"label": "PGD", "budgets": [0.0, 0.1], "accuracy": [0.9, 0.2]}],
    ...     xlabel="eps", title="PGD")
    >>> figure_to_data_uri(fig)[:22]
    'data:image/png;base64,'
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from robustlens._plotting import legend_below
from robustlens.errors import ParameterError, RangeError, ShapeError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "HEATMAP_FONT",
    "HUMAN_SHAPE_BIAS",
    "LAYOUT_KEY",
    "READABLE_TEXT_PX",
    "ambiguous_figure",
    "bars_figure",
    "confusion_figure",
    "contrast",
    "corruption_figure",
    "curves_figure",
    "defense_figure",
    "figure_layout",
    "figure_to_data_uri",
    "gallery_figure",
    "label",
    "legend_below",
    "outline",
    "perturbation_image",
    "png_layout",
    "readable_width",
    "shape_bias_figure",
    "success_vs_queries_figure",
    "superpixel_examples_figure",
    "text_colour",
    "to_image",
]

HUMAN_SHAPE_BIAS = 0.96
"""Shape bias of human observers on cue-conflict images (Geirhos et al. 2019, ICLR), about 0.96."""

_TITLE_CHARS = 24

#: Points of the numbers written on a heat map's cells (12.5 pixels at the report's 100 dpi).
HEATMAP_FONT = 9.0
#: Smallest height in CSS pixels that text inside a figure may shrink to on screen.
READABLE_TEXT_PX = 8.0
#: Keyword of the PNG ``tEXt`` chunk holding :func:`figure_layout`.
LAYOUT_KEY = "robustlens:layout"


def label(value: Any, limit: int | None = None) -> str:
    """``value`` as text matplotlib draws literally (``$`` escaped), cut to ``limit`` characters.

    Example:
        >>> label("a $x$ b"), label("Ankle boot", limit=5)
        ('a \\\\$x\\\\$ b', 'Ankl…')
    """
    s = str(value)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _luminance(rgb: Sequence[float]) -> float:
    """Relative luminance of an sRGB colour (WCAG 2)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: Sequence[float], b: Sequence[float]) -> float:
    """WCAG contrast ratio of two sRGB colours (1 to 21; 4.5 is the minimum for small text).

    Example:
        >>> round(contrast((0, 0, 0), (1, 1, 1)), 1)
        21.0
    """
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour(background: Sequence[float]) -> str:
    """``"black"`` or ``"white"``, whichever contrasts more with ``background`` (sRGB in [0, 1]).

    Example:
        >>> text_colour((0.0, 0.4, 0.2)), text_colour((1.0, 1.0, 0.8))
        ('white', 'black')
    """
    return (
        "black" if contrast(background, (0, 0, 0)) >= contrast(background, (1, 1, 1)) else "white"
    )


def figure_layout(fig: Figure, *, dpi: int = 100) -> dict[str, Any]:
    """Where things are in ``fig`` rendered at ``dpi``, in pixels from the image's top-left corner:
    ``{"size": [w, h], "text_px": smallest text height, "axes": [[x0, y0, x1, y1], ...],
    "legends": [[x0, y0, x1, y1], ...]}`` (axes without a frame, such as colour bars, included).

    Example:
        >>> fig = _figure(4, 3)
        >>> ax = fig.add_subplot()
        >>> _ = ax.plot([0, 1], [0, 1], label="a")
        >>> legend_below(fig, ax)
        >>> lay = figure_layout(fig)
        >>> lay["size"], lay["legends"][0][1] > lay["axes"][0][3]   # the legend below the plot
        ([400, 300], True)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    fig.set_dpi(dpi)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height

    def box(extent: Any) -> list[float]:
        return [
            round(float(extent.x0), 1),
            round(float(height - extent.y1), 1),
            round(float(extent.x1), 1),
            round(float(height - extent.y0), 1),
        ]

    sizes = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip():
            continue
        e = t.get_window_extent(renderer)
        if e.x1 < 0 or e.y1 < 0 or e.x0 > width or e.y0 > height:  # a tick label off the plot
            continue
        sizes.append(float(t.get_fontsize()) * dpi / 72)
    legends = list(fig.legends) + [lg for a in fig.axes if (lg := a.get_legend()) is not None]
    return {
        "size": [round(width), round(height)],
        "text_px": round(min(sizes), 2) if sizes else None,
        "axes": [box(a.get_window_extent(renderer)) for a in fig.axes if a.get_visible()],
        "legends": [box(lg.get_window_extent(renderer)) for lg in legends],
    }


def png_layout(png: bytes | str) -> dict[str, Any] | None:
    """The :func:`figure_layout` stored in a PNG (its bytes or a ``data:`` URI), else ``None``.

    Example:
        >>> png_layout(figure_to_data_uri(_figure(1, 1)))["size"]
        [100, 100]
    """
    data = base64.b64decode(png.split(",", 1)[1]) if isinstance(png, str) else png
    pos = 8  # after the signature
    key = LAYOUT_KEY.encode("latin-1") + b"\0"
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt" and body.startswith(key):
            layout: dict[str, Any] = json.loads(body[len(key) :].decode("latin-1"))
            return layout
        if kind in (b"IDAT", b"IEND"):
            return None  # matplotlib writes its text chunks before the pixels
        pos += 12 + length
    return None


def readable_width(layout: Mapping[str, Any] | None) -> int | None:
    """The narrowest on-screen width (CSS pixels) at which the figure's smallest text is still
    :data:`READABLE_TEXT_PX` high: the figure scrolls rather than shrink below it.

    Example:
        >>> readable_width({"size": [600, 380], "text_px": 11.1})
        433
    """
    if not layout or not layout.get("text_px") or not layout.get("size"):
        return None
    width = int(layout["size"][0])
    return min(width, math.ceil(width * READABLE_TEXT_PX / float(layout["text_px"])))


def figure_to_data_uri(fig: Figure, *, dpi: int = 100) -> str:
    """Render ``fig`` to PNG and return it as a ``data:`` URI; the figure is closed afterwards.
    The PNG carries :func:`figure_layout` (see :func:`png_layout`).

    Example:
        >>> from matplotlib.figure import Figure
        >>> uri = figure_to_data_uri(Figure(figsize=(1, 1)))
        >>> uri.startswith("data:image/png;base64,iVBORw0KGgo")
        True
    """
    buf = io.BytesIO()
    from_pyplot = getattr(fig.canvas, "manager", None) is not None
    try:
        layout = json.dumps(figure_layout(fig, dpi=dpi), separators=(",", ":"))
        fig.savefig(buf, format="png", dpi=dpi, metadata={LAYOUT_KEY: layout})
    finally:
        if from_pyplot:  # made by pyplot: release it
            import matplotlib.pyplot as plt

            plt.close(fig)
        fig.clear()
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- accuracy


def confusion_figure(
    confusion: Sequence[Sequence[float]], classes: Sequence[str], *, what: str = "class"
) -> Figure:
    """Heat map of a confusion matrix (rows: true class, columns: predicted), counts written in.

    Colours are row-normalised (the fraction of each true class), so small classes stay readable.
    ``what`` names the rows and columns in the axis labels (``"group"`` for groups of classes).

    Shape: confusion (K, K), classes (K,).
    """
    m = np.asarray(confusion, dtype=np.float64)
    k = len(classes)
    if m.ndim != 2 or m.shape != (k, k):
        raise ShapeError(
            f"confusion_figure: the confusion matrix must be ({k}, {k}) for {k} classes, "
            f"got shape {m.shape}"
        )
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = min(max(4.0, 0.55 * k + 2.5), 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = [label(c, _TITLE_CHARS) for c in classes]
    ax.set_xticks(range(k), ticks, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), ticks, fontsize=8)
    ax.set_xlabel(f"predicted {label(what)}")
    ax.set_ylabel(f"true {label(what)}")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:g}",
                        ha="center",
                        va="center",
                        fontsize=HEATMAP_FONT,
                        color=text_colour(tuple(im.to_rgba(frac[i, j]))),
                    )
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"fraction of the true {label(what)}")
    return fig


def curves_figure(
    curves: Sequence[Mapping[str, Any]],
    *,
    xlabel: str,
    title: str,
    step: bool = False,
) -> Figure:
    """Accuracy against budget, one line per curve ``{"label", "budgets", "accuracy"}``.

    ``step=True`` draws a step function (a minimum-norm attack's accuracy vs distance).
    """
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    for curve in curves:
        b = np.asarray(curve.get("budgets", []), dtype=np.float64)
        a = np.asarray(curve.get("accuracy", []), dtype=np.float64)
        if b.shape != a.shape or b.ndim != 1:
            raise ShapeError(
                f"curves_figure: curve {curve.get('label')!r} needs 'budgets' and 'accuracy' "
                f"lists of one length, got {b.shape} and {a.shape}"
            )
        name = label(curve.get("label", ""), 40)
        if step:
            ax.step(b, 100 * a, where="post", label=name)
        else:
            ax.plot(b, 100 * a, marker="o", label=name)
    ax.set_ylim(-2, 102)
    ax.set_xlabel(label(xlabel))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(label(title))
    ax.grid(alpha=0.3)
    legend_below(fig, ax)
    return fig


# --------------------------------------------------------------------------- images


def to_image(values: Any, *, where: str = "image") -> np.ndarray:
    """An image ``(C, H, W)`` (or ``(H, W)``) in [0, 1], as a nested list, an array or a CPU tensor,
    as an array ``(C, H, W)``, C in {1, 3}.

    Example:
        >>> to_image([[0.0, 1.0], [0.5, 0.5]]).shape
        (1, 2, 2)
    """
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3) or a.shape[1] < 1 or a.shape[2] < 1:
        raise ShapeError(
            f"{where}: an image must be a nested list of shape (C, H, W) with C = 1 or 3, "
            f"got shape {a.shape}"
        )
    if not np.isfinite(a).all():
        raise RangeError(f"{where}: the image has NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise RangeError(
            f"{where}: image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
            "store images in pixel space divided by 255"
        )
    return np.clip(a, 0.0, 1.0)


def perturbation_image(x: np.ndarray, x_adv: np.ndarray) -> tuple[np.ndarray, float]:
    """The perturbation ``x_adv - x`` magnified to fill [0, 1] around grey: ``(0.5 + g * d, g)``.

    ``g = 0.5 / max|d|`` (the same for every channel), so the largest change reaches black or
    white and zero stays mid-grey; ``g = 1`` when nothing changed.

    Shape: x, x_adv (C, H, W) -> (C, H, W), float.

    Example:
        >>> img, gain = perturbation_image(np.zeros((1, 2, 2)), np.full((1, 2, 2), 0.1))
        >>> float(img.max()), round(gain, 6)
        (1.0, 5.0)
    """
    if x.shape != x_adv.shape:
        raise ShapeError(
            f"perturbation_image: x and x_adv must have one shape, got {x.shape} and {x_adv.shape}"
        )
    d = x_adv - x
    peak = float(np.abs(d).max()) if d.size else 0.0
    gain = 0.5 / peak if peak > 0 else 1.0
    return np.clip(0.5 + gain * d, 0.0, 1.0), gain


def _show(ax: Axes, img: np.ndarray, title: str) -> None:
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.transpose(img, (1, 2, 0)), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def gallery_figure(items: Sequence[Mapping[str, Any]], *, per_row: int = 2) -> Figure:
    """Adversarial examples: clean image, adversarial image, perturbation magnified.

    Each item is ``{"label", "clean_pred", "adv_pred", "x", "x_adv", ...}`` with ``x`` and
    ``x_adv`` images ``(C, H, W)`` in [0, 1] (see :func:`to_image`); ``per_row`` items share a row
    of panels.
    """
    if not items:
        raise ParameterError("gallery_figure: 'items' must hold at least one example, got none")
    if per_row < 1:
        raise ParameterError(f"gallery_figure: 'per_row' must be an int >= 1, got {per_row}")
    per_row = min(per_row, len(items))
    nrows = math.ceil(len(items) / per_row)
    fig = _figure(5.4 * per_row, 2.1 * nrows)
    axes = fig.subplots(nrows, 3 * per_row, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, item in enumerate(items):
        where = f"gallery item {i}"
        x = to_image(item.get("x"), where=where + " 'x'")
        x_adv = to_image(item.get("x_adv"), where=where + " 'x_adv'")
        delta, gain = perturbation_image(x, x_adv)
        r, c = divmod(i, per_row)
        row = axes[r, 3 * c : 3 * c + 3]
        for ax in row:
            ax.set_axis_on()
        n = _TITLE_CHARS - 6
        _show(
            row[0],
            x,
            f"true: {label(item.get('label'), n)}\npred: {label(item.get('clean_pred'), n)}",
        )
        _show(row[1], x_adv, f"adversarial\npred: {label(item.get('adv_pred'), n)}")
        _show(row[2], delta, f"perturbation\n\N{MULTIPLICATION SIGN}{gain:.3g}, grey = 0")
    return fig


def _panels(
    n: int, per_row: int, width: float, height: float, where: str
) -> tuple[Figure, list[Axes]]:
    """``n`` image panels in rows of ``per_row`` (spare panels hidden), each ``width x height``."""
    if n < 1:
        raise ParameterError(f"{where}: needs at least one image, got none")
    if isinstance(per_row, bool) or not isinstance(per_row, int) or per_row < 1:
        raise ParameterError(f"{where}: 'per_row' must be an int >= 1, got {per_row!r}")
    per_row = min(per_row, n)
    nrows = math.ceil(n / per_row)
    fig = _figure(width * per_row, height * nrows)
    axes = list(fig.subplots(nrows, per_row, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]


def _pair(item: Mapping[str, Any], key: str, where: str) -> tuple[Any, Any]:
    value = item.get(key)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ParameterError(
            f"{where}: {key!r} must be a list of two entries (the top class first), got "
            f"{value!r:.60}"
        )
    return value[0], value[1]


def ambiguous_figure(items: Sequence[Mapping[str, Any]], *, per_row: int = 5) -> Figure:
    """The images a model hesitates on, each titled ``top (p1) / second (p2)`` and its true label.

    Each item is ``{"classes": [top, second], "probs": [p1, p2], "label", "image"}`` with
    ``image`` ``(C, H, W)`` in [0, 1] (see :func:`to_image`). A true label outside the two classes is
    written in red.

    Example:
        >>> item = {"classes": ["Shirt", "Coat"], "probs": [0.48, 0.44], "label": "Coat",
        ...         "image": [[[0.0, 1.0], [1.0, 0.0]]]}
        >>> fig = ambiguous_figure([item, item])
        >>> fig.axes[0].get_title()
        'Shirt (0.48) /\\nCoat (0.44)\\ntrue: Coat'
    """
    fig, axes = _panels(len(items), per_row, 2.0, 2.35, "ambiguous_figure")
    n = _TITLE_CHARS - 8
    for i, (ax, item) in enumerate(zip(axes, items, strict=True)):
        where = f"ambiguous item {i}"
        img = to_image(item.get("image"), where=where + " 'image'")
        (top, second), (p1, p2) = _pair(item, "classes", where), _pair(item, "probs", where)
        _show(
            ax,
            img,
            f"{label(top, n)} ({float(p1):.2f}) /\n{label(second, n)} ({float(p2):.2f})\n"
            f"true: {label(item.get('label'), n)}",
        )
        if str(item.get("label")) not in (str(top), str(second)):
            ax.title.set_color("#b3261e")
    return fig


def outline(mask: np.ndarray, *, scale: int) -> np.ndarray:
    """The inner boundary of a 0/1 ``mask`` ``(H, W)`` upsampled ``scale`` times, as a bool array
    ``(scale H, scale W)``: outlines thinner than a pixel on small images.

    Example:
        >>> m = np.zeros((3, 3)); m[1, 1] = 1
        >>> edge = outline(m, scale=3)   # the pixel becomes a 3 x 3 block: its 8 border pixels
        >>> edge.shape, int(edge.sum()), bool(edge[4, 4])
        ((9, 9), 8, False)
    """
    from skimage.segmentation import find_boundaries

    up = np.repeat(np.repeat(np.asarray(mask) > 0.5, scale, axis=0), scale, axis=1)
    return np.asarray(find_boundaries(up, mode="inner") & up)


def superpixel_examples_figure(
    examples: Mapping[str, Sequence[Mapping[str, Any]]], *, per_row: int = 6
) -> Figure:
    """Example images per class with the union of their top superpixels outlined in yellow.

    ``examples[class]`` is a list of ``{"image": (C, H, W) in [0, 1] (see :func:`to_image`),
    "top": (H, W) of 0/1}``; panels are titled with the class, in the order given.

    Example:
        >>> top = [[0, 0], [0, 1]]
        >>> fig = superpixel_examples_figure({"Bag": [{"image": [[[0.2, 0.4], [0.6, 0.8]]],
        ...                                            "top": top}]})
        >>> fig.axes[0].get_title()
        'Bag'
    """
    flat = [(str(c), i, ex) for c, exs in examples.items() for i, ex in enumerate(exs)]
    fig, axes = _panels(len(flat), per_row, 1.7, 1.95, "superpixel_examples_figure")
    for ax, (name, i, ex) in zip(axes, flat, strict=True):
        where = f"superpixels example {i} of {name!r}"
        img = to_image(ex.get("image"), where=where + " 'image'")
        top = np.asarray(ex.get("top"), dtype=np.float64)
        if top.shape != img.shape[1:]:
            raise ShapeError(
                f"{where}: 'top' must be a 0/1 mask (H, W) = {img.shape[1:]} like the image, "
                f"got shape {top.shape}"
            )
        _show(ax, img, label(name, _TITLE_CHARS))
        h, w = top.shape
        f = max(1, math.ceil(128 / max(h, w)))
        overlay = np.zeros((h * f, w * f, 4))
        overlay[outline(top, scale=f)] = (1.0, 0.85, 0.0, 1.0)
        ax.imshow(overlay, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    return fig


# --------------------------------------------------------------------------- black box, defenses


def success_vs_queries_figure(attacks: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Success rate against the number of queries, one line per attack with a ``curve``.

    ``attacks[name]["curve"]`` is ``{"queries": [...], "success_rate": [...]}``.
    """
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    drawn = 0
    for name, row in attacks.items():
        curve = row.get("curve")
        if not isinstance(curve, Mapping):
            continue
        q = np.asarray(curve.get("queries", []), dtype=np.float64)
        s = np.asarray(curve.get("success_rate", []), dtype=np.float64)
        if q.shape != s.shape or q.ndim != 1:
            raise ShapeError(
                f"success_vs_queries_figure: the curve of {name!r} needs 'queries' and "
                f"'success_rate' lists of one length, got {q.shape} and {s.shape}"
            )
        ax.step(q, 100 * s, where="post", label=label(name, 40))
        drawn += 1
    positive = [
        v
        for row in attacks.values()
        if isinstance(row.get("curve"), Mapping)
        for v in row["curve"].get("queries", [])
        if v > 0
    ]
    if positive and max(positive) / min(positive) > 100:
        ax.set_xscale("log")
    ax.set_ylim(-2, 102)
    ax.set_xlabel("queries per image")
    ax.set_ylabel("success rate (%)")
    ax.set_title("Black-box attacks: success against queries")
    ax.grid(alpha=0.3)
    if drawn:
        legend_below(fig, ax)
    return fig


def bars_figure(
    values: Mapping[str, Mapping[str, float | None]],
    *,
    title: str,
    ylabel: str = "accuracy (%)",
    colours: Mapping[str, str] | None = None,
) -> Figure:
    """Bars of fractions drawn as percentages: ``values[group][measure]``, one colour per measure.

    Several groups give grouped bars with a legend of the measures; a single group puts the
    measures on the x axis (the group's name goes to the title). ``None`` leaves a bar out;
    ``colours`` maps measures to colours (others take the default cycle).

    Example:
        >>> fig = bars_figure({"m": {"clean": 0.9, "attacked": 0.1}}, title="t")
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['clean', 'attacked']
    """
    measures: list[str] = []
    for row in values.values():
        measures += [m for m in row if m not in measures]
    names = list(values)
    colours = colours or {}
    single = len(names) == 1
    fig = _figure(max(4.5 if single else 6.0, 1.2 + 0.6 * len(names) * max(len(measures), 1)), 3.6)
    ax = fig.add_subplot()
    width = 0.6 if single else 0.8 / max(len(measures), 1)
    for j, m in enumerate(measures):
        offset = 0.0 if single else (j - (len(measures) - 1) / 2) * width
        xs = [j if single else i + offset for i in range(len(names))]
        ys = [values[n].get(m) for n in names]
        pts = [(x, 100 * float(y)) for x, y in zip(xs, ys, strict=True) if y is not None]
        if not pts:
            continue
        bars = ax.bar(
            [p[0] for p in pts],
            [p[1] for p in pts],
            width,
            label=label(m),
            color=colours.get(m, f"C{j}"),
        )
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    if single:
        ax.set_xticks(range(len(measures)), [label(m, 30) for m in measures], fontsize=8)
        ax.set_title(f"{label(title)}: {label(names[0], 40)}", fontsize=10)
    else:
        ax.set_xticks(range(len(names)), [label(n, 30) for n in names], fontsize=8)
        ax.set_title(label(title), fontsize=10)
        legend_below(fig, ax)
    ax.set_ylim(0, 110)
    ax.set_ylabel(label(ylabel))
    ax.grid(axis="y", alpha=0.3)
    return fig


def defense_figure(accuracy: Mapping[str, Mapping[str, float | None]]) -> Figure:
    """Grouped bars: for each defense, accuracy per measure (``clean``, ``naive``, ``adaptive``...).

    ``accuracy[defense][measure]`` is a fraction; ``None`` leaves the bar out.
    """
    return bars_figure(
        accuracy,
        title="Accuracy under the naive and the adaptive attack",
        colours={"clean": "#9e9e9e", "naive": "#f0a030", "adaptive": "#c0392b"},
    )


# --------------------------------------------------------------------------- biases


def shape_bias_figure(
    scores: Mapping[str, float | None], references: Mapping[str, float] | None = None
) -> Figure:
    """Horizontal bars of shape bias (0: texture only, 1: shape only) per model, with the human
    reference (:data:`HUMAN_SHAPE_BIAS`, Geirhos et al. 2019) as a line, or, when the scores were
    measured on stimuli with published ``references`` (``{observer: score}``), those drawn as
    hatched grey bars beside the models'.

    Example:
        >>> fig = shape_bias_figure({"audited model": 0.3}, {"humans": 0.96, "ResNet-50": 0.22})
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['audited model', 'humans', 'ResNet-50']
    """
    names = [n for n, v in scores.items() if v is not None]
    values = [float(v) for v in scores.values() if v is not None]
    refs = dict(references or {})
    fig = _figure(6.0, 1.8 + 0.45 * max(len(names) + len(refs), 1))
    ax = fig.add_subplot()
    bars = ax.barh(range(len(names)), values, color="#4c72b0", label="measured here")
    ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ticks = [label(n, 30) for n in names]
    if refs:
        at = range(len(names), len(names) + len(refs))
        ref_bars = ax.barh(
            at,
            [float(v) for v in refs.values()],
            color="#d0d0d0",
            edgecolor="#707070",
            hatch="//",
            label="published reference (source in the text)",
        )
        ax.bar_label(ref_bars, fmt="%.2f", fontsize=8, padding=2)
        ticks += [label(n, 30) for n in refs]
    else:
        ax.axvline(HUMAN_SHAPE_BIAS, color="#c0392b", linestyle="--", label="humans (about 0.96)")
    ax.set_yticks(range(len(ticks)), ticks, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("shape bias = shape / (shape + texture) decisions")
    legend_below(fig, ax)
    ax.grid(axis="x", alpha=0.3)
    return fig


def corruption_figure(
    accuracy: Mapping[str, Sequence[float | None]],
    clean_accuracy: float | None = None,
    *,
    severities: Sequence[int] | None = None,
) -> Figure:
    """Heat map of accuracy per corruption (rows) and severity (columns), values written in.

    Shape: accuracy[corruption] has one value per entry of ``severities`` (default 1..S).

    Example:
        >>> fig = corruption_figure({"fog": [0.9, 0.4]}, severities=[1, 5])
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['1', '5']
    """
    names = list(accuracy)
    s = max((len(v) for v in accuracy.values()), default=0)
    ticks = [str(v) for v in severities] if severities is not None else []
    if severities is not None and len(ticks) != s:
        raise ShapeError(
            f"corruption_figure: one accuracy per severity: {len(ticks)} severities "
            f"{list(severities)} but up to {s} accuracies per corruption"
        )
    m = np.full((len(names), s), np.nan)
    for i, n in enumerate(names):
        row = [np.nan if v is None else float(v) for v in accuracy[n]]
        m[i, : len(row)] = row
    fig = _figure(2.8 + 0.8 * s, 1.2 + 0.4 * max(len(names), 1))
    ax = fig.add_subplot()
    im = ax.imshow(100 * m, cmap="RdYlGn", vmin=0.0, vmax=100.0, aspect="auto")
    for i in range(len(names)):
        for j in range(s):
            if not np.isnan(m[i, j]):
                ax.text(
                    j,
                    i,
                    f"{100 * m[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=HEATMAP_FONT,
                    color=text_colour(tuple(im.to_rgba(100 * m[i, j]))),
                )
    ax.set_xticks(range(s), ticks or [str(j + 1) for j in range(s)])
    ax.set_yticks(range(len(names)), [label(n, 30) for n in names], fontsize=8)
    ax.set_xlabel("severity")
    clean = "" if clean_accuracy is None else f" (clean {100 * clean_accuracy:.1f}%)"
    ax.set_title("Accuracy (%) under corruptions" + clean, fontsize=10)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    return fig
