"""``Preprocessing``: how a model wants its images, from a photo file to its input tensor.

A model's preprocessing has two halves. The *geometry* (resize the shorter side, centre-crop to the
input size, with a given interpolation, converted to the model's channels) turns a decoded image of
any size into a ``(C, H, W)`` tensor in ``[0, 1]``: it is applied to the data, because attacks, LIME
and corruptions all act on ``[0, 1]`` pixels at the model's input size. The *normalisation* (mean
and std) is part of the model (:class:`robustlens.models.Normalized`), so budgets stay in pixel
space. The geometry is torchvision's (``torchvision.transforms.v2.functional``): the same resize
and crop a torchvision or timm evaluation transform applies.

Example:
    >>> import torch
    >>> pre = Preprocessing(input_size=(4, 4), resize=6)
    >>> pre.geometry(torch.rand(3, 6, 9)).shape
    torch.Size([3, 4, 4])
    >>> pre.describe()
    'resize shorter side to 6 (bilinear), centre crop 4x4, RGB, no normalisation'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from robustlens.errors import ParameterError, ShapeError

__all__ = ["INTERPOLATIONS", "Interpolation", "Preprocessing"]

Interpolation = Literal["nearest", "bilinear", "bicubic"]
INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """Input geometry and normalisation of a model.

    Args:
        input_size: ``(H, W)`` the model takes, or ``None`` when any size goes (then images are
            used as they are and must share one size).
        resize: length the shorter side is resized to before the centre crop; ``None`` resizes
            straight to ``input_size`` when an image's size differs from it.
        interpolation: ``"bilinear"`` (torchvision's default), ``"bicubic"`` (timm's) or
            ``"nearest"``.
        channels: 1 (greyscale) or 3 (RGB).
        mean, std: per-channel normalisation inside the model, or ``None``.
        source: where these values came from, for the report (``"timm pretrained_cfg"``, ...).
    """

    input_size: tuple[int, int] | None = None
    resize: int | None = None
    interpolation: Interpolation = "bilinear"
    channels: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = "defaults"

    def __post_init__(self) -> None:
        if self.input_size is not None and (
            len(self.input_size) != 2 or min(int(s) for s in self.input_size) < 1
        ):
            raise ParameterError(
                f"Preprocessing: 'input_size' must be (H, W) with H, W >= 1, got {self.input_size}"
            )
        if self.resize is not None and self.resize < 1:
            raise ParameterError(f"Preprocessing: 'resize' must be an int >= 1, got {self.resize}")
        if self.interpolation not in INTERPOLATIONS:
            raise ParameterError(
                f"Preprocessing: 'interpolation' must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {self.interpolation!r}"
            )
        if self.channels not in (1, 3):
            raise ParameterError(f"Preprocessing: 'channels' must be 1 or 3, got {self.channels}")
        if (self.mean is None) != (self.std is None):
            raise ParameterError("Preprocessing: give both 'mean' and 'std', or neither")
        if self.mean is not None and self.std is not None:
            if len(self.mean) not in (1, self.channels) or len(self.std) != len(self.mean):
                raise ParameterError(
                    f"Preprocessing: 'mean' and 'std' need 1 or {self.channels} values each, "
                    f"got {len(self.mean)} and {len(self.std)}"
                )
            if not all(s > 0 and math.isfinite(s) for s in self.std):
                raise ParameterError(f"Preprocessing: 'std' must be > 0, got {list(self.std)}")

    @staticmethod
    def crop_pct_resize(input_size: int, crop_pct: float) -> int:
        """The shorter side timm resizes to before cropping ``input_size`` at ``crop_pct``.

        Example:
            >>> Preprocessing.crop_pct_resize(224, 0.875)
            256
        """
        return math.floor(input_size / crop_pct)

    def geometry(self, image: Tensor) -> Tensor:
        """Resize (shorter side), centre-crop and convert one image ``(C, h, w)`` in ``[0, 1]``.

        Shape: ``(C, h, w)`` with C 1, 3 or 4 -> ``(channels, H, W)`` float32.
        """
        if image.ndim != 3:
            raise ShapeError(
                f"Preprocessing: expected one image (C, H, W), got {tuple(image.shape)}"
            )
        return self.apply_to(image.unsqueeze(0))[0]

    def apply_to(self, x: Tensor) -> Tensor:
        """:meth:`geometry` over a batch of one size: ``(N, C, h, w)`` -> ``(N, channels, H, W)``.

        ``uint8`` images (``0..255``, as decoded) are resized and cropped in ``uint8``, then
        scaled by ``1 / 255``, as torchvision's and timm's evaluation transforms do (resize the
        8-bit image, then convert): the same pixels as theirs, with torchvision's fast 8-bit
        kernels. Float images in ``[0, 1]`` are resized in float, the interpolation's overshoot
        (bicubic rings past 0 and 1) clipped back into ``[0, 1]``.
        """
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        if x.ndim != 4 or x.shape[1] not in (1, 3, 4):
            raise ShapeError(
                f"Preprocessing: expected images (N, C, H, W) with C 1, 3 or 4, got "
                f"{tuple(x.shape)}"
            )
        if x.shape[1] == 4:
            x = x[:, :3]
        if self.channels == 1 and x.shape[1] == 3:
            # The luma in float (an 8-bit grey conversion would truncate it).
            x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
            x = F.rgb_to_grayscale(x, num_output_channels=1)
        elif self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        eight_bit = x.dtype == torch.uint8
        if not eight_bit:
            x = x.float()

        def done(y: Tensor) -> Tensor:
            if eight_bit:
                return y.float().div_(255.0).contiguous()
            return y.clamp(0.0, 1.0).contiguous() if y is not x else y.contiguous()

        if self.input_size is None:
            return done(x)
        mode = InterpolationMode(self.interpolation)
        target = [int(self.input_size[0]), int(self.input_size[1])]
        if self.resize is not None:
            y = x
            if min(x.shape[-2:]) != self.resize:
                y = F.resize(x, [self.resize], interpolation=mode, antialias=True)
            return done(F.center_crop(y, target).clone() if y is x else F.center_crop(y, target))
        if list(x.shape[-2:]) != target:
            return done(F.resize(x, target, interpolation=mode, antialias=True))
        return done(x)

    def describe(self) -> str:
        """One line for the terminal and the report."""
        parts = []
        if self.input_size is None:
            parts.append("images used at their own size")
        else:
            h, w = self.input_size
            if self.resize is not None:
                parts.append(f"resize shorter side to {self.resize} ({self.interpolation})")
                parts.append(f"centre crop {h}x{w}")
            else:
                parts.append(f"resize to {h}x{w} ({self.interpolation})")
        parts.append("RGB" if self.channels == 3 else "greyscale")
        if self.mean is None or self.std is None:
            parts.append("no normalisation")
        else:
            mean = ", ".join(f"{m:.4g}" for m in self.mean)
            std = ", ".join(f"{s:.4g}" for s in self.std)
            parts.append(f"normalise mean ({mean}) std ({std}) inside the model")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (``results.json`` and the report)."""
        return {
            "input_size": None if self.input_size is None else list(self.input_size),
            "resize": self.resize,
            "interpolation": self.interpolation,
            "channels": self.channels,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "source": self.source,
            "description": self.describe(),
        }
