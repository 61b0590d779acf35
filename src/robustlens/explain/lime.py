"""LIME on superpixels (Ribeiro et al. 2016, "Why should I trust you?"), with its explanation path.

For an image ``x`` cut into ``S`` superpixels, LIME draws ``n`` binary presence vectors
``z' in {0, 1}^S`` (the first one all ones: ``x`` itself, as lime does; the others uniform), builds
each perturbed image ``z`` by replacing the switched-off superpixels with a *hidden* image ``h``,
queries the model, and fits the sparse linear surrogate

    g(z') = b + w^T z',   minimising  sum_z pi_x(z) (f(z) - g(z'))^2  subject to  ||w||_0 <= K,

by the lecture's recipe: the Lasso path selects ``K`` superpixels, weighted least squares on them
gives ``w`` and ``b`` (see :mod:`robustlens.explain._solvers`).

**Defaults and their formulas** (``Lime()`` field in brackets):

- hidden image [``hide="mean"``]: each superpixel's mean colour (lime_image's default);
  ``"constant"``: every pixel ``fill`` (default 0); ``"blur"``: a Gaussian blur of ``x`` with
  standard deviation ``blur_sigma = 0.5 sqrt(H W / 50)`` pixels (half the side of a typical
  superpixel: 2 on 28x28, 15.8 on 224x224), borders replicated.
- kernel [``kernel="image"``]: the lecture's exponential kernel on the image distance, with the
  decaying sign (the slide's formula omits the minus):
  ``pi = exp(-d^2 / sigma^2)`` with the normalised distance ``d = ||x - z||_2 / ||x - h||_2``
  (0 for ``x``, 1 with every superpixel hidden) and ``sigma = 0.5``. ``kernel="binary"`` is
  lime_image's kernel on the presence vector: ``pi = sqrt(exp(-D^2 / sigma^2))`` with the cosine
  distance ``D = 1 - sqrt(m / S)`` between ``z'`` (``m`` superpixels on) and the all-ones vector,
  and ``sigma = 0.25`` (lime_image's ``kernel_width``).
- explained output [``output="probs"``]: the softmax probability of the target class (as lime);
  ``"logits"`` or ``"log-probs"`` when probabilities saturate.
- target: the model's predicted class on ``x``; several classes share one sample set.
- selection [``path_method="lasso"``]: the support at the last Lasso breakpoint with at most ``K``
  superpixels (lime's ``lasso_path`` rule); ``"lar"`` uses plain least-angle regression, whose
  supports are nested.
- diagnostics: ``r2`` the weighted R^2 of the final fit; ``ess = (sum pi)^2 / sum pi^2`` the
  effective sample size of the kernel weights; ``local_pred = b + sum_s w_s`` the surrogate at
  ``x`` (compare with ``model_output``, the model's value there).
- warnings (``Explanation.warnings``): the path has fewer than ``K`` superpixels;
  ``ess < max(0.05 n, S + 1)``; the weighted standard deviation of the explained output over the
  samples (``output_std``) is below :data:`FLAT_STD` = ``1e-3`` (a saturated output: explain
  logits or log-probabilities). On an output that varies, two flags say the surrogate cannot be
  trusted: its weighted ``r2`` is below :data:`MIN_R2` = 0.5 (it explains less than half of the
  output's variation over the samples), or it is far from the model at the image itself,
  ``|local_pred - model_output| > MAX_GAP * output_std`` with :data:`MAX_GAP` = 1 (an error at
  ``x`` larger than the root mean square error of the constant that predicts the weighted mean
  output for every sample). The third trust flag, a deletion
  curve no better than random order (not 10% below its mean area), needs more model calls:
  :attr:`robustlens.explain.Faithfulness.warnings`.

Model calls run in chunks of ``batch_size`` on the model's device under :func:`inference_mode`;
each chunk's masks are one gather ``Z[:, segments]``; a batch of images shares the chunks. With
``channels_last=True`` the perturbed images reach the model in channels-last memory layout, which
CPU convolutions (oneDNN) run markedly faster (about 1.8x on the zoo's convnet, 1.2x on ResNet-18
at 224x224 here); it is off by default because a model that calls ``.view`` on its input rejects
non-contiguous tensors.

Example:
    >>> import torch, robustlens as rl
    >>> model = rl.zoo.load("digits-cnn")
    >>> image = rl.data.load("digits", split="test").x[0]
    >>> exp = Lime(samples=300, K=3, segmenter="grid", output="logits", seed=0)(model, image)
    >>> exp.weights.shape == (exp.num_segments,), int(exp.top(3).sum()) > 0
    (True, True)
"""

from __future__ import annotations

import math
import warnings as _warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from robustlens import _filters
from robustlens._checks import check_images, check_logits, check_model, model_device
from robustlens._images import Pixels, as_pixels
from robustlens._runtime import inference_mode, progress
from robustlens.errors import DTypeError, LabelError, ParameterError, ShapeError
from robustlens.explain._solvers import LassoPath, lasso_path, weighted_least_squares
from robustlens.explain.segmentation import (
    SEGMENTERS,
    Segmenter,
    SegmenterLike,
    check_segments,
    segment,
)

__all__ = [
    "ESS_FRACTION",
    "FLAT_STD",
    "MAX_GAP",
    "MIN_R2",
    "Explanation",
    "Lime",
    "Samples",
    "channels_last",
    "gaussian_blur",
    "hidden_image",
    "kernel_weights",
    "shown_superpixels",
]

Hide = Literal["mean", "constant", "blur"]
Kernel = Literal["image", "binary"]
Output = Literal["probs", "logits", "log-probs"]

#: ``ess`` below this fraction of the samples (or below ``S + 1``) triggers a warning.
ESS_FRACTION = 0.05
#: A weighted standard deviation of the explained output below this triggers a warning.
FLAT_STD = 1e-3
#: A weighted R^2 of the surrogate below this triggers a warning (it explains less than half of
#: the explained output's weighted variance over the samples).
MIN_R2 = 0.5
#: The surrogate at the image farther from the model than this many weighted standard deviations
#: of the explained output over the samples triggers a warning.
MAX_GAP = 1.0
#: Default kernel widths.
DEFAULT_SIGMA: dict[str, float] = {"image": 0.5, "binary": 0.25}


# --------------------------------------------------------------------------- which to show


def shown_superpixels(weights: Tensor, k: int) -> Tensor:
    """Ids of the superpixels an explanation shows, most important first, int64 ``(<= k,)``.

    The ``k`` largest positive weights (the superpixels that raise the explained output most);
    when no weight is positive, every superpixel lowers the output and the ``k`` largest in
    magnitude are shown instead, so a run whose weights are all negative still points at the
    regions the model's output depends on. Zero weights are never shown.

    Example:
        >>> shown_superpixels(torch.tensor([0.1, -0.5, 0.4, 0.0]), 3).tolist()
        [2, 0]
        >>> shown_superpixels(torch.tensor([-0.1, -0.5, -0.4, 0.0]), 2).tolist()
        [1, 2]
    """
    w = weights.detach()
    score = w if bool((w > 0).any()) else w.abs()
    order = torch.argsort(score, descending=True, stable=True)[: min(k, len(w))]
    return order[score[order] > 0]


# --------------------------------------------------------------------------- hidden image


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of standard deviation ``sigma`` pixels, borders replicated.

    The kernel is truncated at ``3 sigma`` (and at the image size).

    Shape: (C, H, W) or (N, C, H, W) -> the same.
    """
    x = image[None] if image.ndim == 3 else image
    out = _filters.gaussian_blur(x, sigma, truncate=3.0, within_image=True)
    return out[0] if image.ndim == 3 else out


def channels_last(z: Tensor) -> Tensor:
    """``z`` copied into channels-last memory (NHWC), returned as an ``(N, C, H, W)`` view.

    One-channel images get an unused second channel in the buffer: with strides ``(2HW, 1, 2W, 2)``
    the layout is unambiguously channels-last, so convolutions run in it (with ``C = 1`` a dense
    NHWC buffer has NCHW's strides and PyTorch would treat it as NCHW).

    Example:
        >>> channels_last(torch.rand(2, 1, 3, 4)).stride()
        (24, 1, 8, 2)
    """
    n, c, h, w = z.shape
    buf = torch.empty(n, h, w, c + (c == 1), dtype=z.dtype, device=z.device)
    view = buf[..., :c]
    view.copy_(z.permute(0, 2, 3, 1))
    return view.permute(0, 3, 1, 2)


def default_blur_sigma(height: int, width: int) -> float:
    """``0.5 sqrt(H W / 50)``: half the side of a typical superpixel (about 50 per image)."""
    return 0.5 * math.sqrt(height * width / 50)


def hidden_image(
    image: Tensor,
    segments: Tensor,
    hide: Hide = "mean",
    *,
    fill: float = 0.0,
    blur_sigma: float | None = None,
) -> Tensor:
    """The image that replaces switched-off superpixels: mean colours, a constant or a blur.

    ``"mean"``: every pixel takes its superpixel's mean colour (one ``index_add`` over pixels);
    ``"constant"``: ``fill``; ``"blur"``: :func:`gaussian_blur` with ``blur_sigma`` (default
    :func:`default_blur_sigma`).

    Shape: image (C, H, W), segments (H, W) -> (C, H, W).

    Example:
        >>> import torch
        >>> img = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])
        >>> hidden_image(img, torch.tensor([[0, 0], [1, 1]])).tolist()
        [[[0.5, 0.5], [0.5, 0.5]]]
    """
    c, h, w = image.shape
    if hide == "constant":
        return torch.full_like(image, float(fill))
    if hide == "blur":
        sigma = default_blur_sigma(h, w) if blur_sigma is None else blur_sigma
        return gaussian_blur(image, sigma)
    if hide != "mean":
        raise ParameterError(
            f"hidden_image: 'hide' must be 'mean', 'constant' or 'blur', got {hide!r}"
        )
    flat = segments.flatten().to(image.device)
    s = int(flat.max()) + 1
    sums = torch.zeros(c, s, device=image.device, dtype=image.dtype)
    sums.index_add_(1, flat, image.reshape(c, -1))
    counts = torch.bincount(flat, minlength=s).to(image.dtype)
    means = sums / counts.clamp_min(1)
    return means[:, flat].reshape(c, h, w)


def segment_energy(image: Tensor, hidden: Tensor, segments: Tensor) -> Tensor:
    """``E_s = ||(x - h) on superpixel s||_2^2``, so that ``||x - z||^2 = sum_s (1 - z'_s) E_s``.

    Shape: (C, H, W), (C, H, W), (H, W) -> (S,) float64.
    """
    flat = segments.flatten().to(image.device)
    s = int(flat.max()) + 1
    sq = ((image - hidden).double() ** 2).sum(0).flatten()
    return torch.zeros(s, dtype=torch.float64, device=image.device).index_add_(0, flat, sq)


def kernel_weights(
    Z: Tensor, energy: Tensor, *, kernel: Kernel = "image", sigma: float | None = None
) -> Tensor:
    """The kernel weights ``pi`` of the presence vectors ``Z`` (module docstring formulas).

    ``energy`` is :func:`segment_energy` (used by the image kernel).

    Shape: Z (n, S) bool or {0, 1}, energy (S,) -> (n,) float64 in (0, 1].

    Example:
        >>> import torch
        >>> Z = torch.tensor([[1, 1], [1, 0], [0, 0]])
        >>> kernel_weights(Z, torch.tensor([1.0, 3.0]), sigma=1.0).tolist()  # d^2 = 0, 3/4, 1
        [1.0, 0.4723665527410147, 0.36787944117144233]
    """
    width = DEFAULT_SIGMA[kernel] if sigma is None else sigma
    zf = Z.to(torch.float64)
    if kernel == "image":
        e = energy.to(zf.device, torch.float64)
        d2 = ((1 - zf) @ e) / e.sum()
        return torch.exp(-d2 / width**2)
    if kernel == "binary":
        s = zf.shape[1]
        dist = 1 - torch.sqrt(zf.sum(1) / s)
        return torch.sqrt(torch.exp(-(dist**2) / width**2))
    raise ParameterError(f"kernel_weights: 'kernel' must be 'image' or 'binary', got {kernel!r}")


# --------------------------------------------------------------------------- explanation


@dataclass(frozen=True, kw_only=True, eq=False)
class Explanation:
    """LIME's explanation of one image for one class.

    ``segments`` int64 ``(H, W)`` with ids ``0..S-1``; ``weights`` ``(S,)`` indexed by those ids
    (zero outside the ``K`` selected superpixels); ``intercept``; ``path`` the Lasso path from the
    same sample set; ``r2``, ``ess``, ``local_pred``, ``model_output`` and ``output_std`` (see the
    module docstring); ``prediction`` the model's class at the image (``-1`` when unknown), so that
    ``target == prediction`` says whether the prediction was explained; ``warnings``.
    ``top(k)`` is the pixel mask of the ``k`` largest positive weights.
    """

    image: Tensor
    segments: Tensor
    weights: Tensor
    intercept: float
    target: int
    K: int
    path: LassoPath
    r2: float
    ess: float
    local_pred: float
    model_output: float
    output: str = "probs"
    kernel: str = "image"
    sigma: float = DEFAULT_SIGMA["image"]
    hide: str = "mean"
    hide_value: float = 0.0
    samples: int = 0
    seed: int = 0
    class_names: tuple[str, ...] | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    output_std: float = math.nan
    prediction: int = -1

    # ------------------------------------------------------------------ views
    @property
    def num_segments(self) -> int:
        """``S``, the number of superpixels."""
        return int(self.weights.shape[0])

    @property
    def label(self) -> str:
        """The target's class name (its index when no names are known)."""
        return self.class_name(self.target)

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (the index itself when no names are known)."""
        if self.class_names and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def explained_as(self, label: int | None = None) -> str:
        """The explained class, and whether it is the model's prediction and the ``label``.

        Example:
            >>> e = Explanation.from_dict({"weights": [1.0], "intercept": 0.0, "target": 1,
            ...     "K": 1, "path": {"alphas": [], "coefs": [], "sizes": [], "order": []},
            ...     "r2": 1.0, "ess": 1.0, "local_pred": 1.0, "image": [[[0.0]]],
            ...     "segments": [[0]], "class_names": ["cat", "dog"], "prediction": 1})
            >>> print(e.explained_as(0))
            dog (index 1): the model's prediction, not the label (cat)
        """
        bits = []
        if self.prediction >= 0:
            bits.append(
                "the model's prediction"
                if self.prediction == self.target
                else f"not the model's prediction ({self.class_name(self.prediction)})"
            )
        if label is not None:
            bits.append(
                "the label" if label == self.target else f"not the label ({self.class_name(label)})"
            )
        return f"{self.label} (index {self.target})" + (": " + ", ".join(bits) if bits else "")

    @property
    def gap(self) -> float:
        """``|local_pred - model_output|``: how far the surrogate is from the model at the image."""
        return abs(self.local_pred - self.model_output)

    @property
    def relative_gap(self) -> float:
        """:attr:`gap` in weighted standard deviations of the explained output over the samples
        (``nan`` when unknown; flagged above :data:`MAX_GAP`)."""
        if not self.output_std > 0:
            return math.nan
        return self.gap / self.output_std

    @property
    def selected(self) -> Tensor:
        """Ids of the superpixels in the surrogate (non-zero weight), by decreasing weight."""
        ids = (self.weights != 0).nonzero().flatten()
        return ids[torch.argsort(self.weights[ids], descending=True, stable=True)]

    @property
    def hidden(self) -> Tensor:
        """The image that replaced switched-off superpixels, ``(C, H, W)``."""
        if self.hide == "constant":
            return hidden_image(self.image, self.segments, "constant", fill=self.hide_value)
        if self.hide == "blur":
            return hidden_image(self.image, self.segments, "blur", blur_sigma=self.hide_value)
        return hidden_image(self.image, self.segments, "mean")

    @property
    def by_magnitude(self) -> bool:
        """Whether no weight is positive, so that :meth:`top_ids` ranks by ``|weight|``."""
        return not bool((self.weights > 0).any())

    def top_ids(self, k: int | None = None) -> Tensor:
        """Ids of the ``k`` (default ``K``) top superpixels, most important first: the largest
        positive weights, or the largest ``|weight|`` when none is positive
        (:func:`shown_superpixels`)."""
        k = self.K if k is None else k
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ParameterError(f"Explanation.top: 'k' must be an int >= 0, got {k!r}")
        return shown_superpixels(self.weights, k)

    def top(self, k: int | None = None) -> Tensor:
        """Boolean pixel mask ``(H, W)`` of the ``k`` (default ``K``) top superpixels
        (:meth:`top_ids`); fewer when fewer weights are nonzero (or positive)."""
        ids = self.top_ids(k)
        keep = torch.zeros(self.num_segments, dtype=torch.bool, device=self.segments.device)
        keep[ids.to(keep.device)] = True
        return keep[self.segments]

    def weight_map(self) -> Tensor:
        """Each pixel's superpixel weight, ``(H, W)`` (``weights[segments]``)."""
        return self.weights.to(self.segments.device)[self.segments]

    def format(self, k: int | None = None) -> str:
        """A few lines of text: class, top superpixels with weights, fit diagnostics, warnings."""
        if self.prediction < 0:
            which = ""
        elif self.prediction == self.target:
            which = ", the model's prediction"
        else:
            which = f", not the model's prediction ({self.class_name(self.prediction)})"
        gap = f"surrogate {self.local_pred:.4f}"
        if math.isfinite(self.relative_gap):
            gap += (
                f" (gap {self.gap:.4f} = {self.relative_gap:.2f} standard deviations of the "
                f"{self.output} over the samples; flagged above {MAX_GAP:g})"
            )
        lines = [
            f"class {self.label} (index {self.target}{which}): {self.output} "
            f"{self.model_output:.4f} at the image, {gap}",
            f"{self.num_segments} superpixels, {self.samples} samples, K={self.K}: "
            f"r2 {self.r2:.4f} (flagged below {MIN_R2:g}), ess {self.ess:.1f}, "
            f"intercept {self.intercept:.4f}",
        ]
        ids = self.top_ids(k)
        if self.by_magnitude:
            lines.append(
                f"no superpixel has a positive weight (none raises this output); the {len(ids)} "
                "with the largest |weight|, which lower it most (id: weight):"
            )
        else:
            lines.append(f"top {len(ids)} superpixels (id: weight):")
        for i in ids.tolist():
            lines.append(f"  {i:>4}: {float(self.weights[i]):+.4f}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, *, pixels: Pixels = "lists") -> dict[str, Any]:
        """JSON-ready dict (image rounded to 4 decimals); :meth:`from_dict` inverts it.

        ``pixels="tensors"`` leaves ``image`` and ``segments`` as CPU tensors, for a writer that
        stores them as image files (the audit's ``results.json`` names them by path).
        """
        where = "Explanation.to_dict"
        return {
            "image": as_pixels(self.image, pixels, where=where),
            "segments": as_pixels(self.segments, pixels, where=where),
            "weights": [float(v) for v in self.weights.tolist()],
            "intercept": self.intercept,
            "target": self.target,
            "label": self.label,
            "class_names": list(self.class_names) if self.class_names else None,
            "K": self.K,
            "path": self.path.to_dict(),
            "r2": self.r2,
            "ess": self.ess,
            "local_pred": self.local_pred,
            "model_output": self.model_output,
            "output": self.output,
            "kernel": self.kernel,
            "sigma": self.sigma,
            "hide": self.hide,
            "hide_value": self.hide_value,
            "samples": self.samples,
            "seed": self.seed,
            "warnings": list(self.warnings),
            "output_std": self.output_std,
            "prediction": self.prediction,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Explanation:
        """Rebuild an explanation written by :meth:`to_dict` (tensors on the CPU); ``image`` and
        ``segments`` may be nested lists or tensors."""
        weights = torch.tensor(d["weights"], dtype=torch.float64)
        names = d.get("class_names")
        return cls(
            image=torch.as_tensor(d["image"], dtype=torch.float32).cpu(),
            segments=torch.as_tensor(d["segments"], dtype=torch.long).cpu(),
            weights=weights,
            intercept=float(d["intercept"]),
            target=int(d["target"]),
            K=int(d["K"]),
            path=LassoPath.from_dict(d["path"], int(weights.shape[0])),
            r2=float(d["r2"]),
            ess=float(d["ess"]),
            local_pred=float(d["local_pred"]),
            model_output=float(d.get("model_output", float("nan"))),
            output=str(d.get("output", "probs")),
            kernel=str(d.get("kernel", "image")),
            sigma=float(d.get("sigma", DEFAULT_SIGMA["image"])),
            hide=str(d.get("hide", "mean")),
            hide_value=float(d.get("hide_value", 0.0)),
            samples=int(d.get("samples", 0)),
            seed=int(d.get("seed", 0)),
            class_names=tuple(names) if names else None,
            warnings=tuple(d.get("warnings", ())),
            output_std=float(d.get("output_std", math.nan)),
            prediction=int(d.get("prediction", -1)),
        )

    def __repr__(self) -> str:
        return (
            f"Explanation(target={self.target}, S={self.num_segments}, K={self.K}, "
            f"top={self.top_ids().tolist()}, r2={self.r2:.3f}, ess={self.ess:.1f})"
        )


@dataclass(frozen=True, eq=False)
class Samples:
    """LIME's sample set for one image (see :meth:`Lime.sample`).

    ``Z`` (n, S) bool presence vectors (row 0 all ones: the image), ``outputs`` (n, K) float64 the
    explained model output of each perturbed image for every class, ``weights`` (n,) the kernel
    weights ``pi``, ``hidden`` (C, H, W) the replacement image, ``prediction`` the predicted class.
    """

    image: Tensor
    segments: Tensor
    hidden: Tensor
    Z: Tensor
    outputs: Tensor
    weights: Tensor
    prediction: int

    @property
    def ess(self) -> float:
        """Effective sample size of the kernel weights, ``(sum pi)^2 / sum pi^2``."""
        return float(self.weights.sum() ** 2 / (self.weights**2).sum())


# --------------------------------------------------------------------------- LIME


TargetSpec = int | Sequence[int] | Tensor | None


@dataclass(frozen=True, kw_only=True)
class Lime:
    """LIME superpixel explanations; every default and formula is in the module docstring.

    Call it on one image ``(C, H, W)`` (returns an :class:`Explanation`; a sequence of classes as
    ``target`` returns one per class from one sample set) or on a batch ``(N, C, H, W)`` (returns a
    list, one per image, for ``target`` None, an int or ``(N,)`` labels). ``segments=`` gives a
    segmentation instead of running the segmenter (one ``(H, W)`` map, or one per image).

    Shape: image (C, H, W) or (N, C, H, W) in [0, 1] -> Explanation(s) with segments (H, W) and
    weights (S,).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> lime = Lime(samples=100, K=2, segmenter="grid", seed=0)
        >>> exps = lime(model, torch.rand(2, 1, 4, 4))
        >>> len(exps), exps[0].weights.shape  # 2x2-pixel grid cells on 4x4 images
        (2, torch.Size([4]))
    """

    samples: int = 1000
    K: int = 5
    segmenter: SegmenterLike = "slic"
    kernel: Kernel = "image"
    sigma: float | None = None
    hide: Hide = "mean"
    fill: float = 0.0
    blur_sigma: float | None = None
    output: Output = "probs"
    path_method: Literal["lasso", "lar"] = "lasso"
    batch_size: int = 256
    channels_last: bool = False
    seed: int = 0
    class_names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field_name, minimum in (("samples", 2), ("K", 1), ("batch_size", 1)):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ParameterError(
                    f"{name}: {field_name!r} must be an int >= {minimum}, got {value!r}"
                )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ParameterError(f"{name}: 'seed' must be an int, got {self.seed!r}")
        if not isinstance(self.channels_last, bool):
            raise ParameterError(
                f"{name}: 'channels_last' must be True or False, got {self.channels_last!r}"
            )
        for field_name, choices in (
            ("kernel", ("image", "binary")),
            ("hide", ("mean", "constant", "blur")),
            ("output", ("probs", "logits", "log-probs")),
            ("path_method", ("lasso", "lar")),
        ):
            if getattr(self, field_name) not in choices:
                raise ParameterError(
                    f"{name}: {field_name!r} must be one of {', '.join(map(repr, choices))}, "
                    f"got {getattr(self, field_name)!r}"
                )
        for field_name in ("sigma", "blur_sigma"):
            value = getattr(self, field_name)
            ok = value is None or (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value > 0
            )
            if not ok:
                raise ParameterError(
                    f"{name}: {field_name!r} must be a float > 0 or None, got {value!r}"
                )
        fill = self.fill
        if not isinstance(fill, int | float) or isinstance(fill, bool) or not 0 <= fill <= 1:
            raise ParameterError(f"{name}: 'fill' must be a float in [0, 1], got {fill!r}")
        if isinstance(self.segmenter, str):
            SEGMENTERS.get(self.segmenter)  # unknown names fail here, with a suggestion
        elif not (isinstance(self.segmenter, Segmenter) or callable(self.segmenter)):
            raise ParameterError(
                f"{name}: 'segmenter' must be a name ({', '.join(SEGMENTERS.names())}), a "
                f"Segmenter or a callable image -> ids, got {type(self.segmenter).__name__}"
            )

    @property
    def width(self) -> float:
        """The kernel width in use (``sigma``, or the kernel's default)."""
        return DEFAULT_SIGMA[self.kernel] if self.sigma is None else float(self.sigma)

    # ------------------------------------------------------------------ entry points
    def __call__(
        self,
        model: nn.Module,
        image: Tensor,
        target: TargetSpec = None,
        *,
        segments: Tensor | Sequence[Tensor] | None = None,
    ) -> Explanation | list[Explanation]:
        """Explain one image ``(C, H, W)`` or a batch ``(N, C, H, W)`` (see the class docstring)."""
        if isinstance(image, Tensor) and image.ndim == 4:
            return self.explain_batch(model, image, target, segments=segments)
        if segments is not None and not isinstance(segments, Tensor):
            raise DTypeError("Lime: for one image, 'segments' must be one (H, W) tensor")
        if isinstance(target, Sequence | Tensor) and not (
            isinstance(target, Tensor) and target.ndim == 0
        ):
            return self.explain_classes(
                model, image, _int_list(target, "target"), segments=segments
            )
        tgt = None if target is None else _as_int(target, "target")
        return self.explain(model, image, tgt, segments=segments)

    def explain(
        self,
        model: nn.Module,
        image: Tensor,
        target: int | None = None,
        *,
        segments: Tensor | None = None,
    ) -> Explanation:
        """One image ``(C, H, W)``, one class (default: the predicted one)."""
        x = self._single(image)
        segs = None if segments is None else [segments]
        return self._run(model, x, [None if target is None else [target]], segs)[0][0]

    def explain_classes(
        self,
        model: nn.Module,
        image: Tensor,
        classes: Sequence[int],
        *,
        segments: Tensor | None = None,
    ) -> list[Explanation]:
        """One image ``(C, H, W)``, several classes explained from one sample set."""
        x = self._single(image)
        classes = _int_list(classes, "classes")
        if not classes:
            raise ParameterError("Lime: give at least one class to explain")
        segs = None if segments is None else [segments]
        return self._run(model, x, [classes], segs)[0]

    def explain_batch(
        self,
        model: nn.Module,
        images: Tensor,
        target: int | Sequence[int] | Tensor | None = None,
        *,
        segments: Tensor | Sequence[Tensor] | None = None,
    ) -> list[Explanation]:
        """A batch ``(N, C, H, W)``: one explanation per image; the model calls are shared."""
        x = check_images(images, name="images", where="Lime")
        n = x.shape[0]
        targets: list[list[int] | None]
        if target is None:
            targets = [None] * n
        elif isinstance(target, int | Tensor) and (
            not isinstance(target, Tensor) or target.ndim == 0
        ):
            targets = [[_as_int(target, "target")]] * n
        else:
            labels = _int_list(target, "target")
            if len(labels) != n:
                raise LabelError(
                    f"Lime: 'target' must hold one class per image ({n}), got {len(labels)}"
                )
            targets = [[t] for t in labels]
        segs: list[Tensor] | None
        if segments is None:
            segs = None
        elif isinstance(segments, Tensor) and segments.ndim == 3:
            segs = list(segments)
        elif isinstance(segments, Tensor):
            segs = [segments] * n
        else:
            segs = list(segments)
        if segs is not None and len(segs) != n:
            raise ShapeError(f"Lime: 'segments' must hold one map per image ({n}), got {len(segs)}")
        return [row[0] for row in self._run(model, x, targets, segs)]

    # ------------------------------------------------------------------ the algorithm
    def _single(self, image: Any) -> Tensor:
        if isinstance(image, Tensor) and image.ndim != 3:
            hint = {
                2: "; a greyscale image needs a channel dimension: image[None]",
                4: "; call the explainer on the batch itself or on image[0]",
            }.get(image.ndim, "")
            raise ShapeError(
                f"Lime: the image must have shape (C, H, W), got {tuple(image.shape)}{hint}"
            )
        return check_images(
            image[None] if isinstance(image, Tensor) else image, name="image", where="Lime"
        )

    def sample(self, model: nn.Module, image: Tensor, *, segments: Tensor | None = None) -> Samples:
        """LIME's sample set for one image ``(C, H, W)``: presence vectors, outputs, kernel weights.

        The same set :meth:`explain` fits (same seed, same samples), for inspection or for fitting
        another surrogate.
        """
        x = self._single(image)
        segs = None if segments is None else [segments]
        return self._perturb(model, x, segs, [None])[0][0]

    def _perturb(
        self,
        model: nn.Module,
        x: Tensor,
        segments: list[Tensor] | None,
        targets: list[list[int] | None],
    ) -> tuple[list[Samples], list[list[int]]]:
        """Segment, perturb and query: one :class:`Samples` per image, and the resolved targets."""
        check_model(model, where="Lime")
        out_device = x.device
        device = model_device(model) or x.device
        x = x.to(device)
        n_img, _, h, w = x.shape
        n = self.samples

        # Superpixels, hidden images and the energy of x - h on each superpixel.
        segs: list[Tensor] = []
        for i in range(n_img):
            if segments is None:
                segs.append(segment(x[i], self.segmenter).to(device))
            else:
                segs.append(check_segments(segments[i], (h, w), where="segments").to(device))
        hidden = torch.stack(
            [
                hidden_image(x[i], segs[i], self.hide, fill=self.fill, blur_sigma=self.blur_sigma)
                for i in range(n_img)
            ]
        )
        energies = [segment_energy(x[i], hidden[i], segs[i]) for i in range(n_img)]
        for i, e in enumerate(energies):
            if float(e.sum()) <= 0:
                raise ParameterError(
                    f"Lime: hiding every superpixel leaves image {i} unchanged (hide={self.hide!r} "
                    "reproduces it), so no sample differs from it; use hide='constant' with another "
                    "fill, or hide='blur'"
                )
        counts = [int(s.max()) + 1 for s in segs]

        # Presence vectors: the same seed for every image, so a batch equals its images one by one.
        s_max = max(counts)
        Z = torch.zeros(n_img, n, s_max, dtype=torch.bool)
        for i, s in enumerate(counts):
            g = torch.Generator().manual_seed(self.seed)
            Z[i, :, :s] = torch.rand(n, s, generator=g) < 0.5
        Z[:, 0, :] = True
        Zd = Z.to(device).reshape(n_img * n, s_max)
        seg_flat = torch.stack(segs).reshape(n_img, h * w)
        diff = x - hidden

        with inference_mode(model), torch.no_grad():
            clean = check_logits(model(x), n_img, where="Lime")
            num_classes = clean.shape[1]
            resolved = self._resolve_targets(targets, clean, num_classes)
            outs = torch.empty(n_img * n, num_classes, dtype=torch.float32, device=device)
            batches = progress(
                range(0, n_img * n, self.batch_size),
                desc=f"LIME: {n} samples x {n_img} images",
                unit="batch",
            )
            for start in batches:
                stop = min(start + self.batch_size, n_img * n)
                rows = torch.arange(start, stop, device=device)
                img = rows // n
                first, last = start // n, (stop - 1) // n  # no device sync
                if first == last:  # one image: broadcast it instead of copying it per row
                    masks = Zd[rows][:, seg_flat[first]].view(-1, 1, h, w)
                    z = torch.addcmul(
                        hidden[first : first + 1], masks.to(x.dtype), diff[first : first + 1]
                    )
                else:
                    masks = torch.gather(Zd[rows], 1, seg_flat[img]).view(-1, 1, h, w)
                    z = torch.addcmul(hidden[img], masks.to(x.dtype), diff[img])
                if self.channels_last:
                    z = channels_last(z)
                logits = check_logits(model(z), len(rows), where="Lime")
                outs[start : start + len(rows)] = self._transform(logits).float()
        values = outs.view(n_img, n, num_classes).double().cpu()
        pred = clean.argmax(1).tolist()

        samples = []
        for i in range(n_img):
            Zi = Z[i, :, : counts[i]]
            samples.append(
                Samples(
                    image=x[i].to(out_device),
                    segments=segs[i].to(out_device),
                    hidden=hidden[i].to(out_device),
                    Z=Zi,
                    outputs=values[i],
                    weights=kernel_weights(
                        Zi, energies[i].cpu(), kernel=self.kernel, sigma=self.sigma
                    ),
                    prediction=int(pred[i]),
                )
            )
        return samples, resolved

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        targets: list[list[int] | None],
        segments: list[Tensor] | None,
    ) -> list[list[Explanation]]:
        samples, resolved = self._perturb(model, x, segments, targets)
        return [[self._fit(sam, t) for t in resolved[i]] for i, sam in enumerate(samples)]

    def _transform(self, logits: Tensor) -> Tensor:
        if self.output == "logits":
            return logits
        if self.output == "log-probs":
            return torch.log_softmax(logits.float(), dim=1)
        return torch.softmax(logits.float(), dim=1)

    def _resolve_targets(
        self, targets: list[list[int] | None], clean: Tensor, num_classes: int
    ) -> list[list[int]]:
        pred = clean.argmax(1).tolist()
        out: list[list[int]] = []
        for i, t in enumerate(targets):
            chosen = [int(pred[i])] if t is None else list(t)
            for c in chosen:
                if not 0 <= c < num_classes:
                    raise LabelError(
                        f"Lime: target class {c} is outside the model's {num_classes} classes "
                        f"(0..{num_classes - 1})"
                    )
            out.append(chosen)
        return out

    def _fit(self, sam: Samples, target: int) -> Explanation:
        image, segments = sam.image, sam.segments
        Z, f, pi, ess = sam.Z.double(), sam.outputs[:, target], sam.weights, sam.ess
        s = Z.shape[1]
        n = Z.shape[0]
        path = lasso_path(Z, f, pi, method=self.path_method)
        k_eff = min(self.K, s)
        support = path.support(k_eff)
        fit = weighted_least_squares(Z[:, support], f, pi)
        weights = torch.zeros(s, dtype=torch.float64)
        weights[support] = fit.coef
        local_pred = fit.intercept + float(fit.coef.sum())

        notes: list[str] = []
        if s < self.K:
            notes.append(
                f"K={self.K} but the image has only {s} superpixels; all of them are in the "
                "surrogate"
            )
        elif path.max_size < self.K:
            notes.append(
                f"the Lasso path holds only {path.max_size} superpixels, fewer than K={self.K}: "
                "the output depends on fewer superpixels (or the samples do not tell them apart); "
                "the surrogate has fewer terms than asked for"
            )
        if ess < max(ESS_FRACTION * n, s + 1):
            notes.append(
                f"effective sample size {ess:.1f} of {n} samples is below "
                f"max({ESS_FRACTION:g} n, S + 1) = {max(ESS_FRACTION * n, s + 1):.0f}: the kernel "
                "keeps few samples; widen it (a larger sigma) or draw more samples"
            )
        mean = float((pi * f).sum() / pi.sum())
        std = math.sqrt(max(float((pi * (f - mean) ** 2).sum() / pi.sum()), 0.0))
        if std < FLAT_STD:
            notes.append(
                f"the explained {self.output} barely varies over the samples (weighted std "
                f"{std:.2e} < {FLAT_STD:g}): the model is saturated here; explain "
                "output='logits' or output='log-probs' instead"
            )
        else:  # on a flat output R^2 and the gap measure noise: the warning above says so
            notes += _fit_flags(
                fit.r2, local_pred, float(f[0]), std, self.output, sigma=self.width, K=self.K
            )
        for note in notes:
            _warnings.warn(f"Lime: {note}", RuntimeWarning, stacklevel=4)

        hide_value = 0.0
        if self.hide == "constant":
            hide_value = float(self.fill)
        elif self.hide == "blur":
            hide_value = (
                default_blur_sigma(*segments.shape)
                if self.blur_sigma is None
                else float(self.blur_sigma)
            )
        dev = image.device
        return Explanation(
            image=image,
            segments=segments,
            weights=weights.to(dev),
            intercept=fit.intercept,
            target=target,
            K=self.K,
            path=LassoPath(
                alphas=path.alphas.to(dev),
                coefs=path.coefs.to(dev),
                sizes=path.sizes.to(dev),
                order=path.order.to(dev),
            ),
            r2=fit.r2,
            ess=ess,
            local_pred=local_pred,
            model_output=float(f[0]),
            output=self.output,
            kernel=self.kernel,
            sigma=self.width,
            hide=self.hide,
            hide_value=hide_value,
            samples=n,
            seed=self.seed,
            class_names=tuple(self.class_names) if self.class_names else None,
            warnings=tuple(notes),
            output_std=std,
            prediction=sam.prediction,
        )


def _fit_flags(
    r2: float,
    local_pred: float,
    model_output: float,
    std: float,
    output: str,
    *,
    sigma: float,
    K: int,
) -> list[str]:
    """The surrogate's trust flags (module docstring): weighted R^2 below :data:`MIN_R2`, and the
    surrogate at the image more than :data:`MAX_GAP` weighted standard deviations from the model.

    Example:
        >>> _fit_flags(0.9, 10.0, 10.5, 2.0, "logits", sigma=0.5, K=5)
        []
        >>> [f.split(":")[0] for f in _fit_flags(0.3, 7.7, 14.3, 4.0, "logits", sigma=0.5, K=5)]
        ['weighted R2 0.30 is below 0.5', 'the surrogate is far from the model at the image']
    """
    flags = []
    if r2 < MIN_R2:
        flags.append(
            f"weighted R2 {r2:.2f} is below {MIN_R2:g}: the linear surrogate explains less than "
            f"half of the variation of the {output} over the samples, so its weights summarise "
            f"the model poorly here; try more samples, a larger K than {K} or coarser superpixels"
        )
    gap = abs(local_pred - model_output)
    if gap > MAX_GAP * std:
        flags.append(
            f"the surrogate is far from the model at the image: it gives {local_pred:.4g} where "
            f"the model gives {model_output:.4g}, a gap of {gap / std:.2f} weighted standard "
            f"deviations of the {output} over the samples (flagged above {MAX_GAP:g}); its "
            f"weights describe the samples, not the image (its error there exceeds the typical "
            f"error of predicting the mean output everywhere): try a larger K than {K}, or a "
            f"narrower kernel (sigma below {sigma:g})"
        )
    return flags


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_floating_point():
            raise DTypeError(f"Lime: {name!r} must be an integer class index, got {value!r}")
        return int(value.item())
    if not isinstance(value, int) or isinstance(value, bool):
        raise DTypeError(f"Lime: {name!r} must be an integer class index, got {value!r}")
    return value


def _int_list(values: Any, name: str) -> list[int]:
    if isinstance(values, Tensor):
        if values.is_floating_point() or values.ndim > 1:
            raise DTypeError(
                f"Lime: {name!r} must be integer class indices (int64, one dimension), got "
                f"dtype {values.dtype} and shape {tuple(values.shape)}"
            )
        return [int(v) for v in values.flatten().tolist()]
    return [_as_int(v, name) for v in values]
