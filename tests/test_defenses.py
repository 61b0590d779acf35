"""Input-transformation defenses: the contract of every preprocessor, each one's maths, defend()."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import robustlens as rl
from robustlens.defenses import JPEG, TVM, BitDepth, Blur, CropRescale, defend, probe
from robustlens.errors import ParameterError, RangeError, ShapeError


def _quilting() -> nn.Module:
    from robustlens.defenses.quilting import Quilting

    clean = torch.rand(6, 3, 5, 7, generator=torch.Generator().manual_seed(3))
    return Quilting.from_images(clean, patch=2, stride=2, k=3, size=60, seed=0)


FACTORIES = {
    "blur": lambda: Blur(size=3),
    "jpeg": lambda: JPEG(quality=50),
    "bitdepth": lambda: BitDepth(bits=3),
    "crop": lambda: CropRescale(fraction=0.6, crops=3, seed=1),
    "tvm": lambda: TVM(drop=0.5, weight=0.03, iterations=20, seed=1),
    "quilting": _quilting,
}


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(4, 3, 5, 7, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_preprocessor_contract(name: str, x: torch.Tensor) -> None:
    pre = FACTORIES[name]()
    before = x.clone()
    out = pre(x)
    views = getattr(pre, "views", 1)
    assert out.shape == (4 * views, 3, 5, 7)
    assert out.dtype == torch.float32 and out.device == x.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(x, before), "the input was modified"
    # The declared flags are the truth: probing agrees with them.
    found = probe(pre, x)
    assert found.differentiable == pre.differentiable, found
    assert found.randomized == pre.randomized, found
    # Seeded: a fresh instance with the same seed gives the same output sequence.
    again = FACTORIES[name]()
    assert torch.equal(again(x), out)
    if pre.randomized:
        pre.reseed()
        first = pre(x)
        assert torch.equal(first, FACTORIES[name]()(x))
        assert not torch.equal(pre(x), first), "consecutive calls of a random defense must differ"


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_preprocessor_rejects_bad_images(name: str) -> None:
    with pytest.raises(RangeError, match="divide by 255"):
        FACTORIES[name]()(torch.full((1, 3, 5, 7), 200.0))


def test_attacks_validate_once_not_in_every_defended_forward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The attack checks its images at the entry point; the preprocessors' own range check (one
    # host synchronisation per forward on a GPU) is skipped inside the attack's step loop.
    from robustlens.defenses import base

    calls = []
    real = base.check_images
    monkeypatch.setattr(base, "check_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = rl.data.load("digits")[:8]
    defended = defend(rl.zoo.load("digits-cnn"), BitDepth(bits=4))
    defended(ds.x)
    assert len(calls) == 1  # a direct call validates
    res = rl.attacks.BPDA(rl.attacks.PGD(eps=0.1, steps=5))(defended, ds.x, ds.y)
    assert len(calls) == 1 and int(res.queries.max()) > 1


def test_blur_is_the_lectures_convolution(x: torch.Tensor) -> None:
    k = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k.expand(3, 1, 3, 3), groups=3)
    torch.testing.assert_close(Blur()(x), ref)
    with pytest.raises(ParameterError, match="'size' must be odd"):
        Blur(size=4)


def test_bitdepth_levels(x: torch.Tensor) -> None:
    out = BitDepth(bits=2)(x)
    levels = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])
    assert bool(torch.isclose(out[..., None], levels).any(-1).all())
    assert float((out - x).abs().max()) <= 1 / 6 + 1e-6
    with pytest.raises(ParameterError, match="'bits' must be an int in \\[1, 8\\]"):
        BitDepth(bits=0)


def test_jpeg_matches_pillow() -> None:
    img = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    out = JPEG(quality=40)(img)
    pixels = (img[0, 0] * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=40)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    assert torch.equal(out[0, 0], torch.tensor(ref).float() / 255)
    assert float((out - img).abs().mean()) > 0.01, "quality 40 must lose information"
    with pytest.raises(ShapeError, match="C=2"):
        JPEG()(torch.rand(1, 2, 8, 8))


def test_jpeg_high_quality_keeps_smooth_images() -> None:
    ramp = torch.linspace(0, 1, 16).expand(1, 3, 16, 16).contiguous()
    assert float((JPEG(quality=95)(ramp) - ramp).abs().max()) < 0.05


def test_crop_with_full_fraction_is_identity(x: torch.Tensor) -> None:
    out = CropRescale(fraction=1.0, crops=2)(x)
    torch.testing.assert_close(out, x.repeat_interleave(2, dim=0))


def test_tvm_reconstruction_properties() -> None:
    flat = torch.full((2, 1, 9, 9), 0.3)
    torch.testing.assert_close(TVM()(flat), flat, atol=1e-5, rtol=0)
    noisy = flat + 0.1 * torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    noisy = noisy.clamp(0, 1)
    mask = torch.ones_like(noisy)
    z = rl.defenses.tv_reconstruct(noisy, mask, weight=0.05, iterations=200)

    def tv(v: torch.Tensor) -> float:
        return float(v.diff(dim=-1).abs().sum() + v.diff(dim=-2).abs().sum())

    def energy(v: torch.Tensor) -> float:
        return 0.5 * float(((v - noisy) ** 2).sum()) + 0.05 * tv(v)

    assert tv(z) < 0.5 * tv(noisy)
    assert energy(z) < energy(noisy)  # the solver lowers the objective it minimises


def test_defend_averages_probabilities_over_views(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = rl.models.create("linear", in_channels=3, num_classes=4, image_size=5)
    model = nn.Sequential(nn.Upsample(size=(5, 5)), model)
    crops = CropRescale(fraction=0.6, crops=3, seed=2)
    out = defend(model, crops)(x)
    crops.reseed()
    views = crops(x)
    probs = torch.softmax(model(views), dim=1).view(4, 3, -1).mean(1)
    torch.testing.assert_close(out.exp(), probs)


def test_defend_errors() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(ParameterError, match="at least one preprocessor"):
        defend(model)
    with pytest.raises(ParameterError, match="must be nn.Module"):
        defend(model, lambda v: v)  # type: ignore[arg-type]


def test_probe_finds_a_users_module_flags(x: torch.Tensor) -> None:
    class Round(nn.Module):  # a user's non-differentiable layer with no declared flags
        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return torch.round(v * 4) / 4

    class Noise(nn.Module):
        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return (v + 0.01 * torch.randn_like(v)).clamp(0, 1)

    assert probe(Round(), x) == rl.defenses.Probe(False, False, "zero")
    found = probe(Noise(), x)
    assert found.differentiable and found.randomized


def test_tv_divergence_is_minus_the_adjoint_of_the_gradient() -> None:
    from robustlens.defenses.transforms import _div, _grad

    g = torch.Generator().manual_seed(0)
    z, px, py = (torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64) for _ in range(3))
    gx, gy = _grad(z)
    assert float((gx * px + gy * py).sum() + (z * _div(px, py)).sum()) == pytest.approx(
        0, abs=1e-10
    )


@pytest.mark.parametrize("kwargs", [{"unrolled": 0}, {"iterations": 0}, {"unrolled": 2.5}])
def test_tvm_rejects_bad_iteration_counts(kwargs: dict[str, object]) -> None:
    (name,) = kwargs
    with pytest.raises(ParameterError, match=f"'{name}' must be an int >= 1"):
        TVM(**kwargs)  # type: ignore[arg-type]


def test_tvm_repr_names_non_default_solver_settings() -> None:
    assert repr(TVM()) == "TVM(drop=0.5, weight=0.03, seed=0)"
    assert "unrolled=5" in repr(TVM(unrolled=5)) and "iterations=30" in repr(TVM(iterations=30))
