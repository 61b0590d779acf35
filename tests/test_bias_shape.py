"""Cue-conflict stimuli and the Geirhos shape-bias score."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import robustlens as rl
from robustlens.data.cue_conflict import SHAPES, TEXTURES
from robustlens.errors import (
    DTypeError,
    LabelError,
    ModelOutputError,
    ParameterError,
    UnknownNameError,
)


class Lookup(nn.Module):
    """An observer that recognises each stored image exactly and answers its stored label."""

    def __init__(self, x: Tensor, answers: Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("keys", x.flatten(1))
        self.register_buffer("answers", answers)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        nearest = torch.cdist(x.flatten(1), self.keys).argmin(1)
        return F.one_hot(self.answers[nearest], self.num_classes).float()


@pytest.fixture(scope="module")
def stim() -> rl.data.CueConflict:
    return rl.data.cue_conflict(120, size=32, seed=0)


# --------------------------------------------------------------------------- the score


def test_shape_observer_scores_one_texture_observer_zero(stim: rl.data.CueConflict) -> None:
    k = stim.num_classes
    shape_obs = Lookup(stim.x, stim.shape_label, k)
    res = rl.bias.shape_bias(shape_obs, stim)
    assert res.score == 1.0
    assert (res.shape_fraction, res.texture_fraction, res.other_fraction) == (1.0, 0.0, 0.0)
    assert res.n == len(stim)
    assert res.class_shape.equal(res.class_n)
    assert torch.all(res.class_score[res.class_n > 0] == 1.0)

    texture_obs = Lookup(stim.x, stim.texture_label, k)
    res = rl.bias.shape_bias(texture_obs, stim)
    assert res.score == 0.0
    assert (res.shape_fraction, res.texture_fraction, res.other_fraction) == (0.0, 1.0, 0.0)
    assert res.class_texture.equal(res.class_n)


def test_mixed_observer_matches_closed_form(stim: rl.data.CueConflict) -> None:
    k = stim.num_classes
    # Shape on even indices; on odd ones a third class (neither shape nor texture) every third
    # time, texture otherwise.
    idx = torch.arange(len(stim))
    third = (stim.shape_label + 1) % k
    third = torch.where(third == stim.texture_label, (third + 1) % k, third)
    answers = torch.where(idx % 2 == 0, stim.shape_label, stim.texture_label)
    answers = torch.where((idx % 2 == 1) & (idx % 3 == 0), third, answers)
    res = rl.bias.shape_bias(Lookup(stim.x, answers, k), stim)
    n_shape = int((idx % 2 == 0).sum())
    n_other = int(((idx % 2 == 1) & (idx % 3 == 0)).sum())
    n_texture = len(stim) - n_shape - n_other
    assert res.score == pytest.approx(n_shape / (n_shape + n_texture))
    assert res.shape_fraction == pytest.approx(n_shape / len(stim))
    assert res.texture_fraction == pytest.approx(n_texture / len(stim))
    assert res.other_fraction == pytest.approx(n_other / len(stim))
    assert int(res.class_n.sum()) == res.n == len(stim)


def test_pure_metric_leaves_out_aligned_stimuli() -> None:
    decisions = torch.tensor([0, 1, 1, 2, 0, 2])
    shape = torch.tensor([0, 1, 1, 2, 2, 0])
    texture = torch.tensor([0, 2, 0, 1, 0, 1])  # the first stimulus is aligned
    res = rl.bias.shape_bias_from_decisions(decisions, shape, texture, classes=["a", "b", "c"])
    # conflicting: (1|1,2) shape, (1|1,0) shape, (2|2,1) shape, (0|2,0) texture, (2|0,1) other
    assert res.n == 5
    assert res.score == pytest.approx(3 / 4)
    assert res.shape_fraction == pytest.approx(3 / 5)
    assert res.texture_fraction == pytest.approx(1 / 5)
    assert res.other_fraction == pytest.approx(1 / 5)
    assert res.class_n.tolist() == [1, 2, 2]
    assert res.class_shape.tolist() == [0, 2, 1]
    d = res.to_dict()
    assert d["per_class"]["a"] == {
        "n": 1,
        "score": None,
        "shape_fraction": 0.0,
        "texture_fraction": 0.0,
    }
    assert d["per_class"]["c"]["score"] == pytest.approx(0.5)
    assert d["score"] == pytest.approx(0.75)


def test_independent_stimuli_count_only_conflicts() -> None:
    stim = rl.data.cue_conflict(200, size=16, seed=4, num_classes=3, independent=True)
    aligned = int((~stim.conflicting).sum())
    assert 40 < aligned < 95  # about 1/3 of 200
    res = rl.bias.shape_bias(Lookup(stim.x, stim.shape_label, 3), stim)
    assert res.n == 200 - aligned and res.score == 1.0


# --------------------------------------------------------------------------- the stimuli


def test_stimuli_contract(stim: rl.data.CueConflict) -> None:
    assert stim.x.shape == (120, 1, 32, 32) and stim.x.dtype == torch.float32
    assert float(stim.x.min()) >= 0.0 and float(stim.x.max()) <= 1.0
    assert stim.shape_label.dtype == stim.texture_label.dtype == torch.int64
    assert stim.conflicting.equal(stim.shape_label != stim.texture_label)
    assert bool(stim.conflicting.all())
    assert stim.classes == [f"{s}/{t}" for s, t in zip(SHAPES, TEXTURES, strict=True)]
    # Every shape and texture class is drawn.
    assert torch.bincount(stim.shape_label, minlength=6).min() > 5
    assert torch.bincount(stim.texture_label, minlength=6).min() > 5
    sub = stim[stim.shape_label == 2]
    assert bool((sub.shape_label == 2).all()) and sub.x.equal(stim.x[stim.shape_label == 2])
    assert sub.shape_only().x.equal(stim.shape_only().x[stim.shape_label == 2])


def test_same_seed_same_stimuli_other_seed_others() -> None:
    a = rl.data.cue_conflict(20, size=24, seed=7, channels=3)
    b = rl.data.cue_conflict(20, size=24, seed=7, channels=3)
    c = rl.data.cue_conflict(20, size=24, seed=8, channels=3)
    assert a.x.shape == (20, 3, 24, 24)
    assert a.x.equal(b.x) and a.shape_label.equal(b.shape_label)
    assert a.texture_only().x.equal(b.texture_only().x)
    assert not a.x.equal(c.x)


def _background(x: Tensor) -> Tensor:
    return x[:, :, :1, :1]  # the corner pixel: shapes keep a margin from the border


def test_companions_change_one_cue_each(stim: rl.data.CueConflict) -> None:
    shape_only, texture_only, aligned = stim.shape_only(), stim.texture_only(), stim.aligned()
    assert shape_only.y.equal(stim.shape_label) and aligned.y.equal(stim.shape_label)
    assert texture_only.y.equal(stim.texture_label)

    # The silhouette (every pixel that is not background) is the same in all three rendered sets.
    silhouette = stim.x != _background(stim.x)
    assert silhouette.equal(shape_only.x != _background(shape_only.x))
    assert silhouette.equal(aligned.x != _background(aligned.x))
    assert bool(silhouette.flatten(1).any(1).all())

    # Shape-only: one flat grey inside the shape (no texture), away from the anti-aliased edge.
    inside = -F.max_pool2d(-silhouette.float(), 3, stride=1, padding=1) > 0.5
    assert bool(inside.flatten(1).any(1).all())
    grey = shape_only.x.masked_fill(~inside, float("nan")).flatten(1)
    spread = grey.nan_to_num(-1).amax(1) - grey.nan_to_num(2).amin(1)
    assert float(spread.max()) < 1e-6
    # ... while the textured stimuli vary inside the shape.
    tex = stim.x.masked_fill(~inside, float("nan")).flatten(1)
    assert float((tex.nan_to_num(-1).amax(1) - tex.nan_to_num(2).amin(1)).min()) > 0.2

    # Texture-only: no background anywhere (texture levels are >= 0.3, backgrounds <= 0.15).
    assert float(texture_only.x.min()) >= 0.3 - 1e-6
    assert float(stim.x.min()) <= 0.15 + 1e-6


def test_registered_sets_load_and_repeat() -> None:
    a = rl.data.load("shapes-aligned", split="test")
    assert len(a) == 2000 and a.shape == (1, 32, 32) and a.num_classes == 6
    assert a.x.equal(rl.data.load("shapes-aligned", split="test").x)
    conflict = rl.data.load("shapes-cue-conflict", split="test")
    shape_only = rl.data.load("shapes-shape-only", split="test")
    # Same geometry and labels: the test splits of all four sets come from one draw.
    assert conflict.y.equal(a.y) and shape_only.y.equal(a.y)
    assert rl.data.available("shapes-texture-only")


# --------------------------------------------------------------------------- a trained model


def test_shapes_cnn_bias_is_a_valid_score() -> None:
    model = rl.zoo.load("shapes-cnn").train()
    stim = rl.data.cue_conflict(600, seed=11)
    res = rl.bias.shape_bias(model, stim)
    assert model.training  # mode restored
    assert 0.0 <= res.score <= 1.0
    assert res.shape_fraction + res.texture_fraction + res.other_fraction == pytest.approx(1.0)
    assert res.score == pytest.approx(
        res.shape_fraction / (res.shape_fraction + res.texture_fraction)
    )
    d = res.to_dict()
    assert set(d["per_class"]) == set(stim.classes)
    assert sum(v["n"] for v in d["per_class"].values()) == res.n == 600


# --------------------------------------------------------------------------- errors


def test_bad_arguments_say_what_must_hold(stim: rl.data.CueConflict) -> None:
    with pytest.raises(ParameterError, match="'n' must be an int >= 1, got 0"):
        rl.data.cue_conflict(0)
    with pytest.raises(ParameterError, match="'size' must be an int >= 16, got 8"):
        rl.data.cue_conflict(4, size=8)
    with pytest.raises(ParameterError, match="'channels' must be 1 or 3"):
        rl.data.cue_conflict(4, channels=2)
    with pytest.raises(ParameterError, match=r"'num_classes' must be an int in \[2, 6\]"):
        rl.data.cue_conflict(4, num_classes=7)
    with pytest.raises(ParameterError, match="did you mean 'shape-only'"):
        rl.data.shapes_dataset("shape_only", 4)  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="did you mean 'shapes-aligned'"):
        rl.data.load("shapes-alinged")
    with pytest.raises(ParameterError, match="'split' must be 'train' or 'test'"):
        rl.data.load("shapes-aligned", split="val")

    with pytest.raises(ModelOutputError, match="the model has 10 classes but the stimuli have 6"):
        rl.bias.shape_bias(
            rl.models.create("linear", in_channels=1, num_classes=10, image_size=32), stim
        )
    with pytest.raises(DTypeError, match="'stimuli' must be a CueConflict"):
        rl.bias.shape_bias(Lookup(stim.x, stim.shape_label, 6), stim.dataset())  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="at least one conflicting stimulus"):
        rl.bias.shape_bias_from_decisions(
            torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 1])
        )
    with pytest.raises(LabelError, match=r"'texture_label' must have shape \(2,\)"):
        rl.bias.shape_bias_from_decisions(
            torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1])
        )
    with pytest.raises(DTypeError, match="'decisions' must be an int64 tensor"):
        rl.bias.shape_bias_from_decisions(torch.rand(2), torch.tensor([0, 1]), torch.tensor([1, 0]))
