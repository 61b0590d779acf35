"""Images from a folder with one sub-folder per class (``root/<class>/<image>``), any sizes.

The layout is torchvision's ``ImageFolder``, and so are the building blocks: the files are listed
with ``torchvision.datasets.folder.make_dataset`` (sorted, nested folders walked, filtered by
``has_file_allowed_extension``), decoded with Pillow (as torchvision's ``pil_loader`` does, so
every format Pillow reads works, and the EXIF orientation is applied so photos stand upright), and
brought to one size by :class:`~robustlens.data.preprocess.Preprocessing`, whose resize and centre
crop are ``torchvision.transforms.v2.functional``'s.

Images are decoded one at a time into one preallocated float32 tensor, so memory holds the result
plus a single decoded image, never a list of every image.

Example:
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for cls, size in (("cat", (40, 30)), ("dog", (30, 50))):
    ...     (root / cls).mkdir()
    ...     Image.new("RGB", size, "red").save(root / cls / "a.png")
    >>> ds = load_folder(root, preprocessing=Preprocessing(input_size=(24, 24), resize=28))
    >>> ds.x.shape, ds.classes, ds.y.tolist()
    (torch.Size([2, 3, 24, 24]), ['cat', 'dog'], [0, 1])
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from robustlens.data.dataset import ImageDataset
from robustlens.data.preprocess import Preprocessing
from robustlens.errors import DataFileError, DataNotFoundError, LabelError, ParameterError

__all__ = ["IMAGE_SUFFIXES", "load_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GREY_MODES = ("L", "1", "I;16", "I;16B", "I;16L", "I", "F")
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


def _list_files(
    folder: Path, classes: Sequence[str] | None
) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and ``(path, label)`` pairs, via torchvision's ``make_dataset``."""
    from torchvision.datasets.folder import has_file_allowed_extension, make_dataset

    found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise DataNotFoundError(
            f"folder: {folder} has no sub-folders; put each class's images in root/<class name>/, "
            "or give a labels file with one 'path,label' row per image (Python: "
            "rl.data.open_folder(root, labels=FILE); command line: --labels FILE.csv)"
        )
    if classes is None:
        names = found
    else:
        names = [str(c) for c in classes]
        if len(set(names)) != len(names):
            raise LabelError("folder: 'classes' must not repeat a name")
        unknown = [f for f in found if f not in set(names)]
        if unknown:
            raise LabelError(
                f"folder: sub-folder(s) {unknown[:5]} of {folder} are not in 'classes' "
                f"({len(names)} names, e.g. {names[:3]}); rename them or pass classes=None to "
                "use the sub-folder names"
            )
    index = {c: i for i, c in enumerate(names)}

    def is_image(path: str) -> bool:
        name = os.path.basename(path)
        return not name.startswith(".") and has_file_allowed_extension(name, IMAGE_SUFFIXES)

    samples = make_dataset(
        str(folder), {c: index[c] for c in found}, is_valid_file=is_image, allow_empty=True
    )
    if not samples:
        raise DataNotFoundError(f"folder: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return names, samples


def _open(path: str) -> Image.Image:
    """The decoded image at ``path`` (EXIF orientation applied), or DataFileError naming it."""
    try:
        with Image.open(path) as opened:
            opened.load()
            try:
                return ImageOps.exif_transpose(opened)
            except _DECODE_ERRORS:  # malformed EXIF: the pixels are fine, keep them as stored
                return opened.copy()
    except _DECODE_ERRORS as exc:
        raise DataFileError(f"folder: cannot decode {path} ({exc}); remove or replace it") from exc


def _header_mode(path: str) -> str:
    """The colour mode of ``path`` from its header alone (no pixel decoding)."""
    try:
        with Image.open(path) as opened:
            return str(opened.mode)
    except _DECODE_ERRORS as exc:
        raise DataFileError(f"folder: cannot decode {path} ({exc}); remove or replace it") from exc


def _to_tensor(image: Image.Image, mode: str) -> Tensor:
    """uint8 ``(C, h, w)`` of ``image`` converted to ``mode`` (``"L"`` or ``"RGB"``)."""
    t = torch.from_numpy(np.array(image.convert(mode), dtype=np.uint8))
    return t.unsqueeze(0) if mode == "L" else t.permute(2, 0, 1)


def _size_error(path: str, hw: tuple[int, int], first: str, first_hw: tuple[int, int]) -> str:
    return (
        f"folder: {path} is {hw[0]}x{hw[1]} (HxW) but {first} is {first_hw[0]}x{first_hw[1]}; "
        "images of different sizes need a common input geometry: in Python pass "
        "preprocessing=Preprocessing(input_size=(H, W), resize=R) (resize the shorter side to R, "
        "then centre-crop HxW, e.g. input_size=(224, 224), resize=256), or pass size=(H, W) to "
        "squash every image to HxW; on the command line pass --input-size H --resize R"
    )


def load_folder(
    root: str | Path | None,
    *,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    name: str | None = None,
    preprocessing: Preprocessing | None = None,
    classes: Sequence[str] | None = None,
) -> ImageDataset:
    """Load every image under ``root/<class>/`` as an in-memory :class:`ImageDataset`.

    Three ways to one size:

    - ``preprocessing``: each image is converted to ``preprocessing.channels`` and passed through
      :meth:`Preprocessing.apply_to` (resize the shorter side to ``resize``, centre-crop
      ``input_size``: a model's evaluation transform), so images of any sizes load. With
      ``input_size=None`` images keep their size and must share one.
    - ``size=(H, W)``: each image is squashed to ``H x W`` with Pillow's bilinear filter
      (aspect ratio not kept).
    - neither: every image must already have the same size.

    Args:
        root: the folder holding one sub-folder per class (hidden ones skipped); images may sit in
            nested folders below a class folder. Suffixes: :data:`IMAGE_SUFFIXES`.
        size: ``(H, W)`` to squash every image to; not with ``preprocessing``.
        mode: ``"L"`` (greyscale) or ``"RGB"``; by default RGB unless every image is greyscale.
            With ``preprocessing`` its ``channels`` decide (a contradicting ``mode`` is an error).
        name: the data set's name (default: the folder's name).
        preprocessing: the model's input geometry (see above).
        classes: the label space, when it is not the sorted sub-folder names (for example
            :func:`~robustlens.data.imagenet.imagenet_wnids` for an ImageNet model): labels index
            into it, and every sub-folder must be one of its names.

    Returns:
        :class:`ImageDataset` with ``x`` float32 ``(N, C, H, W)`` in ``[0, 1]``, ``y`` int64 and
        ``classes`` the sorted sub-folder names (or ``classes``). Files are in sorted order.

    Raises:
        DataNotFoundError: ``root`` missing, without sub-folders, or without images.
        DataFileError: a file that does not decode (named), or sizes that differ with no way to
            one size (the message says how to fix it).
        LabelError: a sub-folder that is not in ``classes``.
        ParameterError: contradicting arguments.
    """
    if root is None:
        raise DataNotFoundError("folder: root=... must name a folder with one sub-folder per class")
    folder = Path(root)
    if not folder.is_dir():
        raise DataNotFoundError(f"folder: {folder} is not a directory")
    if mode not in (None, "L", "RGB"):
        raise ParameterError(f"folder: 'mode' must be 'L', 'RGB' or None, got {mode!r}")
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise ParameterError(
            f"folder: 'preprocessing' must be a Preprocessing, got {type(preprocessing).__name__}"
        )
    if size is not None:
        if (
            not isinstance(size, tuple | list)
            or len(size) != 2
            or not all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in size)
        ):
            raise ParameterError(f"folder: 'size' must be (H, W) with ints >= 1, got {size!r}")
        if preprocessing is not None:
            raise ParameterError(
                "folder: pass 'size' (squash) or 'preprocessing' (resize and centre crop), not both"
            )
        size = (int(size[0]), int(size[1]))
    if preprocessing is not None:
        wanted = "L" if preprocessing.channels == 1 else "RGB"
        if mode is not None and mode != wanted:
            raise ParameterError(
                f"folder: mode={mode!r} contradicts preprocessing.channels="
                f"{preprocessing.channels}; drop 'mode'"
            )
        mode = wanted
    names, samples = _list_files(folder, classes)
    if mode is None:
        mode = "L" if all(_header_mode(p) in _GREY_MODES for p, _ in samples) else "RGB"
    channels = 1 if mode == "L" else 3

    x: Tensor | None = None
    if preprocessing is not None and preprocessing.input_size is not None:
        h, w = preprocessing.input_size
        x = torch.empty(len(samples), channels, int(h), int(w))
    elif size is not None:
        x = torch.empty(len(samples), channels, *size)
    first = ""
    for i, (path, _) in enumerate(samples):
        image = _open(path)
        if size is not None:
            image = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        pixels = _to_tensor(image, mode)
        del image
        if preprocessing is not None:
            out = preprocessing.apply_to(pixels.unsqueeze(0))[0]
        else:
            out = pixels.float().div_(255.0)
        if x is None:
            x = torch.empty(len(samples), *out.shape)
            first = path
        elif out.shape != x.shape[1:]:
            hw = (int(out.shape[-2]), int(out.shape[-1]))
            raise DataFileError(_size_error(path, hw, first, (int(x.shape[-2]), int(x.shape[-1]))))
        x[i] = out
    assert x is not None  # samples is never empty
    y = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return ImageDataset(x, y, classes=names, name=name or folder.name)
