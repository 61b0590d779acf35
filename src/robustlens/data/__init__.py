"""Data sets in robustlens' conventions: float32 images ``(N, C, H, W)`` in ``[0, 1]``, int64 labels.

``load(name, split=..., root=None)`` is the one entry point; ``names()`` lists what it knows.

Example:
    >>> import robustlens as rl
    >>> ds = rl.data.load("digits", split="test")
    >>> ds.x.shape, ds.x.dtype, ds.y.dtype, len(ds.classes)
    (torch.Size([450, 1, 8, 8]), torch.float32, torch.int64, 10)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from robustlens.data.cifar import load_cifar10
from robustlens.data.dataset import ImageDataset
from robustlens.data.digits import load_digits
from robustlens.data.folder import load_folder
from robustlens.data.idx import read_idx, write_idx
from robustlens.data.mnist import load_idx_dataset
from robustlens.errors import ParameterError
from robustlens.registry import Registry

__all__ = ["ImageDataset", "available", "load", "load_folder", "names", "read_idx", "write_idx"]

Loader = Callable[[str, "str | Path | None", bool], ImageDataset]
DATASETS: Registry[Loader] = Registry("data set")


def _register(name: str, loader: Loader) -> None:
    DATASETS.register(name)(loader)


_register(
    "fashion-mnist", lambda split, root, dl: load_idx_dataset("fashion-mnist", split, root, dl)
)
_register("mnist", lambda split, root, dl: load_idx_dataset("mnist", split, root, dl))
_register("digits", lambda split, root, dl: load_digits(split))
_register("cifar10", lambda split, root, dl: load_cifar10(split, root))
_register("folder", lambda split, root, dl: load_folder(root))


def names() -> list[str]:
    """Names accepted by :func:`load`."""
    return DATASETS.names()


def load(
    name: str, split: str = "test", root: str | Path | None = None, *, download: bool = True
) -> ImageDataset:
    """Load data set ``name`` (see :func:`names`) as an :class:`ImageDataset`.

    Args:
        name: ``"fashion-mnist"``, ``"mnist"``, ``"digits"``, ``"cifar10"`` or ``"folder"``.
        split: ``"train"`` or ``"test"`` (``"digits"`` also takes ``"all"``; ``"folder"`` ignores it).
        root: a folder to look in first; required for ``"cifar10"`` and ``"folder"``.
        download: allow the official download for the MNIST family when nothing local is found.

    Raises:
        UnknownNameError: for a name not in :func:`names` (with the closest suggestion).
        DataNotFoundError: when the files are nowhere; the message lists where it looked.
        DataFileError: for corrupt, truncated or malformed files.
    """
    if not isinstance(split, str):
        raise ParameterError(f"load: 'split' must be a string such as 'test', got {split!r}")
    loader = DATASETS.get(name)
    return loader(split, root, download)


def available(name: str) -> bool:
    """Whether ``load(name)`` finds the test split locally, without downloading or decoding it."""
    from robustlens.data.mnist import SOURCES, find_idx_files
    from robustlens.errors import RobustLensError

    if name not in SOURCES:
        return name == "digits"
    try:
        find_idx_files(name, "test", download=False)
    except RobustLensError:
        return False
    return True
