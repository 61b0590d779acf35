"""scikit-learn's handwritten digits: 1797 greyscale images of 8x8, always available offline.

The split is fixed: a stratified shuffle with seed 0 puts 450 images (25%) in ``test`` and 1347 in
``train``, the same on every machine.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from robustlens.data.dataset import ImageDataset
from robustlens.errors import ParameterError

__all__ = ["TEST_SIZE", "load_digits"]

TEST_SIZE = 450


@functools.cache
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    train, test = train_test_split(
        np.arange(len(images)), test_size=TEST_SIZE, random_state=0, stratify=bunch.target
    )
    return images, bunch.target.astype(np.int64), np.sort(train), np.sort(test)


def load_digits(split: str = "test") -> ImageDataset:
    """The digits ``split`` (``"train"``, ``"test"`` or ``"all"``) with images ``(N, 1, 8, 8)``."""
    if split not in ("train", "test", "all"):
        raise ParameterError(f"digits: 'split' must be 'train', 'test' or 'all', got {split!r}")
    images, target, train, test = _split()
    idx = {"train": train, "test": test, "all": np.arange(len(images))}[split]
    x = torch.from_numpy(images[idx]).unsqueeze(1)
    y = torch.from_numpy(target[idx])
    return ImageDataset(x, y, classes=[str(i) for i in range(10)], name="digits")
