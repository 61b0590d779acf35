"""Checkpoints that load without running code: ``save_checkpoint`` and ``load_checkpoint``.

A robustlens checkpoint is a dict of plain data (``torch.save``'d) holding the architecture name and
its keyword arguments, the optional normalisation, the weights and free-form metadata. It is read
with ``torch.load(..., weights_only=True)``, which refuses any pickled Python object, so a
checkpoint from an untrusted source cannot execute code. A bare ``state_dict`` loads too, given
``arch=``.

Example:
    >>> import tempfile, torch
    >>> from robustlens.models import create
    >>> net = create("linear", in_channels=1, num_classes=3, image_size=4)
    >>> path = tempfile.mkdtemp() + "/lin.pt"
    >>> save_checkpoint(path, net, arch="linear",
    ...                 arch_kwargs=dict(in_channels=1, num_classes=3, image_size=4))
    >>> load_checkpoint(path, arch="convnet")
    Traceback (most recent call last):
    ...
    robustlens.errors.CheckpointError: ... holds a 'linear' model but arch='convnet' was asked for...
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlens.errors import CheckpointError, RobustLensError
from robustlens.models.architectures import ARCHITECTURES, create
from robustlens.models.normalized import Normalized

__all__ = ["FORMAT", "load_checkpoint", "read_checkpoint", "save_checkpoint"]

FORMAT = "robustlens/checkpoint-v1"


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Save ``model`` (the bare network, or a :class:`Normalized` around it) with what rebuilds it."""
    ARCHITECTURES.get(arch)
    net = model
    if isinstance(model, Normalized):
        net = model.model
        mean = model.mean.flatten().tolist() if mean is None else mean
        std = model.std.flatten().tolist() if std is None else std
    blob = {
        "format": FORMAT,
        "arch": arch,
        "arch_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in arch_kwargs.items()},
        "normalize": None if mean is None else {"mean": list(mean), "std": list(std or [])},
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "meta": dict(meta or {}),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw content of a checkpoint, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln]
        if not lines:
            text = str(exc).split("WeightsUnpickler error:", 1)[-1]
            kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
            kept = [ln for ln in kept if "documentation of torch.load" not in ln]
            detail = kept[0] if kept else "unreadable pickle"
            raise CheckpointError(
                f"{path} is not a readable checkpoint (corrupt, truncated, or not written by "
                f"torch.save: {detail[:200]}); save the model's weights with "
                "torch.save(model.state_dict(), path)"
            ) from exc
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors and plain data, "
            "and loading them could run code. Re-save only the weights (model.state_dict()) and "
            f"load them with arch=... ({lines[0]})"
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated: {exc})"
        ) from exc
    if not isinstance(blob, dict):
        raise CheckpointError(
            f"{path} holds a {type(blob).__name__}; expected a robustlens checkpoint or a state_dict"
        )
    return blob


def load_checkpoint(
    path: str | Path,
    arch: str | None = None,
    *,
    arch_kwargs: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild the model saved at ``path``, in eval mode.

    Args:
        path: a file written by :func:`save_checkpoint`, or a bare ``state_dict``.
        arch: the expected architecture. Required for a bare ``state_dict``; for a robustlens
            checkpoint, a mismatch raises :class:`CheckpointError`.
        arch_kwargs: architecture keywords for a bare ``state_dict`` (``num_classes=...``).
        map_location: device of the returned model.
    """
    blob = read_checkpoint(path)
    if blob.get("format") == FORMAT:
        saved_arch = blob.get("arch")
        if arch is not None and arch != saved_arch:
            raise CheckpointError(
                f"{path} holds a {saved_arch!r} model but arch={arch!r} was asked for; "
                f"pass arch={saved_arch!r} or leave it out"
            )
        arch, kwargs, state = (
            saved_arch,
            dict(blob.get("arch_kwargs") or {}),
            blob.get("state_dict"),
        )
        normalize = blob.get("normalize")
    else:
        if arch is None:
            raise CheckpointError(
                f"{path} is a bare state_dict; say which architecture it belongs to with arch=... "
                f"(one of {', '.join(ARCHITECTURES.names())}) and its arch_kwargs"
            )
        kwargs, state, normalize = dict(arch_kwargs or {}), blob, None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: the weights are not a mapping of names to tensors")
    try:
        net = create(str(arch), **kwargs)
    except RobustLensError as exc:
        raise CheckpointError(f"{path}: cannot rebuild architecture {arch!r}: {exc}") from exc
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise CheckpointError(
            f"{path}: the weights do not fit architecture {arch!r} with {kwargs}: {detail}. "
            "The checkpoint was made for another architecture or other arch_kwargs"
        ) from exc
    model: nn.Module = net
    if normalize:
        model = Normalized(net, normalize["mean"], normalize["std"])
    return model.to(map_location).eval()
