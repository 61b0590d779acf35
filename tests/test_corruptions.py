"""Random corruptions: the contract of every registered corruption, each one's maths, the ordering
of severities, corruption_robustness (CE, mCE) and random vs adversarial noise."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import nn

import robustlens as rl
from robustlens.bias import _corrupt as ops
from robustlens.bias.corruptions import (
    BENCHMARK,
    CORRUPTIONS,
    CorruptionResult,
    corrupt,
    corruption_robustness,
    names,
    random_vs_adversarial,
)
from robustlens.errors import DTypeError, ParameterError, RangeError, UnknownNameError

#: Corruptions that draw no random numbers: the seed cannot change them.
DETERMINISTIC = {
    "brightness",
    "contrast",
    "defocus_blur",
    "gaussian_blur",
    "jpeg",
    "pixelate",
    "zoom_blur",
}


@pytest.fixture(scope="module")
def fm_small() -> rl.data.ImageDataset:
    return rl.data.load("fashion-mnist", split="test").subset(200, seed=3)


@pytest.fixture(scope="module")
def fmnist_cnn() -> nn.Module:
    return rl.zoo.load("fmnist-cnn")


def test_registry_lists_the_paper_corruptions() -> None:
    assert set(BENCHMARK) <= set(names())
    assert {"speckle_noise", "gaussian_blur", "spatter"} <= set(names())
    assert {CORRUPTIONS.get(n).family for n in names()} == {"noise", "blur", "weather", "digital"}
    for n in names():
        assert len(CORRUPTIONS.get(n).params) == 5, n


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (3, 1, 28, 28)])
def test_corruption_contract(name: str, shape: tuple[int, int, int, int]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    for severity in (1, 5):
        out = corrupt(x, name, severity, seed=1)
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
        assert bool(torch.isfinite(out).all())
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.equal(x, before), "the input was modified"
        assert torch.equal(corrupt(x, name, severity, seed=1), out), "same seed, other output"
        if shape[-1] >= 28:  # lengths scale with the side: a 5x7 image is barely blurred
            assert not torch.equal(out, x), "the corruption changed nothing"
            other = corrupt(x, name, severity, seed=2)
            assert torch.equal(other, out) == (name in DETERMINISTIC), "seed ignored or used"


@pytest.mark.parametrize("name", names())
def test_generator_stream_is_followed(name: str) -> None:
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    c = CORRUPTIONS.get(name)
    assert torch.equal(c(x, 3, g1), corrupt(x, name, 3, generator=g2))


@pytest.mark.parametrize("seed", [0, 1])
def test_distance_to_clean_grows_with_severity(seed: int, fm_small: rl.data.ImageDataset) -> None:
    x = fm_small.x[:64]
    for name in names():
        dist = [
            float((corrupt(x, name, s, seed=seed) - x).flatten(1).norm(dim=1).mean())
            for s in range(1, 6)
        ]
        assert all(b > a for a, b in itertools.pairwise(dist)), (name, dist)


def test_severity_and_name_errors() -> None:
    x = torch.rand(1, 1, 8, 8)
    for bad in (0, 6, 2.0, True):
        with pytest.raises(ParameterError, match="'severity' must be an int in 1..5"):
            corrupt(x, "fog", bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'seed' must be an int"):
        corrupt(x, "fog", 1, seed=0.5)  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="did you mean 'gaussian_noise'"):
        corrupt(x, "gausian_noise", 1)
    with pytest.raises(DTypeError, match="float tensor"):
        corrupt((x * 255).to(torch.uint8), "fog", 1)  # type: ignore[arg-type]
    with pytest.raises(RangeError, match="divide by 255"):
        corrupt(x * 255, "fog", 1)


# --------------------------------------------------------------------------- maths


def test_contrast_and_brightness_closed_form() -> None:
    x = 0.25 + 0.5 * torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    mean = x.mean((2, 3), keepdim=True)
    torch.testing.assert_close(corrupt(x, "contrast", 2), (x - mean) * 0.5 + mean)
    torch.testing.assert_close(corrupt(x, "brightness", 5), (x + 0.3).clamp(0, 1))
    # Colour: raising HSV's value scales every channel by V' / V, so hue and saturation stay.
    rgb = 0.1 + 0.5 * torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    v = rgb.amax(1, keepdim=True)
    torch.testing.assert_close(corrupt(rgb, "brightness", 3), rgb * (v + 0.15) / v)


def test_noise_statistics() -> None:
    x = torch.full((4, 1, 64, 64), 0.5)
    d = corrupt(x, "gaussian_noise", 3) - x
    assert abs(float(d.std()) - 0.08) < 0.004 and abs(float(d.mean())) < 0.003
    shot = corrupt(x, "shot_noise", 5)  # Poisson(0.5 * 50) / 50: mean 0.5, variance 0.5 / 50
    assert abs(float(shot.mean()) - 0.5) < 0.005
    assert abs(float(shot.var()) - 0.01) < 0.001
    imp = corrupt(x, "impulse_noise", 5)
    changed = imp != x
    assert abs(float(changed.double().mean()) - 0.07) < 0.01
    assert set(imp[changed].unique().tolist()) == {0.0, 1.0}


def test_blurs_keep_constant_images() -> None:
    x = torch.full((2, 3, 10, 12), 0.4)
    for name in ("defocus_blur", "gaussian_blur", "zoom_blur", "motion_blur", "pixelate"):
        torch.testing.assert_close(corrupt(x, name, 5), x, msg=name)


def test_kernels_are_normalised() -> None:
    for r, a in ((0.3, 0.4), (1.5, 0.1), (3.0, 0.5)):
        k = ops.soft_disk(r, a)
        assert abs(float(k.sum()) - 1) < 1e-6 and float(k.min()) >= 0
        torch.testing.assert_close(k, k.flip(0).flip(1))
    assert abs(float(ops.gaussian_kernel(0.7).sum()) - 1) < 1e-6


def test_jpeg_is_the_defense_codec() -> None:
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(corrupt(x, "jpeg", 4), rl.defenses.JPEG(quality=50)(x))


def test_plasma_spans_unit_interval() -> None:
    p = ops.plasma(3, 20, 28, 2.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert p.shape == (3, 1, 20, 28)
    torch.testing.assert_close(p.amin((1, 2, 3)), torch.zeros(3))
    torch.testing.assert_close(p.amax((1, 2, 3)), torch.ones(3))


def test_elastic_without_displacement_is_identity() -> None:
    x = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    out = ops.affine_elastic(x, 0.0, 0.0, 1.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- corruption_robustness


def test_mce_of_a_model_against_itself_is_100(
    fmnist_cnn: nn.Module, fm_small: rl.data.ImageDataset
) -> None:
    chosen = ["gaussian_noise", "contrast", "fog"]
    same = corruption_robustness(fmnist_cnn, fm_small, chosen, baseline=fmnist_cnn)
    assert same.mce == 100.0 and same.ce == {c: 100.0 for c in chosen}
    assert same.relative_mce == 100.0
    # A second copy of the weights, evaluated on its own, sees the very same corrupted images.
    copy = corruption_robustness(fmnist_cnn, fm_small, chosen, baseline=rl.zoo.load("fmnist-cnn"))
    assert copy.mce == 100.0


def test_ce_follows_the_definition(fmnist_cnn: nn.Module, fm_small: rl.data.ImageDataset) -> None:
    chosen = ["impulse_noise", "brightness"]
    base = corruption_robustness(fmnist_cnn, fm_small, chosen, severities=(2, 4))
    adv = rl.zoo.load("fmnist-cnn-adv")
    res = corruption_robustness(adv, fm_small, chosen, severities=(2, 4), baseline=base)
    assert res.ce is not None and res.relative_ce is not None
    for c in chosen:
        e, b = res.errors[c], base.errors[c]
        assert res.ce[c] == pytest.approx(100 * sum(e) / sum(b))
        e0, b0 = 1 - res.clean_accuracy, 1 - base.clean_accuracy
        rel = 100 * sum(v - e0 for v in e) / sum(v - b0 for v in b)
        assert res.relative_ce[c] == pytest.approx(rel)
    assert res.mce == pytest.approx(sum(res.ce.values()) / 2)
    assert res.baseline_clean_accuracy == base.clean_accuracy
    json.dumps(res.to_dict())  # plain values


def test_accuracies_match_a_direct_evaluation(
    fmnist_cnn: nn.Module, fm_small: rl.data.ImageDataset
) -> None:
    res = corruption_robustness(fmnist_cnn, fm_small, ["contrast"], severities=(3,), batch_size=7)
    with torch.no_grad():
        clean = (fmnist_cnn(fm_small.x).argmax(1) == fm_small.y).double().mean()
        xc = corrupt(fm_small.x, "contrast", 3)
        acc = (fmnist_cnn(xc).argmax(1) == fm_small.y).double().mean()
    assert res.clean_accuracy == pytest.approx(float(clean))
    assert res.accuracy["contrast"][0] == pytest.approx(float(acc))
    assert res.ce is None and res.mce is None
    again = corruption_robustness(fmnist_cnn, fm_small, ["contrast"], severities=(3,))
    assert again.accuracy == res.accuracy  # deterministic corruption: batching does not matter


def test_accuracy_falls_with_severity_on_average(
    fmnist_cnn: nn.Module, fm_small: rl.data.ImageDataset
) -> None:
    res = corruption_robustness(fmnist_cnn, fm_small, seed=0)
    per_severity = res.severity_accuracy()
    assert all(b <= a for a, b in itertools.pairwise(per_severity)), per_severity
    assert per_severity[0] < res.clean_accuracy
    assert res.corruptions == tuple(names())
    assert res.mean_accuracy == pytest.approx(sum(per_severity) / 5)
    # The same seed gives the same result, another seed another one.
    again = corruption_robustness(fmnist_cnn, fm_small, ["fog", "snow"], seed=0)
    assert again.accuracy["fog"] == res.accuracy["fog"]


def test_corruption_robustness_errors(
    fmnist_cnn: nn.Module, fm_small: rl.data.ImageDataset
) -> None:
    with pytest.raises(ParameterError, match="list of names"):
        corruption_robustness(fmnist_cnn, fm_small, "fog")
    with pytest.raises(ParameterError, match="'severities' is empty"):
        corruption_robustness(fmnist_cnn, fm_small, ["fog"], severities=())
    with pytest.raises(ParameterError, match="'severity' must be an int in 1..5"):
        corruption_robustness(fmnist_cnn, fm_small, ["fog"], severities=(0, 1))
    with pytest.raises(ParameterError, match="repeats"):
        corruption_robustness(fmnist_cnn, fm_small, ["fog", "fog"])
    with pytest.raises(UnknownNameError, match="did you mean 'snow'"):
        corruption_robustness(fmnist_cnn, fm_small, ["snwo"])
    with pytest.raises(DTypeError, match="ImageDataset"):
        corruption_robustness(fmnist_cnn, fm_small.x, ["fog"])  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'batch_size' must be an int >= 1"):
        corruption_robustness(fmnist_cnn, fm_small, ["fog"], batch_size=0)
    small = fm_small[:8]
    base = corruption_robustness(fmnist_cnn, small, ["fog"], severities=(1, 2))
    with pytest.raises(ParameterError, match="same corruptions and severities"):
        corruption_robustness(fmnist_cnn, small, ["fog", "snow"], severities=(1, 2), baseline=base)
    with pytest.raises(DTypeError, match="baseline must be"):
        corruption_robustness(fmnist_cnn, small, ["fog"], baseline="alexnet")  # type: ignore[arg-type]


def test_zero_baseline_error_gives_nan() -> None:
    res = CorruptionResult(("fog",), (1, 2), {"fog": [0.5, 0.4]}, 0.9, 10, 0)
    perfect = CorruptionResult(("fog",), (1, 2), {"fog": [1.0, 1.0]}, 1.0, 10, 0)
    out = res.with_baseline(perfect)
    assert out.ce is not None and math.isnan(out.ce["fog"]) and math.isnan(out.mce or 0.0)


# --------------------------------------------------------------------------- random vs adversarial


def test_random_noise_of_adversarial_norm_rarely_fools() -> None:
    model = rl.zoo.load("digits-cnn")
    ds = rl.data.load("digits")[:40]
    res = random_vs_adversarial(model, ds.x, ds.y, trials=5, seed=0)
    assert res.adversarial_accuracy < 0.1 < 0.8 < res.random_accuracy
    assert res.adversarial_accuracy < res.clean_accuracy
    moved = res.adversarial_norms > 0
    # After clipping the random noise is rescaled back to the adversarial norm.
    ratio = res.random_norms[moved] / res.adversarial_norms[moved]
    assert float((ratio - 1).abs().median()) < 1e-3
    assert torch.equal(
        random_vs_adversarial(model, ds.x, ds.y, trials=5, seed=0).random_norms, res.random_norms
    )
    json.dumps(res.to_dict())


def test_random_vs_adversarial_linf_budget() -> None:
    model = rl.zoo.load("digits-cnn")
    ds = rl.data.load("digits")[:24]
    res = random_vs_adversarial(model, ds.x, ds.y, norm="linf", eps=0.2, trials=3)
    assert float(res.adversarial_norms.max()) <= 0.2 + 1e-6
    assert res.attack.startswith("PGD")
    assert res.adversarial_accuracy < res.random_accuracy
    assert bool((res.random_norms <= res.adversarial_norms + 1e-6).all())


def test_random_vs_adversarial_errors() -> None:
    model = rl.zoo.load("digits-cnn")
    x = rl.data.load("digits")[:4].x
    with pytest.raises(ParameterError, match="'norm' must be 'l2' or 'linf'"):
        random_vs_adversarial(model, x, norm="l1")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'trials' must be an int >= 1"):
        random_vs_adversarial(model, x, trials=0)
    with pytest.raises(ParameterError, match="'eps' must be a float > 0"):
        random_vs_adversarial(model, x, eps=-1.0)
    with pytest.raises(DTypeError, match="robustlens attack"):
        random_vs_adversarial(model, x, attack="pgd")
