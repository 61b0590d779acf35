"""NES: black-box attacks from queries alone (Ilyas et al. 2018, "Black-box adversarial attacks
with limited queries and information").

The gradient of a loss is estimated from queries around the current image with natural evolution
strategies: ``n`` antithetic Gaussian samples (``n/2`` directions ``u`` and their negatives),
``g = 1/(n sigma) sum_i loss(x + sigma u_i) u_i`` (:func:`nes_gradient`). The attack then takes
signed steps with momentum, projected into the Linf ball of radius ``eps`` and into ``[0, 1]``,
halving the step when the loss has not improved for ``plateau`` iterations. Three threat models:

* ``"query-limited"``: the oracle returns all probabilities (``Oracle(output="probs")``); the loss
  is the cross-entropy of the true class (ascended, untargeted) or of the target (descended).
* ``"partial-info"``: only the top ``k`` classes and their probabilities (``output="topk"``);
  targeted. The attack starts from an image of the target class (``x_init``) inside a ball of
  radius ``eps_start`` around ``x`` and shrinks the ball while the target stays in the top ``k``
  (the paper's Algorithm 2): each iteration, a line search (one query per try) projects the step
  into the ball shrunk by the current decay; a try that loses the target halves the decay, and
  once the decay is below ``min_eps_decay`` the ball is kept and the step is halved instead. The
  loss is ``-log p(target)`` where the target is shown, ``-log 1e-12`` (a floor) where it is not.
  Success: the ball has reached ``eps`` and the target is the top class.
* ``"label-only"``: only labels (``output="label"``, or the classes of ``output="topk"`` with their
  scores ignored); targeted, with the same shrinking schedule. The loss is the proxy score
  ``S(x) = E_{delta ~ U[-mu, mu]^d} R(x + delta)`` with ``R = k - rank of the target`` in the top
  ``k`` (``k`` for the top class, 0 if absent), estimated with ``mc_samples`` noisy queries.

Every query goes through the :class:`~robustlens.blackbox.Oracle`, which counts them per image.
Each image stops at its first success, or when its queries left (``max_queries`` and the oracle's
budget, whichever is smaller) cannot pay for another iteration; finished images leave the active
set. Inputs the oracle already misclassifies are not attacked.

Defaults and departures from the paper: ``samples``, ``lr``, ``min_lr``, ``momentum`` and
``eps_start`` are the paper's; ``plateau=20`` is the value of its partial-information and
label-only runs (5 in its query-limited runs: on the zoo digits model both give the same
query-limited results, and 5 stalls partial-info attacks). ``sigma=None`` means the paper's 0.001,
except in label-only mode where it is ``mu``. ``mu=0.05`` (the paper: 0.001 to 0.002 on 299x299
ImageNet images) because so small a noise changes no label of an 8x8 or 28x28 image and the proxy
score would be flat. The decay schedule is adaptive both ways: a shrink that worked doubles the
decay for the next iteration, up to ``eps_decay`` (the paper resets it to at least 0.1 instead);
``eps_decay=0.1`` (the paper: 0.5) and ``min_eps_decay=0.002`` (the paper's cut-off).
``mc_samples=5`` (the paper: 50 to 100). A label-only estimate costs ``samples * mc_samples``
queries: on small images, fewer samples and more iterations pay off (on the zoo digits model,
``samples=10`` reaches eps 0.3 for 10 of 10 images within 10,000 queries, the default 50 for 9).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import Tensor

from robustlens._checks import (
    check_at_least,
    check_choice,
    check_images,
    check_labels,
    check_positive,
    check_probability,
)
from robustlens._runtime import Ticker, status
from robustlens.attacks._steps import bcast, project
from robustlens.attacks.base import AttackResult, in_batches
from robustlens.blackbox.oracle import Oracle, TopK
from robustlens.errors import DeviceError, DTypeError, LabelError, ParameterError, ShapeError

__all__ = ["NES", "NESMode", "nes_gradient"]

NESMode = Literal["query-limited", "partial-info", "label-only"]
_MODES: tuple[str, ...] = ("query-limited", "partial-info", "label-only")
#: Probability given to a target that is not in the top k (partial-info loss).
_FLOOR = 1e-12

LossFn = Callable[[Tensor], Tensor]


def _estimate(
    loss_fn: LossFn,
    x: Tensor,
    sigma: float,
    samples: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """NES estimate ``(gradient (M, ...), mean loss over the samples (M,))``."""
    m, half = len(x), samples // 2
    u = torch.randn((m, half, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    u = torch.cat([u, -u], dim=1)
    values = loss_fn((x[:, None] + sigma * u).flatten(0, 1))
    if not isinstance(values, Tensor) or values.shape != (m * samples,):
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ShapeError(
            f"nes_gradient: loss_fn must map (M * samples, ...) points to losses "
            f"({m * samples},), got {got}"
        )
    values = values.to(x.dtype).view(m, samples)
    weights = values.view(m, samples, *([1] * (u.ndim - 2)))
    grad = (weights * u).sum(1) / (samples * sigma)
    return grad, values.mean(1)


def nes_gradient(
    loss_fn: LossFn,
    x: Tensor,
    sigma: float,
    samples: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """NES estimate of the gradient of ``loss_fn`` at each ``x`` from antithetic Gaussian samples.

    ``g = 1 / (samples * sigma) * sum_i loss_fn(x + sigma u_i) u_i`` over ``samples / 2`` standard
    normal directions ``u`` and their negatives: the gradient of the Gaussian smoothing of
    ``loss_fn``, without bias from ``loss_fn(x)`` itself. For a linear loss ``w . x`` it is
    ``(2 / samples) sum_j u_j u_j^T w`` over the ``samples / 2`` directions.

    Args:
        loss_fn: maps points (M * samples, ...) to losses (M * samples,); the samples of image
            ``i`` are rows ``i * samples`` to ``(i + 1) * samples - 1``.
        x: points (M, ...) at which to estimate.
        sigma: standard deviation of the search distribution.
        samples: number of evaluations per point, even (antithetic pairs).
        generator: source of the directions (on ``x``'s device), for reproducibility.

    Shape: x (M, ...) -> (M, ...).

    Example:
        >>> import torch
        >>> w = torch.arange(1.0, 5.0)
        >>> gen = torch.Generator().manual_seed(0)
        >>> g = nes_gradient(lambda p: p @ w, torch.zeros(3, 4), 0.01, 2000, gen)
        >>> bool(torch.allclose(g, w.expand(3, 4), atol=0.5))
        True
    """
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 2 or samples % 2:
        raise ParameterError(f"nes_gradient: 'samples' must be an even int >= 2, got {samples!r}")
    if not isinstance(sigma, int | float) or isinstance(sigma, bool) or not sigma > 0:
        raise ParameterError(f"nes_gradient: 'sigma' must be a float > 0, got {sigma!r}")
    return _estimate(loss_fn, x, float(sigma), samples, generator)[0]


class _View:
    """The attack's side of one call: the oracle, the attacked images and how to read answers."""

    def __init__(
        self,
        oracle: Oracle,
        ids: Tensor,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        k_read: int,
        max_queries: int,
    ) -> None:
        self.oracle, self.ids, self.x, self.y, self.target = oracle, ids, x, y, target
        self.k_read = k_read
        self.max_queries = max_queries
        #: The call's progress line, in queries per image (ticked on the host, no sync).
        self.progress = Ticker()

    def ask(self, points: Tensor, rows: Tensor) -> Tensor | TopK:
        """Query the oracle on ``points`` (clamped to [0, 1]) on behalf of the images ``rows``."""
        return self.oracle(points.clamp(0, 1), self.ids[rows])

    def read(self, out: Tensor | TopK) -> tuple[Tensor, Tensor | None]:
        """The top ``k_read`` classes (B, k') of an answer, and their scores if the oracle shows them."""
        return _read(out, self.oracle.output, self.k_read)

    def remaining(self, rows: Tensor) -> Tensor:
        """Queries the images ``rows`` may still make: ``max_queries`` and the oracle's budget."""
        ids = self.ids[rows]
        left = torch.minimum(
            self.max_queries - self.oracle.queries(ids), self.oracle.remaining(ids)
        )
        return left.to(rows.device)


def _read(out: Tensor | TopK, output: str, k: int) -> tuple[Tensor, Tensor | None]:
    if isinstance(out, TopK):
        return out.classes[:, :k], out.scores[:, :k]
    if output == "label":
        return out[:, None], None
    scores, classes = out.topk(k, dim=1)
    return classes, scores


@dataclass(frozen=True, kw_only=True)
class NES:
    """Black-box Linf attack with NES gradient estimates (Ilyas et al. 2018), three threat models.

    Call: ``NES(...)(oracle, x, y=None, *, target=None, x_init=None) -> AttackResult``. ``oracle``
    must answer ``"probs"`` for ``"query-limited"``, ``"probs"`` or ``"topk"`` for
    ``"partial-info"``, anything for ``"label-only"``. ``y=None`` uses the oracle's predictions.
    ``target`` (N,) is required by the partial-info and label-only modes. ``x_init`` (N, C, H, W):
    images of the target class to start those two modes from; by default each image starts from
    the image of the batch nearest to it (L2) that the oracle puts in the target class.

    Args:
        eps: Linf radius of the threat model, in [0, 1] pixel units.
        mode: ``"query-limited"``, ``"partial-info"`` or ``"label-only"`` (module docstring).
        sigma: standard deviation of the NES search distribution; ``None``: 0.001 (the paper's),
            or ``mu`` in label-only mode, where the Monte-Carlo noise of the proxy score swamps
            the differences that a finer search distribution would measure.
        samples: queries per gradient estimate (``samples / 2`` antithetic pairs); even.
        lr: step size at the start (the signed step moves each pixel by ``lr``).
        min_lr: the plateau schedule halves ``lr`` down to this value.
        plateau: iterations without improvement of the loss before the step is halved.
        momentum: weight of the previous gradient, ``g = momentum g + (1 - momentum) g_new``.
        max_queries: queries per image, the initial label query included.
        k: classes the partial-info and label-only modes read (at most what the oracle shows:
            its ``k`` for ``"topk"``, 1 for ``"label"``).
        eps_start: initial radius of the shrinking ball (partial-info, label-only); >= eps.
        eps_decay: initial decrease of the radius per iteration (partial-info, label-only).
        min_eps_decay: below this the decay is dropped for the iteration and the step is halved.
        mc_samples: noisy queries per point for the label-only proxy score.
        mu: half-width of the uniform noise of the label-only proxy score.
        seed: seed of the ``torch.Generator`` (on the input's device) that draws every sample.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> AttackResult; ``queries`` are the oracle's counts
    for each image, ``gradients`` are 0, ``steps`` is the iteration of the first success.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:4]
        >>> oracle = rl.blackbox.Oracle(rl.zoo.load("digits-cnn"), output="probs", budget=2000)
        >>> res = NES(eps=0.3, max_queries=2000)(oracle, ds.x, ds.y)
        >>> res.success_rate, bool((res.linf <= 0.3 + 1e-6).all()), int(res.queries.max()) <= 2000
        (1.0, True, True)
    """

    eps: float
    mode: NESMode = "query-limited"
    sigma: float | None = None
    samples: int = 50
    lr: float = 0.01
    min_lr: float = 5e-5
    plateau: int = 20
    momentum: float = 0.9
    max_queries: int = 10_000
    k: int = 5
    eps_start: float = 1.0
    eps_decay: float = 0.1
    min_eps_decay: float = 0.002
    mc_samples: int = 5
    mu: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "eps")
        check_choice(self, "mode", _MODES)
        for name in ("lr", "min_lr", "eps_start", "eps_decay", "min_eps_decay", "mu"):
            check_positive(self, name)
        if self.sigma is not None:
            check_positive(self, "sigma")
        check_at_least(self, "samples", 2)
        if self.samples % 2:
            raise ParameterError(
                f"NES: 'samples' must be even (antithetic pairs: samples / 2 directions and "
                f"their negatives), got {self.samples}; use {self.samples + 1}"
            )
        for name in ("plateau", "max_queries", "k", "mc_samples"):
            check_at_least(self, name, 1)
        check_probability(self, "momentum")
        check_at_least(self, "seed", 0)
        if self.min_lr > self.lr:
            raise ParameterError(f"NES: 'min_lr' must be <= 'lr' ({self.lr}), got {self.min_lr}")
        if self.eps_start < self.eps:
            raise ParameterError(
                f"NES: 'eps_start' must be >= 'eps' ({self.eps}), got {self.eps_start}; the "
                "ball starts large and shrinks to eps"
            )
        if self.min_eps_decay > self.eps_decay:
            raise ParameterError(
                f"NES: 'min_eps_decay' must be <= 'eps_decay' ({self.eps_decay}), got "
                f"{self.min_eps_decay}"
            )

    @property
    def step_sigma(self) -> float:
        """The standard deviation of the search distribution in use (``sigma`` resolved)."""
        if self.sigma is not None:
            return float(self.sigma)
        return self.mu if self.mode == "label-only" else 0.001

    @property
    def name(self) -> str:
        """Short name for tables: the class name and its non-default parameters."""
        parts = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if f.name != "seed" and getattr(self, f.name) != f.default
        ]
        return "NES(" + ", ".join(parts) + ")"

    # ------------------------------------------------------------------ entry point

    def __call__(
        self,
        oracle: Oracle,
        x: Tensor,
        y: Tensor | None = None,
        *,
        target: Tensor | None = None,
        x_init: Tensor | None = None,
        batch_size: int | None = None,
    ) -> AttackResult:
        """Attack ``x`` (N, C, H, W) with labels ``y`` (N,) through ``oracle`` (see the class).

        ``batch_size``: attack at most that many images at a time and join the results
        (:meth:`~robustlens.attacks.AttackResult.concat`). Each step queries ``samples`` (times
        ``mc_samples`` for labels only) perturbed copies of every image it holds, so 100
        ImageNet-sized images at once are tens of GB; the random draws then come per batch.
        """
        where = "NES"
        if batch_size is not None:
            joined = in_batches(
                lambda *part: self(oracle, part[0], part[1], target=part[2], x_init=part[3]),
                batch_size,
                (x, y, target, x_init),
                where=where,
            )
            if joined is not None:
                return joined
        self._check_oracle(oracle, target, x_init)
        x = check_images(x.detach() if isinstance(x, Tensor) else x, where=where)
        if x.device != oracle.device:
            raise DeviceError(
                f"{where}: the oracle's model is on {oracle.device} but x is on {x.device}; "
                f"move x there, for example x.to('{oracle.device}')"
            )
        n = len(x)
        k_known = oracle.num_classes
        if y is not None:
            y = check_labels(y, n, num_classes=k_known, where=where).to(x.device)
        if target is not None:
            target = check_labels(target, n, num_classes=k_known, name="target", where=where)
            target = target.to(x.device)
        if x_init is not None:
            x_init = check_images(
                x_init.detach() if isinstance(x_init, Tensor) else x_init,
                name="x_init",
                where=where,
            )
            if x_init.shape != x.shape:
                raise ShapeError(
                    f"{where}: x_init must have the shape of x {tuple(x.shape)}, got "
                    f"{tuple(x_init.shape)}"
                )
            x_init = x_init.to(x.dtype)

        if y is not None and target is not None:
            _check_target(y, target)

        # One query per image: its label, to leave alone what the oracle already gets wrong.
        ids = oracle.new_ids(n)
        classes, _ = _read(oracle(x, ids), oracle.output, 1)
        pred = classes[:, 0].to(x.device)
        num_classes = oracle.num_classes
        assert num_classes is not None  # learnt by the oracle at the first query
        k_read = min(self._k_read(oracle), num_classes)
        y = pred.clone() if y is None else check_labels(y, n, num_classes=num_classes, where=where)
        if target is not None:
            check_labels(target, n, num_classes=num_classes, name="target", where=where)
            _check_target(y, target)
        attacked = pred == y
        idx = attacked.nonzero().squeeze(1)

        x_adv = x.clone()
        pred_adv = pred.clone()
        steps = torch.full((n,), -1, dtype=torch.long, device=x.device)
        starved = 0
        if len(idx):
            view = _View(
                oracle,
                ids[idx.to(ids.device)],
                x_adv[idx],
                y[idx],
                None if target is None else target[idx],
                k_read,
                self.max_queries,
            )
            gen = torch.Generator(device=x.device).manual_seed(self.seed)
            per_image = self.max_queries if oracle.budget is None else oracle.budget
            per_image = min(self.max_queries, per_image) - 1  # less the label query
            with status(
                f"{self.name} on {len(idx)} images", per_image, unit="query"
            ) as view.progress:
                if self.mode == "query-limited":
                    adv, p, first, starved = self._query_limited(view, gen)
                else:
                    assert target is not None
                    start = self._start(x, pred, target, idx, x_init)
                    adv, p, first, starved = self._shrinking(view, start, gen)
            x_adv[idx], pred_adv[idx], steps[idx] = adv, p, first

        success = attacked & (pred_adv != y if target is None else pred_adv == target)
        return AttackResult.build(
            self.name,
            x,
            x_adv,
            success=success,
            attacked=attacked,
            queries=oracle.queries(ids).to(x.device),
            gradients=torch.zeros(n, dtype=torch.long, device=x.device),
            steps=steps,
            y=y,
            pred=pred_adv,
            clean_correct=attacked,
            target=target,
            details={
                "mode": self.mode,
                "oracle_output": oracle.output,
                "classes_read": k_read,
                "out_of_budget": starved,
            },
        )

    # ------------------------------------------------------------------ checks and set-up

    def _check_oracle(self, oracle: Oracle, target: Tensor | None, x_init: Tensor | None) -> None:
        where = f"NES(mode={self.mode!r})"
        if not isinstance(oracle, Oracle):
            raise DTypeError(
                f"{where}: the first argument must be a robustlens.blackbox.Oracle, got "
                f"{type(oracle).__name__}; wrap the model: Oracle(model, output='probs')"
            )
        out = oracle.output
        if self.mode == "query-limited":
            if out != "probs":
                other = "partial-info" if out == "topk" else "label-only"
                raise ParameterError(
                    f"{where} needs an Oracle(output='probs'), got output={out!r}; use "
                    f"mode={other!r} for this oracle"
                )
            if x_init is not None:
                raise ParameterError(
                    f"{where} starts from x; x_init is for mode='partial-info' or 'label-only'"
                )
            return
        if self.mode == "partial-info" and out == "label":
            raise ParameterError(
                f"{where} needs scores: an Oracle(output='topk') or 'probs', got "
                "output='label'; use mode='label-only' for this oracle"
            )
        if target is None:
            raise ParameterError(
                f"{where} is a targeted attack: pass target= (int64 (N,), the class each image "
                "should be taken to); use mode='query-limited' for an untargeted attack"
            )

    def _k_read(self, oracle: Oracle) -> int:
        if oracle.output == "label":
            return 1
        if oracle.output == "topk":
            return min(self.k, oracle.k)
        return self.k if self.mode != "query-limited" else 1

    def _start(
        self, x: Tensor, pred: Tensor, target: Tensor, idx: Tensor, x_init: Tensor | None
    ) -> Tensor:
        """Starting images (M, C, H, W) of the target classes for the attacked images ``idx``."""
        if x_init is not None:
            return x_init[idx]
        tgt = target[idx]
        match = pred[None, :] == tgt[:, None]  # (M, N): batch images the oracle puts in target
        missing = ~match.any(1)
        if bool(missing.any()):
            classes = sorted({int(c) for c in tgt[missing]})
            raise ParameterError(
                f"NES(mode={self.mode!r}): no image of the batch is classified as target "
                f"class(es) {classes} to start from; pass x_init= (N, C, H, W), images of each "
                "target class"
            )
        dist = torch.cdist(x[idx].flatten(1), x.flatten(1))
        dist = dist.masked_fill(~match, float("inf"))
        return x[dist.argmin(1)]

    # ------------------------------------------------------------------ losses (to minimise)

    def _loss(self, v: _View, rows: Tensor, gen: torch.Generator) -> LossFn:
        """The loss of the images ``rows`` as a function of their NES points (rows x samples)."""
        asked = rows.repeat_interleave(self.samples)
        if self.mode == "query-limited":
            label = (v.y if v.target is None else v.target)[asked]
            sign = -1.0 if v.target is None else 1.0

            def ce(points: Tensor) -> Tensor:
                probs = v.ask(points, asked)
                assert isinstance(probs, Tensor)
                return sign * _cross_entropy(probs, label)

            return ce

        assert v.target is not None
        tgt = v.target[asked]
        if self.mode == "partial-info":

            def partial(points: Tensor) -> Tensor:
                classes, scores = v.read(v.ask(points, asked))
                assert scores is not None
                p = (scores * (classes == tgt[:, None])).sum(1)
                return -torch.log(p.clamp_min(_FLOOR))

            return partial

        mc = self.mc_samples
        asked_mc = asked.repeat_interleave(mc)
        tgt_mc = tgt.repeat_interleave(mc)
        worth = torch.arange(v.k_read, 0, -1, device=tgt.device)  # R = k - rank (0-based)

        def proxy(points: Tensor) -> Tensor:
            noise = torch.rand(
                (len(points), mc, *points.shape[1:]),
                generator=gen,
                device=points.device,
                dtype=points.dtype,
            )
            noisy = (points[:, None] + (2 * noise - 1) * self.mu).flatten(0, 1)
            classes, _ = v.read(v.ask(noisy, asked_mc))
            r = ((classes == tgt_mc[:, None]) * worth).sum(1)
            return -r.view(len(points), mc).to(points.dtype).mean(1)

        return proxy

    # ------------------------------------------------------------------ shared per-iteration parts

    def _gradient(
        self, v: _View, rows: Tensor, adv: Tensor, g: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Momentum gradient of the images ``rows`` (stored back in ``g``) and their mean loss."""
        grad, value = _estimate(
            self._loss(v, rows, gen), adv[rows], self.step_sigma, self.samples, gen
        )
        g_rows = self.momentum * g[rows] + (1 - self.momentum) * grad
        g[rows] = g_rows
        return g_rows, value

    def _plateau(
        self, rows: Tensor, value: Tensor, best: Tensor, stall: Tensor, lr: Tensor
    ) -> Tensor:
        """Halve the step of images whose loss has not improved for ``plateau`` iterations."""
        improved = value < best[rows]
        best[rows] = torch.where(improved, value, best[rows])
        count = torch.where(improved, torch.zeros_like(stall[rows]), stall[rows] + 1)
        drop = count >= self.plateau
        lr[rows] = torch.where(drop, (lr[rows] / 2).clamp_min(self.min_lr), lr[rows])
        stall[rows] = torch.where(drop, torch.zeros_like(count), count)
        return lr[rows]

    # ------------------------------------------------------------------ the two loops

    def _query_limited(self, v: _View, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, int]:
        """Signed NES steps in the eps ball; one check query per iteration gives the prediction."""
        x = v.x
        m = len(x)
        adv, pred = x.clone(), v.y.clone()
        st = _Loop.start(x, self.lr)
        active = torch.arange(m, device=x.device)
        cost, t = self.samples + 1, 0
        while len(active):
            active = st.affordable(v, active, cost)
            if not len(active):
                break
            t += 1
            g_a, value = self._gradient(v, active, adv, st.g, gen)
            v.progress.tick(cost)
            lr_a = self._plateau(active, value, st.best, st.stall, st.lr)
            xo = x[active]
            step = adv[active] - bcast(lr_a, xo) * g_a.sign()
            new = (xo + project(step - xo, self.eps, "linf")).clamp(0, 1)
            probs = v.ask(new, active)
            assert isinstance(probs, Tensor)
            p = probs.argmax(1)
            adv[active], pred[active] = new, p
            hit = p != v.y[active] if v.target is None else p == v.target[active]
            st.first[active[hit]] = t
            active = active[~hit]
        return adv, pred, st.first, st.starved

    def _shrinking(
        self, v: _View, start: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """Partial-info and label-only: from an image of the target class, shrink the ball to eps
        while the target stays in the top k (Ilyas et al., Algorithm 2), then push it to the top."""
        x, target = v.x, v.target
        assert target is not None
        m = len(x)
        eps_t = x.new_tensor(self.eps)
        adv = (x + project(start - x, self.eps_start, "linf")).clamp(0, 1)
        radius = torch.full((m,), self.eps_start, dtype=x.dtype, device=x.device)
        decay = torch.full((m,), self.eps_decay, dtype=x.dtype, device=x.device)
        top1 = torch.full((m,), -1, dtype=torch.long, device=x.device)
        st = _Loop.start(x, self.lr)
        active = torch.arange(m, device=x.device)
        per_point = self.mc_samples if self.mode == "label-only" else 1
        cost, t = self.samples * per_point + 1, 0
        while len(active):
            active = st.affordable(v, active, cost)
            if not len(active):
                break
            t += 1
            g_a, value = self._gradient(v, active, adv, st.g, gen)
            v.progress.tick(cost - 1)  # the gradient's queries; each try below is one more
            lr_a = self._plateau(active, value, st.best, st.stall, st.lr)
            # Line search: one query per try and image; accepted tries keep the target in the top
            # k. A failed try halves the radius decrease, then (decrease dropped) the step.
            sign = g_a.sign()
            lr_try = lr_a.clone()
            d_try = torch.where(radius[active] > eps_t, decay[active], torch.zeros_like(lr_a))
            left = v.remaining(active)
            local = torch.arange(len(active), device=x.device)
            while len(local):
                local = local[left[local] >= 1]
                if not len(local):
                    break
                rows = active[local]
                xo = x[rows]
                new_r = torch.maximum(radius[rows] - d_try[local], eps_t)
                step = adv[rows] - bcast(lr_try[local], xo) * sign[local]
                prop = (xo + project(step - xo, new_r, "linf")).clamp(0, 1)
                classes, _ = v.read(v.ask(prop, rows))
                left[local] -= 1
                v.progress.tick()
                ok = (classes == target[rows, None]).any(1)
                acc = rows[ok]
                shrunk = acc[new_r[ok] < radius[acc]]
                st.best[shrunk], st.stall[shrunk] = (
                    float("inf"),
                    0,
                )  # a smaller ball: a new loss scale
                adv[acc], radius[acc], top1[acc] = prop[ok], new_r[ok], classes[ok, 0]
                d_ok = d_try[local[ok]]
                # Adaptive decay: a shrink that worked may double next time (up to eps_decay);
                # an iteration where every shrink failed starts from half the decay next time.
                decay[acc] = torch.where(
                    d_ok > 0,
                    (2 * d_ok).clamp_max(self.eps_decay),
                    (decay[acc] / 2).clamp_min(self.min_eps_decay),
                )
                rej = local[~ok]
                d = d_try[rej]
                shrinking = d > 0
                half = d / 2
                d_try[rej] = torch.where(half >= self.min_eps_decay, half, torch.zeros_like(d))
                lr_half = torch.where(shrinking, lr_try[rej], lr_try[rej] / 2)
                lr_try[rej] = lr_half
                local = rej[shrinking | (lr_half >= self.min_lr)]
            hit = (radius[active] <= eps_t) & (top1[active] == target[active])
            st.first[active[hit]] = t
            active = active[~hit]
        # Inside the eps ball with a known prediction: keep; else no valid candidate, return x.
        keep = (radius <= eps_t) & (top1 >= 0)
        adv = torch.where(bcast(keep, x), adv, x)
        pred = torch.where(keep, top1, v.y)
        return adv, pred, st.first, st.starved


@dataclass
class _Loop:
    """Per-image state both NES loops share: the momentum gradient ``g``, the step size ``lr``, the
    plateau bookkeeping (``best`` loss, ``stall`` count), the first successful iteration, and how
    many images stopped for lack of queries."""

    g: Tensor
    lr: Tensor
    best: Tensor
    stall: Tensor
    first: Tensor
    starved: int = 0

    @classmethod
    def start(cls, x: Tensor, lr: float) -> _Loop:
        m, dev = len(x), x.device
        return cls(
            g=torch.zeros_like(x),
            lr=torch.full((m,), lr, dtype=x.dtype, device=dev),
            best=torch.full((m,), float("inf"), dtype=x.dtype, device=dev),
            stall=torch.zeros(m, dtype=torch.long, device=dev),
            first=torch.full((m,), -1, dtype=torch.long, device=dev),
        )

    def affordable(self, v: _View, active: Tensor, cost: int) -> Tensor:
        """The images of ``active`` that can still pay ``cost`` queries; the others stop."""
        can = v.remaining(active) >= cost
        self.starved += int((~can).sum())
        return active[can]


def _check_target(y: Tensor, target: Tensor) -> None:
    same = target == y
    if bool(same.any()):
        raise LabelError(
            f"NES: target equals the true label for {int(same.sum())} images; a targeted attack "
            "needs a different class for each image"
        )


def _cross_entropy(probs: Tensor, label: Tensor) -> Tensor:
    """``-log p_label`` from probabilities, as ``log(1 + sum_{j != label} p_j / p_label)``: exact
    even where ``p_label`` rounds to 1 (a confident model), where ``-log p_label`` would be 0."""
    p = probs.gather(1, label[:, None]).squeeze(1)
    others = probs.scatter(1, label[:, None], 0.0).sum(1)
    return torch.log1p(others / p.clamp_min(torch.finfo(probs.dtype).tiny))
