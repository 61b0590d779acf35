"""``ImageFiles``: a data set of image files on disk, decoded batch by batch, never all at once.

:class:`~robustlens.data.ImageDataset` holds every image as one float32 tensor: right for
Fashion-MNIST (31 MB), impossible for ImageNet's 50,000 validation images (30 GB at 224x224).
An :class:`ImageFiles` holds only the file names and labels; its images are decoded and
preprocessed when a batch is asked for, in ``torch.utils.data.DataLoader`` worker processes
(:func:`robustlens.data.batches`), so memory is bounded by the batch, not by the data set.

Three layouts, as users have their folders (:func:`open_folder` picks one):

- **ImageFolder** (``root/<class>/<image>``, any image sizes, nested folders allowed): the files
  are listed by ``torchvision.datasets.folder.make_dataset``, as torchvision's ``ImageFolder``
  lists them (sorted, hidden files and unknown suffixes skipped); labels index the sorted
  sub-folder names, or ``classes`` when given.
- **ImageNet** (``val/<wnid>/<image>.JPEG``): the same listing, the sub-folders WordNet ids,
  labels the standard ImageNet-1k index (:func:`~robustlens.data.imagenet_wnids`; the index is
  the sorted WordNet ids, so a full validation folder gives the same labels either way, and a
  folder holding only some classes keeps their ImageNet indices).
- **A flat folder plus a labels file**: a CSV of ``path,label`` rows (a header is optional;
  paths relative to the folder; a label is a class name or an integer index), or Kaggle's
  ImageNet ``LOC_val_solution.csv`` (``ImageId,PredictionString``).

Every image is decoded with Pillow (EXIF orientation applied, as photos are shown) and brought
to the model's input by :meth:`Preprocessing.apply_to` (resize the shorter side, centre crop:
``torchvision.transforms.v2.functional``), exactly as :func:`~robustlens.data.load_folder` does,
so the streamed and the in-memory path see the same pixels.

A file that does not decode (truncated, not an image, missing) is skipped: it is recorded with
its error (:attr:`ImageFiles.skipped`) and left out of every result, never a crash after an hour
of work and never a silent gap. ``strict=True`` stops at the first such file instead.

Example:
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for cls, size in (("cat", (40, 30)), ("dog", (30, 50))):
    ...     (root / cls).mkdir()
    ...     Image.new("RGB", size, "red").save(root / cls / "a.png")
    >>> files = open_folder(root, preprocessing=Preprocessing(input_size=(24, 24), resize=28))
    >>> len(files), files.classes, files.shape, files.y.tolist()
    (2, ['cat', 'dog'], (3, 24, 24), [0, 1])
    >>> image, label = files[1]
    >>> image.shape, label
    (torch.Size([3, 24, 24]), 1)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import Tensor
from torch.utils.data import Dataset

from robustlens.data.dataset import sample_indices
from robustlens.data.folder import IMAGE_SUFFIXES, _list_files, _open, _to_tensor
from robustlens.data.preprocess import Preprocessing
from robustlens.errors import DataFileError, DataNotFoundError, LabelError, ParameterError

__all__ = ["ImageFiles", "Layout", "SkippedFile", "open_folder"]

Layout = Literal["auto", "imagefolder", "imagenet", "labels"]
LAYOUTS: tuple[str, ...] = ("auto", "imagefolder", "imagenet", "labels")

_WNID = re.compile(r"n\d{8}")
_INT = re.compile(r"[+-]?\d+")
_PATH_HEADERS = ("path", "file", "filename", "file_name", "image", "image_id", "imageid", "name")
_LABEL_HEADERS = ("label", "class", "target", "category", "y", "predictionstring", "wnid")


@dataclass(frozen=True)
class SkippedFile:
    """A file left out because it does not decode: its position in the data set it was read
    from, its path (relative to the data set's root) and why."""

    index: int
    path: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "path": self.path, "error": self.error}


class _SkipLog:
    """The unreadable files found so far (absolute path -> error), shared by an
    :class:`ImageFiles` and every view taken from it, so that a file found broken by one pass is
    listed once and not decoded again by the next."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"_SkipLog({len(self.errors)} files)"


@dataclass(frozen=True, eq=False)
class ImageFiles(Dataset[tuple[Tensor, int]]):
    """Image files with their labels, decoded and preprocessed on demand (see the module doc).

    Build one with :func:`open_folder` (or :meth:`from_folder`, :meth:`from_imagenet`,
    :meth:`from_labels`). It behaves like :class:`~robustlens.data.ImageDataset` where that makes
    sense without holding the images: ``len``, ``y``, ``classes``, ``name``, ``shape``,
    ``subset``, ``split``, slicing and index tensors (a view: nothing is read), and integer
    indexing (decodes that one image, a torch ``Dataset``). Every dataset-level operation of
    robustlens takes it where it takes an ``ImageDataset`` and reads it batch by batch.

    Args:
        files: absolute paths, one per image.
        y: int64 ``(N,)`` labels, indices into ``classes``.
        classes: the label space.
        name: the data set's name (results and report).
        preprocessing: the model's input geometry; :meth:`Preprocessing.apply_to` brings every
            decoded image to it (with ``input_size=None`` images keep their size and must share
            one).
        root: the folder paths are shown relative to.
        workers: ``DataLoader`` worker processes that decode (0: in the calling process).
        strict: stop at the first unreadable file (:class:`~robustlens.errors.DataFileError`)
            instead of skipping it.
    """

    files: tuple[str, ...]
    y: Tensor
    classes: list[str]
    name: str = "files"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    root: str = ""
    workers: int = 0
    strict: bool = False
    log: _SkipLog = field(default_factory=_SkipLog, repr=False)

    def __post_init__(self) -> None:
        where = f"ImageFiles {self.name!r}"
        y = torch.as_tensor(self.y)
        if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(self.files):
            raise LabelError(
                f"{where}: 'y' must be int64 (N,) with N = {len(self.files)} files, got "
                f"{y.dtype} {tuple(y.shape)}"
            )
        classes = [str(c) for c in self.classes]
        if len(set(classes)) != len(classes):
            raise LabelError(f"{where}: class names must be unique")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise LabelError(
                f"{where}: labels must lie in 0..{len(classes) - 1}, got "
                f"{int(y.min())}..{int(y.max())}"
            )
        if not isinstance(self.preprocessing, Preprocessing):
            raise ParameterError(
                f"{where}: 'preprocessing' must be a Preprocessing, got "
                f"{type(self.preprocessing).__name__}"
            )
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ParameterError(f"{where}: 'workers' must be an int >= 0, got {self.workers!r}")
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))
        object.__setattr__(self, "y", y.cpu())
        object.__setattr__(self, "classes", classes)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        *,
        preprocessing: Preprocessing | None = None,
        classes: Sequence[str] | None = None,
        name: str | None = None,
    ) -> ImageFiles:
        """``root/<class>/<image>`` (torchvision's ImageFolder layout); see :func:`open_folder`."""
        folder = _folder(root)
        names, samples = _list_files(folder, classes)
        return cls._of(folder, names, samples, preprocessing, name)

    @classmethod
    def _of(
        cls,
        folder: Path,
        names: list[str],
        samples: Sequence[tuple[str, int]],
        preprocessing: Preprocessing | None,
        name: str | None,
    ) -> ImageFiles:
        """The files listed under ``folder`` with their labels, as one :class:`ImageFiles`."""
        return cls(
            files=tuple(p for p, _ in samples),
            y=torch.tensor([label for _, label in samples], dtype=torch.int64),
            classes=names,
            name=name or folder.name,
            preprocessing=preprocessing or Preprocessing(),
            root=str(folder),
        )

    @classmethod
    def from_imagenet(
        cls,
        root: str | Path,
        *,
        split: str = "val",
        preprocessing: Preprocessing | None = None,
        name: str | None = None,
    ) -> ImageFiles:
        """ImageNet's layout, ``<root>/<wnid>/<image>.JPEG`` (or ``<root>/val/<wnid>/...``),
        labelled with the standard ImageNet-1k index; see :func:`open_folder`."""
        from robustlens.data.imagenet import imagenet_wnids

        folder = _folder(root)
        sub = {"test": "val", "val": "val", "validation": "val", "train": "train"}.get(split)
        if sub is None:
            raise ParameterError(
                f"imagenet: 'split' must be 'val' (or 'test') or 'train', got {split!r}"
            )
        if not _wnid_dirs(folder) and (folder / sub).is_dir():
            folder = folder / sub
        dirs = _subdirs(folder)
        wnids = imagenet_wnids()
        known = set(wnids)
        foreign = [d for d in dirs if d not in known]
        if not dirs or foreign:
            images = [f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES)]
            what = (
                f"sub-folder(s) {foreign[:5]} that are not ImageNet-1k WordNet ids"
                if foreign
                else "no sub-folders"
            )
            hint = (
                f" It holds {len(images)} images directly: the flat validation folder needs its "
                "labels file, open_folder(root, labels='LOC_val_solution.csv') (on the command "
                "line --labels FILE), or one sub-folder per WordNet id"
                if images
                else ""
            )
            raise LabelError(
                f"imagenet: {folder} has {what}; ImageNet's layout is <root>/<wnid>/<image> "
                f"(e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG).{hint}"
            )
        names, samples = _list_files(folder, wnids)
        return cls._of(folder, names, samples, preprocessing, name)

    @classmethod
    def from_labels(
        cls,
        labels: str | Path,
        *,
        root: str | Path | None = None,
        preprocessing: Preprocessing | None = None,
        classes: Sequence[str] | None = None,
        imagenet: bool = False,
        name: str | None = None,
    ) -> ImageFiles:
        """A folder of images plus a labels file; see :func:`open_folder`."""
        file = Path(labels)
        if not file.is_file():
            raise DataNotFoundError(
                f"labels: no labels file at {file}; give a CSV with one 'path,label' row per image"
            )
        folder = _folder(root) if root is not None else file.parent
        paths, raw = _read_labels(file, folder)
        if imagenet:
            from robustlens.data.imagenet import imagenet_wnids, map_to_imagenet

            if classes is not None:
                raise ParameterError("labels: pass 'classes' or imagenet=True, not both")
            names = imagenet_wnids()
            if all(isinstance(v, int) for v in raw):
                y = [int(v) for v in raw]
                bad = sorted({v for v in y if not 0 <= v < len(names)})
                if bad:
                    raise LabelError(
                        f"labels: {file} has ImageNet indices outside 0..999: {bad[:5]}"
                    )
            else:
                distinct = sorted({str(v) for v in raw})
                index = dict(zip(distinct, map_to_imagenet(distinct), strict=True))
                y = [index[str(v)] for v in raw]
        elif all(isinstance(v, int) for v in raw):
            y = [int(v) for v in raw]
            if min(y) < 0:
                raise LabelError(f"labels: {file} has a negative class index ({min(y)})")
            names = [str(c) for c in classes] if classes is not None else []
            if not names:
                names = [str(i) for i in range(max(y) + 1)]
            elif max(y) >= len(names):
                raise LabelError(
                    f"labels: {file} has class index {max(y)} but 'classes' names {len(names)}"
                )
        else:
            distinct = sorted({str(v) for v in raw})
            names = [str(c) for c in classes] if classes is not None else distinct
            unknown = [c for c in distinct if c not in set(names)]
            if unknown:
                raise LabelError(
                    f"labels: {file} has labels {unknown[:5]} that are not in 'classes' "
                    f"({len(names)} names, e.g. {names[:3]})"
                )
            index = {c: i for i, c in enumerate(names)}
            y = [index[str(v)] for v in raw]
        return cls(
            files=tuple(paths),
            y=torch.tensor(y, dtype=torch.int64),
            classes=names,
            name=name or folder.name,
            preprocessing=preprocessing or Preprocessing(),
            root=str(folder),
        )

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return len(self.files)

    @overload
    def __getitem__(self, index: int) -> tuple[Tensor, int]: ...
    @overload
    def __getitem__(self, index: slice | Tensor | Sequence[int]) -> ImageFiles: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and not isinstance(index, bool):
            i = index + len(self) if index < 0 else index
            if not 0 <= i < len(self):
                raise IndexError(f"index {index} is out of range for {len(self)} images")
            return self.decode(i), int(self.y[i])
        if isinstance(index, slice):
            return self._view(torch.arange(len(self))[index])
        if isinstance(index, Tensor | list | tuple | range):
            idx = torch.as_tensor(index)
            if idx.dtype == torch.bool:
                if idx.shape != (len(self),):
                    raise IndexError(
                        f"a boolean mask must have shape ({len(self)},), got {tuple(idx.shape)}"
                    )
                idx = idx.nonzero().flatten()
            return self._view(idx.long().cpu().flatten())
        raise TypeError(
            f"ImageFiles indices are ints, slices, index tensors or boolean masks, got "
            f"{type(index).__name__}"
        )

    def __repr__(self) -> str:
        c, h, w = self._declared_shape()
        shape = f"({c}, {h}, {w})" if h else f"({c}, own size)"
        return (
            f"ImageFiles(name={self.name!r}, n={len(self)}, shape={shape}, "
            f"classes={len(self.classes)}, root={self.root!r})"
        )

    def _view(self, idx: Tensor) -> ImageFiles:
        files = self.files
        return dataclasses.replace(self, files=tuple(files[i] for i in idx.tolist()), y=self.y[idx])

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _declared_shape(self) -> tuple[int, int, int]:
        c = self.preprocessing.channels
        if self.preprocessing.input_size is None:
            return c, 0, 0
        h, w = self.preprocessing.input_size
        return c, int(h), int(w)

    @cached_property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image: the preprocessing's, or the first readable image's when
        images keep their own size."""
        c, h, w = self._declared_shape()
        if h:
            return c, h, w
        for i in range(len(self)):
            image, _ = self.read(i)
            if image is not None:
                return int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
        raise DataFileError(f"ImageFiles {self.name!r}: none of its {len(self)} files decodes")

    def class_counts(self) -> Tensor:
        """Number of images per class, int64 ``(K,)``."""
        return torch.bincount(self.y, minlength=self.num_classes)

    def relative(self, i: int) -> str:
        """The path of image ``i`` relative to :attr:`root` (as results list it)."""
        path = self.files[i]
        if self.root:
            try:
                return os.path.relpath(path, self.root)
            except ValueError:  # another drive on Windows
                return path
        return path

    @property
    def skipped(self) -> list[SkippedFile]:
        """The files of this data set found unreadable so far, with their positions."""
        if not self.log.errors:
            return []
        out = []
        for i, path in enumerate(self.files):
            error = self.log.errors.get(path)
            if error is not None:
                out.append(SkippedFile(index=i, path=self.relative(i), error=error))
        return out

    # ------------------------------------------------------------------ reading
    def read(self, i: int) -> tuple[Tensor | None, str]:
        """Image ``i`` decoded and preprocessed, ``(image, "")``, or ``(None, error)`` for a file
        that does not decode (recorded in the skip log)."""
        path = self.files[i]
        known = self.log.errors.get(path)
        if known is not None:
            return None, known
        try:
            return _decode(path, self.preprocessing), ""
        except DataFileError as exc:
            self.log.errors[path] = str(exc)
            return None, str(exc)

    def decode(self, i: int) -> Tensor:
        """Image ``i`` as float32 ``(C, H, W)`` in ``[0, 1]``; raises DataFileError naming the file
        when it does not decode."""
        image, error = self.read(i)
        if image is None:
            raise DataFileError(error)
        return image

    # ------------------------------------------------------------------ derived sets
    def subset(self, n: int, *, seed: int = 0, stratified: bool = True) -> ImageFiles:
        """``n`` images drawn without replacement (seeded), keeping class proportions by default;
        the same draw as :meth:`ImageDataset.subset` on the same labels. Reads no file."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ParameterError(f"subset: 'n' must be an int >= 1, got {n!r}")
        if n >= len(self):
            return self
        return self._view(
            sample_indices(self.y, self.num_classes, n, seed=seed, stratified=stratified)
        )

    def split(self, fraction: float, *, seed: int = 0) -> tuple[ImageFiles, ImageFiles]:
        """Two disjoint parts, the first holding ``fraction`` of the images (seeded shuffle)."""
        if not 0 < fraction < 1:
            raise ParameterError(f"split: 'fraction' must lie in (0, 1), got {fraction!r}")
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        cut = round(fraction * len(self))
        return self._view(perm[:cut].sort().values), self._view(perm[cut:].sort().values)

    def with_options(self, *, workers: int | None = None, strict: bool | None = None) -> ImageFiles:
        """The same files read with other loading options (the skip log stays shared)."""
        return dataclasses.replace(
            self,
            workers=self.workers if workers is None else workers,
            strict=self.strict if strict is None else strict,
        )

    def with_classes(self, classes: Sequence[str]) -> ImageFiles:
        """The same files and labels under other class names (``len(classes) >= num_classes``)."""
        return dataclasses.replace(self, classes=list(classes))

    def with_preprocessing(self, preprocessing: Preprocessing) -> ImageFiles:
        """The same files brought to another input geometry."""
        return dataclasses.replace(self, preprocessing=preprocessing)

    def in_memory(self) -> Any:
        """Every readable image decoded into an :class:`~robustlens.data.ImageDataset` (for a
        small sample; unreadable files are left out and listed in :attr:`skipped`)."""
        from robustlens.data.stream import in_memory

        return in_memory(self)

    def fingerprint(self) -> str:
        """A short hash of what the images are: paths, file sizes, labels, classes and the input
        geometry (no pixel is read), for resuming a run on the same data."""
        h = hashlib.sha256()
        for i, path in enumerate(self.files):
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1
            h.update(f"{self.relative(i)}\0{size}\n".encode())
        h.update(self.y.numpy().tobytes())
        pre = self.preprocessing.to_dict()
        geometry = {k: pre[k] for k in ("input_size", "resize", "interpolation", "channels")}
        h.update(json.dumps([self.classes, geometry]).encode())
        return h.hexdigest()[:16]


# --------------------------------------------------------------------------- decoding


def _decode(path: str, pre: Preprocessing) -> Tensor:
    """The image at ``path`` through ``pre``: what :func:`load_folder` computes for it."""
    image = _open(path)
    pixels = _to_tensor(image, "L" if pre.channels == 1 else "RGB")
    del image
    return pre.apply_to(pixels.unsqueeze(0))[0]


# --------------------------------------------------------------------------- layouts


def _folder(root: str | Path | None) -> Path:
    if root is None:
        raise DataNotFoundError("folder: give the folder that holds the images")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(f"folder: {folder} is not a directory")
    return folder


def _subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _wnid_dirs(folder: Path) -> bool:
    dirs = _subdirs(folder)
    return bool(dirs) and all(_WNID.fullmatch(d) for d in dirs)


def _resolve_path(entry: str, folder: Path) -> str:
    """Absolute path of a labels-file entry: relative to ``folder``; an entry without an image
    suffix (Kaggle's ``ImageId``) gets the first of ``.JPEG``, ``.jpg``, ``.png`` that exists."""
    path = Path(entry).expanduser()
    if not path.is_absolute():
        path = folder / path
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        for suffix in (".JPEG", ".jpg", ".jpeg", ".png"):
            candidate = path.with_name(path.name + suffix)
            if candidate.is_file():
                return str(candidate)
    return str(path)


def _read_labels(file: Path, folder: Path) -> tuple[list[str], list[str | int]]:
    """``(absolute paths, labels)`` from a labels CSV (see :func:`open_folder`)."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"labels: cannot read {file} as UTF-8 text ({exc})") from exc
    rows = [
        (number, row)
        for number, row in enumerate(csv.reader(text.splitlines()), start=1)
        if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")
    ]
    if not rows:
        raise DataFileError(f"labels: {file} holds no rows; write one 'path,label' row per image")
    path_col, label_col, first_token = 0, 1, False
    header = [c.strip().lower() for c in rows[0][1]]
    if (header and header[0] in _PATH_HEADERS) or any(h in _LABEL_HEADERS for h in header[1:]):
        path_col = next((i for i, h in enumerate(header) if h in _PATH_HEADERS), 0)
        label_col = next(
            (i for i, h in enumerate(header) if h in _LABEL_HEADERS and i != path_col),
            1 if path_col == 0 else 0,
        )
        first_token = header[label_col] == "predictionstring"
        rows = rows[1:]
    paths: list[str] = []
    labels: list[str | int] = []
    seen: dict[str, int] = {}
    for number, row in rows:
        if len(row) <= max(path_col, label_col):
            raise DataFileError(
                f"labels: line {number} of {file} is {','.join(row)!r}; each row must be "
                "'path,label'"
            )
        entry = row[path_col].strip()
        value = row[label_col].strip()
        if first_token:  # Kaggle's "n01751748 161 174 325 294 ..." (wnid and boxes)
            value = value.split()[0] if value.split() else ""
        if not entry or not value:
            raise DataFileError(
                f"labels: line {number} of {file} has an empty path or label: {','.join(row)!r}"
            )
        if entry in seen:
            raise DataFileError(
                f"labels: {file} lists {entry!r} twice (lines {seen[entry]} and {number}); keep one"
            )
        seen[entry] = number
        paths.append(_resolve_path(entry, folder))
        labels.append(value)
    if all(isinstance(v, str) and _INT.fullmatch(v) for v in labels):
        labels = [int(v) for v in labels]
    return paths, labels


def open_folder(
    root: str | Path | None,
    *,
    labels: str | Path | None = None,
    layout: Layout = "auto",
    split: str = "val",
    preprocessing: Preprocessing | None = None,
    classes: Sequence[str] | None = None,
    workers: int = 0,
    strict: bool = False,
    name: str | None = None,
) -> ImageFiles:
    """Open a folder of images as an :class:`ImageFiles`: listed now, decoded batch by batch later.

    Args:
        root: the folder. For ``labels``, paths in the file are relative to it (default: the
            labels file's folder).
        labels: a CSV of ``path,label`` rows for a flat folder (header optional: ``path`` /
            ``file`` / ``image`` and ``label`` / ``class`` columns are recognised; Kaggle's
            ``ImageId,PredictionString`` reads the WordNet id first in the prediction string).
            Labels that are all integers are class indices (classes ``"0"``, ``"1"``, ... unless
            ``classes`` names them); otherwise class names, the classes their sorted set unless
            ``classes`` gives the label space.
        layout: ``"imagefolder"`` (``root/<class>/<image>``), ``"imagenet"`` (``root/<wnid>/...``
            or ``root/val/<wnid>/...``, labels the ImageNet-1k index; with ``labels``, the labels
            are WordNet ids, ImageNet class names or indices), ``"labels"`` (needs ``labels``) or
            ``"auto"``: ``"labels"`` when a labels file is given, else ``"imagefolder"``.
        split: for ``"imagenet"``, which sub-folder of ``root`` when it holds ``val/`` and
            ``train/`` (``"val"``/``"test"`` or ``"train"``).
        preprocessing: the model's input geometry (``rl.models.load(spec).preprocessing``, or
            ``Preprocessing(input_size=(224, 224), resize=256)``); default: images at their own
            size, RGB.
        classes: the label space of an ImageFolder or a labels file (see
            :func:`~robustlens.data.load_folder`).
        workers: ``DataLoader`` worker processes decoding images (0: the calling process).
        strict: raise at the first unreadable file instead of skipping it.
        name: the data set's name (default: the folder's name).

    Raises:
        DataNotFoundError: a missing folder or labels file, or a folder without images.
        DataFileError: a malformed labels file.
        LabelError: sub-folders outside ``classes`` or outside ImageNet-1k, unknown labels.
        ParameterError: contradicting arguments.
    """
    if layout not in LAYOUTS:
        raise ParameterError(
            f"open_folder: 'layout' must be one of {', '.join(LAYOUTS)}, got {layout!r}"
        )
    if layout == "labels" and labels is None:
        raise ParameterError("open_folder: layout='labels' needs labels=FILE (a 'path,label' CSV)")
    if labels is not None and layout == "imagefolder":
        raise ParameterError(
            "open_folder: a labels file replaces the class sub-folders; drop layout='imagefolder'"
        )
    files: ImageFiles
    if labels is not None:
        files = ImageFiles.from_labels(
            labels,
            root=root,
            preprocessing=preprocessing,
            classes=classes,
            imagenet=layout == "imagenet",
            name=name,
        )
    elif layout == "imagenet":
        if classes is not None:
            raise ParameterError("open_folder: layout='imagenet' fixes the classes; drop 'classes'")
        files = ImageFiles.from_imagenet(
            _folder(root), split=split, preprocessing=preprocessing, name=name
        )
    else:
        files = ImageFiles.from_folder(
            _folder(root), preprocessing=preprocessing, classes=classes, name=name
        )
    return files.with_options(workers=workers, strict=strict)
