"""The model zoo: pretrained classifiers whose weights ship inside the package.

Each entry was produced by ``robustlens train`` with a fixed seed; :func:`info` gives the exact
command, so anyone can regenerate the weights. Weights load with ``weights_only=True``.

Example:
    >>> from robustlens import zoo
    >>> model = zoo.load("digits-cnn")
    >>> model.training, zoo.info("digits-cnn")["dataset"]
    (False, 'digits')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlens.errors import CheckpointError
from robustlens.models.checkpoint import load_checkpoint, read_checkpoint
from robustlens.registry import Registry

__all__ = ["WEIGHTS", "ZOO", "ZooEntry", "info", "load", "names", "resolve"]

WEIGHTS = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    """A shipped model: what it was trained on, how, and what it must reach."""

    name: str
    dataset: str
    description: str
    command: str
    min_accuracy: float

    @property
    def path(self) -> Path:
        return WEIGHTS / f"{self.name}.pt"


ZOO: Registry[ZooEntry] = Registry("zoo model")


def _add(entry: ZooEntry) -> None:
    ZOO.register(entry.name)(entry)


_add(
    ZooEntry(
        name="fmnist-cnn",
        dataset="fashion-mnist",
        description="convnet (2x32, 2x64 conv, 64 hidden), standard training, shift augmentation",
        command="robustlens train --arch convnet --data fashion-mnist --epochs 15 --seed 0 "
        "--out src/robustlens/models/weights/fmnist-cnn.pt",
        min_accuracy=0.91,
    )
)
_add(
    ZooEntry(
        name="fmnist-cnn-adv",
        dataset="fashion-mnist",
        description="the fmnist-cnn architecture, PGD adversarial training (Madry et al.) at "
        "eps 0.1 Linf (5 steps of 0.05 from a random start): 8 epochs fine-tuning fmnist-cnn, "
        "then 4 epochs at a lower learning rate without dropout",
        command="robustlens train --arch convnet --data fashion-mnist --epochs 8 --init fmnist-cnn "
        "--adversarial pgd --eps 0.1 --adv-steps 5 --seed 0 --val --out stage1.pt && "
        "robustlens train --arch convnet --arch-option dropout=0 --data fashion-mnist --epochs 4 "
        "--lr 1e-3 --init stage1.pt --adversarial pgd --eps 0.1 --adv-steps 5 --seed 1 --val "
        "--out src/robustlens/models/weights/fmnist-cnn-adv.pt",
        min_accuracy=0.84,
    )
)
_add(
    ZooEntry(
        name="digits-cnn",
        dataset="digits",
        description="convnet (2x32, 2x64 conv, 64 hidden) on scikit-learn's 8x8 digits",
        command="robustlens train --arch convnet --data digits --epochs 40 --batch-size 64 "
        "--shift 1 --seed 0 --out src/robustlens/models/weights/digits-cnn.pt",
        min_accuracy=0.97,
    )
)
_add(
    ZooEntry(
        name="shapes-cnn",
        dataset="shapes-aligned",
        description="convnet (2x32, 2x64 conv, 64 hidden) on the aligned shape/texture set "
        "(each class one shape filled with one texture): both cues predict the class, "
        "rl.bias.shape_bias tells which it learnt",
        command="robustlens train --arch convnet --data shapes-aligned --epochs 15 --seed 0 "
        "--val --quiet --out src/robustlens/models/weights/shapes-cnn.pt",
        min_accuracy=0.99,
    )
)
_add(
    ZooEntry(
        name="fmnist-cnn-patch",
        dataset="fashion-mnist-patch",
        description="the fmnist-cnn architecture trained on Fashion-MNIST with a corner-patch "
        "cue that names the class 90% of the time: a model that relies on a spurious cue",
        command="robustlens train --arch convnet --data fashion-mnist-patch --epochs 6 --seed 0 "
        "--val --quiet --out src/robustlens/models/weights/fmnist-cnn-patch.pt",
        min_accuracy=0.97,
    )
)


def names() -> list[str]:
    """Names of the zoo models."""
    return ZOO.names()


def info(name: str) -> dict[str, Any]:
    """What is known of zoo model ``name``: data set, classes, test accuracy, training command."""
    entry = ZOO.get(name)
    meta = read_checkpoint(entry.path).get("meta", {}) if entry.path.is_file() else {}
    return {
        "name": entry.name,
        "dataset": entry.dataset,
        "description": entry.description,
        "command": entry.command,
        "min_accuracy": entry.min_accuracy,
        "size_bytes": entry.path.stat().st_size if entry.path.is_file() else None,
        **{k: v for k, v in meta.items() if k not in ("name", "dataset")},
    }


def load(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """Zoo model ``name`` with its shipped weights, in eval mode, on ``device``."""
    entry = ZOO.get(name)
    if not entry.path.is_file():
        raise CheckpointError(
            f"zoo model {name!r}: weights {entry.path} are missing from this installation; "
            f"regenerate them with: {entry.command}"
        )
    return load_checkpoint(entry.path, map_location=device)


def resolve(spec: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A model from any spec :func:`robustlens.models.load` takes, with what is known of it
    (``dataset``, ``classes``, ``preprocessing``). Kept for callers of the zoo-only era."""
    from robustlens.models.resolve import load as resolve_model

    loaded = resolve_model(spec, device=device)
    meta = {**loaded.meta, **loaded.to_dict()}
    meta["dataset"], meta["classes"] = loaded.dataset, loaded.classes
    return loaded.module, meta
