"""LIME superpixel explanations: closed-form references, path, determinism, diagnostics, errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

import robustlens as rl
from robustlens.errors import (
    DTypeError,
    LabelError,
    ParameterError,
    ShapeError,
    UnknownNameError,
)
from robustlens.explain import Explanation, Grid, Lime

# The diagnostics are also issued as RuntimeWarnings; tests that expect one catch it explicitly.
pytestmark = pytest.mark.filterwarnings("ignore:Lime:RuntimeWarning")

C, H, W = 3, 8, 12  # all different, so a broadcast along the wrong axis fails
CELL = 4  # Grid(cell=4): 2 x 3 = 6 superpixels


class Additive(nn.Module):
    """Logit 0 = sum_s c_s * mean(x over superpixel s); logit 1 = 0."""

    def __init__(self, segments: Tensor, coefs: Tensor, channels: int) -> None:
        super().__init__()
        s = int(segments.max()) + 1
        onehot = torch.nn.functional.one_hot(segments.flatten(), s).double()  # (HW, S)
        per_pixel = onehot @ coefs.double() / onehot.sum(0)[segments.flatten()]
        weight = (per_pixel / channels).repeat(channels).float()
        self.linear = nn.Linear(weight.numel(), 2)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
            self.linear.weight[0] = weight

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


class LooksAt(nn.Module):
    """Logit 0 = 8 * max of x over rows r0:r1, cols c0:c1 (all channels); logit 1 = 4."""

    def __init__(self, r0: int, r1: int, c0: int, c1: int) -> None:
        super().__init__()
        self.box = (r0, r1, c0, c1)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        r0, r1, c0, c1 = self.box
        a = 8 * x[:, :, r0:r1, c0:c1].amax((1, 2, 3)) + self.dummy
        return torch.stack([a, torch.full_like(a, 4.0)], dim=1)


@pytest.fixture
def image() -> Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.2 + 0.6 * torch.rand(C, H, W, generator=g)


@pytest.fixture
def segments(image: Tensor) -> Tensor:
    return Grid(cell=CELL)(image)


COEFS = torch.tensor([2.0, -1.0, 0.0, 3.0, 0.5, -2.5])


def _wls(Z: Tensor, f: Tensor, w: Tensor) -> tuple[np.ndarray, float]:
    """Independent weighted least squares with intercept (numpy lstsq)."""
    A = np.hstack([np.ones((len(Z), 1)), Z.double().numpy()])
    r = np.sqrt(w.double().numpy())
    sol, *_ = np.linalg.lstsq(A * r[:, None], f.double().numpy() * r, rcond=None)
    return sol[1:], float(sol[0])


# --------------------------------------------------------------------------- closed form


def test_additive_model_coefficients_recovered(image: Tensor, segments: Tensor) -> None:
    model = Additive(segments, COEFS, C)
    lime = Lime(samples=300, K=6, segmenter=Grid(cell=CELL), hide="constant", output="logits")
    with pytest.warns(RuntimeWarning, match="holds only 5 superpixels"):  # c_2 = 0 never enters
        exp = lime(model, image, target=0)
    assert isinstance(exp, Explanation)
    means = torch.stack([image[:, segments == s].mean() for s in range(6)]).double()
    # hide="constant" 0: f(z) = sum_s c_s m_s z'_s exactly, so g recovers c_s m_s and b = 0.
    torch.testing.assert_close(exp.weights, COEFS.double() * means, atol=1e-5, rtol=1e-5)
    assert abs(exp.intercept) < 1e-5
    assert exp.r2 > 1 - 1e-9
    assert exp.local_pred == pytest.approx(exp.model_output, abs=1e-5)
    assert exp.path.max_size == 5 and 2 not in exp.path.order.tolist()
    assert len(exp.warnings) == 1


def test_additive_model_sparse_selection(image: Tensor, segments: Tensor) -> None:
    coefs = torch.tensor([0.0, 3.0, 0.0, 0.0, -2.0, 1.0])
    model = Additive(segments, coefs, C)
    exp = Lime(samples=300, K=3, segmenter=Grid(cell=CELL), hide="constant", output="logits")(
        model, image, target=0
    )
    assert sorted(exp.selected.tolist()) == [1, 4, 5]
    assert exp.top_ids().tolist() == [1, 5]  # positive weights only, largest first
    assert exp.path.order[:3].tolist() == [1, 4, 5]
    assert exp.r2 > 1 - 1e-9


def test_top_superpixel_of_a_model_that_looks_at_one_region(image: Tensor) -> None:
    model = LooksAt(5, 7, 9, 11)  # inside grid cell (row 1, col 2) = id 5
    exp = Lime(samples=400, K=3, segmenter=Grid(cell=CELL), seed=0)(model, image)
    assert exp.target == 0
    assert exp.top_ids(1).tolist() == [5]
    assert bool(exp.top(1)[5:7, 9:11].all()) and int(exp.top(1).sum()) == CELL * CELL
    assert exp.path.order[0].item() == 5


def test_path_end_equals_unconstrained_weighted_least_squares(image: Tensor) -> None:
    model = LooksAt(1, 6, 2, 10)  # nonlinear in z': the WLS fit is not exact
    lime = Lime(samples=250, K=6, segmenter=Grid(cell=CELL), seed=3)
    sam = lime.sample(model, image)
    exp = lime.explain(model, image, 0)
    f = sam.outputs[:, 0]
    coef, intercept = _wls(sam.Z, f, sam.weights)
    np.testing.assert_allclose(exp.path.coefs[-1].numpy(), coef, atol=1e-8)
    assert exp.path.alphas[-1].item() == pytest.approx(0.0, abs=1e-12)
    # K = S: the surrogate is that same fit.
    np.testing.assert_allclose(exp.weights.numpy(), coef, atol=1e-8)
    assert exp.intercept == pytest.approx(intercept, abs=1e-8)
    # ess and r2 by their formulas, on the same samples.
    w = sam.weights
    assert exp.ess == pytest.approx(float(w.sum() ** 2 / (w**2).sum()))
    pred = intercept + sam.Z.double().numpy() @ coef
    fm = float((w * f).sum() / w.sum())
    r2 = 1 - float((w.numpy() * (f.numpy() - pred) ** 2).sum()) / float((w * (f - fm) ** 2).sum())
    assert exp.r2 == pytest.approx(r2, rel=1e-9)


def test_selection_matches_the_path_support(image: Tensor) -> None:
    model = LooksAt(1, 6, 2, 10)
    lime = Lime(samples=250, K=2, segmenter=Grid(cell=CELL), seed=3, path_method="lar")
    exp = lime.explain(model, image, 0)
    sam = lime.sample(model, image)
    first_two = exp.path.order[:2]
    assert sorted(exp.selected.tolist()) == sorted(first_two.tolist())
    coef, _ = _wls(sam.Z[:, first_two.sort().values], sam.outputs[:, 0], sam.weights)
    np.testing.assert_allclose(exp.weights[first_two.sort().values].numpy(), coef, atol=1e-8)
    assert (exp.path.sizes == torch.arange(len(exp.path.sizes))).all()  # LAR adds one per step


# --------------------------------------------------------------------------- kernel, sampling


def test_samples_images_and_kernel_by_definition(image: Tensor, segments: Tensor) -> None:
    model = LooksAt(0, 4, 0, 4)
    lime = Lime(samples=20, segmenter=Grid(cell=CELL), hide="blur", sigma=0.7, seed=1)
    sam = lime.sample(model, image)
    assert sam.Z.shape == (20, 6) and sam.Z.dtype == torch.bool and bool(sam.Z[0].all())
    hidden = rl.explain.gaussian_blur(image, 0.5 * (H * W / 50) ** 0.5)
    torch.testing.assert_close(sam.hidden, hidden)
    z = torch.where(sam.Z[:, segments][:, None], image, hidden)  # (20, C, H, W) by definition
    d2 = ((z - image) ** 2).sum((1, 2, 3)).double() / ((image - hidden) ** 2).sum().double()
    torch.testing.assert_close(sam.weights, torch.exp(-d2 / 0.7**2), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        expected = torch.softmax(model(z), 1).double()
    torch.testing.assert_close(sam.outputs, expected, rtol=1e-5, atol=1e-6)


def test_binary_kernel_is_limes() -> None:
    from sklearn.metrics import pairwise_distances

    Z = (torch.rand(50, 9, generator=torch.Generator().manual_seed(0)) < 0.5).long()
    Z[0] = 1
    D = pairwise_distances(Z.numpy(), Z[:1].numpy(), metric="cosine").ravel()
    expected = np.sqrt(np.exp(-(D**2) / 0.25**2))  # lime_image's kernel, kernel_width 0.25
    got = rl.explain.kernel_weights(Z, torch.ones(9), kernel="binary")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_hidden_images() -> None:
    img = torch.rand(2, 5, 7)
    seg = Grid(cell=3)(img)
    mean = rl.explain.hidden_image(img, seg, "mean")
    for s in range(int(seg.max()) + 1):
        torch.testing.assert_close(
            mean[:, seg == s],
            img[:, seg == s].mean(1, keepdim=True).expand(-1, int((seg == s).sum())),
        )
    assert (rl.explain.hidden_image(img, seg, "constant", fill=0.3) == 0.3).all()
    flat = torch.full((2, 5, 7), 0.4)
    torch.testing.assert_close(rl.explain.gaussian_blur(flat, 2.0), flat)


# --------------------------------------------------------------------------- contract


def test_seeded_determinism_and_seed_dependence(image: Tensor) -> None:
    model = LooksAt(1, 6, 2, 10)
    a = Lime(samples=150, segmenter="slic", seed=7)(model, image)
    b = Lime(samples=150, segmenter="slic", seed=7)(model, image)
    c = Lime(samples=150, segmenter="slic", seed=8)(model, image)
    assert isinstance(a, Explanation) and isinstance(b, Explanation) and isinstance(c, Explanation)
    assert torch.equal(a.segments, b.segments) and torch.equal(a.weights, b.weights)
    assert torch.equal(a.path.coefs, b.path.coefs)
    assert not torch.equal(a.path.coefs[-1], c.path.coefs[-1])


def test_batch_equals_images_one_by_one_and_restores_mode() -> None:
    torch.manual_seed(0)
    model = rl.models.create("convnet", in_channels=3, num_classes=4, image_size=12).train()
    x = torch.rand(3, 3, 12, 12)
    x_before = x.clone()
    lime = Lime(samples=64, K=3, segmenter="grid", batch_size=50, output="logits")
    batch = lime(model, x)
    assert isinstance(batch, list) and len(batch) == 3
    for i in range(3):
        single = lime.explain(model, x[i])
        assert single.target == batch[i].target
        torch.testing.assert_close(batch[i].weights, single.weights, atol=1e-4, rtol=1e-4)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(x, x_before)
    labels = lime(model, x, torch.tensor([0, 1, 2]))
    assert [e.target for e in labels] == [0, 1, 2]


def test_channels_last_gives_the_same_samples() -> None:
    torch.manual_seed(0)
    model = rl.models.create("convnet", in_channels=1, num_classes=3, image_size=12)
    img = torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(1))
    plain = Lime(samples=60, segmenter="grid", batch_size=25, output="logits").sample(model, img)
    fast = Lime(samples=60, segmenter="grid", batch_size=25, output="logits", channels_last=True)
    torch.testing.assert_close(fast.sample(model, img).outputs, plain.outputs, atol=1e-5, rtol=1e-5)
    z = rl.explain.lime.channels_last(torch.rand(2, 3, 4, 5))
    assert z.is_contiguous(memory_format=torch.channels_last) and z.shape == (2, 3, 4, 5)


def test_several_classes_from_one_sample_set(image: Tensor) -> None:
    torch.manual_seed(0)
    model = rl.models.create("mlp", in_channels=C, num_classes=5, image_size=8, hidden=[16])
    img = image[:, :, :8]
    lime = Lime(samples=100, K=2, segmenter="grid", output="logits", seed=2)
    exps = lime(model, img, [1, 3])
    assert isinstance(exps, list) and [e.target for e in exps] == [1, 3]
    for e in exps:
        alone = lime.explain(model, img, e.target)
        torch.testing.assert_close(e.weights, alone.weights)
    # One sample set: with K = S the fit is linear in the outputs, so the difference of the two
    # classes' weights is the fit of the difference of their logits on those same samples.
    full = Lime(samples=100, K=16, segmenter="grid", output="logits", seed=2)
    e1, e3 = full(model, img, [1, 3])
    sam = full.sample(model, img)
    coef, _ = _wls(sam.Z, sam.outputs[:, 1] - sam.outputs[:, 3], sam.weights)
    np.testing.assert_allclose((e1.weights - e3.weights).numpy(), coef, atol=1e-6)


def test_explanation_to_dict_round_trip_and_plots(image: Tensor) -> None:
    model = LooksAt(5, 7, 9, 11)
    exp = Lime(samples=100, K=3, segmenter=Grid(cell=CELL), class_names=["ball", "rest"])(
        model, image
    )
    assert isinstance(exp, Explanation)
    d = json.loads(json.dumps(exp.to_dict()))
    assert d["label"] == "ball" and d["class_names"] == ["ball", "rest"]
    back = Explanation.from_dict(d)
    torch.testing.assert_close(back.image, image, atol=5e-5, rtol=0)
    assert torch.equal(back.segments, exp.segments)
    torch.testing.assert_close(back.weights, exp.weights.cpu())
    torch.testing.assert_close(back.path.coefs, exp.path.coefs.cpu())
    assert torch.equal(back.top(2), exp.top(2))
    assert (back.r2, back.ess, back.target) == (exp.r2, exp.ess, exp.target)
    fig = rl.explain.plot_explanation(back, k=2)
    assert isinstance(fig, Figure)
    assert fig.axes[0].get_title() == "ball: top 1 superpixels"  # one positive weight
    path_fig = rl.explain.plot_path(back)
    lines = path_fig.axes[0].get_lines()
    assert len(lines) >= len(back.path.order)
    # pixels="tensors": image and segments stay tensors (the audit stores them as files), the
    # rest is the same; from_dict takes that form too.
    t = exp.to_dict(pixels="tensors")
    assert torch.equal(t["image"], exp.image.cpu()) and torch.equal(t["segments"], exp.segments)
    assert {k: v for k, v in t.items() if k not in ("image", "segments")} == {
        k: v for k, v in exp.to_dict().items() if k not in ("image", "segments")
    }
    assert torch.equal(Explanation.from_dict(t).top(2), exp.top(2))
    with pytest.raises(ParameterError, match="'pixels' must be 'lists' or 'tensors', got 'png'"):
        exp.to_dict(pixels="png")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- warnings


def test_warning_when_the_path_is_shorter_than_k(image: Tensor, segments: Tensor) -> None:
    model = Additive(segments, torch.tensor([0.0, 3.0, 0.0, 0.0, -2.0, 0.0]), C)
    lime = Lime(samples=200, K=4, segmenter=Grid(cell=CELL), hide="constant", output="logits")
    with pytest.warns(RuntimeWarning, match="fewer than K=4"):
        exp = lime.explain(model, image, 0)
    assert exp.path.max_size == 2 and any("fewer than K=4" in w for w in exp.warnings)


def test_warning_when_ess_is_tiny(image: Tensor) -> None:
    lime = Lime(samples=200, segmenter=Grid(cell=CELL), sigma=0.05, output="logits")
    with pytest.warns(RuntimeWarning, match="effective sample size"):
        exp = lime.explain(LooksAt(1, 6, 2, 10), image)
    assert exp.ess < 10


def test_warning_when_the_output_barely_varies(image: Tensor) -> None:
    class Saturated(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            a = 20 + 4 * x.amax((1, 2, 3))
            return torch.stack([a, -a], 1)

    with pytest.warns(RuntimeWarning, match="output='logits'"):
        exp = Lime(samples=100, segmenter=Grid(cell=CELL)).explain(Saturated(), image)
    assert any("barely varies" in w for w in exp.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logit = Lime(samples=100, segmenter=Grid(cell=CELL), output="logits")
        assert not any("barely" in w for w in logit.explain(Saturated(), image).warnings)


class Xor(nn.Module):
    """Logit 0 = 8 |mean of the top-left 4x4 cell - mean of the next cell|: exclusive or of the
    two cells' presence, which no additive surrogate fits."""

    def forward(self, x: Tensor) -> Tensor:
        a = x[:, :, :4, :4].mean((1, 2, 3))
        b = x[:, :, :4, 4:8].mean((1, 2, 3))
        f = 8 * (a - b).abs()
        return torch.stack([f, torch.zeros_like(f)], 1)


class Exponential(nn.Module):
    """Logit 0 = 2 ** (number of the 6 grid cells present, for an image at 0.5): additive in the
    count on average over the samples, far steeper at the full image."""

    def forward(self, x: Tensor) -> Tensor:
        f = 2 ** (x.mean((1, 2, 3)) / 0.5 * 6)
        return torch.stack([f, torch.zeros_like(f)], 1)


def test_flags_low_fit_and_a_surrogate_far_from_the_model() -> None:
    image = torch.full((C, H, W), 0.5)
    lime = Lime(samples=300, K=6, segmenter=Grid(cell=CELL), hide="constant", output="logits")
    with pytest.warns(RuntimeWarning, match="weighted R2"):
        xor = lime.explain(Xor(), image, 0)
    assert xor.r2 < rl.explain.MIN_R2 == 0.5
    assert xor.warnings[0].startswith(f"weighted R2 {xor.r2:.2f} is below 0.5")
    with pytest.warns(RuntimeWarning, match="far from the model at the image"):
        steep = lime.explain(Exponential(), image, 0)
    # A good fit over the samples (R2 about 0.8) that misses the image itself: the model gives
    # 2 ** 6 = 64 there, the surrogate about 44, 1.4 standard deviations of the output away.
    assert steep.r2 > 0.5 and steep.model_output == pytest.approx(64.0)
    assert steep.relative_gap > rl.explain.MAX_GAP == 1.0
    assert steep.gap == pytest.approx(abs(steep.local_pred - 64.0))
    assert steep.relative_gap == pytest.approx(steep.gap / steep.output_std)
    assert [w.split(":")[0] for w in steep.warnings] == [
        "the surrogate is far from the model at the image"
    ]
    assert f"gap {steep.gap:.4f} = {steep.relative_gap:.2f} standard deviations" in steep.format()
    # An additive model is fitted exactly: no flag.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        five = Lime(samples=300, K=5, segmenter=Grid(cell=CELL), hide="constant", output="logits")
        exact = five.explain(Additive(Grid(cell=CELL)(image), COEFS, C), image, 0)  # 5 non-zero
    assert exact.warnings == () and exact.relative_gap < 1e-6
    # Round trip keeps the diagnostics.
    back = Explanation.from_dict(json.loads(json.dumps(steep.to_dict())))
    assert back.output_std == pytest.approx(steep.output_std) and back.prediction == 0


def test_explained_class_is_named_with_its_role(image: Tensor) -> None:
    model = LooksAt(0, 4, 0, 4)  # logit 0 = 8 max over the box > 4: predicts class 0
    lime = Lime(samples=50, K=2, segmenter=Grid(cell=CELL), class_names=["cat", "dog"])
    pred = lime.explain(model, image)
    assert pred.prediction == 0 == pred.target
    assert pred.explained_as(0) == "cat (index 0): the model's prediction, the label"
    other = lime.explain(model, image, 1)
    assert other.prediction == 0 and other.target == 1
    assert other.explained_as(0) == (
        "dog (index 1): not the model's prediction (cat), not the label (cat)"
    )
    assert other.explained_as() == "dog (index 1): not the model's prediction (cat)"
    assert "(index 1, not the model's prediction (cat))" in other.format()


# --------------------------------------------------------------------------- errors


def test_bad_input_gives_clear_errors(image: Tensor) -> None:
    model = LooksAt(0, 4, 0, 4)
    lime = Lime(samples=20, segmenter=Grid(cell=CELL))
    with pytest.raises(ShapeError, match=r"shape \(C, H, W\), got \(8, 12\); a greyscale"):
        lime(model, image[0])
    with pytest.raises(ShapeError, match=r"must have shape \(C, H, W\), got \(1, 1, 3, 8, 12\)"):
        lime(model, image[None, None])
    with pytest.raises(ParameterError, match="the segmentation has 1 region"):
        lime(model, image, segments=torch.zeros(H, W, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"height and width \(8, 12\)"):
        lime(model, image, segments=torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(DTypeError, match="integer superpixel ids"):
        lime(model, image, segments=torch.zeros(H, W))
    with pytest.raises(LabelError, match="outside the model's 2 classes"):
        lime(model, image, target=2)
    with pytest.raises(ParameterError, match="leaves image 0 unchanged"):
        lime(model, torch.full((C, H, W), 0.5))
    with pytest.raises(ParameterError, match="the segmentation has 1 region"):
        Lime(segmenter=lambda im: torch.zeros(H, W, dtype=torch.long))(model, image)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"samples": 1}, "'samples' must be an int >= 2, got 1"),
        ({"K": 0}, "'K' must be an int >= 1, got 0"),
        ({"sigma": -1.0}, "'sigma' must be a float > 0 or None"),
        ({"hide": "zero"}, "'hide' must be one of 'mean', 'constant', 'blur'"),
        ({"output": "prob"}, "'output' must be one of"),
        ({"fill": 2.0}, r"'fill' must be a float in \[0, 1\]"),
        ({"segmenter": 3}, "'segmenter' must be a name"),
    ],
)
def test_parameters_validated(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        Lime(**kwargs)  # type: ignore[arg-type]


def test_unknown_segmenter_suggests() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'slic'"):
        Lime(segmenter="slick")


# --------------------------------------------------------------------------- segmenters


@pytest.mark.parametrize("name", ["slic", "quickshift", "felzenszwalb", "grid"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 40, 36)])
def test_segmenters_label_contiguously(name: str, shape: tuple[int, int, int], fmnist_test) -> None:  # type: ignore[no-untyped-def]
    if shape[0] == 1:
        img = fmnist_test.x[0]
    else:  # a photograph (scikit-image's cat), downsampled
        from skimage.data import chelsea

        cat = torch.from_numpy(chelsea()).permute(2, 0, 1).float()[None] / 255
        img = torch.nn.functional.interpolate(cat, size=shape[1:], mode="area")[0]
    seg = rl.explain.segment(img, name)
    assert seg.dtype == torch.int64 and seg.shape == img.shape[1:]
    s = int(seg.max()) + 1
    assert torch.equal(seg.unique(), torch.arange(s))
    assert 15 <= s <= 80


def test_grid_default_and_relabel() -> None:
    assert Grid().resolved(torch.zeros(1, 28, 28)) == 4
    assert Grid().resolved(torch.zeros(3, 224, 224)) == 32
    seg = Grid()(torch.zeros(1, 28, 28))
    assert int(seg.max()) + 1 == 49
    assert rl.explain.check_segments(torch.tensor([[7, 7], [3, 9]]), (2, 2)).tolist() == [
        [1, 1],
        [0, 2],
    ]
    with pytest.raises(ParameterError, match="'cell' must be an int > 0"):
        Grid(cell=0)


# --------------------------------------------------------------------------- diagnostics


def test_deletion_and_insertion_curves(image: Tensor) -> None:
    model = LooksAt(5, 7, 9, 11)
    exp = Lime(samples=200, K=3, segmenter=Grid(cell=CELL), hide="constant")(model, image)
    assert isinstance(exp, Explanation)
    curves = rl.explain.faithfulness(model, exp)
    with torch.no_grad():
        p_x = torch.softmax(model(image[None]), 1)[0, 0].item()
        p_h = torch.softmax(model(torch.zeros(1, C, H, W)), 1)[0, 0].item()
    s = exp.num_segments
    assert curves.deletion.shape == (s + 1,) and curves.insertion.shape == (s + 1,)
    assert curves.deletion[0].item() == pytest.approx(p_x, abs=1e-6)
    assert curves.deletion[-1].item() == pytest.approx(p_h, abs=1e-6)
    assert curves.insertion[0].item() == pytest.approx(p_h, abs=1e-6)
    assert curves.insertion[-1].item() == pytest.approx(p_x, abs=1e-6)
    # Removing the region the model looks at first drops the probability at once.
    assert (curves.deletion[1:] == curves.deletion[-1]).all()
    reverse = rl.explain.perturbation_curves(
        model, exp.image, exp.segments, -exp.weights, 0, exp.hidden
    )
    assert curves.deletion_auc < reverse.deletion_auc
    assert curves.insertion_auc > reverse.insertion_auc
    assert curves.deletion_auc == pytest.approx(
        float(np.trapezoid(curves.deletion.numpy(), np.linspace(0, 1, s + 1)))
    )
    # The random orders: each starts at the image and ends at the hidden image; the region the
    # model looks at is hidden at a random step, so their mean area lies far above LIME's.
    rand = curves.random_deletion
    assert rand is not None and rand.shape == (rl.explain.RANDOM_ORDERS, s + 1)
    torch.testing.assert_close(rand[:, 0], torch.full((10,), p_x), atol=1e-6, rtol=0)
    torch.testing.assert_close(rand[:, -1], torch.full((10,), p_h), atol=1e-6, rtol=0)
    assert curves.deletion_auc < (1 - rl.explain.DELETION_MARGIN) * curves.random_deletion_auc
    assert curves.warnings == []
    # The reverse order hides the region last: no better than random, flagged.
    assert reverse.deletion_auc > curves.random_deletion_auc
    assert (
        len(reverse.warnings) == 1
        and "no better than hiding the superpixels in random" in (reverse.warnings[0])
    )
    # Seeded: the same seed gives the same random orders, another seed others.
    again = rl.explain.faithfulness(model, exp)
    assert torch.equal(again.random_deletion, rand)
    other = rl.explain.faithfulness(model, exp, seed=1, random_orders=3)
    assert other.random_orders == 3 and not torch.equal(other.random_deletion, rand[:3])
    none = rl.explain.faithfulness(model, exp, random_orders=0)
    assert none.random_deletion is None and none.warnings == []
    assert none.to_dict()["random_deletion_auc"] is None
    with pytest.raises(ParameterError, match="'random_orders' must be an int >= 0"):
        rl.explain.faithfulness(model, exp, random_orders=-1)


def test_stability_across_seeds(image: Tensor, segments: Tensor) -> None:
    model = Additive(segments, COEFS, C)
    lime = Lime(samples=100, K=2, segmenter=Grid(cell=CELL), hide="constant", output="logits")
    stab = rl.explain.stability(lime, model, image, seeds=(0, 1, 2), target=0)
    assert stab.jaccard.shape == (3, 3) and stab.mean == 1.0 and stab.min == 1.0
    noisy = rl.explain.stability(
        Lime(samples=12, K=3, segmenter="grid"), LooksAt(1, 6, 2, 10), image, seeds=(0, 1, 2, 3)
    )
    assert 0.0 <= noisy.min <= noisy.mean <= 1.0
    assert torch.equal(noisy.jaccard, noisy.jaccard.T)
    with pytest.raises(ParameterError, match="at least two distinct"):
        rl.explain.stability(lime, model, image, seeds=(1, 1))


def test_fashion_mnist_zoo_model(fmnist_test) -> None:  # type: ignore[no-untyped-def]
    model = rl.zoo.load("fmnist-cnn")
    exp = Lime(samples=300, K=5, output="logits", seed=0, class_names=fmnist_test.classes)(
        model, fmnist_test.x[0]
    )
    assert isinstance(exp, Explanation)
    assert exp.label == fmnist_test.classes[int(fmnist_test.y[0])]
    assert 20 <= exp.num_segments <= 60
    assert exp.r2 > 0.5 and exp.ess > 0.3 * 300
    assert len(exp.top_ids()) >= 3
    assert exp.local_pred == pytest.approx(exp.model_output, rel=0.2)


def test_all_negative_weights_still_show_their_top_superpixels_by_magnitude() -> None:
    """A class every superpixel lowers: the explanation, its text, its figure, the report's table
    and the class statistics all show the K superpixels of largest |weight| (it showed none)."""
    import robustlens as rl
    from robustlens.bias.superpixels import _top_flags
    from robustlens.explain import plot_explanation
    from robustlens.explain.lime import Explanation
    from robustlens.report.sections.explanations import top_superpixels

    torch.manual_seed(0)
    model = rl.models.create("linear", in_channels=1, num_classes=3, image_size=8)
    with torch.no_grad():
        model[1].weight.fill_(-1.0)  # every pixel lowers every logit
        model[1].bias.zero_()
    lime = rl.explain.Lime(
        samples=60, K=3, segmenter="grid", output="logits", hide="constant", seed=0
    )
    exp = lime(model, torch.rand(1, 8, 8), 0)  # hiding (zeroing) a superpixel raises the logit
    assert isinstance(exp, Explanation) and bool((exp.weights <= 0).all()) and exp.by_magnitude
    assert int((exp.weights < 0).sum()) == 3
    expected = torch.argsort(exp.weights.abs(), descending=True, stable=True)[:3]
    assert exp.top_ids().tolist() == expected.tolist() and int(exp.top().sum()) > 0
    text = exp.format()
    assert "no superpixel has a positive weight" in text and "largest |weight|" in text
    listed = [ln for ln in text.splitlines() if ln.startswith("  ") and ln.strip()[0].isdigit()]
    assert [int(ln.split(":")[0]) for ln in listed] == expected.tolist()
    assert [i for i, _ in top_superpixels(exp.weights.tolist(), 3)] == expected.tolist()
    other = torch.tensor([0.2, -0.9, 0.1], dtype=torch.float64)
    flags = _top_flags([exp.weights, other], torch.tensor([exp.num_segments, 3]), 3)
    assert flags[: exp.num_segments].nonzero().flatten().tolist() == sorted(expected.tolist())
    assert flags[exp.num_segments :].tolist() == [True, False, True]  # positives only there
    title = plot_explanation(exp).axes[0].get_title()
    assert "largest |weight|" in title
