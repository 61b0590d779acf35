"""Image quilting: the preprocessor contract, exact kNN, and "made only of database patches"."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import Tensor

import robustlens.defenses.quilting as quilting_module
from robustlens.defenses.quilting import Quilting, grid, knn
from robustlens.errors import DeviceError, DTypeError, ParameterError, RangeError, ShapeError


def rand(*shape: int, seed: int = 0, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


@pytest.fixture
def x() -> Tensor:
    # batch, channels, height and width all different, so a wrong broadcast fails
    return rand(4, 3, 5, 7, seed=1)


@pytest.fixture
def quilt() -> Quilting:
    return Quilting(rand(300, 3, 2, 2, seed=2), stride=2, k=5, backend="exact", seed=0)


# --------------------------------------------------------------------------- reference


def reference(x: Tensor, q: Quilting, chosen: Tensor | None = None) -> Tensor:
    """Slow quilting with Python loops: nearest patch (k=1) or the given choices, raster order."""
    n, c, h, w = x.shape
    p = q.patch
    out = torch.full_like(x, -1.0)
    db = q.database.view(-1, c, p, p)
    rows, cols = grid(h, p, q.stride), grid(w, p, q.stride)
    for b in range(n):
        for ri, i in enumerate(rows):
            for ci, j in enumerate(cols):
                if chosen is None:
                    query = x[b, :, i : i + p, j : j + p].reshape(1, -1)
                    best = int(torch.cdist(query.double(), q.database.double()).argmin())
                else:
                    best = int(chosen[b, ri, ci])
                out[b, :, i : i + p, j : j + p] = db[best]
    return out


# --------------------------------------------------------------------------- contract


def test_flags() -> None:
    assert Quilting.differentiable is False
    assert Quilting.randomized is True


def test_shape_range_dtype_device_and_input_untouched(quilt: Quilting, x: Tensor) -> None:
    before = x.clone()
    out = quilt(x)
    assert out.shape == x.shape
    assert out.dtype == torch.float32
    assert out.device == x.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(x, before)
    assert not out.requires_grad


def test_output_detached_even_when_input_requires_grad(quilt: Quilting, x: Tensor) -> None:
    out = quilt(x.clone().requires_grad_(True))
    assert not out.requires_grad and out.grad_fn is None


def test_float64_input_gives_float64_output(quilt: Quilting, x: Tensor) -> None:
    out = quilt(x.double())
    assert out.dtype == torch.float64
    quilt.reseed()
    assert torch.equal(out.float(), quilt(x))


def test_same_seed_same_output_consecutive_calls_differ_reseed_restarts(x: Tensor) -> None:
    db = rand(300, 3, 2, 2, seed=2)
    a = Quilting(db, stride=2, k=5, backend="exact", seed=7)
    b = Quilting(db, stride=2, k=5, backend="exact", seed=7)
    first = a(x)
    assert torch.equal(first, b(x))
    second = a(x)
    assert not torch.equal(first, second)
    a.reseed()
    assert torch.equal(a(x), first)
    other = Quilting(db, stride=2, k=5, backend="exact", seed=8)
    assert not torch.equal(other(x), first)


def test_k1_is_deterministic_and_picks_the_nearest_patch(x: Tensor) -> None:
    q = Quilting(rand(200, 3, 2, 2, seed=3), stride=2, k=1, backend="exact", seed=0)
    out = q(x)
    assert torch.equal(out, q(x))
    assert torch.equal(out, Quilting(q.database.view(-1, 3, 2, 2), stride=2, k=1, seed=5)(x))
    assert torch.equal(out, reference(x, q))


@pytest.mark.parametrize(("side", "patch", "stride"), [(8, 3, 3), (8, 3, 2), (7, 3, 1), (9, 3, 3)])
def test_k1_matches_raster_order_painting(side: int, patch: int, stride: int) -> None:
    x = rand(2, 2, side, side + 1, seed=4)
    q = Quilting(rand(150, 2, patch, patch, seed=5), stride=stride, k=1, backend="exact")
    assert torch.equal(q(x), reference(x, q))


def test_repeated_patches_are_searched_once_with_the_same_answer(
    quilt: Quilting, x: Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EOT's copies of an image (and blank background) cost one search per distinct patch."""
    searched: list[int] = []
    search_all = quilt._search_all
    monkeypatch.setattr(
        quilt, "_search_all", lambda q, k: searched.append(len(q)) or search_all(q, k)
    )
    copies = x.repeat_interleave(3, dim=0)  # (12, 3, 5, 7): 3 copies of 4 images
    queries = copies.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    got = quilt._search(queries, quilt.k)
    assert searched == [len(queries) // 3]
    want = search_all(queries, quilt.k)
    # The same neighbours (compared by distance, so that exact ties may pick either patch).
    dist = [(quilt.database[i] - queries[:, None]).square().sum(2) for i in (got, want)]
    assert torch.allclose(dist[0], dist[1], atol=1e-6)


def test_random_choice_is_among_the_k_nearest() -> None:
    # Tiles (stride == patch): each output tile is a database row among the tile's k nearest.
    x = rand(3, 1, 6, 6, seed=6)
    db = rand(80, 1, 3, 3, seed=7)
    q = Quilting(db, stride=3, k=4, backend="exact")
    out = q(x)
    tiles_in = x.unfold(2, 3, 3).unfold(3, 3, 3).permute(0, 2, 3, 1, 4, 5).reshape(-1, 9)
    tiles_out = out.unfold(2, 3, 3).unfold(3, 3, 3).permute(0, 2, 3, 1, 4, 5).reshape(-1, 9)
    nearest = torch.cdist(tiles_in, q.database).topk(4, dim=1, largest=False).indices
    for t_out, near in zip(tiles_out, nearest, strict=True):
        assert (q.database[near] == t_out).all(1).any()


def test_choice_is_uniform_over_the_k_neighbours() -> None:
    # One 2x2 image, one tile, k=4: the four neighbours appear about equally often.
    db = rand(10, 1, 2, 2, seed=8)
    q = Quilting(db, stride=2, k=4, backend="exact", seed=0)
    x = rand(1, 1, 2, 2, seed=9).expand(2000, 1, 2, 2).contiguous()
    picked = (q(x).reshape(2000, 1, 4) == q.database[None]).all(2).float().argmax(1)
    counts = torch.bincount(picked, minlength=10)
    near = torch.cdist(x[:1].reshape(1, 4), q.database).topk(4, largest=False).indices[0]
    assert int(counts[near].sum()) == 2000
    assert (counts[near] > 400).all() and (counts[near] < 600).all()


# --------------------------------------------------------------------------- made of database patches


def test_tiles_are_database_rows() -> None:
    x = rand(3, 2, 8, 6, seed=10)
    q = Quilting(rand(120, 2, 2, 2, seed=11), stride=2, k=6, backend="exact")
    out = q(x)
    tiles = out.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).reshape(-1, 8)
    assert tiles.shape[0] == 3 * 4 * 3
    assert (tiles[:, None] == q.database[None]).all(2).any(1).all()


def test_border_case_leaves_no_input_pixel() -> None:
    # side 8, patch 3, stride 3: positions 0, 3 and 5; the last patch overlaps its neighbour.
    x = rand(2, 1, 8, 8, seed=12, hi=0.4)
    db = rand(60, 1, 3, 3, seed=13, lo=0.6)  # values no input pixel can take
    q = Quilting(db, stride=3, k=3, backend="exact", seed=1)
    out = q(x)
    assert float(out.min()) >= 0.6
    assert torch.isin(out, q.database).all()
    # Painted in raster order, patch (i, j) stays visible up to where the next patches start; each
    # visible part is the same part of one database patch, and the visible parts tile the image.
    rows = cols = grid(8, 3, 3)
    assert rows == [0, 3, 5]
    ends = [3, 5, 8]
    db = q.database.view(-1, 3, 3)
    covered = torch.zeros(8, 8, dtype=torch.int64)
    for b in range(2):
        for i, i_end in zip(rows, ends, strict=True):
            for j, j_end in zip(cols, ends, strict=True):
                seen = out[b, 0, i:i_end, j:j_end]
                assert (db[:, : i_end - i, : j_end - j] == seen).flatten(1).all(1).any()
                covered[i:i_end, j:j_end] += 1
    assert (covered == 2).all()


def test_border_case_matches_painting_of_chosen_patches() -> None:
    # Recover the choices from the non-overlapped windows and repaint them with loops.
    x = rand(2, 1, 8, 8, seed=14, hi=0.4)
    db = rand(60, 1, 3, 3, seed=15, lo=0.6)
    q = Quilting(db, stride=3, k=1, backend="exact")
    assert torch.equal(q(x), reference(x, q))


# --------------------------------------------------------------------------- knn


def brute(queries: Tensor, database: Tensor, k: int) -> tuple[Tensor, Tensor]:
    d = torch.cdist(queries.double(), database.double()).square()
    return torch.topk(d, k, dim=1, largest=False)


@pytest.mark.parametrize(
    ("q", "m", "k", "chunk"),
    [(50, 97, 5, 4096), (50, 97, 5, 13), (37, 200, 7, 31), (10, 20, 20, 3), (5, 64, 1, 64)],
)
def test_knn_matches_cdist(q: int, m: int, k: int, chunk: int) -> None:
    queries = rand(q, 12, seed=16)
    database = rand(m, 12, seed=17)
    d, i = knn(queries, database, k, chunk=chunk)
    ref_d, ref_i = brute(queries, database, k)
    assert d.shape == i.shape == (q, k)
    assert i.dtype == torch.int64
    torch.testing.assert_close(d.double(), ref_d, atol=1e-4, rtol=1e-4)
    assert torch.equal(i.sort(1).values, ref_i.sort(1).values)
    assert (d[:, 1:] >= d[:, :-1]).all()
    # the distances belong to the indices returned
    own = (queries[:, None] - database[i]).square().sum(2)
    torch.testing.assert_close(d, own, atol=1e-4, rtol=1e-4)


def test_knn_with_precomputed_norms_and_no_queries() -> None:
    database = rand(40, 6, seed=18)
    norms = database.square().sum(1)
    queries = rand(9, 6, seed=19)
    assert torch.equal(
        knn(queries, database, 3, database_norms=norms)[1], knn(queries, database, 3)[1]
    )
    d, i = knn(queries[:0], database, 3)
    assert d.shape == i.shape == (0, 3)


def test_knn_errors() -> None:
    db = rand(10, 4)
    with pytest.raises(ParameterError, match=r"'k' must be an int in \[1, 10\]"):
        knn(rand(3, 4), db, 11)
    with pytest.raises(ParameterError, match="'k' must be"):
        knn(rand(3, 4), db, 0)
    with pytest.raises(ParameterError, match="'chunk' must be an int >= 1"):
        knn(rand(3, 4), db, 2, chunk=0)
    with pytest.raises(ShapeError, match="same dimension D"):
        knn(rand(3, 5), db, 2)
    with pytest.raises(ShapeError, match=r"'queries' must have shape \(Q, D\)"):
        knn(rand(3, 4, 1), db, 2)
    with pytest.raises(DTypeError, match="'database' must be a float tensor"):
        knn(rand(3, 4), torch.zeros(10, 4, dtype=torch.long), 2)
    with pytest.raises(ShapeError, match=r"'database_norms' must have shape \(10,\)"):
        knn(rand(3, 4), db, 2, database_norms=torch.zeros(9))


# --------------------------------------------------------------------------- from_images


def test_from_images_samples_exactly_size_distinct_patches() -> None:
    images = rand(6, 1, 8, 8, seed=20)
    q = Quilting.from_images(images, patch=3, size=100, k=4, seed=3)
    assert q.database.shape == (100, 9)
    assert q.stride == 3 and q.k == 4 and q.patch == 3
    assert len(torch.unique(q.database, dim=0)) == 100
    everything = images.unfold(2, 3, 1).unfold(3, 3, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 9)
    assert (q.database[:, None] == everything[None]).all(2).any(1).all()
    again = Quilting.from_images(images, patch=3, size=100, k=4, seed=3)
    assert torch.equal(again.database, q.database)
    other = Quilting.from_images(images, patch=3, size=100, k=4, seed=4)
    assert not torch.equal(other.database, q.database)


def test_from_images_all_patches_and_stride() -> None:
    images = rand(2, 3, 5, 6, seed=21)
    q = Quilting.from_images(images, patch=2, stride=1, size=None, k=3)
    assert q.database.shape == (2 * 4 * 5, 12)
    assert q.stride == 1


def test_sampling_without_replacement_large_population() -> None:
    g = torch.Generator().manual_seed(0)
    s = quilting_module._sample_without_replacement(10**8, 5000, g)
    assert s.shape == (5000,) and len(torch.unique(s)) == 5000
    assert int(s.min()) >= 0 and int(s.max()) < 10**8
    assert float(s.double().mean()) == pytest.approx(0.5e8, rel=0.05)


# --------------------------------------------------------------------------- errors


def test_constructor_errors() -> None:
    db = rand(20, 1, 3, 3)
    with pytest.raises(ParameterError, match=r"'stride' must be an int in \[1, 3\]"):
        Quilting(db, stride=4)
    with pytest.raises(ParameterError, match="'stride' must be an int >= 1"):
        Quilting(db, stride=0)
    with pytest.raises(ParameterError, match=r"'k' must be an int in \[1, 20\]"):
        Quilting(db, stride=3, k=21)
    with pytest.raises(ParameterError, match="'k' must be an int >= 1"):
        Quilting(db, stride=3, k=0)
    with pytest.raises(ParameterError, match="'backend' must be one of"):
        Quilting(db, stride=3, backend="annoy")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'chunk' must be an int >= 1"):
        Quilting(db, stride=3, chunk=0)
    with pytest.raises(ParameterError, match="'seed' must be an int"):
        Quilting(db, stride=3, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="must be square"):
        Quilting(rand(20, 1, 3, 2), stride=2)
    with pytest.raises(ShapeError, match="database is empty"):
        Quilting(rand(0, 1, 3, 3), stride=2)
    with pytest.raises(RangeError, match="database lies in"):
        Quilting(db * 255, stride=3)


def test_faiss_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quilting_module, "_import_faiss", lambda: None)
    with pytest.raises(ParameterError, match="pip install faiss-cpu"):
        Quilting(rand(20, 1, 3, 3), stride=3, backend="faiss")
    # "auto" falls back to the exact search
    q = Quilting(rand(20, 1, 3, 3), stride=3, k=2, backend="auto")
    assert q(rand(1, 1, 6, 6)).shape == (1, 1, 6, 6)


def test_from_images_errors() -> None:
    images = rand(2, 1, 6, 6)
    with pytest.raises(ParameterError, match=r"'patch' must be an int in \[1, 6\]"):
        Quilting.from_images(images, patch=7)
    with pytest.raises(ParameterError, match="'patch' must be"):
        Quilting.from_images(images, patch=0)
    with pytest.raises(ParameterError, match=r"'size' must be an int in \[1, 32\]"):
        Quilting.from_images(images, patch=3, size=33)
    with pytest.raises(ParameterError, match="'size' must be"):
        Quilting.from_images(images, patch=3, size=0)
    with pytest.raises(ParameterError, match=r"'stride' must be an int in \[1, 3\]"):
        Quilting.from_images(images, patch=3, stride=4, size=None)
    with pytest.raises(ParameterError, match=r"'k' must be an int in \[1, 5\]"):
        Quilting.from_images(images, patch=3, size=5, k=6)
    with pytest.raises(RangeError, match="clean_images lies in"):
        Quilting.from_images(images * 255, patch=3)
    with pytest.raises(ShapeError, match=r"clean_images must have shape \(N, C, H, W\)"):
        Quilting.from_images(images[0], patch=3)


def test_forward_errors(quilt: Quilting) -> None:
    with pytest.raises(ShapeError, match="x has 1 channels but the database patches have 3"):
        quilt(rand(2, 1, 5, 5))
    with pytest.raises(ShapeError, match="at least 2x2"):
        quilt(rand(2, 3, 1, 5))
    with pytest.raises(RangeError, match="Quilting: x lies in"):
        quilt(rand(2, 3, 5, 5) * 255)


# --------------------------------------------------------------------------- module plumbing


def test_database_is_a_buffer_and_state_dict_round_trips(quilt: Quilting, x: Tensor) -> None:
    assert {name for name, _ in quilt.named_buffers()} == {"database", "database_norms"}
    assert list(quilt.parameters()) == []
    fresh = Quilting(rand(300, 3, 2, 2, seed=99), stride=2, k=5, backend="exact")
    fresh.load_state_dict(quilt.state_dict())
    assert torch.equal(fresh(x), quilt(x))


def test_copy_and_pickle(quilt: Quilting, x: Tensor) -> None:
    for clone in (copy.deepcopy(quilt), pickle.loads(pickle.dumps(quilt))):
        clone.reseed()
        quilt.reseed()
        assert torch.equal(clone(x), quilt(x))


@pytest.mark.skipif(quilting_module._import_faiss() is None, reason="faiss is not installed")
def test_faiss_backend_matches_exact(x: Tensor) -> None:
    db = rand(300, 3, 2, 2, seed=2)
    exact = Quilting(db, stride=1, k=3, backend="exact", seed=4)
    faiss = Quilting(db, stride=1, k=3, backend="faiss", seed=4)
    assert torch.equal(faiss(x), exact(x))
    faiss.double().float()  # a move drops the cached index, which is rebuilt on use
    assert faiss._faiss_index is None
    faiss.reseed()
    exact.reseed()
    assert torch.equal(faiss(x), exact(x))


@pytest.mark.cuda
def test_cuda_follows_the_input(quilt: Quilting, x: Tensor) -> None:
    with pytest.raises(DeviceError, match=r"quilting.to\('cuda:0'\)"):
        quilt(x.cuda())
    gpu = copy.deepcopy(quilt).cuda()
    out = gpu(x.cuda())
    assert out.device.type == "cuda" and out.shape == x.shape
    tiles = out.cpu().unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    assert (tiles[:, None] == quilt.database[None]).all(2).any(1).all()


# --------------------------------------------------------------------------- BPDA's soft quilt


def test_straight_through_is_the_forward_pass_with_the_soft_quilts_gradient(
    quilt: Quilting, x: Tensor
) -> None:
    out = quilt(x)
    quilt.reseed()
    xg = x.clone().requires_grad_(True)
    bpda = quilt.straight_through(xg)
    torch.testing.assert_close(bpda, out)  # the same draw (up to g + (out - g) rounding)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad((bpda * weights).sum(), xg)

    # Closed form for one tile: sum_j w_j d_j over its candidates, w = softmax(-|q - d_j|^2 / T).
    q = x[:1, :, :2, :2].reshape(1, -1).clone().requires_grad_(True)
    d = quilt.database
    nearest = torch.cdist(q.detach(), d).topk(quilt.bpda_candidates, largest=False).indices[0]
    d2 = (q - d[nearest]).square().sum(1)
    w = torch.softmax(-d2 / (quilt.bpda_temperature * d2.detach().mean()), dim=0)
    soft = (w[:, None] * d[nearest]).sum(0)
    # The tile at (0, 0) is the only one covering the image's first 2x2 pixels.
    (expected,) = torch.autograd.grad((soft * weights[0, :, :2, :2].reshape(-1)).sum(), q)
    torch.testing.assert_close(grad[0, :, :2, :2].reshape(-1), expected[0], rtol=1e-4, atol=1e-6)


def test_bpda_through_quilting_beats_the_identity_backward_pass() -> None:
    """On Fashion-MNIST 5x5 patches, quilting changes an image far more than a perturbation does,
    and the identity's gradient asks for pixel changes it discards; the soft quilt's gradient
    leaves clearly fewer images robust (measured: 15% against 28%)."""
    import robustlens as rl
    from robustlens.attacks import BPDA, EOT, PGD
    from robustlens.defenses import defend

    ds = rl.data.load("fashion-mnist", split="test")[:48]
    train = rl.data.load("fashion-mnist", split="train")[:2000]
    defended = defend(
        rl.zoo.load("fmnist-cnn"), Quilting.from_images(train.x, patch=5, k=10, size=20_000)
    )
    attack = EOT(PGD(eps=0.1, steps=20), samples=4)
    runs = (
        BPDA(attack)(defended, ds.x, ds.y),
        BPDA(attack, approx=lambda v: v)(defended, ds.x, ds.y),
    )
    with torch.no_grad():  # each image judged on three fresh draws
        kept = [
            float(sum((defended(r.x_adv).argmax(1) == ds.y).double().mean() for _ in range(3)) / 3)
            for r in runs
        ]
    assert kept[0] < kept[1] - 0.06, kept


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bpda_candidates": 0}, "bpda_candidates"),
        ({"bpda_temperature": 0.0}, "bpda_temperature"),
        ({"bpda_temperature": float("nan")}, "bpda_temperature"),
        ({"bpda_temperature": True}, "bpda_temperature"),
    ],
)
def test_bpda_parameters_are_checked(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        Quilting(rand(30, 1, 2, 2), stride=2, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("candidates", [2, 500])
def test_soft_quilt_uses_the_candidates_asked_for_up_to_the_database(
    x: Tensor, candidates: int
) -> None:
    """Fewer candidates than k: the soft quilt uses that many; more than the database: all of it."""
    db = rand(300, 3, 2, 2, seed=2)
    quilt = Quilting(db, stride=2, k=5, chunk=7, bpda_candidates=candidates, bpda_temperature=0.5)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(quilt.straight_through(xg).sum(), xg)
    q = x[:1, :, :2, :2].reshape(1, -1).clone().requires_grad_(True)
    used = min(candidates, len(db))
    nearest = torch.cdist(q.detach(), quilt.database).topk(used, largest=False).indices[0]
    d = quilt.database[nearest]
    d2 = (q - d).square().sum(1)
    soft = (torch.softmax(-d2 / (0.5 * d2.detach().mean()), dim=0)[:, None] * d).sum(0)
    (expected,) = torch.autograd.grad(soft.sum(), q)
    torch.testing.assert_close(grad[0, :, :2, :2].reshape(-1), expected[0], rtol=1e-4, atol=1e-6)
    assert "bpda_candidates=" in repr(quilt)
