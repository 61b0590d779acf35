"""Clean accuracy of a model on a data set, per class, with the confusion matrix."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlens._checks import check_logits, check_model
from robustlens._runtime import chunked_forward, inference_mode, progress_option
from robustlens.data.files import ImageFiles, SkippedFile
from robustlens.data.stream import ImageData, batches, check_image_data, fingerprint, in_memory
from robustlens.errors import DataFileError, LabelError, ParameterError
from robustlens.evaluation._rows import RowLog
from robustlens.evaluation.runner import model_fingerprint

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
    predictions: Tensor  # (N,) int64, -1 for a file that could not be read
    classes: list[str]
    n: int  # images evaluated (files that could not be read are left out)
    skipped: list[SkippedFile] = field(default_factory=list)

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
            "skipped": [f.to_dict() for f in self.skipped],
        }


@progress_option
def clean_accuracy(
    model: nn.Module,
    ds: ImageData,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    show_progress: bool | None = None,
    out: str | Path | None = None,
) -> CleanResult:
    """Evaluate ``model`` on every image of ``ds``.

    The model runs in eval mode (its previous mode restored afterwards), in batches on ``device``
    (default: the model's device). ``ds`` is an :class:`~robustlens.data.ImageDataset` or an
    :class:`~robustlens.data.ImageFiles` read batch by batch (:func:`robustlens.data.batches`):
    memory holds one batch and one prediction per image. Files that do not decode are left out
    of every figure and listed in ``skipped`` (``strict`` files raise instead).

    With ``out``, each batch's predictions are appended to ``out/clean.csv`` as they come (files
    left out to ``out/clean-skipped.csv``); a folder holding an unfinished pass of the same model
    on the same data is resumed where it stopped (one of another model or data is replaced).

    Example:
        >>> import robustlens as rl
        >>> res = rl.evaluation.clean_accuracy(rl.zoo.load("digits-cnn"), rl.data.load("digits"))
        >>> res.accuracy > 0.97, res.confusion.shape
        (True, torch.Size([10, 10]))
    """
    check_model(model, where="clean_accuracy")
    data = check_image_data(ds, "clean_accuracy")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(
            f"clean_accuracy: 'batch_size' must be an int >= 1, got {batch_size!r}"
        )
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    files = isinstance(data, ImageFiles)
    n = len(data)
    pred = torch.full((n,), -1, dtype=torch.long)
    skipped: list[SkippedFile] = []
    todo: Tensor | None = None
    log: RowLog | None = None
    k: int | None = None
    if out is not None:
        columns = ["index", "label", "pred"] + (["file"] if files else [])
        config = {
            "model": model_fingerprint(model),
            "data": data.name,
            "n": n,
            "images": fingerprint(data),
        }
        log = RowLog(
            out,
            columns,
            config,
            rows="clean.csv",
            config_name="clean.json",
            skipped="clean-skipped.csv",
            where="clean_accuracy",
            replace=True,
        )
        rows, skipped, todo = log.resume(n, None)
        for r in rows:
            pred[int(r["index"])] = int(r["pred"])
    # The number of outputs from a few images first: a model that does not fit the data's
    # classes fails now, not after a pass over every image.
    head = in_memory(data[: min(n, 8)])
    if len(head):
        with inference_mode(model), torch.no_grad():
            probe = check_logits(model(head.x.to(device)), len(head), where="clean_accuracy")
        k = int(probe.shape[1])
        _output_classes(list(data.classes), k, data.name)
    with inference_mode(model), torch.no_grad():
        for batch in batches(
            data,
            batch_size,
            device=device,
            positions=todo,
            show_progress=show_progress,
            desc=f"clean accuracy on {data.name}",
        ):
            logits = check_logits(
                chunked_forward(model, batch.x), len(batch), where="clean_accuracy"
            )
            if k is None:
                k = int(logits.shape[1])
                _output_classes(list(data.classes), k, data.name)
            batch_pred = logits.argmax(1).cpu()
            pred[batch.index] = batch_pred
            skipped.extend(batch.skipped)
            if log is not None:
                rows = [
                    {"index": i, "label": label, "pred": p}
                    for i, label, p in zip(
                        batch.index.tolist(), batch.y.tolist(), batch_pred.tolist(), strict=True
                    )
                ]
                if isinstance(data, ImageFiles):
                    for row in rows:
                        row["file"] = data.relative(row["index"])
                log.append(rows, batch.skipped)
    if k is None:
        if n and not (pred >= 0).any():
            raise DataFileError(
                f"clean_accuracy: none of the {n} images of {data.name!r} could be read "
                f"(first: {skipped[0].path if skipped else '?'}: "
                f"{skipped[0].error if skipped else '?'})"
            )
        k = len(data.classes)
    classes = _output_classes(list(data.classes), k, data.name)
    read = pred >= 0
    y = data.y.cpu()
    conf = confusion_matrix(y[read], pred[read], k)
    counts = conf.sum(1).double()
    per_class = torch.where(counts > 0, conf.diagonal().double() / counts.clamp_min(1), torch.nan)
    m = int(read.sum())
    return CleanResult(
        accuracy=float((pred[read] == y[read]).double().mean()) if m else math.nan,
        per_class=per_class.float(),
        confusion=conf,
        predictions=pred,
        classes=classes,
        n=m,
        skipped=sorted(skipped, key=lambda f: f.index),
    )


def _output_classes(classes: list[str], k: int, name: str) -> list[str]:
    """The classes of a model with ``k`` outputs on a data set with ``classes``."""
    numbered = classes == [str(i) for i in range(len(classes))]
    if k > len(classes) and numbered:
        # Unnamed classes: the labels are the model's own output indices.
        return [str(i) for i in range(k)]
    if k != len(classes):
        raise LabelError(
            f"clean_accuracy: the model outputs {k} classes but {name!r} has {len(classes)}; "
            "map the data set's classes onto the model's outputs with "
            f"rl.models.map_classes(model, ds.classes, num_outputs={k}) (the CLI does it for "
            "ImageNet class folders, or with --class-map FILE)"
        )
    return classes
