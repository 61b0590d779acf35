"""The universal adversarial patch (Brown et al. 2017, "Adversarial patch").

One image-independent square patch is learned so that pasting it anywhere on any image, at any
scale and rotation in a given range, makes the model predict a chosen target class. The patch
maximises ``E_{x, l, t} log p(target | A(p, x, l, t))`` over images ``x``, locations ``l`` and
transformations ``t`` (here: rescaling and rotation), by Adam on the patch pixels over minibatches
of images, each with its own random placement. The patch is not registered as a per-image attack:
it is one perturbation for a whole data set, measured by :meth:`PatchResult.success_rate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens._checks import (
    check_at_least,
    check_images,
    check_labels,
    check_logits,
    check_model,
    check_positive,
    check_same_device,
)
from robustlens._runtime import batched_logits, inference_mode, progress
from robustlens.attacks.transforms import (
    _uniform,
    affine_warp,
    check_range,
    rotation_factor,
    transformed_success,
)
from robustlens.errors import LabelError, ParameterError, ShapeError

__all__ = ["Patch", "PatchResult", "apply_patch"]


def _check_fits(side: int, scale_hi: float, rotation: float, h: int, w: int, where: str) -> None:
    """A ``side`` x ``side`` patch at the largest scale and rotation must fit in ``h`` x ``w``."""
    span = (side + 1) * scale_hi * rotation_factor(rotation)
    if span > min(h, w) + 1e-6:
        raise ParameterError(
            f"{where}: a {side}x{side} patch at scale up to {scale_hi:g} and rotation up to "
            f"{rotation:g} degrees spans up to {span:.3g} pixels (with its half-pixel anti-aliased "
            f"border) but the images are {h}x{w}; lower 'size', the upper end of 'scale' or "
            "'rotation'"
        )


def _place(
    x: Tensor,
    patch: Tensor,
    generator: torch.Generator,
    scale: tuple[float, float],
    rotation: float,
) -> tuple[Tensor, Tensor]:
    """:func:`apply_patch` without its checks (for loops whose inputs were checked once)."""
    n, c, h, w = x.shape
    side = patch.shape[-1]
    angle = _uniform(generator, n, -1.0, 1.0, x) * math.radians(rotation)
    k = _uniform(generator, n, scale[0], scale[1], x)
    cos, sin = angle.cos(), angle.sin()
    length = k * side  # displayed side of the patch, in image pixels
    # Half the bounding box of the rotated patch, its anti-aliased half-pixel border included.
    half = 0.5 * k * (side + 1) * (cos.abs() + sin.abs())
    cu = half + _uniform(generator, n, 0.0, 1.0, x) * (w - 2 * half).clamp_min(0)
    cv = half + _uniform(generator, n, 0.0, 1.0, x) * (h - 2 * half).clamp_min(0)
    # Image point (normalised X, Y) -> patch normalised coordinates:
    # P = R(-a) (2 / L) (diag(W/2, H/2) (X, Y) + (W/2 - cu, H/2 - cv)).
    dx, dy = w / 2 - cu, h / 2 - cv
    row0 = torch.stack([cos * w / length, sin * h / length, 2 * (cos * dx + sin * dy) / length], 1)
    row1 = torch.stack(
        [-sin * w / length, cos * h / length, 2 * (-sin * dx + cos * dy) / length], 1
    )
    theta = torch.stack([row0, row1], 1)
    src = torch.cat([patch, torch.ones_like(patch[:1])]).unsqueeze(0).expand(n, c + 1, side, side)
    warped = affine_warp(src, theta, size=(h, w))
    # The canvas comes premultiplied by the mask (zero padding), so x' = (1 - m) x + m * patch.
    canvas, mask = warped[:, :c], warped[:, c:].clamp(0.0, 1.0)
    return ((1 - mask) * x + canvas).clamp(0.0, 1.0), mask


@dataclass(frozen=True, kw_only=True)
class _PlacementOptions:
    """Validation of the placement distribution shared by :func:`apply_patch` and friends."""

    scale: tuple[float, float]
    rotation: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_range(self, "scale"))
        check_positive(self, "rotation", allow_zero=True)


def apply_patch(
    x: Tensor,
    patch: Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    rotation: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Paste ``patch`` on every image at its own random location, scale and rotation.

    Per image: a factor ``k`` uniform in ``scale`` (the patch then spans ``k * s`` pixels), an
    angle uniform in ``[-rotation, rotation]`` degrees, and a centre uniform over the positions
    that keep the whole transformed patch inside the image. The patch is resampled bilinearly
    onto a canvas, with a mask of the area it covers, and ``x' = (1 - mask) * x + mask * patch``;
    pixels outside the mask are unchanged. Differentiable with respect to ``x`` and ``patch``.
    At scale 1 without rotation the mask sums to ``s * s``. Randomness comes from ``generator``.

    Shape: x (N, C, H, W) in [0, 1], patch (C, s, s) in [0, 1] -> x' (N, C, H, W), mask
    (N, 1, H, W) in [0, 1].

    Example:
        >>> import torch
        >>> x, patch = torch.zeros(2, 1, 8, 8), torch.ones(1, 3, 3)
        >>> out, mask = apply_patch(x, patch, torch.Generator().manual_seed(0))
        >>> mask.sum((1, 2, 3)).round(decimals=3)
        tensor([9., 9.])
    """
    where = "apply_patch"
    check_images(x.detach(), where=where)
    if not isinstance(patch, Tensor) or patch.ndim != 3 or patch.shape[1] != patch.shape[2]:
        shape = tuple(patch.shape) if isinstance(patch, Tensor) else type(patch).__name__
        raise ShapeError(f"{where}: patch must be a square (C, s, s) tensor, got {shape}")
    check_images(patch.detach()[None], name="patch", where=where)
    if patch.shape[0] != x.shape[1]:
        raise ShapeError(
            f"{where}: the patch has {patch.shape[0]} channels but the images have {x.shape[1]}; "
            "learn the patch on images like these"
        )
    opts = _PlacementOptions(scale=scale, rotation=rotation)
    _check_fits(patch.shape[-1], opts.scale[1], rotation, x.shape[2], x.shape[3], where)
    return _place(x, patch.to(x.dtype), generator, opts.scale, rotation)


@dataclass(frozen=True, kw_only=True)
class PatchResult:
    """A learned universal patch and the placement distribution it was trained for.

    ``history[i]`` is the mean training loss ``-log p(target)`` over steps
    ``i * history_every`` to ``(i + 1) * history_every - 1``.

    Shape: patch (C, s, s) in [0, 1].

    Example:
        >>> import torch
        >>> res = PatchResult(patch=torch.ones(1, 3, 3), target=0)
        >>> res.apply(torch.zeros(5, 1, 8, 8)).sum((1, 2, 3)).round(decimals=3)
        tensor([9., 9., 9., 9., 9.])
    """

    patch: Tensor
    target: int
    history: list[float] = field(default_factory=list)
    history_every: int = 1
    scale: tuple[float, float] = (1.0, 1.0)
    rotation: float = 0.0

    def __post_init__(self) -> None:
        p = self.patch
        if not isinstance(p, Tensor) or p.ndim != 3 or p.shape[1] != p.shape[2]:
            shape = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
            raise ShapeError(f"PatchResult: patch must be a square (C, s, s) tensor, got {shape}")
        check_images(p.detach()[None], name="patch", where="PatchResult")
        check_at_least(self, "target", 0)
        check_at_least(self, "history_every", 1)
        _PlacementOptions(scale=self.scale, rotation=self.rotation)

    def _fits(self, x: Tensor, where: str) -> None:
        if self.patch.shape[0] != x.shape[1]:
            raise ShapeError(
                f"{where}: the patch has {self.patch.shape[0]} channels but the images have "
                f"{x.shape[1]}; apply it to images like those it was learned on"
            )
        _check_fits(
            self.patch.shape[-1], self.scale[1], self.rotation, x.shape[2], x.shape[3], where
        )

    def place(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The patch at a fresh random placement on each image: a ``transform(x, generator)``
        for :func:`robustlens.attacks.transformed_success` and ``EOT``.

        Shape: x (N, C, H, W) -> (N, C, H, W).
        """
        patch = self.patch.to(device=x.device, dtype=x.dtype)
        return _place(x, patch, generator, self.scale, self.rotation)[0]

    def apply(self, x: Tensor, seed: int = 0) -> Tensor:
        """``x`` with the patch pasted at a random placement per image (seeded with ``seed``).

        Shape: x (N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1].
        """
        where = "PatchResult.apply"
        check_images(x, where=where)
        self._fits(x, where)
        return self.place(x, torch.Generator(device=x.device).manual_seed(seed))

    def success_rate(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor | None = None,
        *,
        samples: int = 10,
        seed: int = 1,
        batch_size: int = 512,
    ) -> float:
        """Fraction of (image, fresh random placement) pairs that ``model`` classifies as the target.

        Each image gets ``samples`` placements drawn from a generator seeded with ``seed``
        (independent of those seen in training). Images whose class (``y``, or the model's clean
        prediction when ``y`` is None) is already the target are left out; NaN if none remain.
        The model runs in eval mode without gradients, restored afterwards.

        Shape: x (N, C, H, W) in [0, 1], y (N,) or None -> float in [0, 1].
        """
        where = "PatchResult.success_rate"
        check_model(model, where=where)
        check_images(x, where=where)
        check_same_device(model, x, where=where)
        self._fits(x, where)
        logits = batched_logits(model, x, batch_size=batch_size)
        k = check_logits(logits, len(x), where=where).shape[1]
        _check_target(self.target, k, where)
        if y is None:
            y = logits.argmax(1)
        else:
            y = check_labels(
                y.to(x.device) if isinstance(y, Tensor) else y, len(x), num_classes=k, where=where
            )
        keep = y != self.target
        if not bool(keep.any()):
            return math.nan
        target = torch.full_like(y[keep], self.target)
        rate = transformed_success(
            model,
            x[keep],
            y[keep],
            self.place,
            samples=samples,
            target=target,
            seed=seed,
            batch_size=batch_size,
        )
        return float(rate.mean())


def _check_target(target: int, k: int, where: str) -> None:
    if target >= k:
        raise LabelError(
            f"{where}: 'target' is {target} but the model has {k} classes (0..{k - 1}); "
            "pick a target class in that range"
        )


@dataclass(frozen=True, kw_only=True)
class Patch:
    """Learn a universal adversarial patch for class ``target`` (Brown et al. 2017).

    The patch is a square of ``s = round(sqrt(size * H * W))`` pixels, so it covers about
    ``size`` of the image at scale 1. Each of ``steps`` Adam steps (learning rate ``lr``) draws
    ``batch_size`` images (with replacement) and, for each, a random placement as in
    :func:`apply_patch`: a scale factor uniform in ``scale``, a rotation uniform in
    ``[-rotation, rotation]`` degrees and a location uniform over those keeping the patch inside
    the image; it then ascends the mean ``log p(target)``. After every step the patch pixels are
    clamped back to ``[0, 1]``. The patch starts uniform at random, from ``seed``. The paper
    trains on ImageNet with larger patches; the defaults here suit small images.

    The model is run in eval mode with its parameters frozen (both restored afterwards, even on
    error); no parameter gradient is computed.

    Shape: ``fit(model, x (N, C, H, W) in [0, 1])`` -> PatchResult with patch (C, s, s).

    Example:
        >>> import robustlens as rl
        >>> model, ds = rl.zoo.load("digits-cnn"), rl.data.load("digits", split="train")[:64]
        >>> res = Patch(target=3, size=0.25, steps=10).fit(model, ds.x)
        >>> res.patch.shape, res.target, len(res.history)
        (torch.Size([1, 4, 4]), 3, 10)
    """

    target: int
    size: float = 0.1
    steps: int = 500
    batch_size: int = 64
    lr: float = 0.05
    scale: tuple[float, float] = (0.7, 1.2)
    rotation: float = 22.5
    seed: int = 0

    def __post_init__(self) -> None:
        check_at_least(self, "target", 0)
        s = self.size
        if (
            not isinstance(s, int | float)
            or isinstance(s, bool)
            or not math.isfinite(s)
            or not 0 < s < 1
        ):
            raise ParameterError(
                f"Patch: 'size' must be a float in (0, 1), the fraction of the image area the "
                f"patch covers, got {s!r}"
            )
        check_at_least(self, "steps", 1)
        check_at_least(self, "batch_size", 1)
        check_positive(self, "lr")
        object.__setattr__(self, "scale", check_range(self, "scale"))
        check_positive(self, "rotation", allow_zero=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ParameterError(f"Patch: 'seed' must be an int, got {self.seed!r}")

    def side(self, height: int, width: int) -> int:
        """Side in pixels of the patch for ``height`` x ``width`` images."""
        return max(1, round(math.sqrt(self.size * height * width)))

    def fit(self, model: nn.Module, x: Tensor) -> PatchResult:
        """Learn the patch on the images ``x`` (N, C, H, W); see the class docstring."""
        where = "Patch"
        check_model(model, where=where)
        check_images(x, where=where)
        check_same_device(model, x, where=where)
        n, c, h, w = x.shape
        side = self.side(h, w)
        _check_fits(side, self.scale[1], self.rotation, h, w, where)
        dev = x.device
        generator = torch.Generator(device=dev).manual_seed(self.seed)
        every = max(1, self.steps // 100)
        with inference_mode(model):
            with torch.no_grad():
                k = check_logits(model(x[:1]), 1, where=where).shape[1]
            _check_target(self.target, k, where)
            patch = torch.rand((c, side, side), generator=generator, device=dev, dtype=x.dtype)
            patch.requires_grad_(True)
            opt = torch.optim.Adam([patch], lr=self.lr)
            losses = torch.empty(self.steps, device=dev, dtype=x.dtype)
            with torch.enable_grad():
                for step in progress(
                    range(self.steps), desc=f"Patch for class {self.target}", unit="step"
                ):
                    idx = torch.randint(n, (self.batch_size,), generator=generator, device=dev)
                    xp, _ = _place(x[idx], patch, generator, self.scale, self.rotation)
                    loss = -F.log_softmax(model(xp), dim=1)[:, self.target].mean()
                    (patch.grad,) = torch.autograd.grad(loss, patch)
                    opt.step()
                    with torch.no_grad():
                        patch.clamp_(0.0, 1.0)
                    losses[step] = loss.detach()
        history = [float(v) for v in torch.stack([c.mean() for c in losses.split(every)]).tolist()]
        return PatchResult(
            patch=patch.detach(),
            target=self.target,
            history=history,
            history_every=every,
            scale=self.scale,
            rotation=self.rotation,
        )
