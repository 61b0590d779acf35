"""Models: registered architectures, the ``Normalized`` wrapper, safe checkpoints and the zoo.

Example:
    >>> import robustlens as rl
    >>> "convnet" in rl.models.names()
    True
"""

from __future__ import annotations

from robustlens.models.architectures import ARCHITECTURES, create, names
from robustlens.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from robustlens.models.normalized import Normalized

__all__ = [
    "ARCHITECTURES",
    "Normalized",
    "create",
    "load_checkpoint",
    "names",
    "read_checkpoint",
    "save_checkpoint",
]
