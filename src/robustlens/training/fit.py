"""Supervised training of a classifier on an ``ImageDataset``, seeded end to end.

``fit`` is what ``robustlens train`` runs to produce the zoo weights; ``perturb`` lets adversarial
training replace each batch by its adversarial counterpart before the update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens._checks import (
    check_at_least,
    check_choice,
    check_positive,
    check_probability,
    check_same_device,
)
from robustlens._runtime import batched_logits, progress, progress_option
from robustlens.data.dataset import ImageDataset
from robustlens.training.augment import random_flip, random_shift

__all__ = [
    "EpochEnd",
    "Perturb",
    "Regularizer",
    "TrainConfig",
    "TrainHistory",
    "channel_stats",
    "fit",
]

Perturb = Callable[[nn.Module, Tensor, Tensor], Tensor]
Regularizer = Callable[[nn.Module], Tensor]
EpochEnd = Callable[[int, nn.Module], bool]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyper-parameters of :func:`fit`.

    The schedule is one-cycle (Smith 2018): the learning rate rises linearly to ``lr`` over the
    first 30% of the steps, then falls along a cosine to ``lr / 1000``. The optimiser is AdamW.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: Literal["none", "shift", "shift-flip"] = "shift"
    shift: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check_at_least(self, "epochs", 1)
        check_at_least(self, "batch_size", 1)
        check_positive(self, "lr")
        check_positive(self, "weight_decay", allow_zero=True)
        check_probability(self, "label_smoothing")
        check_choice(self, "augment", ("none", "shift", "shift-flip"))
        check_at_least(self, "shift", 0)


@dataclass
class TrainHistory:
    """Per-epoch training loss and accuracy, validation accuracy when a set was given, and the
    adversarial training guard's robust accuracy when it ran."""

    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    robust_accuracy: list[float] = field(default_factory=list)
    config: dict[str, object] = field(default_factory=dict)


def channel_stats(ds: ImageDataset) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of a data set's pixels."""
    x = ds.x.transpose(0, 1).flatten(1)
    return x.mean(1).tolist(), x.std(1).tolist()


@progress_option
def fit(
    model: nn.Module,
    train: ImageDataset,
    *,
    config: TrainConfig | None = None,
    val: ImageDataset | None = None,
    perturb: Perturb | None = None,
    regularizer: Regularizer | None = None,
    epoch_end: EpochEnd | None = None,
    show_progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainHistory:
    """Train ``model`` in place on ``train`` and return its history.

    The model must already be on the device to train on; each batch is moved there. Shuffling,
    augmentation and initialisation-independent randomness all come from ``config.seed``.

    Hooks (adversarial training uses them): ``perturb(model, x, y)`` replaces each batch before the
    update, ``regularizer(model)`` adds a scalar to the loss, and ``epoch_end(epoch, model)`` runs
    after each epoch and stops training when it returns ``True``.
    """
    cfg = config or TrainConfig()
    device = next(model.parameters()).device
    check_same_device(model, train.x[:1].to(device), where="fit")
    torch.manual_seed(cfg.seed)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    gdev = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    n = len(train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=cfg.lr,
        total_steps=cfg.epochs * steps_per_epoch,
        pct_start=0.3,
        final_div_factor=40.0,
    )
    history = TrainHistory(config=asdict(cfg))
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for start in progress(
            range(0, n, cfg.batch_size), show=show_progress, desc=f"epoch {epoch + 1}/{cfg.epochs}"
        ):
            idx = perm[start : start + cfg.batch_size]
            xb = train.x[idx].to(device, non_blocking=True)
            yb = train.y[idx].to(device, non_blocking=True)
            if cfg.augment != "none":
                xb = random_shift(xb, cfg.shift, gdev)
                if cfg.augment == "shift-flip":
                    xb = random_flip(xb, gdev)
            if perturb is not None:
                xb = perturb(model, xb, yb)
                model.train()
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            objective = loss if regularizer is None else loss + regularizer(model)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            sched.step()
            total_loss += loss.detach() * len(idx)
            correct += (logits.argmax(1) == yb).sum()
        history.loss.append(float(total_loss) / n)
        history.train_accuracy.append(float(correct) / n)
        line = (
            f"epoch {epoch + 1}/{cfg.epochs}: loss {history.loss[-1]:.4f}, "
            f"train accuracy {history.train_accuracy[-1]:.4f}"
        )
        if val is not None:
            acc = accuracy(model, val)
            history.val_accuracy.append(acc)
            line += f", val accuracy {acc:.4f}"
        if log is not None:
            log(line)
        if epoch_end is not None and epoch_end(epoch, model):
            break
    model.eval()
    return history


def accuracy(model: nn.Module, ds: ImageDataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``ds`` (batched, on the model's device)."""
    device = next(model.parameters()).device
    logits = batched_logits(model, ds.x, batch_size=batch_size, device=device)
    return float((logits.argmax(1) == ds.y).float().mean())
