"""One batch loop for every dataset-level operation, in memory or streamed from disk.

:func:`batches` yields :class:`Batch` es of a data set on the model's device: slices of the
tensors of an :class:`~robustlens.data.ImageDataset`, or images of an
:class:`~robustlens.data.ImageFiles` decoded and preprocessed in ``torch.utils.data.DataLoader``
worker processes (``files.workers``), pinned in page-locked memory when they go to a GPU. Either
way a batch holds the images of one fixed chunk of positions (``[0, B)``, ``[B, 2B)``, ...),
so a batch's images, and every seeded result computed on it, do not depend on how the data is
held, on a resumed run, or on which files of other chunks fail to decode. Each image keeps its
position in the data set (``batch.index``), the key of per-image results.

Memory is bounded by the batch: at most ``batch_size x (2 x workers + 1)`` decoded images are
alive at once, whatever the data set's size.

Example:
    >>> import torch
    >>> from robustlens.data import ImageDataset
    >>> ds = ImageDataset(torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 0, 1, 0]))
    >>> [b.index.tolist() for b in batches(ds, 2)]
    [[0, 1], [2, 3], [4]]
    >>> predict(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)), ds).shape
    torch.Size([5])
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn

from robustlens.data.dataset import ImageDataset
from robustlens.data.files import ImageFiles, SkippedFile
from robustlens.errors import DataFileError, DTypeError, ModelOutputError, ParameterError

__all__ = [
    "Batch",
    "ImageData",
    "Worked",
    "batches",
    "check_image_data",
    "fingerprint",
    "in_memory",
    "is_image_data",
    "map_chunks",
    "model_outputs",
    "predict",
]

ImageData: TypeAlias = ImageDataset | ImageFiles
"""A data set in memory (:class:`ImageDataset`) or streamed from files (:class:`ImageFiles`)."""


def is_image_data(data: object) -> bool:
    """Whether ``data`` is an :class:`ImageDataset` or an :class:`ImageFiles`."""
    return isinstance(data, ImageDataset | ImageFiles)


def check_image_data(data: object, where: str) -> ImageData:
    """``data`` if it is a data set robustlens reads, else DTypeError saying what to pass."""
    if not isinstance(data, ImageDataset | ImageFiles):
        raise DTypeError(
            f"{where}: the data must be a robustlens ImageDataset (rl.data.load(...)) or "
            f"ImageFiles (rl.data.open_folder(...)), got {type(data).__name__}; wrap tensors "
            "with rl.data.ImageDataset(x, y)"
        )
    return data


@dataclass
class Batch:
    """Images of one chunk of a data set: ``x`` float32 ``(B, C, H, W)`` and ``y`` int64 ``(B,)``
    on the device asked for, ``index`` int64 ``(B,)`` on the CPU (their positions in the data
    set), and the files of the chunk that did not decode (left out of ``x``)."""

    x: Tensor
    y: Tensor
    index: Tensor
    skipped: list[SkippedFile] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.index.numel())


def _chunks(positions: Tensor, batch_size: int, aligned: bool = True) -> list[Tensor]:
    """``positions`` cut at multiples of ``batch_size`` (chunk ``k`` holds the positions
    ``[k B, (k + 1) B)`` that are in ``positions``), or, not ``aligned``, in consecutive groups of
    ``batch_size``."""
    if not len(positions):
        return []
    if not aligned:
        return list(positions.split(batch_size))
    key = torch.div(positions, batch_size, rounding_mode="floor")
    cuts = torch.nonzero(key[1:] != key[:-1]).flatten() + 1
    return list(torch.tensor_split(positions, cuts))


def _positions(data: ImageData, positions: Sequence[int] | Tensor | None) -> Tensor:
    n = len(data)
    if positions is None:
        return torch.arange(n)
    pos = torch.as_tensor(positions, dtype=torch.long).flatten().cpu()
    if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= n):
        raise ParameterError(f"batches: positions must lie in 0..{n - 1}")
    if len(pos) > 1 and not bool((pos[1:] > pos[:-1]).all()):
        raise ParameterError("batches: positions must be strictly increasing")
    return pos


def batches(
    data: ImageData,
    batch_size: int,
    *,
    device: torch.device | str | None = None,
    positions: Sequence[int] | Tensor | None = None,
    aligned: bool = True,
    show_progress: bool | None = None,
    desc: str = "batches",
) -> Iterator[Batch]:
    """The images of ``data`` in batches of the chunks ``[k B, (k + 1) B)``, on ``device``.

    Args:
        data: an :class:`ImageDataset` (sliced) or an :class:`ImageFiles` (decoded in its
            ``workers`` DataLoader processes, pinned memory on CUDA).
        batch_size: ``B``, the chunk length.
        device: where the batches go (default: the CPU for files, the tensors' device in memory).
        positions: only these positions (sorted), still grouped by chunk; default every image.
        aligned: group ``positions`` by the chunks ``[k B, (k + 1) B)`` (the default: a batch
            holds the same images whichever positions are asked for, as resuming needs); with
            ``False``, in consecutive groups of ``B`` (full batches for a shard of scattered
            positions, when results do not depend on a batch's other images).
        show_progress: a progress line on stderr (``None``: as the caller's scope decides,
            see :func:`robustlens._runtime.progress_enabled`).

    Yields:
        :class:`Batch` per chunk that has a readable image. A file that does not decode is left
        out of its batch and listed in ``batch.skipped`` (and in ``data.skipped``); with
        ``data.strict`` it raises :class:`~robustlens.errors.DataFileError` instead.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batches: 'batch_size' must be an int >= 1, got {batch_size!r}")
    check_image_data(data, "batches")
    chunks = _chunks(_positions(data, positions), batch_size, aligned)
    if isinstance(data, ImageDataset):
        target = torch.device(device) if device is not None else data.x.device
        for idx in _progress(chunks, show_progress, desc, len(chunks)):
            first, last = int(idx[0]), int(idx[-1])
            if last - first + 1 == len(idx):
                xb, yb = data.x[first : last + 1], data.y[first : last + 1]
            else:
                on = idx.to(data.x.device)
                xb, yb = data.x[on], data.y[on]
            yield Batch(xb.to(target, non_blocking=True), yb.to(target), idx)
        return
    yield from _file_batches(data, chunks, device, show_progress, desc)


def _progress(items: Any, show: bool | None, desc: str, total: int) -> Any:
    from robustlens._runtime import progress

    return progress(items, desc=desc, show=show, total=total, unit="batch")


class _Reader(torch.utils.data.Dataset[tuple[int, Tensor | None, int, str]]):
    """What a DataLoader worker computes for one position: ``(position, image or None, label,
    error)``; an unreadable file is a value, not an exception, so the main process decides."""

    def __init__(self, files: ImageFiles) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, int, str]:
        image, error = self.files.read(i)
        return i, image, int(self.files.y[i]), error


def _collate(items: list[tuple[int, Tensor | None, int, str]]) -> dict[str, Any]:
    """Stack the readable images of one chunk; pass the unreadable ones and any size mismatch
    on to the main process, which raises or records them."""
    good = [(i, im, lab) for i, im, lab, _ in items if im is not None]
    bad = [(i, err) for i, im, _, err in items if im is None]
    out: dict[str, Any] = {"bad": bad, "mismatch": None, "x": None}
    out["index"] = torch.tensor([i for i, _, _ in good], dtype=torch.long)
    out["y"] = torch.tensor([lab for _, _, lab in good], dtype=torch.long)
    if good:
        shapes = [im.shape for _, im, _ in good]
        odd = next((k for k, s in enumerate(shapes) if s != shapes[0]), None)
        if odd is None:
            out["x"] = torch.stack([im for _, im, _ in good])
        else:
            out["mismatch"] = (good[0][0], tuple(shapes[0]), good[odd][0], tuple(shapes[odd]))
    return out


def _size_message(files: ImageFiles, mismatch: tuple[int, Any, int, Any]) -> str:
    a, sa, b, sb = mismatch
    return (
        f"{files.name}: {files.relative(b)} is {sb[1]}x{sb[2]} (HxW) but {files.relative(a)} is "
        f"{sa[1]}x{sa[2]}; images of different sizes need a common input geometry: pass "
        "preprocessing=Preprocessing(input_size=(H, W), resize=R) (resize the shorter side to R, "
        "then centre-crop HxW, e.g. input_size=(224, 224), resize=256), or on the command line "
        "--input-size H --resize R (a model's own preprocessing does this)"
    )


def _record_unreadable(files: ImageFiles, bad: list[tuple[int, str]]) -> list[SkippedFile]:
    """Record the files a worker could not decode in ``files``' skip log (raising at the first
    one when ``files.strict``); return them as :class:`SkippedFile` s."""
    skipped = []
    for i, error in bad:
        path = files.files[i]
        files.log.errors.setdefault(path, error)
        if files.strict:
            raise DataFileError(
                f"{error} (strict: stopped at the first unreadable file; without --strict "
                "such files are skipped, counted and listed in the results)"
            )
        skipped.append(SkippedFile(index=i, path=files.relative(i), error=error))
    return skipped


def _file_batches(
    files: ImageFiles,
    chunks: list[Tensor],
    device: torch.device | str | None,
    show_progress: bool | None,
    desc: str,
) -> Iterator[Batch]:
    from torch.utils.data import DataLoader

    target = torch.device(device) if device is not None else torch.device("cpu")
    # One chunk needs no worker processes (starting them costs more than decoding it).
    workers = 0 if len(chunks) <= 1 else min(files.workers, len(chunks))
    loader = DataLoader(
        _Reader(files),
        batch_sampler=[c.tolist() for c in chunks],
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=target.type == "cuda",
        prefetch_factor=2 if workers else None,
    )
    for out in _progress(loader, show_progress, desc, len(chunks)):
        skipped = _record_unreadable(files, out["bad"])
        if out["mismatch"] is not None:
            raise DataFileError(_size_message(files, out["mismatch"]))
        if out["x"] is None:
            continue
        yield Batch(
            out["x"].to(target, non_blocking=True),
            out["y"].to(target, non_blocking=True),
            out["index"],
            skipped,
        )


@dataclass
class Worked:
    """One output of a per-chunk computation (:func:`map_chunks`): ``value``, computed from the
    images of one chunk, with their labels ``y`` and positions ``index`` (int64, CPU), and the
    chunk's files that did not decode (listed with the chunk's first output only)."""

    value: Any
    y: Tensor
    index: Tensor
    skipped: list[SkippedFile] = field(default_factory=list)


class _ChunkWork(torch.utils.data.IterableDataset[dict[str, Any]]):
    """Worker ``w`` of ``W`` decodes the chunks ``w, w + W, ...`` of an :class:`ImageFiles`, each
    once, and yields every output of ``work`` on it."""

    def __init__(self, files: ImageFiles, chunks: list[Tensor], work: Callable[[Batch], Any]):
        self.files = files
        self.chunks = chunks
        self.work = work

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        first, step = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = _Reader(self.files)
        for k in range(first, len(self.chunks), step):
            out = _collate([reader[i] for i in self.chunks[k].tolist()])
            head = {"bad": out["bad"], "mismatch": out["mismatch"], "y": out["y"]}
            head["index"] = out["index"]
            if out["x"] is None:
                yield {**head, "value": None, "empty": True}
                continue
            batch = Batch(out["x"], out["y"], out["index"])
            for number, value in enumerate(self.work(batch)):
                yield {**head, "bad": out["bad"] if number == 0 else [], "value": value}


def _as_is(item: Any) -> Any:
    return item


def map_chunks(
    data: ImageData,
    batch_size: int,
    work: Callable[[Batch], Iterator[Any]],
    *,
    device: torch.device | str | None = None,
) -> Iterator[Worked]:
    """The outputs of ``work(batch)`` for each chunk ``[k B, (k + 1) B)`` of ``data``, computed
    where the chunk's images are decoded.

    For an :class:`ImageFiles` with ``workers > 0`` that is the ``DataLoader`` worker processes:
    worker ``w`` reads the chunks ``w, w + workers, ...`` (each once, on the CPU) and sends back
    ``work``'s outputs one by one, so a computation that makes many images from each chunk (every
    corruption at every severity) never holds more than a chunk and a few outputs per worker, and
    never the data set. With ``workers == 0``, or for an :class:`ImageDataset` (its batches on
    ``device``, default the tensors' device), ``work`` runs in this process. ``work`` must be
    picklable (a module-level function or a dataclass instance) when workers are used; it gets a
    :class:`Batch` of the chunk's readable images and returns an iterator. Outputs come chunk by
    chunk, in ``work``'s order within a chunk; the chunks of different workers interleave.

    Unreadable files are handled as :func:`batches` does (recorded in ``data.skipped``, or
    :class:`~robustlens.errors.DataFileError` with ``data.strict``).

    Example:
        >>> ds = ImageDataset(torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 0, 1, 0]))
        >>> def sizes(batch):
        ...     yield len(batch)
        >>> [(w.value, w.index.tolist()) for w in map_chunks(ds, 2, sizes)]
        [(2, [0, 1]), (2, [2, 3]), (1, [4])]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"map_chunks: 'batch_size' must be an int >= 1, got {batch_size!r}")
    check_image_data(data, "map_chunks")
    if isinstance(data, ImageDataset):
        for batch in batches(data, batch_size, device=device, show_progress=False):
            for value in work(batch):
                yield Worked(value, batch.y, batch.index)
        return
    from torch.utils.data import DataLoader

    chunks = _chunks(torch.arange(len(data)), batch_size)
    workers = 0 if len(chunks) <= 1 else min(data.workers, len(chunks))
    target = torch.device(device) if device is not None else torch.device("cpu")
    loader = DataLoader(
        _ChunkWork(data, chunks, work),
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=target.type == "cuda",
        prefetch_factor=2 if workers else None,
    )
    for out in loader:
        skipped = _record_unreadable(data, out["bad"])
        if out["mismatch"] is not None:
            raise DataFileError(_size_message(data, out["mismatch"]))
        if out.get("empty"):
            continue
        yield Worked(out["value"], out["y"], out["index"], skipped)


def in_memory(data: ImageData, *, with_index: bool = False) -> Any:
    """The images of ``data`` as an :class:`ImageDataset` (itself when it is one).

    For the small samples an algorithm needs as one tensor (the images LIME explains, a
    gallery, a minimum-norm attack's sample). Unreadable files are left out (and listed in
    ``data.skipped``); ``with_index=True`` also returns the positions of the images kept, int64
    ``(M,)``.

    Example:
        >>> import torch
        >>> ds = ImageDataset(torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 0]))
        >>> in_memory(ds) is ds
        True
    """
    check_image_data(data, "in_memory")
    if isinstance(data, ImageDataset):
        return (data, torch.arange(len(data))) if with_index else data
    x: Tensor | None = None
    y = torch.empty(len(data), dtype=torch.long)
    kept = torch.empty(len(data), dtype=torch.long)
    count = 0
    for batch in batches(data, max(1, min(len(data), 256))):
        if x is None:
            x = torch.empty(len(data), *batch.x.shape[1:])
        m = len(batch)
        x[count : count + m] = batch.x
        y[count : count + m] = batch.y
        kept[count : count + m] = batch.index
        count += m
    if x is None:
        c, h, w = data._declared_shape()
        x = torch.empty(0, c, h or 1, w or 1)
    elif count < len(data):
        x = x[:count].clone()
    ds = ImageDataset(x, y[:count].clone(), classes=list(data.classes), name=data.name)
    return (ds, kept[:count].clone()) if with_index else ds


def fingerprint(data: ImageData) -> str:
    """A short hash of what a data set holds: the images and labels of an :class:`ImageDataset`,
    the files (paths, sizes), labels, classes and input geometry of an :class:`ImageFiles`."""
    if isinstance(data, ImageFiles):
        return data.fingerprint()
    h = hashlib.sha256()
    h.update(data.x.detach().cpu().contiguous().numpy().tobytes())
    h.update(data.y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_outputs(
    model: nn.Module,
    data: ImageData,
    reduce: Callable[[Tensor], Tensor] | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    show_progress: bool | None = None,
    desc: str = "predict",
) -> tuple[Tensor, Tensor]:
    """``reduce(logits)`` of ``model`` over every readable image of ``data``, batch by batch.

    Runs in eval mode (restored afterwards) under ``torch.no_grad`` on ``device`` (default: the
    model's). ``reduce`` keeps what is needed of each batch's logits (default: all of them), so a
    pass over 50,000 images need not hold 50,000 rows of 1000 logits.

    Returns:
        ``(values, index)``: the reduced outputs concatenated on the CPU, ``(M, ...)``, and the
        positions of the ``M`` images read, int64 ``(M,)`` (``M < len(data)`` only when files
        were skipped).
    """
    from robustlens._checks import check_logits, model_device
    from robustlens._runtime import chunked_forward, inference_mode

    target = torch.device(device) if device is not None else model_device(model)
    if target is None:
        target = data.x.device if isinstance(data, ImageDataset) else torch.device("cpu")
    values: list[Tensor] = []
    index: list[Tensor] = []
    with inference_mode(model), torch.no_grad():
        for batch in batches(
            data, batch_size, device=target, show_progress=show_progress, desc=desc
        ):
            logits = check_logits(chunked_forward(model, batch.x), len(batch))
            out = logits if reduce is None else reduce(logits)
            values.append(out.cpu())
            index.append(batch.index)
    if not values:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(values), torch.cat(index)


def predict(
    model: nn.Module,
    data: ImageData,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    show_progress: bool | None = None,
    desc: str = "predict",
    where: str | None = None,
) -> Tensor:
    """The predicted class of every image of ``data``: int64 ``(N,)`` on the CPU, ``-1`` for a
    file that did not decode.

    With ``where`` (the caller's name), a model whose number of outputs is not the data's
    number of classes raises :class:`~robustlens.errors.ModelOutputError` at the first batch.
    """

    def argmax(logits: Tensor) -> Tensor:
        if where is not None and logits.shape[1] != data.num_classes:
            raise ModelOutputError(
                f"{where}: the model has {logits.shape[1]} classes but {data.name!r} has "
                f"{data.num_classes}; use a model trained on this data set"
            )
        return logits.argmax(1)

    values, index = model_outputs(
        model,
        data,
        argmax,
        batch_size=batch_size,
        device=device,
        show_progress=show_progress,
        desc=desc,
    )
    pred = torch.full((len(data),), -1, dtype=torch.long)
    pred[index] = values.long()
    return pred
