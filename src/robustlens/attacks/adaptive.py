"""Adaptive attacks against preprocessing defenses: BPDA, EOT, and ``adaptive`` which picks them.

Athalye, Carlini and Wagner (2018) showed that most defenses of their day only *masked* gradients:

- **BPDA** (backward pass differentiable approximation): a non-differentiable layer ``f`` (JPEG,
  bit-depth reduction, TV minimisation, quilting) runs as itself in the forward pass, and as a
  differentiable approximation ``g`` in the backward pass: ``g(x) + stop_gradient(f(x) - g(x))``.
  ``g`` is the identity (``f(x) ~ x``) unless the attack is given one, or the layer declares a
  closer one: an ``approximation(x)`` method, or a ``straight_through(x)`` method that returns
  ``f(x)`` itself with the gradient of an approximation sharing the forward pass's random draw
  (TVM's: the TV solver's fixed point, differentiated through steps unrolled from the solution;
  Quilting's: a softmax-weighted quilt of each patch's nearest database patches).
- **EOT** (expectation over transformation): for a randomized defense, attack the expected
  prediction ``E_t[softmax(f(t(x)))]`` estimated with ``samples`` draws (the lecture's
  expectation of the model's output; the loss is the cross-entropy of that mean, whose gradient
  averages the draws' output gradients). ``transform`` optionally supplies the
  distribution ``t`` (``(x, generator) -> x``), as for robust adversarial examples under
  rotations and rescalings (Athalye et al. 2017).

Both wrap any attack and any model: BPDA finds the layers to approximate in a
:func:`~robustlens.defenses.defend` model or an ``nn.Sequential`` (declared
``differentiable = False``, or found by probing when a user's module declares nothing). The
returned images are judged on the real model: a success under EOT's average that does not hold on
a fresh random draw of the defense is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustlens._checks import check_at_least, check_images, check_model
from robustlens._runtime import inference_mode
from robustlens.attacks._steps import Norm
from robustlens.attacks.base import Attack, Run
from robustlens.defenses.base import Defended, probe
from robustlens.errors import ParameterError

__all__ = [
    "BPDA",
    "EOT",
    "StraightThrough",
    "Transform",
    "adaptive",
    "bpda_view",
    "declares_backward",
    "eot_view",
    "identity",
]

Transform = Callable[[Tensor, torch.Generator], Tensor]


def identity(x: Tensor) -> Tensor:
    """BPDA's default backward pass, ``f(x) ~ x``; as ``approx=identity`` it overrides what a
    layer declares (``BPDA(attack, approx=identity)``)."""
    return x


class Persistent(Run):
    """A run whose samples never count as done: the attack spends every step on its objective.

    Against a randomized model one lucky draw is not a success; stopping there returns an image
    that the next draw classifies correctly. Attacks keep their best-objective iterate instead.
    """

    def reached(self, logits: Tensor, idx: Tensor) -> Tensor:
        return torch.zeros(len(idx), dtype=torch.bool, device=logits.device)


def can_persist(attack: Attack) -> bool:
    """Whether ``attack`` may run without stopping at success: fixed-budget attacks only.

    Minimum-norm attacks (C&W, DeepFool) need the success test to know when they have crossed the
    boundary; they keep a normal run.
    """
    return attack.ball() is not None and not attack.restore_failures


def _delegate(
    inner: Attack, run: Run, model: nn.Module, cost: int = 1, *, persistent: bool = False
) -> Tensor:
    """Run ``inner``'s algorithm on ``model`` for the samples of ``run``; fold its counts back."""
    persistent = (persistent or isinstance(run, Persistent)) and can_persist(inner)
    kind = Persistent if persistent else Run
    sub = kind(model, run.x, run.y, run.target, inner.seed, run.x_init)
    sub.progress = run.progress  # the wrapper's line counts the inner attack's steps
    x_adv = inner._run(sub)
    run.queries += sub.queries * cost
    run.gradients += sub.gradients * cost
    run.first_success = sub.first_success
    run.final_step = sub.final_step
    run.details.update(sub.details)
    run.pred_adv = None  # judge the images on the real model, not on the attack's view of it
    return x_adv


# --------------------------------------------------------------------------- BPDA


class StraightThrough(nn.Module):
    """``layer`` in the forward pass, ``approx`` in the backward pass.

    Without ``approx``, the layer's own ``straight_through(x)`` when it declares one (TVM,
    Quilting), else its ``approximation(x)``, else the identity. Shape: as ``layer``. A layer
    returning ``v`` views per image gets the approximation repeated ``v`` times as its backward
    path. Without autograd (or an input that needs no gradient) it is ``layer`` itself.
    """

    def __init__(self, layer: nn.Module, approx: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.approx = approx

    def forward(self, x: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):  # no gradient asked for
            with torch.no_grad():
                return self.layer(x)
        own = getattr(self.layer, "straight_through", None)
        if self.approx is None and callable(own):
            out = own(x)
            if not isinstance(out, Tensor) or not out.requires_grad:
                raise ParameterError(
                    f"BPDA: {type(self.layer).__name__}.straight_through(x) must return the "
                    "layer's output as a tensor that autograd connects to x (for example "
                    "g + (layer(x) - g).detach() with g differentiable); fix it, or pass approx="
                )
            return out
        with torch.no_grad():
            out = self.layer(x)
        approx = (
            self.approx if self.approx is not None else getattr(self.layer, "approximation", None)
        )
        g = x if approx is None else approx(x)
        if len(out) != len(g) and len(out) % len(g) == 0:
            g = g.repeat_interleave(len(out) // len(g), dim=0)
        if g.shape != out.shape:
            raise ParameterError(
                f"BPDA: the approximation returns {tuple(g.shape)} but {type(self.layer).__name__} "
                f"returns {tuple(out.shape)}; give an approx with the layer's output shape"
            )
        return g + (out - g).detach()


def _needs_bpda(layer: nn.Module, x: Tensor) -> bool:
    declared = getattr(layer, "differentiable", None)
    if isinstance(declared, bool):
        return not declared
    return not probe(layer, x).differentiable


def _split(model: nn.Module) -> tuple[list[nn.Module], nn.Module] | None:
    """The preprocessing layers of ``model`` and its classifier, when they can be told apart."""
    if isinstance(model, Defended):
        return list(model.preprocessors), model.model
    if isinstance(model, nn.Sequential) and len(model) > 1:
        return list(model)[:-1], model[-1]
    return None


def _approximated(model: nn.Module, x: Tensor) -> tuple[list[tuple[nn.Module, bool]], nn.Module]:
    """Each preprocessing layer of ``model`` with whether BPDA approximates it (probing, on the
    images ``x`` have become by then, the layers that declare no ``differentiable`` flag), and
    the classifier."""
    split = _split(model)
    if split is None:
        raise ParameterError(
            f"BPDA: cannot tell the preprocessing of a {type(model).__name__} from its "
            "classifier; build the model with robustlens.defenses.defend(classifier, "
            "*preprocessing) or as nn.Sequential(*preprocessing, classifier)"
        )
    out, h = [], x
    for layer in split[0]:
        out.append((layer, _needs_bpda(layer, h)))
        with torch.no_grad():
            h = layer(h)
    return out, split[1]


def bpda_view(
    model: nn.Module, x: Tensor, approx: Callable[[Tensor], Tensor] | None = None
) -> nn.Module:
    """``model`` with every non-differentiable preprocessing layer made straight-through.

    ``model`` is a :func:`~robustlens.defenses.defend` model (its preprocessors are checked) or an
    ``nn.Sequential`` (its children, in order, up to the last one: the classifier). ``x`` are
    example inputs for probing layers that declare no ``differentiable`` flag.
    """
    found, classifier = _approximated(model, x)
    layers = [StraightThrough(m, approx) if bpda else m for m, bpda in found]
    if isinstance(model, Defended):
        return Defended(classifier, layers)
    return nn.Sequential(*layers, classifier)


def declares_backward(model: nn.Module, x: Tensor) -> bool:
    """Whether a layer that BPDA approximates in ``model`` declares its own backward pass
    (``straight_through`` or ``approximation``) instead of leaving BPDA the identity."""
    if _split(model) is None:
        return False
    return any(
        bpda and any(callable(getattr(m, a, None)) for a in ("straight_through", "approximation"))
        for m, bpda in _approximated(model, x)[0]
    )


@dataclass(frozen=True)
class Wrapper(Attack):
    """An attack run on a view of the model (BPDA, EOT): same threat model, same failure rule."""

    attack: Attack

    def __post_init__(self) -> None:
        if not isinstance(self.attack, Attack):
            raise ParameterError(
                f"{type(self).__name__}: 'attack' must be a robustlens attack, got "
                f"{type(self.attack).__name__}"
            )

    @property
    def restore_failures(self) -> bool:  # type: ignore[override]
        return self.attack.restore_failures

    @property
    def attacks_every_input(self) -> bool:
        return self.attack.attacks_every_input

    def ball(self) -> tuple[Norm, float] | None:
        return self.attack.ball()

    def _progress_total(self) -> int:
        return self.attack._progress_total()

    def _run(self, run: Run) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class BPDA(Wrapper):
    """Backward pass differentiable approximation (Athalye et al. 2018) around ``attack``.

    ``approx`` (``x -> x'``, differentiable) stands in for every non-differentiable layer in the
    backward pass; without it, each layer's declared ``straight_through`` or ``approximation``,
    or the identity.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:16]
        >>> defended = rl.defenses.defend(rl.zoo.load("digits-cnn"), rl.defenses.JPEG(quality=60))
        >>> pgd = rl.attacks.PGD(eps=0.3, steps=20)
        >>> pgd(defended, ds.x, ds.y).success_rate < BPDA(pgd)(defended, ds.x, ds.y).success_rate
        True
    """

    approx: Callable[[Tensor], Tensor] | None = None

    @property
    def name(self) -> str:
        if self.approx is None:
            return f"BPDA({self.attack.name})"
        label = getattr(self.approx, "__name__", type(self.approx).__name__)
        return f"BPDA({self.attack.name}, approx={label})"

    def _run(self, run: Run) -> Tensor:
        return _delegate(self.attack, run, bpda_view(run.model, run.x[:2], self.approx))


@dataclass(frozen=True)
class Persist(Wrapper):
    """``attack`` run without stopping at success (see :class:`Persistent`), under its own name.

    Wrappers that run persistently (EOT) use it for attacks that call other attacks, such as an
    ensemble's members, whose own runs would otherwise stop at the first lucky draw.
    """

    @property
    def name(self) -> str:
        return self.attack.name

    @property
    def attacks_every_input(self) -> bool:
        return True

    def _run(self, run: Run) -> Tensor:
        return _delegate(self.attack, run, run.model, persistent=True)


# --------------------------------------------------------------------------- EOT


class _Expectation(nn.Module):
    def __init__(
        self, model: nn.Module, samples: int, transform: Transform | None, seed: int
    ) -> None:
        super().__init__()
        self.model = model
        self.samples = samples
        self.transform = transform
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, x: Tensor) -> Tensor:
        n = len(x)
        xr = x.repeat_interleave(self.samples, dim=0)
        if self.transform is not None:
            g = self._generators.get(x.device)
            if g is None:
                g = torch.Generator(device=x.device).manual_seed(self.seed)
                self._generators[x.device] = g
            xr = self.transform(xr, g)
        logp = torch.log_softmax(self.model(xr), dim=1).view(n, self.samples, -1)
        return torch.logsumexp(logp, dim=1) - math.log(self.samples)


def eot_view(
    model: nn.Module, samples: int, transform: Transform | None = None, seed: int = 0
) -> nn.Module:
    """``x -> log mean_t softmax(model(t(x)))`` over ``samples`` draws (of the model's own
    randomness, and of ``transform`` when given).

    Shape: x (N, C, H, W) -> (N, K); the model sees ``N * samples`` images per call.
    """
    return _Expectation(model, samples, transform, seed)


@dataclass(frozen=True)
class EOT(Wrapper):
    """Expectation over transformation (Athalye et al. 2017, 2018) around ``attack``.

    ``samples`` draws per gradient; ``transform`` is an optional ``(x, generator) -> x``
    distribution applied before the model (for example
    :class:`~robustlens.attacks.RandomTransform`). ``queries`` and ``gradients`` count every draw.
    The wrapped attack runs all its steps (no stop at the first success, which on a random model
    may be a lucky draw) and returns its highest-objective iterate.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:16]
        >>> crops = rl.defenses.CropRescale(fraction=0.75, crops=4)
        >>> defended = rl.defenses.defend(rl.zoo.load("digits-cnn"), crops)
        >>> res = EOT(rl.attacks.PGD(eps=0.3, steps=10), samples=4)(defended, ds.x, ds.y)
        >>> res.success_rate > 0.8
        True
    """

    samples: int = field(default=10, kw_only=True)
    transform: Transform | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, "samples", 1)
        if self.transform is not None and not callable(self.transform):
            raise ParameterError(
                "EOT: 'transform' must be a callable (x, generator) -> x, got "
                f"{type(self.transform).__name__}"
            )

    @property
    def name(self) -> str:
        return f"EOT({self.attack.name}, samples={self.samples})"

    @property
    def attacks_every_input(self) -> bool:
        return True

    def _run(self, run: Run) -> Tensor:
        view = eot_view(run.model, self.samples, self.transform, self.seed)
        return _delegate(self.attack, run, view, cost=self.samples, persistent=True)


# --------------------------------------------------------------------------- adaptive


@dataclass(frozen=True)
class Diagnosis:
    """What probing a model found, and the wrappers it calls for."""

    gradient: str  # "ok", "none", "zero", "non-finite"
    randomized: bool

    @property
    def bpda(self) -> bool:
        return self.gradient != "ok"

    @property
    def eot(self) -> bool:
        return self.randomized

    def as_dict(self) -> dict[str, Any]:
        return {
            "gradient": self.gradient,
            "randomized": self.randomized,
            "bpda": self.bpda,
            "eot": self.eot,
        }


def diagnose(model: nn.Module, x: Tensor) -> Diagnosis:
    """Probe ``model`` on images ``x``: usable input gradients? identical outputs on repeat?"""
    check_model(model, where="adaptive")
    check_images(x, where="adaptive")
    with inference_mode(model):
        found = probe(model, x)
    return Diagnosis(gradient=found.gradient, randomized=found.randomized)


def adaptive(attack: Attack, defended: nn.Module, x: Tensor, *, samples: int = 10) -> Attack:
    """``attack`` adapted to ``defended`` by probing it on example images ``x``.

    No, zero or non-finite input gradients call for BPDA; outputs that change between identical
    calls call for EOT with ``samples`` draws; both for ``BPDA(EOT(attack))``; neither for
    ``attack`` itself. When a layer BPDA approximates declares its own backward pass (TVM,
    Quilting, a user's ``approximation``), no single backward pass is best on every image (on
    tiny patches quilting is nearly the identity), so the result is an
    :class:`~robustlens.attacks.Ensemble` that runs BPDA with the declared pass, then with the
    identity on the images still classified correctly: the per-image worst case of the two.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:8]
        >>> model = rl.zoo.load("digits-cnn")
        >>> pgd = rl.attacks.PGD(eps=0.1)
        >>> adaptive(pgd, rl.defenses.defend(model, rl.defenses.JPEG()), ds.x).name
        'BPDA(PGD(eps=0.1))'
        >>> tvm = rl.defenses.defend(model, rl.defenses.TVM(iterations=20))
        >>> [a.name for a in adaptive(pgd, tvm, ds.x, samples=4).attacks]
        ['BPDA(EOT(PGD(eps=0.1), samples=4))', 'BPDA(EOT(PGD(eps=0.1), samples=4), approx=identity)']
    """
    from robustlens.attacks.ensemble import Ensemble  # ensemble.py imports this module

    if not isinstance(attack, Attack):
        raise ParameterError(
            f"adaptive: 'attack' must be a robustlens attack, got {type(attack).__name__}"
        )
    found = diagnose(defended, x)
    out: Attack = attack
    if found.eot:
        out = EOT(out, samples=samples, seed=attack.seed)
    if not found.bpda:
        return out
    if not declares_backward(defended, x):
        return BPDA(out, seed=attack.seed)
    passes = (BPDA(out, seed=attack.seed), BPDA(out, approx=identity, seed=attack.seed))
    return Ensemble(attacks=passes, seed=attack.seed)
