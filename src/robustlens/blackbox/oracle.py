"""The oracle: the only view of a model that a black-box attack gets.

An :class:`Oracle` wraps a model and answers queries in one of three output modes, the threat
models of the lecture's black-box part (Ilyas et al. 2018, "Black-box adversarial attacks with
limited queries and information"):

* ``"probs"``: the full softmax probabilities (the query-limited setting);
* ``"topk"``: the ``k`` most probable classes and their probabilities (partial information);
* ``"label"``: the predicted class and nothing else (decision only).

It counts queries per image. An attack asks for fresh image ids once per call (``new_ids``) and
passes them with every batch it sends, so the oracle knows which image each query is about: every
image in a batch is one query for its id, duplicates included. With a ``budget``, a batch that
would take any id past it raises :class:`~robustlens.errors.QueryBudgetError` before the model
sees any of it; ``remaining(ids)`` lets an attack stop cleanly before that happens.

The model is kept private: there is no attribute or method that returns it, its logits or its
gradients, and every output is detached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from robustlens._checks import (
    check_at_least,
    check_choice,
    check_images,
    check_logits,
    check_model,
    check_same_device,
    model_device,
)
from robustlens._runtime import chunked_forward, inference_mode
from robustlens.errors import (
    DTypeError,
    ModelOutputError,
    ParameterError,
    QueryBudgetError,
    ShapeError,
)

__all__ = ["UNLIMITED", "Oracle", "OracleOutput", "TopK"]

OracleOutput = Literal["probs", "topk", "label"]
_OUTPUTS: tuple[str, ...] = ("probs", "topk", "label")

#: What :meth:`Oracle.remaining` reports for an oracle without a budget (``2**62``: large, and
#: still far from overflowing when an attack adds or subtracts query counts to it).
UNLIMITED = 2**62


@dataclass(frozen=True)
class TopK:
    """The answer of a ``"topk"`` oracle: the ``k`` most probable classes, most probable first.

    Shapes: ``classes`` int64 (M, k); ``scores`` float (M, k), the softmax probabilities of those
    classes, in descending order along each row.
    """

    classes: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return len(self.classes)


class Oracle:
    """A model behind a query interface that counts, limits and restricts what an attacker sees.

    Args:
        model: any ``nn.Module`` mapping images (N, C, H, W) in [0, 1] to logits (N, K). It runs
            in eval mode without gradients during each query; its previous mode is restored.
        output: ``"probs"``, ``"topk"`` or ``"label"`` (see the module docstring).
        k: number of classes a ``"topk"`` oracle returns (unused by the other outputs).
        budget: maximum number of queries per image id, or ``None`` for no limit.
        num_classes: ``K``, if known. Otherwise the oracle learns it from the model's output at the
            first query (no hidden probe query is made); until then :attr:`num_classes` is ``None``.
            Attacks that need ``K`` read it after their first query, or from its output. A
            ``"topk"`` oracle with ``k > K`` raises at that query, answering and charging nothing.

    Shape: ``oracle(x, ids)`` with x (M, C, H, W) in [0, 1] and ids int64 (M,) returns probs (M, K),
    :class:`TopK` with (M, k) fields, or labels int64 (M,).

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("digits")[:4]
        >>> oracle = Oracle(rl.zoo.load("digits-cnn"), output="label", budget=2)
        >>> ids = oracle.new_ids(4)
        >>> bool((oracle(ds.x, ids) == ds.y).all())
        True
        >>> oracle.queries(ids).tolist(), oracle.remaining(ids).tolist(), oracle.total
        ([1, 1, 1, 1], [1, 1, 1, 1], 4)
        >>> top3 = Oracle(rl.zoo.load("digits-cnn"), output="topk", k=3)
        >>> top = top3(ds.x, top3.new_ids(4))
        >>> top.classes.shape, bool((top.classes[:, 0] == ds.y).all())
        (torch.Size([4, 3]), True)
    """

    def __init__(
        self,
        model: nn.Module,
        output: OracleOutput = "probs",
        k: int = 5,
        budget: int | None = None,
        *,
        num_classes: int | None = None,
    ) -> None:
        self._model = check_model(model, where="Oracle")
        self._output: OracleOutput = output
        self._k = k
        self._budget = budget
        self._num_classes = num_classes
        check_choice(self, "output", _OUTPUTS)
        check_at_least(self, "k", 1)
        if budget is not None:
            check_at_least(self, "budget", 1)
        if num_classes is not None:
            check_at_least(self, "num_classes", 2)
            self._check_k(num_classes)
        self._device = model_device(model) or torch.device("cpu")
        self._counts = torch.zeros(0, dtype=torch.long, device=self._device)
        self._total = 0

    # ------------------------------------------------------------------ read-only settings

    @property
    def output(self) -> OracleOutput:
        """The output mode: ``"probs"``, ``"topk"`` or ``"label"``."""
        return self._output

    @property
    def k(self) -> int:
        """Number of classes a ``"topk"`` oracle returns."""
        return self._k

    @property
    def budget(self) -> int | None:
        """Maximum number of queries per image id (``None``: unlimited)."""
        return self._budget

    @property
    def num_classes(self) -> int | None:
        """``K``: given at construction or learnt at the first query; ``None`` before that."""
        return self._num_classes

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters (CPU for a model without any); ids and counts live here."""
        return self._device

    @property
    def total(self) -> int:
        """Number of images sent to the model so far, over all ids."""
        return self._total

    def __repr__(self) -> str:
        return (
            f"Oracle(output={self._output!r}, k={self._k}, budget={self._budget}, "
            f"total={self._total})"
        )

    # ------------------------------------------------------------------ accounting

    def new_ids(self, n: int) -> Tensor:
        """``n`` fresh image ids (int64 (n,)), each with a query count of 0.

        An attack calls this once per call, one id per image it will ask about.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ParameterError(f"Oracle.new_ids: 'n' must be an int >= 0, got {n!r}")
        start = len(self._counts)
        self._counts = torch.cat(
            [self._counts, torch.zeros(n, dtype=torch.long, device=self._device)]
        )
        return torch.arange(start, start + n, dtype=torch.long, device=self._device)

    def queries(self, ids: Tensor) -> Tensor:
        """Queries made so far for each id: int64, shaped like ``ids``."""
        return self._counts[self._check_ids(ids, None, where="Oracle.queries")].clone()

    def remaining(self, ids: Tensor) -> Tensor:
        """Queries each id may still make: ``budget - queries``, or :data:`UNLIMITED` (``2**62``)
        for an oracle without a budget. int64, shaped like ``ids``."""
        used = self._counts[self._check_ids(ids, None, where="Oracle.remaining")]
        if self._budget is None:
            return torch.full_like(used, UNLIMITED)
        return (self._budget - used).clamp_min(0)

    # ------------------------------------------------------------------ queries

    def __call__(self, x: Tensor, ids: Tensor) -> Tensor | TopK:
        """Answer one query per image of ``x`` (M, C, H, W), charged to ``ids`` (M,)."""
        where = "Oracle"
        x = check_images(x.detach() if isinstance(x, Tensor) else x, where=where)
        check_same_device(self._model, x, where=where)
        ids = self._check_ids(ids, len(x), where=where)
        uniq, asked = torch.unique(ids, return_counts=True)
        if self._budget is not None:
            after = self._counts[uniq] + asked
            over = after > self._budget
            if bool(over.any()):
                bad = uniq[over]
                shown = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
                raise QueryBudgetError(
                    f"{where}: this query of {len(x)} images would take {len(bad)} image id(s) "
                    f"past the budget of {self._budget} queries per image (ids {shown}: up to "
                    f"{int(after[over].max())} queries); nothing was sent to the model. Raise "
                    "Oracle(budget=...), or stop the attack before: oracle.remaining(ids) says "
                    "how many queries each image has left"
                )
        with inference_mode(self._model), torch.no_grad():
            logits = check_logits(chunked_forward(self._model, x), len(x), where=where).detach()
        k_model = logits.shape[1]
        if self._num_classes is None:
            self._check_k(k_model)
            self._num_classes = k_model
        elif k_model != self._num_classes:
            raise ModelOutputError(
                f"{where}: the model returned {k_model} classes but the oracle was told "
                f"num_classes={self._num_classes}; pass the right num_classes or leave it unset"
            )
        self._counts.index_add_(0, uniq, asked)
        self._total += len(x)
        if self._output == "label":
            return logits.argmax(1)
        probs = torch.softmax(logits.float(), dim=1).to(logits.dtype)
        if self._output == "probs":
            return probs
        scores, classes = probs.topk(self._k, dim=1)
        return TopK(classes=classes, scores=scores)

    # ------------------------------------------------------------------ helpers

    def _check_k(self, num_classes: int) -> None:
        if self._output == "topk" and self._k > num_classes:
            raise ParameterError(
                f"Oracle: 'k' must be <= the number of classes {num_classes} for output='topk', "
                f"got {self._k}; use k <= {num_classes}"
            )

    def _check_ids(self, ids: Tensor, n: int | None, *, where: str) -> Tensor:
        if not isinstance(ids, Tensor):
            raise DTypeError(
                f"{where}: ids must be a torch.Tensor of int64 ids from oracle.new_ids(n), got "
                f"{type(ids).__name__}"
            )
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise DTypeError(f"{where}: ids must be int64, got dtype {ids.dtype}")
        if ids.ndim != 1 or (n is not None and len(ids) != n):
            want = f"({n},), one id per image" if n is not None else "(M,)"
            raise ShapeError(f"{where}: ids must have shape {want}, got {tuple(ids.shape)}")
        ids = ids.to(device=self._device, dtype=torch.long)
        if len(ids):
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= len(self._counts):
                issued = f"0..{len(self._counts) - 1}" if len(self._counts) else "none yet"
                raise ParameterError(
                    f"{where}: ids must be ids this oracle issued ({issued}), got ids in "
                    f"[{lo}, {hi}]; get them with oracle.new_ids(n)"
                )
        return ids
