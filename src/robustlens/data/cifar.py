"""CIFAR-10 from its "python version" batches, read without executing code from the files.

The batches are pickles of a dict holding ``data`` (uint8 ``(N, 3072)``) and ``labels``. A pickle
can run arbitrary code, so they are read with an unpickler that only builds plain containers and
numpy arrays and refuses every other global.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlens.data.dataset import ImageDataset
from robustlens.errors import DataFileError, DataNotFoundError, ParameterError

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "safe_unpickle"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("_codecs", "encode"),
}


class _Refused(pickle.UnpicklingError):
    pass


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise _Refused(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def safe_unpickle(path: Path) -> Any:
    """Unpickle ``path`` allowing only dicts, lists, bytes, strings, numbers and numpy arrays."""
    try:
        raw = path.read_bytes()
        return _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as exc:
        raise DataFileError(
            f"{path}: {exc}; a CIFAR batch holds only arrays and lists, so this file is not one "
            "(or has been tampered with)"
        ) from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        OSError,
        IndexError,
        KeyError,
        TypeError,
    ) as exc:
        raise DataFileError(f"{path} is corrupt or truncated ({exc}); fetch it again") from exc


def _get(batch: dict[Any, Any], key: str) -> Any:
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def load_cifar10(split: str = "test", root: str | Path | None = None) -> ImageDataset:
    """CIFAR-10 images ``(N, 3, 32, 32)`` from the folder ``root`` holding the python batches.

    ``root`` may be the ``cifar-10-batches-py`` folder itself or its parent.
    """
    if split not in _SPLITS:
        raise ParameterError(f"cifar10: 'split' must be 'train' or 'test', got {split!r}")
    if root is None:
        raise DataNotFoundError(
            "cifar10 needs root=... : the folder holding data_batch_1..5 and test_batch "
            "(the 'CIFAR-10 python version' archive, extracted)"
        )
    folder = Path(root)
    if not (folder / _SPLITS[split][0]).is_file() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    xs, ys = [], []
    for fname in _SPLITS[split]:
        path = folder / fname
        if not path.is_file():
            raise DataNotFoundError(f"cifar10: {path} not found; root must hold {_SPLITS[split]}")
        batch = safe_unpickle(path)
        try:
            data = np.asarray(_get(batch, "data"), dtype=np.uint8)
            labels = np.asarray(_get(batch, "labels"), dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFileError(f"{path}: not a CIFAR batch (missing or bad {exc})") from exc
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise DataFileError(
                f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}"
            )
        xs.append(data)
        ys.append(labels)
    x = torch.from_numpy(np.concatenate(xs)).view(-1, 3, 32, 32).float().div_(255.0)
    y = torch.from_numpy(np.concatenate(ys))
    if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
        raise DataFileError(f"cifar10: labels outside 0..9 in {folder}")
    return ImageDataset(x, y, classes=list(CIFAR10_CLASSES), name="cifar10")
