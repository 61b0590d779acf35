"""Reliance on a spurious cue: accuracy when the cue agrees with the class versus when it lies.

A model that learnt the object scores the same whether a planted cue (see
:func:`robustlens.data.plant_cue`) names the right class or another one. A model that learnt the
cue loses accuracy on the conflicting images and answers the class the cue names instead. The
measurement plants the cue on a clean test set twice, every cue aligned and every cue conflicting,
on the same images, so the difference comes from the cue alone (Stock and Cisse 2018 make the
point on ImageNet's context biases).

Example:
    >>> import torch
    >>> y = torch.tensor([0, 1, 2, 0])
    >>> res = CueReliance.from_predictions(
    ...     clean=y, aligned=y, conflicting=torch.tensor([1, 2, 2, 0]), y=y,
    ...     cue_class=torch.tensor([1, 2, 0, 2]), kind="patch")
    >>> res.aligned_accuracy, res.conflicting_accuracy, res.gap, res.cue_following
    (1.0, 0.5, 0.5, 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from robustlens._checks import check_model, model_device
from robustlens._runtime import batched_logits
from robustlens.data.dataset import ImageDataset
from robustlens.data.spurious import CueKind, _check_dataset, cue_test_sets
from robustlens.errors import LabelError, ModelOutputError, ParameterError

__all__ = ["CueReliance", "cue_reliance"]


@dataclass(frozen=True)
class CueReliance:
    """How much a model's answers follow a planted cue.

    ``clean_accuracy`` is on the images without cue, ``aligned_accuracy`` with every cue naming
    the true class, ``conflicting_accuracy`` with every cue naming another class; ``gap`` is
    aligned minus conflicting accuracy (near 0 for a model that ignores the cue, up to 1 for one
    that reads only the cue), and ``cue_following`` the fraction of conflicting images classified
    as the class their cue names (chance level is about ``(1 - accuracy) / (K - 1)``).
    """

    kind: str
    n: int
    clean_accuracy: float
    aligned_accuracy: float
    conflicting_accuracy: float
    cue_following: float

    @property
    def gap(self) -> float:
        return self.aligned_accuracy - self.conflicting_accuracy

    @classmethod
    def from_predictions(
        cls,
        *,
        clean: Tensor,
        aligned: Tensor,
        conflicting: Tensor,
        y: Tensor,
        cue_class: Tensor,
        kind: str,
    ) -> CueReliance:
        """The measurement from predicted classes (int64 ``(N,)`` each) on the three versions of
        the same ``N`` images; ``cue_class`` is the class each conflicting image's cue names."""
        n = len(y)
        for name, t in (
            ("clean", clean),
            ("aligned", aligned),
            ("conflicting", conflicting),
            ("cue_class", cue_class),
        ):
            if t.shape != y.shape:
                raise LabelError(
                    f"cue_reliance: {name!r} must have shape {tuple(y.shape)} like 'y', got "
                    f"{tuple(t.shape)}"
                )
        if n == 0:
            raise ParameterError("cue_reliance: needs at least one image, got 0")
        return cls(
            kind=kind,
            n=n,
            clean_accuracy=float((clean == y).float().mean()),
            aligned_accuracy=float((aligned == y).float().mean()),
            conflicting_accuracy=float((conflicting == y).float().mean()),
            cue_following=float((conflicting == cue_class).float().mean()),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary, ``gap`` included."""
        return {
            "kind": self.kind,
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "aligned_accuracy": self.aligned_accuracy,
            "conflicting_accuracy": self.conflicting_accuracy,
            "gap": self.gap,
            "cue_following": self.cue_following,
        }


def cue_reliance(
    model: nn.Module,
    ds: ImageDataset,
    kind: CueKind = "patch",
    *,
    seed: int = 0,
    patch_size: int | None = None,
    batch_size: int = 512,
) -> CueReliance:
    """Reliance of ``model`` on a ``kind`` cue, measured on the clean test set ``ds``.

    The cue is planted with :func:`robustlens.data.cue_test_sets` (same ``kind``, ``seed`` and
    ``patch_size`` conventions as :func:`robustlens.data.plant_cue`): once aligned with every
    label, once conflicting with every label. The model runs in eval mode, restored afterwards.

    Shape: ds.x (N, C, H, W) -> CueReliance over the N images.

    Example:
        >>> import robustlens as rl
        >>> ds = rl.data.load("fashion-mnist", split="test")[:300]
        >>> res = cue_reliance(rl.zoo.load("fmnist-cnn-patch"), ds, "patch")
        >>> res.gap > 0.1, res.cue_following > 0.05
        (True, True)
    """
    where = "cue_reliance"
    model = check_model(model, where=where)
    ds = _check_dataset(ds, where)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ParameterError(f"{where}: 'batch_size' must be an int >= 1, got {batch_size!r}")
    aligned, conflicting = cue_test_sets(ds, kind, seed=seed, patch_size=patch_size)
    device = model_device(model)

    def predict(x: Tensor) -> Tensor:
        logits = batched_logits(model, x, batch_size=batch_size, device=device)
        if logits.shape[1] != ds.num_classes:
            raise ModelOutputError(
                f"{where}: the model has {logits.shape[1]} classes but {ds.name!r} has "
                f"{ds.num_classes}; measure a model on the data set it was trained for"
            )
        return logits.argmax(1)

    # A greyscale set tinted becomes RGB; its clean images go to the model as RGB too.
    clean_x = ds.x.expand(-1, 3, -1, -1) if aligned.x.shape[1] != ds.x.shape[1] else ds.x
    return CueReliance.from_predictions(
        clean=predict(clean_x),
        aligned=predict(aligned.x),
        conflicting=predict(conflicting.x),
        y=ds.y,
        cue_class=conflicting.cue_class,
        kind=kind,
    )
