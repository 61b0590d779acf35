"""Pixels beside the results: images and label maps as PNG files, named in the JSON by path.

The audit's ``results.json`` holds numbers only. A section that shows pictures (the white-box
gallery, the explained images with their superpixel segments, the superpixel examples with their
top-superpixel masks, the ambiguous images) puts them in its dict as tensors; the writer that
stores the section (:func:`save_images`, called by ``run_suite`` when it has an output folder)
writes each tensor to a PNG file under ``DIR/images/SECTION/`` and puts the file's path, relative
to ``DIR``, in its place::

    "gallery": [{"index": 3, ..., "x": "images/whitebox/gallery-0-x.png",
                 "x_adv": "images/whitebox/gallery-0-x-adv.png"}, ...]

Without an output folder (``run_suite(model, ds)`` from Python) the tensors stay in the dicts.
The report reads the files back when it renders (:func:`load_images`, with the folder of
``results.json`` as ``root``) and still embeds every figure in the page.

Two kinds of tensors, told apart by dtype, each stored as exactly as its use needs:

- an **image**: float ``(C, H, W)`` in ``[0, 1]`` with ``C`` in {1, 3} -> an 8-bit grey or RGB
  PNG, each value rounded to the nearest multiple of 1/255 (error at most 1/510: what a screen
  shows; the images of 8-bit data sets, such as Fashion-MNIST, CIFAR or a folder of photos, come
  back exactly).
  Read back as float32 ``(C, H, W)`` in ``[0, 1]``.
- a **label map**: integer or bool ``(H, W)`` with values in ``0..65535`` (superpixel segments,
  0/1 masks) -> a 16-bit grey PNG, exact. Read back as int64 ``(H, W)``.

Example:
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> x = torch.rand(3, 5, 7)
    >>> section = {"gallery": [{"index": 0, "x": x, "mask": torch.ones(5, 7, dtype=torch.bool)}]}
    >>> written = save_images(section, out, "whitebox")
    >>> written["gallery"][0]["x"], written["gallery"][0]["mask"]
    ('images/whitebox/gallery-0-x.png', 'images/whitebox/gallery-0-mask.png')
    >>> back = load_images(written, out)["gallery"][0]
    >>> back["x"].shape, bool((back["x"] - x).abs().max() <= 0.5 / 255), back["mask"].sum().item()
    (torch.Size([3, 5, 7]), True, 35)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from robustlens._runtime import image_json
from robustlens.errors import (
    DataFileError,
    DataNotFoundError,
    DTypeError,
    ParameterError,
    RangeError,
    ShapeError,
)

__all__ = [
    "IMAGES",
    "Pixels",
    "as_pixels",
    "check_pixels",
    "image_refs",
    "is_image_ref",
    "load_image",
    "load_images",
    "save_image",
    "save_images",
]

IMAGES = "images"
"""The folder, beside ``results.json``, that holds its images."""

Pixels = Literal["lists", "tensors"]
"""How a ``to_dict`` returns pixels: nested lists (JSON as it is) or CPU tensors (for a writer that
stores them as files with :func:`save_images`)."""

_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_MAX_NAME = 120


def is_image_ref(value: Any) -> bool:
    """Whether ``value`` is a path written by :func:`save_image`: ``images/.../NAME.png``, every
    part plain (letters, digits, ``.``, ``_``, ``-``; no ``..``), so a reference read from a results
    file cannot point outside its folder.

    Example:
        >>> is_image_ref("images/whitebox/gallery-0-x.png"), is_image_ref("images/../x.png")
        (True, False)
    """
    if not isinstance(value, str) or not value.endswith(".png"):
        return False
    parts = value.split("/")
    return (
        len(parts) >= 2
        and parts[0] == IMAGES
        and all(_PART.fullmatch(p) and p not in (".", "..") for p in parts[1:])
    )


def _name(text: str) -> str:
    """A file-name part: lower-case letters, digits and ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def save_image(x: Tensor, out: str | Path, name: str) -> str:
    """Write ``x`` to ``out/images/NAME.png`` and return that path relative to ``out``.

    ``x`` is an image, float ``(C, H, W)`` in ``[0, 1]`` with ``C`` in {1, 3} (stored as 8 bits per
    channel), or a label map, integer or bool ``(H, W)`` in ``0..65535`` (stored exactly, 16 bits);
    see the module docstring. ``name`` may hold ``/`` for sub-folders; each part is reduced to
    lower-case letters, digits and ``-``.

    Shape: x (C, H, W) float or (H, W) integer -> ``"images/NAME.png"``.
    """
    if not isinstance(x, Tensor):
        raise DTypeError(f"save_image: x must be a tensor, got {type(x).__name__}")
    parts = [_name(p)[:_MAX_NAME] for p in str(name).split("/")]
    if not all(parts):
        raise ParameterError(
            f"save_image: 'name' must be parts of letters or digits joined by '/', got {name!r}"
        )
    a = x.detach().cpu()
    if a.is_floating_point():
        if a.ndim != 3 or a.shape[0] not in (1, 3) or a.shape[1] < 1 or a.shape[2] < 1:
            raise ShapeError(
                f"save_image: an image must be (C, H, W) with C = 1 or 3, got shape "
                f"{tuple(a.shape)}"
            )
        if not bool(torch.isfinite(a).all()) or float(a.min()) < 0 or float(a.max()) > 1:
            raise RangeError(
                f"save_image: image values must be finite and in [0, 1], got "
                f"[{float(a.min()):.4g}, {float(a.max()):.4g}] for {name!r}"
            )
        pixels = (a.double() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        array = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    elif not a.is_complex():
        if a.ndim != 2 or a.numel() == 0:
            raise ShapeError(
                f"save_image: a label map must be (H, W), got shape {tuple(a.shape)} for {name!r}"
            )
        labels = a.to(torch.int64)
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi > 65535:
            raise RangeError(
                f"save_image: label map values must lie in 0..65535 (16-bit PNG), got "
                f"[{lo}, {hi}] for {name!r}"
            )
        array = labels.numpy().astype(np.uint16)
    else:
        raise DTypeError(f"save_image: x must be a real tensor, got {a.dtype}")
    from PIL import Image

    rel = "/".join([IMAGES, *parts]) + ".png"
    path = Path(out) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return rel


def load_image(ref: str, root: str | Path) -> Tensor:
    """The tensor :func:`save_image` wrote to ``root/ref``: float32 ``(C, H, W)`` in ``[0, 1]`` for an
    8-bit grey or RGB file, int64 ``(H, W)`` for a 16-bit label map (on the CPU)."""
    if not is_image_ref(ref):
        raise ParameterError(
            f"load_image: 'ref' must be a path 'images/.../NAME.png' inside the results folder, "
            f"got {ref!r}"
        )
    path = Path(root) / ref
    if not path.is_file():
        raise DataNotFoundError(
            f"the results reference {ref!r} but {path} does not exist; keep the {IMAGES}/ folder "
            "beside results.json (copy or move them together), or run the audit again"
        )
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            array = np.asarray(img)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataFileError(f"cannot read the image {path}: {exc}") from None
    if mode in ("L", "RGB"):
        pixels = torch.from_numpy(array.astype(np.float32) / 255)
        return pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1).contiguous()
    if mode in ("I;16", "I"):
        return torch.from_numpy(array.astype(np.int64))
    raise DataFileError(
        f"{path}: expected an 8-bit grey or RGB image or a 16-bit label map, got PNG mode {mode!r}"
    )


def check_pixels(pixels: Any, *, where: str) -> None:
    """``pixels`` must be ``"lists"`` or ``"tensors"`` (:data:`Pixels`)."""
    if pixels not in ("lists", "tensors"):
        raise ParameterError(f"{where}: 'pixels' must be 'lists' or 'tensors', got {pixels!r}")


def as_pixels(x: Tensor, pixels: Pixels, *, where: str) -> Any:
    """``x`` as a ``to_dict`` returns it: nested lists (an image's floats rounded to 4 decimals,
    a label map's integers) for ``pixels="lists"``, a CPU tensor for ``pixels="tensors"``.

    Example:
        >>> as_pixels(torch.tensor([[[0.123456]]]), "lists", where="f"), as_pixels(
        ...     torch.tensor([[1, 2]]), "tensors", where="f")
        ([[[0.1235]]], tensor([[1, 2]]))
    """
    check_pixels(pixels, where=where)
    if pixels == "tensors":
        return x.detach().cpu()
    return image_json(x) if x.is_floating_point() else x.detach().cpu().tolist()


def save_images(obj: Any, out: str | Path, folder: str) -> Any:
    """``obj`` (nested dicts and lists) with every tensor written by :func:`save_image` under
    ``out/images/FOLDER/`` and replaced by its path; containers are copied, ``obj`` is untouched.

    Each file is named after where its tensor sits (``gallery[0]["x_adv"]`` -> ``gallery-0-x-adv``,
    a number appended when two names meet). The PNG files already in the folder are removed first,
    so it holds exactly the images ``obj`` references.
    """
    root = Path(out)
    sub = _name(folder)
    if not sub:
        raise ParameterError(f"save_images: 'folder' must hold letters or digits, got {folder!r}")
    for old in (root / IMAGES / sub).glob("*.png"):
        old.unlink()
    taken: set[str] = set()

    def walk(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, Tensor):
            base = "-".join(p for p in map(_name, path) if p)[:_MAX_NAME] or "image"
            name, i = base, 2
            while name in taken:
                name, i = f"{base}-{i}", i + 1
            taken.add(name)
            return save_image(value, root, f"{sub}/{name}")
        if isinstance(value, Mapping):
            return {k: walk(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, (*path, str(i))) for i, v in enumerate(value)]
        return value

    return walk(obj, ())


def load_images(obj: Any, root: str | Path | None, *, where: str = "load_images") -> Any:
    """``obj`` with every image reference (:func:`is_image_ref`) replaced by the tensor it names
    (:func:`load_image` from ``root``) and every tensor moved to the CPU; containers are copied.

    ``root`` is the folder of the results file; ``None`` is allowed when ``obj`` references no file.
    ``where`` names the caller in error messages.
    """

    def walk(value: Any) -> Any:
        if isinstance(value, Tensor):
            return value.detach().cpu()
        if is_image_ref(value):
            if root is None:
                raise ParameterError(
                    f"{where}: the results reference the image file {value!r}; pass root= the "
                    f"folder that holds results.json and its {IMAGES}/ folder"
                )
            return load_image(value, root)
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    return walk(obj)


def image_refs(obj: Any) -> list[str]:
    """Every image reference in ``obj`` (nested dicts and lists), in order.

    Example:
        >>> image_refs({"a": [{"x": "images/s/a-0-x.png", "n": 2}], "b": "images"})
        ['images/s/a-0-x.png']
    """
    if is_image_ref(obj):
        return [obj]
    if isinstance(obj, Mapping):
        return [r for v in obj.values() for r in image_refs(v)]
    if isinstance(obj, list | tuple):
        return [r for v in obj for r in image_refs(v)]
    return []
