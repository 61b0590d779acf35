"""Cue-conflict stimuli: a shape of one class filled with the texture of another.

Geirhos et al. (2018, "ImageNet-trained CNNs are biased towards texture") showed people images whose
shape comes from one category and texture from another, and counted which cue a network follows.
This module draws such stimuli procedurally, in torch, so that both cues are known exactly.

The label space has ``K <= 6`` classes; class ``k`` is the pair ``(SHAPES[k], TEXTURES[k])``:

=====  ========  ========  ============================================================
  k    shape     texture   texture pattern (period 4 to 6 pixels, any orientation)
=====  ========  ========  ============================================================
  0    circle    stripes   straight stripes
  1    square    checker   checkerboard of half-period cells
  2    triangle  dots      round dots on a square lattice
  3    cross     grid      thin lines on a square lattice
  4    star      waves     wavy stripes
  5    ring      noise     random binary blocks of 2x2 pixels
=====  ========  ========  ============================================================

Each stimulus draws its own position, scale, rotation, texture orientation, period and phase, and
grey levels (background, dark and bright texture phases: the contrast), all from one seeded
generator. The same drawn geometry renders four ways (``mode``):

- ``"textured"``: the silhouette filled with the texture, on a flat background;
- ``"silhouette"``: the silhouette filled with one flat grey (the texture's mean), no texture;
- ``"texture"``: the texture over the whole image, no silhouette.

A model trained on the *aligned* set (shape and texture of the same class) can use either cue;
:func:`robustlens.bias.shape_bias` tells which one it learnt. Images are anti-aliased by rendering
at twice the resolution and averaging 2x2 blocks.

Example:
    >>> stim = cue_conflict(12, size=32, seed=0)
    >>> stim.x.shape, stim.x.dtype, bool(stim.conflicting.all())
    (torch.Size([12, 1, 32, 32]), torch.float32, True)
    >>> stim.classes[:2]
    ['circle/stripes', 'square/checker']
    >>> stim.shape_only().x.shape, stim.texture_only().y.equal(stim.texture_label)
    (torch.Size([12, 1, 32, 32]), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlens.data.dataset import ImageDataset
from robustlens.errors import ParameterError

__all__ = [
    "SHAPES",
    "SHAPE_SETS",
    "TEXTURES",
    "CueConflict",
    "ShapeSet",
    "cue_conflict",
    "load_shapes",
    "shapes_dataset",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "ring")
TEXTURES: tuple[str, ...] = ("stripes", "checker", "dots", "grid", "waves", "noise")
Mode = Literal["textured", "silhouette", "texture"]
ShapeSet = Literal["aligned", "shape-only", "texture-only", "cue-conflict"]
SHAPE_SETS: tuple[ShapeSet, ...] = ("aligned", "shape-only", "texture-only", "cue-conflict")

_SUPERSAMPLE = 2  # render at 2x and average 2x2 blocks (anti-aliasing)
_NOISE_CELL = 2  # side in pixels of one block of the "noise" texture
_CHUNK = 1024  # images rendered at once (bounds memory)


# --------------------------------------------------------------------------- validation


def _int_at_least(
    where: str, name: str, value: object, minimum: int, maximum: int | None = None
) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not ok or (maximum is not None and value > maximum):  # type: ignore[operator]
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ParameterError(f"{where}: {name!r} must be an int {bound}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def _check_seed(where: str, seed: object) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ParameterError(f"{where}: 'seed' must be an int, got {seed!r}")
    return seed


# --------------------------------------------------------------------------- per-stimulus draws


@dataclass(frozen=True)
class _Params:
    """Everything drawn at random for ``N`` stimuli (all tensors have ``N`` rows)."""

    centre: Tensor  # (N, 2) x, y as fractions of the image side
    radius: Tensor  # (N,) fraction of the side
    angle: Tensor  # (N,) shape rotation, radians
    tex_angle: Tensor  # (N,) texture rotation, radians
    period: Tensor  # (N,) texture period, pixels
    phase: Tensor  # (N, 2) texture phase, in periods
    background: Tensor  # (N,) grey level
    low: Tensor  # (N,) dark texture phase
    high: Tensor  # (N,) bright texture phase
    tint: Tensor  # (N, C) per-channel gain (ones for greyscale)
    noise: Tensor  # (N, m, m) bool blocks of the "noise" texture

    def index(self, idx: Any) -> _Params:
        return _Params(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def to(self, device: torch.device) -> _Params:
        return _Params(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _draw(n: int, size: int, channels: int, g: torch.Generator) -> _Params:
    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    radius = u(0.24, 0.34, n)
    # The shape (extent <= radius) stays inside the image with a small margin.
    slack = (0.5 - radius - 0.03).clamp(min=0.0)
    centre = 0.5 + (2 * torch.rand(n, 2, generator=g) - 1) * slack[:, None]
    m = -(-size // _NOISE_CELL)
    return _Params(
        centre=centre,
        radius=radius,
        angle=u(0.0, 2 * math.pi, n),
        tex_angle=u(0.0, math.pi, n),
        period=u(4.0, 6.0, n),
        phase=torch.rand(n, 2, generator=g),
        background=u(0.0, 0.15, n),
        low=u(0.3, 0.5, n),
        high=u(0.75, 1.0, n),
        tint=u(0.5, 1.0, n, channels) if channels > 1 else torch.ones(n, 1),
        noise=torch.rand(n, m, m, generator=g) < 0.5,
    )


# --------------------------------------------------------------------------- shapes
# Each takes canonical coordinates (u, v) (unit = the stimulus radius) and returns a bool mask.


def _circle(u: Tensor, v: Tensor) -> Tensor:
    return u * u + v * v <= 0.85**2


def _square(u: Tensor, v: Tensor) -> Tensor:
    return (u.abs() <= 0.7) & (v.abs() <= 0.7)


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    # Equilateral, circumradius 1 (inradius 1/2): inside the three edges' half-planes.
    inside = torch.ones_like(u, dtype=torch.bool)
    for deg in (90.0, 210.0, 330.0):
        a = math.radians(deg)
        inside &= u * math.cos(a) + v * math.sin(a) <= 0.5
    return inside


def _cross(u: Tensor, v: Tensor) -> Tensor:
    a, b = u.abs(), v.abs()
    return ((a <= 0.3) & (b <= 0.95)) | ((b <= 0.3) & (a <= 0.95))


def _star(u: Tensor, v: Tensor) -> Tensor:
    # Five points at radius 1, inner corners at radius 0.45: fold the angle into one half-sector
    # and test against the edge from the outer point (1, 0) to the inner corner.
    sector = 2 * math.pi / 5
    r = torch.sqrt(u * u + v * v)
    t = torch.atan2(v, u)
    t = (t - sector * torch.round(t / sector)).abs()
    qx, qy = r * torch.cos(t), r * torch.sin(t)
    px, py = 0.45 * math.cos(sector / 2), 0.45 * math.sin(sector / 2)
    dx, dy = px - 1.0, py
    return dx * qy - dy * (qx - 1.0) >= 0


def _ring(u: Tensor, v: Tensor) -> Tensor:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.55**2)


_SHAPE_FNS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    _circle,
    _square,
    _triangle,
    _cross,
    _star,
    _ring,
)


# --------------------------------------------------------------------------- textures
# Each takes texture coordinates (a, b) in periods and returns a bool pattern.


def _frac(t: Tensor) -> Tensor:
    return t - torch.floor(t)


def _stripes(a: Tensor, b: Tensor) -> Tensor:
    return _frac(a) < 0.5


def _checker(a: Tensor, b: Tensor) -> Tensor:
    return (torch.floor(2 * a) + torch.floor(2 * b)).remainder(2) == 0


def _dots(a: Tensor, b: Tensor) -> Tensor:
    return (_frac(a) - 0.5) ** 2 + (_frac(b) - 0.5) ** 2 <= 0.3**2


def _grid(a: Tensor, b: Tensor) -> Tensor:
    return torch.minimum((_frac(a) - 0.5).abs(), (_frac(b) - 0.5).abs()) >= 0.38


def _waves(a: Tensor, b: Tensor) -> Tensor:
    return _frac(a + 0.3 * torch.sin(2 * math.pi * b / 1.5)) < 0.5


_TEXTURE_FNS: tuple[Callable[[Tensor, Tensor], Tensor] | None, ...] = (
    _stripes,
    _checker,
    _dots,
    _grid,
    _waves,
    None,  # noise: read from the drawn blocks
)


# --------------------------------------------------------------------------- rendering


def _by_class(
    labels: Tensor, fns: Sequence[Callable[[Tensor, Tensor], Tensor] | None], a: Tensor, b: Tensor
) -> Tensor:
    """Evaluate ``fns[label]`` on each image's coordinates; one call per class present."""
    out = torch.zeros(a.shape, dtype=torch.bool, device=a.device)
    for k in torch.unique(labels).tolist():
        fn = fns[k]
        if fn is None:
            continue
        idx = (labels == k).nonzero().squeeze(1)
        out[idx] = fn(a[idx], b[idx])
    return out


def _render_chunk(p: _Params, shape: Tensor, texture: Tensor, size: int, mode: Mode) -> Tensor:
    device = p.centre.device
    s2 = size * _SUPERSAMPLE
    grid = (torch.arange(s2, device=device, dtype=torch.float32) + 0.5) / s2  # fractions of side
    n = len(shape)

    value: Tensor
    if mode != "silhouette":
        # Texture coordinates, in periods, from pixel positions.
        pix = grid * size
        X, Y = pix[None, None, :], pix[None, :, None]
        ct, st = torch.cos(p.tex_angle)[:, None, None], torch.sin(p.tex_angle)[:, None, None]
        period = p.period[:, None, None]
        a = (ct * X + st * Y) / period + p.phase[:, 0, None, None]
        b = (-st * X + ct * Y) / period + p.phase[:, 1, None, None]
        pattern = _by_class(texture, _TEXTURE_FNS, a, b)
        noisy = (texture == TEXTURES.index("noise")).nonzero().squeeze(1)
        if len(noisy):
            rep = _NOISE_CELL * _SUPERSAMPLE
            blocks = p.noise[noisy].repeat_interleave(rep, 1).repeat_interleave(rep, 2)
            pattern[noisy] = blocks[:, :s2, :s2]
        low, high = p.low[:, None, None], p.high[:, None, None]
        value = low + (high - low) * pattern.float()
    else:
        value = ((p.low + p.high) / 2)[:, None, None].expand(n, s2, s2)

    if mode != "texture":
        dx = grid[None, None, :] - p.centre[:, 0, None, None]
        dy = grid[None, :, None] - p.centre[:, 1, None, None]
        ca, sa = torch.cos(p.angle)[:, None, None], torch.sin(p.angle)[:, None, None]
        r = p.radius[:, None, None]
        u = (ca * dx + sa * dy) / r
        v = (-sa * dx + ca * dy) / r
        mask = _by_class(shape, _SHAPE_FNS, u, v)
        value = torch.where(mask, value, p.background[:, None, None])

    img = value[:, None] * p.tint[:, :, None, None]  # (n, C, s2, s2)
    return F.avg_pool2d(img, _SUPERSAMPLE).clamp_(0.0, 1.0)


def _render(p: _Params, shape: Tensor, texture: Tensor, size: int, mode: Mode) -> Tensor:
    chunks = [
        _render_chunk(
            p.index(slice(i, i + _CHUNK)),
            shape[i : i + _CHUNK],
            texture[i : i + _CHUNK],
            size,
            mode,
        )
        for i in range(0, len(shape), _CHUNK)
    ]
    return torch.cat(chunks)


def _class_names(k: int) -> list[str]:
    return [f"{s}/{t}" for s, t in zip(SHAPES[:k], TEXTURES[:k], strict=True)]


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True, eq=False)
class CueConflict:
    """Cue-conflict stimuli with their shape and texture labels, and the sets that match them.

    ``x`` holds images ``(N, C, size, size)`` float32 in ``[0, 1]``; ``shape_label`` and
    ``texture_label`` (int64 ``(N,)``) index ``classes``, whose entry ``k`` names the pair
    ``"shape/texture"`` of class ``k``. ``conflicting`` (bool ``(N,)``) marks the stimuli whose two
    labels differ: only those count in the shape-bias score.

    The companions re-render the *same* drawn geometry (position, scale, rotation, texture phase
    and contrast), so they differ from ``x`` in one cue only:

    - :meth:`aligned`: shape and texture of the shape's class, labelled by shape;
    - :meth:`shape_only`: the silhouette in one flat grey, labelled by shape;
    - :meth:`texture_only`: the texture over the whole image, labelled by texture.

    Integer indexing gives one image; slices, index tensors and boolean masks give a new
    ``CueConflict``.
    """

    x: Tensor
    shape_label: Tensor
    texture_label: Tensor
    classes: list[str]
    conflicting: Tensor
    size: int
    seed: int
    _params: _Params = field(repr=False)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @overload
    def __getitem__(self, index: int) -> Tensor: ...
    @overload
    def __getitem__(self, index: slice | Tensor | Sequence[int]) -> CueConflict: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int):
            return self.x[index]
        if isinstance(index, slice | Tensor | list | tuple | range):
            idx = index if isinstance(index, slice) else torch.as_tensor(index)
            return CueConflict(
                x=self.x[idx],
                shape_label=self.shape_label[idx],
                texture_label=self.texture_label[idx],
                classes=list(self.classes),
                conflicting=self.conflicting[idx],
                size=self.size,
                seed=self.seed,
                _params=self._params.index(idx),
            )
        raise TypeError(
            f"CueConflict indices are ints, slices, index tensors or boolean masks, got "
            f"{type(index).__name__}"
        )

    def __repr__(self) -> str:
        return (
            f"CueConflict(n={len(self)}, size={self.size}, channels={self.x.shape[1]}, "
            f"classes={self.num_classes}, conflicting={int(self.conflicting.sum())})"
        )

    def _dataset(
        self, shape: Tensor, texture: Tensor, mode: Mode, y: Tensor, name: str
    ) -> ImageDataset:
        x = _render(self._params, shape, texture, self.size, mode)
        return ImageDataset(x, y.clone(), classes=list(self.classes), name=name)

    def dataset(self, label: Literal["shape", "texture"] = "shape") -> ImageDataset:
        """The stimuli as an :class:`ImageDataset` labelled by their ``label`` cue."""
        if label not in ("shape", "texture"):
            raise ParameterError(
                f"CueConflict.dataset: 'label' must be 'shape' or 'texture', got {label!r}"
            )
        y = self.shape_label if label == "shape" else self.texture_label
        return ImageDataset(
            self.x, y.clone(), classes=list(self.classes), name="shapes-cue-conflict"
        )

    def aligned(self) -> ImageDataset:
        """The same silhouettes filled with the texture of their own class, labelled by shape."""
        return self._dataset(
            self.shape_label, self.shape_label, "textured", self.shape_label, "shapes-aligned"
        )

    def shape_only(self) -> ImageDataset:
        """The same silhouettes in one flat grey (no texture), labelled by shape."""
        return self._dataset(
            self.shape_label,
            self.texture_label,
            "silhouette",
            self.shape_label,
            "shapes-shape-only",
        )

    def texture_only(self) -> ImageDataset:
        """The same textures over the whole image (no silhouette), labelled by texture."""
        return self._dataset(
            self.shape_label,
            self.texture_label,
            "texture",
            self.texture_label,
            "shapes-texture-only",
        )


def cue_conflict(
    n: int,
    size: int = 32,
    seed: int = 0,
    *,
    channels: int = 1,
    num_classes: int = 6,
    independent: bool = False,
    device: str | torch.device = "cpu",
) -> CueConflict:
    """Draw ``n`` cue-conflict stimuli: the shape of one class filled with another's texture.

    Args:
        n: number of stimuli (>= 1).
        size: image side in pixels (>= 16).
        seed: seed of every random draw; the same seed gives the same stimuli.
        channels: 1 (grey) or 3 (each stimulus gets a random colour gain per channel, unrelated
            to its classes).
        num_classes: ``K`` in 2..6; the first ``K`` shape/texture pairs of the module's table.
        independent: draw the texture class independently of the shape class, so about ``1/K``
            of the stimuli are aligned (``conflicting`` is false there). By default every stimulus
            conflicts: its texture class is drawn uniformly among the other ``K - 1``.
        device: where the stimuli are rendered and stored.

    Returns:
        :class:`CueConflict` with ``x`` ``(n, channels, size, size)`` float32 in ``[0, 1]``.

    Example:
        >>> stim = cue_conflict(100, size=16, seed=3, num_classes=4, independent=True)
        >>> stim.x.shape, 0 < int(stim.conflicting.sum()) < 100
        (torch.Size([100, 1, 16, 16]), True)
        >>> bool((stim.conflicting == (stim.shape_label != stim.texture_label)).all())
        True
    """
    where = "cue_conflict"
    n = _int_at_least(where, "n", n, 1)
    size = _int_at_least(where, "size", size, 16)
    seed = _check_seed(where, seed)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ParameterError(f"{where}: 'channels' must be 1 or 3, got {channels!r}")
    k = _int_at_least(where, "num_classes", num_classes, 2, len(SHAPES))
    if not isinstance(independent, bool):
        raise ParameterError(f"{where}: 'independent' must be a bool, got {independent!r}")
    dev = torch.device(device)

    g = torch.Generator().manual_seed(seed)
    shape = torch.randint(0, k, (n,), generator=g)
    if independent:
        texture = torch.randint(0, k, (n,), generator=g)
    else:
        texture = (shape + torch.randint(1, k, (n,), generator=g)) % k
    params = _draw(n, size, channels, g).to(dev)
    shape, texture = shape.to(dev), texture.to(dev)
    x = _render(params, shape, texture, size, "textured")
    return CueConflict(
        x=x,
        shape_label=shape,
        texture_label=texture,
        classes=_class_names(k),
        conflicting=shape != texture,
        size=size,
        seed=seed,
        _params=params,
    )


def shapes_dataset(
    kind: ShapeSet,
    n: int,
    *,
    size: int = 32,
    seed: int = 0,
    channels: int = 1,
    num_classes: int = 6,
) -> ImageDataset:
    """A labelled set of ``n`` shape/texture images as an :class:`ImageDataset`.

    ``kind`` picks the set (all four share the geometry drawn for ``seed``):

    - ``"aligned"``: shape and texture of the same class (the training set of ``shapes-cnn``);
    - ``"shape-only"``: silhouettes without texture, labelled by shape;
    - ``"texture-only"``: textures without silhouette, labelled by texture;
    - ``"cue-conflict"``: every shape filled with another class's texture, labelled by shape.

    ``rl.data.load("shapes-<kind>", split=...)`` gives these with ``size=32``: 10,000 training
    images (seed 0) and 2,000 test images (seed 1).

    Example:
        >>> ds = shapes_dataset("aligned", 60, seed=0)
        >>> ds.name, ds.x.shape, ds.class_counts().sum().item()
        ('shapes-aligned', torch.Size([60, 1, 32, 32]), 60)
    """
    if kind not in SHAPE_SETS:
        from robustlens.registry import closest

        guess = closest(str(kind), list(SHAPE_SETS))
        hint = f"; did you mean {guess!r}?" if guess else ""
        raise ParameterError(
            f"shapes_dataset: 'kind' must be one of {', '.join(map(repr, SHAPE_SETS))}, "
            f"got {kind!r}{hint}"
        )
    stim = cue_conflict(n, size, seed, channels=channels, num_classes=num_classes)
    if kind == "aligned":
        return stim.aligned()
    if kind == "shape-only":
        return stim.shape_only()
    if kind == "texture-only":
        return stim.texture_only()
    return stim.dataset("shape")


SPLITS: dict[str, tuple[int, int]] = {"train": (10_000, 0), "test": (2_000, 1)}


def load_shapes(kind: ShapeSet, split: str) -> ImageDataset:
    """The ``split`` (``"train"`` or ``"test"``) of the registered ``shapes-<kind>`` data set."""
    if split not in SPLITS:
        raise ParameterError(f"shapes-{kind}: 'split' must be 'train' or 'test', got {split!r}")
    n, seed = SPLITS[split]
    return shapes_dataset(kind, n, size=32, seed=seed)
