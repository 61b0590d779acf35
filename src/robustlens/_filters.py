"""Separable Gaussian filtering shared by the explainers and the corruptions (batched torch).

Example:
    >>> import torch
    >>> x = torch.zeros(1, 1, 9, 9); x[0, 0, 4, 4] = 1.0
    >>> y = gaussian_blur(x, 1.0)
    >>> round(float(y.sum()), 4), bool(y[0, 0, 4, 4] < 1)
    (1.0, True)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["conv_same", "gaussian_blur", "gaussian_kernel"]


def gaussian_kernel(
    sigma: float,
    *,
    truncate: float = 4.0,
    max_radius: int | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sampled 1-D Gaussian of standard deviation ``sigma``, radius ``ceil(truncate * sigma)``
    (at least 1, at most ``max_radius``), normalised to sum 1 (scikit-image's ``gaussian`` uses
    the same truncation at its default 4)."""
    radius = max(1, math.ceil(truncate * sigma))
    if max_radius is not None:
        radius = max(1, min(radius, max_radius))
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-12)) ** 2)
    return (k / k.sum()).to(dtype)


def conv_same(x: Tensor, kernel: Tensor) -> Tensor:
    """Each channel convolved with the 2-D ``kernel`` (odd sides), borders replicated.

    Shape: (N, C, H, W), kernel (kh, kw) -> (N, C, H, W).
    """
    c = x.shape[1]
    kh, kw = kernel.shape
    k = kernel.to(x).expand(c, 1, kh, kw)
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    return F.conv2d(padded, k, groups=c)


def gaussian_blur(
    x: Tensor, sigma: float, *, truncate: float = 4.0, within_image: bool = False
) -> Tensor:
    """Separable Gaussian blur of standard deviation ``sigma`` pixels, borders replicated.

    The kernel is cut at ``truncate * sigma``; ``within_image`` also cuts it at the image's side
    minus one along each axis. ``sigma <= 0`` returns a copy.

    Shape: (N, C, H, W) -> (N, C, H, W).
    """
    if sigma <= 0:
        return x.clone()
    h, w = x.shape[-2:]
    kw = gaussian_kernel(
        sigma,
        truncate=truncate,
        max_radius=w - 1 if within_image else None,
        device=x.device,
        dtype=x.dtype,
    )
    kh = gaussian_kernel(
        sigma,
        truncate=truncate,
        max_radius=h - 1 if within_image else None,
        device=x.device,
        dtype=x.dtype,
    )
    return conv_same(conv_same(x, kw[None, :]), kh[:, None])
