"""Models: registered architectures, the ``Normalized`` wrapper, safe checkpoints and the zoo.

Example:
    >>> import robustlens as rl
    >>> "convnet" in rl.models.names()
    True
"""

from __future__ import annotations

from robustlens.models.architectures import ARCHITECTURES, create, names
from robustlens.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from robustlens.models.features import Backbone, Penultimate, backbone, penultimate
from robustlens.models.normalized import Normalized
from robustlens.models.resolve import LoadedModel, load, load_weights, spec_kind
from robustlens.models.wrappers import ClassMapped, Exported, map_classes

__all__ = [
    "ARCHITECTURES",
    "Backbone",
    "ClassMapped",
    "Exported",
    "LoadedModel",
    "Normalized",
    "Penultimate",
    "backbone",
    "create",
    "load",
    "load_checkpoint",
    "load_weights",
    "map_classes",
    "names",
    "penultimate",
    "read_checkpoint",
    "save_checkpoint",
    "spec_kind",
]
