"""Batched, seeded data augmentation on image tensors (no per-sample Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_flip", "random_shift"]


def random_shift(x: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Translate each image by an integer offset in ``[-pad, pad]`` per axis, zero fill.

    Equivalent to the usual "pad then random crop", done with one gather for the whole batch.

    Shape: (N, C, H, W) -> (N, C, H, W).
    """
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    off = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=generator.device)
    off = off.to(x.device)
    rows = torch.arange(h, device=x.device) + off[:, :1]  # (N, H)
    cols = torch.arange(w, device=x.device) + off[:, 1:]  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(x), generator=generator, device=generator.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)
