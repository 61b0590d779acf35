"""Runtime helpers every entry point shares: eval mode with restore, frozen parameters, batching,
progress lines.

**Progress.** Every loop that may run for more than a moment reports through one of two helpers:
:func:`progress` wraps an iterable (batches, images, corruptions), :func:`status` gives a
:class:`Ticker` for a loop written by hand (an attack's steps, a query budget), ticked once per
step on the host (never a device synchronisation for the line's sake). Both draw a tqdm line on
stderr with the position, the elapsed time and an ``ETA``, appear only once the loop has run
:data:`PROGRESS_DELAY` seconds (quick loops print nothing), nest (an ensemble's line above its
member's), and vanish when their loop ends. Whether they draw is decided, in this order, by an
explicit ``show=``, then by the innermost :func:`progress_scope` (entry points with a
``show_progress`` option open one through :func:`progress_option`; the command line opens one
with ``not --quiet``), then by the ``ROBUSTLENS_PROGRESS`` environment variable (``1`` or ``0``),
and otherwise by whether stderr is a terminal (or a notebook).

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

import functools
import inspect
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "Ticker",
    "batched_logits",
    "chunk_size",
    "chunked_forward",
    "image_json",
    "inference_mode",
    "inputs_validated",
    "progress",
    "progress_enabled",
    "progress_option",
    "progress_scope",
    "resolve_device",
    "status",
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
#: Fewest images per forward chunk on the CPU (large images: see :func:`chunk_size`).
CPU_CHUNK_MIN_IMAGES = 64


def chunk_size(x: Tensor) -> int:
    """How many images of ``x`` one forward pass should take at a time on ``x``'s device.

    On the CPU a forward pass over a large batch allocates activations of hundreds of megabytes,
    which the allocator maps fresh from the kernel (and page-faults in) at every call; chunks of
    about ``CPU_CHUNK_ELEMENTS`` input elements reuse memory and ran 1.5 to 2 times faster on the
    zoo's Fashion-MNIST models (a rough measurement on a loaded 2-core machine). A chunk never
    holds fewer than ``CPU_CHUNK_MIN_IMAGES`` images: at ImageNet sizes the element budget alone
    would send one image at a time, and a ResNet-18 at 224x224 ran 12 times slower on chunks of one
    image than on chunks of 64 (``bench/data.py``). Accelerators take the whole batch.

    Example:
        >>> chunk_size(torch.zeros(1000, 1, 28, 28)), chunk_size(torch.zeros(100, 3, 224, 224))
        (334, 64)
    """
    if x.device.type != "cpu" or x.ndim == 0:
        return max(1, len(x))
    return max(1, CPU_CHUNK_MIN_IMAGES, CPU_CHUNK_ELEMENTS // max(1, x[0].numel()))


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
    show_progress: bool | None = None,
    desc: str = "predict",
) -> Tensor:
    """Logits of ``model`` on ``x`` computed in batches under ``torch.no_grad``.

    Shape: x (N, C, H, W) -> (N, K) on ``x``'s device. Each batch is moved to ``device`` (default:
    the device of ``x``) for the forward pass, which :func:`chunked_forward` splits further on the
    CPU. ``show_progress``: a progress line over the batches (``None``: as the caller's scope,
    see :func:`progress_enabled`).
    """
    from robustlens._checks import check_logits

    target = torch.device(device) if device is not None else x.device
    outs: list[Tensor] = []
    with inference_mode(model), torch.no_grad():
        for start in progress(
            range(0, len(x), batch_size), show=show_progress, desc=desc, unit="batch"
        ):
            xb = x[start : start + batch_size].to(target, non_blocking=True)
            out = check_logits(chunked_forward(model, xb), len(xb))
            outs.append(out.to(x.device))
    return torch.cat(outs)


# --------------------------------------------------------------------------- progress

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

_SHOW: ContextVar[bool | None] = ContextVar("robustlens_progress", default=None)

#: Seconds a loop runs before its progress line appears: shorter loops print nothing.
PROGRESS_DELAY = 1.0
#: Least seconds between two redraws of a line (a log file gets a line every half second, not
#: one per step).
PROGRESS_INTERVAL = 0.5
#: Seconds between two redraws of every open line by the ticking thread, so that a line keeps
#: counting its elapsed time (and appears after :data:`PROGRESS_DELAY`) while one step is long.
PROGRESS_REFRESH = 1.0

_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()
_TICKING: list[threading.Thread] = []
_TICKING_LOCK = threading.Lock()


def _tick_open_lines() -> None:
    """Redraw every open line once its delay has passed (a daemon thread, one per process)."""
    while True:
        time.sleep(PROGRESS_REFRESH)
        now = time.time()
        for bar in list(_OPEN):
            try:
                # Under tqdm's lock: a line closed meanwhile is not drawn again after its clearing.
                with bar.get_lock():
                    if not bar.disable and now - bar.start_t >= bar.delay:
                        bar.refresh(nolock=True)
            except (AttributeError, ValueError, OSError):  # closed meanwhile, or its stream
                continue


def _start_ticking() -> None:
    with _TICKING_LOCK:
        if not _TICKING or not _TICKING[0].is_alive():
            thread = threading.Thread(target=_tick_open_lines, name="robustlens-progress")
            thread.daemon = True
            thread.start()
            _TICKING[:] = [thread]


_BAR = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
    "[{elapsed} elapsed, ETA {remaining}, {rate_fmt}{postfix}]"
)
_COUNT = "{desc}: {n_fmt} {unit} [{elapsed} elapsed, {rate_fmt}{postfix}]"


def _interactive() -> bool:
    """Whether a person is likely watching stderr: a terminal, or a Jupyter kernel."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False
    return "ipykernel" in sys.modules


def progress_enabled(show: bool | None = None) -> bool:
    """Whether progress lines are drawn here: ``show`` when given, else the innermost
    :func:`progress_scope`, else ``ROBUSTLENS_PROGRESS`` (``1``/``0``), else whether stderr is a
    terminal or a notebook.

    Example:
        >>> with progress_scope(False):
        ...     progress_enabled(), progress_enabled(True)
        (False, True)
    """
    if show is not None:
        return bool(show)
    scoped = _SHOW.get()
    if scoped is not None:
        return scoped
    env = os.environ.get("ROBUSTLENS_PROGRESS", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    return _interactive()


@contextmanager
def progress_scope(show: bool | None) -> Iterator[None]:
    """Progress lines on (``True``) or off (``False``) for everything run inside the block, nested
    calls included; ``None`` keeps what the enclosing scope decided.

    Example:
        >>> with progress_scope(True):
        ...     with progress_scope(None):
        ...         progress_enabled()
        True
    """
    if show is None:
        yield
        return
    token = _SHOW.set(bool(show))
    try:
        yield
    finally:
        _SHOW.reset(token)


def progress_option(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator for an entry point with a keyword ``show_progress: bool | None``: the call runs
    inside ``progress_scope(show_progress)``, so ``False`` silences every loop it reaches (attacks,
    LIME, corruptions...) and ``True`` shows them, while ``None`` inherits."""
    default = inspect.signature(fn).parameters["show_progress"].default

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        show = kwargs.get("show_progress", default)
        with progress_scope(None if show is None else bool(show)):
            return fn(*args, **kwargs)

    return wrapper


def _bar(desc: str, total: int | None, unit: str, iterable: Iterable[Any] | None = None) -> Any:
    from tqdm.auto import tqdm

    known = total is not None and total > 0
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):
        terminal = False
    bar = tqdm(
        iterable,
        desc=desc,
        total=total if known else None,
        unit=unit,
        leave=False,
        # On a terminal a line is cut to its width (a wrapped line cannot be redrawn); in a log
        # file or a notebook it is written whole.
        dynamic_ncols=terminal,
        file=sys.stderr,
        delay=PROGRESS_DELAY,
        mininterval=PROGRESS_INTERVAL,
        miniters=1,  # redraws are limited by time only
        bar_format=_BAR if known else _COUNT,
    )
    _OPEN.add(bar)
    _start_ticking()
    return bar


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    show: bool | None = None,
    total: int | None = None,
    unit: str = "it",
) -> Iterable[T]:
    """``iterable``, drawing a progress line with an ETA on stderr while it is consumed (when
    :func:`progress_enabled` says so). ``total`` defaults to ``len(iterable)``.

    Example:
        >>> [i for i in progress(range(3), desc="demo", show=False)]
        [0, 1, 2]
    """
    if not progress_enabled(show):
        return iterable
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    wrapped: Iterable[T] = _bar(desc, total, unit, iterable)
    return wrapped


class Ticker:
    """The progress line of a loop written by hand (see :func:`status`); every method is a no-op
    when progress is off.

    Example:
        >>> with status("search", total=3, show=False) as ticker:
        ...     for step in range(3):
        ...         ticker.tick()
        >>> ticker.n
        3
    """

    def __init__(self, bar: Any = None) -> None:
        self._bar = bar
        #: Steps ticked so far (counted even when nothing is drawn).
        self.n = 0

    @property
    def shown(self) -> bool:
        """Whether this ticker draws a line (progress is on)."""
        return self._bar is not None

    def tick(self, n: int = 1) -> None:
        """``n`` more steps done (a host-side counter: no device synchronisation)."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def advance_to(self, n: int) -> None:
        """Jump to ``n`` steps done (a loop that stopped early skips the steps it did not need)."""
        if n > self.n:
            self.tick(n - self.n)

    def set_total(self, total: int) -> None:
        """The loop's length, once it is known (it may grow or shrink as the work is planned)."""
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def note(self, text: str) -> None:
        """Show ``text`` after the counts (which member, which search step); redrawn at once."""
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextmanager
def status(
    desc: str, total: int | None, *, unit: str = "step", show: bool | None = None
) -> Iterator[Ticker]:
    """A :class:`Ticker` for a loop of ``total`` steps (``None``: unknown, counted without an ETA),
    drawn while the block runs when :func:`progress_enabled` says so, removed when it ends.

    Example:
        >>> with status("PGD", total=40, show=False) as ticker:
        ...     ticker.tick(40)
        ...     ticker.shown
        False
    """
    ticker = Ticker(_bar(desc, total, unit) if progress_enabled(show) else None)
    try:
        yield ticker
    finally:
        ticker.close()


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
