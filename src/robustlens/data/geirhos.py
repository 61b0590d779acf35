"""Geirhos et al.'s 16-category benchmark: its ImageNet class mapping and its cue-conflict stimuli.

Geirhos et al. (2019, "ImageNet-trained CNNs are biased towards texture; increasing shape bias
improves accuracy and robustness", ICLR) test people and ImageNet models on 16 entry-level
categories. An ImageNet model answers in its 1000 classes; each category stands for a handful of
them (a WordNet-derived list, published with their code: the ``texture-vs-shape`` repository and
the ``model-vs-human`` toolbox), and :data:`IMAGENET_16` holds those lists as ImageNet-1k indices
(the order of :func:`robustlens.data.imagenet_wnids`). 207 of the 1000 classes belong to one
category; the other 793 to none.

The cue-conflict stimuli are distributed as PNG files, a folder per **shape** category::

    texture-vs-shape/stimuli/style-transfer-preprocessed-512/
        airplane/airplane1-bicycle2.png      # shape: airplane (image 1), texture: bicycle (image 2)
        ...
        truck/truck9-oven1.png

1280 files, 80 per category, 1200 of whose shape and texture categories differ.
:func:`open_cue_conflict` lists them (nothing is decoded) as a :class:`CueConflictFiles`: an
:class:`~robustlens.data.ImageFiles` labelled by shape, whose images the model's
:class:`~robustlens.data.Preprocessing` brings to its input batch by batch, plus the texture
labels. :func:`robustlens.bias.shape_bias_imagenet` measures a model's shape bias on them.

Example:
    >>> len(CATEGORIES_16), CATEGORIES_16[:3]
    (16, ('airplane', 'bear', 'bicycle'))
    >>> IMAGENET_16["elephant"], sum(len(v) for v in IMAGENET_16.values())
    ((385, 386), 207)
    >>> parse_stimulus_name("cat7-elephant2.png")
    ('cat', 'elephant')
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, overload

import torch
from torch import Tensor

from robustlens.data.dataset import sample_indices
from robustlens.data.files import ImageFiles
from robustlens.data.preprocess import Preprocessing
from robustlens.errors import DataNotFoundError, LabelError, ParameterError
from robustlens.registry import closest

__all__ = [
    "CATEGORIES_16",
    "IMAGENET_16",
    "STIMULI_URL",
    "CueConflictFiles",
    "open_cue_conflict",
    "parse_stimulus_name",
]

# The published lists (category -> ImageNet-1k indices). Their gaps are the published ones: e.g.
# dogs skip 192 (cairn), 204 (Lhasa), 227 (kelpie); birds skip 9 (ostrich) and 17 (jay).
IMAGENET_16: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {
        "airplane": (404,),
        "bear": (294, 295, 296, 297),
        "bicycle": (444, 671),
        "bird": (
            8,
            *range(10, 17),
            *range(18, 21),
            *range(22, 25),
            *range(80, 84),
            *range(87, 97),
            *range(98, 101),
            *range(127, 134),
            *range(135, 146),
        ),
        "boat": (472, 554, 625, 814, 914),
        "bottle": (440, 720, 737, 898, 899, 901, 907),
        "car": (436, 511, 817),
        "cat": (281, 282, 283, 284, 285, 286),
        "chair": (423, 559, 765, 857),
        "clock": (409, 530, 892),
        "dog": (
            *range(152, 192),
            *range(193, 204),
            *range(205, 227),
            *range(228, 242),
            *range(243, 251),
            *range(252, 258),
            259,
            *range(261, 264),
            *range(265, 269),
        ),
        "elephant": (385, 386),
        "keyboard": (508, 878),
        "knife": (499,),
        "oven": (766,),
        "truck": (555, 569, 656, 675, 717, 734, 864, 867),
    }
)
"""ImageNet-1k indices of each of the 16 categories (Geirhos et al. 2019), category names sorted."""

CATEGORIES_16: tuple[str, ...] = tuple(IMAGENET_16)
"""The 16 categories in alphabetical order: the class order of every 16-category result."""

STIMULI_URL = "https://github.com/rgeirhos/texture-vs-shape"
"""Where the cue-conflict stimuli are published (folder ``stimuli/style-transfer-preprocessed-512``)."""

_STIMULI_PATH = ("stimuli", "style-transfer-preprocessed-512")
_NAME = re.compile(r"(?P<shape>[A-Za-z]+)(?P<i>\d+)-(?P<texture>[A-Za-z]+)(?P<j>\d+)")
_SUFFIXES = (".png", ".jpg", ".jpeg")
_HOW = (
    f"download them with 'git clone {STIMULI_URL}' and give the folder "
    f"texture-vs-shape/{'/'.join(_STIMULI_PATH)}"
)


def parse_stimulus_name(name: str) -> tuple[str, str]:
    """``(shape category, texture category)`` of a cue-conflict file name
    ``<shape><i>-<texture><j>.png``.

    Raises:
        LabelError: a name of another form, or a category outside :data:`CATEGORIES_16` (with
            the closest one).

    Example:
        >>> parse_stimulus_name("airplane10-bear3.png")
        ('airplane', 'bear')
        >>> parse_stimulus_name("airplane.png")
        Traceback (most recent call last):
        ...
        robustlens.errors.LabelError: cue-conflict stimuli: 'airplane.png' is not named ...
    """
    stem, suffix = os.path.splitext(name)
    match = _NAME.fullmatch(stem)
    if match is None or suffix.lower() not in _SUFFIXES:
        raise LabelError(
            f"cue-conflict stimuli: {name!r} is not named '<shape><i>-<texture><j>.png' (e.g. "
            "'cat7-elephant2.png', shape and texture among the 16 categories)"
        )
    shape, texture = match["shape"].lower(), match["texture"].lower()
    for category in (shape, texture):
        if category not in IMAGENET_16:
            hint = closest(category, list(CATEGORIES_16))
            raise LabelError(
                f"cue-conflict stimuli: {name!r} names category {category!r}, which is not one of "
                f"the 16 ({', '.join(CATEGORIES_16)})"
                + (f"; did you mean {hint!r}?" if hint else "")
            )
    return shape, texture


@dataclass(frozen=True, eq=False)
class CueConflictFiles:
    """Cue-conflict image files with their shape and texture categories (see the module doc).

    ``files`` is an :class:`~robustlens.data.ImageFiles` labelled by shape (``files.y``, indices
    into :data:`CATEGORIES_16`), decoded batch by batch through its preprocessing;
    ``texture_label`` is int64 ``(N,)`` in the same index. Slices, index tensors and boolean
    masks give a new ``CueConflictFiles`` (nothing is read).
    """

    files: ImageFiles
    texture_label: Tensor

    def __post_init__(self) -> None:
        t = torch.as_tensor(self.texture_label)
        if t.dtype != torch.int64 or t.shape != (len(self.files),):
            raise LabelError(
                f"CueConflictFiles: 'texture_label' must be int64 ({len(self.files)},), got "
                f"{t.dtype} {tuple(t.shape)}"
            )
        object.__setattr__(self, "texture_label", t.cpu())

    def __len__(self) -> int:
        return len(self.files)

    @property
    def classes(self) -> list[str]:
        return list(self.files.classes)

    @property
    def shape_label(self) -> Tensor:
        """int64 ``(N,)``: the category of each stimulus's shape (its folder)."""
        return self.files.y

    @property
    def conflicting(self) -> Tensor:
        """bool ``(N,)``: shape and texture categories differ (only those count)."""
        return self.files.y != self.texture_label

    @overload
    def __getitem__(self, index: int) -> tuple[Tensor, int]: ...
    @overload
    def __getitem__(self, index: slice | Tensor | Sequence[int]) -> CueConflictFiles: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and not isinstance(index, bool):
            return self.files[index]
        if isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        elif isinstance(index, Tensor | list | tuple | range):
            idx = torch.as_tensor(index)
            idx = idx.nonzero().flatten() if idx.dtype == torch.bool else idx.long().flatten()
        else:
            raise TypeError(
                f"CueConflictFiles indices are ints, slices, index tensors or boolean masks, got "
                f"{type(index).__name__}"
            )
        return CueConflictFiles(self.files[idx], self.texture_label[idx.cpu()])

    def subset(self, n: int, *, seed: int = 0) -> CueConflictFiles:
        """``n`` stimuli drawn without replacement (seeded), keeping the shape categories'
        proportions; all of them when ``n >= len(self)``. Reads no file."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ParameterError(f"CueConflictFiles.subset: 'n' must be an int >= 1, got {n!r}")
        if n >= len(self):
            return self
        return self[sample_indices(self.shape_label, len(CATEGORIES_16), n, seed=seed)]

    def __repr__(self) -> str:
        return (
            f"CueConflictFiles(n={len(self)}, conflicting={int(self.conflicting.sum())}, "
            f"root={self.files.root!r})"
        )


def _stimuli_folder(root: str | Path) -> Path:
    """``root`` itself, or the stimuli folder below it when ``root`` is the repository or its
    ``stimuli`` folder."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(f"cue-conflict stimuli: {folder} is not a directory; {_HOW}")
    for depth in (len(_STIMULI_PATH), 1):
        below = folder.joinpath(*_STIMULI_PATH[-depth:])
        if below.is_dir():
            return below
    return folder


def open_cue_conflict(
    root: str | Path,
    *,
    preprocessing: Preprocessing | None = None,
    workers: int = 0,
    strict: bool = False,
) -> CueConflictFiles:
    """List Geirhos et al.'s cue-conflict stimuli in ``root`` as a :class:`CueConflictFiles`.

    ``root`` holds one folder per shape category (any of the 16, each named exactly so), each
    holding files ``<shape><i>-<texture><j>.png`` whose shape is the folder's; the repository's
    root or its ``stimuli`` folder are accepted too. Hidden files are ignored; any other file is
    an error, so that a mislabelled stimulus never counts silently.

    Args:
        root: the folder (``texture-vs-shape/stimuli/style-transfer-preprocessed-512``).
        preprocessing: the model's input geometry (``rl.models.load(spec).preprocessing``);
            default: images at their own size (224x224 for the published stimuli), RGB.
        workers: ``DataLoader`` worker processes decoding images (0: the calling process).
        strict: raise at the first file that does not decode instead of skipping it.

    Raises:
        DataNotFoundError: no such folder, or no category folder in it.
        LabelError: a folder or file name that is not a category or not of the pattern, or a
            file whose shape is not its folder's.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("cat1-dog2.png", "cat2-cat1.png"):
        ...     (root / "cat").mkdir(exist_ok=True)
        ...     Image.new("RGB", (32, 32), "grey").save(root / "cat" / name)
        >>> stim = open_cue_conflict(root, preprocessing=Preprocessing(input_size=(16, 16)))
        >>> len(stim), stim.shape_label.tolist(), stim.texture_label.tolist()
        (2, [7, 7], [10, 7])
        >>> stim.conflicting.tolist(), stim[0][0].shape
        ([True, False], torch.Size([3, 16, 16]))
    """
    folder = _stimuli_folder(root)
    entries = sorted(e.name for e in os.scandir(folder) if not e.name.startswith("."))
    dirs = [d for d in entries if (folder / d).is_dir()]
    unknown = [d for d in dirs if d not in IMAGENET_16]
    if unknown:
        hint = closest(unknown[0], list(CATEGORIES_16))
        raise LabelError(
            f"cue-conflict stimuli: {folder} has folder(s) {unknown[:5]} that are not among the "
            f"16 categories ({', '.join(CATEGORIES_16)})"
            + (f"; did you mean {hint!r} for {unknown[0]!r}?" if hint else "")
        )
    if not dirs:
        raise DataNotFoundError(
            f"cue-conflict stimuli: {folder} holds no category folder (airplane/, bear/, ...); "
            f"{_HOW}"
        )
    index = {c: k for k, c in enumerate(CATEGORIES_16)}
    paths: list[str] = []
    shapes: list[int] = []
    textures: list[int] = []
    for category in dirs:
        sub = folder / category
        for name in sorted(e.name for e in os.scandir(sub) if not e.name.startswith(".")):
            if (sub / name).is_dir():
                raise LabelError(
                    f"cue-conflict stimuli: {sub / name} is a folder; each category folder "
                    "holds only the files '<shape><i>-<texture><j>.png'"
                )
            shape, texture = parse_stimulus_name(name)
            if shape != category:
                raise LabelError(
                    f"cue-conflict stimuli: {category}/{name} has shape {shape!r} in its name but "
                    f"lies in folder {category!r}; move it to {shape}/"
                )
            paths.append(str(sub / name))
            shapes.append(index[shape])
            textures.append(index[texture])
    if not paths:
        raise DataNotFoundError(f"cue-conflict stimuli: the category folders of {folder} are empty")
    files = ImageFiles(
        files=tuple(paths),
        y=torch.tensor(shapes, dtype=torch.int64),
        classes=list(CATEGORIES_16),
        name="cue-conflict",
        preprocessing=preprocessing or Preprocessing(),
        root=str(folder),
        workers=workers,
        strict=strict,
    )
    return CueConflictFiles(files, torch.tensor(textures, dtype=torch.int64))
