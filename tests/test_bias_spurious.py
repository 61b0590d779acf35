"""Planted spurious cues and the measurement of a model's reliance on them."""

from __future__ import annotations

import math

import pytest
import torch

import robustlens as rl
from robustlens.data.spurious import apply_cue, brightness_gains, tint_colours
from robustlens.errors import DTypeError, ParameterError, RangeError, UnknownNameError


@pytest.fixture(scope="module")
def fmnist_small() -> rl.data.ImageDataset:
    return rl.data.load("fashion-mnist", split="test").subset(2000, seed=0)


def _binomial_bound(n: int, p: float) -> float:
    return 4.5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9


# --------------------------------------------------------------------------- decoders
# Read the cue back from the pixels alone, in closed form, to check what was planted.


def _decode_patch(x: torch.Tensor, k: int) -> torch.Tensor:
    """The class whose patch sits exactly in its place (-1 when none or several do)."""
    _, c, h, w = x.shape
    cls = torch.arange(k)
    on_black = apply_cue(torch.zeros(k, c, h, w), cls, "patch", num_classes=k)
    on_white = apply_cue(torch.ones(k, c, h, w), cls, "patch", num_classes=k)
    region = (on_black != 0) | (on_white != 1)  # (K, C, H, W) the square of each class
    match = ((x[:, None] == on_black[None]) | ~region[None]).flatten(2).all(2)  # (N, K)
    return torch.where(match.sum(1) == 1, match.float().argmax(1), -1)


def _decode_tint(x: torch.Tensor, k: int) -> torch.Tensor:
    """The palette colour nearest to the image's mean colour (normalised to max 1)."""
    mean = x.flatten(2).sum(2)
    mean = mean / mean.amax(1, keepdim=True)
    return torch.cdist(mean, tint_colours(k)).argmin(1)


# --------------------------------------------------------------------------- planting


@pytest.mark.parametrize("strength", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_patch_planted_at_the_strength_asked(
    fmnist_small: rl.data.ImageDataset, strength: float
) -> None:
    planted = rl.data.plant_cue(fmnist_small, "patch", strength, seed=3)
    decoded = _decode_patch(planted.x, 10)
    assert decoded.equal(planted.cue_class)  # the pixels carry exactly the recorded cue
    measured = float((decoded == fmnist_small.y).float().mean())
    assert abs(measured - strength) <= _binomial_bound(len(fmnist_small), strength)
    # Conflicting cues are spread over the other classes: none takes the bulk.
    wrong = planted.cue_class[~planted.aligned]
    if len(wrong) > 100:
        assert torch.bincount(wrong, minlength=10).max() < 0.2 * len(wrong)
    assert planted.y.equal(fmnist_small.y)


def test_tint_planted_at_the_strength_asked(fmnist_small: rl.data.ImageDataset) -> None:
    planted = rl.data.plant_cue(fmnist_small, "tint", 0.7, seed=1)
    assert planted.dataset.shape == (3, 28, 28)  # greyscale became RGB
    decoded = _decode_tint(planted.x, 10)
    assert decoded.equal(planted.cue_class)
    measured = float((decoded == fmnist_small.y).float().mean())
    assert abs(measured - 0.7) <= _binomial_bound(len(fmnist_small), 0.7)


def test_no_correlation_at_one_over_k() -> None:
    ds = rl.data.load("digits", split="all")  # 1797 images, 10 classes
    planted = rl.data.plant_cue(ds, "brightness", 0.1, seed=0)
    assert abs(float(planted.aligned.float().mean()) - 0.1) <= _binomial_bound(len(ds), 0.1)
    # Cue independent of class: every (class, cue) cell holds about 1/100 of the images.
    joint = torch.bincount(ds.y * 10 + planted.cue_class, minlength=100).float() / len(ds)
    assert float((joint - 0.01).abs().max()) < 0.012
    # The brightness cue is the ratio of each image's maximum to the original's.
    ratio = planted.x.flatten(1).amax(1) / ds.x.flatten(1).amax(1)
    nearest = (ratio[:, None] - brightness_gains(10)[None]).abs().argmin(1)
    assert nearest.equal(planted.cue_class)


def test_background_cue_replaces_only_background() -> None:
    ds = rl.data.load("digits", split="test")
    planted = rl.data.plant_cue(ds, "background", 0.8, seed=2)
    dark = (ds.x < 0.05).all(1, keepdim=True).expand_as(ds.x)
    assert planted.x[~dark].equal(ds.x[~dark])
    assert float(planted.x[dark].max()) <= 0.35 + 1e-6
    assert float(planted.x[dark].std()) > 0.05  # a grating, not a flat fill
    # The grating's orientation follows the cue: class 0 is constant down each column.
    zero = apply_cue(torch.zeros(1, 1, 8, 8), torch.tensor([0]), "background", num_classes=10)
    assert float(zero[0, 0].std(0).max()) < 1e-6 and float(zero[0, 0].std(1).min()) > 0.05


def test_patch_closed_form_and_contract() -> None:
    x = torch.full((4, 2, 12, 10), 0.5)
    cue = torch.tensor([0, 1, 2, 5])
    out = apply_cue(x, cue, "patch", num_classes=6)
    assert out.shape == x.shape and out.dtype == torch.float32 and x.eq(0.5).all()
    assert out[0, :, 1:4, 1:4].eq(1).all()  # class 0: solid, top-left
    assert out[1, :, 1:4, 6:9].eq(1).all()  # class 1: solid, top-right
    assert out[2, :, 8:11, 6:9].eq(1).all()  # class 2: solid, bottom-right
    # class 5: corner 1 (top-right), pattern 1 (hollow square)
    assert out[3, 0, 1:4, 6:9].tolist() == [[1, 1, 1], [1, 0, 1], [1, 1, 1]]
    changed = (out != x).any(1).flatten(1).sum(1)
    assert changed.tolist() == [9, 9, 9, 9]


def test_same_seed_same_images() -> None:
    ds = rl.data.load("digits", split="test")
    a = rl.data.plant_cue(ds, "background", 0.5, seed=5)
    b = rl.data.plant_cue(ds, "background", 0.5, seed=5)
    c = rl.data.plant_cue(ds, "background", 0.5, seed=6)
    assert a.x.equal(b.x) and a.cue_class.equal(b.cue_class)
    assert not a.cue_class.equal(c.cue_class)
    aligned, conflicting = rl.data.cue_test_sets(ds, "patch", seed=0)
    assert bool(aligned.aligned.all()) and not bool(conflicting.aligned.any())
    assert aligned.y.equal(conflicting.y)


def test_registered_patch_set() -> None:
    train = rl.data.load("fashion-mnist-patch", split="train")
    assert train.name == "fashion-mnist-patch" and len(train) == 60_000
    aligned = _decode_patch(train.x[:3000], 10) == train.y[:3000]
    assert abs(float(aligned.float().mean()) - 0.9) <= _binomial_bound(3000, 0.9)


def test_bad_arguments_say_what_must_hold() -> None:
    ds = rl.data.load("digits", split="test")
    with pytest.raises(ParameterError, match=r"'strength' must be a float in \[0, 1\].*got 1.5"):
        rl.data.plant_cue(ds, "patch", 1.5)
    with pytest.raises(ParameterError, match="'strength' must be"):
        rl.data.plant_cue(ds, "patch", -0.1)
    with pytest.raises(UnknownNameError, match="unknown cue kind 'pach'; did you mean 'patch'"):
        rl.data.plant_cue(ds, "pach")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="pass a smaller patch_size"):
        rl.data.plant_cue(ds, "patch", patch_size=4)
    with pytest.raises(DTypeError, match="'ds' must be a robustlens ImageDataset"):
        rl.data.plant_cue(ds.x, "patch")  # type: ignore[arg-type]
    with pytest.raises(RangeError, match=r"must be in \[0, 1\]"):
        apply_cue(ds.x * 16, ds.y, "tint", num_classes=10)
    with pytest.raises(ParameterError, match="encodes at most 20 classes"):
        apply_cue(torch.zeros(2, 1, 28, 28), torch.tensor([0, 21]), "patch", num_classes=22)


# --------------------------------------------------------------------------- reliance


def test_reliance_closed_form() -> None:
    y = torch.tensor([0, 1, 2, 3])
    res = rl.bias.CueReliance.from_predictions(
        clean=y,
        aligned=torch.tensor([0, 1, 2, 0]),
        conflicting=torch.tensor([2, 1, 0, 0]),
        y=y,
        cue_class=torch.tensor([2, 3, 0, 1]),
        kind="tint",
    )
    assert (res.clean_accuracy, res.aligned_accuracy, res.conflicting_accuracy) == (1, 0.75, 0.25)
    assert res.gap == pytest.approx(0.5) and res.cue_following == 0.5
    assert res.to_dict()["gap"] == pytest.approx(0.5)


def test_patch_model_relies_on_the_cue_plain_model_does_not(
    fmnist_small: rl.data.ImageDataset,
) -> None:
    cued = rl.bias.cue_reliance(rl.zoo.load("fmnist-cnn-patch"), fmnist_small, "patch", seed=0)
    plain = rl.bias.cue_reliance(rl.zoo.load("fmnist-cnn"), fmnist_small, "patch", seed=0)
    assert cued.n == plain.n == 2000
    # Trained with the cue at 0.9: right when the cue agrees, misled when it lies (measured on
    # the 10,000 test images: aligned 99.7%, conflicting 81.9%, follows the cue on 10.0%).
    assert cued.aligned_accuracy > 0.98
    assert cued.conflicting_accuracy < cued.aligned_accuracy - 0.12
    assert cued.cue_following > 0.06
    assert cued.gap > 4 * abs(plain.gap)
    # Never saw the cue: the corner patch barely matters, and it is not followed.
    assert abs(plain.gap) < 0.05
    assert plain.cue_following < 0.03
    assert plain.clean_accuracy > 0.9


def test_reliance_errors() -> None:
    ds = rl.data.load("digits", split="test")
    model = rl.zoo.load("digits-cnn")
    with pytest.raises(UnknownNameError, match="did you mean 'tint'"):
        rl.bias.cue_reliance(model, ds, "tnt")  # type: ignore[arg-type]
    with pytest.raises(DTypeError, match="'ds' must be a robustlens ImageDataset"):
        rl.bias.cue_reliance(model, ds.x, "patch")  # type: ignore[arg-type]
    three = rl.data.ImageDataset(ds.x, ds.y % 3, classes=["a", "b", "c"])
    with pytest.raises(rl.errors.ModelOutputError, match="the model has 10 classes"):
        rl.bias.cue_reliance(model, three, "patch")
