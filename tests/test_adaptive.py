"""BPDA, EOT and adaptive(): gradients, choices, and their effect on real defenses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustlens as rl
from robustlens.attacks import BPDA, EOT, PGD, Ensemble, adaptive, bpda_view, eot_view
from robustlens.defenses import JPEG, TVM, BitDepth, CropRescale, defend
from robustlens.errors import ParameterError


class UserIdentity(nn.Module):
    """A user's preprocessing that claims to be non-differentiable but is the identity."""

    differentiable = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().clone()


class UserRound(nn.Module):
    """A user's rounding layer with no declared flags: zero gradients everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 3) / 3


class UserNoise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.05 * torch.randn_like(x)).clamp(0, 1)


@pytest.fixture(scope="module")
def digits() -> rl.data.ImageDataset:
    return rl.data.load("digits", split="test")[:32]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return rl.zoo.load("digits-cnn")


def _input_grad(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(m(xg), y), xg)
    return g


def test_bpda_gradient_equals_autograd_on_identity(model: nn.Module, digits) -> None:
    defended = defend(model, UserIdentity())
    view = bpda_view(defended, digits.x[:2])
    torch.testing.assert_close(
        _input_grad(view, digits.x, digits.y), _input_grad(model, digits.x, digits.y)
    )
    # The forward pass is the real defense's.
    torch.testing.assert_close(view(digits.x), defended(digits.x))


def test_bpda_forward_is_the_real_defense(model: nn.Module, digits) -> None:
    defended = defend(model, BitDepth(bits=2))
    view = bpda_view(defended, digits.x[:2])
    torch.testing.assert_close(view(digits.x), defended(digits.x))
    assert float(_input_grad(view, digits.x, digits.y).abs().sum()) > 0
    assert float(_input_grad(defended, digits.x, digits.y).abs().sum()) == 0


class UserBlurredRound(nn.Module):
    """A user's rounding layer that declares a blur as its BPDA approximation."""

    differentiable = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x.detach() * 3) / 3

    def approximation(self, x: torch.Tensor) -> torch.Tensor:
        from robustlens._filters import gaussian_blur

        return gaussian_blur(x, 1.0)


def test_bpda_backward_uses_the_layers_declared_approximation(model: nn.Module, digits) -> None:
    from robustlens._filters import gaussian_blur

    layer = UserBlurredRound()
    view = bpda_view(defend(model, layer), digits.x[:2])
    z = layer(digits.x)
    xg = digits.x.clone().requires_grad_(True)
    blurred = gaussian_blur(xg, 1.0)
    (expected,) = torch.autograd.grad(
        F.cross_entropy(model(blurred + (z - blurred).detach()), digits.y), xg
    )
    torch.testing.assert_close(_input_grad(view, digits.x, digits.y), expected)
    # An explicit approx replaces the declared one: the identity here.
    plain = bpda_view(defend(model, layer), digits.x[:2], approx=lambda v: v)
    zg = z.clone().requires_grad_(True)
    (identity,) = torch.autograd.grad(F.cross_entropy(model(zg), digits.y), zg)
    torch.testing.assert_close(_input_grad(plain, digits.x, digits.y), identity)


def test_tvm_bpda_is_its_forward_pass_with_the_solutions_gradient(model, digits) -> None:
    """TVM's straight_through: the forward pass's very output (same draw), and a vector-Jacobian
    product that matches central differences of the converged solver, where the identity's
    misses by more than the product itself."""
    tvm = TVM(iterations=2000, unrolled=200, seed=3)
    z = tvm(digits.x)
    view = bpda_view(defend(model, tvm), digits.x[:2])
    tvm.reseed()
    torch.testing.assert_close(view.preprocessors[0](digits.x), z)

    x = 0.01 + 0.98 * digits.x[:8].double()  # room for the finite differences in [0, 1]
    tvm.reseed()
    xg = x.clone().requires_grad_(True)
    u, v = torch.randn(2, *x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    (grad,) = torch.autograd.grad((tvm.straight_through(xg) * u).sum(), xg)
    vjp = (grad * v).sum((1, 2, 3))
    h = 1e-4
    tvm.reseed()
    plus = tvm(x + h * v)
    tvm.reseed()
    minus = tvm(x - h * v)
    exact = ((plus - minus) / (2 * h) * u).sum((1, 2, 3))
    assert float(((vjp - exact).abs() / exact.abs()).median()) < 0.05
    identity = (u * v).sum((1, 2, 3))
    assert float(((identity - exact).abs() / exact.abs()).median()) > 1.0


def test_bpda_rejects_a_straight_through_cut_from_autograd(model, digits) -> None:
    class Broken(nn.Module):
        differentiable = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.detach()

        def straight_through(self, x: torch.Tensor) -> torch.Tensor:
            return x.detach()

    view = bpda_view(defend(model, Broken()), digits.x[:2])
    with pytest.raises(ParameterError, match="straight_through.*autograd connects"):
        _input_grad(view, digits.x, digits.y)


def test_bpda_on_users_sequential(model: nn.Module, digits) -> None:
    seq = nn.Sequential(UserRound(), model)
    pgd = PGD(eps=0.3, steps=20)
    naive, adapted = pgd(seq, digits.x, digits.y), BPDA(pgd)(seq, digits.x, digits.y)
    assert naive.success_rate < 0.2 < adapted.success_rate - 0.4
    assert float(adapted.linf.max()) <= 0.3 + 1e-6


def test_bpda_needs_to_find_the_preprocessing(model: nn.Module, digits) -> None:
    with pytest.raises(ParameterError, match="defend\\(classifier"):
        BPDA(PGD(eps=0.1))(model, digits.x, digits.y)


def test_eot_view_of_a_deterministic_model_is_its_log_softmax(model, digits) -> None:
    out = eot_view(model, samples=3)(digits.x)
    torch.testing.assert_close(out, torch.log_softmax(model(digits.x), dim=1))


def test_eot_averages_a_transform_distribution(digits) -> None:
    calls: list[int] = []

    def shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        calls.append(len(x))
        return x.roll(int(torch.randint(0, 3, (1,), generator=g)), dims=-1)

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    out = eot_view(net, samples=5, transform=shift)(digits.x[:4])
    assert calls == [20] and out.shape == (4, 10)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))


def test_eot_counts_every_draw_and_runs_all_steps(model, digits) -> None:
    crops = CropRescale(fraction=0.75, crops=2)
    defended = defend(model, crops)
    res = EOT(PGD(eps=0.05, steps=4), samples=3)(defended, digits.x, digits.y)
    attacked = res.attacked
    # 4 gradient steps and a final check, each with 3 draws, for every attacked image, then one
    # pass of the real model that judges the returned image.
    assert bool((res.gradients[attacked] == 12).all())
    assert bool((res.queries[attacked] == 16).all())
    assert res.attack == "EOT(PGD(eps=0.05, steps=4), samples=3)"


def test_adaptive_picks_by_probing(model, digits) -> None:
    pgd = PGD(eps=0.1)
    x = digits.x[:8]
    assert adaptive(pgd, model, x) is pgd
    assert adaptive(pgd, defend(model, JPEG(quality=75)), x).name.startswith("BPDA(PGD")
    assert adaptive(pgd, defend(model, UserRound()), x).name.startswith("BPDA(PGD")
    assert adaptive(pgd, defend(model, UserNoise()), x).name.startswith("EOT(PGD")
    both = adaptive(pgd, defend(model, TVM(iterations=5)), x, samples=3)
    assert isinstance(both, Ensemble)
    assert [a.name for a in both.attacks] == [
        "BPDA(EOT(PGD(eps=0.1), samples=3))",
        "BPDA(EOT(PGD(eps=0.1), samples=3), approx=identity)",
    ]


def test_adaptive_takes_the_worse_of_the_declared_and_the_identity_backward_pass(
    model, digits
) -> None:
    # A layer declaring a useless backward pass (a constant: zero gradient) must not shield the
    # model: the identity member of adaptive()'s ensemble breaks it, as plain BPDA would.
    class ZeroApprox(UserRound):
        differentiable = False

        def approximation(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0

    pgd = PGD(eps=0.2, steps=20)
    defended = defend(model, ZeroApprox())
    strong = adaptive(pgd, defended, digits.x[:8])
    assert isinstance(strong, Ensemble) and rl.attacks.declares_backward(defended, digits.x[:8])
    declared_only = BPDA(pgd)(defended, digits.x, digits.y)
    res = strong(defended, digits.x, digits.y)
    assert declared_only.success_rate < 0.1  # no gradient: the declared pass alone fails
    # The declared pass runs first (on every image), the identity on the images it left.
    assert res.details["contribution"] == {
        "BPDA(PGD(eps=0.2, steps=20))": int(declared_only.success.sum()),
        "BPDA(PGD(eps=0.2, steps=20), approx=identity)": int(
            (res.success & ~declared_only.success).sum()
        ),
    }
    assert (
        res.success_rate
        >= BPDA(pgd, approx=rl.attacks.identity)(defended, digits.x, digits.y).success_rate
        > 0.7
    )
    # Layers that leave BPDA the identity get plain BPDA, not an ensemble of two equal runs.
    assert not rl.attacks.declares_backward(defend(model, JPEG()), digits.x[:8])
    assert not rl.attacks.declares_backward(model, digits.x[:8])


def test_adaptive_attack_beats_jpeg_and_crops(model, digits) -> None:
    pgd = PGD(eps=0.2, steps=20)
    for pre in (JPEG(quality=60), CropRescale(fraction=0.75, crops=4)):
        defended = defend(model, pre)
        naive = pgd(defended, digits.x, digits.y)
        strong = adaptive(pgd, defended, digits.x[:8], samples=4)(defended, digits.x, digits.y)
        # Judge both on a fresh call of the defended model.
        with torch.no_grad():
            acc_naive = float((defended(naive.x_adv).argmax(1) == digits.y).float().mean())
            acc_strong = float((defended(strong.x_adv).argmax(1) == digits.y).float().mean())
        assert acc_strong < 0.3, (type(pre).__name__, acc_strong)
        assert acc_strong < acc_naive - 0.2, (type(pre).__name__, acc_naive, acc_strong)


def test_wrappers_validate() -> None:
    with pytest.raises(ParameterError, match="'attack' must be a robustlens attack"):
        BPDA(lambda m, x, y: x)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'samples' must be an int >= 1"):
        EOT(PGD(eps=0.1), samples=0)


def test_robust_adversarial_examples_survive_fresh_transformations(model, digits) -> None:
    # Athalye et al. 2017: EOT over a transformation distribution makes images that stay
    # adversarial under fresh draws; a plain attack's images mostly do not.
    t = rl.attacks.RandomTransform(rotation=10.0, scale=(0.95, 1.1), translate=0.05, noise=0.02)
    pgd = PGD(eps=0.2, steps=20)
    plain = pgd(model, digits.x, digits.y)
    robust = EOT(pgd, samples=8, transform=t)(model, digits.x, digits.y)
    fresh = {
        name: rl.attacks.transformed_success(model, res.x_adv, digits.y, t, samples=50, seed=7)
        for name, res in (("plain", plain), ("eot", robust))
    }
    mask = plain.attacked
    assert float(fresh["eot"][mask].mean()) > float(fresh["plain"][mask].mean()) + 0.2
    assert float(fresh["eot"][mask].mean()) > 0.7


def test_minimum_norm_attacks_keep_their_success_test(model, digits) -> None:
    # C&W needs the success test to know it crossed the boundary: wrappers that run fixed-budget
    # attacks to the end must leave it alone.
    cw = rl.attacks.CarliniWagner(steps=30, search_steps=3, lr=0.05)
    direct = cw(model, digits.x[:8], digits.y[:8])
    moved = rl.blackbox.Transfer(cw, model)(model, digits.x[:8], digits.y[:8])
    assert direct.success_rate > 0.5
    assert moved.success_rate == direct.success_rate


def test_ensemble_members_run_every_step_under_eot(model, digits) -> None:
    from robustlens.attacks.adaptive import Persist

    ens = rl.attacks.Ensemble.standard(eps=0.05, steps=5, square_queries=50)
    crops = defend(model, CropRescale(fraction=0.75, crops=2))
    res = EOT(ens, samples=2)(crops, digits.x[:8], digits.y[:8])
    # APGD-CE ran all 5 steps on every attacked image (no stop at a lucky draw): >= 5 gradients
    # per image and draw.
    assert bool((res.gradients[res.attacked] >= 10).all())
    assert Persist(PGD(eps=0.1)).name == "PGD(eps=0.1)"


def test_wrappers_for_random_models_attack_every_input(model, digits) -> None:
    # One draw's mistake is no verdict on a randomized model: EOT (and the ensembles and BPDA
    # around it) attack the inputs the clean pass got wrong too; a plain attack leaves them.
    class Flip(nn.Module):
        """Sends half the images (a fresh random half per call) to a blank image."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            keep = torch.rand(len(x), 1, 1, 1) < 0.5
            return torch.where(keep, x, torch.zeros_like(x))

    defended = defend(model, Flip())
    pgd = PGD(eps=0.05, steps=2)
    plain = pgd(defended, digits.x, digits.y)
    assert not bool(plain.attacked.all())  # some images were blanked on the clean draw
    for attack in (
        EOT(pgd, samples=2),
        BPDA(EOT(pgd, samples=2)),
        Ensemble(attacks=(pgd, EOT(pgd, samples=2))),
    ):
        assert attack.attacks_every_input
        res = attack(defended, digits.x, digits.y)
        assert bool(res.attacked.all()), attack.name
        # ... yet the clean accuracy is the clean draw's, not "every input was attacked".
        assert res.clean_accuracy < 0.9, attack.name
    # On a deterministic model the clean verdicts are exactly those of the plain attack.
    eot = EOT(pgd, samples=2)(model, digits.x, digits.y)
    base = pgd(model, digits.x, digits.y)
    assert torch.equal(eot.clean_correct, base.attacked)
    assert eot.clean_accuracy == base.clean_accuracy < 1
    assert not BPDA(pgd).attacks_every_input and not Ensemble(attacks=(pgd,)).attacks_every_input
