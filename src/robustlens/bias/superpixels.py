"""Superpixel statistics over a class: where do a class's LIME superpixels lie, and what are they?

Stock and Cisse (2018, "ConvNets and ImageNet beyond accuracy") read LIME's top superpixels over
many images of a class: they either show the object that supports the prediction or a context
(a background, a co-occurring object) that the model learnt instead. Reading hundreds of
explanations by eye does not scale, so :func:`superpixel_statistics` summarises them. For each
class it explains up to ``images_per_class`` images with :class:`~robustlens.explain.Lime`, keeps
each image's ``k`` superpixels with the largest positive weights, describes every superpixel by
simple attributes, and compares the class's top superpixels with the other classes' top
superpixels.

**Attributes of a superpixel** (:func:`superpixel_attributes`, computed for all superpixels of all
images at once with ``bincount``/``index_add`` over the segment ids):

- ``row``, ``col``: its centroid, pixel ``i`` counting as ``(i + 0.5) / H`` (so in ``[0, 1]``);
  the categorical ``position`` is the cell of a 3x3 grid holding the centroid (``top-left``,
  ``top``, ... ``bottom-right``; :data:`POSITIONS`).
- ``colour``: its mean value per channel; ``brightness`` the mean over channels, binned into
  ``dark`` ``[0, 1/3)``, ``mid`` ``[1/3, 2/3)`` and ``bright`` ``[2/3, 1]``.
- on three-channel images, the categorical ``hue`` of the mean colour: ``grey`` when its
  saturation ``(max - min) / max`` is below :data:`GREY_SATURATION` or its maximum below
  :data:`GREY_VALUE`, otherwise the nearest of ``red``, ``yellow``, ``green``, ``cyan``, ``blue``,
  ``magenta`` (60-degree sectors of the HSV hue centred on each).
- ``size``: its fraction of the image, binned into ``small`` (below 1%), ``medium`` (1% to 5%)
  and ``large`` (5% and more); :data:`SIZE_EDGES`.
- with a ``mask`` (a region the user suspects, for instance a planted cue or a watermark):
  ``mask_fraction``, the fraction of its pixels inside the mask, and the categorical ``mask``:
  ``inside`` when that fraction is at least ``mask_threshold`` (0.5), else ``outside``.
- with the ``hidden`` images (what LIME shows in place of a switched-off superpixel):
  ``change``, the root mean square of ``image - hidden`` over its pixels and channels. A
  superpixel is **foreground** when ``change >= FOREGROUND`` (0.05): hiding it changes what the
  model sees (with black hiding on Fashion-MNIST, the garment and anything drawn on it, not the
  black background, which LIME cannot give a weight).

**Statistics.** For class ``c``, attribute ``a`` and value ``v``, ``class`` is the fraction of
``c``'s top superpixels with value ``v``, ``others`` the same fraction over the top superpixels of
every other class, ``all`` the fraction over *all* superpixels of ``c``'s images, and
``expected`` the fraction that value ``v`` would have if each image's top superpixels were
*shuffled*: drawn at random among the image's own foreground superpixels (its objects; the top
superpixels count as foreground). Two comparisons follow:

- **beyond the class's own objects**: ``excess = class / expected``, and ``p_shape``, the exact
  probability of at least the observed count under the shuffle (the count is a sum over images
  of hypergeometric draws, one per image; their distributions are convolved). A trouser's legs
  fill the bottom cell, so the bottom holds much of what its images offer; ``excess`` measures the
  model's preference beyond that.
- **class information**: ``ratio = class / max(others, 0.5 / n_others)`` (half a count as a
  floor, so it stays finite) and ``p``, the one-sided Fisher exact test that value ``v`` is more
  frequent among ``c``'s top superpixels than among the others' (the hypergeometric tail of the
  2x2 table, scipy's ``hypergeom``).

**Warnings and notes, calibrated.** Both p-values are compared with ``alpha / tests``
(Bonferroni), ``tests`` being the number of (class, value) pairs whose images offer that value, so
that under the shuffle the chance of any false flag in the whole run is at most ``alpha``
(default 0.01); both ratios must reach ``min_ratio`` (default 2).

- A **warning** (``stats.flags``) is the ``inside`` value of the mask beyond the class's own
  objects (``excess >= min_ratio`` and ``p_shape < alpha / tests``): the model's evidence for the
  class sits in the region the user named more than the class's objects explain. A cue may serve
  every class (a planted patch names each class in its own corner), so the other classes are not
  the baseline here.
- A **note** (``stats.notes``) is any other value that passes both comparisons: where a class's
  evidence concentrates, beyond its objects and unlike the other classes. A note is not a
  warning: on its own, a position (or an intensity, a size, a hue) cannot tell a discriminative
  part of the object (a boot's heel, bottom left) from a spurious mark at a fixed place; measured on
  the zoo's ``fmnist-cnn`` over clean Fashion-MNIST test images, the notes are garment parts. A
  note is a place to look at (the examples show it); to test it as a cue, give its region as
  ``mask=``.

Each class's findings are sorted by ``p_shape`` (then ``p``): the first is its top finding.

Example:
    >>> import torch
    >>> images = torch.zeros(1, 1, 4, 6)
    >>> images[0, 0, :2, :3] = 1.0
    >>> segments = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2 + [[2, 2, 2, 2, 2, 2]] * 2)[None]
    >>> att = superpixel_attributes(images, segments)
    >>> att.row.tolist(), [round(c, 6) for c in att.col.tolist()], att.size.tolist()
    ([0.25, 0.25, 0.75], [0.25, 0.75, 0.5], [0.25, 0.25, 0.5])
    >>> att.names("position"), att.names("brightness")
    (['top-left', 'top-right', 'bottom'], ['bright', 'dark', 'dark'])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from robustlens._checks import check_model, model_device
from robustlens._images import Pixels, as_pixels, check_pixels
from robustlens._runtime import status
from robustlens.data.dataset import ImageDataset
from robustlens.data.files import ImageFiles
from robustlens.data.spurious import PlantedCue, _check_dataset, apply_cue
from robustlens.data.stream import in_memory, predict
from robustlens.errors import (
    DTypeError,
    LabelError,
    ParameterError,
    ShapeError,
)
from robustlens.explain.lime import Explanation, Lime

__all__ = [
    "BRIGHTNESS",
    "FOREGROUND",
    "HUES",
    "POSITIONS",
    "SIZES",
    "SIZE_EDGES",
    "ClassStats",
    "Finding",
    "SuperpixelAttributes",
    "SuperpixelStats",
    "ValueStats",
    "patch_mask",
    "shuffle_baseline",
    "superpixel_attributes",
    "superpixel_statistics",
]

#: The 3x3 position cells, row-major (cell ``3 * row_cell + col_cell``).
POSITIONS: tuple[str, ...] = (
    "top-left",
    "top",
    "top-right",
    "left",
    "centre",
    "right",
    "bottom-left",
    "bottom",
    "bottom-right",
)
#: Brightness bins: mean intensity in [0, 1/3), [1/3, 2/3), [2/3, 1].
BRIGHTNESS: tuple[str, ...] = ("dark", "mid", "bright")
#: Size bins, as fractions of the image: below ``SIZE_EDGES[0]``, between, from ``SIZE_EDGES[1]``.
SIZES: tuple[str, ...] = ("small", "medium", "large")
SIZE_EDGES: tuple[float, float] = (0.01, 0.05)
#: Hue names of three-channel images (``grey`` first, then 60-degree sectors from red).
HUES: tuple[str, ...] = ("grey", "red", "yellow", "green", "cyan", "blue", "magenta")
#: A mean colour with saturation below this, or maximum below ``GREY_VALUE``, is ``grey``.
GREY_SATURATION = 0.25
GREY_VALUE = 0.1
#: Values of the ``mask`` attribute.
MASK_VALUES: tuple[str, ...] = ("inside", "outside")
#: A superpixel is foreground when hiding it changes its pixels by at least this much (root mean
#: square over its pixels and channels, images in [0, 1]).
FOREGROUND = 0.05

Target = Literal["label", "pred"]
MaskLike = Tensor | Callable[[ImageDataset], Tensor] | None

_PHRASES: dict[str, str] = {
    "position": "lie in the {v} cell",
    "brightness": "are {v} (mean intensity {edges})",
    "size": "are {v} ({edges} of the image)",
    "hue": "are {v}",
    "mask": "lie {v} the mask",
}
_BRIGHTNESS_EDGES = {"dark": "below 1/3", "mid": "1/3 to 2/3", "bright": "2/3 or more"}
_SIZE_TEXT = {
    "small": f"below {SIZE_EDGES[0]:.0%}",
    "medium": f"{SIZE_EDGES[0]:.0%} to {SIZE_EDGES[1]:.0%}",
    "large": f"{SIZE_EDGES[1]:.0%} or more",
}


# --------------------------------------------------------------------------- attributes


@dataclass(frozen=True, eq=False)
class SuperpixelAttributes:
    """The attributes of ``T`` superpixels (all superpixels of a batch of images, image by image).

    ``image`` (T,) the image each superpixel belongs to, ``segment`` (T,) its id in that image's
    segmentation; ``row``, ``col`` (T,) the centroid in ``[0, 1]``; ``cell`` (T,) the 3x3 position
    cell (index into :data:`POSITIONS`); ``colour`` (T, C) the mean value per channel;
    ``brightness`` (T,) its mean over channels; ``size`` (T,) the fraction of the image;
    ``mask_fraction`` (T,) the fraction inside the mask (``None`` without a mask); ``change`` (T,)
    the root mean square of ``image - hidden`` over it (``None`` without the hidden images).
    """

    image: Tensor
    segment: Tensor
    row: Tensor
    col: Tensor
    cell: Tensor
    colour: Tensor
    brightness: Tensor
    size: Tensor
    mask_fraction: Tensor | None = None
    mask_threshold: float = 0.5
    change: Tensor | None = None

    def foreground(self, threshold: float = FOREGROUND) -> Tensor:
        """Which superpixels hiding changes by at least ``threshold`` (bool ``(T,)``; all of them
        without the hidden images)."""
        if self.change is None:
            return torch.ones(len(self), dtype=torch.bool, device=self.image.device)
        return self.change >= threshold

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @property
    def attributes(self) -> list[str]:
        """The categorical attributes available: position, brightness, size (hue on colour
        images, mask with a mask)."""
        out = ["position", "brightness", "size"]
        if self.colour.shape[1] == 3:
            out.append("hue")
        if self.mask_fraction is not None:
            out.append("mask")
        return out

    def values(self, attribute: str) -> tuple[str, ...]:
        """The names of ``attribute``'s values, in code order."""
        table = {
            "position": POSITIONS,
            "brightness": BRIGHTNESS,
            "size": SIZES,
            "hue": HUES,
            "mask": MASK_VALUES,
        }
        if attribute not in self.attributes:
            raise ParameterError(
                f"SuperpixelAttributes: attribute must be one of "
                f"{', '.join(map(repr, self.attributes))}, got {attribute!r}"
            )
        return table[attribute]

    def codes(self, attribute: str) -> Tensor:
        """The categorical value of every superpixel, int64 ``(T,)`` indexing :meth:`values`."""
        self.values(attribute)  # validates the name
        if attribute == "position":
            return self.cell
        if attribute == "brightness":
            return (self.brightness * 3).floor().long().clamp(0, 2)
        if attribute == "size":
            edges = torch.tensor(SIZE_EDGES, dtype=self.size.dtype, device=self.size.device)
            return torch.bucketize(self.size, edges, right=True)
        if attribute == "hue":
            return _hue_codes(self.colour)
        fraction = self.mask_fraction
        if fraction is None:  # unreachable: values() refuses "mask" without a mask
            raise ParameterError("SuperpixelAttributes: no mask was given")
        return (fraction < self.mask_threshold).long()

    def names(self, attribute: str) -> list[str]:
        """The categorical value of every superpixel, as names (a list of ``T`` strings)."""
        values = self.values(attribute)
        return [values[c] for c in self.codes(attribute).tolist()]


def _hue_codes(colour: Tensor) -> Tensor:
    """Index into :data:`HUES` of each mean colour ``(T, 3)``."""
    r, g, b = colour.unbind(1)
    mx = colour.amax(1)
    mn = colour.amin(1)
    d = mx - mn
    safe = d.clamp_min(1e-12)
    h = torch.where(
        mx == r,
        torch.remainder((g - b) / safe, 6.0),
        torch.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    sector = torch.remainder(torch.round(h), 6).long()  # 0 red, 1 yellow, ... 5 magenta
    saturation = d / mx.clamp_min(1e-12)
    grey = (saturation < GREY_SATURATION) | (mx < GREY_VALUE)
    return torch.where(grey, torch.zeros_like(sector), sector + 1)


def superpixel_attributes(
    images: Tensor,
    segments: Tensor,
    *,
    mask: Tensor | None = None,
    mask_threshold: float = 0.5,
    hidden: Tensor | None = None,
) -> SuperpixelAttributes:
    """The attributes of every superpixel of every image (see the module docstring).

    Segment ids must run over ``0..S_i-1`` in each image (as :class:`~robustlens.explain.Lime`
    gives them); superpixels are listed image by image, by id. One pass of ``bincount`` /
    ``index_add`` over all pixels, on the images' device.

    Shape: images (N, C, H, W), segments (N, H, W) int, mask (N, H, W) bool or None, hidden
    (N, C, H, W) or None -> SuperpixelAttributes of T = sum_i S_i superpixels.
    """
    where = "superpixel_attributes"
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ShapeError(f"{where}: 'images' must be a float tensor (N, C, H, W), got {got}")
    n, c, h, w = images.shape
    if (
        not isinstance(segments, Tensor)
        or segments.is_floating_point()
        or segments.dtype == torch.bool
    ):
        raise DTypeError(f"{where}: 'segments' must be an integer tensor (N, H, W) of ids")
    if tuple(segments.shape) != (n, h, w):
        raise ShapeError(
            f"{where}: 'segments' must have shape (N, H, W) = {(n, h, w)} like the images, got "
            f"{tuple(segments.shape)}"
        )
    if mask is not None and tuple(mask.shape) != (n, h, w):
        raise ShapeError(
            f"{where}: 'mask' must have shape (N, H, W) = {(n, h, w)}, got {tuple(mask.shape)}"
        )
    if hidden is not None and tuple(hidden.shape) != (n, c, h, w):
        raise ShapeError(
            f"{where}: 'hidden' must have the images' shape {(n, c, h, w)}, got "
            f"{tuple(hidden.shape)}"
        )
    if not (isinstance(mask_threshold, int | float) and 0.0 < mask_threshold <= 1.0):
        raise ParameterError(
            f"{where}: 'mask_threshold' must be a float in (0, 1], got {mask_threshold!r}"
        )
    device = images.device
    seg = segments.to(device).long()
    if int(seg.min()) < 0:
        raise ParameterError(f"{where}: segment ids must be >= 0, got {int(seg.min())}")
    counts = seg.flatten(1).amax(1) + 1  # (N,) superpixels per image
    offsets = torch.cumsum(counts, 0) - counts
    total = int(counts.sum())
    gid = (seg + offsets[:, None, None]).flatten()  # (N H W,) global superpixel ids
    pixels = torch.bincount(gid, minlength=total)
    if bool((pixels == 0).any()):
        bad = int((pixels == 0).nonzero()[0, 0])
        img = int(torch.searchsorted(offsets, torch.tensor(bad, device=device), right=True)) - 1
        raise ParameterError(
            f"{where}: the ids of image {img} skip {bad - int(offsets[img])}; ids must run over "
            "0..S-1 in each image: relabel them (robustlens.explain.check_segments does)"
        )
    dtype = torch.float64
    area = pixels.to(dtype)
    rows = ((torch.arange(h, device=device, dtype=dtype) + 0.5) / h)[:, None].expand(h, w)
    cols = ((torch.arange(w, device=device, dtype=dtype) + 0.5) / w)[None, :].expand(h, w)
    row = torch.bincount(gid, weights=rows.expand(n, h, w).flatten(), minlength=total) / area
    col = torch.bincount(gid, weights=cols.expand(n, h, w).flatten(), minlength=total) / area
    values = images.permute(0, 2, 3, 1).reshape(-1, c).to(dtype)
    colour = torch.zeros(total, c, dtype=dtype, device=device).index_add_(0, gid, values)
    colour = colour / area[:, None]
    cell = (row * 3).floor().long().clamp(0, 2) * 3 + (col * 3).floor().long().clamp(0, 2)
    mask_fraction = None
    if mask is not None:
        inside = mask.to(device).flatten().to(dtype)
        mask_fraction = torch.bincount(gid, weights=inside, minlength=total) / area
    change = None
    if hidden is not None:
        sq = (images.to(dtype) - hidden.to(device, dtype)).pow(2).mean(1).flatten()
        change = (torch.bincount(gid, weights=sq, minlength=total) / area).sqrt()
    image_index = torch.repeat_interleave(torch.arange(n, device=device), counts)
    return SuperpixelAttributes(
        image=image_index,
        segment=torch.arange(total, device=device) - offsets[image_index],
        row=row,
        col=col,
        cell=cell,
        colour=colour,
        brightness=colour.mean(1),
        size=area / (h * w),
        mask_fraction=mask_fraction,
        mask_threshold=float(mask_threshold),
        change=change,
    )


def _top_flags(weights: Sequence[Tensor], counts: Tensor, k: int) -> Tensor:
    """Which superpixels are among their image's ``k`` top superpixels, bool ``(T,)``.

    The same choice as :func:`~robustlens.explain.lime.shown_superpixels` (stable descending
    sort of the positive weights, or of ``|weight|`` in an image with no positive weight), for
    all images at once on a padded ``(N, S_max)`` weight matrix.
    """
    n = len(weights)
    device = counts.device
    s_max = int(counts.max())
    padded = torch.full((n, s_max), -math.inf, dtype=torch.float64, device=device)
    flat = torch.cat([wt.to(device, torch.float64) for wt in weights])
    valid = torch.arange(s_max, device=device)[None, :] < counts[:, None]
    padded[valid] = flat
    positive = (padded > 0).any(1, keepdim=True)
    score = torch.where(positive, padded, padded.abs()).masked_fill(~valid, -math.inf)
    order = torch.argsort(score, dim=1, descending=True, stable=True)[:, :k]
    chosen = torch.zeros(n, s_max, dtype=torch.bool, device=device)
    chosen.scatter_(1, order, torch.gather(score, 1, order) > 0)
    return chosen[valid]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ValueStats:
    """One attribute value in one class: its frequency among the class's top superpixels
    (``class_fraction``), among the other classes' (``others_fraction``), among all the
    superpixels of the class's images (``all_fraction``) and expected from the class's own
    objects (``expected_fraction``, the shuffle); the ratio to the others with its Fisher ``p``,
    the ``excess`` over the expectation with its exact ``p_shape``."""

    count: int
    class_fraction: float
    others_fraction: float
    all_fraction: float
    ratio: float
    p: float
    expected_fraction: float = math.nan
    excess: float = math.nan
    p_shape: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return {
            "class": self.class_fraction,
            "others": self.others_fraction,
            "all": self.all_fraction,
            "expected": self.expected_fraction,
            "ratio": self.ratio,
            "p": self.p,
            "excess": self.excess,
            "p_shape": self.p_shape,
        }


_ADVICE = {
    "mask": "the model looks at the masked region more than the class's objects explain: measure "
    "how much it relies on it (rl.bias.cue_reliance for a planted cue, or the accuracy with the "
    "region hidden) and retrain without it, or with it randomised across classes",
}


@dataclass(frozen=True)
class Finding:
    """A flagged attribute value of a class: a ``warning`` (the mask's ``inside``, beyond the
    class's own objects) or a note (another value, beyond the class's objects and unlike the
    other classes); see the module docstring."""

    class_name: str
    attribute: str
    value: str
    class_fraction: float
    others_fraction: float
    all_fraction: float
    ratio: float
    p: float
    expected_fraction: float = math.nan
    excess: float = math.nan
    p_shape: float = 1.0

    @property
    def warning(self) -> bool:
        """Whether the finding is a warning (the mask's ``inside``) rather than a note."""
        return self.attribute == "mask" and self.value == "inside"

    @property
    def text(self) -> str:
        """The finding as one readable sentence (a warning says what to try)."""
        edges = _BRIGHTNESS_EDGES.get(self.value, _SIZE_TEXT.get(self.value, ""))
        phrase = _PHRASES[self.attribute].format(v=self.value, edges=edges)
        head = f"class {self.class_name}: {self.class_fraction:.0%} of its top superpixels {phrase}"
        if self.warning:
            return (
                f"{head}, where {self.expected_fraction:.0%} would if they were drawn at random "
                f"from its images' foreground ({self.excess:.1f} times as often, p = "
                f"{self.p_shape:.1e}; {self.others_fraction:.0%} for other classes): "
                f"{_ADVICE['mask']}"
            )
        return (
            f"{head} vs {self.others_fraction:.0%} for other classes and "
            f"{self.expected_fraction:.0%} expected from its own objects (ratio "
            f"{self.ratio:.1f}, p = {self.p:.1e}; excess {self.excess:.1f}, p = "
            f"{self.p_shape:.1e})"
        )


@dataclass(frozen=True, eq=False)
class ClassStats:
    """The statistics of one class: ``attributes[attr][value]`` is a :class:`ValueStats`;
    ``findings`` its warnings and notes, most significant first; ``mask_overlap`` the mean
    fraction of its top superpixels inside the mask (``None`` without a mask)."""

    name: str
    index: int
    n_images: int
    n_top: int
    attributes: dict[str, dict[str, ValueStats]]
    findings: list[Finding]
    mask_overlap: float | None

    @property
    def top_finding(self) -> Finding | None:
        """The most significant finding, or ``None`` when nothing is flagged."""
        return self.findings[0] if self.findings else None

    @property
    def warnings(self) -> list[Finding]:
        """The findings that are warnings (see :attr:`Finding.warning`)."""
        return [f for f in self.findings if f.warning]

    def format(self) -> str:
        """The class's table as text: one row per attribute value (``!`` a warning, ``*`` a
        note)."""
        lines = [
            f"class {self.name}: {self.n_images} images, {self.n_top} top superpixels"
            + ("" if self.mask_overlap is None else f", mask overlap {self.mask_overlap:.2f}"),
            f"  {'attribute':<11}{'value':<14}{'class':>7}{'others':>8}{'all':>7}"
            f"{'expected':>9}{'ratio':>7}{'p':>10}{'excess':>7}{'p_shape':>10}",
        ]
        flagged = {(f.attribute, f.value): "!" if f.warning else "*" for f in self.findings}
        for attr, table in self.attributes.items():
            for value, st in table.items():
                mark = f" {flagged[attr, value]}" if (attr, value) in flagged else ""
                lines.append(
                    f"  {attr:<11}{value:<14}{st.class_fraction:>7.0%}{st.others_fraction:>8.0%}"
                    f"{st.all_fraction:>7.0%}{st.expected_fraction:>9.0%}{st.ratio:>7.1f}"
                    f"{st.p:>10.1e}{st.excess:>7.1f}{st.p_shape:>10.1e}{mark}"
                )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "n_top": self.n_top,
            "attributes": {
                attr: {value: st.to_dict() for value, st in table.items()}
                for attr, table in self.attributes.items()
            },
            "mask_overlap": self.mask_overlap,
        }


@dataclass(frozen=True, eq=False)
class SuperpixelStats:
    """Superpixel statistics over classes (see the module docstring).

    ``classes`` maps each class name to its :class:`ClassStats`; ``flags`` lists the warnings and
    ``notes`` the notes as sentences, class by class, most significant first; ``tests`` is the
    number of (class, value) comparisons the Bonferroni correction divides ``alpha`` by;
    ``foreground`` the threshold on ``change``; ``superpixels`` holds the attributes of
    every superpixel of the explained images, ``top`` (T,) which are top superpixels and
    ``superpixel_class`` (T,) the class each belongs to; ``indices`` are the explained images'
    positions in the data set and ``explanations`` their LIME explanations.
    """

    k: int
    images_per_class: int
    target: str
    min_ratio: float
    alpha: float
    classes: dict[str, ClassStats]
    superpixels: SuperpixelAttributes
    top: Tensor
    superpixel_class: Tensor
    indices: Tensor
    explanations: list[Explanation] = field(repr=False)
    lime_warnings: int = 0
    tests: int = 1
    foreground: float = FOREGROUND

    @property
    def findings(self) -> list[Finding]:
        """Every warning and note, class by class, most significant first within a class."""
        return [f for cs in self.classes.values() for f in cs.findings]

    @property
    def flags(self) -> list[str]:
        """The warnings as readable sentences (each says what to try)."""
        return [f.text for f in self.findings if f.warning]

    @property
    def notes(self) -> list[str]:
        """The notes (where a class's evidence concentrates) as readable sentences."""
        return [f.text for f in self.findings if not f.warning]

    @property
    def threshold(self) -> float:
        """The p-value below which a comparison counts: ``alpha / tests`` (Bonferroni)."""
        return self.alpha / max(self.tests, 1)

    def table(self, name: str) -> str:
        """The per-class table of class ``name`` as text."""
        if name not in self.classes:
            raise ParameterError(
                f"SuperpixelStats: unknown class {name!r}; the classes are "
                f"{', '.join(map(repr, self.classes))}"
            )
        return self.classes[name].format()

    def format(self) -> str:
        """The flags, then every class's table."""
        head = [
            f"superpixel statistics: top {self.k} superpixels of up to {self.images_per_class} "
            f"images per class ({self.target}); ratios >= {self.min_ratio:g} and p < "
            f"{self.alpha:g} / {self.tests} tests = {self.threshold:.1e}",
            "warnings:",
        ]
        head += [f"  {f}" for f in self.flags] or ["  none"]
        head += ["notes:", *([f"  {f}" for f in self.notes] or ["  none"])]
        if self.lime_warnings:
            head.append(f"LIME warned on {self.lime_warnings} of {len(self.explanations)} images")
        return "\n\n".join(["\n".join(head), *(cs.format() for cs in self.classes.values())])

    def examples(
        self, per_class: int = 2, *, pixels: Pixels = "lists"
    ) -> dict[str, list[dict[str, Any]]]:
        """The first ``per_class`` explained images of each class with their top-``k`` mask
        (``image`` ``C x H x W``, ``top`` ``H x W`` 0/1; nested lists, or CPU tensors with
        ``pixels="tensors"``)."""
        where = "SuperpixelStats.examples"
        check_pixels(pixels, where=where)
        out: dict[str, list[dict[str, Any]]] = {}
        for name, cs in self.classes.items():
            rows = (self.superpixel_class[self.top] == cs.index).nonzero().flatten()
            images = torch.unique(self.superpixels.image[self.top][rows])[:per_class].tolist()
            if not images:  # no top superpixel at all: show the class's first images anyway
                first = self.superpixel_class == cs.index
                images = torch.unique(self.superpixels.image[first])[:per_class].tolist()
            entries = []
            for i in images:
                exp = self.explanations[i]
                keep = self.top[self.superpixels.image == i]
                top_mask = keep[exp.segments.to(keep.device)]
                entries.append(
                    {
                        "image": as_pixels(exp.image, pixels, where=where),
                        "top": as_pixels(top_mask.int(), pixels, where=where),
                    }
                )
            out[name] = entries
        return out

    def to_dict(self, *, pixels: Pixels = "lists") -> dict[str, Any]:
        """JSON-ready: ``k``, ``images_per_class``, thresholds (``min_ratio``, ``alpha``,
        ``tests``, ``foreground``), per-class tables, ``flags`` (warnings), ``notes`` and two
        ``examples`` per class (image ``C x H x W`` rounded to 4 decimals, ``top`` ``H x W``
        0/1). ``pixels="tensors"`` leaves the examples' pixels as CPU tensors, for a writer that
        stores them as image files (the audit's ``results.json`` names them by path)."""
        return {
            "k": self.k,
            "images_per_class": self.images_per_class,
            "target": self.target,
            "min_ratio": self.min_ratio,
            "alpha": self.alpha,
            "tests": self.tests,
            "foreground": self.foreground,
            "classes": {name: cs.to_dict() for name, cs in self.classes.items()},
            "flags": self.flags,
            "notes": self.notes,
            "examples": self.examples(2, pixels=pixels),
        }


# --------------------------------------------------------------------------- statistics


def _fisher_greater(a: Tensor, n_class: Tensor, c: Tensor, n_others: Tensor) -> Tensor:
    """One-sided Fisher exact p of the 2x2 tables ``[[a, n_class - a], [c, n_others - c]]``
    (alternative: value more frequent in the class), elementwise: ``P(X >= a)`` for
    ``X ~ Hypergeom(M = n_class + n_others, n = a + c, N = n_class)``."""
    from scipy.stats import hypergeom

    a_, nc, c_, no = (t.cpu().double().numpy() for t in (a, n_class, c, n_others))
    p = hypergeom.sf(a_ - 1, nc + no, a_ + c_, nc)
    return torch.from_numpy(p).clamp(0.0, 1.0)


def shuffle_baseline(
    top: Tensor, candidate: Tensor, codes: Tensor, image: Tensor, group: Tensor, values: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The shuffled-explanations baseline, exactly: each image keeps its number of top
    superpixels, drawn at random among its ``candidate`` superpixels.

    For group ``g`` (a class) and value ``v``, the number of top superpixels with value ``v`` is
    then a sum over the group's images of independent hypergeometric draws (population: the
    image's candidates; successes: its candidates with value ``v``; draws: its top count); their
    distributions are convolved exactly, one image slot at a time, all groups and values at once.

    Args:
        top, candidate: bool ``(T,)``; every top superpixel must be a candidate.
        codes: int ``(T,)`` in ``0..values-1``; image: int ``(T,)`` the image of each
            superpixel; group: int ``(T,)`` the group (class row, ``0..G-1``) of each.

    Returns:
        ``(observed, expected, p)``, each ``(G, values)``: the observed counts, their expectation
        under the shuffle and the exact ``P(count >= observed)``.

    Example:
        >>> top = torch.tensor([True, False, False, True, False, False])
        >>> obs, exp, p = shuffle_baseline(top, torch.ones(6, dtype=torch.bool),
        ...     torch.tensor([0, 1, 1, 0, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 1]),
        ...     torch.zeros(6, dtype=torch.long), 2)
        >>> obs.tolist(), exp.tolist(), round(float(p[0, 0]), 6)  # (1/3) ** 2 for value 0
        ([[2, 0]], [[0.6666666666666666, 1.3333333333333333]], 0.111111)
    """
    from scipy.stats import hypergeom

    if bool((top & ~candidate).any()):
        raise ParameterError("shuffle_baseline: every top superpixel must be a candidate")
    image, group, codes = image.cpu(), group.cpu(), codes.cpu()
    top, candidate = top.cpu(), candidate.cpu()
    n_img = int(image.max()) + 1 if len(image) else 0
    n_groups = int(group.max()) + 1 if len(group) else 0
    m = torch.bincount(image[candidate], minlength=n_img)  # (I,) candidates per image
    draws = torch.bincount(image[top], minlength=n_img)  # (I,) top superpixels per image
    successes = torch.bincount(
        image[candidate] * values + codes[candidate], minlength=n_img * values
    ).view(n_img, values)
    observed = torch.bincount(group[top] * values + codes[top], minlength=n_groups * values).view(
        n_groups, values
    )
    img_group = torch.full((n_img,), -1, dtype=torch.long)
    img_group[image] = group
    expected = torch.zeros(n_groups, values, dtype=torch.float64)
    ratio = successes.double() * draws[:, None].double() / m.clamp_min(1)[:, None].double()
    mine = img_group >= 0
    expected.index_add_(0, img_group[mine], ratio[mine])
    # Image slots per group: PMF (I, V, k + 1) of each image, identity on padding slots.
    k = int(draws.max()) if n_img else 0
    x = torch.arange(k + 1, dtype=torch.float64)
    pmf = torch.from_numpy(
        hypergeom.pmf(
            x.numpy()[None, None, :],
            m.numpy()[:, None, None],
            successes.numpy()[:, :, None],
            draws.numpy()[:, None, None],
        )
    ).nan_to_num(0.0)
    identity = torch.zeros(values, k + 1, dtype=torch.float64)
    identity[:, 0] = 1.0
    pmf = torch.where((draws == 0)[:, None, None], identity, pmf)  # nothing drawn: count 0
    order = torch.argsort(img_group, stable=True)
    counts = torch.bincount(img_group[mine], minlength=n_groups)
    slots = int(counts.max()) if n_groups else 0
    start = torch.cumsum(counts, 0) - counts
    dist = torch.zeros(n_groups, values, slots * k + 1, dtype=torch.float64)
    dist[..., 0] = 1.0
    sorted_imgs = order[(n_img - int(mine.sum())) :]  # images with a group, grouped
    for j in range(slots):  # one image slot of every group at a time (at most images_per_class)
        has = counts > j
        idx = sorted_imgs[(start + j).clamp_max(max(len(sorted_imgs) - 1, 0))]
        slot = torch.where(has[:, None, None], pmf[idx], identity)  # (G, V, k + 1)
        new = torch.zeros_like(dist)
        for t in range(k + 1):  # k + 1 shifts
            new[..., t:] += dist[..., : dist.shape[-1] - t] * slot[..., t : t + 1]
        dist = new
    # P(count >= observed): tails summed from the far end (small terms first).
    tails = dist.flip(-1).cumsum(-1).flip(-1)
    p = torch.gather(tails, 2, observed.clamp_max(dist.shape[-1] - 1)[..., None])[..., 0]
    p = torch.where(observed > 0, p, torch.ones_like(p)).clamp(0.0, 1.0)
    return observed, expected, p


def _class_tables(
    att: SuperpixelAttributes,
    top: Tensor,
    klass: Tensor,
    class_ids: list[int],
    candidate: Tensor,
) -> dict[str, tuple[Tensor, ...]]:
    """Per attribute: counts (K, V) among top superpixels, counts among all superpixels, the
    fractions, ratios and p-values (K, V) against the other classes, the expected counts and the
    exact p-values of the shuffle (rows in ``class_ids``)."""
    kk = len(class_ids)
    size = max(int(klass.max()), *class_ids) + 1
    pos = torch.full((size,), -1, dtype=torch.long, device=klass.device)
    pos[torch.tensor(class_ids, device=klass.device)] = torch.arange(kk, device=klass.device)
    row = pos[klass]
    out: dict[str, tuple[Tensor, ...]] = {}
    for attr in att.attributes:
        v = len(att.values(attr))
        codes = att.codes(attr)
        top_counts = torch.bincount(row[top] * v + codes[top], minlength=kk * v).view(kk, v)
        all_counts = torch.bincount(row * v + codes, minlength=kk * v).view(kk, v)
        offered = torch.bincount(row[candidate] * v + codes[candidate], minlength=kk * v).view(
            kk, v
        )
        _, expected, p_shape = shuffle_baseline(top, candidate, codes, att.image, row, v)
        out[attr] = (
            top_counts.cpu(),
            all_counts.cpu(),
            *_compare(top_counts.cpu()),
            expected,
            p_shape,
            offered.cpu(),
        )
    return out


def _compare(top_counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(others fraction, ratio, p), each (K, V), of each class's top counts against the rest."""
    n_class = top_counts.sum(1, keepdim=True).expand_as(top_counts)
    others = top_counts.sum(0, keepdim=True) - top_counts
    n_others = n_class.sum(0, keepdim=True) - n_class
    frac = top_counts.double() / n_class.clamp_min(1)
    frac_others = others.double() / n_others.clamp_min(1)
    floor = 0.5 / n_others.double().clamp_min(1)
    ratio = frac / torch.maximum(frac_others, floor)
    ratio = torch.where(n_others > 0, ratio, torch.zeros_like(ratio))
    p = _fisher_greater(top_counts, n_class, others, n_others)
    p = torch.where((n_class > 0) & (n_others > 0), p, torch.ones_like(p))
    return frac_others, ratio, p


def _mask_tensor(mask: Any, ds: ImageDataset | ImageFiles, where: str) -> Tensor | None:
    """The mask as bool ``(N, H, W)`` over the data set, or ``None``."""
    if mask is None:
        return None
    if callable(mask) and not isinstance(mask, Tensor):
        mask = mask(ds)
    n, (_, h, w) = len(ds), ds.shape
    device = ds.x.device if isinstance(ds, ImageDataset) else torch.device("cpu")
    if not isinstance(mask, Tensor):
        raise DTypeError(
            f"{where}: 'mask' must be a bool tensor (H, W) or (N, H, W), or a callable ds -> "
            f"such a tensor, got {type(mask).__name__}"
        )
    if mask.dtype != torch.bool:
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise DTypeError(
                f"{where}: 'mask' must be boolean (or hold only 0 and 1), got dtype {mask.dtype} "
                "with other values; threshold it, for example mask > 0.5"
            )
        mask = mask != 0
    if tuple(mask.shape) == (h, w):
        return mask.to(device)[None].expand(n, h, w)
    if tuple(mask.shape) == (n, h, w):
        return mask.to(device)
    raise ShapeError(
        f"{where}: 'mask' must have shape (H, W) = {(h, w)} for every image or (N, H, W) = "
        f"{(n, h, w)} for each image of the data set, got {tuple(mask.shape)}"
    )


def _resolve_classes(classes: Any, ds: ImageDataset | ImageFiles, where: str) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, str | int):
        classes = [classes]
    out: list[int] = []
    for c in classes:
        if isinstance(c, str):
            if c not in ds.classes:
                raise LabelError(
                    f"{where}: unknown class {c!r}; the classes of {ds.name!r} are "
                    f"{', '.join(map(repr, ds.classes))}"
                )
            out.append(ds.classes.index(c))
        elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < ds.num_classes:
            out.append(c)
        else:
            raise LabelError(
                f"{where}: 'classes' must hold class names or indices in 0..{ds.num_classes - 1}"
                f", got {c!r}"
            )
    if len(set(out)) != len(out):
        raise ParameterError(f"{where}: 'classes' lists a class twice: {list(classes)}")
    return out


def _int_param(where: str, name: str, value: Any, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ParameterError(f"{where}: {name!r} must be an int >= {minimum}, got {value!r}")
    return value


def superpixel_statistics(
    model: nn.Module,
    ds: ImageDataset | ImageFiles,
    *,
    classes: Sequence[int | str] | None = None,
    images_per_class: int = 30,
    k: int = 3,
    lime: Lime | None = None,
    mask: MaskLike = None,
    target: Target = "label",
    min_ratio: float = 2.0,
    alpha: float = 0.01,
    mask_threshold: float = 0.5,
    foreground: float = FOREGROUND,
    seed: int = 0,
    batch_size: int = 64,
) -> SuperpixelStats:
    """LIME over many images of each class, its top superpixels summarised and compared.

    Args:
        model: a classifier over ``ds``'s classes; it runs in eval mode, restored afterwards.
        ds: the images; with ``target="label"`` a class's images are those labelled with it.
            An ``ImageFiles`` streams from disk: only the chosen images are decoded (and, with
            ``target="pred"``, the predictions come from one batched pass).
        classes: the classes to study (names or indices; default every class with an image);
            the "other classes" of a class are the others studied.
        images_per_class: at most this many images per class, drawn at random (``seed``).
        k: top superpixels per image (largest positive LIME weights; fewer when fewer are
            positive); at most ``lime.K``.
        lime: the explainer; default ``Lime(samples=500, K=5, output="logits",
            hide="constant", seed=seed)``: logits do not saturate on confident images, and
            hiding with black removes what a superpixel shows rather than blurring it.
        mask: a region per image, bool ``(H, W)`` for all images, ``(N, H, W)`` per image of
            ``ds``, or a callable ``ds -> mask`` (see :func:`patch_mask`); adds the ``mask``
            attribute and each class's ``mask_overlap``.
        target: ``"label"`` explains each image for its label; ``"pred"`` groups the images by
            the model's prediction and explains that (what the model sees in the images it puts
            in a class, right or wrong).
        min_ratio, alpha: the thresholds: both ratios (to the other classes, to the class's own
            objects) at least ``min_ratio``, both p-values below ``alpha`` divided by the number
            of tests (Bonferroni: ``alpha`` bounds the chance of any false flag in the run).
        mask_threshold: a superpixel is ``inside`` the mask when at least this fraction is.
        foreground: a superpixel is foreground (a candidate of the shuffle) when hiding it
            changes its pixels by at least this root mean square.
        seed: draws the images and seeds the default explainer; same seed, same result.
        batch_size: images per LIME call (memory; the result does not depend on it).

    Returns:
        :class:`SuperpixelStats`.

    Shape: ds.x (N, C, H, W) -> statistics over at most ``images_per_class`` images per class.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits", split="test")
        >>> lime = rl.explain.Lime(samples=100, K=3, segmenter="grid", output="logits",
        ...                        hide="constant")
        >>> stats = superpixel_statistics(rl.zoo.load("digits-cnn"), ds, classes=[0, 1],
        ...                               images_per_class=3, k=2, lime=lime)
        >>> sorted(stats.classes), stats.classes["0"].n_images
        (['0', '1'], 3)
        >>> sorted(stats.to_dict()["classes"]["0"]["attributes"])
        ['brightness', 'position', 'size']
    """
    where = "superpixel_statistics"
    model = check_model(model, where=where)
    ds = ds if isinstance(ds, ImageFiles) else _check_dataset(ds, where)
    images_per_class = _int_param(where, "images_per_class", images_per_class, 1)
    k = _int_param(where, "k", k, 1)
    batch_size = _int_param(where, "batch_size", batch_size, 1)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ParameterError(f"{where}: 'seed' must be an int, got {seed!r}")
    if target not in ("label", "pred"):
        raise ParameterError(f"{where}: 'target' must be 'label' or 'pred', got {target!r}")
    ok = isinstance(min_ratio, int | float) and not isinstance(min_ratio, bool)
    if not ok or not math.isfinite(min_ratio) or min_ratio < 1:
        raise ParameterError(f"{where}: 'min_ratio' must be a float >= 1, got {min_ratio!r}")
    ok = isinstance(alpha, int | float) and not isinstance(alpha, bool)
    if not ok or not 0 < alpha <= 1:
        raise ParameterError(f"{where}: 'alpha' must be a float in (0, 1], got {alpha!r}")
    ok = isinstance(mask_threshold, int | float) and not isinstance(mask_threshold, bool)
    if not ok or not 0 < mask_threshold <= 1:
        raise ParameterError(
            f"{where}: 'mask_threshold' must be a float in (0, 1], got {mask_threshold!r}"
        )
    ok = isinstance(foreground, int | float) and not isinstance(foreground, bool)
    if not ok or not 0 <= foreground < 1:
        raise ParameterError(f"{where}: 'foreground' must be a float in [0, 1), got {foreground!r}")
    if lime is None:
        lime = Lime(samples=500, K=5, output="logits", hide="constant", seed=seed)
    elif not isinstance(lime, Lime):
        raise DTypeError(
            f"{where}: 'lime' must be a robustlens.explain.Lime, got {type(lime).__name__}"
        )
    if k > lime.K:
        raise ParameterError(
            f"{where}: 'k' must be at most the explainer's K={lime.K} (only K superpixels get a "
            f"weight), got k={k}; lower k or pass lime=Lime(K={k}, ...)"
        )
    requested = _resolve_classes(classes, ds, where)
    full_mask = _mask_tensor(mask, ds, where)

    # Group the images by label or prediction.
    # By prediction: streamed batch by batch, -1 for a file that does not decode.
    pred = target == "pred"
    group = predict(model, ds, device=model_device(model), where=where) if pred else ds.y.cpu()
    counts = torch.bincount(group[group >= 0], minlength=ds.num_classes)
    if requested is None:
        class_ids = [c for c in range(ds.num_classes) if int(counts[c]) > 0]
    else:
        empty = [ds.classes[c] for c in requested if int(counts[c]) == 0]
        if empty:
            by = "labelled" if target == "label" else "predicted as"
            raise ParameterError(
                f"{where}: no image of {ds.name!r} is {by} class(es) {', '.join(map(repr, empty))};"
                " drop them from 'classes' or give a data set that has them"
            )
        class_ids = requested
    if len(class_ids) < 2:
        raise ParameterError(
            f"{where}: needs at least 2 classes with images to compare a class with the others, "
            f"got {len(class_ids)} ({', '.join(ds.classes[c] for c in class_ids) or 'none'})"
        )

    # Up to images_per_class images per class, in a seeded random order.
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    chosen = [perm[group[perm] == c][:images_per_class].sort().values for c in class_ids]
    indices = torch.cat(chosen)
    # Only the chosen images are read (decoded, for files: the ones that fail are left out).
    chosen_ds, kept = in_memory(ds[indices], with_index=True)
    indices = indices[kept]
    klass_img = group[indices]
    x = chosen_ds.x

    # LIME, in chunks of images (a batch gives the same result as its images one by one).
    exps: list[Explanation] = []
    desc = f"superpixel statistics: LIME on {len(x)} images"
    with warnings.catch_warnings(), status(desc, len(x), unit="image") as ticker:
        warnings.filterwarnings("ignore", message="Lime: ", category=RuntimeWarning)
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            tb = klass_img[start : start + batch_size]
            exps += lime.explain_batch(model, xb, tb)
            ticker.tick(len(xb))
    warned = [e for e in exps if e.warnings]
    if warned:
        warnings.warn(
            f"{where}: LIME warned on {len(warned)} of {len(exps)} images, for example: "
            f"{warned[0].warnings[0]} (see stats.explanations[i].warnings)",
            RuntimeWarning,
            stacklevel=2,
        )

    device = x.device
    segments = torch.stack([e.segments.to(device) for e in exps])
    hidden = torch.stack([e.hidden.to(device) for e in exps])
    sub_mask = None if full_mask is None else full_mask[indices.to(device)]
    att = superpixel_attributes(
        x, segments, mask=sub_mask, mask_threshold=mask_threshold, hidden=hidden
    )
    seg_counts = torch.bincount(att.image, minlength=len(exps))
    top = _top_flags([e.weights for e in exps], seg_counts, k)
    klass = klass_img.to(device)[att.image]

    candidate = att.foreground(foreground) | top
    tables = _class_tables(att, top, klass, class_ids, candidate)
    tests = sum(int((t[-1] > 0).sum()) for t in tables.values())  # pairs the images offer
    level = alpha / max(tests, 1)
    n_img = torch.bincount(klass_img, minlength=ds.num_classes)
    stats: dict[str, ClassStats] = {}
    for row, c in enumerate(class_ids):
        name = ds.classes[c]
        attributes: dict[str, dict[str, ValueStats]] = {}
        findings: list[Finding] = []
        for attr, table_of in tables.items():
            top_counts, all_counts, frac_others, ratio, p, expected, p_shape, _ = table_of
            n_top = int(top_counts[row].sum())
            n_all = int(all_counts[row].sum())
            table = {}
            for j, value in enumerate(att.values(attr)):
                count, exp_count = int(top_counts[row, j]), float(expected[row, j])
                vs = ValueStats(
                    count=count,
                    class_fraction=count / n_top if n_top else 0.0,
                    others_fraction=float(frac_others[row, j]),
                    all_fraction=int(all_counts[row, j]) / n_all if n_all else 0.0,
                    ratio=float(ratio[row, j]),
                    p=float(p[row, j]),
                    expected_fraction=exp_count / n_top if n_top else 0.0,
                    excess=count / exp_count if exp_count > 0 else 0.0,
                    p_shape=float(p_shape[row, j]),
                )
                table[value] = vs
                beyond = vs.count > 0 and vs.excess >= min_ratio and vs.p_shape < level
                distinct = vs.ratio >= min_ratio and vs.p < level
                # The mask is a region the user named: the class's objects are its baseline.
                flagged = beyond and (value == "inside" if attr == "mask" else distinct)
                if flagged:
                    findings.append(
                        Finding(
                            class_name=name,
                            attribute=attr,
                            value=value,
                            class_fraction=vs.class_fraction,
                            others_fraction=vs.others_fraction,
                            all_fraction=vs.all_fraction,
                            ratio=vs.ratio,
                            p=vs.p,
                            expected_fraction=vs.expected_fraction,
                            excess=vs.excess,
                            p_shape=vs.p_shape,
                        )
                    )
            attributes[attr] = table
        findings.sort(key=lambda f: (f.p_shape, f.p, -f.excess))
        in_class = top & (klass == c)
        overlap = None
        if att.mask_fraction is not None:
            overlap = float(att.mask_fraction[in_class].mean()) if bool(in_class.any()) else 0.0
        stats[name] = ClassStats(
            name=name,
            index=c,
            n_images=int(n_img[c]),
            n_top=int(in_class.sum()),
            attributes=attributes,
            findings=findings,
            mask_overlap=overlap,
        )
    return SuperpixelStats(
        k=k,
        images_per_class=images_per_class,
        target=target,
        min_ratio=float(min_ratio),
        alpha=float(alpha),
        classes=stats,
        superpixels=att,
        top=top,
        superpixel_class=klass,
        indices=indices,
        explanations=exps,
        lime_warnings=len(warned),
        tests=tests,
        foreground=float(foreground),
    )


def patch_mask(planted: PlantedCue, *, patch_size: int | None = None) -> Tensor:
    """The pixels of the planted ``"patch"`` cue of each image, bool ``(N, H, W)``.

    The whole square of the patch (its black pixels included), drawn again from
    ``planted.cue_class``; pass the same ``patch_size`` as to :func:`robustlens.data.plant_cue`.

    Example:
        >>> import robustlens as rl
        >>> planted = rl.data.plant_cue(rl.data.load("digits", split="test")[:4], "patch", 1.0)
        >>> patch_mask(planted).flatten(1).sum(1).tolist()  # 3x3 patches on 8x8 images
        [9, 9, 9, 9]
    """
    if not isinstance(planted, PlantedCue):
        raise DTypeError(
            f"patch_mask: 'planted' must be a PlantedCue from rl.data.plant_cue, got "
            f"{type(planted).__name__}"
        )
    if planted.kind != "patch":
        raise ParameterError(
            f"patch_mask: the cue must be of kind 'patch' (a region), got {planted.kind!r}; the "
            "other cues change the whole image or its background"
        )
    n, _, h, w = planted.x.shape
    k = planted.dataset.num_classes
    cue = planted.cue_class.cpu()
    black = apply_cue(torch.zeros(n, 1, h, w), cue, "patch", num_classes=k, patch_size=patch_size)
    white = apply_cue(torch.ones(n, 1, h, w), cue, "patch", num_classes=k, patch_size=patch_size)
    return ((black[:, 0] != 0) | (white[:, 0] != 1)).to(planted.x.device)
