"""Transfer attacks: adversarial examples made on a surrogate, judged on the victim.

The lecture's first black-box idea: attack a model you own (a similar network, or a
:class:`~robustlens.blackbox.Substitute` trained on the oracle's labels) with any white-box attack,
and send the result to the victim. Szegedy et al. (2014) and Papernot et al. (2016, 2017) found
that such examples often fool other models too.

* :class:`Transfer` is an :class:`~robustlens.attacks.Attack`: its algorithm runs the white-box
  attack on the surrogate; the base class then judges the images on the victim passed to
  ``__call__``, with one forward pass per image (one query, no gradient of the victim).
* :func:`transfer_matrix` runs one attack on each of several models and judges every result on
  every model: row = source (attacked), column = target (judged); the diagonal is the white-box
  success rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustlens._checks import (
    check_images,
    check_labels,
    check_logits,
    check_model,
    check_same_device,
)
from robustlens._runtime import batched_logits, inference_mode, progress
from robustlens.attacks._steps import goal_reached
from robustlens.attacks.adaptive import Persistent, Wrapper, can_persist
from robustlens.attacks.base import Attack, Run
from robustlens.errors import DTypeError, LabelError, ParameterError

__all__ = ["Transfer", "TransferMatrix", "transfer_matrix"]


@dataclass(frozen=True)
class Transfer(Wrapper):
    """Run ``attack`` on ``surrogate`` (white-box) and judge its images on the victim.

    ``Transfer(attack, surrogate)(victim, x, y)`` attacks the inputs the victim classifies
    correctly: ``attack``'s algorithm runs on ``surrogate`` with the same labels (and ``target``,
    ``x_init``), and success is decided by one forward pass of the victim per image. With
    ``persistent`` (the default) a fixed-budget inner attack runs all its steps and returns its
    highest-objective iterate instead of stopping at the surrogate's first misclassification: an
    image that barely crosses the surrogate's boundary rarely fools the victim (minimum-norm
    attacks such as C&W run as usual). The victim's counts
    are ``queries == 1`` and ``gradients == 0``; ``details`` holds the surrogate's side:
    ``surrogate_success_rate``, ``surrogate_queries`` and ``surrogate_gradients`` (means per
    attacked input). The threat model is the inner attack's.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> AttackResult with x_adv (N, C, H, W).

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:16]
        >>> model = rl.zoo.load("digits-cnn")
        >>> fgsm = rl.attacks.FGSM(eps=0.2)
        >>> res = Transfer(fgsm, model)(model, ds.x, ds.y)
        >>> res.attack, res.success_rate == fgsm(model, ds.x, ds.y).success_rate
        ('Transfer(FGSM(eps=0.2))', True)
        >>> res.queries.max().item(), res.gradients.max().item()
        (1, 0)
    """

    surrogate: nn.Module
    persistent: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.surrogate, nn.Module):
            raise ParameterError(
                "Transfer: 'surrogate' must be a torch.nn.Module mapping images to logits (a "
                f"model you own, or Substitute(...).fit(...).model), got "
                f"{type(self.surrogate).__name__}"
            )

    @property
    def name(self) -> str:
        return f"Transfer({self.attack.name})"

    def _run(self, run: Run) -> Tensor:
        check_same_device(self.surrogate, run.x, where=self.name)
        kind = Persistent if self.persistent and can_persist(self.attack) else Run
        sub = kind(self.surrogate, run.x, run.y, run.target, self.attack.seed, run.x_init)
        sub.progress = run.progress  # the inner attack's steps, on the surrogate
        with inference_mode(self.surrogate):
            x_adv = self.attack._run(sub).detach()
            with torch.no_grad():
                fooled = goal_reached(self.surrogate(x_adv), run.y, run.target)
        run.details.update(
            {
                "surrogate_success_rate": float(fooled.double().mean()),
                "surrogate_queries": float(sub.queries.double().mean()),
                "surrogate_gradients": float(sub.gradients.double().mean()),
            }
        )
        run.pred_adv = None  # the base judges the images with one (counted) pass of the victim
        return x_adv


@dataclass(frozen=True)
class TransferMatrix:
    """Success of one attack transferred between models.

    Attributes:
        attack: the attack's name.
        names: the models, in order; rows are sources (the attack ran on them), columns targets.
        success: float64 (S, S): ``success[i, j]`` is the fraction of the images correctly
            classified by both source ``i`` and target ``j`` before the attack whose adversarial
            image made on ``i`` fools ``j`` (NaN where no image qualifies). The diagonal is the
            white-box success rate of each model.
        counts: int64 (S, S): the number of images each entry is computed over.
        clean_accuracy: float64 (S,): each model's accuracy on the clean images.
    """

    attack: str
    names: list[str]
    success: Tensor
    counts: Tensor
    clean_accuracy: Tensor

    def format(self, digits: int = 3) -> str:
        """A text table: one row per source, one column per target.

        Example:
            >>> import torch
            >>> m = TransferMatrix(attack="FGSM", names=["a", "b"],
            ...                    success=torch.tensor([[1.0, 0.25], [0.5, float("nan")]]),
            ...                    counts=torch.ones(2, 2, dtype=torch.long),
            ...                    clean_accuracy=torch.ones(2))
            >>> print(m.format())
            FGSM: success (row: source attacked, column: target judged)
            source \\ target      a      b
            a                1.000  0.250
            b                0.500      -
        """
        corner = "source \\ target"
        cell = max(digits + 3, *(len(n) for n in self.names))
        first = max(len(corner), *(len(n) for n in self.names))
        lines = [f"{self.attack}: success (row: source attacked, column: target judged)"]
        lines.append(corner.ljust(first) + "".join(f"  {n:>{cell}}" for n in self.names))
        for name, row in zip(self.names, self.success.tolist(), strict=True):
            cells = "".join(f"  {'-' if math.isnan(v) else f'{v:.{digits}f}':>{cell}}" for v in row)
            lines.append(name.ljust(first) + cells)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (JSON-ready; NaN becomes ``None``)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "attack": self.attack,
            "names": list(self.names),
            "success": [[clean(v) for v in row] for row in self.success.tolist()],
            "counts": self.counts.tolist(),
            "clean_accuracy": [clean(v) for v in self.clean_accuracy.tolist()],
        }


def transfer_matrix(
    models: dict[str, nn.Module],
    attack: Attack,
    x: Tensor,
    y: Tensor,
    *,
    target: Tensor | None = None,
    batch_size: int = 256,
) -> TransferMatrix:
    """Run ``attack`` once on each model and judge every result on every model.

    Each source model is attacked in batches of ``batch_size`` (the attack skips the images it
    misclassifies); each target classifies the clean images once and every source's adversarial
    images once. The diagonal uses the attack's own verdict, so it equals the white-box
    ``AttackResult.success_rate`` exactly. With ``target`` (N,), success means the target model
    predicts the target class.

    Shape: x (N, C, H, W) in [0, 1], y (N,) -> TransferMatrix with (S, S) tensors.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:32]
        >>> _ = torch.manual_seed(0)
        >>> linear = rl.models.create("linear", in_channels=1, num_classes=10, image_size=8)
        >>> models = {"cnn": rl.zoo.load("digits-cnn"), "linear": linear}
        >>> m = transfer_matrix(models, rl.attacks.FGSM(eps=0.2), ds.x, ds.y)
        >>> m.success.shape, m.names
        (torch.Size([2, 2]), ['cnn', 'linear'])
    """
    where = "transfer_matrix"
    if not isinstance(models, dict) or not models:
        raise ParameterError(
            f"{where}: 'models' must be a non-empty dict of name -> nn.Module, got "
            f"{type(models).__name__ if not isinstance(models, dict) else 'an empty dict'}"
        )
    for key, model in models.items():
        if not isinstance(key, str):
            raise ParameterError(f"{where}: model names must be strings, got {key!r}")
        check_model(model, where=f"{where} ({key!r})")
    if not isinstance(attack, Attack):
        raise DTypeError(
            f"{where}: 'attack' must be a robustlens attack such as rl.attacks.FGSM(eps=0.1), "
            f"got {type(attack).__name__}"
        )
    check_images(x, where=where)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ParameterError(f"{where}: 'batch_size' must be an int >= 1, got {batch_size!r}")
    n = len(x)
    names = list(models)
    # Label range: checked against each model's number of classes on its first batch.
    y = check_labels(y, n, where=where).to(x.device)
    if target is not None:
        target = check_labels(target, n, name="target", where=where).to(x.device)
        if bool((target == y).any()):
            raise LabelError(
                f"{where}: target equals the true label for {int((target == y).sum())} images; "
                "a targeted attack needs a different class for each image"
            )
    for key in names:
        check_same_device(models[key], x, where=f"{where} ({key!r})")

    clean_pred: dict[str, Tensor] = {}
    for key in names:
        logits = check_logits(
            batched_logits(models[key], x, batch_size=batch_size), n, where=f"{where} ({key!r})"
        )
        k = logits.shape[1]
        check_labels(y, n, num_classes=k, where=f"{where} ({key!r})")
        if target is not None:
            check_labels(target, n, num_classes=k, name="target", where=f"{where} ({key!r})")
        clean_pred[key] = logits.argmax(1)

    # One attack per source; its own verdict (pred on x_adv) is the diagonal.
    adv: dict[str, Tensor] = {}
    own_pred: dict[str, Tensor] = {}
    for key in progress(names, desc=f"{attack.name} on each source model", unit="model"):
        xs, ps = [], []
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            t = None if target is None else target[sl]
            res = attack(models[key], x[sl], y[sl], target=t)
            xs.append(res.x_adv)
            ps.append(res.pred)
        adv[key], own_pred[key] = torch.cat(xs), torch.cat(ps)

    s = len(names)
    success = torch.full((s, s), math.nan, dtype=torch.float64)
    counts = torch.zeros((s, s), dtype=torch.long)
    correct = {key: clean_pred[key] == y for key in names}
    for j, tgt in enumerate(names):
        for i, src in enumerate(names):
            pred = (
                own_pred[src]
                if i == j
                else batched_logits(models[tgt], adv[src], batch_size=batch_size).argmax(1)
            )
            fooled = pred != y if target is None else pred == target
            both = correct[src] & correct[tgt]
            count = int(both.sum())
            counts[i, j] = count
            if count:
                success[i, j] = float(fooled[both].double().sum()) / count
    clean_accuracy = torch.tensor(
        [float(correct[key].double().mean()) for key in names], dtype=torch.float64
    )
    return TransferMatrix(
        attack=attack.name,
        names=names,
        success=success,
        counts=counts,
        clean_accuracy=clean_accuracy,
    )
