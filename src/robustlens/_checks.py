"""Validation shared by every public entry point.

Each check raises an error of :mod:`robustlens.errors` whose message says what must hold, what was
given and how to fix it. ``where`` names the entry point so the user knows which call complained.
Checks run once, at the entry point, never inside step loops.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor, nn

from robustlens.errors import (
    DeviceError,
    DTypeError,
    LabelError,
    ModelOutputError,
    NonFiniteError,
    ParameterError,
    RangeError,
    ShapeError,
)

__all__ = [
    "check_at_least",
    "check_choice",
    "check_images",
    "check_labels",
    "check_logits",
    "check_model",
    "check_positive",
    "check_probability",
    "check_same_device",
    "model_device",
]


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


# --------------------------------------------------------------------------- parameters


def check_positive(owner: Any, field: str, *, allow_zero: bool = False) -> None:
    """``owner.field`` must be a finite real number > 0 (>= 0 with ``allow_zero``)."""
    value = getattr(owner, field)
    bound = ">= 0" if allow_zero else "> 0"
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ParameterError(
            f"{type(owner).__name__}: {field!r} must be a float {bound}, got {value!r}"
        )


def check_at_least(owner: Any, field: str, minimum: int) -> None:
    """``owner.field`` must be an integer >= ``minimum``."""
    value = getattr(owner, field)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ParameterError(
            f"{type(owner).__name__}: {field!r} must be an int >= {minimum}, got {value!r}"
        )


def check_probability(owner: Any, field: str, *, closed: bool = False) -> None:
    """``owner.field`` must lie in ``[0, 1)`` (``[0, 1]`` with ``closed``)."""
    value = getattr(owner, field)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (0 <= value <= 1) or (value == 1 and not closed):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ParameterError(
            f"{type(owner).__name__}: {field!r} must be a float in {interval}, got {value!r}"
        )


def check_choice(owner: Any, field: str, choices: tuple[str, ...]) -> None:
    """``owner.field`` must be one of ``choices``."""
    value = getattr(owner, field)
    if value not in choices:
        raise ParameterError(
            f"{type(owner).__name__}: {field!r} must be one of {', '.join(map(repr, choices))}, "
            f"got {value!r}"
        )


# --------------------------------------------------------------------------- tensors


def check_images(x: Any, *, name: str = "x", where: str | None = None) -> Tensor:
    """``x`` must be a float tensor ``(N, C, H, W)`` with finite values in ``[0, 1]``.

    Example:
        >>> import torch
        >>> check_images(torch.full((1, 1, 2, 2), 255.0))
        Traceback (most recent call last):
        ...
        robustlens.errors.RangeError: x lies in [255, 255] but images must be in [0, 1]; ...
    """
    p = _prefix(where)
    if not isinstance(x, Tensor):
        raise DTypeError(f"{p}{name} must be a torch.Tensor (N, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        hint = (
            "; convert with x.float() / 255"
            if x.dtype == torch.uint8
            else "; convert with .float()"
        )
        raise DTypeError(f"{p}{name} must be a float tensor, got dtype {x.dtype}{hint}")
    if x.ndim != 4:
        hint = {
            2: "; a single greyscale image needs x[None, None]",
            3: "; a single image needs a batch dimension: x.unsqueeze(0)",
        }.get(x.ndim, "")
        raise ShapeError(f"{p}{name} must have shape (N, C, H, W), got {tuple(x.shape)}{hint}")
    if x.numel() == 0:
        raise ShapeError(f"{p}{name} is empty (shape {tuple(x.shape)}); give at least one image")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteError(
            f"{p}{name} contains {bad} NaN or infinite values; images must be finite numbers in "
            "[0, 1]: find where they come from (a division by zero, a failed decode)"
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        span = f"[{lo:.4g}, {hi:.4g}]"
        if lo >= 0.0 and hi <= 255.0 and hi > 1.0:
            fix = "divide by 255 or wrap the model"
        elif lo < 0.0:
            fix = (
                "undo the mean/std normalisation and put it inside the model with "
                "robustlens.models.Normalized(model, mean, std)"
            )
        else:
            fix = "rescale them to [0, 1]"
        raise RangeError(f"{p}{name} lies in {span} but images must be in [0, 1]; {fix}")
    return x


def check_labels(
    y: Any,
    n: int,
    *,
    num_classes: int | None = None,
    name: str = "y",
    where: str | None = None,
) -> Tensor:
    """``y`` must be integer labels of shape ``(n,)`` in ``0..num_classes-1``; returned as int64.

    Example:
        >>> import torch
        >>> check_labels(torch.tensor([0, 3]), 2, num_classes=3)
        Traceback (most recent call last):
        ...
        robustlens.errors.LabelError: y holds labels in [0, 3] but the model has 3 classes (0..2)...
    """
    p = _prefix(where)
    if not isinstance(y, Tensor):
        raise DTypeError(
            f"{p}{name} must be a torch.Tensor of int64 labels, got {type(y).__name__}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DTypeError(
            f"{p}{name} must hold integer class indices (int64), got dtype {y.dtype}; "
            "one-hot or probability labels need .argmax(1)"
        )
    if y.ndim != 1 or y.shape[0] != n:
        raise LabelError(
            f"{p}{name} must have shape ({n},), one label per image, got {tuple(y.shape)}"
        )
    y = y.long()
    if n and num_classes is not None:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise LabelError(
                f"{p}{name} holds labels in [{lo}, {hi}] but the model has {num_classes} classes "
                f"(0..{num_classes - 1}); check that data and model match"
            )
    return y


def check_logits(out: Any, n: int, *, where: str | None = None) -> Tensor:
    """A model output must be a float tensor of logits ``(n, K)`` with ``K >= 2``."""
    p = _prefix(where)
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        raise ModelOutputError(
            f"{p}the model returned a {type(out).__name__} of {len(out)} tensors; it must return "
            "one logits tensor (N, K): wrap it so that forward returns only the logits"
        )
    if not isinstance(out, Tensor):
        raise ModelOutputError(
            f"{p}the model must return a logits tensor (N, K), got {type(out).__name__}"
        )
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] < 2:
        raise ModelOutputError(
            f"{p}the model must return logits of shape (N, K) = ({n}, K >= 2), got "
            f"{tuple(out.shape)}; add a flatten and a final Linear layer, or wrap the model"
        )
    if not out.is_floating_point():
        raise ModelOutputError(f"{p}the model returned dtype {out.dtype}; logits must be floats")
    return out


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer, or ``None`` if it has neither."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return None if first is None else first.device


def check_same_device(model: nn.Module, x: Tensor, *, where: str | None = None) -> None:
    """Model and input must live on the same device."""
    dev = model_device(model)
    if dev is not None and dev != x.device:
        raise DeviceError(
            f"{_prefix(where)}the model is on {dev} but the input is on {x.device}; "
            f"move one of them, for example x.to('{dev}')"
        )


def check_model(model: Any, *, where: str | None = None) -> nn.Module:
    """``model`` must be a ``torch.nn.Module``."""
    if not isinstance(model, nn.Module):
        raise DTypeError(
            f"{_prefix(where)}model must be a torch.nn.Module mapping images to logits, got "
            f"{type(model).__name__}"
        )
    return model
