"""Substitute training (Papernot et al. 2017, "Practical black-box attacks against machine
learning"): learn a model that mimics the oracle from its labels alone.

The attacker holds a small seed set ``S_0`` of inputs. Each round ``r = 0, 1, ...``:

1. the oracle labels the points of ``S_r`` it has not labelled yet (one query per image, once);
2. the substitute ``F`` is trained on the whole of ``S_r`` with those labels;
3. **Jacobian-based dataset augmentation** (while rounds remain): every ``x`` of ``S_r`` with oracle
   label ``l`` gives a new point ``x' = clamp(x + lambda_r * sign(d F_l(x) / dx), 0, 1)``, a step
   along the row of the substitute's Jacobian for the oracle's label, towards where the substitute's
   decision boundary may still be wrong: ``S_{r+1} = S_r  U  {x'}``. The set doubles each round.

Two refinements of the paper (its section 6) cut the number of queries: the **periodic step size**
``lambda_r = lam * (-1) ** floor(r / tau)`` (:func:`lambda_schedule`) turns back towards the data
every ``tau`` rounds, and **reservoir sampling** augments, after round ``sigma``, only ``reservoir``
points drawn uniformly without replacement from the previous set, so the set grows by
``reservoir`` points per round instead of doubling.

Choices, and where they depart from the paper:

* ``F_l`` is the substitute's **logit** of class ``l`` (the authors' cleverhans implementation
  differentiates the logits; the paper's notation reads either way).
* Each round **continues training** the same substitute on the whole set ``S_r`` with a fresh
  optimiser and learning-rate schedule, as the authors' implementation does; ``restart=True``
  re-initialises it each round instead (the same seeded initialisation).
* Training uses :func:`robustlens.training.fit` (AdamW, one-cycle schedule, no data augmentation)
  rather than the paper's SGD with momentum; ``epochs=10`` per round and ``lam=0.1`` are the paper's.
* The substitute takes images in ``[0, 1]`` and normalises them itself: it is
  ``Normalized(net, mean, std)`` with the per-channel mean and standard deviation of the **seed
  set** (the only data the attacker owns at the start), so attacks on it measure budgets in pixel
  space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustlens._checks import (
    check_at_least,
    check_images,
    check_labels,
    check_logits,
    check_model,
    check_positive,
)
from robustlens._runtime import batched_logits, inference_mode, progress
from robustlens.blackbox.oracle import Oracle, TopK
from robustlens.data.dataset import ImageDataset
from robustlens.errors import DeviceError, DTypeError, ParameterError, ShapeError
from robustlens.models.architectures import ARCHITECTURES
from robustlens.models.architectures import create as create_architecture
from robustlens.models.normalized import Normalized
from robustlens.training.fit import TrainConfig, fit

__all__ = [
    "Substitute",
    "SubstituteResult",
    "jacobian_augment",
    "lambda_schedule",
    "oracle_labels",
]

#: Images per oracle query batch and per Jacobian batch (bounds memory, changes no result).
_CHUNK = 1024


# --------------------------------------------------------------------------- pure pieces


def lambda_schedule(lam: float, tau: int | None, rounds: int) -> list[float]:
    """The augmentation step of each round: ``lam * (-1) ** floor(k / tau)`` for ``k < rounds``.

    ``tau=None`` keeps ``lam`` constant. Entry ``k`` is the step that makes ``S_{k+1}`` from
    ``S_k``.

    Example:
        >>> lambda_schedule(0.1, 2, 5)
        [0.1, 0.1, -0.1, -0.1, 0.1]
        >>> lambda_schedule(0.1, None, 3)
        [0.1, 0.1, 0.1]
    """
    if not isinstance(lam, int | float) or isinstance(lam, bool) or not math.isfinite(lam):
        raise ParameterError(f"lambda_schedule: 'lam' must be a finite float, got {lam!r}")
    if tau is not None and (not isinstance(tau, int) or isinstance(tau, bool) or tau < 1):
        raise ParameterError(
            f"lambda_schedule: 'tau' must be an int >= 1 or None (no sign change), got {tau!r}"
        )
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 0:
        raise ParameterError(f"lambda_schedule: 'rounds' must be an int >= 0, got {rounds!r}")
    if tau is None:
        return [float(lam)] * rounds
    return [float(lam) * (-1.0) ** (k // tau) for k in range(rounds)]


def jacobian_augment(
    substitute: nn.Module, x: Tensor, labels: Tensor, lam: float, *, batch_size: int = _CHUNK
) -> Tensor:
    """Papernot's augmentation step: ``clamp(x + lam * sign(d F_l(x) / dx), 0, 1)``, ``l = labels``.

    ``F_l`` is the substitute's logit of each point's label: one backward pass per batch gives the
    Jacobian rows of all its points (each output depends on its own input only, in eval mode). The
    substitute runs in eval mode with its previous mode restored. For a linear substitute
    ``W x + b`` the step is ``lam * sign(W[l])``.

    Shape: x (N, C, H, W) in [0, 1], labels int64 (N,) -> (N, C, H, W) in [0, 1].

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:4]
        >>> x_new = jacobian_augment(rl.zoo.load("digits-cnn"), ds.x, ds.y, 0.1)
        >>> x_new.shape, float((x_new - ds.x).abs().max()) <= 0.1 + 1e-6
        (torch.Size([4, 1, 8, 8]), True)
    """
    where = "jacobian_augment"
    check_model(substitute, where=where)
    check_images(x, where=where)
    labels = check_labels(labels, len(x), where=where).to(x.device)
    if not isinstance(lam, int | float) or isinstance(lam, bool) or not math.isfinite(lam):
        raise ParameterError(f"{where}: 'lam' must be a finite float, got {lam!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ParameterError(f"{where}: 'batch_size' must be an int >= 1, got {batch_size!r}")
    out: list[Tensor] = []
    with inference_mode(substitute):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].detach().requires_grad_(True)
            lb = labels[start : start + batch_size]
            with torch.enable_grad():
                logits = check_logits(substitute(xb), len(xb), where=where)
                if int(lb.max()) >= logits.shape[1]:
                    raise ParameterError(
                        f"{where}: labels go up to {int(lb.max())} but the substitute has "
                        f"{logits.shape[1]} classes; give labels in 0..{logits.shape[1] - 1}"
                    )
                picked = logits.gather(1, lb[:, None]).sum()
                (grad,) = torch.autograd.grad(picked, xb, allow_unused=True)
            step = torch.zeros_like(xb) if grad is None else grad.sign()
            out.append((xb.detach() + lam * step).clamp(0.0, 1.0))
    return torch.cat(out)


def oracle_labels(oracle: Oracle, x: Tensor, ids: Tensor) -> Tensor:
    """The oracle's label of each image, whatever its output mode (one query per image).

    ``"label"``: the answer itself; ``"probs"``: its argmax; ``"topk"``: the first class.

    Shape: x (M, C, H, W), ids int64 (M,) -> int64 (M,).
    """
    out: list[Tensor] = []
    for start in range(0, len(x), _CHUNK):
        ans = oracle(x[start : start + _CHUNK], ids[start : start + _CHUNK])
        if isinstance(ans, TopK):
            out.append(ans.classes[:, 0])
        elif ans.ndim == 2:
            out.append(ans.argmax(1))
        else:
            out.append(ans)
    return torch.cat(out).long().to(x.device)


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class SubstituteResult:
    """What :meth:`Substitute.fit` returns.

    Attributes:
        model: the trained substitute (eval mode, on the oracle's device), taking images in
            ``[0, 1]``.
        agreement: per round ``r = 0..rounds``, the fraction of ``x_check`` on which the substitute
            and the oracle give the same label (empty without ``x_check``).
        train_agreement: the same on the training set ``S_r`` of each round.
        queries: oracle queries spent on the training set: one per point, so ``sizes[-1]``.
        check_queries: oracle queries spent labelling ``x_check`` (one per image, once).
        sizes: ``|S_r|`` per round ``r = 0..rounds``.
        lambdas: the step of each augmentation (``rounds`` values).
        dataset: the final training set with the oracle's labels (``.x`` (N, C, H, W), ``.y`` (N,)).
        parents: int64 (N,): for each point of ``dataset``, the index of the point it was made
            from, or -1 for a seed point.
        history: per-round lists: ``"loss"`` (last epoch's training loss), ``"train_accuracy"``,
            ``"agreement"``, ``"train_agreement"``, ``"new_points"``, ``"queries"`` (cumulative).
    """

    model: nn.Module
    agreement: list[float]
    train_agreement: list[float]
    queries: int
    check_queries: int
    sizes: list[int]
    lambdas: list[float]
    dataset: ImageDataset
    parents: Tensor
    history: dict[str, list[float]]

    def summary(self) -> dict[str, Any]:
        """Headline numbers as plain Python values (JSON-ready)."""
        return {
            "rounds": len(self.sizes) - 1,
            "queries": self.queries,
            "check_queries": self.check_queries,
            "sizes": list(self.sizes),
            "lambdas": list(self.lambdas),
            "agreement": list(self.agreement),
            "train_agreement": list(self.train_agreement),
        }


# --------------------------------------------------------------------------- the procedure


@dataclass(frozen=True, kw_only=True)
class Substitute:
    """Papernot et al.'s substitute training with Jacobian-based dataset augmentation.

    Args:
        arch: a registered architecture (``robustlens.models.names()``) for the substitute.
        factory: instead of ``arch``, a function returning a fresh ``nn.Module`` (images in
            ``[0, 1]`` -> logits (N, K)); it is called under the seeded random state.
        arch_options: extra keyword arguments of the architecture (``widths``, ``hidden``, ...).
        rounds: augmentation rounds (the paper's substitute epochs ``rho``): the substitute is
            trained ``rounds + 1`` times, on ``S_0 .. S_rounds``.
        lam: the augmentation step ``lambda`` in pixel units.
        tau: period of the sign change of ``lambda`` (``None``: constant).
        reservoir: after round ``sigma``, augment only this many points per round, drawn uniformly
            without replacement (``None``: augment every point, the set doubles).
        sigma: the number of rounds that augment every point before reservoir sampling starts.
        epochs, batch_size, lr: training of each round (:func:`robustlens.training.fit`).
        restart: re-initialise the substitute each round instead of continuing its training.
        seed: initialisation, shuffling and reservoir draws; the same seed gives the same result.

    Shape: ``fit(oracle, x_seed (N0, C, H, W), x_check=None (M, C, H, W))`` with images in
    ``[0, 1]``; the final set holds ``N0 * 2 ** rounds`` points without reservoir.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")
        >>> oracle = rl.blackbox.Oracle(rl.zoo.load("digits-cnn"), output="label")
        >>> sub = Substitute(rounds=1, epochs=2, arch_options={"widths": (8,), "hidden": 16})
        >>> res = sub.fit(oracle, ds.x[:20], x_check=ds.x[400:])
        >>> res.sizes, res.queries, oracle.total, len(res.agreement)
        ([20, 40], 40, 90, 2)
    """

    arch: str = "convnet"
    factory: Callable[[], nn.Module] | None = None
    arch_options: dict[str, Any] = field(default_factory=dict)
    rounds: int = 6
    lam: float = 0.1
    tau: int | None = None
    reservoir: int | None = None
    sigma: int = 3
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    restart: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.factory is not None:
            if not callable(self.factory):
                raise ParameterError(
                    f"{name}: 'factory' must be a callable returning a fresh nn.Module, got "
                    f"{type(self.factory).__name__}"
                )
            if self.arch_options:
                raise ParameterError(
                    f"{name}: 'arch_options' apply to 'arch', not to a 'factory'; build the "
                    "options into the factory, or drop the factory"
                )
        else:
            if not isinstance(self.arch, str):
                raise ParameterError(
                    f"{name}: 'arch' must be an architecture name such as 'convnet', got "
                    f"{self.arch!r}"
                )
            ARCHITECTURES.get(self.arch)  # an unknown name suggests the closest one
        if not isinstance(self.arch_options, dict):
            raise ParameterError(
                f"{name}: 'arch_options' must be a dict of keyword arguments, got "
                f"{type(self.arch_options).__name__}"
            )
        fixed = sorted({"in_channels", "num_classes", "image_size"} & set(self.arch_options))
        if fixed:
            raise ParameterError(
                f"{name}: 'arch_options' must not set {', '.join(map(repr, fixed))}: they come "
                "from the seed images and the oracle's number of classes"
            )
        check_at_least(self, "rounds", 0)
        check_positive(self, "lam")
        if self.tau is not None:
            check_at_least(self, "tau", 1)
        if self.reservoir is not None:
            check_at_least(self, "reservoir", 1)
        check_at_least(self, "sigma", 0)
        check_at_least(self, "epochs", 1)
        check_at_least(self, "batch_size", 1)
        check_positive(self, "lr")
        if not isinstance(self.restart, bool):
            raise ParameterError(f"{name}: 'restart' must be a bool, got {self.restart!r}")
        check_at_least(self, "seed", 0)

    # ------------------------------------------------------------------ helpers

    def _build(self, x_seed: Tensor, num_classes: int) -> nn.Module:
        """A freshly initialised substitute (seeded) with the seed set's statistics inside."""
        _, c, h, w = x_seed.shape
        torch.manual_seed(self.seed)
        if self.factory is not None:
            net = self.factory()
            check_model(net, where="Substitute factory")
        else:
            if h != w:
                raise ShapeError(
                    f"Substitute: architecture {self.arch!r} takes square images, got {h}x{w}; "
                    "give a 'factory' that builds a model for this shape"
                )
            options = {"in_channels": c, "num_classes": num_classes, "image_size": h}
            net = create_architecture(self.arch, **options, **self.arch_options)
        flat = x_seed.transpose(0, 1).flatten(1)
        mean = flat.mean(1)
        std = flat.std(1) if flat.shape[1] > 1 else torch.ones_like(mean)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        return Normalized(net, mean.tolist(), std.tolist()).to(x_seed.device)

    def _validate(self, oracle: Oracle, x_seed: Tensor, x_check: Tensor | None) -> None:
        where = "Substitute.fit"
        if not isinstance(oracle, Oracle):
            raise DTypeError(
                f"{where}: 'oracle' must be a robustlens.blackbox.Oracle, got "
                f"{type(oracle).__name__}; wrap the model: Oracle(model, output='label')"
            )
        check_images(x_seed, name="x_seed", where=where)
        if x_seed.device != oracle.device:
            raise DeviceError(
                f"{where}: the oracle is on {oracle.device} but x_seed is on {x_seed.device}; "
                f"move the seed set: x_seed.to('{oracle.device}')"
            )
        if x_check is not None:
            check_images(x_check, name="x_check", where=where)
            if x_check.shape[1:] != x_seed.shape[1:]:
                raise ShapeError(
                    f"{where}: x_check images must have the shape of the seed images "
                    f"{tuple(x_seed.shape[1:])}, got {tuple(x_check.shape[1:])}"
                )
            if x_check.device != x_seed.device:
                raise DeviceError(
                    f"{where}: x_check is on {x_check.device} but x_seed is on "
                    f"{x_seed.device}; put both on the oracle's device"
                )

    # ------------------------------------------------------------------ the algorithm

    def fit(
        self, oracle: Oracle, x_seed: Tensor, *, x_check: Tensor | None = None
    ) -> SubstituteResult:
        """Train a substitute of ``oracle`` from the seed images ``x_seed`` (N0, C, H, W).

        Every point of the training set is labelled by the oracle exactly once, under fresh ids
        from ``oracle.new_ids``; ``x_check`` (M, C, H, W), if given, is labelled once more (``M``
        queries, reported apart as ``check_queries``) to measure agreement after each round.
        The global torch random state is left as it was.
        """
        self._validate(oracle, x_seed, x_check)
        x_seed = x_seed.detach().float()
        dev = x_seed.device
        devices = []
        if dev.type == "cuda":
            devices = [torch.cuda.current_device() if dev.index is None else dev.index]
        with torch.random.fork_rng(devices=devices):
            return self._fit(oracle, x_seed, x_check)

    def _fit(self, oracle: Oracle, x_seed: Tensor, x_check: Tensor | None) -> SubstituteResult:
        device = x_seed.device
        lambdas = lambda_schedule(self.lam, self.tau, self.rounds)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)

        x = x_seed.clone()
        y = oracle_labels(oracle, x, oracle.new_ids(len(x)))
        queries = len(x)
        parents = torch.full((len(x),), -1, dtype=torch.long, device=device)
        num_classes = oracle.num_classes or int(y.max()) + 1
        classes = [str(k) for k in range(num_classes)]
        y_check = None
        if x_check is not None:
            x_check = x_check.detach().float()
            y_check = oracle_labels(oracle, x_check, oracle.new_ids(len(x_check)))

        history: dict[str, list[float]] = {
            "loss": [],
            "train_accuracy": [],
            "agreement": [],
            "train_agreement": [],
            "new_points": [],
            "queries": [],
        }
        sizes: list[int] = []
        model = self._build(x_seed, num_classes)
        rounds = progress(
            range(self.rounds + 1), desc=f"Substitute: {self.rounds} rounds", unit="round"
        )
        for r in rounds:
            if r > 0:
                # Augment S_{r-1} (every point, or a reservoir sample) with the current substitute.
                pick = torch.arange(len(x), device=device)
                if self.reservoir is not None and r > self.sigma and self.reservoir < len(x):
                    pick = torch.randperm(len(x), generator=gen)[: self.reservoir].to(device)
                    pick = pick.sort().values
                x_new = jacobian_augment(model, x[pick], y[pick], lambdas[r - 1])
                y_new = oracle_labels(oracle, x_new, oracle.new_ids(len(x_new)))
                queries += len(x_new)
                x, y = torch.cat([x, x_new]), torch.cat([y, y_new])
                parents = torch.cat([parents, pick])
                history["new_points"].append(float(len(x_new)))
            sizes.append(len(x))
            if r > 0 and self.restart:
                model = self._build(x_seed, num_classes)
            train = ImageDataset(x, y, classes=classes, name="substitute")
            cfg = TrainConfig(
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                augment="none",
                seed=self.seed + r,
            )
            trained = fit(model, train, config=cfg)
            history["loss"].append(trained.loss[-1])
            history["train_accuracy"].append(trained.train_accuracy[-1])
            history["queries"].append(float(queries))
            history["train_agreement"].append(_agreement(model, x, y))
            if x_check is not None and y_check is not None:
                history["agreement"].append(_agreement(model, x_check, y_check))
        model.eval()
        return SubstituteResult(
            model=model,
            agreement=list(history["agreement"]),
            train_agreement=list(history["train_agreement"]),
            queries=queries,
            check_queries=0 if x_check is None else len(x_check),
            sizes=sizes,
            lambdas=lambdas,
            dataset=ImageDataset(x, y, classes=classes, name="substitute"),
            parents=parents,
            history=history,
        )


def _agreement(model: nn.Module, x: Tensor, labels: Tensor) -> float:
    """Fraction of ``x`` on which ``model``'s label equals ``labels``."""
    pred = batched_logits(model, x, batch_size=_CHUNK).argmax(1)
    return float((pred == labels).double().mean())
