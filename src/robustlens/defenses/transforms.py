"""Input-transformation defenses: blur, JPEG, bit-depth reduction, crop ensembles and TV minimisation.

Guo et al. 2018 ("Countering adversarial images using input transformations") proposed the last
four; the lecture's point about the first is that a blur is a convolution, so an attacker simply
back-propagates through it. Each module declares ``differentiable`` and ``randomized`` (see
:mod:`robustlens.defenses.base`); the adaptive attacks of :mod:`robustlens.attacks.adaptive` read
them.

Example:
    >>> import torch
    >>> x = torch.rand(2, 1, 8, 8)
    >>> [type(t).__name__ for t in (Blur(), JPEG(quality=75), BitDepth(bits=3)) if t(x).shape == x.shape]
    ['Blur', 'JPEG', 'BitDepth']
"""

from __future__ import annotations

import io
import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from robustlens.defenses.base import Preprocessor
from robustlens.errors import ParameterError, ShapeError

__all__ = ["JPEG", "TVM", "BitDepth", "Blur", "CropRescale", "binomial_kernel", "tv_reconstruct"]


def _int_in(owner: object, name: str, value: object, lo: int, hi: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo
    if not ok or (hi is not None and value > hi):  # type: ignore[operator]
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ParameterError(
            f"{type(owner).__name__}: {name!r} must be an int {bound}, got {value!r}"
        )
    return int(value)  # type: ignore[call-overload]


def _float_in(
    owner: object, name: str, value: object, lo: float, hi: float, *, open_lo: bool
) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > lo if open_lo else v >= lo) and v <= hi
    if not ok:
        left = "(" if open_lo else "["
        raise ParameterError(
            f"{type(owner).__name__}: {name!r} must be a float in {left}{lo}, {hi}], got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- blur


def binomial_kernel(size: int) -> Tensor:
    """The ``size x size`` binomial kernel (rows of Pascal's triangle, normalised to sum 1).

    ``size=3`` is the lecture's ``[[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16``, a discrete Gaussian.
    """
    row = torch.tensor([math.comb(size - 1, i) for i in range(size)], dtype=torch.float64)
    k = torch.outer(row, row)
    return (k / k.sum()).float()


class Blur(Preprocessor):
    """Binomial (discrete Gaussian) blur of odd side ``size``, each channel separately.

    Deterministic and differentiable: a convolution the attacker back-propagates through, so it
    protects nothing (the lecture's example). Borders are reflected.

    Shape: (N, C, H, W) -> (N, C, H, W).
    """

    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.size = _int_in(self, "size", size, 3)
        if self.size % 2 == 0:
            raise ParameterError(f"Blur: 'size' must be odd so the blur is centred, got {size}")

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        c = x.shape[1]
        pad = self.size // 2
        if min(x.shape[2:]) <= pad:
            raise ShapeError(
                f"Blur: images of {tuple(x.shape[2:])} are too small for size {self.size}"
            )
        w = binomial_kernel(self.size).to(x).expand(c, 1, self.size, self.size)
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), w, groups=c)

    def extra_repr(self) -> str:
        return f"size={self.size}"


# --------------------------------------------------------------------------- JPEG


class JPEG(Preprocessor):
    """JPEG compression at ``quality`` (1-95) with a real codec (Pillow's libjpeg), then decoding.

    Greyscale images are coded as ``L``, three-channel ones as ``RGB``. Deterministic; not
    differentiable (the output carries no gradient: the codec quantises in its own memory), the
    textbook case for BPDA with the identity (Athalye et al. 2018).

    Shape: (N, C, H, W) with C in {1, 3} -> (N, C, H, W), values on the 1/255 grid.
    """

    differentiable: ClassVar[bool] = False
    randomized: ClassVar[bool] = False

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        self.quality = _int_in(self, "quality", quality, 1, 95)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        c = x.shape[1]
        if c not in (1, 3):
            raise ShapeError(
                f"JPEG: the codec takes greyscale (C=1) or RGB (C=3) images, got C={c}"
            )
        pixels = (x.detach() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        mode = "L" if c == 1 else "RGB"
        out = np.empty_like(pixels)
        for i, img in enumerate(pixels):
            buf = io.BytesIO()
            Image.fromarray(img[..., 0] if c == 1 else img, mode=mode).save(
                buf, format="JPEG", quality=self.quality
            )
            buf.seek(0)
            decoded = np.asarray(Image.open(buf).convert(mode))
            out[i] = decoded[..., None] if c == 1 else decoded
        back = torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255
        return back.contiguous()

    def extra_repr(self) -> str:
        return f"quality={self.quality}"


# --------------------------------------------------------------------------- bit depth


class BitDepth(Preprocessor):
    """Colour bit-depth reduction (Xu et al. 2018): ``round(x (2^b - 1)) / (2^b - 1)``.

    Deterministic; its gradient is zero almost everywhere (rounding), so plain gradient attacks
    see nothing: shattered gradients.

    Shape: (N, C, H, W) -> (N, C, H, W) with ``2^bits`` levels per channel.
    """

    differentiable: ClassVar[bool] = False
    randomized: ClassVar[bool] = False

    def __init__(self, bits: int = 4) -> None:
        super().__init__()
        self.bits = _int_in(self, "bits", bits, 1, 8)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


# --------------------------------------------------------------------------- crop ensemble


class CropRescale(Preprocessor):
    """``crops`` random crops of side ``fraction`` of the image, each rescaled back to full size.

    Returns ``crops`` views per image; :func:`~robustlens.defenses.defend` averages the model's
    probabilities over them (the crop ensemble of Guo et al. 2018). Differentiable (bilinear
    resampling) and randomized: the attack needs EOT.

    Shape: (N, C, H, W) -> (N * crops, C, H, W), image-major.
    """

    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = True

    def __init__(self, fraction: float = 0.8, crops: int = 10, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.fraction = _float_in(self, "fraction", fraction, 0.0, 1.0, open_lo=True)
        self.crops = _int_in(self, "crops", crops, 1)
        self.views = self.crops

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        n, c, h, w = x.shape
        m = n * self.crops
        f = self.fraction
        # Centre of each crop, uniform over the positions keeping the crop inside the image
        # (normalised coordinates, align_corners=False: the image spans [-1, 1]).
        shift = (torch.rand(m, 2, generator=self.generator(x.device), device=x.device) * 2 - 1) * (
            1 - f
        )
        theta = torch.zeros(m, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = f
        theta[:, 1, 1] = f
        theta[:, :, 2] = shift.to(x.dtype)
        grid = F.affine_grid(theta, [m, c, h, w], align_corners=False)
        src = x.repeat_interleave(self.crops, dim=0)
        return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}, crops={self.crops}, seed={self.seed}"


# --------------------------------------------------------------------------- TV minimisation


def _grad(z: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences along W and H (zero at the far border): (..., H, W) -> two (..., H, W)."""
    return F.pad(z[..., :, 1:] - z[..., :, :-1], (0, 1)), F.pad(
        z[..., 1:, :] - z[..., :-1, :], (0, 0, 0, 1)
    )


def _div(px: Tensor, py: Tensor) -> Tensor:
    """Discrete divergence, the negative adjoint of :func:`_grad`."""
    px, py = px[..., :, :-1], py[..., :-1, :]
    return F.pad(px, (0, 1)) - F.pad(px, (1, 0)) + F.pad(py, (0, 0, 0, 1)) - F.pad(py, (0, 0, 1, 0))


def _fill(x: Tensor, m: Tensor) -> Tensor:
    """Kept pixels as they are, dropped ones as the mean of their kept 3x3 neighbours (or of the
    image's kept pixels when none is near): a starting point close to the solution."""
    c = x.shape[1]
    box = torch.ones(c, 1, 3, 3, device=x.device, dtype=x.dtype)
    num = F.conv2d(x * m, box, padding=1, groups=c)
    den = F.conv2d(m, box, padding=1, groups=c)
    overall = (x * m).sum((2, 3), keepdim=True) / m.sum((2, 3), keepdim=True).clamp_min(1)
    local = torch.where(den > 0, num / den.clamp_min(1e-12), overall)
    return m * x + (1 - m) * local


def tv_reconstruct(x: Tensor, mask: Tensor, weight: float, iterations: int = 100) -> Tensor:
    """``argmin_z 0.5 ||mask * (z - x)||^2 + weight * TV(z)``, isotropic TV per channel.

    Solved with the primal-dual algorithm of Chambolle and Pock (2011), batched over images and
    channels; pixels where ``mask`` is 0 are filled in by the TV prior alone.

    Shape: x (N, C, H, W), mask (N, C, H, W) or broadcastable, of 0/1 -> (N, C, H, W).
    """
    m = mask.to(x.dtype).expand_as(x)
    return _chambolle_pock(
        x, m, weight, iterations, (_fill(x, m), torch.zeros_like(x), torch.zeros_like(x))
    )[0]


_State = tuple[Tensor, Tensor, Tensor]


def _chambolle_pock(x: Tensor, m: Tensor, weight: float, iterations: int, state: _State) -> _State:
    """``iterations`` primal-dual steps of :func:`tv_reconstruct` from ``state`` = (z, px, py).

    Differentiable in ``x`` when autograd records it: run from a converged state, the unrolled
    steps' Jacobian approaches the solution's (the fixed-point gradient TVM's BPDA uses).
    """
    tau = sigma = 1.0 / math.sqrt(8.0)
    z, px, py = state
    z_bar = z
    for _ in range(iterations):
        gx, gy = _grad(z_bar)
        px, py = px + sigma * gx, py + sigma * gy
        scale = ((px * px + py * py).sqrt() / weight).clamp_min(1.0)
        px, py = px / scale, py / scale
        z_old = z
        z = (z + tau * _div(px, py) + tau * m * x) / (1 + tau * m)
        z_bar = 2 * z - z_old
    return z, px, py


class TVM(Preprocessor):
    """Total variance minimisation (Guo et al. 2018): drop each pixel with probability ``drop``,
    then reconstruct the image by TV minimisation with weight ``weight`` on the kept pixels.

    The defaults are the paper's (drop 0.5, weight 0.03); the data term here is the squared L2
    norm on the kept pixels. Randomized (the dropped pixels) and not differentiable (the solver
    runs without autograd): the attack needs BPDA and EOT together. The same pixels are dropped in
    every channel. ``iterations`` primal-dual steps solve the problem; BPDA back-propagates through
    ``unrolled`` more, run from the solution (:meth:`straight_through`).

    Shape: (N, C, H, W) -> (N, C, H, W).

    Example:
        >>> import torch
        >>> tvm = TVM(iterations=50)
        >>> x = torch.rand(2, 1, 12, 12)
        >>> z = tvm(x)
        >>> tvm.reseed()
        >>> xg = x.clone().requires_grad_(True)
        >>> bpda = tvm.straight_through(xg)
        >>> torch.allclose(bpda, z), bpda.requires_grad
        (True, True)
    """

    differentiable: ClassVar[bool] = False
    randomized: ClassVar[bool] = True

    def __init__(
        self,
        drop: float = 0.5,
        weight: float = 0.03,
        iterations: int = 100,
        *,
        unrolled: int = 20,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        self.drop = _float_in(self, "drop", drop, 0.0, 0.99, open_lo=False)
        self.weight = _float_in(self, "weight", weight, 0.0, math.inf, open_lo=True)
        self.iterations = _int_in(self, "iterations", iterations, 1)
        self.unrolled = _int_in(self, "unrolled", unrolled, 1)

    def _solve(self, x: Tensor) -> tuple[Tensor, _State]:
        """A fresh draw of the kept pixels, and the solver's final state on them (no autograd)."""
        self._check(x)
        n, _, h, w = x.shape
        keep = torch.rand(n, 1, h, w, generator=self.generator(x.device), device=x.device)
        m = (keep >= self.drop).to(x.dtype).expand_as(x)
        with torch.no_grad():
            xd = x.detach()
            state = (_fill(xd, m), torch.zeros_like(xd), torch.zeros_like(xd))
            return m, _chambolle_pock(xd, m, self.weight, self.iterations, state)

    def forward(self, x: Tensor) -> Tensor:
        return self._solve(x)[1][0].clamp(0, 1)

    def straight_through(self, x: Tensor) -> Tensor:
        """BPDA's view of the layer: the same output as :meth:`forward` (same draw), with the
        gradient of the solver's fixed point.

        The last ``unrolled`` primal-dual steps are re-run under autograd from the converged
        solution, with the same kept pixels: their Jacobian in ``x`` approximates the solution's
        (a truncated Neumann series of the implicit derivative). It captures what matters to an
        attacker: a dropped pixel's value has no effect, and a kept one moves its whole flat region
        of the reconstruction. On Fashion-MNIST this leaves about half the robust accuracy that the
        identity or a blur as the backward pass do (``docs/benchmarks.md``).

        Shape: (N, C, H, W) -> (N, C, H, W).
        """
        m, (z, px, py) = self._solve(x)
        g = _chambolle_pock(x, m, self.weight, self.unrolled, (z, px, py))[0]
        return g + (z.clamp(0, 1) - g).detach()

    def extra_repr(self) -> str:
        extra = "" if self.iterations == 100 else f", iterations={self.iterations}"
        extra += "" if self.unrolled == 20 else f", unrolled={self.unrolled}"
        return f"drop={self.drop}, weight={self.weight}{extra}, seed={self.seed}"
