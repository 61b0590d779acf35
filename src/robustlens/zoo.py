"""``robustlens.zoo``: pretrained models shipped with the package (see :mod:`robustlens.models.zoo`)."""

from __future__ import annotations

from robustlens.models.zoo import ZOO, ZooEntry, info, load, names, resolve

__all__ = ["ZOO", "ZooEntry", "info", "load", "names", "resolve"]
