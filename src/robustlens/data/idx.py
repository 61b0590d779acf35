"""Reader for the IDX format of the MNIST family, gzip-compressed or raw.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order. Every field is checked: a wrong magic,
an unknown type, a truncated body or trailing bytes raise :class:`~robustlens.errors.DataFileError`.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "toy-idx1-ubyte"
    >>> write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
    >>> read_idx(path).tolist()
    [3, 1, 4]
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from robustlens.errors import DataFileError

__all__ = ["read_idx", "write_idx"]

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder(">") if dt.itemsize > 1 else dt: code for code, dt in _TYPES.items()}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file name says
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFileError(
                f"{path} is a corrupt or truncated gzip file ({exc}); delete it and fetch it again"
            ) from exc
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array of its declared type and shape."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFileError(f"{path} is too short ({len(data)} bytes) to be an IDX file")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _TYPES or not 1 <= ndim <= 4:
        raise DataFileError(
            f"{path} is not an IDX file: magic bytes {data[:4].hex()} (expected 0000 then a type "
            f"code in {{08, 09, 0b, 0c, 0d, 0e}} and 1 to 4 dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFileError(f"{path}: IDX header truncated ({len(data)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _TYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    body = len(data) - header
    if body != expected:
        what = "truncated" if body < expected else "longer than its header says"
        raise DataFileError(
            f"{path}: IDX body is {what}: header declares shape {shape} ({expected} bytes), file "
            f"holds {body} bytes; the file is damaged, fetch it again"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool = False) -> None:
    """Write ``array`` as an IDX file (gzip-compressed with ``compress``)."""
    arr = np.asarray(array)
    dt = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    if dt not in _CODES:
        raise DataFileError(f"IDX cannot store dtype {arr.dtype}")
    payload = struct.pack(">HBB", 0, _CODES[dt], arr.ndim) + struct.pack(
        f">{arr.ndim}I", *arr.shape
    )
    payload += arr.astype(dt).tobytes()
    Path(path).write_bytes(gzip.compress(payload) if compress else payload)
