"""Image operations behind the corruptions: kernels, blurs, warps, fractal noise. Batched torch.

Every function takes images ``(N, C, H, W)`` (or single-channel layers ``(N, 1, H, W)``) on any
device and returns a new tensor on the same device; nothing is modified in place. Lengths are in
pixels. Randomness comes from a :class:`Draws`: either one ``torch.Generator`` for the whole batch
or one CPU generator per image, in which case image ``i``'s random numbers come from its own
stream only, whatever the other images of the batch (what makes a corrupted image independent of
how a data set is cut into batches or shared among worker processes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlens._filters import conv_same, gaussian_blur, gaussian_kernel

__all__ = [
    "Draws",
    "affine_elastic",
    "conv_same",
    "frost_texture",
    "gaussian_blur",
    "gaussian_kernel",
    "jitter",
    "luminance",
    "motion_blur",
    "plasma",
    "resample",
    "smooth_field",
    "soft_disk",
    "zoom",
]

#: ITU-R BT.601 luma weights (what OpenCV's RGB2GRAY uses).
_LUMA = (0.299, 0.587, 0.114)


class Draws:
    """Random numbers for a batch of ``n`` images, one row per image, on ``device``.

    Built from one ``torch.Generator`` (every draw is one call for the whole batch, on the
    generator's device) or from a sequence of ``n`` CPU generators (row ``i`` of every draw comes
    from generator ``i``; the numbers are drawn on the CPU and moved, so they are the same on any
    device and whatever the batch holds besides image ``i``).

    Example:
        >>> gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
        >>> both = Draws(gens, torch.device("cpu")).rand(3)
        >>> alone = Draws([torch.Generator().manual_seed(2)], torch.device("cpu")).rand(3)
        >>> torch.equal(both[1], alone[0])
        True
    """

    def __init__(
        self,
        generators: torch.Generator | Sequence[torch.Generator],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self._one = generators if isinstance(generators, torch.Generator) else None
        self._each = None if self._one is not None else list(generators)  # type: ignore[arg-type]

    def _draw(self, kind: str, shape: tuple[int, ...], n: int, dtype: torch.dtype | None) -> Tensor:
        dt = dtype or self.dtype
        fn = torch.rand if kind == "rand" else torch.randn
        if self._one is not None:
            g = self._one
            return fn((n, *shape), generator=g, device=g.device, dtype=dt).to(self.device)
        assert self._each is not None
        rows = [fn(shape, generator=g, dtype=dt) for g in self._each]
        return torch.stack(rows).to(self.device) if rows else torch.empty(0, *shape, dtype=dt)

    def _n(self) -> int:
        return -1 if self._each is None else len(self._each)

    def rand(self, *shape: int, n: int | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """Uniform numbers in ``[0, 1)``, ``(n, *shape)``."""
        return self._draw("rand", shape, self._rows(n), dtype)

    def randn(self, *shape: int, n: int | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """Standard normal numbers, ``(n, *shape)``."""
        return self._draw("randn", shape, self._rows(n), dtype)

    def uniform(self, lo: float, hi: float, *shape: int, n: int | None = None) -> Tensor:
        """Uniform numbers in ``[lo, hi)``, ``(n, *shape)``."""
        return lo + (hi - lo) * self.rand(*shape, n=n)

    def poisson(self, rates: Tensor) -> Tensor:
        """Poisson counts of the given rates ``(n, ...)``, row ``i`` from stream ``i``."""
        if self._one is not None:
            g = self._one
            return torch.poisson(rates.to(g.device), generator=g).to(rates.device)
        assert self._each is not None
        cpu = rates.detach().cpu()
        out = [torch.poisson(cpu[i], generator=g) for i, g in enumerate(self._each)]
        return torch.stack(out).to(rates.device) if out else rates.clone()

    def _rows(self, n: int | None) -> int:
        mine = self._n()
        if n is None:
            if mine < 0:
                raise ValueError("Draws from one generator need the number of rows, n=")
            return mine
        if mine >= 0 and n != mine:
            raise ValueError(f"Draws holds {mine} streams, {n} rows were asked for")
        return n


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


def image_mean(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Mean of ``x`` over ``dims`` (kept), summed in float64 and returned in ``x``'s dtype.

    A float32 sum over one image is split across threads when the batch is small and is not when
    it is large, so its last bit would depend on the batch and on the thread count (a data-loader
    worker runs one thread): a corrupted image must not. Summing in float64 makes the order's
    effect far smaller than float32's rounding.

    Shape: (N, ...) -> (N, ...) with ``dims`` of size 1.
    """
    return x.double().mean(dims, keepdim=True).to(x.dtype)


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
    0.3 to 0.9 into the same single pixel; at ImageNet's integer radii 3 to 10 both cover about
    ``pi radius^2`` pixels). Normalised to sum 1.

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


def smooth_field(field: Tensor, sigma: float) -> Tensor:
    """Gaussian smoothing of ``field`` with borders mirrored (scipy's ``reflect``), by FFT.

    The field is mirrored into a ``2H x 2W`` period and multiplied by the Gaussian's transfer
    function, so the cost does not grow with ``sigma``: ImageNet-C's elastic transform smooths
    with ``sigma`` up to 171 pixels on a 224-pixel image, where a direct kernel would be 1027 taps
    wide. Matches a reflecting convolution with the untruncated Gaussian.

    Shape: (N, C, H, W) -> (N, C, H, W).
    """
    if sigma <= 0:
        return field.clone()
    h, w = field.shape[-2:]
    wide = torch.cat([field, field.flip(-1)], dim=-1)
    period = torch.cat([wide, wide.flip(-2)], dim=-2).double()
    fy = torch.fft.fftfreq(2 * h, device=field.device, dtype=torch.float64)
    fx = torch.fft.rfftfreq(2 * w, device=field.device, dtype=torch.float64)
    transfer = torch.exp(-2 * (math.pi * sigma) ** 2 * (fy[:, None] ** 2 + fx[None, :] ** 2))
    out = torch.fft.irfft2(torch.fft.rfft2(period) * transfer, s=(2 * h, 2 * w))
    return out[..., :h, :w].to(field.dtype)


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


def resample(x: Tensor, h: int, w: int) -> Tensor:
    """``x`` brought to ``h x w``: box (area) averaging to shrink, bilinear to enlarge.

    Shape: (N, C, H0, W0) -> (N, C, h, w).
    """
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if h <= x.shape[-2] and w <= x.shape[-1]:
        return F.interpolate(x, size=(h, w), mode="area")
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


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
    raw = [math.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2) for t in range(taps)]
    weights = [v / sum(raw) for v in raw if v / sum(raw) >= 1e-6]
    rad = angle.to(x.dtype) * (math.pi / 180.0)
    step = torch.stack([torch.cos(rad), torch.sin(rad)], dim=-1).view(n, 1, 1, 2)
    base = _base_grid(n, h, w, x)
    out = torch.zeros_like(x)
    for i, weight in enumerate(weights):
        out = out + weight * _sample(x, base + float(i) * step, "border")
    return out / sum(weights)


def affine_elastic(x: Tensor, alpha: float, sigma: float, affine: float, draws: Draws) -> Tensor:
    """Random affine warp and elastic deformation (Simard et al. 2003), in ImageNet-C's form.

    The affine map moves three points around the centre by up to ``affine`` pixels each (uniform);
    the elastic field is uniform noise in ``[-1, 1]`` per pixel and axis, smoothed by a Gaussian
    of ``sigma`` (borders mirrored, :func:`smooth_field`) and multiplied by ``alpha``. Output pixel
    ``p`` samples the input at ``A (p + d(p))``, ``A`` the affine map and ``d`` the field: the
    composition of Hendrycks and Dietterich's two resamplings, done in one (bilinear, borders
    reflected).

    Shape: (N, C, H, W) -> (N, C, H, W).
    """
    n, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    # Affine: solve for the map sending the jittered points back onto the reference points, so
    # that output pixel p samples the input at A p (the inverse warp, as cv2.warpAffine does).
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=dev, dtype=dt)
    side = max(min(h, w) // 3, 1)
    ref = torch.stack(
        [centre + side, centre + torch.tensor([side, -side], device=dev, dtype=dt), centre - side]
    )  # (3, 2)
    moved = ref + draws.uniform(-1.0, 1.0, 3, 2, n=n).to(dt) * affine
    ones = torch.ones(n, 3, 1, device=dev, dtype=dt)
    # A (N, 2, 3) with A [moved; 1] = ref  <=>  [moved 1] A^T = ref.
    a_t = torch.linalg.solve(torch.cat([moved, ones], dim=2), ref.expand(n, 3, 2))
    coords = _base_grid(n, h, w, x)
    if alpha > 0:
        field = draws.uniform(-1.0, 1.0, 2, h, w, n=n).to(dt)
        coords = coords + alpha * smooth_field(field, sigma).permute(0, 2, 3, 1)
    ones_hw = torch.ones(n, h, w, 1, device=dev, dtype=dt)
    return _sample(x, torch.cat([coords, ones_hw], dim=-1) @ a_t[:, None], "reflection")


def jitter(x: Tensor, delta: float, draws: Draws) -> Tensor:
    """Each pixel resampled (bilinearly) at a random offset of at most ``delta`` pixels along each
    axis (uniform), borders replicated: the "frosted glass" step of glass blur, vectorised.

    Shape: (N, C, H, W) -> (N, C, H, W).
    """
    n, _, h, w = x.shape
    off = draws.uniform(-1.0, 1.0, h, w, 2, n=n).to(x.dtype)
    return _sample(x, _base_grid(n, h, w, x) + off * delta, "border")


# --------------------------------------------------------------------------- fractal noise


def plasma(
    n: int,
    h: int,
    w: int,
    decay: float,
    draws: Draws,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Fractal "plasma" heightmaps by the diamond-square algorithm, one per image, in ``[0, 1]``.

    The map is periodic, of side the power of two covering ``max(h, w)`` (256 for 224-pixel images,
    as ImageNet-C's fog; 32 for CIFAR's), cropped to ``h x w``. Each octave sets the midpoints of
    the current squares, then of their diamonds, to the mean of their four neighbours plus uniform
    noise whose amplitude shrinks by ``decay ** 2`` per octave (the heightmap of Hendrycks and
    Dietterich's fog: a larger ``decay`` gives smoother fog). The loop runs over octaves
    (``log2`` of the side), batched over images and points.

    Shape: -> (n, 1, h, w).
    """
    side = 2
    while side < max(h, w):
        side *= 2
    grid = torch.zeros(n, side, side, device=device, dtype=torch.float64)
    amplitude = 1.0
    step = side

    def noisy(mean: Tensor) -> Tensor:
        u = draws.rand(*mean.shape[1:], n=n, dtype=torch.float64).to(device)
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


#: Colour of the synthetic frost (pale blue-white ice).
FROST_TINT = (0.86, 0.93, 1.0)
#: Mean brightness the synthetic frost texture is brought to.
FROST_MEAN = 0.45


def frost_texture(n: int, h: int, w: int, pixel: float, draws: Draws, like: Tensor) -> Tensor:
    """A frost-on-glass texture per image, made without photographs, in ``[0, 1]``.

    ImageNet-C pastes random crops of six photographs of frost. Here the texture is drawn: ice
    veins are the ridges ``(1 - |2 p - 1|)^3`` of a rough plasma fractal ``p`` (decay 1.3, detail
    down to the pixel), thickened where a smooth plasma (decay 2) is high, so frost gathers in
    patches with thinner crystals between them; the result is scaled to a mean of
    :data:`FROST_MEAN` and tinted :data:`FROST_TINT` (luma for greyscale). ``pixel`` is the size,
    in pixels of this image, of one pixel of the texture (ImageNet-C crops the frost photographs
    at full size, CIFAR-10-C shrinks them to a fifth): the texture is drawn at ``h / pixel`` by
    ``w / pixel`` (at most ``2h x 2w``: finer detail would be averaged away) and resampled to
    ``h x w``.

    Shape: -> (n, C, h, w) with C = like.shape[1].
    """
    # Detail finer than half an output pixel would be averaged away: draw at most at twice the
    # output's size.
    gh = max(4, min(round(h / pixel), 2 * h))
    gw = max(4, min(round(w / pixel), 2 * w))
    dev = like.device
    rough = plasma(n, gh, gw, 1.3, draws, dev, like.dtype)
    patches = plasma(n, gh, gw, 2.0, draws, dev, like.dtype)
    veins = (1 - (2 * rough - 1).abs()) ** 3
    layer = veins * (0.35 + 0.65 * patches) + 0.25 * patches**2
    layer = layer * (FROST_MEAN / image_mean(layer, (1, 2, 3)).clamp_min(1e-6))
    layer = resample(layer.clamp(0, 1), h, w)
    return layer * colour(FROST_TINT, like.shape[1], like)
