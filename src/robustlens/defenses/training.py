"""Adversarial training: Madry's PGD training, fast FGSM training, and Lipschitz regularisers.

The lecture's min-max problem ``min_theta E[max_{||delta||_inf <= eps} loss(f(x + delta), y)]`` is
solved approximately by replacing every training batch with adversarial examples:

- ``method="pgd"`` (Madry et al. 2018): ``steps`` signed gradient steps of size ``step`` from a
  random start uniform in the ball, projected onto the ball and ``[0, 1]`` every step;
- ``method="fast"`` (Wong, Rice and Kolter 2020): one FGSM step of size ``1.25 eps`` from a random
  start. It is cheap but can suffer *catastrophic overfitting*: robustness to PGD collapses within
  an epoch while FGSM accuracy soars. The guard measures PGD accuracy on a fixed held-out batch
  after every epoch and, on a collapse, rolls back to the best epoch and stops (the early stopping
  the paper recommends).

``lipschitz`` adds a penalty that keeps each layer's operator norm small (Cisse et al. 2017's
Parseval penalty ``sum ||W W^T - I||_F^2``, or the squared spectral norms of Yoshida and Miyato 2017
estimated by power iteration), with weight ``lipschitz_weight``.

Example:
    >>> import robustlens as rl
    >>> ds = rl.data.load("digits")
    >>> net = rl.models.create("linear", in_channels=1, num_classes=10, image_size=8)
    >>> adv = AdversarialConfig(method="fast", eps=0.05, guard=False)
    >>> history = adversarial_fit(net, ds, config=rl.training.TrainConfig(epochs=1), adversarial=adv)
    >>> len(history.loss)
    1
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens._checks import check_at_least, check_choice, check_positive, check_probability
from robustlens._runtime import inference_mode, progress_option
from robustlens.data.dataset import ImageDataset
from robustlens.errors import ParameterError
from robustlens.training.fit import TrainConfig, TrainHistory, fit

__all__ = [
    "AdversarialConfig",
    "OverfitGuard",
    "adversarial_fit",
    "lipschitz_penalty",
    "pgd_perturbation",
    "robust_accuracy",
]

Method = Literal["pgd", "fast"]
Lipschitz = Literal["none", "parseval", "spectral"]


@dataclass(frozen=True, kw_only=True)
class AdversarialConfig:
    """How each training batch is perturbed, and the optional Lipschitz penalty.

    ``step`` defaults to ``2.5 eps / steps`` for PGD (Madry et al.) and ``1.25 eps`` for the fast
    method (Wong et al.). The guard checks PGD-``guard_steps`` accuracy on a fixed batch of
    ``guard_size`` training images after each epoch and rolls back when it falls more than
    ``guard_drop`` below the best epoch's.
    """

    method: Method = "pgd"
    eps: float = 0.1
    steps: int = 7
    step: float | None = None
    lipschitz: Lipschitz = "none"
    lipschitz_weight: float = 1e-3
    guard: bool = True
    guard_size: int = 512
    guard_steps: int = 10
    guard_drop: float = 0.2

    def __post_init__(self) -> None:
        check_choice(self, "method", ("pgd", "fast"))
        check_positive(self, "eps")
        check_at_least(self, "steps", 1)
        if self.step is not None:
            check_positive(self, "step")
        check_choice(self, "lipschitz", ("none", "parseval", "spectral"))
        check_positive(self, "lipschitz_weight", allow_zero=True)
        check_at_least(self, "guard_size", 1)
        check_at_least(self, "guard_steps", 1)
        check_probability(self, "guard_drop")

    @property
    def step_size(self) -> float:
        if self.step is not None:
            return self.step
        return 2.5 * self.eps / self.steps if self.method == "pgd" else 1.25 * self.eps


def pgd_perturbation(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Linf PGD from a uniform random start, maximising the batch's cross-entropy for all samples.

    Unlike the PGD attack, nothing stops early: training wants the highest loss, not the first
    misclassification. The model is used in its current mode (training uses batch statistics, as
    in the reference implementations). Only the input gets gradients.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> (N, C, H, W) in [0, 1], ``||. - x||_inf <= eps``.
    """
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    delta = (2 * u - 1) * eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        xa = (x + delta).requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xa)
        delta = (delta + step * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def robust_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int = 10, seed: int = 0
) -> float:
    """Accuracy under :func:`pgd_perturbation` (step ``2.5 eps / steps``), in eval mode.

    A quick training-time monitor, not an evaluation: use ``robustlens.evaluation.evaluate`` and
    its attack ensemble for figures to report.
    """
    with inference_mode(model):
        g = torch.Generator(device=x.device).manual_seed(seed)
        xa = pgd_perturbation(
            model, x, y, eps=eps, step=2.5 * eps / steps, steps=steps, generator=g
        )
        with torch.no_grad():
            return float((model(xa).argmax(1) == y).float().mean())


def _weights(model: nn.Module) -> list[Tensor]:
    return [
        m.weight.flatten(1)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.requires_grad
    ]


def lipschitz_penalty(kind: Lipschitz) -> Callable[[nn.Module], Tensor]:
    """A regulariser ``model -> scalar`` over every Conv2d and Linear weight (as ``(out, -1)``).

    ``"parseval"``: ``sum ||W W^T - I||_F^2`` over the smaller Gram matrix (Cisse et al. 2017).
    ``"spectral"``: ``sum sigma_max(W)^2 / 2``, with one power-iteration step per call on vectors
    kept between calls (Yoshida and Miyato 2017).
    """
    if kind not in ("parseval", "spectral"):
        raise ParameterError(
            f"lipschitz_penalty: 'kind' must be one of 'parseval', 'spectral', got {kind!r}"
        )
    vectors: dict[int, Tensor] = {}

    def parseval(model: nn.Module) -> Tensor:
        total = torch.zeros((), device=next(model.parameters()).device)
        for w in _weights(model):
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            eye = torch.eye(len(gram), device=w.device, dtype=w.dtype)
            total = total + (gram - eye).pow(2).sum()
        return total

    def spectral(model: nn.Module) -> Tensor:
        total = torch.zeros((), device=next(model.parameters()).device)
        for i, w in enumerate(_weights(model)):
            with torch.no_grad():
                v = vectors.get(i)
                if v is None or v.shape[0] != w.shape[1]:
                    v = torch.ones(w.shape[1], device=w.device, dtype=w.dtype)
                u = F.normalize(w @ v, dim=0)
                v = F.normalize(w.T @ u, dim=0)
                vectors[i] = v
            total = total + 0.5 * (u @ w @ v).pow(2)
        return total

    return parseval if kind == "parseval" else spectral


class OverfitGuard:
    """Early stopping against catastrophic overfitting (Wong et al. 2020).

    Fed one robust accuracy per epoch, it keeps a copy of the best epoch's weights; when accuracy
    falls more than ``drop`` below the best, it restores them and says stop.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> guard = OverfitGuard(drop=0.2)
        >>> [guard.update(acc, net) for acc in (0.40, 0.45, 0.42, 0.10)], guard.best_epoch
        ([False, False, False, True], 1)
    """

    def __init__(self, drop: float) -> None:
        self.drop = drop
        self.best_accuracy = -1.0
        self.best_epoch = -1
        self._epoch = -1
        self._state: dict[str, Tensor] | None = None

    def update(self, accuracy: float, model: nn.Module) -> bool:
        """Record this epoch's ``accuracy``; ``True`` (after rolling ``model`` back) on collapse."""
        self._epoch += 1
        if accuracy >= self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, self._epoch
            self._state = copy.deepcopy(model.state_dict())
            return False
        if accuracy >= self.best_accuracy - self.drop or self._state is None:
            return False
        model.load_state_dict(self._state)
        return True


@progress_option
def adversarial_fit(
    model: nn.Module,
    train: ImageDataset,
    *,
    config: TrainConfig | None = None,
    adversarial: AdversarialConfig | None = None,
    val: ImageDataset | None = None,
    show_progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainHistory:
    """Adversarially train ``model`` in place on ``train`` (see the module docstring).

    The guard's held-out batch is the first ``guard_size`` images of a seeded permutation of
    ``train``; they still take part in training (as in Wong et al.), the check only needs images
    the attack has not been fitted to at that step. The history's ``config`` records both configs.
    """
    cfg = config or TrainConfig()
    adv = adversarial or AdversarialConfig()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    steps = adv.steps if adv.method == "pgd" else 1

    def perturb(net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return pgd_perturbation(
            net, x, y, eps=adv.eps, step=adv.step_size, steps=steps, generator=gen
        )

    regularizer = None
    if adv.lipschitz != "none" and adv.lipschitz_weight > 0:
        penalty = lipschitz_penalty(adv.lipschitz)

        def regularizer(net: nn.Module) -> Tensor:
            return adv.lipschitz_weight * penalty(net)

    epoch_end = None
    robust: list[float] = []
    if adv.guard:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + 3))
        held = pick[: adv.guard_size]
        xg, yg = train.x[held].to(device), train.y[held].to(device)
        guard = OverfitGuard(adv.guard_drop)

        def epoch_end(epoch: int, net: nn.Module) -> bool:
            acc = robust_accuracy(net, xg, yg, eps=adv.eps, steps=adv.guard_steps, seed=cfg.seed)
            robust.append(acc)
            if log is not None:
                log(f"epoch {epoch + 1}: PGD-{adv.guard_steps} accuracy {acc:.4f} (guard batch)")
            stop = guard.update(acc, net)
            if stop and log is not None:
                log(
                    f"catastrophic overfitting: PGD accuracy fell from {guard.best_accuracy:.4f} "
                    f"to {acc:.4f}; rolled back to epoch {guard.best_epoch + 1} and stopped"
                )
            return stop

    history = fit(
        model,
        train,
        config=cfg,
        val=val,
        perturb=perturb,
        regularizer=regularizer,
        epoch_end=epoch_end,
        show_progress=show_progress,
        log=log,
    )
    history.config = {**history.config, "adversarial": asdict(adv)}
    history.robust_accuracy = robust
    return history
