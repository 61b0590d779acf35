"""APGD's schedule and losses, and the ensemble's accounting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

import robustlens as rl
from robustlens.attacks import APGD, FGSM, PGD, Ensemble, Run
from robustlens.attacks._steps import margin
from robustlens.attacks.apgd import _apgd, checkpoints, dlr_loss, dlr_targeted_loss
from robustlens.errors import ParameterError


def test_checkpoint_schedule() -> None:
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9]


def _binary(d: int = 20) -> nn.Sequential:
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, 2)).double()
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[1].fill_(1.0)
        net[1].bias.copy_(torch.tensor([0.0, -(0.5 + 0.09) * d]))  # boundary 0.09 above x = 0.5
    return net


def test_large_first_step_reaches_a_far_boundary() -> None:
    net = _binary()
    x = torch.full((3, 1, 4, 5), 0.5, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    small = PGD(eps=0.1, step=0.001, steps=20, random_start=False)(net, x, y)
    assert small.success_rate == 0.0  # 20 steps of 0.001 move at most 0.02 < 0.09
    res = APGD(eps=0.1, steps=20)(net, x, y)
    assert res.success_rate == 1.0
    assert int(res.steps.max()) <= 1  # the 2*eps first step crosses at once


class _Bowl(nn.Module):
    """Class 0 always wins; logit 1 is -||x - c||^2, maximised inside the ball."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("c", c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = -(x - self.c).flatten(1).pow(2).sum(1)
        return torch.stack([torch.full_like(s, 100.0), s], 1)


def test_step_halving_converges_to_an_interior_maximum() -> None:
    x = torch.full((2, 1, 3, 3), 0.5, dtype=torch.float64)
    c = x + 0.03 * torch.tensor([1.0, -1.0]).view(2, 1, 1, 1).expand_as(x)
    model = _Bowl(c).double()
    run = Run(model, x, torch.zeros(2, dtype=torch.long), None, seed=0)
    idx = torch.arange(2)
    found, best = _apgd(
        run,
        idx,
        x.clone(),
        lambda rows: lambda z: z[:, 1],
        eps=0.1,
        norm="linf",
        steps=100,
        rho=0.75,
        alpha=0.75,
        step_offset=0,
    )
    assert not bool(found.any())
    # A fixed step of 2*eps would keep jumping over c; the halvings bring the best point close.
    assert float((best - c).abs().max()) < 0.1 / 50


def test_dlr_invariant_to_shift_and_scale() -> None:
    torch.manual_seed(0)
    z = torch.randn(16, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (16,))
    t = (y + 3) % 10
    for a, b in ((2.0, 0.0), (0.1, 5.0), (7.0, -100.0)):
        assert torch.allclose(dlr_loss(a * z + b, y), dlr_loss(z, y))
        assert torch.allclose(dlr_targeted_loss(a * z + b, y, t), dlr_targeted_loss(z, y, t))
    # Cross-entropy is not: the reason DLR exists.
    ce = nn.functional.cross_entropy
    assert not torch.allclose(ce(10 * z, y, reduction="none"), ce(z, y, reduction="none"))


def test_dlr_sign() -> None:
    z = torch.tensor([[5.0, 1.0, 0.0, -1.0]])
    assert float(dlr_loss(z, torch.tensor([0]))) < 0  # correctly classified: negative
    assert float(dlr_loss(z, torch.tensor([1]))) > 0  # misclassified: positive


def test_apgd_parameters() -> None:
    with pytest.raises(ParameterError, match="needs loss='dlr'"):
        APGD(eps=0.1, targets=3)
    with pytest.raises(ParameterError, match="'rho' must be a float in"):
        APGD(eps=0.1, rho=1.5)


@dataclass(frozen=True, kw_only=True)
class _Recording(FGSM):
    seen: ClassVar[list[torch.Tensor]] = []

    def _run(self, run: Run) -> torch.Tensor:
        _Recording.seen.append(run.x.clone())
        return super()._run(run)


def test_ensemble_never_reattacks_and_takes_worst_case() -> None:
    model = rl.zoo.load("digits-cnn")
    ds = rl.data.load("digits")[:100]
    first = FGSM(eps=0.1)
    _Recording.seen.clear()
    ens = Ensemble(attacks=(first, _Recording(eps=0.15)))
    res = ens(model, ds.x, ds.y)
    alone = first(model, ds.x, ds.y)
    second = FGSM(eps=0.15)(model, ds.x, ds.y)
    # The second member saw exactly the images the first left robust.
    assert len(_Recording.seen) == 1
    assert len(_Recording.seen[0]) == int(alone.robust.sum())
    # Worst case per image, and contributions that add up.
    assert torch.equal(res.success, alone.success | second.success)
    contrib = res.details["contribution"]
    assert contrib["FGSM(eps=0.1)"] == int(alone.success.sum())
    assert contrib["_Recording(eps=0.15)"] == int((second.success & ~alone.success).sum())
    assert sum(contrib.values()) == int(res.success.sum())
    # Queries: one member on every image, the other only on the survivors; plus one pass per
    # member over the images it failed on, to keep the closest failed attempt.
    both_failed = alone.robust & second.robust
    assert int(res.queries.sum()) == int(alone.queries.sum()) + int(
        second.queries[alone.robust].sum()
    ) + int(alone.robust.sum()) + int(both_failed.sum())
    # An image no member broke comes back as the attempt that came closer to the boundary (the
    # higher margin objective), not as the clean image.
    with torch.no_grad():
        gaps = [-margin(model(r.x_adv[both_failed]), ds.y[both_failed]) for r in (alone, second)]
    closer = torch.where(
        (gaps[1] > gaps[0]).view(-1, 1, 1, 1), second.x_adv[both_failed], alone.x_adv[both_failed]
    )
    assert int(both_failed.sum()) > 10
    torch.testing.assert_close(res.x_adv[both_failed], closer)


def test_standard_ensemble_at_least_as_strong_as_pgd() -> None:
    model = rl.zoo.load("fmnist-cnn")
    ds = rl.data.load("fashion-mnist").subset(100, seed=0)
    pgd = PGD(eps=0.03, steps=40)(model, ds.x, ds.y)
    standard = Ensemble.standard(eps=0.03, steps=50, square_queries=200)
    ens = standard(model, ds.x, ds.y)
    assert ens.robust_accuracy <= pgd.robust_accuracy
    assert standard.ball() == ("linf", 0.03)
    assert float(ens.linf.max()) <= 0.03 + 1e-6
