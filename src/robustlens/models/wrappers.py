"""Modules that adapt a user's model to robustlens' conventions without changing what it computes.

- :class:`Exported` runs a ``torch.export`` program: it keeps the exported graph's mode (an exported
  module cannot switch between train and eval) and feeds a program exported with a fixed batch
  size in chunks of that size.
- :class:`ClassMapped` maps a model's classes onto a data set's: the logits of the data set's
  classes, in the data set's order, then one "other" logit, the largest of the classes outside it.

Example:
    >>> import torch
    >>> net = ClassMapped(torch.nn.Identity(), [2, 0], num_outputs=4)
    >>> net(torch.tensor([[1.0, 5.0, 3.0, 4.0]])).tolist()
    [[3.0, 1.0, 5.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustlens.errors import LabelError, ModelOutputError, ShapeError

__all__ = ["ClassMapped", "Exported", "map_classes"]


class Exported(nn.Module):
    """A ``torch.export`` program's module, callable on any batch size.

    Args:
        graph: ``ExportedProgram.module()``.
        batch: the batch size the program was exported with when it is fixed, else ``None``.
        input_shape: ``(C, H, W)`` the program was exported with, when fixed.
    """

    def __init__(
        self,
        graph: nn.Module,
        *,
        batch: int | None = None,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.batch = batch
        self.input_shape = input_shape

    def train(self, mode: bool = True) -> Exported:
        # The exported graph was traced in one mode and keeps it; only our flag follows.
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(
                f"exported program: it was exported for inputs (N, {', '.join(map(str, self.input_shape))}) "
                f"but got {tuple(x.shape)}; give --input-size {self.input_shape[-2]} "
                f"{self.input_shape[-1]} (Python: input_size=...) or export it with dynamic shapes"
            )
        if self.batch is None or len(x) == self.batch:
            return self.graph(x)
        outs = []
        for start in range(0, len(x), self.batch):
            chunk = x[start : start + self.batch]
            short = self.batch - len(chunk)
            if short:
                chunk = torch.cat([chunk, chunk[-1:].expand(short, *chunk.shape[1:])])
            outs.append(self.graph(chunk)[: self.batch - short])
        return torch.cat(outs)

    def extra_repr(self) -> str:
        return f"batch={self.batch}, input_shape={self.input_shape}"


class ClassMapped(nn.Module):
    """Logits of a data set's classes, taken from a model that knows other classes too.

    ``index[k]`` is the model's output for the data set's class ``k``. When the model has classes
    outside the data set, one more logit follows: the largest of those, so the argmax of the mapped
    logits is the data set's class exactly when the model's own argmax is, and "other" otherwise.
    An attack that leaves the true class therefore succeeds here exactly when it does on the model.

    Shape: x -> (N, len(index) + 1) when the model has classes beyond ``index``, else
    (N, len(index)).
    """

    index: Tensor
    rest: Tensor

    def __init__(
        self, model: nn.Module, index: Sequence[int], *, num_outputs: int | None = None
    ) -> None:
        super().__init__()
        idx = [int(i) for i in index]
        if not idx or min(idx) < 0:
            raise LabelError(f"class map: model indices must be ints >= 0, got {idx}")
        if len(set(idx)) != len(idx):
            dup = sorted({i for i in idx if idx.count(i) > 1})
            raise LabelError(
                f"class map: two data set classes map to the same model output {dup}; each "
                "data set class needs its own model class"
            )
        self.model = model
        self.num_outputs = num_outputs
        self.register_buffer("index", torch.tensor(idx, dtype=torch.int64), persistent=False)
        rest: list[int] = []
        if num_outputs is not None:
            if max(idx) >= num_outputs:
                raise LabelError(
                    f"class map: index {max(idx)} is out of range for a model with "
                    f"{num_outputs} outputs"
                )
            chosen = set(idx)
            rest = [k for k in range(num_outputs) if k not in chosen]
        self.register_buffer("rest", torch.tensor(rest, dtype=torch.int64), persistent=False)

    @property
    def has_other(self) -> bool:
        """Whether the mapped logits end with the "other classes" logit."""
        return self.rest.numel() > 0

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        if logits.ndim != 2 or (
            self.num_outputs is not None and logits.shape[1] != self.num_outputs
        ):
            raise ModelOutputError(
                f"class map: expected logits (N, {self.num_outputs}), got {tuple(logits.shape)}"
            )
        mapped = logits.index_select(1, self.index)
        if not self.has_other:
            return mapped
        other = logits.index_select(1, self.rest).amax(dim=1, keepdim=True)
        return torch.cat([mapped, other], dim=1)

    def extra_repr(self) -> str:
        shown = self.index.tolist()[:8]
        more = ", ..." if self.index.numel() > 8 else ""
        return f"index={shown}{more}, other={self.has_other}"


def map_classes(
    model: nn.Module,
    data_classes: Sequence[str],
    *,
    num_outputs: int,
    model_classes: Sequence[str] | None = None,
    class_map: str | None = None,
) -> tuple[nn.Module, list[str]]:
    """Fit a model's outputs to a data set's classes; returns the model to audit and its classes.

    - ``class_map`` (a JSON or text file, see :func:`robustlens.data.read_class_map`) maps each
      data set class to a model output;
    - else a model with as many outputs as the data set has classes is used as it is;
    - else a 1000-class model is read as an ImageNet model, and the data set's class names
      (WordNet ids such as ``n01440764`` or class names such as ``tench``) are looked up in the
      standard ImageNet class index.

    When the model knows classes beyond the data set's, the returned classes end with
    ``"(other)"``: predictions outside the data set land there, and count as errors.

    Example:
        >>> import torch
        >>> net, classes = map_classes(torch.nn.Identity(), ["goldfish", "tench"], num_outputs=1000)
        >>> classes, net(torch.arange(1000.0)[None]).tolist()[0]
        (['goldfish', 'tench', '(other)'], [1.0, 0.0, 999.0])
    """
    names = [str(c) for c in data_classes]
    if class_map is not None:
        from robustlens.data.imagenet import read_class_map

        index = read_class_map(class_map, names, list(model_classes) if model_classes else None)
    elif num_outputs == len(names):
        return model, names
    elif num_outputs == 1000:
        from robustlens.data.imagenet import map_to_imagenet

        try:
            index = map_to_imagenet(names)
        except LabelError as exc:
            raise LabelError(
                f"the model has 1000 outputs (ImageNet) and the data set {len(names)} classes, "
                f"which must be mapped onto them: {exc}. Or give --class-map FILE "
                "(Python: class_map=FILE)"
            ) from None
    else:
        raise LabelError(
            f"the model has {num_outputs} outputs but the data set has {len(names)} classes "
            f"({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}); give --class-map FILE "
            'mapping each data set class to a model output (JSON {"class": index}, or one '
            "'class index' line each; Python: class_map=FILE)"
        )
    mapped = ClassMapped(model, index, num_outputs=num_outputs)
    return mapped, names + (["(other)"] if mapped.has_other else [])
