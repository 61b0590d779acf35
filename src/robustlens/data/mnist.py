"""Fashion-MNIST and MNIST from IDX files, found where a user would keep them.

The four files of a data set (``train-images-idx3-ubyte`` and friends, gzip-compressed or raw) are
looked up in this order, the first folder holding both files of the split winning:

1. ``root`` (the folder itself, then ``root/<name>``);
2. ``$ROBUSTLENS_DATA`` (likewise);
3. the data folder of a Debian package (``dataset-fashion-mnist``), found with ``dpkg -L``;
4. the user cache, ``$XDG_CACHE_HOME/robustlens/<name>`` (default ``~/.cache/robustlens/<name>``);
5. the official download, checked against its published MD5, stored in the user cache. Set
   ``ROBUSTLENS_OFFLINE=1`` or pass ``download=False`` to skip it.

If none has it, :class:`~robustlens.errors.DataNotFoundError` lists every place and how to fill one.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustlens.data.dataset import ImageDataset
from robustlens.data.idx import read_idx
from robustlens.errors import DataFileError, DataNotFoundError, ParameterError

__all__ = ["SOURCES", "IdxSource", "find_idx_files", "load_idx_dataset", "user_cache"]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxSource:
    """Where an MNIST-family data set lives and what it holds."""

    name: str
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # of the official .gz files
    debian_package: str | None = None


SOURCES: dict[str, IdxSource] = {
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        debian_package="dataset-fashion-mnist",
    ),
    "mnist": IdxSource(
        name="mnist",
        classes=tuple(str(i) for i in range(10)),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
}


def user_cache(name: str) -> Path:
    """The user cache folder of data set ``name``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "robustlens" / name


@functools.cache
def _debian_folder(package: str) -> Path | None:
    """The folder holding the IDX files of an installed Debian package, via ``dpkg -L``."""
    if shutil.which("dpkg") is None:
        return None
    try:
        out = subprocess.run(
            ["dpkg", "-L", package], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    for line in out.stdout.splitlines():
        if line.endswith("-idx3-ubyte.gz") or line.endswith("-idx3-ubyte"):
            return Path(line).parent
    return None


def _pair_in(folder: Path, split: str) -> tuple[Path, Path] | None:
    found: list[Path] = []
    for stem in _FILES[split]:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            return None
    return found[0], found[1]


def _download(source: IdxSource, split: str, dest: Path) -> tuple[Path, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem in _FILES[split]:
        fname = f"{stem}.gz"
        target = dest / fname
        if not target.is_file():
            errors = []
            for mirror in source.mirrors:
                try:
                    with urllib.request.urlopen(mirror + fname, timeout=20) as resp:
                        payload = resp.read()
                except (urllib.error.URLError, OSError, TimeoutError) as exc:
                    errors.append(f"{mirror}: {exc}")
                    continue
                digest = hashlib.md5(payload).hexdigest()
                if digest != source.md5[fname]:
                    errors.append(f"{mirror}: MD5 {digest} != expected {source.md5[fname]}")
                    continue
                with tempfile.NamedTemporaryFile(dir=dest, delete=False) as tmp:
                    tmp.write(payload)
                os.replace(tmp.name, target)
                break
            else:
                raise OSError("; ".join(errors))
        paths.append(target)
    return paths[0], paths[1]


def find_idx_files(
    name: str, split: str, *, root: str | Path | None = None, download: bool = True
) -> tuple[Path, Path]:
    """Paths of the (images, labels) IDX files of ``name``/``split``, searched as the module says."""
    source = SOURCES[name]
    looked: list[str] = []

    def folders(base: Path) -> list[Path]:
        return [base, base / name]

    if root is not None:
        for folder in folders(Path(root)):
            if (pair := _pair_in(folder, split)) is not None:
                return pair
        looked.append(f"root={root} (and {Path(root) / name})")
    else:
        looked.append("root (not given)")

    env = os.environ.get("ROBUSTLENS_DATA")
    if env:
        for folder in folders(Path(env)):
            if (pair := _pair_in(folder, split)) is not None:
                return pair
        looked.append(f"$ROBUSTLENS_DATA={env} (and {Path(env) / name})")
    else:
        looked.append("$ROBUSTLENS_DATA (not set)")

    if source.debian_package:
        deb = _debian_folder(source.debian_package)
        if deb is not None and (pair := _pair_in(deb, split)) is not None:
            return pair
        state = f"found at {deb}, files missing" if deb else "not installed"
        looked.append(
            f"Debian package {source.debian_package} ({state}; "
            f"install it with: apt-get install -y {source.debian_package})"
        )

    cache = user_cache(name)
    if (pair := _pair_in(cache, split)) is not None:
        return pair
    looked.append(f"user cache {cache}")

    offline = os.environ.get("ROBUSTLENS_OFFLINE", "") not in ("", "0")
    if download and not offline:
        try:
            return _download(source, split, cache)
        except OSError as exc:
            looked.append(f"official download ({exc})")
    else:
        looked.append("official download (skipped: offline)")

    stems = " and ".join(f"{s}[.gz]" for s in _FILES[split])
    raise DataNotFoundError(
        f"{name} ({split} split) not found. Looked in:\n  - "
        + "\n  - ".join(looked)
        + f"\nFix: put {stems} in a folder and pass root=... or set ROBUSTLENS_DATA to it"
        + (f", or apt-get install -y {source.debian_package}" if source.debian_package else "")
        + "."
    )


def load_idx_dataset(
    name: str, split: str = "test", root: str | Path | None = None, download: bool = True
) -> ImageDataset:
    """Load an MNIST-family data set as an :class:`ImageDataset` with images ``(N, 1, 28, 28)``."""
    if split not in _FILES:
        raise ParameterError(f"{name}: 'split' must be 'train' or 'test', got {split!r}")
    images_path, labels_path = find_idx_files(name, split, root=root, download=download)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFileError(
            f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataFileError(
            f"{labels_path}: expected {len(images)} labels to match {images_path}, got shape "
            f"{labels.shape}; the two files come from different releases or one is damaged"
        )
    classes = SOURCES[name].classes
    if len(labels) and int(labels.max()) >= len(classes):
        raise DataFileError(
            f"{labels_path}: label {int(labels.max())} out of range for {len(classes)} classes"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageDataset(x, y, classes=list(classes), name=name)
