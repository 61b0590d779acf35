"""Substitute training (Papernot et al.) and transfer attacks: augmentation maths, schedule,
reservoir, query accounting, determinism, agreement on digits, transfer and the transfer matrix."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import robustlens as rl
from robustlens.attacks import FGSM, PGD
from robustlens.blackbox.oracle import Oracle
from robustlens.blackbox.substitute import (
    Substitute,
    SubstituteResult,
    jacobian_augment,
    lambda_schedule,
    oracle_labels,
)
from robustlens.blackbox.transfer import Transfer, TransferMatrix, transfer_matrix
from robustlens.errors import (
    DTypeError,
    LabelError,
    ParameterError,
    ShapeError,
    UnknownNameError,
)

SMALL = {"widths": (8,), "hidden": 16}


class FixedJacobian(nn.Module):
    """``W x + b`` with ``W`` a buffer: training moves only ``b``, so the Jacobian row of class
    ``l`` stays ``W[l]`` through every round (a closed-form reference for the augmentation)."""

    def __init__(self, features: int, classes: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(123)
        self.register_buffer("W", torch.randn(classes, features, generator=g))
        self.b = nn.Parameter(torch.zeros(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.W.T + self.b


@pytest.fixture(scope="module")
def digits() -> rl.data.ImageDataset:
    return rl.data.load("digits", split="test")


@pytest.fixture(scope="module")
def victim() -> nn.Module:
    return rl.zoo.load("digits-cnn")


@pytest.fixture(scope="module")
def trained_substitute(digits, victim) -> tuple[SubstituteResult, Oracle]:
    """150 seed digits, 2 rounds of augmentation, 5 epochs per round (about 2 s single thread)."""
    oracle = Oracle(victim, output="label")
    sub = Substitute(rounds=2, epochs=5, batch_size=32, lr=3e-3, seed=0)
    return sub.fit(oracle, digits.x[:150], x_check=digits.x[150:]), oracle


# --------------------------------------------------------------------------- lambda schedule


def test_lambda_schedule_flips_sign_every_tau_rounds() -> None:
    assert lambda_schedule(0.1, 1, 4) == [0.1, -0.1, 0.1, -0.1]
    assert lambda_schedule(0.1, 3, 7) == [0.1, 0.1, 0.1, -0.1, -0.1, -0.1, 0.1]
    assert lambda_schedule(0.2, None, 3) == [0.2, 0.2, 0.2]
    assert lambda_schedule(0.1, 2, 0) == []


# --------------------------------------------------------------------------- jacobian_augment


@pytest.mark.parametrize("lam", [0.1, -0.05])
def test_jacobian_augment_on_linear_model_is_sign_of_weight_row(lam: float) -> None:
    # Batch, channels, height, width all different: a broadcast along the wrong axis fails.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 7, 6)).train()
    x = torch.rand(4, 3, 5, 7)
    labels = torch.tensor([0, 5, 2, 2])
    out = jacobian_augment(model, x, labels, lam)
    w = model[1].weight.detach()
    expected = (x + lam * w[labels].sign().view_as(x)).clamp(0, 1)
    torch.testing.assert_close(out, expected)
    assert model.training  # mode restored
    # Away from the [0, 1] boundary the step is exactly +/- lam per pixel.
    inside = (x + lam * w[labels].sign().view_as(x) - expected).abs() < 1e-7
    assert bool(((out - x).abs()[inside] - abs(lam)).abs().max() < 1e-6)
    # Batching changes nothing.
    torch.testing.assert_close(jacobian_augment(model, x, labels, lam, batch_size=3), out)


def test_jacobian_augment_uses_the_label_row_of_a_cnn(victim, digits) -> None:
    x, y = digits.x[:8], digits.y[:8]
    other = (y + 1) % 10
    a, b = jacobian_augment(victim, x, y, 0.1), jacobian_augment(victim, x, other, 0.1)
    assert not torch.equal(a, b)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(victim(xg).gather(1, y[:, None]).sum(), xg)
    torch.testing.assert_close(a, (x + 0.1 * g.sign()).clamp(0, 1))


# --------------------------------------------------------------------------- oracle labels


def test_oracle_labels_agree_across_output_modes(victim, digits) -> None:
    x = digits.x[:20]
    got = [
        oracle_labels(o, x, o.new_ids(len(x)))
        for o in (Oracle(victim, output=m) for m in ("label", "probs", "topk"))
    ]
    assert torch.equal(got[0], got[1]) and torch.equal(got[0], got[2])
    assert torch.equal(got[0], victim(x).argmax(1))


# --------------------------------------------------------------------------- the procedure


def test_augmentation_doubles_the_set_and_follows_the_schedule(victim, digits) -> None:
    n0, rounds, lam = 12, 3, 0.1
    oracle = Oracle(victim, output="probs", budget=1)  # each point may be labelled only once
    sub = Substitute(factory=lambda: FixedJacobian(64), rounds=rounds, lam=lam, tau=1, epochs=1)
    res = sub.fit(oracle, digits.x[:n0])
    assert res.sizes == [n0 * 2**r for r in range(rounds + 1)]
    assert res.lambdas == [0.1, -0.1, 0.1]
    assert res.queries == oracle.total == res.sizes[-1] == len(res.dataset)
    assert res.history["new_points"] == [12.0, 24.0, 48.0]
    x, y, w = res.dataset.x, res.dataset.y, res.model.model.W  # Normalized(FixedJacobian)
    for r in range(1, rounds + 1):
        old, new = res.sizes[r - 1], res.sizes[r]
        assert torch.equal(res.parents[old:new], torch.arange(old))
        step = res.lambdas[r - 1] * w[y[:old]].sign().view_as(x[:old])
        torch.testing.assert_close(x[old:new], (x[:old] + step).clamp(0, 1))
    # The oracle's labels are its predictions, charged one query per point.
    assert torch.equal(y, victim(x).argmax(1))
    assert not res.model.training


def test_reservoir_limits_new_points_per_round(victim, digits) -> None:
    oracle = Oracle(victim, output="label", budget=1)
    sub = Substitute(
        factory=lambda: FixedJacobian(64), rounds=4, sigma=1, reservoir=5, epochs=1, lam=0.2
    )
    res = sub.fit(oracle, digits.x[:8])
    assert res.sizes == [8, 16, 21, 26, 31]
    assert res.history["new_points"] == [8.0, 5.0, 5.0, 5.0]
    assert res.queries == oracle.total == 31
    x, y, w = res.dataset.x, res.dataset.y, res.model.model.W
    for r in range(2, 5):
        old, new = res.sizes[r - 1], res.sizes[r]
        parents = res.parents[old:new]
        assert len(parents.unique()) == 5 and int(parents.max()) < old
        step = 0.2 * w[y[parents]].sign().view_as(x[parents])
        torch.testing.assert_close(x[old:new], (x[parents] + step).clamp(0, 1))
    # A reservoir larger than the set augments every point.
    big = Substitute(factory=lambda: FixedJacobian(64), rounds=2, sigma=0, reservoir=100, epochs=1)
    assert big.fit(Oracle(victim, output="label"), digits.x[:8]).sizes == [8, 16, 32]


def test_same_seed_same_substitute(victim, digits) -> None:
    def run(seed: int) -> SubstituteResult:
        sub = Substitute(rounds=2, sigma=1, reservoir=6, epochs=2, arch_options=SMALL, seed=seed)
        return sub.fit(Oracle(victim, output="label"), digits.x[:16])

    state = torch.get_rng_state()
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(torch.get_rng_state(), state)  # the global random state is untouched
    assert torch.equal(a.dataset.x, b.dataset.x) and torch.equal(a.parents, b.parents)
    probe = digits.x[100:140]
    torch.testing.assert_close(a.model(probe), b.model(probe), rtol=0, atol=0)
    assert not torch.equal(a.parents, c.parents) or not torch.equal(a.model(probe), c.model(probe))


def test_restart_reinitialises_each_round(victim, digits) -> None:
    kw = {"rounds": 1, "epochs": 1, "arch_options": SMALL}
    cont = Substitute(**kw).fit(Oracle(victim, output="label"), digits.x[:16])
    fresh = Substitute(restart=True, **kw).fit(Oracle(victim, output="label"), digits.x[:16])
    assert torch.equal(cont.dataset.x, fresh.dataset.x)  # round 0 is the same model
    assert not torch.equal(cont.model(digits.x[:8]), fresh.model(digits.x[:8]))


def test_substitute_of_digits_cnn_agrees_with_the_oracle(trained_substitute) -> None:
    res, oracle = trained_substitute
    # Measured: 0.873, 0.917, 0.943 on the 300 held-out digits (chance is about 0.1).
    assert res.sizes == [150, 300, 600]
    assert res.queries == 600 and res.check_queries == 300 and oracle.total == 900
    assert len(res.agreement) == len(res.train_agreement) == 3
    assert res.agreement[-1] >= 0.85
    assert res.agreement[-1] >= res.agreement[0]  # augmentation helps
    assert min(res.train_agreement) >= 0.9
    assert json.loads(json.dumps(res.summary()))["queries"] == 600


# --------------------------------------------------------------------------- Transfer


def test_transfer_to_itself_equals_white_box(victim, digits) -> None:
    x, y = digits.x[:64], digits.y[:64]
    fgsm = FGSM(eps=0.15)
    white = fgsm(victim, x, y)
    res = Transfer(fgsm, victim)(victim, x, y)
    assert res.attack == "Transfer(FGSM(eps=0.15))"
    assert res.success_rate == white.success_rate
    assert torch.equal(res.success, white.success) and torch.equal(res.x_adv, white.x_adv)
    assert res.details["surrogate_success_rate"] == white.success_rate
    att = res.attacked
    assert bool((res.queries[att] == 1).all()) and bool((res.gradients == 0).all())
    assert Transfer(fgsm, victim).ball() == ("linf", 0.15)


def test_transfer_judges_on_the_victim(trained_substitute, victim, digits) -> None:
    surrogate = trained_substitute[0].model
    x, y = digits.x[150:250], digits.y[150:250]
    fgsm = FGSM(eps=0.2)
    res = Transfer(fgsm, surrogate)(victim, x, y)
    with torch.no_grad():
        fooled = victim(res.x_adv).argmax(1) != y
    assert torch.equal(res.success, res.attacked & fooled)
    assert float(res.linf.max()) <= 0.2 + 1e-6
    att = res.attacked
    with torch.no_grad():
        on_surrogate = surrogate(res.x_adv[att]).argmax(1) != y[att]
    assert res.details["surrogate_success_rate"] == float(on_surrogate.double().mean())
    white = fgsm(surrogate, x, y)
    assert 0.35 < res.success_rate < white.success_rate
    # An iterative attack that stops at the surrogate's first misclassification transfers less
    # than the same attack run for all its steps (the default, persistent=True).
    pgd = PGD(eps=0.2, steps=10)
    eager = Transfer(pgd, surrogate, persistent=False)(victim, x, y)
    full = Transfer(pgd, surrogate)(victim, x, y)
    assert eager.success_rate + 0.15 < full.success_rate


# --------------------------------------------------------------------------- transfer_matrix


def test_transfer_matrix_diagonal_is_white_box(trained_substitute, victim, digits) -> None:
    models = {"cnn": victim, "substitute": trained_substitute[0].model}
    x, y = digits.x[150:230], digits.y[150:230]
    fgsm = FGSM(eps=0.2)
    m = transfer_matrix(models, fgsm, x, y, batch_size=32)
    assert isinstance(m, TransferMatrix)
    assert m.names == ["cnn", "substitute"] and m.success.shape == (2, 2)
    for i, key in enumerate(m.names):
        white = fgsm(models[key], x, y)
        assert m.success[i, i].item() == pytest.approx(white.success_rate, abs=1e-12)
        assert m.counts[i, i].item() == int(white.attacked.sum())
        assert m.clean_accuracy[i].item() == pytest.approx(white.clean_accuracy)
    # Off the diagonal: images correct on both, attacked on the source, judged on the target.
    adv = fgsm(models["substitute"], x, y).x_adv
    with torch.no_grad():
        both = (victim(x).argmax(1) == y) & (models["substitute"](x).argmax(1) == y)
        fooled = victim(adv).argmax(1) != y
    assert m.counts[1, 0].item() == int(both.sum())
    assert m.success[1, 0].item() == pytest.approx(float(fooled[both].double().mean()))
    text = m.format()
    lines = text.splitlines()
    assert len(lines) == 4 and lines[2].startswith("cnn") and lines[3].startswith("substitute")
    assert f"{m.success[0, 1].item():.3f}" in lines[2]
    d = json.loads(json.dumps(m.to_dict()))
    assert d["names"] == ["cnn", "substitute"] and len(d["success"]) == 2


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rounds": -1}, ParameterError, "'rounds' must be an int >= 0"),
        ({"lam": 0.0}, ParameterError, "'lam' must be a float > 0"),
        ({"tau": 0}, ParameterError, "'tau' must be an int >= 1"),
        ({"reservoir": 0}, ParameterError, "'reservoir' must be an int >= 1"),
        ({"epochs": 0}, ParameterError, "'epochs' must be an int >= 1"),
        ({"arch": "convnett"}, UnknownNameError, "did you mean 'convnet'"),
        ({"factory": 3}, ParameterError, "'factory' must be a callable"),
        (
            {"factory": lambda: FixedJacobian(64), "arch_options": {"hidden": 8}},
            ParameterError,
            "'arch_options' apply to 'arch'",
        ),
        ({"arch_options": {"num_classes": 3}}, ParameterError, "must not set 'num_classes'"),
    ],
)
def test_substitute_parameter_errors(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        Substitute(**kwargs)


def test_fit_and_function_errors(victim, digits) -> None:
    sub = Substitute(rounds=0, epochs=1, arch_options=SMALL)
    with pytest.raises(DTypeError, match="'oracle' must be a robustlens.blackbox.Oracle"):
        sub.fit(victim, digits.x[:4])  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="x_check images must have the shape"):
        sub.fit(Oracle(victim), digits.x[:4], x_check=torch.rand(2, 1, 6, 6))
    with pytest.raises(ParameterError, match="'tau' must be an int >= 1 or None"):
        lambda_schedule(0.1, 0, 3)
    with pytest.raises(ParameterError, match="'lam' must be a finite float"):
        jacobian_augment(victim, digits.x[:2], digits.y[:2], math.nan)
    with pytest.raises(ParameterError, match="labels go up to 12"):
        jacobian_augment(victim, digits.x[:2], torch.tensor([0, 12]), 0.1)
    with pytest.raises(ParameterError, match="'attack' must be a robustlens attack"):
        Transfer("fgsm", victim)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'surrogate' must be a torch.nn.Module"):
        Transfer(FGSM(eps=0.1), "cnn")  # type: ignore[arg-type]
    x, y = digits.x[:4], digits.y[:4]
    with pytest.raises(ParameterError, match="'models' must be a non-empty dict"):
        transfer_matrix({}, FGSM(eps=0.1), x, y)
    with pytest.raises(DTypeError, match="'attack' must be a robustlens attack"):
        transfer_matrix({"cnn": victim}, "fgsm", x, y)  # type: ignore[arg-type]
    with pytest.raises(LabelError, match="target equals the true label"):
        transfer_matrix({"cnn": victim}, FGSM(eps=0.1), x, y, target=y)
    with pytest.raises(LabelError, match="the model has 10 classes"):
        transfer_matrix({"cnn": victim}, FGSM(eps=0.1), x, torch.tensor([0, 1, 2, 11]))
