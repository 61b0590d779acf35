"""Image quilting: rebuild an image from patches of clean images (Guo et al., 2018).

"Countering adversarial images using input transformations" (Guo, Rana, Cissé and van der Maaten,
ICLR 2018) replaces every patch of the input by a patch drawn from a database of patches cut from
clean images: one of the ``k`` nearest database patches in pixel space, chosen uniformly at random.
The output is made only of clean pixels, so a small perturbation survives only as far as it changes
which patches are chosen. The database acts as a secret key the attacker does not know, and the
random choice among the ``k`` neighbours makes the defense randomized; it is not differentiable
(attack it with BPDA and EOT).

Two pieces:

- :func:`knn`: exact k-nearest-neighbour search under the squared L2 distance, batched in blocks of
  queries x database rows so that memory stays bounded whatever the database size;
- :class:`Quilting`: the preprocessor, with :meth:`Quilting.from_images` to cut the database from
  clean images.

The search runs in torch on the input's device, or in a faiss ``IndexFlatL2`` (exact as well) when
faiss is installed and the tensors are on the CPU (``pip install faiss-cpu``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from robustlens._checks import check_at_least, check_choice, check_images, check_positive
from robustlens.defenses.base import Preprocessor
from robustlens.errors import DeviceError, DTypeError, ParameterError, ShapeError

__all__ = ["Quilting", "knn"]

Backend = Literal["auto", "exact", "faiss"]
BACKENDS: tuple[str, ...] = ("auto", "exact", "faiss")

#: Default block side of :func:`knn`: at most ``chunk * chunk`` distances live at once
#: (4096 -> 16.8M float32 entries, 64 MiB).
DEFAULT_CHUNK = 4096

_FAISS_HINT = "install it with `pip install faiss-cpu`, or use backend='exact'"


@functools.cache
def _import_faiss() -> ModuleType | None:
    """The faiss module, or ``None`` when it is not installed (looked up once)."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


# --------------------------------------------------------------------------- k nearest neighbours


def knn(
    queries: Tensor,
    database: Tensor,
    k: int,
    *,
    chunk: int = DEFAULT_CHUNK,
    database_norms: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact ``k`` nearest database rows of every query under the squared L2 distance.

    Distances are ``||q||^2 - 2 q.d + ||d||^2`` computed with one matrix product per block of
    ``chunk`` queries x ``chunk`` database rows (so at most ``chunk**2`` distances exist at once);
    a running top-k is merged across the database blocks. Everything runs in torch on the inputs'
    device, without host synchronisation.

    Args:
        queries: the points to search for.
        database: the points searched.
        k: number of neighbours, ``1 <= k <= M``.
        chunk: rows per block, of queries and of database alike.
        database_norms: ``(database ** 2).sum(1)`` when precomputed.

    Returns:
        ``(distances, indices)``: squared L2 distances in increasing order, and the database rows
        they belong to (int64).

    Shape: queries (Q, D), database (M, D), database_norms (M,) -> distances (Q, k),
    indices (Q, k).

    Example:
        >>> import torch
        >>> db = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
        >>> d, i = knn(torch.tensor([[0.9, 0.1]]), db, 2)
        >>> i.tolist(), [round(v, 2) for v in d[0].tolist()]
        ([[1, 0]], [0.02, 0.82])
    """
    for name, t in (("queries", queries), ("database", database)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            got = f"dtype {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
            raise DTypeError(f"knn: {name!r} must be a float tensor, got {got}")
        if t.ndim != 2:
            raise ShapeError(
                f"knn: {name!r} must have shape ({name[0].upper()}, D), got {tuple(t.shape)}; "
                "flatten each point with .flatten(1)"
            )
    if queries.shape[1] != database.shape[1]:
        raise ShapeError(
            f"knn: queries and database must have the same dimension D, got queries "
            f"{tuple(queries.shape)} and database {tuple(database.shape)}"
        )
    if queries.device != database.device:
        raise DeviceError(
            f"knn: queries are on {queries.device} but the database is on {database.device}; "
            "move one of them"
        )
    m = database.shape[0]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= m:
        raise ParameterError(f"knn: 'k' must be an int in [1, {m}] (the database size), got {k!r}")
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ParameterError(f"knn: 'chunk' must be an int >= 1, got {chunk!r}")
    if database_norms is not None and (
        not isinstance(database_norms, Tensor) or tuple(database_norms.shape) != (m,)
    ):
        got = (
            str(tuple(database_norms.shape))
            if isinstance(database_norms, Tensor)
            else type(database_norms).__name__
        )
        raise ShapeError(
            f"knn: 'database_norms' must have shape ({m},), got {got}; leave it out to compute it"
        )
    return _knn(queries, database, k, chunk=chunk, database_norms=database_norms)


def _knn(
    queries: Tensor,
    database: Tensor,
    k: int,
    *,
    chunk: int,
    database_norms: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`knn` without the checks."""
    queries = queries.to(database.dtype)
    norms = database.square().sum(1) if database_norms is None else database_norms
    norms = norms.to(database.dtype)
    m = database.shape[0]
    out_d: list[Tensor] = []
    out_i: list[Tensor] = []
    for q0 in range(0, queries.shape[0], chunk):
        q = queries[q0 : q0 + chunk]
        best_d: Tensor | None = None
        best_i: Tensor | None = None
        for d0 in range(0, m, chunk):
            block = database[d0 : d0 + chunk]
            # ||d||^2 - 2 q.d: the query's own norm does not change its ranking (added at the end).
            dist = torch.addmm(norms[d0 : d0 + chunk], q, block.T, alpha=-2.0)
            kk = min(k, block.shape[0])
            blk_d, blk_i = torch.topk(dist, kk, dim=1, largest=False, sorted=False)
            blk_i = blk_i + d0
            if best_d is None or best_i is None:
                best_d, best_i = blk_d, blk_i
            else:
                cand_d = torch.cat([best_d, blk_d], dim=1)
                cand_i = torch.cat([best_i, blk_i], dim=1)
                best_d, pos = torch.topk(
                    cand_d, min(k, cand_d.shape[1]), dim=1, largest=False, sorted=False
                )
                best_i = cand_i.gather(1, pos)
        assert best_d is not None and best_i is not None  # m >= k >= 1: one block at least
        best_d, order = best_d.sort(dim=1)
        out_d.append((best_d + q.square().sum(1, keepdim=True)).clamp_min_(0.0))
        out_i.append(best_i.gather(1, order))
    if not out_d:
        empty = queries.new_empty((0, k))
        return empty, empty.long()
    return torch.cat(out_d), torch.cat(out_i)


# --------------------------------------------------------------------------- patch grid


def grid(size: int, patch: int, stride: int) -> list[int]:
    """Patch positions along an axis of ``size`` pixels that cover it entirely.

    ``0, stride, 2 * stride, ...`` and, when that grid does not reach the border, a final
    ``size - patch``.

    Example:
        >>> grid(8, 3, 3), grid(9, 3, 3), grid(5, 2, 1)
        ([0, 3, 5], [0, 3, 6], [0, 1, 2, 3])
    """
    last = size - patch
    positions = list(range(0, last + 1, stride))
    if positions[-1] != last:
        positions.append(last)
    return positions


def _painter(size: int, patch: int, positions: list[int], device: torch.device) -> Tensor:
    """For each pixel along an axis: its index in the tiled patches ``(n * patch,)``.

    The pixel comes from the last patch covering it (painting in order, a later patch overwrites),
    at its offset inside that patch.
    """
    pos = torch.tensor(positions, device=device)
    pixels = torch.arange(size, device=device)
    last = torch.searchsorted(pos, pixels, right=True) - 1
    return last * patch + (pixels - pos[last])


@dataclass(frozen=True)
class _Layout:
    """Where a batch's patches sit: ``rows`` x ``cols`` patch positions over (N, C, H, W) images."""

    n: int
    c: int
    p: int
    rows: list[int]
    cols: list[int]
    h: int
    w: int
    device: torch.device

    def paint(self, patches: Tensor) -> Tensor:
        """Patches ``(N * rows * cols, C * p * p)`` painted in raster order -> (N, C, H, W)."""
        n, c, p, nr, nc = self.n, self.c, self.p, len(self.rows), len(self.cols)
        # Tiles side by side: tiled[n, ch, i * p + a, j * p + b] = patch (i, j) at (ch, a, b).
        tiled = (
            patches.reshape(n, nr, nc, c, p, p)
            .permute(0, 3, 1, 4, 2, 5)
            .reshape(n, c, nr * p, nc * p)
        )
        out = tiled.index_select(2, _painter(self.h, p, self.rows, self.device))
        return out.index_select(3, _painter(self.w, p, self.cols, self.device))


class _SoftQuilt(torch.autograd.Function):
    """``g = sum_j w_j d_j`` per query over its candidate patches ``d_j``, with
    ``w = softmax(-||q - d_j||^2 / T)`` and ``T = temperature * mean_j ||q - d_j||^2`` (held
    constant in the backward pass).

    The vector-Jacobian product is ``(2 / T) sum_j w_j (u . (d_j - g)) (d_j - g)``. Both passes
    gather the candidates ``chunk`` queries at a time; only the indices, weights and ``T`` are
    saved between them.

    Shape: queries (Q, D), database (M, D), norms (M,) its squared row norms, neighbours (Q, B)
    -> (Q, D).
    """

    @staticmethod
    def forward(
        ctx: Any,
        queries: Tensor,
        database: Tensor,
        norms: Tensor,
        neighbours: Tensor,
        temperature: float,
        chunk: int,
    ) -> Tensor:
        out = torch.empty_like(queries)
        weights = queries.new_empty(neighbours.shape)
        scale = queries.new_empty(len(queries), 1)
        for i in range(0, len(queries), chunk):
            q = queries[i : i + chunk]
            d = database[neighbours[i : i + chunk]].to(q.dtype)  # (c, B, D)
            d2 = q.square().sum(1, keepdim=True) - 2 * torch.einsum("qd,qbd->qb", q, d)
            d2 = d2 + norms[neighbours[i : i + chunk]].to(q.dtype)
            t = temperature * d2.mean(1, keepdim=True).clamp_min(1e-6)
            w = torch.softmax(-d2 / t, dim=1)
            out[i : i + chunk] = torch.einsum("qb,qbd->qd", w, d)
            weights[i : i + chunk], scale[i : i + chunk] = w, t
        ctx.save_for_backward(database, neighbours, weights, scale, out)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None, None]:
        database, neighbours, weights, scale, out = ctx.saved_tensors
        result = torch.empty_like(grad)
        for i in range(0, len(grad), ctx.chunk):
            sl = slice(i, i + ctx.chunk)
            centred = database[neighbours[sl]].to(grad.dtype) - out[sl].unsqueeze(1)  # (c, B, D)
            coef = weights[sl] * torch.einsum("qd,qbd->qb", grad[sl], centred)
            result[sl] = torch.einsum("qb,qbd->qd", coef, centred) * (2 / scale[sl])
        return result, None, None, None, None, None


# --------------------------------------------------------------------------- the defense


class Quilting(Preprocessor):
    """Image quilting (Guo et al., 2018): every patch replaced by a clean database patch.

    The input's patches on a grid of step ``stride`` that covers the whole image (positions ``0,
    stride, 2 * stride, ...`` plus a last one flush with the border) are each replaced by one of
    their ``k`` nearest database patches (squared L2 in pixel space), drawn uniformly at random
    from this module's generator. Overlapping patches are painted in raster order, a later one
    overwriting, so every output pixel is a pixel of a database patch and none is left from the
    input.

    The database is a buffer: ``quilting.to(device)`` moves it, and the search runs on the input's
    device (which must be the database's). ``backend="exact"`` searches in torch blocks of
    ``chunk`` x ``chunk`` distances; ``"faiss"`` in a faiss ``IndexFlatL2`` (exact too, CPU only,
    built on first use). ``"auto"`` is the exact torch search: on the machines measured (see
    docs/benchmarks.md) it was faster than faiss's flat index, which stays available on request.

    Args:
        database: clean patches; usually built with :meth:`from_images`.
        stride: step of the patch grid, ``1 <= stride <= p``; ``stride == p`` tiles the image.
        k: neighbours to draw from (``k=1``: always the nearest patch, deterministic).
        backend: ``"auto"``, ``"exact"`` or ``"faiss"``.
        chunk: block side of the exact search (at most ``chunk**2`` distances at once).
        bpda_candidates: nearest patches in BPDA's soft quilt (:meth:`straight_through`).
        bpda_temperature: its softmax temperature, relative to the candidates' mean squared
            distance.
        seed: seed of the random choice among the neighbours.

    Shape: database (M, C, p, p); x (N, C, H, W) in [0, 1] with H, W >= p -> (N, C, H, W) in
    [0, 1], detached, on x's device.

    Example:
        >>> import robustlens as rl
        >>> digits = rl.data.load("digits").x
        >>> quilt = Quilting.from_images(digits[50:], patch=2, size=2000, k=5)
        >>> quilt
        Quilting(database=2000x1x2x2, stride=2, k=5, backend='auto', seed=0)
        >>> out = quilt(digits[:4])
        >>> out.shape, bool(out.min() >= 0 and out.max() <= 1)
        (torch.Size([4, 1, 8, 8]), True)
        >>> tiles = out.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).reshape(-1, 4)
        >>> bool((tiles[:, None] == quilt.database[None]).all(2).any(1).all())
        True
    """

    differentiable: ClassVar[bool] = False
    randomized: ClassVar[bool] = True

    database: Tensor
    database_norms: Tensor

    def __init__(
        self,
        database: Tensor,
        *,
        stride: int,
        k: int = 10,
        backend: Backend = "auto",
        chunk: int = DEFAULT_CHUNK,
        bpda_candidates: int = 50,
        bpda_temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        self.stride = stride
        self.k = k
        self.backend = backend
        self.chunk = chunk
        self.bpda_candidates = bpda_candidates
        self.bpda_temperature = bpda_temperature
        check_choice(self, "backend", BACKENDS)
        check_at_least(self, "stride", 1)
        check_at_least(self, "k", 1)
        check_at_least(self, "chunk", 1)
        check_at_least(self, "bpda_candidates", 1)
        check_positive(self, "bpda_temperature")
        if isinstance(database, Tensor) and database.ndim == 4 and database.shape[0] == 0:
            raise ShapeError("Quilting: the database is empty; give at least k patches")
        database = check_images(database, name="database", where="Quilting")
        m, c, ph, pw = database.shape
        if ph != pw:
            raise ShapeError(
                f"Quilting: database patches must be square (M, C, p, p), got {tuple(database.shape)}"
            )
        self.patch = ph
        self.channels = c
        if stride > ph:
            raise ParameterError(
                f"Quilting: 'stride' must be an int in [1, {ph}] (the patch size), got {stride!r}; "
                "a stride larger than the patch leaves pixels unwritten"
            )
        if k > m:
            raise ParameterError(
                f"Quilting: 'k' must be an int in [1, {m}] (the database size), got {k!r}; "
                "lower k or build a larger database"
            )
        if backend == "faiss" and _import_faiss() is None:
            raise ParameterError(
                f"Quilting: backend='faiss' needs faiss, which is missing; {_FAISS_HINT}"
            )
        flat = database.detach().reshape(m, -1).to(torch.float32).contiguous()
        self.register_buffer("database", flat)
        self.register_buffer("database_norms", flat.square().sum(1))
        self._faiss_index: Any = None

    @classmethod
    def from_images(
        cls,
        clean_images: Tensor,
        *,
        patch: int = 5,
        stride: int | None = None,
        k: int = 10,
        size: int | None = 1_000_000,
        backend: Backend = "auto",
        chunk: int = DEFAULT_CHUNK,
        bpda_candidates: int = 50,
        bpda_temperature: float = 1.0,
        seed: int = 0,
    ) -> Quilting:
        """Quilting with a database of ``size`` patches cut from ``clean_images``.

        The patches are drawn uniformly without replacement (generator seeded with ``seed``) among
        all ``N * (H - patch + 1) * (W - patch + 1)`` stride-1 patches of the images; ``size=None``
        takes them all. ``stride`` defaults to ``patch`` (non-overlapping tiles, as in the paper).

        Shape: clean_images (N, C, H, W) in [0, 1] -> database (size, C, patch, patch).
        """
        where = "Quilting.from_images"
        x = check_images(clean_images, name="clean_images", where=where)
        n, _, h, w = x.shape
        if not isinstance(patch, int) or isinstance(patch, bool) or not 1 <= patch <= min(h, w):
            raise ParameterError(
                f"{where}: 'patch' must be an int in [1, {min(h, w)}] (the smaller image side), "
                f"got {patch!r}"
            )
        total = n * (h - patch + 1) * (w - patch + 1)
        if size is not None and (
            not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= total
        ):
            raise ParameterError(
                f"{where}: 'size' must be an int in [1, {total}] (the number of {patch}x{patch} "
                f"patches in the images) or None for all of them, got {size!r}"
            )
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ParameterError(f"{where}: 'seed' must be an int, got {seed!r}")
        chosen = (
            torch.arange(total)
            if size is None
            else _sample_without_replacement(total, size, torch.Generator().manual_seed(seed))
        )
        hp, wp = h - patch + 1, w - patch + 1
        chosen = chosen.to(x.device)
        img, rest = chosen // (hp * wp), chosen % (hp * wp)
        views = x.detach().unfold(2, patch, 1).unfold(3, patch, 1)  # (N, C, hp, wp, p, p)
        database = views[img, :, rest // wp, rest % wp]  # (size, C, p, p)
        return cls(
            database,
            stride=patch if stride is None else stride,
            k=k,
            backend=backend,
            chunk=chunk,
            bpda_candidates=bpda_candidates,
            bpda_temperature=bpda_temperature,
            seed=seed,
        )

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            queries, layout = self._queries(x.detach())
            neighbours = self._search(queries, self.k)  # (Q, k)
            out = layout.paint(self.database[self._pick(neighbours)])
        return out.to(x.dtype)

    def straight_through(self, x: Tensor) -> Tensor:
        """BPDA's view of the layer: the same output as :meth:`forward` (same draw), with the
        gradient of a soft nearest-neighbour quilt.

        Each patch ``q`` is approximated by ``sum_j w_j d_j`` over its ``bpda_candidates`` nearest
        database patches ``d_j``, ``w = softmax(-||q - d_j||^2 / T)`` with ``T`` equal to
        ``bpda_temperature`` times the mean of those squared distances. Its gradient points the
        attack towards the database patches whose substitution raises the loss, the only way a
        perturbation changes a quilted image (the identity's gradient asks for pixel changes that
        quilting discards); on Fashion-MNIST it leaves about half the identity's robust accuracy
        under the same attack (``docs/benchmarks.md``). The value is :meth:`forward`'s up to ties
        between equally distant database patches, which the wider search may order differently.
        Memory stays bounded: the candidates are gathered in blocks of ``chunk`` queries, in the
        forward and again in the backward pass, which saves only their indices and weights.

        Shape: (N, C, H, W) -> (N, C, H, W).
        """
        queries, layout = self._queries(x)
        big = min(max(self.k, self.bpda_candidates), len(self.database))
        with torch.no_grad():
            neighbours = self._search(queries.detach(), big)  # (Q, big), nearest first
            out = layout.paint(self.database[self._pick(neighbours[:, : self.k])])
        soft = _SoftQuilt.apply(
            queries,
            self.database,
            self.database_norms,
            neighbours[:, : min(self.bpda_candidates, big)],
            self.bpda_temperature,
            self.chunk,
        )
        g = layout.paint(soft)
        return g + (out.to(x.dtype) - g).detach()

    def _queries(self, x: Tensor) -> tuple[Tensor, _Layout]:
        """The patches to replace, ``(N * rows * cols, C * p * p)``, and how to paint them back."""
        x = self._check(x)
        n, c, h, w = x.shape
        p, s = self.patch, self.stride
        if c != self.channels:
            raise ShapeError(
                f"Quilting: x has {c} channels but the database patches have {self.channels}; "
                "build the database from images like the ones to quilt (Quilting.from_images)"
            )
        if h < p or w < p:
            raise ShapeError(
                f"Quilting: images must be at least {p}x{p} (the patch size), got {h}x{w}"
            )
        if x.device != self.database.device:
            raise DeviceError(
                f"Quilting: x is on {x.device} but the patch database is on "
                f"{self.database.device}; move the defense with quilting.to('{x.device}')"
            )
        layout = _Layout(n, c, p, grid(h, p, s), grid(w, p, s), h, w, x.device)
        views = x.unfold(2, p, 1).unfold(3, p, 1)  # (N, C, H-p+1, W-p+1, p, p)
        r = torch.tensor(layout.rows, device=x.device)
        cc = torch.tensor(layout.cols, device=x.device)
        patches = views[:, :, r[:, None], cc[None, :]]  # (N, C, nr, nc, p, p)
        return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * p * p), layout

    def _pick(self, neighbours: Tensor) -> Tensor:
        """Database row of each query: one of its ``k`` neighbours, drawn from the generator."""
        pick = torch.randint(
            0,
            self.k,
            (len(neighbours), 1),
            generator=self.generator(neighbours.device),
            device=neighbours.device,
        )
        return neighbours.gather(1, pick).squeeze(1)

    def _search(self, queries: Tensor, k: int) -> Tensor:
        """Indices ``(Q, k)`` of the ``k`` nearest database patches of each query.

        On the CPU each distinct patch is searched once: the blank background of most images, and
        the copies of an image that EOT feeds in one call (``samples`` per image), cost one search.
        (On an accelerator finding the distinct patches would cost a host synchronisation per
        call, more than the search it saves.)
        """
        if queries.device.type == "cpu" and len(queries) > 1:
            distinct, inverse = torch.unique(queries, dim=0, return_inverse=True)
            if len(distinct) < len(queries):
                return self._search_all(distinct, k)[inverse]
        return self._search_all(queries, k)

    def _search_all(self, queries: Tensor, k: int) -> Tensor:
        if self.backend != "faiss":
            return _knn(
                queries, self.database, k, chunk=self.chunk, database_norms=self.database_norms
            )[1]
        if queries.device.type != "cpu":
            raise DeviceError(
                f"Quilting: backend='faiss' runs on the CPU (faiss-cpu) but x is on "
                f"{queries.device}; use backend='exact' or 'auto' for tensors on {queries.device}"
            )
        index = self._faiss()
        q = queries.to(torch.float32).contiguous().numpy()
        _, indices = index.search(q, k)
        return torch.from_numpy(indices).long()

    def _faiss(self) -> Any:
        """The faiss ``IndexFlatL2`` over the database, built on first use."""
        if self._faiss_index is None:
            faiss = _import_faiss()
            if faiss is None:  # uninstalled since construction
                raise ParameterError(f"Quilting: faiss is missing; {_FAISS_HINT}")
            data = self.database.detach().to("cpu", torch.float32).contiguous().numpy()
            index = faiss.IndexFlatL2(data.shape[1])
            index.add(data)
            self._faiss_index = index
        return self._faiss_index

    # ------------------------------------------------------------------ cache invalidation

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Quilting:
        self._faiss_index = None  # the database may move or change dtype
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._faiss_index = None  # the database is overwritten in place
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_faiss_index"] = None  # rebuilt on use; faiss indexes do not pickle
        return state

    def extra_repr(self) -> str:
        m = self.database.shape[0]
        p = self.patch
        bpda = ""
        if (self.bpda_candidates, self.bpda_temperature) != (50, 1.0):
            bpda = f", bpda_candidates={self.bpda_candidates}, bpda_temperature={self.bpda_temperature}"
        return (
            f"database={m}x{self.channels}x{p}x{p}, stride={self.stride}, k={self.k}, "
            f"backend={self.backend!r}{bpda}, seed={self.seed}"
        )


def _sample_without_replacement(total: int, size: int, generator: torch.Generator) -> Tensor:
    """``size`` distinct integers drawn uniformly from ``range(total)`` (int64, CPU).

    A permutation when ``size`` is a large share of ``total``; otherwise draws with replacement
    kept in order of first appearance (sequential sampling with repeats discarded is sampling
    without replacement), so that memory scales with ``size``, not ``total``.
    """
    if 2 * size >= total or total <= 1 << 22:
        return torch.randperm(total, generator=generator)[:size]
    drawn = torch.empty(0, dtype=torch.long)
    while True:
        more = torch.randint(0, total, (size + size // 4 + 16,), generator=generator)
        drawn = torch.cat([drawn, more])
        values, inverse = torch.unique(drawn, return_inverse=True)
        if len(values) >= size:
            break
    # First appearance of each distinct value, then the first ``size`` values in that order.
    position = torch.arange(len(drawn))
    first = torch.full((len(values),), len(drawn), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, position, reduce="amin")
    return values[first.argsort()[:size]]
