"""Image operations behind the corruptions: kernels, blurs, warps, fractal noise. Batched torch.

Every function takes images ``(N, C, H, W)`` (or single-channel layers ``(N, 1, H, W)``) on any
device and returns a new tensor on the same device; nothing is modified in place. Randomness comes
from the ``torch.Generator`` passed in, which must live on the images' device. Lengths are in
pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlens._filters import conv_same, gaussian_blur, gaussian_kernel

__all__ = [
    "affine_elastic",
    "conv_same",
    "gaussian_blur",
    "gaussian_kernel",
    "jitter",
    "luminance",
    "motion_blur",
    "plasma",
    "soft_disk",
    "zoom",
]

#: ITU-R BT.601 luma weights (what OpenCV's RGB2GRAY uses).
_LUMA = (0.299, 0.587, 0.114)


def luminance(x: Tensor) -> Tensor:
    """Grey level of each pixel: the image itself for C=1, BT.601 luma for C=3, else the mean.

    Shape: (N, C, H, W) -> (N, 1, H, W).
    """
    c = x.shape[1]
    if c == 1:
        return x
    if c == 3:
        w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def colour(rgb: tuple[float, float, float], c: int, like: Tensor) -> Tensor:
    """A colour as a ``(1, C, 1, 1)`` tensor: itself for C=3, its luma otherwise."""
    if c == 3:
        return torch.tensor(rgb, device=like.device, dtype=like.dtype).view(1, 3, 1, 1)
    grey = sum(w * v for w, v in zip(_LUMA, rgb, strict=True))
    return torch.full((1, c, 1, 1), grey, device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------- kernels


def soft_disk(
    radius: float,
    alias: float,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Defocus kernel: an anti-aliased disk of ``radius`` blurred by a Gaussian of ``alias``.

    A pixel's weight is the fraction of it inside the disk, approximated by
    ``clamp(radius + 0.5 - distance, 0, 1)``, so the kernel grows continuously with the radius
    (Hendrycks and Dietterich threshold ``distance <= radius``, which on small images turns radii of
    0.3 to 0.9 into the same single pixel). Normalised to sum 1.

    Shape: -> (2r + 1, 2r + 1).
    """
    r = math.ceil(radius + 0.5) + math.ceil(3 * alias)
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float64)
    dist = torch.sqrt(t[:, None] ** 2 + t[None, :] ** 2)
    disk = (radius + 0.5 - dist).clamp(0, 1)
    disk[r, r] = 1.0
    if alias > 0:
        g = torch.exp(-0.5 * (t / alias) ** 2)
        g = g / g.sum()
        disk = F.conv2d(F.pad(disk[None, None], (r, r, r, r)), torch.outer(g, g)[None, None])[0, 0]
    return (disk / disk.sum()).to(dtype)


# --------------------------------------------------------------------------- geometry


def _base_grid(n: int, h: int, w: int, like: Tensor) -> Tensor:
    """Pixel-centre coordinates ``(N, H, W, 2)`` as (column, row) in pixels."""
    rows = torch.arange(h, device=like.device, dtype=like.dtype)
    cols = torch.arange(w, device=like.device, dtype=like.dtype)
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)
    return grid.unsqueeze(0).expand(n, h, w, 2)


def _sample(x: Tensor, coords: Tensor, padding: str) -> Tensor:
    """Bilinear sampling of ``x`` at pixel coordinates ``coords`` (N, H, W, 2) as (column, row)."""
    h, w = x.shape[2:]
    scale = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=x.dtype)
    grid = (coords + 0.5) * scale - 1.0
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def zoom(x: Tensor, factor: float) -> Tensor:
    """Zoom into the centre by ``factor >= 1``: the central ``1 / factor`` of the image, resampled
    bilinearly back to full size (Hendrycks and Dietterich's ``clipped_zoom``).

    Shape: (N, C, H, W) -> (N, C, H, W).
    """
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1.0 / factor
    theta[:, 1, 1] = 1.0 / factor
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def motion_blur(x: Tensor, radius: float, sigma: float, angle: Tensor) -> Tensor:
    """One-sided motion blur along ``angle`` (degrees, one per image), as ImageMagick's.

    The image is averaged with copies of itself shifted by ``t = 0, 1, ..., 2 ceil(radius)``
    pixels along the direction ``(cos angle, sin angle)``, weighted by ``exp(-t^2 / (2 sigma^2))``;
    shifts fall between pixels and are resampled bilinearly, borders replicated. One
    ``grid_sample`` per kernel tap, batched over images.

    Shape: x (N, C, H, W), angle (N,) -> (N, C, H, W).
    """
    n, _, h, w = x.shape
    taps = 2 * math.ceil(radius) + 1
    raw = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(taps)]
    weights = [v / sum(raw) for v in raw if v / sum(raw) >= 1e-6]
    rad = angle.to(x.dtype) * (math.pi / 180.0)
    step = torch.stack([torch.cos(rad), torch.sin(rad)], dim=-1).view(n, 1, 1, 2)
    base = _base_grid(n, h, w, x)
    out = torch.zeros_like(x)
    for i, weight in enumerate(weights):
        out = out + weight * _sample(x, base + float(i) * step, "border")
    return out / sum(weights)


def affine_elastic(
    x: Tensor, affine: float, alpha: float, sigma: float, generator: torch.Generator
) -> Tensor:
    """Random affine jitter then an elastic deformation (Simard et al. 2003), sampled once.

    The affine map moves three points around the centre by up to ``affine`` pixels each (uniform),
    as Hendrycks and Dietterich do; the elastic part displaces each pixel by a Gaussian-smoothed
    (``sigma``) uniform noise field rescaled so that its root-mean-square length is ``alpha``
    pixels. Borders are reflected.

    Shape: (N, C, H, W) -> (N, C, H, W).
    """
    n, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    # Affine: solve for the map sending the jittered points back onto the reference points, so
    # that output pixel p samples the input at A p (the inverse warp).
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=dev, dtype=dt)
    side = max(min(h, w) // 3, 1)
    ref = torch.stack(
        [centre + side, centre + torch.tensor([side, -side], device=dev, dtype=dt), centre - side]
    )  # (3, 2)
    moved = ref + (torch.rand(n, 3, 2, generator=generator, device=dev, dtype=dt) * 2 - 1) * affine
    ones = torch.ones(n, 3, 1, device=dev, dtype=dt)
    # A (N, 2, 3) with A [moved; 1] = ref  <=>  [moved 1] A^T = ref.
    a_t = torch.linalg.solve(torch.cat([moved, ones], dim=2), ref.expand(n, 3, 2))
    base = _base_grid(n, h, w, x)
    coords = torch.cat([base, torch.ones(n, h, w, 1, device=dev, dtype=dt)], dim=-1) @ a_t[:, None]
    if alpha > 0:
        field = torch.rand(n, 2, h, w, generator=generator, device=dev, dtype=dt) * 2 - 1
        field = gaussian_blur(field, sigma)
        rms = field.pow(2).sum(1).mean((1, 2)).sqrt().clamp_min(1e-12)
        field = field * (alpha / rms).view(n, 1, 1, 1)
        coords = coords + field.permute(0, 2, 3, 1)
    return _sample(x, coords, "reflection")


def jitter(x: Tensor, delta: float, generator: torch.Generator) -> Tensor:
    """Each pixel resampled (bilinearly) at a random offset of at most ``delta`` pixels along each
    axis (uniform), borders replicated: the "frosted glass" step of glass blur, vectorised.

    Shape: (N, C, H, W) -> (N, C, H, W).
    """
    n, _, h, w = x.shape
    off = torch.rand(n, h, w, 2, generator=generator, device=x.device, dtype=x.dtype)
    return _sample(x, _base_grid(n, h, w, x) + (2 * off - 1) * delta, "border")


# --------------------------------------------------------------------------- fractal noise


def plasma(
    n: int,
    h: int,
    w: int,
    decay: float,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Fractal "plasma" heightmaps by the diamond-square algorithm, one per image, in ``[0, 1]``.

    The map is periodic, of side the power of two covering ``max(h, w)``, cropped to ``h x w``.
    Each octave sets the midpoints of the current squares, then of their diamonds, to the mean of
    their four neighbours plus uniform noise whose amplitude shrinks by ``decay ** 2`` per octave
    (the heightmap of Hendrycks and Dietterich's fog: a larger ``decay`` gives smoother fog).
    The loop runs over octaves (``log2`` of the side), batched over images and points.

    Shape: -> (n, 1, h, w).
    """
    side = 2
    while side < max(h, w):
        side *= 2
    grid = torch.zeros(n, side, side, device=device, dtype=torch.float64)
    amplitude = 1.0
    step = side

    def noisy(mean: Tensor) -> Tensor:
        u = torch.rand(mean.shape, generator=generator, device=device, dtype=torch.float64)
        return mean + amplitude * (2 * u - 1)

    while step >= 2:
        half = step // 2
        corners = grid[:, ::step, ::step]
        below = corners.roll(-1, dims=1)
        grid[:, half::step, half::step] = noisy(
            (corners + below + corners.roll(-1, dims=2) + below.roll(-1, dims=2)) / 4
        )
        centres = grid[:, half::step, half::step]
        corners = grid[:, ::step, ::step]
        # Edge midpoints on the corner rows: corners left and right, centres above and below.
        grid[:, ::step, half::step] = noisy(
            (corners + corners.roll(-1, dims=2) + centres + centres.roll(1, dims=1)) / 4
        )
        # Edge midpoints on the corner columns: corners above and below, centres left and right.
        grid[:, half::step, ::step] = noisy(
            (corners + corners.roll(-1, dims=1) + centres + centres.roll(1, dims=2)) / 4
        )
        step = half
        amplitude /= decay**2
    out = grid[:, :h, :w]
    lo = out.amin((1, 2), keepdim=True)
    hi = out.amax((1, 2), keepdim=True)
    out = (out - lo) / (hi - lo).clamp_min(1e-12)
    return out.unsqueeze(1).to(dtype)
