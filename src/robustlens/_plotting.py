"""Plotting helpers shared by every layer that draws (``explain.plots``, ``report.figures``).

Example:
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(figsize=(4, 3), layout="constrained")
    >>> ax = fig.add_subplot()
    >>> _ = ax.plot([0, 1], [0, 1], label="a")
    >>> legend_below(fig, ax)
    >>> len(fig.legends), ax.get_legend() is None
    (1, True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["legend_below"]


def legend_below(fig: Figure, ax: Axes, *, title: str | None = None) -> None:
    """Put the legend of ``ax``'s labelled artists below the figure's axes, outside every plot, in as
    many columns as fit the figure's width: it can never hide a curve, a bar or a marker.

    The figure must use the constrained layout, which makes room for the legend.
    """
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    # Characters of 8-point text across the figure, and the width of the widest entry (its
    # handle and padding take about five characters).
    across = fig.get_figwidth() * 72 / (0.62 * 8)
    widest = max(len(t) for t in labels) + 5
    ncols = max(1, min(len(labels), int(across // widest)))
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=ncols,
        fontsize=8,
        title=title,
        title_fontsize=8,
        frameon=False,
    )
