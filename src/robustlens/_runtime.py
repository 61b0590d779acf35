"""Runtime helpers every entry point shares: eval mode with restore, frozen parameters, batching.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).train()
    >>> with inference_mode(model):
    ...     model.training
    False
    >>> model.training
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "batched_logits",
    "chunk_size",
    "chunked_forward",
    "image_json",
    "inference_mode",
    "inputs_validated",
    "progress",
    "resolve_device",
    "validated_inputs",
]

_VALIDATED: ContextVar[bool] = ContextVar("robustlens_inputs_validated", default=False)


@contextmanager
def validated_inputs() -> Iterator[None]:
    """Mark the images flowing through the model, until the block ends, as already validated.

    An entry point (an attack) checks its images once; every image its step loop builds stays in
    ``[0, 1]`` by construction. Modules that validate their own input (the defenses'
    preprocessors) skip the check inside the block, which on a GPU would cost one host
    synchronisation per forward pass.
    """
    token = _VALIDATED.set(True)
    try:
        yield
    finally:
        _VALIDATED.reset(token)


def inputs_validated() -> bool:
    """Whether the caller runs inside :func:`validated_inputs`."""
    return _VALIDATED.get()


@contextmanager
def inference_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with parameter gradients off; restore both, even on error.

    Restores the ``training`` flag of every submodule (not only the root), and the
    ``requires_grad`` flag of every parameter, so a caller's half-frozen model comes back as it was.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


#: Input elements per forward chunk on the CPU (2**18: 334 Fashion-MNIST images, 85 CIFAR images).
CPU_CHUNK_ELEMENTS = 1 << 18


def chunk_size(x: Tensor) -> int:
    """How many images of ``x`` one forward pass should take at a time on ``x``'s device.

    On the CPU a forward pass over a large batch allocates activations of hundreds of megabytes,
    which the allocator maps fresh from the kernel (and page-faults in) at every call; chunks of
    about ``CPU_CHUNK_ELEMENTS`` input elements reuse memory and ran 1.5 to 2 times faster on the
    zoo's Fashion-MNIST models (a rough measurement on a loaded 2-core machine). Accelerators
    take the whole batch.

    Example:
        >>> chunk_size(torch.zeros(1000, 1, 28, 28))
        334
    """
    if x.device.type != "cpu" or x.ndim == 0:
        return max(1, len(x))
    return max(1, CPU_CHUNK_ELEMENTS // max(1, x[0].numel()))


def chunked_forward(model: nn.Module | Any, x: Tensor) -> Any:
    """``model(x)``, computed in chunks of :func:`chunk_size` images and concatenated.

    The same values as one call for any model that treats images independently (every model in
    eval mode); gradients flow through the concatenation. An output that is not a tensor is
    returned as one call gives it, for the caller's own checks to report.
    """
    size = chunk_size(x)
    if len(x) <= size:
        return model(x)
    outs = [model(part) for part in x.split(size)]
    if not all(isinstance(o, Tensor) and o.ndim >= 1 for o in outs):
        return model(x)
    return torch.cat(outs)


def batched_logits(
    model: nn.Module,
    x: Tensor,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    show_progress: bool = False,
    desc: str = "predict",
) -> Tensor:
    """Logits of ``model`` on ``x`` computed in batches under ``torch.no_grad``.

    Shape: x (N, C, H, W) -> (N, K) on ``x``'s device. Each batch is moved to ``device`` (default:
    the device of ``x``) for the forward pass, which :func:`chunked_forward` splits further on the
    CPU.
    """
    from robustlens._checks import check_logits

    target = torch.device(device) if device is not None else x.device
    outs: list[Tensor] = []
    with inference_mode(model), torch.no_grad():
        for start in progress(range(0, len(x), batch_size), show=show_progress, desc=desc):
            xb = x[start : start + batch_size].to(target, non_blocking=True)
            out = check_logits(chunked_forward(model, xb), len(xb))
            outs.append(out.to(x.device))
    return torch.cat(outs)


def progress(iterable: range, *, show: bool, desc: str, total: int | None = None) -> range:
    """Wrap ``iterable`` in a tqdm progress bar on stderr when ``show`` is true."""
    if not show:
        return iterable
    from tqdm.auto import tqdm

    wrapped: range = tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)
    return wrapped


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` -> CUDA if available else CPU; otherwise the named device."""
    from robustlens.errors import DeviceError

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {str(device)!r} was asked for but CUDA is not available here; use 'cpu' or "
            "install a CUDA build of torch"
        )
    return dev


def image_json(x: Tensor, decimals: int = 4) -> list[Any]:
    """An image (or any tensor) as nested Python lists rounded to ``decimals`` (for JSON results).

    Example:
        >>> import torch
        >>> image_json(torch.tensor([[[0.123456, 1.0]]]))
        [[[0.1235, 1.0]]]
    """
    out: list[Any] = torch.round(x.detach().double().cpu(), decimals=decimals).tolist()
    return out
