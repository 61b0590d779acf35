"""Random differentiable image transformations, and how often an adversarial image survives them.

:class:`RandomTransform` is the transformation distribution of Athalye et al. 2017 ("Synthesizing
robust adversarial examples"): each image is rotated, rescaled and shifted about its centre, then
lightened or darkened and given Gaussian noise. It is differentiable with respect to the images, so
Expectation over Transformation (:class:`robustlens.attacks.EOT`) can ascend the expected loss
through it. Any callable ``transform(x, generator) -> x`` with the same shapes can stand in its
place (for example :meth:`robustlens.attacks.PatchResult.place`).

:func:`transformed_success` measures what such an attack buys: per image, the fraction of fresh
random transformations, drawn independently of the attack, under which it still succeeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens._checks import (
    check_images,
    check_labels,
    check_logits,
    check_model,
    check_positive,
    check_probability,
    check_same_device,
)
from robustlens._runtime import inference_mode
from robustlens.errors import DTypeError, ParameterError, ShapeError

__all__ = [
    "RandomTransform",
    "Transform",
    "affine_warp",
    "check_range",
    "rotation_factor",
    "transformed_success",
]

#: The contract of ``transform=`` arguments: images (N, C, H, W) and a generator -> images.
Transform = Callable[[Tensor, torch.Generator], Tensor]


def affine_warp(
    x: Tensor, theta: Tensor, *, size: tuple[int, int] | None = None, fill: float = 0.0
) -> Tensor:
    """Resample ``x`` through the affine maps ``theta`` (bilinear), reading ``fill`` outside ``x``.

    ``out[n, :, p] = x[n, :, theta[n] @ (p, 1)]``, with ``p`` in the normalised coordinates of
    :func:`torch.nn.functional.affine_grid` (``align_corners=False``: ``-1`` and ``1`` are the outer
    edges of the border pixels; first coordinate along the width, second down the height).
    Differentiable with respect to ``x`` and ``theta``.

    Shape: x (N, C, H, W), theta (N, 2, 3) -> (N, C, H', W'), ``(H', W') = size or (H, W)``.

    Example:
        >>> import torch
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> quarter_turn = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
        >>> torch.allclose(affine_warp(x, quarter_turn), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
        True
    """
    n, c, h, w = x.shape
    out_h, out_w = size if size is not None else (h, w)
    grid = F.affine_grid(theta.to(x.dtype), [n, c, out_h, out_w], align_corners=False)
    if fill == 0.0:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    shifted = F.grid_sample(
        x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return shifted + fill


def rotation_factor(degrees: float) -> float:
    """Largest ``|cos a| + |sin a|`` over ``|a| <= degrees``: the width of the bounding box of a
    unit square rotated by at most ``degrees``.

    Example:
        >>> rotation_factor(0.0), round(rotation_factor(90.0), 4)
        (1.0, 1.4142)
    """
    rad = math.radians(min(degrees, 45.0))
    return math.cos(rad) + math.sin(rad)


def check_range(owner: object, field: str) -> tuple[float, float]:
    """``owner.field`` must be a pair of finite floats with ``0 < lo <= hi``; returned as floats."""
    value = getattr(owner, field)
    ok = (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
        and 0 < value[0] <= value[1]
    )
    if not ok:
        raise ParameterError(
            f"{type(owner).__name__}: {field!r} must be a pair of floats (lo, hi) with "
            f"0 < lo <= hi, got {value!r}; for example {field}=(0.9, 1.1)"
        )
    return float(value[0]), float(value[1])


def _uniform(
    generator: torch.Generator, n: int, lo: Tensor | float, hi: Tensor | float, like: Tensor
) -> Tensor:
    """``n`` numbers uniform in ``[lo, hi)`` drawn from ``generator``, on ``like``'s device."""
    u = torch.rand(n, generator=generator, device=generator.device, dtype=like.dtype)
    return lo + (hi - lo) * u.to(like.device)


@dataclass(frozen=True, kw_only=True)
class RandomTransform:
    """A distribution of differentiable image transformations (Athalye et al. 2017, EOT).

    Each call draws one transformation per image, independently:

    * rotation about the centre by an angle uniform in ``[-rotation, rotation]`` degrees;
    * rescaling by a factor uniform in ``scale`` (``> 1`` magnifies; the border that a factor
      ``< 1`` uncovers reads ``fill``);
    * translation by ``(tx, ty)``, each uniform in ``[-translate, translate]`` of the image side;
    * brightness shift uniform in ``[-brightness, brightness]``, added to every pixel;
    * Gaussian noise whose standard deviation is uniform in ``[0, noise]`` for each image.

    The result is clamped to ``[0, 1]``. The defaults are the 2D distribution of Athalye et al.
    (Table 4: scale 0.9 to 1.4, rotation up to 22.5 degrees, lighten/darken by 0.05, noise std up
    to 0.1), except translation: the paper places a cut-out object anywhere on a background; here
    the whole image shifts by at most a tenth of its side. ``RandomTransform(rotation=0,
    scale=(1, 1), translate=0, brightness=0, noise=0)`` is the identity.

    The transform is differentiable with respect to ``x``. It draws its randomness from the
    ``generator`` passed to each call (on any device; numbers move to ``x``'s device), so the same
    generator state gives the same output. This ``(x, generator) -> x`` callable is the contract of
    the ``transform=`` argument of :class:`robustlens.attacks.EOT`.

    Shape: x (N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1].

    Example:
        >>> import torch
        >>> import robustlens as rl
        >>> x = rl.data.load("digits").x[:4]
        >>> t = RandomTransform(rotation=15.0, scale=(0.9, 1.1), translate=0.1, noise=0.05)
        >>> out = t(x, torch.Generator().manual_seed(0))
        >>> out.shape, bool(out.min() >= 0) and bool(out.max() <= 1)
        (torch.Size([4, 1, 8, 8]), True)
        >>> torch.equal(out, t(x, torch.Generator().manual_seed(0)))
        True
    """

    rotation: float = 22.5
    scale: tuple[float, float] = (0.9, 1.4)
    translate: float = 0.1
    brightness: float = 0.05
    noise: float = 0.1
    fill: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self, "rotation", allow_zero=True)
        object.__setattr__(self, "scale", check_range(self, "scale"))
        check_probability(self, "translate")
        check_positive(self, "brightness", allow_zero=True)
        check_positive(self, "noise", allow_zero=True)
        check_probability(self, "fill", closed=True)

    def theta(self, n: int, generator: torch.Generator, like: Tensor) -> Tensor:
        """Draw ``n`` affine maps ``(n, 2, 3)`` for :func:`affine_warp` on images shaped like ``like``.

        The rotation is a true rotation in pixel space, also for non-square images.
        """
        h, w = like.shape[-2:]
        angle = _uniform(generator, n, -1.0, 1.0, like) * math.radians(self.rotation)
        lo, hi = self.scale
        inv = 1.0 / _uniform(generator, n, lo, hi, like)
        shift = _uniform(generator, 2 * n, -2 * self.translate, 2 * self.translate, like)
        tx, ty = shift.view(2, n)
        cos, sin = angle.cos() * inv, angle.sin() * inv
        # Output pixel p samples the input at S^-1 R p + t (normalised coordinates; the aspect
        # ratio makes a pixel-space rotation a sheared one in normalised units).
        row0 = torch.stack([cos, -sin * (h / w), tx], 1)
        row1 = torch.stack([sin * (w / h), cos, ty], 1)
        return torch.stack([row0, row1], 1)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """One random transformation per image of ``x``; differentiable with respect to ``x``."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"RandomTransform: x must have shape (N, C, H, W), got {shape}")
        if not isinstance(generator, torch.Generator):
            raise DTypeError(
                "RandomTransform: generator must be a torch.Generator, got "
                f"{type(generator).__name__}; pass torch.Generator().manual_seed(seed)"
            )
        n = len(x)
        out = affine_warp(x, self.theta(n, generator, x), fill=self.fill)
        if self.brightness > 0:
            shift = _uniform(generator, n, -self.brightness, self.brightness, x)
            out = out + shift.view(n, 1, 1, 1)
        if self.noise > 0:
            std = _uniform(generator, n, 0.0, self.noise, x)
            z = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
            out = out + std.view(n, 1, 1, 1) * z.to(x.device)
        return out.clamp(0.0, 1.0)


def transformed_success(
    model: nn.Module,
    x_adv: Tensor,
    y: Tensor,
    transform: Transform,
    *,
    samples: int = 100,
    target: Tensor | None = None,
    seed: int = 0,
    batch_size: int = 512,
) -> Tensor:
    """Per image, the fraction of ``samples`` fresh random transformations under which the attack
    still succeeds: the prediction differs from ``y``, or equals ``target`` when it is given.

    The transformations come from ``transform(x, generator)`` with a generator seeded with
    ``seed`` on ``x_adv``'s device; choose a seed the attack did not use, so the test draws are
    independent of those it optimised over (Athalye et al. 2017 report this rate over 1000 draws).
    Runs without gradients, the model in eval mode (restored afterwards, even on error), over
    ``batch_size`` (image, transformation) pairs at a time.

    Shape: x_adv (N, C, H, W) in [0, 1], y (N,), target (N,) or None -> (N,) in [0, 1], float.

    Example:
        >>> import robustlens as rl
        >>> model, ds = rl.zoo.load("digits-cnn"), rl.data.load("digits")[:6]
        >>> rate = transformed_success(model, ds.x, ds.y, RandomTransform(), samples=20)
        >>> rate.shape, bool(((rate >= 0) & (rate <= 1)).all())
        (torch.Size([6]), True)
    """
    where = "transformed_success"
    check_model(model, where=where)
    check_images(x_adv, name="x_adv", where=where)
    check_same_device(model, x_adv, where=where)
    if not callable(transform):
        raise DTypeError(
            f"{where}: transform must be a callable (x, generator) -> x, got "
            f"{type(transform).__name__}; for example RandomTransform()"
        )
    for name, value in (("samples", samples), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ParameterError(f"{where}: {name!r} must be an int >= 1, got {value!r}")
    n, dev = len(x_adv), x_adv.device
    with inference_mode(model), torch.no_grad():
        k = check_logits(model(x_adv[:1]), 1, where=where).shape[1]
        y = check_labels(y.to(dev) if isinstance(y, Tensor) else y, n, num_classes=k, where=where)
        if target is not None:
            target = check_labels(
                target.to(dev) if isinstance(target, Tensor) else target,
                n,
                num_classes=k,
                name="target",
                where=where,
            )
        generator = torch.Generator(device=dev).manual_seed(seed)
        hits = torch.zeros(n, dtype=torch.long, device=dev)
        total = n * samples
        for start in range(0, total, batch_size):
            pos = torch.arange(start, min(start + batch_size, total), device=dev) % n
            xb = x_adv[pos]
            out = transform(xb, generator)
            if not isinstance(out, Tensor) or out.shape != xb.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ShapeError(
                    f"{where}: transform must return images shaped like its input "
                    f"{tuple(xb.shape)}, got {got}"
                )
            pred = check_logits(model(out), len(out), where=where).argmax(1)
            ok = pred != y[pos] if target is None else pred == target[pos]
            hits.index_add_(0, pos, ok.long())
    return hits.to(x_adv.dtype) / samples
