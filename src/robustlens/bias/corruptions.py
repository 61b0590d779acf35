"""Robustness to random corruptions (Hendrycks and Dietterich 2019, "Benchmarking neural network
robustness to common corruptions and perturbations", the lecture's ImageNet-C reference).

A corruption maps images ``(N, C, H, W)`` in ``[0, 1]`` and a severity ``1..5`` to corrupted
images of the same shape, batched on the images' device, drawing its randomness from a
``torch.Generator``. ``names()`` lists them; ``corrupt(x, name, severity, seed=...)`` applies one.

Severity tables are Hendrycks and Dietterich's CIFAR-10-C tables (their 32x32 version, the
closest to the 28x28 greyscale images robustlens ships), with lengths in pixels multiplied by
``min(H, W) / 32`` so that a corruption covers the same fraction of any image. Adaptations to
small or greyscale images, and the corruptions left out, are listed in ``docs/corruptions.md``
and in each corruption's ``description``.

``corruption_robustness(model, ds)`` measures accuracy per corruption and severity and, given a
baseline model, the corruption errors ``CE`` and their mean ``mCE`` (x100) as defined in the
paper. ``random_vs_adversarial`` compares random noise with adversarial noise of the same norm:
the lecture's point that adversarial noise is not random.

Example:
    >>> import torch
    >>> x = torch.rand(2, 1, 28, 28)
    >>> out = corrupt(x, "gaussian_noise", 3, seed=0)
    >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
    (torch.Size([2, 1, 28, 28]), True, True)
    >>> torch.equal(out, corrupt(x, "gaussian_noise", 3, seed=0))
    True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens._checks import check_images, check_labels, check_model, check_same_device
from robustlens._runtime import inference_mode, status
from robustlens.bias import _corrupt as ops
from robustlens.data.dataset import ImageDataset
from robustlens.data.stream import ImageData, check_image_data
from robustlens.errors import DTypeError, ParameterError, ShapeError
from robustlens.registry import Registry

__all__ = [
    "BENCHMARK",
    "CORRUPTIONS",
    "Corruption",
    "CorruptionResult",
    "RandomVsAdversarial",
    "corrupt",
    "corruption_robustness",
    "names",
    "random_vs_adversarial",
]

Family = Literal["noise", "blur", "weather", "digital"]
Apply = Callable[[Tensor, Any, torch.Generator], Tensor]

SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    """A registered corruption: ``corruption(x, severity, generator) -> x_corrupted``.

    ``params[s - 1]`` holds the parameters of severity ``s`` (as in the paper's tables, before
    scaling lengths to the image size); ``family`` is the paper's grouping (noise, blur, weather,
    digital).

    Shape: x (N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1], on x's device.
    """

    name: str
    family: Family
    params: tuple[Any, ...]
    apply: Apply = field(repr=False)
    description: str = ""

    def __call__(
        self, x: Tensor, severity: int, generator: torch.Generator | None = None
    ) -> Tensor:
        check_images(x, where=f"corruption {self.name!r}")
        severity = _check_severity(severity, where=f"corruption {self.name!r}")
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(0)
        elif not _same_device(generator.device, x.device):
            raise ParameterError(
                f"corruption {self.name!r}: the generator is on {generator.device} but x is on "
                f"{x.device}; create it with torch.Generator(device=x.device)"
            )
        return self._run(x.detach(), severity, generator)

    def _run(self, x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
        """Unchecked application (inputs already validated)."""
        return self.apply(x, self.params[severity - 1], generator).clamp(0, 1).to(x.dtype)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Same device, an index left out meaning the current one (``cuda`` is ``cuda:0``)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


CORRUPTIONS: Registry[Corruption] = Registry("corruption")

#: Hendrycks and Dietterich's benchmark corruptions available here (their 15 less ``frost``, which
#: needs photographs of frost); the others registered are their held-out extras.
BENCHMARK = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "fog",
    "brightness",
    "contrast",
    "elastic",
    "pixelate",
    "jpeg",
)


def _add(
    name: str, family: Family, params: Sequence[Any], description: str
) -> Callable[[Apply], Apply]:
    if len(params) != len(SEVERITIES):
        raise ParameterError(f"corruption {name!r} needs one parameter set per severity")

    def register(fn: Apply) -> Apply:
        CORRUPTIONS.register(name)(
            Corruption(
                name=name, family=family, params=tuple(params), apply=fn, description=description
            )
        )
        return fn

    return register


def names() -> list[str]:
    """Names of the registered corruptions."""
    return CORRUPTIONS.names()


def _check_severity(severity: Any, *, where: str) -> int:
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ParameterError(f"{where}: 'severity' must be an int in 1..5, got {severity!r}")
    return severity


def _px(x: Tensor) -> float:
    """Pixels of this image per pixel of the tables' 32x32 images."""
    return min(x.shape[2], x.shape[3]) / 32.0


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, like: Tensor) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------- noise


@_add(
    "gaussian_noise",
    "noise",
    (0.04, 0.06, 0.08, 0.09, 0.10),
    "x + N(0, sigma^2) per pixel and channel",
)
def _gaussian_noise(x: Tensor, sigma: float, g: torch.Generator) -> Tensor:
    return x + sigma * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


@_add(
    "shot_noise",
    "noise",
    (500, 250, 100, 75, 50),
    "Poisson photon noise: Poisson(lambda x) / lambda",
)
def _shot_noise(x: Tensor, lam: float, g: torch.Generator) -> Tensor:
    return torch.poisson(x * lam, generator=g) / lam


@_add(
    "impulse_noise",
    "noise",
    (0.01, 0.02, 0.03, 0.05, 0.07),
    "salt and pepper: a fraction p of the values set to 0 or 1 (half each)",
)
def _impulse_noise(x: Tensor, p: float, g: torch.Generator) -> Tensor:
    u = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype)
    salt = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) < 0.5
    return torch.where(u < p, salt.to(x.dtype), x)


@_add(
    "speckle_noise",
    "noise",
    (0.06, 0.10, 0.12, 0.16, 0.20),
    "multiplicative noise x + x N(0, sigma^2) (an extra of the paper)",
)
def _speckle_noise(x: Tensor, sigma: float, g: torch.Generator) -> Tensor:
    return x + x * sigma * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


# --------------------------------------------------------------------------- blur


@_add(
    "defocus_blur",
    "blur",
    ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
    "convolution with an anti-aliased disk (radius, Gaussian alias), lengths x side/32",
)
def _defocus_blur(x: Tensor, p: tuple[float, float], g: torch.Generator) -> Tensor:
    s = _px(x)
    return ops.conv_same(x, ops.soft_disk(p[0] * s, p[1] * s, device=x.device, dtype=x.dtype))


@_add(
    "glass_blur",
    "blur",
    ((0.05, 0.5, 1), (0.25, 0.75, 1), (0.4, 1.0, 1), (0.25, 1.0, 2), (0.4, 1.25, 2)),
    "Gaussian blur (sigma), `iterations` rounds of resampling each pixel at a random offset of "
    "up to `delta` pixels, Gaussian blur again; lengths x side/32. The paper swaps pixels with "
    "neighbours up to 1 pixel away; a continuous, growing `delta` keeps severities ordered",
)
def _glass_blur(x: Tensor, p: tuple[float, float, int], g: torch.Generator) -> Tensor:
    s = _px(x)
    out = ops.gaussian_blur(x, p[0] * s)
    for _ in range(p[2]):
        out = ops.jitter(out, p[1] * s, g)
    return ops.gaussian_blur(out, p[0] * s)


@_add(
    "motion_blur",
    "blur",
    ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.25), (9, 2.5)),
    "one-sided motion blur (radius, sigma) x side/32 in a random direction within 45 degrees "
    "of the horizontal; severity 4 has sigma 2.25 where the paper's 2.0 repeats severity 3",
)
def _motion_blur(x: Tensor, p: tuple[float, float], g: torch.Generator) -> Tensor:
    s = _px(x)
    angle = _uniform(len(x), -45.0, 45.0, g, x)
    return ops.motion_blur(x, p[0] * s, p[1] * s, angle)


@_add(
    "zoom_blur",
    "blur",
    (1.06, 1.11, 1.16, 1.21, 1.26),
    "mean of the image and its zooms into the centre by 1.00, 1.01, ... below the bound",
)
def _zoom_blur(x: Tensor, top: float, g: torch.Generator) -> Tensor:
    factors = [1 + 0.01 * i for i in range(round((top - 1) / 0.01))]
    out = x.clone()
    for f in factors:
        out = out + ops.zoom(x, f)
    return out / (len(factors) + 1)


@_add(
    "gaussian_blur",
    "blur",
    (0.4, 0.6, 0.7, 0.8, 1.0),
    "Gaussian blur, sigma x side/32 (an extra of the paper)",
)
def _gaussian_blur(x: Tensor, sigma: float, g: torch.Generator) -> Tensor:
    return ops.gaussian_blur(x, sigma * _px(x))


# --------------------------------------------------------------------------- weather


@_add(
    "snow",
    "weather",
    (
        (0.1, 0.2, 1.0, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1.0, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "flakes (Gaussian field (mean, std) zoomed, thresholded, motion-blurred downwards) added "
    "twice, over a brightened image; the paper's recipe with torch operations",
)
def _snow(x: Tensor, p: tuple[float, ...], g: torch.Generator) -> Tensor:
    loc, scale, zoom_by, threshold, radius, sigma, keep = p
    n, _, h, w = x.shape
    s = _px(x)
    layer = loc + scale * torch.randn(n, 1, h, w, generator=g, device=x.device, dtype=x.dtype)
    layer = ops.zoom(layer, zoom_by) if zoom_by > 1 else layer
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = ops.motion_blur(layer, radius * s, sigma * s, _uniform(n, -135.0, -45.0, g, x))
    bright = torch.maximum(x, ops.luminance(x) * 1.5 + 0.5)
    out = keep * x + (1 - keep) * bright
    return out + layer + layer.flip(2, 3)


@_add(
    "fog",
    "weather",
    ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
    "x + a * plasma fractal (diamond-square, roughness decay), rescaled by max / (max + a)",
)
def _fog(x: Tensor, p: tuple[float, float], g: torch.Generator) -> Tensor:
    a, decay = p
    n, _, h, w = x.shape
    top = x.amax((1, 2, 3), keepdim=True)
    out = x + a * ops.plasma(n, h, w, decay, g, x.device, x.dtype)
    return out * top / (top + a)


_WATER = (175 / 255, 238 / 255, 238 / 255)
_MUD = (63 / 255, 42 / 255, 20 / 255)


@_add(
    "spatter",
    "weather",
    (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1.0, 0.69, 0.5, 0),
        (0.65, 0.2, 0.7, 0.62, 0.6, 1),
        (0.65, 0.3, 1.0, 0.6, 0.6, 1),
    ),
    "drops: a smoothed Gaussian field (mean, std, sigma) above a threshold, pale water "
    "(severities 1-3) added or brown mud (4-5) pasted; simplified from the paper (no drop "
    "shading), mud thresholds lowered so that mud covers more than water",
)
def _spatter(x: Tensor, p: tuple[float, ...], g: torch.Generator) -> Tensor:
    loc, scale, sigma, threshold, strength, mud = p
    n, c, h, w = x.shape
    s = _px(x)
    liquid = loc + scale * torch.randn(n, 1, h, w, generator=g, device=x.device, dtype=x.dtype)
    liquid = ops.gaussian_blur(liquid, sigma * s)
    wet = liquid >= threshold
    if not mud:
        m = torch.where(wet, liquid, torch.zeros_like(liquid))
        m = m / m.amax((2, 3), keepdim=True).clamp_min(1e-12) * strength
        return x + m * ops.colour(_WATER, c, x)
    m = ops.gaussian_blur(wet.to(x.dtype), strength * s)
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    return x * (1 - m) + ops.colour(_MUD, c, x) * m


@_add(
    "brightness",
    "weather",
    (0.05, 0.1, 0.15, 0.2, 0.3),
    "value channel of HSV raised by b (greyscale: x + b)",
)
def _brightness(x: Tensor, b: float, g: torch.Generator) -> Tensor:
    # Raising V = max over channels keeps hue and saturation: every channel scales by V' / V.
    v = x.amax(1, keepdim=True)
    v_new = (v + b).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


# --------------------------------------------------------------------------- digital


@_add(
    "contrast",
    "digital",
    (0.75, 0.5, 0.4, 0.3, 0.15),
    "(x - mean) * c + mean, the mean per image and channel",
)
def _contrast(x: Tensor, c: float, g: torch.Generator) -> Tensor:
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) * c + mean


@_add(
    "elastic",
    "digital",
    ((0.5, 0.25, 2.5), (1.0, 0.5, 2.5), (1.5, 0.75, 2.5), (2.0, 1.0, 2.5), (2.5, 1.25, 2.5)),
    "random affine jitter (pixels) then an elastic field of RMS length alpha, smoothness sigma, "
    "all x side/32; robustlens' table: the paper's is not ordered on small images",
)
def _elastic(x: Tensor, p: tuple[float, float, float], g: torch.Generator) -> Tensor:
    s = _px(x)
    return ops.affine_elastic(x, p[0] * s, p[1] * s, p[2] * s, g)


@_add(
    "pixelate",
    "digital",
    (0.95, 0.9, 0.85, 0.75, 0.65),
    "box-downsampled to a fraction of the side, box-upsampled back",
)
def _pixelate(x: Tensor, f: float, g: torch.Generator) -> Tensor:
    h, w = x.shape[2:]
    small = F.interpolate(x, size=(max(1, int(h * f)), max(1, int(w * f))), mode="area")
    return F.interpolate(small, size=(h, w), mode="area")


@_add(
    "jpeg",
    "digital",
    (80, 65, 58, 50, 40),
    "JPEG at the given quality with Pillow's codec (robustlens.defenses.JPEG)",
)
def _jpeg(x: Tensor, quality: int, g: torch.Generator) -> Tensor:
    from robustlens.defenses.transforms import JPEG

    if x.shape[1] not in (1, 3):
        raise ShapeError(
            f"corruption 'jpeg': the codec takes greyscale (C=1) or RGB (C=3) images, got "
            f"C={x.shape[1]}; leave 'jpeg' out of corruptions="
        )
    return JPEG(quality=quality)(x)


def corrupt(
    x: Tensor, name: str, severity: int, *, seed: int = 0, generator: torch.Generator | None = None
) -> Tensor:
    """Corruption ``name`` at ``severity`` (1..5) applied to ``x``; seeded, batched, on x's device.

    ``generator`` (on x's device) overrides ``seed`` to draw several calls from one stream.

    Shape: (N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1].

    Example:
        >>> import torch
        >>> x = torch.full((1, 1, 8, 8), 0.5)
        >>> corrupt(x, "contrast", 5).unique().tolist()
        [0.5]
    """
    c = CORRUPTIONS.get(name)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParameterError(f"corrupt: 'seed' must be an int, got {seed!r}")
    if generator is None:
        generator = torch.Generator(device=x.device if isinstance(x, Tensor) else "cpu")
        generator.manual_seed(
            _stream_seed(seed, c.name, severity if isinstance(severity, int) else 0)
        )
    return c(x, severity, generator)


def _stream_seed(seed: int, name: str, severity: int) -> int:
    """A seed per (seed, corruption, severity), independent of which corruptions run."""
    return (seed * 1_000_003 + zlib.crc32(name.encode()) * 11 + severity) % (2**63 - 1)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class CorruptionResult:
    """Accuracy of one model under corruptions, and its corruption errors against a baseline.

    ``accuracy[c][i]`` is the accuracy under corruption ``c`` at ``severities[i]``; ``errors`` the
    matching error rates ``E_{s,c} = 1 - accuracy``. With a baseline (Hendrycks and Dietterich's
    AlexNet role):

    - ``ce[c] = 100 * sum_s E_{s,c} / sum_s E^base_{s,c}`` and ``mce`` its mean over the
      benchmark corruptions run (:data:`BENCHMARK`, as the paper averages over its 15 and keeps
      its extras apart; over all corruptions run when none of them is a benchmark one:
      ``mce_corruptions`` names them);
    - ``relative_ce[c] = 100 * sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean)``
      and ``relative_mce`` its mean over the same corruptions: the degradation caused by the
      corruption alone.

    The paper sums over severities 1 to 5; with fewer severities the figures are not comparable
    with published ones.

    A baseline whose errors (or degradations) sum to zero for a corruption leaves that ``ce`` as
    NaN. Without a baseline these fields are ``None``.
    """

    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    accuracy: dict[str, list[float]]
    clean_accuracy: float
    n: int
    seed: int
    ce: dict[str, float] | None = None
    relative_ce: dict[str, float] | None = None
    mce: float | None = None
    relative_mce: float | None = None
    baseline_clean_accuracy: float | None = None
    mce_corruptions: tuple[str, ...] = ()

    @property
    def errors(self) -> dict[str, list[float]]:
        """Error rate per corruption and severity, ``1 - accuracy``."""
        return {c: [1.0 - a for a in accs] for c, accs in self.accuracy.items()}

    @property
    def corruption_accuracy(self) -> dict[str, float]:
        """Accuracy per corruption, averaged over severities."""
        return {c: sum(a) / len(a) for c, a in self.accuracy.items()}

    @property
    def mean_accuracy(self) -> float:
        """Accuracy averaged over every corruption and severity."""
        values = [a for accs in self.accuracy.values() for a in accs]
        return sum(values) / len(values)

    def severity_accuracy(self) -> list[float]:
        """Accuracy per severity, averaged over corruptions."""
        k = len(self.corruptions)
        return [
            sum(self.accuracy[c][i] for c in self.corruptions) / k
            for i in range(len(self.severities))
        ]

    def with_baseline(self, baseline: CorruptionResult) -> CorruptionResult:
        """This result with CE, relative CE and their means computed against ``baseline``."""
        missing = [c for c in self.corruptions if c not in baseline.accuracy]
        if (baseline.n, baseline.seed) != (self.n, self.seed):
            raise ParameterError(
                "corruption_robustness: the baseline result was measured on "
                f"{baseline.n} images with seed {baseline.seed}, this one on {self.n} with seed "
                f"{self.seed}; run both on the same data set with the same seed"
            )
        if missing or tuple(baseline.severities) != tuple(self.severities):
            raise ParameterError(
                "corruption_robustness: the baseline result must cover the same corruptions and "
                f"severities; it lacks {missing or 'none'} and has severities "
                f"{baseline.severities} against {self.severities}: run the baseline with the "
                "same corruptions= and severities=, or pass the baseline model itself"
            )
        means = tuple(c for c in self.corruptions if c in BENCHMARK) or tuple(self.corruptions)
        err, base_err = self.errors, baseline.errors
        clean_err, base_clean = 1.0 - self.clean_accuracy, 1.0 - baseline.clean_accuracy
        ce: dict[str, float] = {}
        rel: dict[str, float] = {}
        for c in self.corruptions:
            ce[c] = _ratio(sum(err[c]), sum(base_err[c]))
            rel[c] = _ratio(
                sum(e - clean_err for e in err[c]), sum(e - base_clean for e in base_err[c])
            )
        return CorruptionResult(
            corruptions=self.corruptions,
            severities=self.severities,
            accuracy=self.accuracy,
            clean_accuracy=self.clean_accuracy,
            n=self.n,
            seed=self.seed,
            ce=ce,
            relative_ce=rel,
            mce=sum(ce[c] for c in means) / len(means),
            relative_mce=sum(rel[c] for c in means) / len(means),
            baseline_clean_accuracy=baseline.clean_accuracy,
            mce_corruptions=means,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, JSON-ready (NaN stays a float NaN)."""
        return {
            "corruptions": list(self.corruptions),
            "severities": list(self.severities),
            "n": self.n,
            "seed": self.seed,
            "clean_accuracy": self.clean_accuracy,
            "mean_accuracy": self.mean_accuracy,
            "accuracy": {c: list(v) for c, v in self.accuracy.items()},
            "corruption_accuracy": self.corruption_accuracy,
            "errors": self.errors,
            "ce": self.ce,
            "relative_ce": self.relative_ce,
            "mce": self.mce,
            "relative_mce": self.relative_mce,
            "mce_corruptions": list(self.mce_corruptions),
            "baseline_clean_accuracy": self.baseline_clean_accuracy,
        }


def _ratio(num: float, den: float) -> float:
    return 100.0 * num / den if den > 0 else math.nan


def corruption_robustness(
    model: nn.Module,
    ds: ImageData,
    corruptions: Iterable[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    baseline: nn.Module | CorruptionResult | None = None,
    *,
    batch_size: int = 256,
    seed: int = 0,
) -> CorruptionResult:
    """Accuracy of ``model`` on ``ds`` under each corruption and severity; CE and mCE against a
    baseline (Hendrycks and Dietterich 2019).

    ``corruptions=None`` runs every registered corruption (``names()``). ``baseline`` is a model,
    evaluated on exactly the same corrupted images (same seed), or a ``CorruptionResult`` computed
    before with the same corruptions and severities. The corrupted images are drawn from one
    generator per (seed, corruption, severity), batch after batch: the same seed and batch size
    give the same result. Batches run on the model's device. ``ds`` is an ``ImageDataset`` or an
    ``ImageFiles`` streamed from disk (:func:`robustlens.data.batches`): each batch is read once
    and corrupted in every way while in memory; files that do not decode are left out (``n``
    counts the images read).

    Shape: ds.x (N, C, H, W) in [0, 1], ds.y (N,).

    Example:
        >>> import robustlens as rl
        >>> model, ds = rl.zoo.load("digits-cnn"), rl.data.load("digits")[:64]
        >>> res = corruption_robustness(model, ds, ["contrast"], baseline=model)
        >>> res.mce, len(res.accuracy["contrast"])
        (100.0, 5)
    """
    where = "corruption_robustness"
    check_model(model, where=where)
    check_image_data(ds, where)
    chosen = _resolve_names(corruptions, where)
    sev = _check_severities(severities, where)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"{where}: 'batch_size' must be an int >= 1, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParameterError(f"{where}: 'seed' must be an int, got {seed!r}")
    if baseline is not None and not isinstance(baseline, nn.Module | CorruptionResult):
        raise DTypeError(
            f"{where}: baseline must be a model (nn.Module) or a CorruptionResult, got "
            f"{type(baseline).__name__}"
        )
    result = _evaluate(model, ds, chosen, sev, batch_size, seed)
    if baseline is None:
        return result
    if baseline is model:
        base = result
    elif isinstance(baseline, nn.Module):
        base = _evaluate(baseline, ds, chosen, sev, batch_size, seed)
    else:
        base = baseline
    return result.with_baseline(base)


def _resolve_names(corruptions: Iterable[str] | None, where: str) -> tuple[str, ...]:
    if corruptions is None:
        return tuple(names())
    if isinstance(corruptions, str):
        raise ParameterError(
            f"{where}: 'corruptions' must be a list of names, got the string {corruptions!r}; "
            f"write [{corruptions!r}]"
        )
    chosen = tuple(CORRUPTIONS.get(c).name for c in corruptions)
    if not chosen:
        raise ParameterError(f"{where}: 'corruptions' is empty; give at least one name or None")
    if len(set(chosen)) != len(chosen):
        raise ParameterError(f"{where}: 'corruptions' repeats a name: {list(chosen)}")
    return chosen


def _check_severities(severities: Sequence[int], where: str) -> tuple[int, ...]:
    sev = tuple(severities)
    if not sev:
        raise ParameterError(f"{where}: 'severities' is empty; give some of 1..5")
    for s in sev:
        _check_severity(s, where=where)
    if len(set(sev)) != len(sev):
        raise ParameterError(f"{where}: 'severities' repeats a value: {list(sev)}")
    return sev


def _evaluate(
    model: nn.Module,
    ds: ImageData,
    chosen: tuple[str, ...],
    sev: tuple[int, ...],
    batch_size: int,
    seed: int,
) -> CorruptionResult:
    from robustlens._checks import check_logits, model_device
    from robustlens.data.stream import batches as data_batches

    device = model_device(model) or (ds.x.device if isinstance(ds, ImageDataset) else None)
    device = device or torch.device("cpu")
    n = len(ds)
    batches = -(-n // batch_size)
    runs = 1 + len(chosen) * len(sev)  # the clean images, then every corruption and severity
    # One generator per (corruption, severity), each drawn batch after batch: the images are read
    # once (a streamed data set is decoded once, not once per corruption and severity), and the
    # draws are those of a loop over corruptions first.
    gens = {
        (name, s): torch.Generator(device=device).manual_seed(_stream_seed(seed, name, s))
        for name in chosen
        for s in sev
    }
    with (
        inference_mode(model),
        torch.no_grad(),
        status(
            f"corruptions: {len(chosen)} x {len(sev)} severities on {n} images",
            runs * batches,
            unit="batch",
        ) as ticker,
    ):

        def correct(x: Tensor, y: Tensor) -> Tensor:
            ticker.tick()
            return (check_logits(model(x), len(x)).argmax(1) == y).sum()

        clean = torch.zeros((), dtype=torch.long, device=device)
        hits = torch.zeros(len(chosen), len(sev), dtype=torch.long, device=device)
        read = 0
        for k, batch in enumerate(data_batches(ds, batch_size, device=device)):
            ticker.note(f"batch {k + 1} of {batches}")
            xb, yb = batch.x, batch.y
            read += len(batch)
            clean += correct(xb, yb)
            for i, name in enumerate(chosen):
                c = CORRUPTIONS.get(name)
                for j, s in enumerate(sev):
                    hits[i, j] += correct(c._run(xb, s, gens[name, s]), yb)
    acc = (hits.double() / max(read, 1)).tolist()
    return CorruptionResult(
        corruptions=chosen,
        severities=sev,
        accuracy={name: acc[i] for i, name in enumerate(chosen)},
        clean_accuracy=float(clean) / max(read, 1),
        n=read,
        seed=seed,
    )


# --------------------------------------------------------------------------- random vs adversarial


@dataclass(frozen=True)
class RandomVsAdversarial:
    """Accuracy under adversarial noise and under random noise of the same norm, image by image.

    ``adversarial_norms[i]`` is the ``norm`` of image ``i``'s adversarial perturbation (0 for an
    image the model already got wrong, which is not attacked); random noise of that norm is drawn
    ``trials`` times per image. ``random_norms`` are the norms actually reached after clipping to
    ``[0, 1]`` (mean over trials). ``random_accuracy`` averages over trials.
    """

    attack: str
    norm: str
    clean_accuracy: float
    adversarial_accuracy: float
    random_accuracy: float
    adversarial_norms: Tensor
    random_norms: Tensor
    trials: int

    def to_dict(self) -> dict[str, Any]:
        """Headline numbers, JSON-ready."""
        return {
            "attack": self.attack,
            "norm": self.norm,
            "clean_accuracy": self.clean_accuracy,
            "adversarial_accuracy": self.adversarial_accuracy,
            "random_accuracy": self.random_accuracy,
            "median_adversarial_norm": float(self.adversarial_norms.median()),
            "median_random_norm": float(self.random_norms.median()),
            "trials": self.trials,
        }


def random_vs_adversarial(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    norm: Literal["l2", "linf"] = "l2",
    eps: float | None = None,
    attack: Any = None,
    trials: int = 10,
    seed: int = 0,
) -> RandomVsAdversarial:
    """Accuracy under adversarial noise and under random noise of the same per-image norm.

    The adversarial perturbations come from ``attack`` (any robustlens attack), else from
    ``PGD(eps=eps, norm=norm, steps=40)`` when ``eps`` is given, else from ``DeepFool(norm=norm)``
    (the smallest perturbation that changes the decision). Each image then receives ``trials``
    random perturbations whose ``norm`` equals its adversarial one: a uniformly random direction
    for L2, uniformly random signs for Linf. After clipping to ``[0, 1]`` the random perturbation
    is rescaled (a few rounds) to keep its L2 norm. The lecture's point: the adversarial noise is
    not random, so noise of the same size chosen at random almost never changes the decision.

    Shape: x (N, C, H, W) in [0, 1], y (N,) or None (the model's predictions).

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:32]
        >>> res = random_vs_adversarial(rl.zoo.load("digits-cnn"), ds.x, ds.y, trials=4)
        >>> res.adversarial_accuracy < 0.1 < 0.8 < res.random_accuracy
        True
    """
    from robustlens._checks import check_logits
    from robustlens.attacks import PGD, Attack, DeepFool
    from robustlens.attacks._steps import norms

    where = "random_vs_adversarial"
    check_model(model, where=where)
    check_images(x, where=where)
    check_same_device(model, x, where=where)
    if norm not in ("l2", "linf"):
        raise ParameterError(f"{where}: 'norm' must be 'l2' or 'linf', got {norm!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ParameterError(f"{where}: 'trials' must be an int >= 1, got {trials!r}")
    if eps is not None and (
        isinstance(eps, bool)
        or not isinstance(eps, int | float)
        or not eps > 0
        or not math.isfinite(eps)
    ):
        raise ParameterError(f"{where}: 'eps' must be a float > 0 or None, got {eps!r}")
    if attack is None:
        attack = (
            PGD(eps=float(eps), norm=norm, steps=40, seed=seed)
            if eps is not None
            else DeepFool(norm=norm, seed=seed)
        )
    elif not isinstance(attack, Attack):
        raise DTypeError(
            f"{where}: attack must be a robustlens attack such as rl.attacks.PGD(...), got "
            f"{type(attack).__name__}"
        )
    if y is not None:
        y = check_labels(y, len(x), where=where)
    res = attack(model, x, y)
    delta = (res.x_adv - x).detach()
    target = norms(delta, norm)
    n = len(x)
    g = torch.Generator(device=x.device).manual_seed(seed)
    reps = x.repeat(trials, 1, 1, 1)
    goal = target.repeat(trials)
    if norm == "l2":
        noise = torch.randn(reps.shape, generator=g, device=x.device, dtype=x.dtype)
    else:
        noise = torch.rand(reps.shape, generator=g, device=x.device, dtype=x.dtype).round() * 2 - 1
    noise = noise * (goal / norms(noise, norm).clamp_min(1e-12)).view(-1, 1, 1, 1)
    x_rand = (reps + noise).clamp(0, 1)
    if norm == "l2":
        # Clipping shortens the noise; scale it back up (pixels stuck at 0 or 1 stay there).
        for _ in range(5):
            reached = norms(x_rand - reps, "l2")
            scale = torch.where(
                reached > 0, goal / reached.clamp_min(1e-12), torch.ones_like(reached)
            )
            x_rand = (reps + (x_rand - reps) * scale.view(-1, 1, 1, 1)).clamp(0, 1)
    labels = res.y
    with inference_mode(model), torch.no_grad():
        pred_rand = torch.cat(
            [check_logits(model(xb), len(xb), where=where).argmax(1) for xb in x_rand.split(512)]
        )
    correct_rand = (pred_rand == labels.repeat(trials)).double()
    reached = norms(x_rand - reps, norm).view(trials, n).mean(0)
    return RandomVsAdversarial(
        attack=attack.name,
        norm=norm,
        clean_accuracy=res.clean_accuracy,
        adversarial_accuracy=res.robust_accuracy,
        random_accuracy=float(correct_rand.mean()),
        adversarial_norms=target,
        random_norms=reached,
        trials=trials,
    )
