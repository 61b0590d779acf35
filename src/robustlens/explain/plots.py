"""Figures of an explanation: the image with its top superpixels outlined, and the explanation path.

Both return a :class:`matplotlib.figure.Figure` built without pyplot (no global state, the Agg
canvas), which the HTML report embeds after ``Explanation.from_dict``; ``fig.savefig(path)`` writes
it.

Example:
    >>> import torch, robustlens as rl
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
    >>> exp = rl.explain.Lime(samples=60, K=2, segmenter="grid")(model, torch.rand(3, 4, 4))
    >>> [len(plot_explanation(exp).axes), len(plot_path(exp).axes)]
    [3, 1]
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robustlens._plotting import legend_below
from robustlens.errors import ParameterError
from robustlens.explain.lime import Explanation

__all__ = ["label_points", "plot_explanation", "plot_path"]

TOP_COLOUR = (1.0, 0.85, 0.0)  # yellow outlines of the top superpixels
PATH_COLOURS = 10  # superpixels of the path drawn in colour (in order of entry); the rest grey


def _display(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """``(C, H, W)`` -> an array imshow understands, and its colormap."""
    arr = image.detach().float().cpu().clamp(0, 1).numpy()
    if arr.shape[0] == 3:
        return arr.transpose(1, 2, 0), None
    return arr[0], "gray"


def _upsample(a: np.ndarray, f: int) -> np.ndarray:
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1)


def label_points(segments: np.ndarray, ids: list[int]) -> list[tuple[float, float]]:
    """For each superpixel id, the ``(row, col)`` of its pixel farthest from its border (ties: the
    one nearest its centroid): a label there lies inside the superpixel whatever its shape.

    Example:
        >>> seg = np.array([[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0]])
        >>> int(seg[1, 2])  # where the L-shaped superpixel 0 has its centroid (0.86, 2.14)
        1
        >>> [int(seg[int(r), int(c)]) for r, c in label_points(seg, [0, 1])]
        [0, 1]
    """
    from scipy.ndimage import distance_transform_edt

    out = []
    grid = np.indices(segments.shape).astype(np.float64)
    rows, cols = grid[0], grid[1]
    for sid in ids:
        inside = np.pad(segments == sid, 1)  # the image's edge counts as a border
        depth = np.asarray(distance_transform_edt(inside))[1:-1, 1:-1]
        cy, cx = rows[segments == sid].mean(), cols[segments == sid].mean()
        score = depth - 1e-6 * np.hypot(rows - cy, cols - cx)
        r, c = np.unravel_index(
            int(np.argmax(np.where(segments == sid, score, -np.inf))), score.shape
        )
        out.append((float(r), float(c)))
    return out


def plot_explanation(exp: Explanation, k: int | None = None, *, width: float = 9.0) -> Figure:
    """The image with all superpixel borders (faint) and its top-``k`` superpixels outlined.

    Left: the image, the ``k`` (default ``K``) top superpixels (largest positive weights, or
    largest ``|weight|`` when none is positive) outlined in yellow and numbered by rank. Right:
    each superpixel's weight (blue positive, red negative, symmetric scale) with a colour bar.
    """
    from skimage.segmentation import find_boundaries

    k = exp.K if k is None else k
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ParameterError(f"plot_explanation: 'k' must be an int >= 0, got {k!r}")
    h, w = exp.segments.shape
    seg = exp.segments.cpu().numpy()
    top_ids = exp.top_ids(k).cpu()
    top = exp.top(k).cpu().numpy()
    f = max(1, math.ceil(256 / max(h, w)))  # outlines thinner than a pixel on small images
    seg_up = _upsample(seg, f)
    all_edges = find_boundaries(seg_up, mode="inner")
    top_edges = find_boundaries(_upsample(np.where(top, seg, -1), f), mode="inner") & _upsample(
        top, f
    )
    overlay = np.zeros((h * f, w * f, 4))
    overlay[all_edges] = (1.0, 1.0, 1.0, 0.35)
    overlay[top_edges] = (*TOP_COLOUR, 1.0)
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)

    fig = Figure(figsize=(width, width * 0.45), layout="constrained")
    FigureCanvasAgg(fig)
    ax_img, ax_w = fig.subplots(1, 2)
    arr, cmap = _display(exp.image)
    ax_img.imshow(arr, cmap=cmap, vmin=0, vmax=1, extent=extent, interpolation="nearest")
    ax_img.imshow(overlay, extent=extent, interpolation="nearest")
    if len(top_ids):
        # Rank labels (the report's table lists the superpixels in this order) inside their
        # superpixels: at the pixel farthest from the border, where a centroid could fall outside
        # a curved superpixel, onto another one.
        for rank, (cy, cx) in enumerate(label_points(seg, top_ids.tolist()), start=1):
            ax_img.text(
                cx,
                cy,
                str(rank),
                color="black",
                ha="center",
                va="center",
                fontsize=8,
                fontweight="bold",
                bbox={"boxstyle": "circle,pad=0.15", "fc": TOP_COLOUR, "ec": "none", "alpha": 0.85},
            )
    title = (
        f"{exp.label}: {len(top_ids)} largest |weight| (none positive)"
        if exp.by_magnitude
        else f"{exp.label}: top {len(top_ids)} superpixels"
    )
    ax_img.set_title(title, fontsize=10)
    ax_img.set_axis_off()

    wmap = exp.weight_map().double().cpu().numpy()
    vmax = float(np.abs(wmap).max()) or 1.0
    im = ax_w.imshow(
        wmap, cmap="RdBu", vmin=-vmax, vmax=vmax, extent=extent, interpolation="nearest"
    )
    ax_w.imshow(
        np.where(all_edges[..., None], (0.3, 0.3, 0.3, 0.3), (0, 0, 0, 0)),
        extent=extent,
        interpolation="nearest",
    )
    ax_w.set_title(
        f"LIME weights ({exp.output}), K={exp.K}, r2={exp.r2:.2f}, ess={exp.ess:.0f}", fontsize=10
    )
    ax_w.set_axis_off()
    fig.colorbar(im, ax=ax_w, shrink=0.8)
    return fig


def plot_path(exp: Explanation, *, width: float = 6.5) -> Figure:
    """The explanation path: each superpixel's coefficient against the number in the model.

    One line per superpixel that enters the Lasso path (the first ten in order of entry in colour
    and in the legend, the others grey), the chosen ``K`` as a dashed line and the final weighted
    least-squares weights as dots at ``K``.
    """
    path = exp.path
    sizes = path.sizes.cpu().numpy()
    coefs = path.coefs.double().cpu().numpy()
    fig = Figure(figsize=(width, width * 0.62), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    order = path.order.cpu().tolist()
    cmap = colormaps["tab10"]
    for rank, sid in enumerate(order):
        if rank < PATH_COLOURS:
            ax.plot(
                sizes, coefs[:, sid], color=cmap(rank), lw=1.6, marker=".", ms=4, label=f"#{sid}"
            )
        else:
            ax.plot(sizes, coefs[:, sid], color="0.7", lw=0.8)
    kk = min(exp.K, exp.num_segments)
    ax.axvline(kk, color="0.3", ls="--", lw=1)
    sel = exp.selected.cpu().tolist()
    if sel:
        ax.scatter(
            [kk] * len(sel),
            exp.weights.double().cpu().numpy()[sel],
            color="black",
            zorder=3,
            s=14,
            label=f"weights at K={kk}",
        )
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xlabel("superpixels in the model (K)")
    ax.set_ylabel(f"coefficient ({exp.output})")
    ax.set_title(f"explanation path, class {exp.label}", fontsize=10)
    if order:
        legend_below(fig, ax, title="superpixel (the coloured lines, in order of entry)")
    return fig
