"""Images from a folder with one sub-folder per class (``root/<class>/<image>``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from robustlens.data.dataset import ImageDataset
from robustlens.errors import DataFileError, DataNotFoundError, ParameterError

__all__ = ["IMAGE_SUFFIXES", "load_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def load_folder(
    root: str | Path | None,
    *,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    name: str | None = None,
) -> ImageDataset:
    """Load every image under ``root/<class>/``; classes are the sub-folder names, sorted.

    All images must share one size unless ``size=(H, W)`` is given (then each is resized with
    bilinear filtering). ``mode`` is ``"L"`` (greyscale) or ``"RGB"``; by default RGB unless every
    image is greyscale.
    """
    if root is None:
        raise DataNotFoundError("folder: root=... must name a folder with one sub-folder per class")
    folder = Path(root)
    if not folder.is_dir():
        raise DataNotFoundError(f"folder: {folder} is not a directory")
    if mode not in (None, "L", "RGB"):
        raise ParameterError(f"folder: 'mode' must be 'L', 'RGB' or None, got {mode!r}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataNotFoundError(
            f"folder: {folder} has no sub-folders; put each class's images in root/<class name>/"
        )
    files: list[tuple[Path, int]] = []
    for k, cls in enumerate(classes):
        for p in sorted((folder / cls).rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                files.append((p, k))
    if not files:
        raise DataNotFoundError(f"folder: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    images: list[Image.Image] = []
    for path, _ in files:
        try:
            with Image.open(path) as opened:
                opened.load()
                images.append(opened.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise DataFileError(
                f"folder: cannot decode {path} ({exc}); remove or replace it"
            ) from exc
    if mode is None:
        mode = "L" if all(im.mode in ("L", "1", "I;16", "I") for im in images) else "RGB"
    arrays: list[np.ndarray] = []
    for (path, _), raw in zip(files, images, strict=True):
        converted = raw.convert(mode)
        if size is not None:
            converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(converted, dtype=np.uint8)
        if arrays and arr.shape != arrays[0].shape:
            raise DataFileError(
                f"folder: {path} is {arr.shape[:2]} but {files[0][0]} is {arrays[0].shape[:2]}; "
                "pass size=(H, W) to resize every image"
            )
        arrays.append(arr)
    stack = np.stack(arrays)
    x = torch.from_numpy(stack).float().div_(255.0)
    x = x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([k for _, k in files], dtype=torch.int64)
    return ImageDataset(x, y, classes=classes, name=name or folder.name)
