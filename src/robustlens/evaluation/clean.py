"""Clean accuracy of a model on a data set, per class, with the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustlens._checks import check_logits, check_model
from robustlens._runtime import batched_logits
from robustlens.data.dataset import ImageDataset
from robustlens.errors import LabelError

__all__ = ["CleanResult", "clean_accuracy", "confusion_matrix"]


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> Tensor:
    """``C[i, j]`` = number of images of class ``i`` predicted as ``j``; int64 ``(K, K)``.

    Example:
        >>> import torch
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    for name, v in (("y_true", y_true), ("y_pred", y_pred)):
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= num_classes):
            raise LabelError(
                f"confusion_matrix: {name} holds classes outside 0..{num_classes - 1} "
                f"(range {int(v.min())}..{int(v.max())}); map the model's classes onto the data "
                "set's first (rl.models.map_classes)"
            )
    flat = y_true.long() * num_classes + y_pred.long()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


@dataclass(frozen=True)
class CleanResult:
    """Accuracy overall and per class, the confusion matrix and the per-image predictions."""

    accuracy: float
    per_class: Tensor  # (K,) float, NaN for a class with no image
    confusion: Tensor  # (K, K) int64, rows = true class
    predictions: Tensor  # (N,) int64
    classes: list[str]
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (predictions left out)."""
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "per_class": {
                c: (None if torch.isnan(a) else float(a))
                for c, a in zip(self.classes, self.per_class, strict=True)
            },
            "confusion": self.confusion.tolist(),
            "classes": list(self.classes),
        }


def clean_accuracy(
    model: nn.Module,
    ds: ImageDataset,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    show_progress: bool = False,
) -> CleanResult:
    """Evaluate ``model`` on every image of ``ds``.

    The model runs in eval mode (its previous mode restored afterwards), in batches on ``device``
    (default: the model's device).

    Example:
        >>> import robustlens as rl
        >>> res = rl.evaluation.clean_accuracy(rl.zoo.load("digits-cnn"), rl.data.load("digits"))
        >>> res.accuracy > 0.97, res.confusion.shape
        (True, torch.Size([10, 10]))
    """
    check_model(model, where="clean_accuracy")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    logits = batched_logits(
        model,
        ds.x,
        batch_size=batch_size,
        device=device,
        show_progress=show_progress,
        desc=f"clean accuracy on {ds.name}",
    )
    check_logits(logits, len(ds), where="clean_accuracy")
    k = logits.shape[1]
    classes = list(ds.classes)
    numbered = classes == [str(i) for i in range(len(classes))]
    if k > len(classes) and numbered:
        # Unnamed classes: the labels are the model's own output indices.
        classes = [str(i) for i in range(k)]
    elif k != ds.num_classes:
        raise LabelError(
            f"clean_accuracy: the model outputs {k} classes but {ds.name!r} has {ds.num_classes}; "
            "map the data set's classes onto the model's outputs with "
            f"rl.models.map_classes(model, ds.classes, num_outputs={k}) (the CLI does it for "
            "ImageNet class folders, or with --class-map FILE)"
        )
    pred = logits.argmax(1)
    conf = confusion_matrix(ds.y.cpu(), pred.cpu(), k)
    counts = conf.sum(1).double()
    per_class = torch.where(counts > 0, conf.diagonal().double() / counts.clamp_min(1), torch.nan)
    return CleanResult(
        accuracy=float((pred == ds.y.to(pred.device)).double().mean()),
        per_class=per_class.float(),
        confusion=conf,
        predictions=pred.cpu(),
        classes=classes,
        n=len(ds),
    )
