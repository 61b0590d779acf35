"""Random corruptions: the contract of every registered corruption, each one's maths, the ordering
of severities, corruption_robustness (CE, mCE) and random vs adversarial noise."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import robustlens as rl
from robustlens.bias import _corrupt as ops
from robustlens.bias.corruptions import (
    ALEXNET_ERRORS,
    BENCHMARK,
    CORRUPTIONS,
    CorruptionResult,
    corrupt,
    corrupted_batches,
    corruption_robustness,
    names,
    random_vs_adversarial,
    scale,
    table_for,
)
from robustlens.data.preprocess import Preprocessing
from robustlens.errors import (
    DataFileError,
    DTypeError,
    ParameterError,
    RangeError,
    UnknownNameError,
)

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
        c = CORRUPTIONS.get(n)
        assert len(c.params("cifar")) == len(c.params("imagenet")) == 5, n
    assert len(BENCHMARK) == 15 and set(ALEXNET_ERRORS) == set(BENCHMARK)


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


# --------------------------------------------------------------------------- severity ladders

#: The image measure a corruption's ladder is checked with. 1 - SSIM (Wang et al. 2004) by
#: default: it sees lost detail, added noise, lost contrast and overlays that hide the image (frost
#: dims the image under the same frost from severity 3 to 4, which a pixel distance reads as less
#: change). Where the paper's table moves two lengths in opposite directions, the root-mean-square
#: pixel distance: zoom blur (zooms further, averages fewer copies), pixelate (0.6 of the side
#: leaves uneven blocks that SSIM penalises more than 0.5's even ones) and snow (severity 3's
#: flakes are sparser but larger and longer than severity 2's). docs/corruptions.md gives the
#: figures.
RMS_MEASURED = {"zoom_blur", "pixelate", "snow"}


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM per image (Gaussian window of sigma 1.5, Wang et al.'s constants), (N,)."""
    from robustlens._filters import gaussian_blur

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = gaussian_blur(a, 1.5), gaussian_blur(b, 1.5)
    var_a = gaussian_blur(a * a, 1.5) - mu_a**2
    var_b = gaussian_blur(b * b, 1.5) - mu_b**2
    cov = gaussian_blur(a * b, 1.5) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    return (num / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))).mean((1, 2, 3))


def ladder(x: Tensor, name: str, seed: int = 0) -> list[float]:
    """The corruption's change of ``x`` at severities 1..5 (mean over the images), in the
    measure of :data:`RMS_MEASURED`."""
    out = []
    for s in range(1, 6):
        y = corrupt(x, name, s, seed=seed)
        if name in RMS_MEASURED:
            out.append(float((y - x).pow(2).mean((1, 2, 3)).sqrt().mean()))
        else:
            out.append(float((1 - ssim(x, y)).mean()))
    return out


def increasing(values: list[float]) -> bool:
    return all(b > a for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("seed", [0, 1])
def test_ladders_are_ordered_at_28(seed: int, fm_small: rl.data.ImageDataset) -> None:
    x = fm_small.x[:64]
    for name in names():
        values = ladder(x, name, seed)
        assert increasing(values), (name, values)


@pytest.fixture(scope="module")
def photos_224() -> Tensor:
    """Three real photos (scikit-image's astronaut, cat and coffee), shorter side resized to 256
    and centre-cropped to 224x224, as ImageNet's evaluation does."""
    import skimage.data
    from torchvision.transforms.v2 import functional as TF

    out = []
    for name in ("astronaut", "chelsea", "coffee"):
        image = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1)
        image = TF.center_crop(TF.resize(image, 256, antialias=True), [224, 224])
        out.append(image.float() / 255)
    return torch.stack(out)


@pytest.mark.parametrize("name", names())
def test_ladders_are_ordered_on_photos_at_224(name: str, photos_224: Tensor) -> None:
    values = ladder(photos_224, name)
    if name != "elastic":
        assert increasing(values), values
        return
    # ImageNet-C's elastic table has two regimes: severities 1-2 a global affine warp (three
    # points moved by up to 24 and 49 pixels), 3-5 a fine local field under a small affine one.
    # Pixels move furthest at severity 2: the paper orders them by AlexNet's errors, not by any
    # image distance. Each regime is ordered, and the local field's own change grows.
    assert values[0] < values[1] and values[2] < values[3] < values[4], values
    assert values[1] > values[2], "the paper's severity 2 moves pixels further than 3"


def test_corrupted_224_images_differ_from_their_cifar_version(photos_224: Tensor) -> None:
    # At 224 the ImageNet-C table applies: much stronger than CIFAR's table scaled up.
    for name in ("gaussian_noise", "pixelate", "contrast", "jpeg"):
        auto = corrupt(photos_224, name, 3)
        torch.testing.assert_close(auto, corrupt(photos_224, name, 3, table="imagenet"))
        cifar = corrupt(photos_224, name, 3, table="cifar")
        assert float((auto - photos_224).abs().mean()) > float((cifar - photos_224).abs().mean())


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
    draws = ops.Draws(torch.Generator().manual_seed(0), torch.device("cpu"))
    p = ops.plasma(3, 20, 28, 2.0, draws, torch.device("cpu"))
    assert p.shape == (3, 1, 20, 28)
    torch.testing.assert_close(p.amin((1, 2, 3)), torch.zeros(3))
    torch.testing.assert_close(p.amax((1, 2, 3)), torch.ones(3))


def test_elastic_without_displacement_is_identity() -> None:
    x = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    out = ops.affine_elastic(x, 0.0, 1.0, 0.0, ops.Draws([torch.Generator()] * 2, x.device))
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
    with pytest.raises(ParameterError, match="only baseline named by a string is 'alexnet'"):
        corruption_robustness(fmnist_cnn, small, ["fog"], baseline="resnet")  # type: ignore[arg-type]
    with pytest.raises(DTypeError, match="baseline must be"):
        corruption_robustness(fmnist_cnn, small, ["fog"], baseline=3)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="AlexNet's published errors are ImageNet-C's"):
        corruption_robustness(fmnist_cnn, small, ["fog"], baseline="alexnet")
    with pytest.raises(ParameterError, match="'table' must be 'cifar', 'imagenet' or None"):
        corruption_robustness(fmnist_cnn, small, ["fog"], table="tiny")  # type: ignore[arg-type]


def test_zero_baseline_error_gives_nan() -> None:
    res = CorruptionResult(("fog",), (1, 2), {"fog": [0.5, 0.4]}, 0.9, 10, 0)
    perfect = CorruptionResult(("fog",), (1, 2), {"fog": [1.0, 1.0]}, 1.0, 10, 0)
    out = res.with_baseline(perfect)
    assert out.ce is not None and math.isnan(out.ce["fog"]) and math.isnan(out.mce or 0.0)


# --------------------------------------------------------------------------- tables and scale


def test_the_table_follows_the_image_size() -> None:
    sides = (8, 28, 32, 84, 85, 112, 224, 512)
    assert [table_for(s, s) for s in sides] == ["cifar"] * 4 + ["imagenet"] * 4
    assert table_for(84, 1000) == "cifar"  # the shorter side decides
    x32, x224 = torch.full((2, 3, 32, 32), 0.5), torch.full((2, 3, 224, 224), 0.5)
    # Severity 3 of Gaussian noise: CIFAR-10-C's sigma 0.08 at 32x32, ImageNet-C's 0.18 at 224.
    assert abs(float((corrupt(x32, "gaussian_noise", 3) - x32).std()) - 0.08) < 0.005
    assert abs(float((corrupt(x224, "gaussian_noise", 3) - x224).std()) - 0.18) < 0.005
    forced = corrupt(x224, "gaussian_noise", 3, table="cifar") - x224
    assert abs(float(forced.std()) - 0.08) < 0.005
    jpeg = CORRUPTIONS.get("jpeg")
    assert jpeg.params("imagenet") == (25, 18, 15, 10, 7)
    assert jpeg.params("cifar") == (80, 65, 58, 50, 40)
    with pytest.raises(ParameterError, match="'table' must be 'cifar', 'imagenet' or None"):
        corrupt(x32, "fog", 1, table="tiny")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("side", "sigma"), [(224, 1.0), (448, 2.0), (112, 0.5), (32, 0.4), (28, 0.35)]
)
def test_lengths_scale_with_the_shorter_side(side: int, sigma: float) -> None:
    # Gaussian blur at severity 1: ImageNet-C's sigma 1 px at 224, CIFAR-10-C's 0.4 px at 32.
    x = torch.rand(1, 3, side, side + 9, generator=torch.Generator().manual_seed(0))
    expected = ops.gaussian_blur(x, sigma).clamp(0, 1)
    torch.testing.assert_close(corrupt(x, "gaussian_blur", 1), expected)
    assert scale(side, side + 9, table_for(side, side)) == pytest.approx(
        sigma / (0.4 if side < 85 else 1.0)
    )


def test_zoom_factors_are_the_papers() -> None:
    from robustlens.bias.corruptions import _zoom_factors

    # numpy.arange(1, 1.11, 0.01) ... arange(1, 1.31, 0.03): 11, 16, 11, 13, 11 zooms.
    counts = [len(_zoom_factors(*p)) for p in CORRUPTIONS.get("zoom_blur").params("imagenet")]
    assert counts == [11, 16, 11, 13, 11]
    assert _zoom_factors(1.31, 0.03)[-1] == pytest.approx(1.30)


@pytest.mark.parametrize("name", names())
def test_an_image_does_not_depend_on_its_batch(name: str) -> None:
    x = torch.rand(4, 3, 40, 44, generator=torch.Generator().manual_seed(1))
    whole = corrupt(x, name, 4, seed=3)
    for i in range(len(x)):
        alone = corrupt(x[i : i + 1], name, 4, seed=3, index=[i])
        torch.testing.assert_close(alone, whole[i : i + 1], atol=1e-5, rtol=0)
    if name not in DETERMINISTIC:  # the position is part of the seed
        assert not torch.equal(corrupt(x[:1], name, 4, seed=3, index=[1]), whole[:1])


# --------------------------------------------------------------------------- AlexNet's mCE


def test_mce_against_alexnet_by_hand() -> None:
    acc = {
        "gaussian_noise": [0.6, 0.5, 0.4, 0.3, 0.2],  # mean error 0.6
        "contrast": [0.7] * 5,  # mean error 0.3
        "speckle_noise": [0.5] * 5,  # an extra: no published AlexNet error
    }
    res = CorruptionResult(tuple(acc), (1, 2, 3, 4, 5), acc, 0.75, 100, 0, table="imagenet")
    res = res.with_alexnet()
    assert res.ce_baseline == "alexnet" and res.ce is not None and res.relative_ce is not None
    assert set(res.ce) == {"gaussian_noise", "contrast"}
    # 100 * 0.6 / 0.886428 and 100 * (0.6 - 0.25) / (0.886428 - 0.43478)
    assert res.ce["gaussian_noise"] == pytest.approx(67.6874, abs=1e-4)
    assert res.relative_ce["gaussian_noise"] == pytest.approx(77.4940, abs=1e-4)
    # 100 * 0.3 / 0.853204 and 100 * (0.3 - 0.25) / (0.853204 - 0.43478)
    assert res.ce["contrast"] == pytest.approx(35.1616, abs=1e-4)
    assert res.relative_ce["contrast"] == pytest.approx(11.9496, abs=1e-4)
    assert res.mce == pytest.approx(51.4245, abs=1e-4)
    assert res.relative_mce == pytest.approx(44.7218, abs=1e-4)
    assert res.mce_corruptions == ("gaussian_noise", "contrast")
    assert res.baseline_clean_accuracy == pytest.approx(0.56522)
    assert "not comparable" not in res.ce_note
    d = res.to_dict()
    assert (d["ce_baseline"], d["table"]) == ("alexnet", "imagenet")
    json.dumps(d)
    # With some severities only, the ratio uses the mean over those, and says so.
    part = CorruptionResult(
        ("contrast",), (1, 5), {"contrast": [0.8, 0.6]}, 0.75, 100, 0, table="imagenet"
    ).with_alexnet()
    assert part.ce == {"contrast": pytest.approx(100 * 0.3 / 0.853204)}
    assert "not comparable with published mCE" in part.ce_note
    with pytest.raises(ParameterError, match="AlexNet's published errors are ImageNet-C's"):
        CorruptionResult(("fog",), (1,), {"fog": [0.5]}, 0.9, 10, 0).with_alexnet()
    with pytest.raises(ParameterError, match="15 benchmark corruptions only"):
        CorruptionResult(
            ("spatter",), (1,), {"spatter": [0.5]}, 0.9, 10, 0, table="imagenet"
        ).with_alexnet()


def _imagenet_toy() -> tuple[nn.Module, rl.data.ImageDataset]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 1000))
    x = torch.rand(6, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:2] = (y[:2] + 1) % 1000  # two clean errors
    return model, rl.data.ImageDataset(x, y, classes=[str(i) for i in range(1000)])


def test_a_1000_class_model_at_imagenet_size_gets_alexnets_mce() -> None:
    model, ds = _imagenet_toy()
    res = corruption_robustness(model, ds, ["fog", "speckle_noise"], batch_size=4)
    assert (res.table, res.ce_baseline, res.mce_corruptions) == ("imagenet", "alexnet", ("fog",))
    assert res.ce is not None and set(res.ce) == {"fog"}
    mean_err = sum(res.errors["fog"]) / 5
    assert res.ce["fog"] == pytest.approx(100 * mean_err / 0.819324)
    assert res.clean_accuracy == pytest.approx(4 / 6)
    json.dumps(res.to_dict())
    # The CIFAR table, or an explicit model baseline, is not compared with AlexNet.
    small = corruption_robustness(model, ds, ["fog"], severities=(1,), table="cifar")
    assert small.ce is None and small.ce_baseline is None
    own = corruption_robustness(model, ds, ["fog"], severities=(1, 2), baseline=model)
    assert own.ce_baseline == "model" and own.mce == 100.0
    forced = corruption_robustness(model, ds, ["fog"], severities=(1, 2), baseline="alexnet")
    assert forced.ce_baseline == "alexnet" and "not comparable" in forced.ce_note


def test_the_report_names_alexnet() -> None:
    from robustlens.report.blocks import Paragraph
    from robustlens.report.sections.bias import _corruptions

    acc = {"fog": [0.5] * 5}
    res = CorruptionResult(("fog",), (1, 2, 3, 4, 5), acc, 0.8, 10, 0, table="imagenet")
    blocks = _corruptions({**res.with_alexnet().to_dict(), "baseline": None})
    text = " ".join(b.text for b in blocks if isinstance(b, Paragraph))
    assert "relative to AlexNet's published ImageNet-C errors (clean accuracy 56.5%)" in text
    assert "severities from ImageNet-C's (224x224) table" in text
    assert "published ImageNet-C error for the corruption" in text  # the note: what is divided
    assert "bias.corruptions" not in text


# --------------------------------------------------------------------------- streamed data


@pytest.fixture(scope="module")
def photos_112(photo_folder: Path) -> tuple[rl.data.ImageFiles, rl.data.ImageDataset]:
    pre = Preprocessing(input_size=(112, 112), resize=128)
    files = rl.data.open_folder(photo_folder, preprocessing=pre, workers=2)
    return files, rl.data.load_folder(photo_folder, preprocessing=pre)


def _collect(batches: Any) -> dict[tuple[Any, int, int], Tensor]:
    return {(b.name, b.severity, int(i)): b.x[k] for b in batches for k, i in enumerate(b.index)}


def test_streamed_and_in_memory_give_the_same_corrupted_images(
    photos_112: tuple[rl.data.ImageFiles, rl.data.ImageDataset],
) -> None:
    files, memory = photos_112
    chosen, sev = ["glass_blur", "frost", "shot_noise", "contrast"], (1, 5)
    workers = _collect(corrupted_batches(files, chosen, sev, batch_size=4, seed=7, clean=True))
    inline = _collect(
        corrupted_batches(files.with_options(workers=0), chosen, sev, batch_size=4, seed=7)
    )
    held = _collect(corrupted_batches(memory, chosen, sev, batch_size=4, seed=7))
    assert len(workers) == 9 * (1 + 8) and len(held) == len(inline) == 9 * 8
    for key, image in held.items():
        assert torch.equal(image, workers[key]) and torch.equal(image, inline[key]), key
    for i in range(9):
        assert torch.equal(workers[None, 0, i], memory.x[i])
    # Another batch size gives the same images (up to float rounding of batched kernels), and
    # so does corrupt() on the positions.
    other = _collect(corrupted_batches(memory, chosen, sev, batch_size=9, seed=7))
    direct = corrupt(memory.x, "frost", 5, seed=7)
    for i in range(9):
        torch.testing.assert_close(other["frost", 5, i], held["frost", 5, i], atol=1e-5, rtol=0)
        torch.testing.assert_close(direct[i], held["frost", 5, i], atol=1e-5, rtol=0)


def test_streamed_and_in_memory_accuracies_are_equal(
    photos_112: tuple[rl.data.ImageFiles, rl.data.ImageDataset],
) -> None:
    files, memory = photos_112
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    chosen = ["snow", "jpeg", "contrast"]
    streamed = corruption_robustness(model, files, chosen, (2, 4), batch_size=4, seed=1)
    held = corruption_robustness(model, memory, chosen, (2, 4), batch_size=4, seed=1)
    assert streamed.n == held.n == 9 and streamed.table == "imagenet"
    assert streamed.accuracy == held.accuracy and streamed.clean_accuracy == held.clean_accuracy


def test_corruptions_are_made_batch_by_batch(photo_folder: Path, tmp_path: Path) -> None:
    # A broken last file with strict=True stops the stream only when its chunk is read: the first
    # chunks were corrupted and handed over before, nothing was made for the whole data set.
    import shutil

    root = tmp_path / "photos"
    shutil.copytree(photo_folder, root)
    (root / "n07920052" / "zz_broken.jpg").write_bytes(b"not a jpeg")
    pre = Preprocessing(input_size=(96, 96), resize=100)
    files = rl.data.open_folder(root, preprocessing=pre, strict=True)
    seen = []
    with pytest.raises(DataFileError, match="strict"):
        for b in corrupted_batches(files, ["contrast"], (1,), batch_size=3):
            seen.append(b.index.tolist())
    assert seen == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # the broken file is the tenth


def test_the_sweep_counts_its_steps(
    monkeypatch: pytest.MonkeyPatch, fmnist_cnn: nn.Module, fm_small: rl.data.ImageDataset
) -> None:
    import robustlens.bias.corruptions as module

    tickers = []
    real = module.status

    @contextmanager
    def spy(desc: str, total: int | None, **kw: Any) -> Iterator[Any]:
        with real(desc, total, **kw) as ticker:
            tickers.append((desc, total, ticker))
            yield ticker

    monkeypatch.setattr(module, "status", spy)
    corruption_robustness(fmnist_cnn, fm_small[:50], ["fog", "jpeg"], (1, 3, 5), batch_size=20)
    ((desc, total, ticker),) = tickers
    assert desc == "corruptions: 2 x 3 severities on 50 images"
    assert total == ticker.n == 3 * (1 + 2 * 3)  # 3 chunks x (clean + 6 pairs)


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
