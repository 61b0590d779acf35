"""Plant a spurious cue, correlated with the class at a chosen strength, in any image data set.

Stock and Cisse (2018, "ConvNets and ImageNet beyond accuracy") found networks that answer from
the context of an object rather than the object ("ping-pong players are often dressed in red").
Here the context is planted on purpose, so that a model's reliance on it can be measured
(:func:`robustlens.bias.cue_reliance`).

Each class ``k`` of ``K`` owns one cue. With probability ``strength`` an image gets the cue of its
own class; otherwise it gets the cue of one of the other ``K - 1`` classes, drawn uniformly. So
``strength=1`` makes the cue a perfect predictor, ``strength=1/K`` makes it independent of the
class, and ``strength=0`` makes every cue lie. The kinds:

- ``"patch"``: a small square in a corner, overwriting the image. Class ``k`` picks the corner
  ``k % 4`` (top-left, top-right, bottom-right, bottom-left) and the pattern ``k // 4`` (solid,
  hollow square, checkerboard, plus, diagonal; white on black), so up to 20 classes. The side is
  ``patch_size`` (default: 18% of the image side, at least 3 pixels).
- ``"tint"``: the image is multiplied by a colour of hue ``k / K`` (saturation 0.6). Greyscale
  images become three-channel (RGB) images; models trained on them take 3 channels.
- ``"brightness"``: the image is multiplied by a gain from 1 (class 0) down to 0.4 (class
  ``K - 1``); the number of channels is kept.
- ``"background"``: pixels darker than 0.05 in every channel (the background of Fashion-MNIST and
  of the digits) are replaced by a faint sinusoidal grating (values in ``[0, 0.35]``, period 4
  pixels) whose orientation is ``180 k / K`` degrees, at a random phase per image.

Example:
    >>> import robustlens as rl
    >>> ds = rl.data.load("digits", split="test")
    >>> planted = plant_cue(ds, kind="patch", strength=0.9, seed=0)
    >>> planted.dataset.x.shape, planted.dataset.y.equal(ds.y)
    (torch.Size([450, 1, 8, 8]), True)
    >>> round(planted.aligned.float().mean().item(), 2)
    0.9
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from robustlens._checks import check_images
from robustlens.data.cue_conflict import _check_seed, _int_at_least
from robustlens.data.dataset import ImageDataset
from robustlens.errors import DTypeError, ParameterError, ShapeError
from robustlens.registry import Registry

__all__ = ["CUES", "CueKind", "PlantedCue", "apply_cue", "cue_test_sets", "plant_cue"]

CueKind = Literal["patch", "tint", "brightness", "background"]
CueFn = Callable[[Tensor, Tensor, int, "int | None", torch.Generator], Tensor]
CUES: Registry[CueFn] = Registry("cue kind")

_PATTERNS = 5  # solid, hollow, checker, plus, diagonal
_CORNERS = 4
_TINT_SATURATION = 0.6
_BACKGROUND_THRESHOLD = 0.05
_BACKGROUND_AMPLITUDE = 0.35
_BACKGROUND_PERIOD = 4.0


# --------------------------------------------------------------------------- the cues


def patch_size_for(side: int) -> int:
    """Default side of the corner patch for images of side ``side`` (18%, at least 3 pixels)."""
    return max(3, round(0.18 * side))


def _patterns(p: int, device: torch.device) -> Tensor:
    """The ``_PATTERNS`` binary ``p x p`` patterns, float ``(P, p, p)``; distinct for ``p >= 3``."""
    i = torch.arange(p, device=device)
    r, c = i[:, None], i[None, :]
    border = (r == 0) | (r == p - 1) | (c == 0) | (c == p - 1)
    mid = p // 2
    pats = [
        torch.ones(p, p, dtype=torch.bool, device=device),
        border,
        (r + c) % 2 == 0,
        (r == mid) | (c == mid),
        r == c,
    ]
    return torch.stack(pats).float()


@CUES.register("patch")
def _patch(x: Tensor, cue: Tensor, k: int, patch_size: int | None, g: torch.Generator) -> Tensor:
    n, c, h, w = x.shape
    p = patch_size if patch_size is not None else patch_size_for(min(h, w))
    margin = max(1, round(0.07 * min(h, w)))
    if p + margin > min(h, w) // 2:
        raise ParameterError(
            f"plant_cue: a {p}-pixel patch {margin} pixel(s) from the corner does not fit four "
            f"distinct corners of {h}x{w} images; pass a smaller patch_size"
        )
    tiles = _patterns(p, x.device)[cue // _CORNERS]  # (N, p, p)
    corner = cue % _CORNERS
    top = torch.where((corner == 0) | (corner == 1), margin, h - margin - p)
    left = torch.where((corner == 0) | (corner == 3), margin, w - margin - p)
    # Scatter each tile with one batched index: rows top..top+p, columns left..left+p.
    rows = top[:, None] + torch.arange(p, device=x.device)  # (N, p)
    cols = left[:, None] + torch.arange(p, device=x.device)  # (N, p)
    out = x.clone()
    batch = torch.arange(n, device=x.device)[:, None, None]
    view = out.permute(0, 2, 3, 1)  # (N, H, W, C), shares storage with out
    view[batch, rows[:, :, None], cols[:, None, :]] = tiles[..., None].expand(n, p, p, c)
    return out


def tint_colours(k: int, device: torch.device | str = "cpu") -> Tensor:
    """The ``K`` RGB colours of the ``"tint"`` cue, float ``(K, 3)`` with maximum 1 per row."""
    rgb = [colorsys.hsv_to_rgb(j / k, _TINT_SATURATION, 1.0) for j in range(k)]
    return torch.tensor(rgb, dtype=torch.float32, device=device)


@CUES.register("tint")
def _tint(x: Tensor, cue: Tensor, k: int, patch_size: int | None, g: torch.Generator) -> Tensor:
    if x.shape[1] not in (1, 3):
        raise ShapeError(
            f"plant_cue: the 'tint' cue needs greyscale or RGB images, got {x.shape[1]} channels; "
            "use kind='brightness' instead"
        )
    rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    return rgb * tint_colours(k, x.device)[cue][:, :, None, None]


def brightness_gains(k: int, device: torch.device | str = "cpu") -> Tensor:
    """The ``K`` gains of the ``"brightness"`` cue, float ``(K,)`` from 1 down to 0.4."""
    return torch.linspace(1.0, 0.4, k, device=device)


@CUES.register("brightness")
def _brightness(
    x: Tensor, cue: Tensor, k: int, patch_size: int | None, g: torch.Generator
) -> Tensor:
    return x * brightness_gains(k, x.device)[cue][:, None, None, None]


@CUES.register("background")
def _background(
    x: Tensor, cue: Tensor, k: int, patch_size: int | None, g: torch.Generator
) -> Tensor:
    n, _, h, w = x.shape
    phase = (2 * math.pi * torch.rand(n, generator=g)).to(x.device)
    theta = math.pi * cue.float() / k
    rows = torch.arange(h, device=x.device, dtype=torch.float32)[None, :, None]
    cols = torch.arange(w, device=x.device, dtype=torch.float32)[None, None, :]
    t = cols * torch.cos(theta)[:, None, None] + rows * torch.sin(theta)[:, None, None]
    wave = 2 * math.pi * t / _BACKGROUND_PERIOD + phase[:, None, None]
    grating = _BACKGROUND_AMPLITUDE * (0.5 + 0.5 * torch.sin(wave))  # (N, H, W)
    dark = (x < _BACKGROUND_THRESHOLD).all(dim=1, keepdim=True)
    return torch.where(dark, grating[:, None], x)


# --------------------------------------------------------------------------- public API


def apply_cue(
    x: Tensor,
    cue_class: Tensor,
    kind: CueKind = "patch",
    *,
    num_classes: int,
    seed: int = 0,
    patch_size: int | None = None,
) -> Tensor:
    """Draw the cue of class ``cue_class[i]`` on image ``x[i]`` (no labels involved).

    Shape: x (N, C, H, W) in [0, 1], cue_class (N,) int64 -> (N, C', H, W) in [0, 1], with
    ``C' = 3`` for ``"tint"`` on greyscale images and ``C' = C`` otherwise. Only the
    ``"background"`` cue is random (its phase), drawn from ``seed``.

    Example:
        >>> import torch
        >>> out = apply_cue(torch.zeros(2, 1, 12, 12), torch.tensor([0, 1]), "patch", num_classes=2)
        >>> out[0, 0, 1:4, 1:4].sum().item(), out[1, 0, 1:4, 8:11].sum().item()
        (9.0, 9.0)
    """
    where = "apply_cue"
    fn = CUES.get(kind)
    x = check_images(x, where=where)
    k = _int_at_least(where, "num_classes", num_classes, 2)
    seed = _check_seed(where, seed)
    if kind == "patch" and k > _CORNERS * _PATTERNS:
        raise ParameterError(
            f"{where}: the 'patch' cue encodes at most {_CORNERS * _PATTERNS} classes, got "
            f"num_classes={k}; use 'tint', 'brightness' or 'background'"
        )
    if patch_size is not None:
        patch_size = _int_at_least(where, "patch_size", patch_size, 3)
    if (
        not isinstance(cue_class, Tensor)
        or cue_class.shape != (len(x),)
        or cue_class.is_floating_point()
    ):
        raise ShapeError(f"{where}: 'cue_class' must be an int64 tensor of shape ({len(x)},)")
    if len(cue_class) and (int(cue_class.min()) < 0 or int(cue_class.max()) >= k):
        raise ParameterError(f"{where}: 'cue_class' must lie in 0..{k - 1}")
    g = torch.Generator().manual_seed(seed)
    out = fn(x, cue_class.long().to(x.device), k, patch_size, g)
    return out.clamp(0.0, 1.0)


@dataclass(frozen=True, eq=False)
class PlantedCue:
    """A data set with a planted cue: ``dataset`` holds the images (true labels kept), and
    ``cue_class`` (int64 ``(N,)``) the class whose cue each image carries; ``aligned`` (bool
    ``(N,)``) is ``cue_class == dataset.y``."""

    dataset: ImageDataset
    cue_class: Tensor
    kind: str
    strength: float
    seed: int

    @property
    def aligned(self) -> Tensor:
        return self.cue_class == self.dataset.y

    @property
    def x(self) -> Tensor:
        return self.dataset.x

    @property
    def y(self) -> Tensor:
        return self.dataset.y

    def __len__(self) -> int:
        return len(self.dataset)


def _check_dataset(ds: object, where: str) -> ImageDataset:
    if not isinstance(ds, ImageDataset):
        raise DTypeError(
            f"{where}: 'ds' must be a robustlens ImageDataset, got {type(ds).__name__}; wrap "
            "tensors with rl.data.ImageDataset(x, y, classes=...)"
        )
    return ds


def _strength(where: str, strength: object) -> float:
    ok = isinstance(strength, int | float) and not isinstance(strength, bool)
    if not ok or not 0.0 <= float(strength) <= 1.0:  # type: ignore[arg-type]
        raise ParameterError(
            f"{where}: 'strength' must be a float in [0, 1] (the probability that an image "
            f"carries its own class's cue), got {strength!r}"
        )
    return float(strength)  # type: ignore[arg-type]


def _planted(
    ds: ImageDataset,
    cue: Tensor,
    kind: CueKind,
    strength: float,
    seed: int,
    patch_size: int | None,
) -> PlantedCue:
    x = apply_cue(ds.x, cue, kind, num_classes=ds.num_classes, seed=seed + 1, patch_size=patch_size)
    out = ImageDataset(x, ds.y, classes=list(ds.classes), name=f"{ds.name}+{kind}@{strength:g}")
    return PlantedCue(dataset=out, cue_class=cue, kind=kind, strength=strength, seed=seed)


def plant_cue(
    ds: ImageDataset,
    kind: CueKind = "patch",
    strength: float = 0.9,
    *,
    seed: int = 0,
    patch_size: int | None = None,
) -> PlantedCue:
    """Plant a ``kind`` cue that agrees with the label of each image with probability ``strength``.

    Args:
        ds: any :class:`ImageDataset` with ``K >= 2`` classes.
        kind: ``"patch"``, ``"tint"``, ``"brightness"`` or ``"background"`` (see the module).
        strength: probability that an image carries its own class's cue; otherwise it carries the
            cue of another class, drawn uniformly. ``1 / K`` means no correlation.
        seed: seed of the draws; the same seed gives the same images.
        patch_size: side of the ``"patch"`` cue in pixels (>= 3).

    Returns:
        :class:`PlantedCue`, whose ``dataset`` trains or tests a model like any other.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits", split="test")
        >>> tinted = plant_cue(ds, kind="tint", strength=1.0)
        >>> tinted.dataset.shape, bool(tinted.aligned.all())
        ((3, 8, 8), True)
    """
    where = "plant_cue"
    ds = _check_dataset(ds, where)
    CUES.get(kind)
    strength = _strength(where, strength)
    seed = _check_seed(where, seed)
    k = ds.num_classes
    if k < 2:
        raise ParameterError(f"{where}: the data set needs at least 2 classes, got {k}")
    g = torch.Generator().manual_seed(seed)
    y = ds.y.cpu()
    keep = torch.rand(len(ds), generator=g) < strength
    other = (y + torch.randint(1, k, (len(ds),), generator=g)) % k
    cue = torch.where(keep, y, other).to(ds.y.device)
    return _planted(ds, cue, kind, strength, seed, patch_size)


def cue_test_sets(
    ds: ImageDataset,
    kind: CueKind = "patch",
    *,
    seed: int = 0,
    patch_size: int | None = None,
) -> tuple[PlantedCue, PlantedCue]:
    """The same images with every cue aligned (``strength=1``) and every cue conflicting
    (``strength=0``: the cue of another class, drawn uniformly), for measuring reliance on it.

    Example:
        >>> import robustlens as rl
        >>> aligned, conflicting = cue_test_sets(rl.data.load("digits", split="test"), "patch")
        >>> bool(aligned.aligned.all()), bool(conflicting.aligned.any())
        (True, False)
    """
    return (
        plant_cue(ds, kind, 1.0, seed=seed, patch_size=patch_size),
        plant_cue(ds, kind, 0.0, seed=seed, patch_size=patch_size),
    )


PLANTED: dict[str, tuple[str, CueKind, float]] = {
    "fashion-mnist-patch": ("fashion-mnist", "patch", 0.9),
}
"""Registered data sets with a planted cue: name -> (base data set, kind, strength). The train
split is planted with seed 0, the test split with seed 1."""


def load_planted(name: str, split: str, base: ImageDataset) -> ImageDataset:
    """The ``split`` of registered data set ``name`` (see :data:`PLANTED`), planted in ``base``."""
    _, kind, strength = PLANTED[name]
    seed = 0 if split == "train" else 1
    ds = plant_cue(base, kind, strength, seed=seed).dataset
    return ImageDataset(ds.x, ds.y, classes=list(ds.classes), name=name)
