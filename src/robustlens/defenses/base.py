"""The preprocessing-defense contract: ``Preprocessor``, and ``defend(model, *preprocessors)``.

A preprocessor is an ``nn.Module`` mapping images ``(N, C, H, W)`` in ``[0, 1]`` to images of the
same shape in ``[0, 1]``. It declares two class flags the adaptive attacks read:

- ``differentiable``: gradients flow through it to the input (a blur does; JPEG does not);
- ``randomized``: two calls on the same input may differ (TVM's pixel dropping does).

A randomized preprocessor draws from its own ``torch.Generator`` seeded with ``seed``: the same seed
gives the same sequence of outputs, and consecutive calls differ. ``reseed(seed)`` starts over.

A preprocessor may also return ``views > 1`` transformed copies of each image (the crop ensemble);
``defend`` then averages the model's probabilities over the copies and returns their logarithm as
the logits, so the defended model's prediction is the ensemble's.

Modules a user wrote work too: ``defend`` accepts any ``nn.Module`` mapping images to images. Their
flags, when missing, are found by probing (see :func:`probe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robustlens._checks import check_images, check_model
from robustlens._runtime import inputs_validated
from robustlens.errors import ParameterError, ShapeError

__all__ = ["Defended", "Preprocessor", "Probe", "defend", "probe"]


class Preprocessor(nn.Module):
    """Base of the input-transformation defenses (see the module docstring)."""

    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
    #: Transformed copies returned per image (``(N * views, C, H, W)``, image-major).
    views: int = 1

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ParameterError(f"{type(self).__name__}: 'seed' must be an int, got {seed!r}")
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def reseed(self, seed: int | None = None) -> None:
        """Restart the random stream (from ``seed``, or the constructor's)."""
        if seed is not None:
            self.seed = seed
        self._generators.clear()

    def generator(self, device: torch.device) -> torch.Generator:
        """This module's generator on ``device`` (created from ``seed`` on first use)."""
        g = self._generators.get(device)
        if g is None:
            g = torch.Generator(device=device).manual_seed(self.seed)
            self._generators[device] = g
        return g

    def _check(self, x: Tensor) -> Tensor:
        """Validate ``x`` when called directly; an attack's step loop has validated its images."""
        if not inputs_validated():
            check_images(x.detach(), where=type(self).__name__)
        return x

    def extra_repr(self) -> str:
        return f"seed={self.seed}" if self.randomized else ""


@dataclass(frozen=True)
class Probe:
    """What probing a module found: does the input get a usable gradient, do calls differ."""

    differentiable: bool
    randomized: bool
    gradient: str  # "ok", "none", "zero", "non-finite"


def probe(module: nn.Module, x: Tensor, *, calls: int = 2) -> Probe:
    """Probe ``module`` on images ``x``: input gradients and the randomness of its output.

    The gradient of ``sum(out * r)`` for a fixed random ``r`` is ``"none"`` when the output does not
    depend on the input through autograd, ``"zero"`` when it is zero for every image, and
    ``"non-finite"`` when it holds NaN or inf. The module is randomized when ``calls`` identical
    calls do not all return the same output.
    """
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = module(xg)
        if not isinstance(out, Tensor):
            raise ShapeError(f"probe: the module must return a tensor, got {type(out).__name__}")
        r = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out)
        if not out.requires_grad:
            kind = "none"
        else:
            (grad,) = torch.autograd.grad((out * r).sum(), xg, allow_unused=True)
            if grad is None:
                kind = "none"
            elif not bool(torch.isfinite(grad).all()):
                kind = "non-finite"
            elif bool((grad.flatten(1).abs().amax(1) == 0).all()):
                kind = "zero"
            else:
                kind = "ok"
    with torch.no_grad():
        first = out.detach()
        randomized = any(not torch.equal(module(x), first) for _ in range(calls - 1))
    return Probe(differentiable=kind == "ok", randomized=randomized, gradient=kind)


class Defended(nn.Module):
    """``model`` behind a chain of preprocessors; see :func:`defend`.

    Shape: x (N, C, H, W) in [0, 1] -> logits (N, K). With a multi-view preprocessor the logits are
    ``log(mean softmax)`` over the views.
    """

    def __init__(self, model: nn.Module, preprocessors: list[nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.preprocessors = nn.ModuleList(preprocessors)

    @property
    def differentiable(self) -> bool:
        """All preprocessors declare gradients flowing (undeclared ones count as unknown: False)."""
        return all(getattr(p, "differentiable", False) for p in self.preprocessors)

    @property
    def randomized(self) -> bool:
        """Some preprocessor declares randomness."""
        return any(getattr(p, "randomized", False) for p in self.preprocessors)

    def preprocess(self, x: Tensor) -> tuple[Tensor, int]:
        """The preprocessed images ``(N * views, C, H, W)`` and the number of views per image."""
        views = 1
        for p in self.preprocessors:
            n = len(x)
            x = p(x)
            if not isinstance(x, Tensor) or x.ndim != 4 or len(x) % n:
                raise ShapeError(
                    f"defend: preprocessor {type(p).__name__} must return images (N * views, C, H, "
                    f"W) for an input of {n} images, got "
                    f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
                )
            views *= len(x) // n
        return x, views

    def forward(self, x: Tensor) -> Tensor:
        n = len(x)
        z, views = self.preprocess(x)
        logits = self.model(z)
        if views == 1:
            return logits
        logp = torch.log_softmax(logits, dim=1).view(n, views, -1)
        return torch.logsumexp(logp, dim=1) - math.log(views)


def defend(model: nn.Module, *preprocessors: nn.Module) -> Defended:
    """``model`` behind ``preprocessors`` applied in order: ``model(p_k(...p_1(x)))``.

    Example:
        >>> import torch, robustlens as rl
        >>> model = rl.zoo.load("digits-cnn")
        >>> defended = defend(model, rl.defenses.BitDepth(bits=3))
        >>> defended(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    check_model(model, where="defend")
    if not preprocessors:
        raise ParameterError(
            "defend: give at least one preprocessor, e.g. defend(model, JPEG(quality=75))"
        )
    for p in preprocessors:
        if not isinstance(p, nn.Module):
            raise ParameterError(
                f"defend: preprocessors must be nn.Module instances mapping images to images, got "
                f"{type(p).__name__}; wrap a function in a small nn.Module"
            )
    return Defended(model, list(preprocessors))
