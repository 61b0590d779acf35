"""Texture versus shape bias: which cue a classifier follows when the two disagree.

Geirhos et al. (2018, "ImageNet-trained CNNs are biased towards texture; increasing shape bias
improves accuracy and robustness") show a model cue-conflict images, whose shape comes from one
class and texture from another, and define the **shape bias** as

    shape decisions / (shape decisions + texture decisions)

over the conflicting images, where a *shape decision* answers the shape's class and a *texture
decision* the texture's; answers of any third class count in neither. A score of 1 means the model
always follows the shape, 0 always the texture. People score about 0.96 on Geirhos' stimuli,
ImageNet ResNet-50 about 0.22.

:func:`shape_bias_from_decisions` is the pure metric; :func:`shape_bias` runs a model on
:func:`robustlens.data.cue_conflict` stimuli and calls it. For an ImageNet model,
:func:`shape_bias_imagenet` measures it on Geirhos' own stimuli
(:func:`robustlens.data.open_cue_conflict`), its 1000 outputs read as the 16 categories by
:func:`imagenet_16_probabilities`, and sets the published reference points beside the score.

Example:
    >>> import torch
    >>> res = shape_bias_from_decisions(
    ...     torch.tensor([0, 0, 2, 1]), torch.tensor([0, 0, 1, 1]), torch.tensor([1, 2, 2, 0])
    ... )
    >>> res.score, res.shape_fraction, res.texture_fraction, res.n
    (0.75, 0.75, 0.25, 4)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustlens._checks import check_model, model_device
from robustlens._runtime import batched_logits
from robustlens.data.cue_conflict import CueConflict
from robustlens.data.geirhos import CATEGORIES_16, IMAGENET_16, CueConflictFiles
from robustlens.data.stream import model_outputs
from robustlens.errors import (
    DataFileError,
    DTypeError,
    LabelError,
    ModelOutputError,
    ParameterError,
    ShapeError,
)

__all__ = [
    "GEIRHOS_2019",
    "REFERENCES_16",
    "ShapeBias",
    "ShapeBiasReference",
    "imagenet_16_probabilities",
    "shape_bias",
    "shape_bias_from_decisions",
    "shape_bias_imagenet",
]

GEIRHOS_2019 = (
    "Geirhos et al. 2019, ImageNet-trained CNNs are biased towards texture; increasing shape "
    "bias improves accuracy and robustness (ICLR)"
)


@dataclass(frozen=True)
class ShapeBiasReference:
    """A published shape bias on the same stimuli: who (``observer``), the score, the source."""

    observer: str
    score: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"observer": self.observer, "score": self.score, "source": self.source}


REFERENCES_16: tuple[ShapeBiasReference, ...] = (
    ShapeBiasReference("humans", 0.96, GEIRHOS_2019),
    ShapeBiasReference("ResNet-50 (ImageNet)", 0.22, GEIRHOS_2019),
)
"""The reference points on Geirhos' 16-category cue-conflict stimuli: people (about 0.96, the
mean of their observers) and a standard ImageNet-trained ResNet-50 (about 0.22)."""


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else v


@dataclass(frozen=True, eq=False)
class ShapeBias:
    """Shape bias over the conflicting stimuli, overall and per shape class.

    ``score`` = shape / (shape + texture decisions), NaN when the model made neither;
    ``shape_fraction``, ``texture_fraction`` and ``other_fraction`` divide the ``n`` conflicting
    stimuli by the model's answer (they sum to 1). The per-class counts (int64 ``(K,)``) group
    the conflicting stimuli by their **shape** class, as Geirhos et al. plot them. ``stimuli``
    says which stimuli were used and ``references`` holds published scores on the same stimuli
    (both empty unless the producer knows them, as :func:`shape_bias_imagenet` does).
    """

    score: float
    shape_fraction: float
    texture_fraction: float
    other_fraction: float
    n: int
    classes: list[str]
    class_n: Tensor  # (K,) conflicting stimuli per shape class
    class_shape: Tensor  # (K,) shape decisions per shape class
    class_texture: Tensor  # (K,) texture decisions per shape class
    stimuli: str = ""
    references: tuple[ShapeBiasReference, ...] = ()

    @property
    def class_score(self) -> Tensor:
        """Shape bias per shape class, float ``(K,)``; NaN where there was no decision to count."""
        den = (self.class_shape + self.class_texture).double()
        return torch.where(den > 0, self.class_shape.double() / den.clamp(min=1), math.nan)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; undefined scores are ``None``."""
        per_class = {}
        for k, name in enumerate(self.classes):
            n_k = int(self.class_n[k])
            shape_k, texture_k = int(self.class_shape[k]), int(self.class_texture[k])
            per_class[name] = {
                "n": n_k,
                "score": _json_float(_ratio(shape_k, shape_k + texture_k)),
                "shape_fraction": _json_float(_ratio(shape_k, n_k)),
                "texture_fraction": _json_float(_ratio(texture_k, n_k)),
            }
        out: dict[str, Any] = {
            "score": _json_float(self.score),
            "shape_fraction": self.shape_fraction,
            "texture_fraction": self.texture_fraction,
            "other_fraction": self.other_fraction,
            "n": self.n,
            "per_class": per_class,
        }
        if self.stimuli:
            out["stimuli"] = self.stimuli
        if self.references:
            out["references"] = [r.to_dict() for r in self.references]
        return out


def _int_labels(t: object, name: str, n: int | None, where: str) -> Tensor:
    if (
        not isinstance(t, Tensor)
        or t.is_floating_point()
        or t.is_complex()
        or t.dtype == torch.bool
    ):
        got = t.dtype if isinstance(t, Tensor) else type(t).__name__
        raise DTypeError(f"{where}: {name!r} must be an int64 tensor of class indices, got {got}")
    if t.ndim != 1 or (n is not None and len(t) != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise LabelError(f"{where}: {name!r} must have shape {want}, got {tuple(t.shape)}")
    return t.long()


def shape_bias_from_decisions(
    decisions: Tensor,
    shape_label: Tensor,
    texture_label: Tensor,
    *,
    classes: list[str] | None = None,
) -> ShapeBias:
    """The Geirhos shape bias of a list of decisions (predicted classes) on cue-conflict stimuli.

    Stimuli whose shape and texture labels agree are left out; the others are the ``n`` that
    count. Decisions may be any class index (a third class is an "other" decision).

    Args:
        decisions: int64 ``(N,)`` the observer's answers.
        shape_label, texture_label: int64 ``(N,)`` the classes of each stimulus's two cues.
        classes: names of the ``K`` classes (default ``"0"``, ``"1"``, ...).

    Raises:
        ParameterError: when no stimulus conflicts (the score would be undefined).
    """
    where = "shape_bias"
    decisions = _int_labels(decisions, "decisions", None, where)
    n_all = len(decisions)
    shape_label = _int_labels(shape_label, "shape_label", n_all, where)
    texture_label = _int_labels(texture_label, "texture_label", n_all, where)
    k = max(int(shape_label.max()), int(texture_label.max())) + 1 if n_all else 0
    if classes is not None:
        if len(classes) < k:
            raise LabelError(
                f"{where}: labels reach class {k - 1} but only {len(classes)} class names were given"
            )
        k = len(classes)
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    conflict = shape_label != texture_label
    n = int(conflict.sum())
    if n == 0:
        raise ParameterError(
            f"{where}: needs at least one conflicting stimulus (shape class != texture class), "
            f"got {n_all} stimuli and none conflicts; draw them with rl.data.cue_conflict"
        )
    d, s, t = decisions[conflict], shape_label[conflict], texture_label[conflict]
    is_shape, is_texture = d == s, d == t
    s_cpu = s.cpu()
    class_n = torch.bincount(s_cpu, minlength=k)
    class_shape = torch.bincount(s_cpu[is_shape.cpu()], minlength=k)
    class_texture = torch.bincount(s_cpu[is_texture.cpu()], minlength=k)
    n_shape, n_texture = int(is_shape.sum()), int(is_texture.sum())
    return ShapeBias(
        score=_ratio(n_shape, n_shape + n_texture),
        shape_fraction=n_shape / n,
        texture_fraction=n_texture / n,
        other_fraction=(n - n_shape - n_texture) / n,
        n=n,
        classes=names,
        class_n=class_n,
        class_shape=class_shape,
        class_texture=class_texture,
    )


def shape_bias(
    model: nn.Module, stimuli: CueConflict | CueConflictFiles, *, batch_size: int = 256
) -> ShapeBias:
    """Shape bias of ``model`` on cue-conflict ``stimuli`` (Geirhos et al. 2018).

    The model must classify into the stimuli's ``K`` classes (for instance a model trained on the
    aligned set, ``rl.data.load("shapes-aligned")``). It runs in eval mode, restored afterwards;
    each batch goes to the model's device. Geirhos' own stimuli
    (:func:`robustlens.data.open_cue_conflict`) go to :func:`shape_bias_imagenet`.

    Shape: stimuli.x (N, C, H, W) -> ShapeBias over the conflicting stimuli.

    Example:
        >>> import robustlens as rl
        >>> stim = rl.data.cue_conflict(60, seed=0)
        >>> res = shape_bias(rl.zoo.load("shapes-cnn"), stim)
        >>> 0.0 <= res.score <= 1.0, res.n
        (True, 60)
        >>> round(res.shape_fraction + res.texture_fraction + res.other_fraction, 6)
        1.0
    """
    where = "shape_bias"
    if isinstance(stimuli, CueConflictFiles):
        return shape_bias_imagenet(model, stimuli, batch_size=batch_size)
    model = check_model(model, where=where)
    if not isinstance(stimuli, CueConflict):
        raise DTypeError(
            f"{where}: 'stimuli' must be a CueConflict from rl.data.cue_conflict(n, ...) or "
            f"Geirhos' stimuli from rl.data.open_cue_conflict(folder), got "
            f"{type(stimuli).__name__}; for decisions you computed yourself use "
            "shape_bias_from_decisions"
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ParameterError(f"{where}: 'batch_size' must be an int >= 1, got {batch_size!r}")
    logits = batched_logits(model, stimuli.x, batch_size=batch_size, device=model_device(model))
    if logits.shape[1] != stimuli.num_classes:
        raise ModelOutputError(
            f"{where}: the model has {logits.shape[1]} classes but the stimuli have "
            f"{stimuli.num_classes} ({', '.join(stimuli.classes)}); use a model trained on "
            f"rl.data.load('shapes-aligned') or draw stimuli with num_classes={logits.shape[1]}"
        )
    return shape_bias_from_decisions(
        logits.argmax(1),
        stimuli.shape_label,
        stimuli.texture_label,
        classes=list(stimuli.classes),
    )


# --------------------------------------------------------------------------- ImageNet models


def _category_weights(device: torch.device) -> Tensor:
    """``(1000, 16)``: column ``k`` averages the probabilities of category ``k``'s classes."""
    w = torch.zeros(1000, len(CATEGORIES_16), dtype=torch.float32)
    for k, members in enumerate(IMAGENET_16.values()):
        w[list(members), k] = 1.0 / len(members)
    return w.to(device)


def imagenet_16_probabilities(logits: Tensor) -> Tensor:
    """An ImageNet model's answer read in Geirhos' 16 categories.

    Softmax over the 1000 logits, then, for each category, the **mean** probability of its member
    classes (:data:`robustlens.data.IMAGENET_16`), as Geirhos et al. aggregate: a category is not
    favoured for having many members (dog has 109, knife one). The decision is the argmax over
    the 16; the scores do not sum to 1.

    Shape: logits (N, 1000) -> (N, 16) float32, columns in :data:`robustlens.data.CATEGORIES_16`
    order.

    Example:
        >>> import torch
        >>> logits = torch.zeros(2, 1000)
        >>> logits[0, 385] = 5.0                       # Indian elephant
        >>> logits[1, [281, 282, 283]] = 3.0           # three cats
        >>> p = imagenet_16_probabilities(logits)
        >>> p.shape, [CATEGORIES_16[k] for k in p.argmax(1).tolist()]
        (torch.Size([2, 16]), ['elephant', 'cat'])
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        got = logits.dtype if isinstance(logits, Tensor) else type(logits).__name__
        raise DTypeError(f"imagenet_16_probabilities: logits must be a float tensor, got {got}")
    if logits.ndim != 2 or logits.shape[1] != 1000:
        raise ShapeError(
            f"imagenet_16_probabilities: logits must be (N, 1000) ImageNet-1k outputs, got "
            f"{tuple(logits.shape)}"
        )
    probs = logits.float().softmax(dim=1)
    return probs @ _category_weights(probs.device)


def shape_bias_imagenet(
    model: nn.Module,
    stimuli: CueConflictFiles,
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    show_progress: bool | None = None,
) -> ShapeBias:
    """Shape bias of an ImageNet-1k ``model`` on Geirhos' cue-conflict stimuli (Geirhos et al.
    2019).

    Each conflicting stimulus (shape and texture categories differ; the others are not shown to
    the model) is read through its preprocessing, batch by batch; the model's 1000 logits become
    a decision among the 16 categories (:func:`imagenet_16_probabilities`, then argmax) and
    :func:`shape_bias_from_decisions` counts shape and texture decisions, overall and per shape
    category. The result carries the published reference points (:data:`REFERENCES_16`: people
    about 0.96, ImageNet ResNet-50 about 0.22). The model runs in eval mode, restored afterwards,
    on ``device`` (default: the model's). Files that do not decode are left out (listed in
    ``stimuli.files.skipped``).

    Args:
        model: maps ``(N, C, H, W)`` images in ``[0, 1]`` to ImageNet-1k logits ``(N, 1000)``
            (normalisation inside, as ``rl.models.load`` returns it).
        stimuli: from :func:`robustlens.data.open_cue_conflict`, with the model's preprocessing.
        batch_size: images per forward pass.

    Shape: stimuli of N files -> ShapeBias over the ``n <= N`` conflicting ones, 16 classes.

    Raises:
        ModelOutputError: the model does not give 1000 outputs.
        DataFileError: no conflicting stimulus decodes.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from PIL import Image
        >>> from robustlens.data import Preprocessing, open_cue_conflict
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("cat1-elephant1.png", "cat2-dog1.png", "cat3-cat1.png"):
        ...     (root / "cat").mkdir(exist_ok=True)
        ...     Image.new("RGB", (24, 24), "grey").save(root / "cat" / name)
        >>> stim = open_cue_conflict(root, preprocessing=Preprocessing(input_size=(8, 8)))
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1000))
        >>> res = shape_bias_imagenet(model, stim)
        >>> res.n, len(res.classes), [r.observer for r in res.references]
        (2, 16, ['humans', 'ResNet-50 (ImageNet)'])
        >>> round(res.shape_fraction + res.texture_fraction + res.other_fraction, 6)
        1.0
    """
    where = "shape_bias_imagenet"
    model = check_model(model, where=where)
    if not isinstance(stimuli, CueConflictFiles):
        raise DTypeError(
            f"{where}: 'stimuli' must be Geirhos' stimuli from rl.data.open_cue_conflict(folder), "
            f"got {type(stimuli).__name__}"
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ParameterError(f"{where}: 'batch_size' must be an int >= 1, got {batch_size!r}")
    shown = stimuli[stimuli.conflicting]
    if len(shown) == 0:
        raise ParameterError(
            f"{where}: none of the {len(stimuli)} stimuli conflicts (each has the same shape and "
            "texture category); give the full stimuli folder"
        )

    def decide(logits: Tensor) -> Tensor:
        if logits.shape[1] != 1000:
            raise ModelOutputError(
                f"{where}: the model has {logits.shape[1]} outputs but the 16-category mapping "
                "reads ImageNet-1k's 1000; give an ImageNet classifier (for a model of other "
                "classes use rl.bias.shape_bias on stimuli of its own classes)"
            )
        return imagenet_16_probabilities(logits).argmax(dim=1)

    decisions, read = model_outputs(
        model,
        shown.files,
        decide,
        batch_size=batch_size,
        device=device,
        show_progress=show_progress,
        desc="shape bias",
    )
    if len(read) == 0:
        raise DataFileError(
            f"{where}: none of the {len(shown)} conflicting stimuli decodes; first error: "
            f"{shown.files.skipped[0].error if shown.files.skipped else 'unknown'}"
        )
    res = shape_bias_from_decisions(
        decisions.long(),
        shown.shape_label[read],
        shown.texture_label[read],
        classes=list(CATEGORIES_16),
    )
    return dataclasses.replace(
        res,
        stimuli=(
            f"Geirhos et al.'s cue-conflict stimuli ({len(read)} conflicting of {len(stimuli)} "
            "files, 16 categories, ImageNet classes averaged per category)"
        ),
        references=REFERENCES_16,
    )
