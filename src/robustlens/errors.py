"""The one error hierarchy of robustlens.

Every error raised on purpose derives from :class:`RobustLensError` and from the builtin that
matches its meaning, so ``except ValueError`` keeps working for callers who do not know robustlens.
A message says what must hold, what was given, and how to fix it.

Example:
    >>> from robustlens.errors import RangeError, RobustLensError
    >>> issubclass(RangeError, ValueError) and issubclass(RangeError, RobustLensError)
    True
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DTypeError",
    "DataFileError",
    "DataNotFoundError",
    "DeviceError",
    "LabelError",
    "ModelOutputError",
    "NonFiniteError",
    "ParameterError",
    "QueryBudgetError",
    "RangeError",
    "ResumeError",
    "RobustLensError",
    "ShapeError",
    "UnknownNameError",
]


class RobustLensError(Exception):
    """Root of every error robustlens raises on purpose."""


class ParameterError(RobustLensError, ValueError):
    """A constructor or function argument outside its valid domain (``eps=-1``, ``steps=0``)."""


class ShapeError(RobustLensError, ValueError):
    """A tensor of the wrong rank or size."""


class DTypeError(RobustLensError, TypeError):
    """A tensor of the wrong dtype (integer images, float labels) or not a tensor at all."""


class RangeError(RobustLensError, ValueError):
    """Image values outside ``[0, 1]``."""


class NonFiniteError(RobustLensError, ValueError):
    """NaN or infinite values where finite numbers are required."""


class LabelError(RobustLensError, ValueError):
    """Labels of the wrong length, or outside ``0..K-1``."""


class ModelOutputError(RobustLensError, ValueError):
    """A model whose output is not logits of shape ``(N, K)``."""


class DeviceError(RobustLensError, ValueError):
    """Tensors and model on different devices."""


class UnknownNameError(RobustLensError, KeyError):
    """A name that is not in a registry; the message suggests the closest registered name."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(RobustLensError, FileNotFoundError):
    """A data set that is in none of the places robustlens looks; the message lists them."""


class DataFileError(RobustLensError, ValueError):
    """A data file that is corrupt, truncated or of an unexpected format."""


class CheckpointError(RobustLensError, ValueError):
    """A checkpoint that is unsafe, corrupt, or made for another architecture."""


class ResumeError(RobustLensError, ValueError):
    """An output folder holding a run with other settings than the one asked for."""


class QueryBudgetError(RobustLensError, RuntimeError):
    """A black-box query that would take an image past its oracle's query budget."""
