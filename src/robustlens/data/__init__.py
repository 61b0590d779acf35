"""Data sets in robustlens' conventions: float32 images ``(N, C, H, W)`` in ``[0, 1]``, int64 labels.

``load(name, split=..., root=None)`` is the one entry point for the registered data sets, loaded in
memory as an :class:`ImageDataset`; ``names()`` lists them. A folder of images at real scale is
opened with :func:`open_folder` as an :class:`ImageFiles`, streamed from disk batch by batch
(:func:`batches`); every dataset-level operation takes either (see ``docs/data.md``).

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
from robustlens.data.cue_conflict import (
    SHAPE_SETS,
    CueConflict,
    ShapeSet,
    cue_conflict,
    load_shapes,
    shapes_dataset,
)
from robustlens.data.dataset import ImageDataset
from robustlens.data.digits import load_digits
from robustlens.data.files import ImageFiles, SkippedFile, open_folder
from robustlens.data.folder import load_folder
from robustlens.data.geirhos import (
    CATEGORIES_16,
    IMAGENET_16,
    CueConflictFiles,
    open_cue_conflict,
    parse_stimulus_name,
)
from robustlens.data.idx import read_idx, write_idx
from robustlens.data.imagenet import imagenet_names, imagenet_wnids, map_to_imagenet, read_class_map
from robustlens.data.mnist import load_idx_dataset
from robustlens.data.preprocess import Preprocessing
from robustlens.data.printed import load_printed_digits
from robustlens.data.resized import ResizedImages
from robustlens.data.spurious import PLANTED, PlantedCue, cue_test_sets, load_planted, plant_cue
from robustlens.data.stream import (
    Batch,
    ImageData,
    batches,
    fingerprint,
    in_memory,
    model_outputs,
    predict,
)
from robustlens.errors import ParameterError
from robustlens.registry import Registry

__all__ = [
    "CATEGORIES_16",
    "IMAGENET_16",
    "Batch",
    "CueConflict",
    "CueConflictFiles",
    "ImageData",
    "ImageDataset",
    "ImageFiles",
    "PlantedCue",
    "Preprocessing",
    "ResizedImages",
    "SkippedFile",
    "available",
    "batches",
    "cue_conflict",
    "cue_test_sets",
    "fingerprint",
    "imagenet_names",
    "imagenet_wnids",
    "in_memory",
    "load",
    "load_folder",
    "map_to_imagenet",
    "model_outputs",
    "names",
    "open_cue_conflict",
    "open_folder",
    "parse_stimulus_name",
    "plant_cue",
    "predict",
    "read_class_map",
    "read_idx",
    "shapes_dataset",
    "write_idx",
]

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
_register("printed-digits", lambda split, root, dl: load_printed_digits(split))


def _shapes_loader(kind: ShapeSet) -> Loader:
    return lambda split, root, dl: load_shapes(kind, split)


def _planted_loader(name: str, base: str) -> Loader:
    return lambda split, root, dl: load_planted(name, split, DATASETS.get(base)(split, root, dl))


# shapes-aligned, shapes-shape-only, shapes-texture-only, shapes-cue-conflict
for _kind in SHAPE_SETS:
    _register(f"shapes-{_kind}", _shapes_loader(_kind))
for _name, _planted in PLANTED.items():  # fashion-mnist-patch
    _register(_name, _planted_loader(_name, _planted[0]))


def names() -> list[str]:
    """Names accepted by :func:`load`."""
    return DATASETS.names()


def load(
    name: str, split: str = "test", root: str | Path | None = None, *, download: bool = True
) -> ImageDataset:
    """Load data set ``name`` (see :func:`names`) as an :class:`ImageDataset`.

    Args:
        name: ``"fashion-mnist"``, ``"mnist"``, ``"digits"``, ``"cifar10"`` or ``"folder"``; the
            synthetic ``"shapes-aligned"``, ``"shapes-shape-only"``, ``"shapes-texture-only"``,
            ``"shapes-cue-conflict"`` (:func:`shapes_dataset`); ``"fashion-mnist-patch"``
            (Fashion-MNIST with a corner-patch cue of strength 0.9, :func:`plant_cue`);
            ``"printed-digits"`` (digits typeset in the installed fonts, 28x28, see
            :mod:`robustlens.data.printed`).
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

    if name in PLANTED:
        return available(PLANTED[name][0])
    if name not in SOURCES:
        return name in ("digits", "printed-digits") or name.startswith("shapes-")
    try:
        find_idx_files(name, "test", download=False)
    except RobustLensError:
        return False
    return True
