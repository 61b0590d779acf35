"""Curves from one run, robust accuracy against eps with warm starts, and the resumable runner."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

import robustlens as rl
from robustlens.attacks import FGSM, PGD, DeepFool, Run
from robustlens.evaluation import ResumeError, accuracy_vs_distance, evaluate, robust_accuracy_curve


@pytest.fixture(scope="module")
def digits() -> rl.data.ImageDataset:
    return rl.data.load("digits")[:120]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return rl.zoo.load("digits-cnn")


def test_accuracy_vs_distance_from_one_run(model, digits) -> None:
    res = DeepFool()(model, digits.x, digits.y)
    curve = accuracy_vs_distance(res)
    assert curve.accuracy[0].item() == pytest.approx(res.clean_accuracy)
    assert bool((curve.accuracy[1:] <= curve.accuracy[:-1]).all())
    assert curve.accuracy[-1].item() == pytest.approx(res.robust_accuracy)
    # At each budget: correct images whose DeepFool distance exceeds it.
    for b in (0.05, 0.1, 0.2):
        expected = (res.attacked & ~(res.success & (res.l2_normalized <= b))).double().mean()
        assert curve.at(b) == pytest.approx(float(expected))


def test_robust_accuracy_curve_consistent_with_minimal_eps(model, digits) -> None:
    eps = [0.02, 0.05, 0.1, 0.2]
    curve = robust_accuracy_curve(PGD(eps=0.1, steps=10), model, digits.x, digits.y, eps)
    assert bool((curve.accuracy[1:] <= curve.accuracy[:-1]).all())
    assert curve.per_sample is not None
    for e, acc in zip(eps, curve.accuracy.tolist(), strict=True):
        assert acc == pytest.approx(float((curve.per_sample > e).double().mean()))


def test_robust_accuracy_curve_never_above_independent_runs(model, digits) -> None:
    eps = [0.05, 0.1, 0.15]
    curve = robust_accuracy_curve(FGSM(eps=0.1), model, digits.x, digits.y, eps)
    for e, acc in zip(eps, curve.accuracy.tolist(), strict=True):
        alone = FGSM(eps=e)(model, digits.x, digits.y).robust_accuracy
        assert acc <= alone + 1e-12


def test_robust_accuracy_curve_needs_eps(model, digits) -> None:
    with pytest.raises(rl.errors.ParameterError, match="has no 'eps' budget"):
        robust_accuracy_curve(DeepFool(), model, digits.x, digits.y, [0.1])


@dataclass(frozen=True, kw_only=True)
class CountingFGSM(FGSM):
    """FGSM that records how many images each call attacks, and can fail on demand."""

    seen: ClassVar[list[int]] = []
    fail_after: ClassVar[int | None] = None

    def _run(self, run: Run) -> torch.Tensor:
        if (
            CountingFGSM.fail_after is not None
            and len(CountingFGSM.seen) >= CountingFGSM.fail_after
        ):
            raise KeyboardInterrupt("simulated interruption")
        CountingFGSM.seen.append(len(run.x))
        return super()._run(run)


def test_evaluate_worst_case_and_contributions(model, digits) -> None:
    attacks = [FGSM(eps=0.1), PGD(eps=0.1, steps=10)]
    ev = evaluate(model, digits, attacks, batch_size=50)
    fgsm = FGSM(eps=0.1)(model, digits.x, digits.y)
    pgd = PGD(eps=0.1, steps=10)(model, digits.x, digits.y)
    worst = (fgsm.attacked & ~(fgsm.success | pgd.success)).double().mean()
    assert ev.robust_accuracy == pytest.approx(float(worst))
    assert ev.per_attack["FGSM(eps=0.1)"]["robust_accuracy"] == pytest.approx(fgsm.robust_accuracy)
    only_fgsm = int((fgsm.success & ~pgd.success).sum())
    assert ev.contribution["FGSM(eps=0.1)"]["unique"] == only_fgsm
    assert ev.contribution["FGSM(eps=0.1)"]["first"] == int(fgsm.success.sum())
    assert ev.contribution["PGD(eps=0.1, steps=10)"]["first"] == int(
        (pgd.success & ~fgsm.success).sum()
    )


def test_evaluate_resumes_without_loss_or_double_count(model, digits, tmp_path: Path) -> None:
    full = evaluate(model, digits, [CountingFGSM(eps=0.1)], batch_size=32)
    CountingFGSM.seen.clear()
    CountingFGSM.fail_after = 2  # interrupted during the third batch
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, digits, [CountingFGSM(eps=0.1)], batch_size=32, out=tmp_path)
    lines = (tmp_path / "samples.csv").read_text().splitlines()
    assert len(lines) == 1 + 64
    # A torn write at the end of the file is cut off, not read.
    with (tmp_path / "samples.csv").open("a") as fh:
        fh.write("64,3,3,1,0.5")
    CountingFGSM.seen.clear()
    CountingFGSM.fail_after = None
    resumed = evaluate(model, digits, [CountingFGSM(eps=0.1)], batch_size=32, out=tmp_path)
    assert sum(CountingFGSM.seen) <= 120 - 64  # only the unfinished batches were attacked
    assert [int(r["index"]) for r in resumed.rows] == list(range(120))
    assert resumed.to_dict() == full.to_dict()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["robust_accuracy"] == pytest.approx(full.robust_accuracy)


def test_evaluate_refuses_to_mix_runs(model, digits, tmp_path: Path) -> None:
    evaluate(model, digits[:40], [FGSM(eps=0.1)], out=tmp_path)
    with pytest.raises(ResumeError, match="holds a run with other settings"):
        evaluate(model, digits[:40], [FGSM(eps=0.2)], out=tmp_path)


def test_evaluate_bad_arguments(model, digits) -> None:
    with pytest.raises(rl.errors.ParameterError, match="non-empty list of robustlens attacks"):
        evaluate(model, digits, [])
    with pytest.raises(rl.errors.ParameterError, match="'batch_size' must be an int >= 1"):
        evaluate(model, digits, [FGSM(eps=0.1)], batch_size=0)


class _Softmaxed(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).softmax(1)


class _Noisy(_Softmaxed):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + 0.05 * torch.randn_like(x))


class _Quantised(_Softmaxed):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x * 4).round() / 4)  # piecewise constant: zero gradients


@pytest.mark.parametrize(
    "wrapper,fragment",
    [
        (_Softmaxed, "look like probabilities"),
        (_Noisy, "change between two identical calls"),
        (_Quantised, "zero or not finite for 100% of the images"),
    ],
)
def test_evaluate_warns_about_unreliable_models(model, digits, wrapper, fragment) -> None:
    ev = evaluate(wrapper(model), digits[:40], [FGSM(eps=0.1)])
    assert any(fragment in w for w in ev.warnings), ev.warnings


def test_plain_model_gets_no_warning_and_weak_attack_is_flagged(model, digits) -> None:
    ev = evaluate(model, digits, [FGSM(eps=0.1), PGD(eps=0.1, steps=20)])
    assert len(ev.warnings) == 1
    assert ev.warnings[0].startswith("FGSM(eps=0.1) leaves robust accuracy at")


def test_evaluate_default_is_the_standard_ensemble(model, digits) -> None:
    ev = evaluate(model, digits[:30])
    assert ev.attacks == [rl.attacks.Ensemble.standard(eps=0.1).name]
