"""The Square attack: closed-form references on linear models, its p schedule and window
perturbation, exact query accounting, success where gradients are masked, its place in the
standard ensemble, and bad-parameter errors."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
import torch
from torch import nn

import robustlens as rl
from robustlens.attacks import PGD, Ensemble, Square
from robustlens.attacks._random import sample_keys, uniform
from robustlens.attacks.square import (
    HALVINGS,
    _step_linf,
    p_schedule,
    square_side,
    window_perturbation,
)
from robustlens.errors import ParameterError

# --------------------------------------------------------------------------- linear references


def _linear(k: int, shape: tuple[int, int, int] = (3, 5, 6), seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    d = shape[0] * shape[1] * shape[2]
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, k)).double()
    with torch.no_grad():
        net[1].weight.normal_(0, 1.0)
        net[1].bias.normal_(0, 0.1)
    return net


def _points(net: nn.Sequential, n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images in ``[0.4, 0.6]`` (no clipping within the budgets below) and their labels."""
    g = torch.Generator().manual_seed(seed)
    x = 0.4 + 0.2 * torch.rand(n, 3, 5, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return x, net(x).argmax(1)


def _exact_distance(
    net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, dual: float
) -> torch.Tensor:
    """Smallest perturbation making another class win (``dual`` norm 1: Linf, 2: L2)."""
    w, b = net[1].weight.detach(), net[1].bias.detach()
    z = x.flatten(1) @ w.T + b
    gap = z.gather(1, y[:, None]) - z  # (N, K) >= 0
    dw = (w[None, :, :] - w[y][:, None, :]).norm(p=dual, dim=2)
    return (gap / dw.clamp_min(1e-12)).scatter(1, y[:, None], float("inf")).amin(1)


def test_linf_exact_on_binary_linear_model() -> None:
    # On a binary linear model the margin is linear in the perturbation: random search over the
    # square windows reaches the optimal vertex eps * sign(w_other - w_y) of the Linf ball, so
    # Square succeeds exactly where the minimal Linf distance is below eps.
    net = _linear(2)
    x, y = _points(net, 48)
    dist = _exact_distance(net, x, y, dual=1)
    eps = float(dist.median())
    res = Square(eps=eps, queries=1000)(net, x, y)
    assert float(res.linf.max()) <= eps + 1e-12
    below, above = dist < 0.97 * eps, dist > eps
    assert int(below.sum()) >= 20 and int(above.sum()) >= 20
    assert bool(res.success[below].all())
    assert not bool(res.success[above].any())


def test_linf_on_multiclass_linear_model_stays_in_the_ball() -> None:
    net = _linear(5, seed=2)
    x, y = _points(net, 48, seed=3)
    dist = _exact_distance(net, x, y, dual=1)
    eps = float(dist.median())
    res = Square(eps=eps, queries=500)(net, x, y)
    assert float(res.linf.max()) <= eps + 1e-12
    assert not bool(res.success[dist > eps].any())  # impossible inside the ball
    assert bool(res.success[dist < 0.5 * eps].all())


def test_l2_on_linear_model_stays_in_the_ball() -> None:
    net = _linear(3, seed=4)
    x, y = _points(net, 48, seed=5)
    dist = _exact_distance(net, x, y, dual=2)
    eps = float(dist.median())
    res = Square(eps=eps, norm="l2", queries=500)(net, x, y)
    assert float(res.l2.max()) <= eps * (1 + 1e-9)
    assert not bool(res.success[dist > eps].any())
    assert bool(res.success[dist < 0.5 * eps].all())


def test_targeted_success_means_prediction_equals_target() -> None:
    net = _linear(4, seed=6)
    x, y = _points(net, 16, seed=7)
    target = (y + 1) % 4
    res = Square(eps=0.2, queries=300)(net, x, y, target=target)
    with torch.no_grad():
        pred = net(res.x_adv).argmax(1)
    assert res.success_rate > 0.9
    assert torch.equal(res.success, pred == target)
    assert torch.equal(res.pred, pred)


# --------------------------------------------------------------------------- schedule, windows


def _reference_p(p_init: float, i: int, queries: int) -> float:
    """The paper's schedule, written as its authors' code reads (exact arithmetic)."""
    it = int(Fraction(i, queries) * 10_000)
    bounds = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, 10_000)
    for k in range(9):
        if bounds[k] < it <= bounds[k + 1]:
            return p_init / 2 ** (k + 1)
    return p_init


@pytest.mark.parametrize("queries", [100, 777, 5000, 10_000])
def test_p_schedule_halves_at_rescaled_iterations(queries: int) -> None:
    ps = [p_schedule(0.8, i, queries) for i in range(queries)]
    assert ps == [_reference_p(0.8, i, queries) for i in range(queries)]
    assert ps[0] == 0.8 and all(a >= b for a, b in itertools.pairwise(ps))
    changes = [i for i in range(1, queries) if ps[i] != ps[i - 1]]
    if queries == 10_000:
        assert changes == [t + 1 for t in HALVINGS]
    if queries == 5000:  # i * 10000 / 5000 = 2i exceeds t from i = t // 2 + 1
        assert changes == [6, 26, 101, 251, 501, 1001, 2001, 3001, 4001]
    assert ps[-1] == 0.8 / 2 ** len(HALVINGS)


def test_square_side() -> None:
    assert [square_side(p, 28, 28, "linf") for p in (0.8, 0.4, 0.05, 0.0015625)] == [25, 18, 6, 1]
    assert square_side(1.0, 28, 28, "linf") == 27  # at most H - 1: more than one position
    assert square_side(0.8, 5, 7, "linf") == 4  # the shorter side bounds it
    assert [square_side(p, 28, 28, "l2") for p in (0.8, 0.1, 0.01, 0.0)] == [25, 9, 3, 3]
    assert all(square_side(p / 64, 32, 32, "l2") % 2 == 1 for p in range(1, 64))


def _paper_window(s: int) -> torch.Tensor:
    """The window perturbation built with the loops of the paper's code (no transpose)."""

    def rectangles(x: int, y: int) -> torch.Tensor:
        delta = torch.zeros(x, y, dtype=torch.float64)
        xc, yc = x // 2 + 1, y // 2 + 1
        ch, cw = xc - 1, yc - 1
        for counter in range(max(xc, yc)):
            h0, w0 = max(ch, 0), max(cw, 0)
            h1, w1 = min(ch + 2 * counter + 1, x), min(cw + 2 * counter + 1, y)
            delta[h0:h1, w0:w1] += 1.0 / (counter + 1) ** 2
            ch, cw = ch - 1, cw - 1
        return delta / delta.norm()

    delta = torch.zeros(s, s, dtype=torch.float64)
    if s // 2:
        delta[: s // 2] = rectangles(s // 2, s)
    delta[s // 2 :] = -rectangles(s - s // 2, s)
    return delta / delta.norm()


@pytest.mark.parametrize("s", [1, 2, 3, 4, 5, 9, 24])
def test_window_perturbation_matches_the_paper(s: int) -> None:
    got = window_perturbation(s, torch.float64, torch.device("cpu"))
    assert torch.allclose(got, _paper_window(s), atol=1e-12)


def test_linf_square_changes_the_image_and_only_its_window() -> None:
    # Late in a run the square is one pixel: half the single draws would be no-ops on a
    # greyscale image; the redraws make almost every query count.
    m, s, eps = 256, 1, 0.1
    x = 0.5 * torch.ones(m, 1, 6, 6, dtype=torch.float64)
    keys = sample_keys(torch.rand(m, 1, 6, 6, generator=torch.Generator().manual_seed(0)), 0)
    up = uniform(keys, 0, torch.Size([m, 1, 6, 6]), torch.float64) < 0.5
    xb = torch.where(up, x + eps, x - eps)
    u = uniform(keys, 1, torch.Size([m, 2 + 8]), torch.float64)
    cand = _step_linf(x, xb, u, s, eps)
    changed = (cand != xb).flatten(1).sum(1)
    assert int(changed.max()) <= s * s
    assert float((changed > 0).double().mean()) > 0.97
    assert torch.allclose((cand - x).abs(), torch.full_like(x, eps))  # still a vertex


# --------------------------------------------------------------------------- accounting, contract


def test_queries_are_exact_per_image() -> None:
    model = rl.zoo.load("digits-cnn")
    ds = rl.data.load("digits")[:24]
    seen = []
    model.register_forward_hook(lambda mod, inp, out: seen.append(len(inp[0])))
    budget = 150
    res = Square(eps=0.1, queries=budget)(model, ds.x, ds.y)
    att = res.attacked
    assert bool(res.success.any()) and bool((att & ~res.success).any())
    # One query for the initialisation, one per candidate; no verification pass needed.
    assert torch.equal(res.queries[res.success], res.steps[res.success] + 1)
    assert bool((res.queries[att & ~res.success] == budget).all())
    assert int(res.queries.max()) <= budget
    assert int(res.queries[~att].sum()) == 0 and int(res.gradients.sum()) == 0
    # The base's clean pass (every image) plus exactly the queries counted.
    assert sum(seen) == len(ds) + int(res.queries.sum())


def test_l2_contract_batch_invariance_and_seed() -> None:
    model = rl.zoo.load("digits-cnn")
    ds = rl.data.load("digits")[:6]
    attack = Square(eps=1.0, norm="l2", queries=80)
    res = attack(model, ds.x, ds.y)
    assert float(res.l2.max()) <= 1.0 + 1e-5
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    for i in range(len(ds)):
        single = attack(model, ds.x[i : i + 1], ds.y[i : i + 1])
        assert torch.allclose(single.x_adv[0], res.x_adv[i], atol=1e-6)
        assert int(single.queries[0]) == int(res.queries[i])
    other = Square(eps=1.0, norm="l2", queries=80, seed=1)(model, ds.x, ds.y)
    assert not torch.equal(other.x_adv, res.x_adv)


def test_warm_start_already_adversarial_costs_one_query() -> None:
    model = rl.zoo.load("digits-cnn")
    ds = rl.data.load("digits")[:16]
    pgd = PGD(eps=0.2, steps=20)(model, ds.x, ds.y)
    res = Square(eps=0.2, queries=50)(model, ds.x, ds.y, x_init=pgd.x_adv)
    ok = pgd.success
    assert bool(ok.any()) and bool(res.success[ok].all())
    assert bool((res.queries[ok] == 1).all()) and bool((res.steps[ok] == 0).all())


# --------------------------------------------------------------------------- masked gradients


class Rounding(nn.Module):
    """Quantises the input to 256 levels: its gradient is zero almost everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 255) / 255


def test_square_succeeds_where_gradients_are_masked() -> None:
    masked = nn.Sequential(Rounding(), rl.zoo.load("digits-cnn"))
    ds = rl.data.load("digits")[:32]
    pgd = PGD(eps=0.2, steps=20, random_start=False)(masked, ds.x, ds.y)
    square = Square(eps=0.2, queries=300)(masked, ds.x, ds.y)
    assert pgd.success_rate == 0.0  # a zero gradient never moves the image
    assert square.success_rate > 0.8
    # The ensemble: APGD's random start breaks some images by luck, Square the rest.
    without = Ensemble.standard(eps=0.2, steps=5, square_queries=0)(masked, ds.x, ds.y)
    full = Ensemble.standard(eps=0.2, steps=5, square_queries=300)(masked, ds.x, ds.y)
    assert full.robust_accuracy < without.robust_accuracy - 0.2
    assert full.details["contribution"]["Square(eps=0.2, queries=300)"] > 0


# --------------------------------------------------------------------------- ensemble


def test_standard_ensemble_members() -> None:
    names = [a.name for a in Ensemble.standard(eps=0.1).attacks]
    assert names == ["APGD(eps=0.1)", "APGD(eps=0.1, loss=dlr, targets=9)", "Square(eps=0.1)"]
    l2 = Ensemble.standard(eps=1.0, norm="l2", steps=10, seed=3, square_queries=200).attacks[-1]
    assert l2 == Square(eps=1.0, norm="l2", queries=200, seed=3)
    assert len(Ensemble.standard(eps=0.1, square_queries=0).attacks) == 2
    assert Ensemble.standard(eps=0.1).ball() == ("linf", 0.1)


def test_square_runs_only_on_the_images_apgd_left() -> None:
    model = rl.zoo.load("digits-cnn")
    ds = rl.data.load("digits")[:24]
    ens = Ensemble.standard(eps=0.05, steps=5, square_queries=100)
    res = ens(model, ds.x, ds.y)
    two = Ensemble.standard(eps=0.05, steps=5, square_queries=0)(model, ds.x, ds.y)
    left = two.robust
    square = Square(eps=0.05, queries=100)(model, ds.x[left], ds.y[left])
    assert bool(left.any())
    assert torch.equal(res.success[left], square.success)
    # (plus one pass over the images Square failed on, to keep the closest failed attempt)
    assert torch.equal(res.queries[left], two.queries[left] + square.queries + square.robust)
    assert torch.equal(res.queries[~left], two.queries[~left])
    contrib = res.details["contribution"]
    assert contrib["Square(eps=0.05, queries=100)"] == int(square.success.sum())
    assert sum(contrib.values()) == int(res.success.sum())


# --------------------------------------------------------------------------- errors


def test_bad_parameters() -> None:
    with pytest.raises(ParameterError, match=r"Square: 'eps' must be a float > 0, got -0.1"):
        Square(eps=-0.1)
    with pytest.raises(ParameterError, match=r"'norm' must be one of 'linf', 'l2', got 'l1'"):
        Square(eps=0.1, norm="l1")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"'queries' must be an int >= 1, got 0"):
        Square(eps=0.1, queries=0)
    for bad in (0.0, 1.5, True, "0.5"):
        with pytest.raises(ParameterError, match=r"'p_init' must be a float in \(0, 1\]"):
            Square(eps=0.1, p_init=bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"'loss' must be one of 'margin', 'ce', got 'dlr'"):
        Square(eps=0.1, loss="dlr")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"'square_queries' must be an int >= 0 .* got -1"):
        Ensemble.standard(eps=0.1, square_queries=-1)
    with pytest.raises(TypeError):
        Square(0.1)  # type: ignore[misc]  # keyword-only


def test_ce_loss_also_breaks_images() -> None:
    model = rl.zoo.load("digits-cnn")
    ds = rl.data.load("digits")[:16]
    res = Square(eps=0.2, queries=200, loss="ce")(model, ds.x, ds.y)
    assert res.success_rate > 0.5 and float(res.linf.max()) <= 0.2 + 1e-6
