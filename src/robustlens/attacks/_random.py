"""Counter-based random numbers keyed per sample, so that an attack's randomness does not depend
on which other images share the batch.

A ``torch.Generator`` hands out numbers in call order: attacking a batch and attacking its images
one at a time then give different random starts, and the "batch gives the same answer as its
samples" property breaks. Here every sample gets a 64-bit key derived from its own pixels and the
attack's seed, and each random number is ``splitmix64(key, stream, element index)``: the same
image with the same seed always receives the same noise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["normal", "sample_keys", "uniform"]

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)


def _shr(z: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix(z: Tensor) -> Tensor:
    z = z + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def sample_keys(x: Tensor, seed: int) -> Tensor:
    """One int64 key per sample from its pixels (quantised to 1/65536) and ``seed``: ``(N,)``."""
    flat = (x.detach().flatten(1).double() * 65536).round().long()
    pos = _mix(torch.arange(flat.shape[1], device=x.device, dtype=torch.long) + 1)
    content = (flat * pos).sum(1)  # wraps modulo 2^64: fine for hashing
    return _mix(content ^ _mix(torch.tensor(seed, device=x.device, dtype=torch.long)))


def _bits(keys: Tensor, stream: int, shape: torch.Size) -> Tensor:
    n = int(torch.Size(shape[1:]).numel())
    idx = torch.arange(n, device=keys.device, dtype=torch.long)
    base = _mix(keys ^ _mix(torch.tensor(stream + 1, device=keys.device, dtype=torch.long)))
    return _mix(base[:, None] ^ _mix(idx + 1)[None, :]).view(shape)


def uniform(keys: Tensor, stream: int, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """Uniform numbers in ``[0, 1)`` of ``shape`` (first dim = ``len(keys)``), one stream per use."""
    mant = _shr(_bits(keys, stream, shape), 11).double() * (1.0 / (1 << 53))
    return mant.to(dtype)


def normal(keys: Tensor, stream: int, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """Standard normal numbers (Box-Muller over two uniform streams)."""
    u1 = uniform(keys, 2 * stream + 1, shape, torch.float64).clamp_min(1e-300)
    u2 = uniform(keys, 2 * stream + 2, shape, torch.float64)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).to(dtype)
