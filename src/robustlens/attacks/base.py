"""The attack base class, the per-call bookkeeping (``Run``) and ``AttackResult``.

The base owns what every attack shares: input validation, eval mode restored with ``try/finally``,
parameters frozen, inputs the model already misclassifies left alone, per-sample query and gradient
counts, and building the result. A subclass implements only ``_run``, the algorithm, on the inputs
that are attacked.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robustlens._checks import (
    check_images,
    check_labels,
    check_logits,
    check_model,
    check_same_device,
)
from robustlens._runtime import (
    Ticker,
    chunked_forward,
    inference_mode,
    status,
    validated_inputs,
)
from robustlens.attacks._random import sample_keys
from robustlens.attacks._steps import Norm, goal_reached, norms
from robustlens.errors import LabelError, ParameterError, ShapeError
from robustlens.registry import Registry

__all__ = ["ATTACKS", "Attack", "AttackResult", "Run", "in_batches"]

ATTACKS: Registry[type[Attack]] = Registry("attack")

Objective = Callable[[Tensor], Tensor]


class Run:
    """Per-sample state of one attack call on the ``M`` attacked inputs.

    Counts forward passes (``queries``) and backward passes (``gradients``) per sample, and the first
    step at which each sample reached its goal (``first_success``, -1 until then). ``idx`` arguments
    are positions among the ``M`` attacked inputs, so an attack can work on a shrinking active set.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        seed: int,
        x_init: Tensor | None = None,
    ):
        self.model = model
        self.x, self.y, self.target = x, y, target
        #: Optional warm start (M, C, H, W) that attacks able to use one start from.
        self.x_init = x_init
        m = len(x)
        self.queries = torch.zeros(m, dtype=torch.long, device=x.device)
        self.gradients = torch.zeros(m, dtype=torch.long, device=x.device)
        self.first_success = torch.full((m,), -1, dtype=torch.long, device=x.device)
        self.keys = sample_keys(x, seed)
        #: The step number a success found by the base's final check is recorded at.
        self.final_step = 0
        #: Predictions on the returned images, when the attack already computed them all
        #: (spares the base its verification pass).
        self.pred_adv: Tensor | None = None
        #: Attack-specific extras copied into ``AttackResult.details`` (JSON-ready values).
        self.details: dict[str, Any] = {}
        #: The base's clean forward pass, kept with its graph when the attack's first gradient is
        #: taken at ``x`` itself: ``(input that required grad, its logits, positions of the
        #: attacked inputs in it)``. :meth:`clean_gradient` uses it once, then it is dropped.
        self.clean: tuple[Tensor, Tensor, Tensor] | None = None
        #: The call's progress line: the step loop ticks it once per step (host side only).
        self.progress = Ticker()  # draws nothing until the base opens the call's line

    def clean_gradient(self, objective: Objective) -> tuple[Tensor, Tensor, Tensor] | None:
        """``gradient(self.x, all, objective)`` from the base's clean pass, without a new forward.

        Returns ``None`` when the clean pass was not kept (or was used already); the caller then
        calls :meth:`gradient`.
        """
        if self.clean is None:
            return None
        xg, logits, idx = self.clean
        self.clean = None
        with torch.enable_grad():
            value = objective(logits[idx])
            grad = None
            if value.requires_grad:
                (grad,) = torch.autograd.grad(value.sum(), xg, allow_unused=True)
        grad = torch.zeros_like(self.x) if grad is None else grad[idx]
        self.queries += 1  # the clean pass served as this step's forward pass
        self.gradients += 1
        return logits[idx].detach(), value.detach(), grad

    def forward(self, x: Tensor) -> Tensor:
        """``model(x)``, in chunks sized for the device (:func:`~robustlens._runtime.chunk_size`).

        Attacks call the model through this method; it counts nothing (callers do).
        """
        out: Tensor = chunked_forward(self.model, x)
        return out

    def logits(self, x: Tensor, idx: Tensor) -> Tensor:
        """Forward pass without gradient on the samples ``idx``."""
        with torch.no_grad():
            out = self.forward(x)
        self.queries[idx] += 1
        return out

    def gradient(
        self, x: Tensor, idx: Tensor, objective: Objective
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits, objective (M',), d objective / d x)`` at ``x`` for the samples ``idx``."""
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self.forward(xg)
            value = objective(out)
            # A model whose output does not depend on x through autograd (a JPEG layer, say)
            # gives a zero gradient: the attack stalls, as it would against the real defense.
            grad = None
            if value.requires_grad:
                (grad,) = torch.autograd.grad(value.sum(), xg, allow_unused=True)
            if grad is None:
                grad = torch.zeros_like(xg)
        self.queries[idx] += 1
        self.gradients[idx] += 1
        return out.detach(), value.detach(), grad

    def reached(self, logits: Tensor, idx: Tensor) -> Tensor:
        """Goal test on ``logits`` of the samples ``idx`` (misclassified, or on target)."""
        target = None if self.target is None else self.target[idx]
        return goal_reached(logits, self.y[idx], target)

    def mark(self, idx: Tensor, success: Tensor, step: int) -> None:
        """Record ``step`` as the first success of the samples ``idx[success]`` not yet recorded."""
        hit = idx[success]
        fresh = self.first_success[hit] < 0
        self.first_success[hit[fresh]] = step


@dataclass(frozen=True)
class AttackResult:
    """Per-sample outcome of an attack on ``N`` inputs.

    Shapes: ``x_adv`` (N, C, H, W); every other tensor (N,). ``attacked`` is False for inputs the
    model already got wrong: they come back unchanged and count in no rate (unless the attack
    ``attacks_every_input``, as the wrappers for randomized models do: then such an input still
    wrong after the attack counts as a success). Distances are those of
    ``x_adv`` from ``x``; ``l2_normalized`` is ``||x_adv - x||_2 / ||x||_2`` (the lecture's metric).
    ``clean_correct`` records the clean pass's verdict (prediction equals ``y``) whether or not the
    input was attacked, so ``clean_accuracy`` stays the model's accuracy under every attack.
    """

    attack: str
    x_adv: Tensor
    success: Tensor
    attacked: Tensor
    l2: Tensor
    linf: Tensor
    l2_normalized: Tensor
    queries: Tensor
    gradients: Tensor
    steps: Tensor
    y: Tensor
    pred: Tensor
    clean_correct: Tensor
    target: Tensor | None = None
    #: Attack-specific extras, e.g. an ensemble's contribution of each member.
    details: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x_adv)

    @classmethod
    def build(
        cls,
        attack: str,
        x: Tensor,
        x_adv: Tensor,
        *,
        success: Tensor,
        attacked: Tensor,
        queries: Tensor,
        gradients: Tensor,
        steps: Tensor,
        y: Tensor,
        pred: Tensor,
        clean_correct: Tensor,
        target: Tensor | None = None,
        details: dict[str, Any] | None = None,
    ) -> AttackResult:
        """The result of ``x -> x_adv``: distances computed here, ``steps`` kept for successes only."""
        delta = x_adv - x
        l2 = norms(delta, "l2")
        return cls(
            attack=attack,
            x_adv=x_adv,
            success=success,
            attacked=attacked,
            l2=l2,
            linf=norms(delta, "linf"),
            l2_normalized=l2 / norms(x, "l2").clamp_min(1e-12),
            queries=queries,
            gradients=gradients,
            steps=torch.where(success, steps, torch.full_like(steps, -1)),
            y=y,
            pred=pred,
            clean_correct=clean_correct,
            target=target,
            details=details or {},
        )

    @property
    def success_rate(self) -> float:
        """Fraction of attacked inputs on which the attack reached its goal (NaN if none)."""
        n = int(self.attacked.sum())
        return float(self.success[self.attacked].sum()) / n if n else math.nan

    @property
    def robust(self) -> Tensor:
        """Per input: correctly classified before and after the attack (untargeted reading)."""
        return self.attacked & ~self.success

    @property
    def robust_accuracy(self) -> float:
        """Fraction of all inputs still correctly classified after the attack."""
        return float(self.robust.double().mean()) if len(self) else math.nan

    @property
    def clean_accuracy(self) -> float:
        """Fraction of all inputs the model classified correctly before the attack."""
        return float(self.clean_correct.double().mean()) if len(self) else math.nan

    @classmethod
    def concat(cls, parts: Sequence[AttackResult]) -> AttackResult:
        """The results of one attack on consecutive batches, as one result over all their inputs.

        Per-input tensors are concatenated. In ``details``: a per-input tensor is concatenated, a
        dict of counts (an ensemble's contribution per member) is summed, a float (a mean over
        the batch's attacked inputs, such as a transfer attack's surrogate success rate) is
        averaged weighted by the inputs each batch attacked, and any other value is kept when
        every batch gives the same, else listed per batch.

        Example:
            >>> import robustlens as rl
            >>> ds = rl.data.load("digits")[:20]
            >>> model, pgd = rl.zoo.load("digits-cnn"), rl.attacks.PGD(eps=0.1, steps=5)
            >>> whole = pgd(model, ds.x, ds.y)
            >>> parts = rl.attacks.AttackResult.concat([pgd(model, ds.x[:8], ds.y[:8]),
            ...                                         pgd(model, ds.x[8:], ds.y[8:])])
            >>> len(parts), bool((parts.clean_correct == whole.clean_correct).all())
            (20, True)
        """
        if not parts:
            raise ParameterError("AttackResult.concat: no results to join")
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        if any(p.attack != first.attack for p in parts):
            names = sorted({p.attack for p in parts})
            raise ParameterError(f"AttackResult.concat: results of different attacks {names}")
        if any((p.target is None) != (first.target is None) for p in parts):
            raise ParameterError("AttackResult.concat: targeted and untargeted results mixed")
        joined: dict[str, Any] = {}
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            if isinstance(values[0], Tensor):
                joined[f.name] = torch.cat(values)
        joined["attack"] = first.attack
        joined["target"] = None if first.target is None else torch.cat([p.target for p in parts])  # type: ignore[misc]
        joined["details"] = _joined_details(parts)
        return cls(**joined)

    def summary(self) -> dict[str, Any]:
        """Headline numbers as plain Python values (JSON-ready)."""
        ok = self.success & self.attacked

        def med(v: Tensor) -> float | None:
            return float(v[ok].median()) if bool(ok.any()) else None

        att = self.attacked
        return {
            "attack": self.attack,
            "n": len(self),
            "attacked": int(att.sum()),
            "clean_accuracy": self.clean_accuracy,
            "success_rate": self.success_rate,
            "robust_accuracy": self.robust_accuracy,
            "median_l2": med(self.l2),
            "median_linf": med(self.linf),
            "median_l2_normalized": med(self.l2_normalized),
            "mean_queries": float(self.queries[att].float().mean()) if bool(att.any()) else 0.0,
            "mean_gradients": float(self.gradients[att].float().mean()) if bool(att.any()) else 0.0,
            **self.details,
        }


def _joined_details(parts: Sequence[AttackResult]) -> dict[str, Any]:
    """:meth:`AttackResult.concat`'s ``details``, over the batches that have each key (a batch
    the model already got entirely wrong attacks nothing and records none)."""
    out: dict[str, Any] = {}
    keys = dict.fromkeys(k for p in parts for k in p.details)
    for key in keys:
        having = [p for p in parts if key in p.details]
        values = [p.details[key] for p in having]
        if all(
            isinstance(v, Tensor) and v.ndim and len(v) == len(p)
            for v, p in zip(values, having, strict=True)
        ):
            out[key] = torch.cat(values)
        elif all(isinstance(v, dict) and all(_is_number(c) for c in v.values()) for v in values):
            totals: dict[Any, Any] = {}
            for v in values:  # counts per member (an ensemble's contribution): summed
                for k, c in v.items():
                    totals[k] = totals.get(k, 0) + c
            out[key] = totals
        elif all(isinstance(v, float) for v in values):
            # A mean over a batch's attacked inputs: weighted by how many it attacked.
            weights = [int(p.attacked.sum()) for p in having]
            total = sum(weights)
            out[key] = (
                sum(v * w for v, w in zip(values, weights, strict=True)) / total
                if total
                else values[0]
            )
        elif all(not isinstance(v, Tensor) and v == values[0] for v in values):
            out[key] = values[0]  # a setting, the same in every batch
        else:
            out[key] = values  # no safe way to join: one value per batch
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def in_batches(
    attack: Callable[..., AttackResult],
    batch_size: int,
    inputs: tuple[Tensor, Tensor | None, Tensor | None, Tensor | None],
    *,
    where: str,
) -> AttackResult | None:
    """``attack(x, y, target, x_init)`` on consecutive slices of ``batch_size`` inputs, joined
    (:meth:`AttackResult.concat`); ``None`` when the inputs fit one batch (the caller goes on).

    ``inputs`` is ``(x, y, target, x_init)``, each ``None`` or one row per image of ``x``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"{where}: 'batch_size' must be an int >= 1, got {batch_size!r}")
    x = inputs[0]
    for name, v in zip(("y", "target", "x_init"), inputs[1:], strict=True):
        if isinstance(v, Tensor) and v.ndim and len(v) != len(x):
            raise ShapeError(
                f"{where}: {name} has {len(v)} entries for {len(x)} images; give one per image"
            )
    if len(x) <= batch_size:
        return None
    return AttackResult.concat(
        [
            attack(*(None if v is None else v[s : s + batch_size] for v in inputs))
            for s in range(0, len(x), batch_size)
        ]
    )


@dataclass(frozen=True, kw_only=True)
class Attack(ABC):
    """Base of every white-box attack: ``attack(model, x, y=None, target=None) -> AttackResult``.

    Subclasses are frozen keyword-only dataclasses that validate their parameters in
    ``__post_init__`` and implement ``_run`` on the attacked inputs.
    """

    seed: int = 0

    #: Failed samples get the original image back (minimum-norm attacks that search a trade-off).
    restore_failures: ClassVar[bool] = False

    @property
    def attacks_every_input(self) -> bool:
        """Whether inputs the clean pass misclassifies are attacked too. False: they come back
        unchanged. Wrappers for randomized models (EOT, Persist) say True, since one draw's
        mistake is no verdict: an input wrong on that draw may be right on most others."""
        return False

    @property
    def name(self) -> str:
        """Short name for tables: the class name and its non-default parameters (floats to four
        significant digits)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "seed" and value != f.default:
                # Budgets like 4/255 as 0.01569, not 0.01568627450980392.
                shown = f"{value:.4g}" if isinstance(value, float) else value
                parts.append(f"{f.name}={shown}")
        return type(self).__name__ + (f"({', '.join(parts)})" if parts else "")

    def ball(self) -> tuple[Norm, float] | None:
        """The threat model ``(norm, eps)`` if the attack respects one, else ``None``."""
        return None

    def _first_gradient_at_x(self) -> bool:
        """Whether the attack's first gradient is taken at ``x`` itself: the base then keeps the
        graph of its clean forward pass for :meth:`Run.clean_gradient` (one forward pass fewer)."""
        return False

    def _progress_total(self) -> int:
        """Length of the call's progress line: how many times ``_run`` ticks ``run.progress``
        at most (its step loop's length; 1 for a one-step attack, whose line never shows)."""
        return 1

    @abstractmethod
    def _run(self, run: Run) -> Tensor:
        """The algorithm on the attacked inputs ``run.x``; returns their adversarial images."""

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor | None = None,
        *,
        target: Tensor | None = None,
        x_init: Tensor | None = None,
        batch_size: int | None = None,
    ) -> AttackResult:
        """Attack the inputs ``x`` (N, C, H, W) with labels ``y`` (N,), or the predictions if ``None``.

        ``target`` (N,) makes the attack targeted. ``x_init`` (N, C, H, W) warm-starts attacks that
        iterate from a starting point (PGD family): for example the result of a weaker attack or of
        a smaller budget; it is projected into the threat model first. ``batch_size`` attacks at
        most that many inputs at a time (an attack holds activations for the gradient and
        per-input state for everything it attacks at once: a few hundred 224x224 images do not fit
        a GPU) and joins the results (:meth:`AttackResult.concat`): per image the same result as
        one call on a deterministic model, since an attack draws its randomness per image (the
        wrappers for randomized defenses, EOT and what wraps it, draw their transformations per
        call).
        """
        where = type(self).__name__
        if batch_size is not None:
            joined = in_batches(
                lambda *part: self(model, part[0], part[1], target=part[2], x_init=part[3]),
                batch_size,
                (x, y, target, x_init),
                where=where,
            )
            if joined is not None:
                return joined
        check_model(model, where=where)
        check_images(x, where=where)
        check_same_device(model, x, where=where)
        n = len(x)
        with inference_mode(model), validated_inputs():
            keep = self._first_gradient_at_x() and x_init is None
            xg = x.detach().requires_grad_(keep)
            with torch.set_grad_enabled(keep):
                logits = check_logits(chunked_forward(model, xg), n, where=where)
            if keep and not logits.requires_grad:
                keep = False  # the output does not depend on x through autograd
            k = logits.shape[1]
            pred = logits.detach().argmax(1)
            y = (
                pred.clone()
                if y is None
                else check_labels(
                    y.to(x.device) if isinstance(y, Tensor) else y, n, num_classes=k, where=where
                )
            )
            if target is not None:
                target = check_labels(target, n, num_classes=k, name="target", where=where)
                if bool((target == y).any()):
                    raise LabelError(
                        f"{where}: target equals the true label for {int((target == y).sum())} "
                        "images; a targeted attack needs a different class for each image"
                    )
            if x_init is not None:
                check_images(x_init, name="x_init", where=where)
                if x_init.shape != x.shape:
                    raise ShapeError(
                        f"{where}: x_init must have the shape of x {tuple(x.shape)}, got "
                        f"{tuple(x_init.shape)}"
                    )
            attacked = (pred == y) | self.attacks_every_input
            idx = attacked.nonzero().squeeze(1)
            x_sub = x[idx]
            run = Run(
                model,
                x_sub,
                y[idx],
                None if target is None else target[idx],
                self.seed,
                None if x_init is None else x_init[idx].to(x.dtype),
            )
            if keep:
                run.clean = (xg, logits, idx)
            del logits
            x_adv = x.clone()
            queries = torch.zeros(n, dtype=torch.long, device=x.device)
            gradients = torch.zeros_like(queries)
            steps = torch.full((n,), -1, dtype=torch.long, device=x.device)
            pred_adv = pred.clone()
            if len(idx):
                with status(
                    f"{self.name} on {len(idx)} images", self._progress_total(), unit="step"
                ) as run.progress:
                    adv_sub = self._run(run).detach()
                x_adv[idx] = adv_sub
                queries[idx], gradients[idx], steps[idx] = (
                    run.queries,
                    run.gradients,
                    run.first_success,
                )
                known = run.pred_adv
                if known is None or bool((known < 0).any()):
                    with torch.no_grad():
                        known = chunked_forward(model, adv_sub).argmax(1)
                    queries[idx] += 1  # the verification pass is a query like any other
                pred_adv[idx] = known
        success = attacked & (pred_adv != y if target is None else pred_adv == target)
        if self.restore_failures:
            failed = attacked & ~success
            x_adv[failed] = x[failed]
            pred_adv = torch.where(failed, pred, pred_adv)
        steps = torch.where(success & (steps < 0), torch.full_like(steps, run.final_step), steps)
        return AttackResult.build(
            self.name,
            x,
            x_adv,
            success=success,
            attacked=attacked,
            queries=queries,
            gradients=gradients,
            steps=steps,
            y=y,
            pred=pred_adv,
            clean_correct=pred == y,
            target=target,
            details=dict(run.details),
        )
