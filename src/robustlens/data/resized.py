"""``ResizedImages``: an in-memory data set brought to a model's input geometry batch by batch.

A CIFAR-10 model fine-tuned at 224x224 audited on CIFAR-10's test set needs every 32x32 image
resized to 224x224 RGB: 10,000 such images are 6 GB of float32, where the set itself is 123 MB.
:class:`ResizedImages` keeps the images at their own size and resizes each batch when it is read
(in the ``DataLoader`` workers of :func:`robustlens.data.batches`, like decoded files), so memory
is bounded by the batch. It is an :class:`~robustlens.data.ImageFiles` whose "files" are rows of a
tensor: every dataset-level operation that streams image files streams it, with the same
subsets, splits and per-image keys.

Example:
    >>> import torch
    >>> from robustlens.data import ImageDataset, Preprocessing
    >>> ds = ImageDataset(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), name="tiny")
    >>> big = ResizedImages.of(ds, Preprocessing(input_size=(16, 16), channels=3))
    >>> len(big), big.shape, big[2][0].shape, big.relative(2)
    (4, (3, 16, 16), torch.Size([3, 16, 16]), 'tiny[2]')
    >>> big.subset(2, seed=0).rows.tolist()
    [0, 1]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import torch
from torch import Tensor

from robustlens.data.dataset import ImageDataset
from robustlens.data.files import ImageFiles
from robustlens.data.preprocess import Preprocessing
from robustlens.errors import ShapeError

__all__ = ["ResizedImages"]


@dataclass(frozen=True, eq=False)
class ResizedImages(ImageFiles):
    """The images of an :class:`~robustlens.data.ImageDataset` (``pixels``, float32
    ``(M, C, h, w)`` in ``[0, 1]``, kept as they are), entry ``i`` being ``pixels[rows[i]]`` brought
    to ``preprocessing``'s geometry when read. Build one with :meth:`of`."""

    pixels: Tensor = field(default_factory=lambda: torch.empty(0, 1, 1, 1), repr=False)
    rows: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pixels.ndim != 4 or self.rows.shape != (len(self.files),):
            raise ShapeError(
                f"ResizedImages {self.name!r}: 'pixels' must be (M, C, h, w) and 'rows' "
                f"({len(self.files)},), got {tuple(self.pixels.shape)} and {tuple(self.rows.shape)}"
            )

    @classmethod
    def of(
        cls, ds: ImageDataset, preprocessing: Preprocessing, *, workers: int = 0
    ) -> ResizedImages:
        """``ds`` read through ``preprocessing`` (its geometry: size, crop, channels) batch by
        batch."""
        rows = torch.arange(len(ds))
        return cls(
            files=tuple(f"{ds.name}[{i}]" for i in range(len(ds))),
            y=ds.y.cpu(),
            classes=list(ds.classes),
            name=ds.name,
            preprocessing=preprocessing,
            workers=workers,
            pixels=ds.x.detach().cpu(),
            rows=rows,
        )

    def _view(self, idx: Tensor) -> ResizedImages:
        return dataclasses.replace(
            self,
            files=tuple(self.files[i] for i in idx.tolist()),
            y=self.y[idx],
            rows=self.rows[idx],
        )

    def relative(self, i: int) -> str:
        return self.files[i]

    def read(self, i: int) -> tuple[Tensor | None, str]:
        """Entry ``i`` in the model's geometry, ``(image, "")`` (a tensor always reads)."""
        return self.preprocessing.apply_to(self.pixels[int(self.rows[i])].unsqueeze(0))[0], ""

    def fingerprint(self) -> str:
        """A short hash of the entries' pixels, labels, classes and the input geometry."""
        h = hashlib.sha256()
        h.update(self.pixels[self.rows].contiguous().numpy().tobytes())
        h.update(self.y.numpy().tobytes())
        pre = self.preprocessing.to_dict()
        geometry = {k: pre[k] for k in ("input_size", "resize", "interpolation", "channels")}
        h.update(json.dumps([self.classes, geometry]).encode())
        return h.hexdigest()[:16]
