"""``ImageDataset``: images and labels in robustlens' conventions, usable as a torch ``Dataset``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import torch
from torch import Tensor
from torch.utils.data import Dataset

from robustlens._checks import check_images, check_labels
from robustlens.errors import LabelError, ParameterError

__all__ = ["ImageDataset", "sample_indices"]


def sample_indices(
    y: Tensor, num_classes: int, n: int, *, seed: int = 0, stratified: bool = True
) -> Tensor:
    """Sorted indices of ``n`` of the ``len(y)`` images, drawn without replacement (seeded).

    With ``stratified`` the draw keeps the class proportions: a seeded permutation is reordered
    round-robin over the classes, so that any prefix of it is near-balanced, and its first ``n``
    are taken. Only the labels are read: for files on disk, only the chosen ones are ever decoded.

    Example:
        >>> import torch
        >>> sample_indices(torch.tensor([0, 0, 0, 0, 1, 1]), 2, 4, seed=0).tolist()
        [2, 3, 4, 5]
    """
    if n >= len(y):
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    if stratified:
        labels = y.cpu()[perm]
        rank = torch.zeros_like(labels)
        for k in range(num_classes):  # K classes, not samples
            mask = labels == k
            rank[mask] = torch.arange(int(mask.sum()))
        perm = perm[torch.argsort(rank * num_classes + labels, stable=True)]
    return perm[:n].sort().values


@dataclass(frozen=True, eq=False)
class ImageDataset(Dataset[tuple[Tensor, Tensor]]):
    """Images ``x`` float32 ``(N, C, H, W)`` in ``[0, 1]`` with labels ``y`` int64 ``(N,)``.

    ``classes[k]`` names class ``k``. Integer indexing gives an ``(image, label)`` pair, as a torch
    ``Dataset`` does; slices, index tensors and boolean masks give a new ``ImageDataset``.

    Example:
        >>> import torch
        >>> ds = ImageDataset(torch.zeros(6, 1, 4, 5), torch.tensor([0, 1, 2, 0, 1, 2]),
        ...                   classes=["a", "b", "c"], name="toy")
        >>> len(ds), ds[:2].x.shape, ds[1][1].item()
        (6, torch.Size([2, 1, 4, 5]), 1)
        >>> ds.class_counts().tolist()
        [2, 2, 2]
    """

    x: Tensor
    y: Tensor
    classes: list[str] = field(default_factory=list)
    name: str = "dataset"

    def __post_init__(self) -> None:
        where = f"ImageDataset {self.name!r}"
        check_images(self.x, where=where)
        if not self.classes:
            k = int(self.y.max()) + 1 if isinstance(self.y, Tensor) and self.y.numel() else 0
            object.__setattr__(self, "classes", [str(i) for i in range(k)])
        y = check_labels(self.y, len(self.x), num_classes=len(self.classes), where=where)
        if self.x.dtype != torch.float32:
            object.__setattr__(self, "x", self.x.float())
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "classes", [str(c) for c in self.classes])
        if len(set(self.classes)) != len(self.classes):
            raise LabelError(f"{where}: class names must be unique, got {self.classes}")

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return int(self.x.shape[0])

    @overload
    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]: ...
    @overload
    def __getitem__(self, index: slice | Tensor | Sequence[int]) -> ImageDataset: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int):
            return self.x[index], self.y[index]
        if isinstance(index, slice | Tensor | list | tuple | range):
            idx = torch.as_tensor(index) if not isinstance(index, slice) else index
            return ImageDataset(
                self.x[idx], self.y[idx], classes=list(self.classes), name=self.name
            )
        raise TypeError(
            f"ImageDataset indices are ints, slices, index tensors or boolean masks, got "
            f"{type(index).__name__}"
        )

    def __repr__(self) -> str:
        n, c, h, w = self.x.shape
        return f"ImageDataset(name={self.name!r}, n={n}, shape=({c}, {h}, {w}), classes={len(self.classes)})"

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        _, c, h, w = self.x.shape
        return int(c), int(h), int(w)

    def class_counts(self) -> Tensor:
        """Number of images per class, int64 ``(K,)``."""
        return torch.bincount(self.y, minlength=self.num_classes)

    # ------------------------------------------------------------------ derived sets
    def to(self, device: torch.device | str) -> ImageDataset:
        """The same data on ``device``."""
        return ImageDataset(
            self.x.to(device), self.y.to(device), classes=list(self.classes), name=self.name
        )

    def subset(self, n: int, *, seed: int = 0, stratified: bool = True) -> ImageDataset:
        """``n`` images drawn without replacement (seeded), keeping class proportions by default."""
        if not isinstance(n, int) or n < 1:
            raise ParameterError(f"subset: 'n' must be an int >= 1, got {n!r}")
        if n >= len(self):
            return self
        idx = sample_indices(self.y, self.num_classes, n, seed=seed, stratified=stratified)
        return self[idx.to(self.x.device)]

    def with_classes(self, classes: Sequence[str]) -> ImageDataset:
        """The same images and labels under other class names (``len(classes) >= num_classes``)."""
        return ImageDataset(self.x, self.y, classes=list(classes), name=self.name)

    def split(self, fraction: float, *, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """Two disjoint parts, the first holding ``fraction`` of the images (seeded shuffle)."""
        if not 0 < fraction < 1:
            raise ParameterError(f"split: 'fraction' must lie in (0, 1), got {fraction!r}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self), generator=g).to(self.x.device)
        cut = round(fraction * len(self))
        return self[perm[:cut].sort().values], self[perm[cut:].sort().values]
