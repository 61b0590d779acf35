"""Superpixel segmenters for LIME: SLIC, quickshift, Felzenszwalb (scikit-image) and a regular grid.

A segmenter maps one image ``(C, H, W)`` in ``[0, 1]`` to an int64 label map ``(H, W)`` whose ids
are ``0..S-1`` (relabelled, no gaps). Parameters left at ``None`` adapt to the image, so the same
segmenter is sensible on 28x28 greyscale and on 224x224 colour. With ``side = sqrt(H W)`` and
``area = H W``, the defaults are:

=============== =========================================================================
``slic``        ``n_segments = min(50, area / 4)``; ``compactness = 10`` on 3-channel images
                (scikit-image converts them to Lab, whose range is 0-100) and ``0.1`` otherwise
                (intensities in [0, 1]); ``sigma = 0``
``quickshift``  ``side >= 64``: ``kernel_size = 4 side / 224``, ``max_dist = 50 kernel_size``,
                ``ratio = 0.2`` (lime_image's 4, 200, 0.2 at 224x224); ``side < 64``:
                ``kernel_size = 1``, ``max_dist = 1.5``, ``ratio = 3.0`` on greyscale (20-40
                regions on 28x28 Fashion-MNIST, 4-9 on 8x8 digits) and ``0.03`` on colour (Lab
                values span 100 times more; 15-50 regions on 32x32 photographs)
``felzenszwalb`` ``scale = 200 area / 224^2``, ``sigma = max(0.5, 0.8 side / 224)``,
                ``min_size = max(m, round(area / 1000))`` with ``m = 5`` on greyscale and ``8``
                on colour (scale 200, sigma 0.8, min_size 50 at 224x224; 30-50 regions on 28x28
                Fashion-MNIST, 35-65 on 32x32 photographs)
``grid``        square cells of side ``cell = max(2, round(sqrt(area / 50)))`` pixels (about 50
                cells: 4x4-pixel cells on 28x28, 32x32 on 224x224, 2x2 on 8x8)
=============== =========================================================================

Every default aims at a few tens of superpixels, the range lime_image's quickshift gives on
ImageNet images, and at least 4 pixels per superpixel on average: a one-pixel superpixel is its own
mean colour, so hiding it with ``hide="mean"`` would change nothing. ``create(name, **kw)``
builds one by name; ``names()`` lists them.

Example:
    >>> import torch
    >>> seg = Grid(cell=2)(torch.rand(1, 4, 6))
    >>> seg.tolist()
    [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustlens.errors import DTypeError, ParameterError, ShapeError
from robustlens.registry import Registry

__all__ = [
    "SEGMENTERS",
    "Felzenszwalb",
    "Grid",
    "Quickshift",
    "Segmenter",
    "Slic",
    "check_segments",
    "create",
    "names",
    "relabel",
    "segment",
]

#: Registered segmenters by name (``create(name, **kw)``).
SEGMENTERS: Registry[type[Segmenter]] = Registry("segmenter")

#: The number of superpixels the adaptive defaults aim at.
TARGET_SEGMENTS = 50


def names() -> list[str]:
    """Names of the registered segmenters."""
    return SEGMENTERS.names()


def create(name: str, /, **kwargs: Any) -> Segmenter:
    """Build segmenter ``name`` with ``kwargs`` (unknown keywords are refused)."""
    seg: Segmenter = SEGMENTERS.create(name, **kwargs)
    return seg


def relabel(labels: np.ndarray | Tensor) -> Tensor:
    """Map the ids of a label map onto ``0..S-1`` in increasing order of the original ids.

    Example:
        >>> relabel(torch.tensor([[5, 5], [9, 2]])).tolist()
        [[1, 1], [2, 0]]
    """
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    _, inverse = torch.unique(t.long(), return_inverse=True)
    return inverse.reshape(t.shape).long()


def check_segments(segments: Any, shape: tuple[int, int], *, where: str = "segments") -> Tensor:
    """A label map must be integer ``(H, W)`` matching the image with at least two regions.

    Returns it relabelled to ``0..S-1`` (int64, on the device it came on).

    Example:
        >>> check_segments(torch.zeros(3, 3, dtype=torch.long), (3, 3))
        Traceback (most recent call last):
        ...
        robustlens.errors.ParameterError: segments: the segmentation has 1 region; ...
    """
    if isinstance(segments, np.ndarray):
        segments = torch.from_numpy(segments)
    if not isinstance(segments, Tensor):
        raise DTypeError(
            f"{where} must be an integer tensor (H, W) of superpixel ids, got "
            f"{type(segments).__name__}"
        )
    if segments.is_floating_point() or segments.is_complex() or segments.dtype == torch.bool:
        raise DTypeError(f"{where} must hold integer superpixel ids, got dtype {segments.dtype}")
    if tuple(segments.shape) != tuple(shape):
        raise ShapeError(
            f"{where} must have the image's height and width {tuple(shape)}, got "
            f"{tuple(segments.shape)}"
        )
    out = relabel(segments).to(segments.device)
    count = int(out.max()) + 1
    if count < 2:
        raise ParameterError(
            f"{where}: the segmentation has {count} region; LIME needs at least 2 superpixels "
            "to switch on and off: use a finer segmenter (more n_segments, a smaller scale or "
            "max_dist) or segmenter='grid'"
        )
    return out


def _to_numpy(image: Tensor, where: str) -> np.ndarray:
    """``(C, H, W)`` tensor -> ``(H, W)`` for one channel, ``(H, W, C)`` otherwise, float64."""
    if not isinstance(image, Tensor):
        raise DTypeError(
            f"{where}: the image must be a torch.Tensor (C, H, W), got {type(image).__name__}"
        )
    if image.ndim != 3:
        raise ShapeError(f"{where}: the image must have shape (C, H, W), got {tuple(image.shape)}")
    arr = image.detach().to("cpu", torch.float64).numpy()
    return arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))


def _side_area(image: Tensor) -> tuple[float, int]:
    h, w = int(image.shape[-2]), int(image.shape[-1])
    return math.sqrt(h * w), h * w


def _positive(
    owner: object,
    name: str,
    value: float | int | None,
    *,
    allow_zero: bool = False,
    integer: bool = False,
) -> None:
    if value is None:
        return
    kind = "an int" if integer else "a float"
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    ok = ok and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ParameterError(
            f"{type(owner).__name__}: {name!r} must be {kind} {bound} or None, got {value!r}"
        )


@dataclass(frozen=True, kw_only=True)
class Segmenter:
    """Base of the segmenters: ``segmenter(image (C, H, W)) -> (H, W)`` int64 ids ``0..S-1``."""

    def __call__(self, image: Tensor) -> Tensor:
        where = type(self).__name__
        arr = _to_numpy(image, where)
        labels = self._segment(arr, image)
        return check_segments(
            torch.as_tensor(labels),
            (int(image.shape[-2]), int(image.shape[-1])),
            where=f"{where} segments",
        ).to(image.device)

    def _segment(self, arr: np.ndarray, image: Tensor) -> np.ndarray:
        raise NotImplementedError


@SEGMENTERS.register("slic")
@dataclass(frozen=True, kw_only=True)
class Slic(Segmenter):
    """SLIC superpixels (Achanta et al. 2012), scikit-image's ``slic``.

    ``n_segments=None``: ``min(50, H W / 4)``; ``compactness=None``: 10 on 3-channel images (Lab),
    0.1 otherwise; see the module table.

    Example:
        >>> import torch
        >>> ramp = torch.linspace(0, 1, 28).expand(1, 28, 28)
        >>> seg = Slic()(ramp)
        >>> seg.dtype, seg.shape, 10 <= int(seg.max()) + 1 <= 60
        (torch.int64, torch.Size([28, 28]), True)
    """

    n_segments: int | None = None
    compactness: float | None = None
    sigma: float = 0.0

    def __post_init__(self) -> None:
        _positive(self, "n_segments", self.n_segments, integer=True)
        _positive(self, "compactness", self.compactness)
        _positive(self, "sigma", self.sigma, allow_zero=True)

    def _segment(self, arr: np.ndarray, image: Tensor) -> np.ndarray:
        from skimage.segmentation import slic

        colour = arr.ndim == 3 and arr.shape[2] == 3
        compactness = (
            self.compactness if self.compactness is not None else (10.0 if colour else 0.1)
        )
        n_segments = self.n_segments
        if n_segments is None:
            _, area = _side_area(image)
            n_segments = max(2, min(TARGET_SEGMENTS, area // 4))
        out: np.ndarray = slic(
            arr,
            n_segments=n_segments,
            compactness=compactness,
            sigma=self.sigma,
            channel_axis=-1 if arr.ndim == 3 else None,
            convert2lab=colour,
            start_label=0,
        )
        return out


@SEGMENTERS.register("quickshift")
@dataclass(frozen=True, kw_only=True)
class Quickshift(Segmenter):
    """Quickshift mode seeking (Vedaldi & Soatto 2008), lime_image's default segmenter.

    ``None`` parameters adapt to the image size (module table). ``seed`` breaks ties (scikit-image
    adds a tiny random jitter).

    Example:
        >>> import torch
        >>> seg = Quickshift()(torch.rand(3, 28, 28))
        >>> int(seg.max()) + 1 >= 2
        True
    """

    kernel_size: float | None = None
    max_dist: float | None = None
    ratio: float | None = None
    sigma: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("kernel_size", "max_dist", "ratio"):
            _positive(self, name, getattr(self, name))
        _positive(self, "sigma", self.sigma, allow_zero=True)
        if self.kernel_size is not None and self.kernel_size < 1:
            raise ParameterError(
                f"Quickshift: 'kernel_size' must be a float >= 1 (scikit-image's bound), got "
                f"{self.kernel_size!r}"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ParameterError(f"Quickshift: 'seed' must be an int, got {self.seed!r}")

    def resolved(self, image: Tensor) -> tuple[float, float, float]:
        """``(kernel_size, max_dist, ratio)`` used on ``image``."""
        side, _ = _side_area(image)
        if side >= 64:
            k, d, r = max(1.0, 4.0 * side / 224.0), None, 0.2
            d = 50.0 * k
        else:
            k, d, r = 1.0, 1.5, (0.03 if image.shape[0] == 3 else 3.0)
        return (
            self.kernel_size if self.kernel_size is not None else k,
            self.max_dist if self.max_dist is not None else d,
            self.ratio if self.ratio is not None else r,
        )

    def _segment(self, arr: np.ndarray, image: Tensor) -> np.ndarray:
        from skimage.segmentation import quickshift

        k, d, r = self.resolved(image)
        if arr.ndim == 2:
            arr = arr[..., None]
        colour = arr.shape[2] == 3
        out: np.ndarray = quickshift(
            arr,
            ratio=r,
            kernel_size=k,
            max_dist=d,
            sigma=self.sigma,
            convert2lab=colour,
            rng=self.seed,
            channel_axis=-1,
        )
        return out


@SEGMENTERS.register("felzenszwalb")
@dataclass(frozen=True, kw_only=True)
class Felzenszwalb(Segmenter):
    """Graph-based segmentation (Felzenszwalb & Huttenlocher 2004), scikit-image's.

    ``None`` parameters adapt to the image size (module table).

    Example:
        >>> import torch
        >>> Felzenszwalb().resolved(torch.rand(3, 224, 224))
        (200.0, 0.8, 50)
    """

    scale: float | None = None
    sigma: float | None = None
    min_size: int | None = None

    def __post_init__(self) -> None:
        _positive(self, "scale", self.scale)
        _positive(self, "sigma", self.sigma, allow_zero=True)
        _positive(self, "min_size", self.min_size, integer=True)

    def resolved(self, image: Tensor) -> tuple[float, float, int]:
        """``(scale, sigma, min_size)`` used on ``image``."""
        side, area = _side_area(image)
        return (
            self.scale if self.scale is not None else 200.0 * area / 224.0**2,
            self.sigma if self.sigma is not None else round(max(0.5, 0.8 * side / 224.0), 6),
            self.min_size
            if self.min_size is not None
            else max(8 if image.shape[0] == 3 else 5, round(area / 1000)),
        )

    def _segment(self, arr: np.ndarray, image: Tensor) -> np.ndarray:
        from skimage.segmentation import felzenszwalb

        scale, sigma, min_size = self.resolved(image)
        out: np.ndarray = felzenszwalb(
            arr,
            scale=scale,
            sigma=sigma,
            min_size=min_size,
            channel_axis=-1 if arr.ndim == 3 else None,
        )
        return out


@SEGMENTERS.register("grid")
@dataclass(frozen=True, kw_only=True)
class Grid(Segmenter):
    """A regular grid of square cells of side ``cell`` pixels (the last row/column may be smaller).

    ``cell=None``: ``max(2, round(sqrt(H W / 50)))``, about 50 cells. Needs no image content, so
    it is the segmentation of choice for closed-form tests and for images without structure.
    """

    cell: int | None = None

    def __post_init__(self) -> None:
        _positive(self, "cell", self.cell, integer=True)

    def resolved(self, image: Tensor) -> int:
        """The cell side used on ``image``."""
        _, area = _side_area(image)
        if self.cell is not None:
            return self.cell
        return max(2, round(math.sqrt(area / TARGET_SEGMENTS)))

    def __call__(self, image: Tensor) -> Tensor:
        if not isinstance(image, Tensor) or image.ndim != 3:
            _to_numpy(image, "Grid")  # raises the shape / type error
        cell = self.resolved(image)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        rows = torch.arange(h, device=image.device) // cell
        cols = torch.arange(w, device=image.device) // cell
        ncols = (w + cell - 1) // cell
        seg = rows[:, None] * ncols + cols[None, :]
        return check_segments(seg, (h, w), where="Grid segments")


SegmenterLike = str | Segmenter | Callable[[Tensor], Any]


def segment(image: Tensor, segmenter: SegmenterLike = "slic") -> Tensor:
    """Segment ``image`` ``(C, H, W)`` with a segmenter given by name, instance or callable.

    A callable may return a tensor or a numpy array of integer ids; the result is checked and
    relabelled to ``0..S-1``.

    Shape: (C, H, W) -> (H, W) int64.

    Example:
        >>> import torch
        >>> segment(torch.rand(1, 8, 8), "grid").unique().numel()
        16
    """
    if isinstance(segmenter, str):
        segmenter = create(segmenter)
    if isinstance(segmenter, Segmenter):
        return segmenter(image)
    if not callable(segmenter):
        raise ParameterError(
            f"segmenter must be a name ({', '.join(names())}), a Segmenter or a callable "
            f"image -> ids, got {type(segmenter).__name__}"
        )
    out = segmenter(image)
    shape = (int(image.shape[-2]), int(image.shape[-1]))
    return check_segments(out, shape, where="the segmenter's output").to(image.device)
