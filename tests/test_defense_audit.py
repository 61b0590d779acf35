"""The defense audit on models whose answer is known, and adversarial training's pieces."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustlens as rl
from robustlens.defenses import (
    AdversarialConfig,
    OverfitGuard,
    lipschitz_penalty,
    pgd_perturbation,
)
from robustlens.errors import ParameterError
from robustlens.evaluation import audit_defense


class Masking(nn.Module):
    """A user's gradient-masking layer: it quantises, so its gradient is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


@pytest.fixture(scope="module")
def digits() -> rl.data.ImageDataset:
    return rl.data.load("digits", split="test")[:24]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return rl.zoo.load("digits-cnn")


def test_gradient_masking_layer_is_flagged(model, digits) -> None:
    defended = rl.defenses.defend(model, Masking())
    audit = audit_defense(defended, digits, model, eps=0.15, steps=10, ensemble_steps=20)
    failed = {c.name for c in audit.failed}
    assert {"gradients", "naive vs adaptive"} <= failed
    assert not audit.supported
    assert audit.verdict.startswith("robustness claim not supported: zero gradients for 100.0%")
    assert audit.diagnosis["bpda"] and not audit.diagnosis["eot"]
    naive = next(r for r in audit.table if r["measure"] == "naive")["accuracy"]
    adaptive = next(r for r in audit.table if r["measure"] == "adaptive")["accuracy"]
    assert naive - adaptive > 0.3
    assert audit.robust_accuracy <= adaptive
    ensemble = next(r for r in audit.table if r["measure"] == "ensemble on survivors")
    assert ensemble["attack"].startswith("BPDA(Ensemble[APGD")
    assert ensemble["accuracy"] == audit.robust_accuracy
    blackbox = next(c for c in audit.checks if c.name == "black-box does not beat white-box")
    assert blackbox.numbers["images"] == len(digits)
    json.dumps(audit.to_dict())  # JSON-ready


def test_plainly_robust_model_passes(model, digits) -> None:
    # At a tiny budget nothing flips, gradients are healthy, and an unbounded attack wins.
    audit = audit_defense(model, digits, model, eps=0.002, steps=10, ensemble_steps=None)
    assert audit.supported, audit.format()
    assert all(c.passed for c in audit.checks)
    assert audit.verdict.startswith("robustness claim supported")
    clean = audit.table[0]["accuracy"]
    assert audit.robust_accuracy == pytest.approx(clean)
    curve = next(c for c in audit.checks if c.name == "reaches chance")
    assert curve.numbers["accuracy"] <= 0.1


def test_blur_protects_nothing(model, digits) -> None:
    # The lecture's point: a blur is a convolution, gradients go through it, no masking.
    defended = rl.defenses.defend(model, rl.defenses.Blur())
    audit = audit_defense(defended, digits, eps=0.3, steps=10, ensemble_steps=None)
    assert audit.diagnosis == {"gradient": "ok", "randomized": False, "bpda": False, "eot": False}
    assert next(c for c in audit.checks if c.name == "gradients").passed
    assert audit.robust_accuracy < 0.1
    assert "transfer" in " ".join(audit.notes)


def test_audit_validates(model, digits) -> None:
    with pytest.raises(ParameterError, match="'ds' must be a robustlens ImageDataset"):
        audit_defense(model, (digits.x, digits.y))  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'large_eps' must exceed"):
        audit_defense(model, digits, eps=0.1, large_eps=0.05)
    with pytest.raises(ParameterError, match="'ensemble_steps' must be an int >= 1 or None"):
        audit_defense(model, digits, ensemble_steps=0)
    with pytest.raises(ParameterError, match="'eps' must be a float > 0"):
        audit_defense(model, digits, eps=-1.0)


# --------------------------------------------------------------------------- adversarial training


def test_pgd_perturbation_stays_in_ball_and_raises_loss(model, digits) -> None:
    x, y = digits.x, digits.y
    g = torch.Generator().manual_seed(0)
    xa = pgd_perturbation(model, x, y, eps=0.1, step=0.03, steps=5, generator=g)
    assert float((xa - x).abs().max()) <= 0.1 + 1e-6
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(xa), y) > F.cross_entropy(model(x), y) + 1.0
    assert all(p.grad is None for p in model.parameters())


def test_lipschitz_penalties_closed_form() -> None:
    lin = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(4)[:3])  # orthonormal rows
    assert float(lipschitz_penalty("parseval")(lin).detach()) == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        lin.weight.copy_(torch.diag(torch.tensor([3.0, 1.0, 0.5])) @ torch.eye(4)[:3])
    spectral = lipschitz_penalty("spectral")
    for _ in range(20):
        value = float(spectral(lin).detach())
    assert value == pytest.approx(0.5 * 9.0, rel=1e-4)
    with pytest.raises(ParameterError, match="'kind' must be one of"):
        lipschitz_penalty("frobenius")  # type: ignore[arg-type]


def test_overfit_guard_rolls_back() -> None:
    net = nn.Linear(2, 2)
    guard = OverfitGuard(drop=0.2)
    assert not guard.update(0.5, net)
    best = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    assert not guard.update(0.45, net)  # a small dip is tolerated
    assert guard.update(0.1, net)  # a collapse rolls back
    assert all(torch.equal(net.state_dict()[k], v) for k, v in best.items())


def test_adversarial_config_defaults_and_errors() -> None:
    assert AdversarialConfig(eps=0.1, steps=5).step_size == pytest.approx(0.05)
    assert AdversarialConfig(method="fast", eps=0.1).step_size == pytest.approx(0.125)
    with pytest.raises(ParameterError, match="'method' must be one of 'pgd', 'fast'"):
        AdversarialConfig(method="trades")  # type: ignore[arg-type]


def test_fit_stops_when_epoch_end_says_so(digits) -> None:
    net = rl.models.create("linear", in_channels=1, num_classes=10, image_size=8)
    seen: list[int] = []

    def stop_after_first(epoch: int, _: nn.Module) -> bool:
        seen.append(epoch)
        return True

    history = rl.training.fit(
        net, digits, config=rl.training.TrainConfig(epochs=5), epoch_end=stop_after_first
    )
    assert seen == [0] and len(history.loss) == 1
