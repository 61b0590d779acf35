"""``Normalized``: mean/std normalisation as the first layer of a model, never of the data."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustlens.errors import ParameterError, ShapeError

__all__ = ["Normalized"]


class Normalized(nn.Module):
    """Wraps ``model`` so that it takes images in ``[0, 1]``: ``model((x - mean) / std)``.

    Attacks then measure budgets in pixel space, as every robustlens convention assumes.

    Shape: x (N, C, H, W) with C = len(mean) -> model's output.

    Example:
        >>> import torch
        >>> net = Normalized(torch.nn.Identity(), mean=[0.5], std=[0.25])
        >>> net(torch.ones(1, 1, 1, 1)).item()
        2.0
    """

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        m = torch.as_tensor(mean, dtype=torch.float32).flatten()
        s = torch.as_tensor(std, dtype=torch.float32).flatten()
        if m.numel() == 0 or m.shape != s.shape:
            raise ParameterError(
                f"Normalized: 'mean' and 'std' need one value per channel each, got {m.numel()} "
                f"and {s.numel()}"
            )
        if not bool(torch.isfinite(m).all()) or not bool((s > 0).all()):
            raise ParameterError(f"Normalized: 'std' must be > 0 and finite, got {s.tolist()}")
        self.model = model
        self.register_buffer("mean", m.view(1, -1, 1, 1))
        self.register_buffer("std", s.view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ShapeError(
                f"Normalized: expected (N, {self.mean.shape[1]}, H, W) images, got {tuple(x.shape)}"
            )
        return self.model((x - self.mean) / self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
