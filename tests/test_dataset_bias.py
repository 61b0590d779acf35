"""Dataset bias: harmonising data sets, name that dataset, the cross-dataset matrix, class vs
dataset balance, and the printed-digits source."""

from __future__ import annotations

import json
import math

import pytest
import torch

import robustlens as rl
from robustlens.bias.dataset import (
    balance,
    cross_dataset_matrix,
    harmonize,
    name_that_dataset,
)
from robustlens.data import ImageDataset
from robustlens.errors import DTypeError, LabelError, ParameterError


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return rl.data.load("digits", split="all")


@pytest.fixture(scope="module")
def printed() -> ImageDataset:
    return rl.data.load("printed-digits", split="test")


# --------------------------------------------------------------------------- printed digits


def test_printed_digits_is_a_registered_balanced_source(printed: ImageDataset) -> None:
    assert "printed-digits" in rl.data.names() and rl.data.available("printed-digits")
    assert printed.x.shape == (1000, 1, 28, 28) and printed.classes == [str(i) for i in range(10)]
    assert printed.class_counts().tolist() == [100] * 10
    assert float(printed.x.min()) == 0.0 and float(printed.x.max()) > 0.9
    # Ink in the middle, background at the borders (white digit on black, as MNIST).
    assert float(printed.x[:, :, 10:18, 10:18].mean()) > 5 * float(printed.x[:, :, :2].mean())
    assert torch.equal(rl.data.load("printed-digits", split="test").x, printed.x)
    train = rl.data.load("printed-digits", split="train")
    assert len(train) == 3000 and not torch.equal(train.x[:1000], printed.x)


def test_printed_digits_options_and_errors() -> None:
    from robustlens.data.printed import DEFAULT_FONT, load_printed_digits

    ds = load_printed_digits("test", n=30, size=12, seed=7, fonts=[DEFAULT_FONT])
    assert ds.x.shape == (30, 1, 12, 12) and ds.class_counts().tolist() == [3] * 10
    with pytest.raises(ParameterError, match="'split' must be 'train' or 'test'"):
        load_printed_digits("val")
    with pytest.raises(ParameterError, match="'n' must be an int >= 1"):
        load_printed_digits("test", n=0)
    with pytest.raises(ParameterError, match="'size' must be an int >= 8"):
        load_printed_digits("test", size=4)


# --------------------------------------------------------------------------- harmonize


def test_harmonize_sizes_and_channels(digits: ImageDataset) -> None:
    rgb = ImageDataset(
        torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1).expand(2, 3, 16, 16).contiguous(),
        torch.tensor([0, 1]),
        name="rgb",
    )
    grey, small = harmonize([rgb, digits])
    assert grey.shape == (1, 8, 8) and small.shape == (1, 8, 8)
    # BT.601 luma of (1, 0.5, 0): 0.299 + 0.5 * 0.587; a constant image stays constant.
    torch.testing.assert_close(grey.x, torch.full((2, 1, 8, 8), 0.299 + 0.5 * 0.587))
    assert torch.equal(small.x, digits.x) and torch.equal(small.y, digits.y)
    colour = harmonize([digits], size=16, channels=3)[0]
    assert colour.shape == (3, 16, 16) and torch.equal(colour.x[:, 0], colour.x[:, 2])
    with pytest.raises(ParameterError, match="'channels' must be 1 or 3"):
        harmonize([digits], channels=2)
    with pytest.raises(ParameterError, match="'size' must be an int >= 4"):
        harmonize([digits], size=2)


# --------------------------------------------------------------------------- name that dataset


def test_name_that_dataset_tells_real_sources_apart(
    digits: ImageDataset, printed: ImageDataset
) -> None:
    res = name_that_dataset([digits, printed], per_dataset=300, seed=0)
    assert res.names == ["digits", "printed-digits"] and res.chance == 0.5
    assert res.counts == [300, 300] and res.n_test == 180 and res.n_train == 420
    assert int(res.confusion.sum()) == res.n_test
    assert res.confusion.sum(1).tolist() == [90, 90]
    assert res.accuracy == pytest.approx(float(res.confusion.diagonal().sum()) / 180)
    assert res.accuracy > 0.9 and res.p_value < 1e-20
    assert res.size == 8 and res.channels == 1
    json.dumps(res.to_dict())
    again = name_that_dataset([digits, printed], per_dataset=300, seed=0)
    assert torch.equal(again.confusion, res.confusion)


def test_name_that_dataset_is_at_chance_on_one_source(digits: ImageDataset) -> None:
    # Two halves of one data set differ by nothing but chance.
    a, b = digits.split(0.5, seed=1)
    b = ImageDataset(b.x, b.y, classes=b.classes, name="digits")
    res = name_that_dataset([a, b], seed=0)
    assert res.names == ["digits", "digits-2"]
    assert abs(res.accuracy - 0.5) < 0.1 and res.p_value > 0.01


def test_name_that_dataset_unbalanced_chance(digits: ImageDataset, printed: ImageDataset) -> None:
    res = name_that_dataset([digits[:600], printed[:200]], balanced=False, seed=0)
    assert res.counts == [600, 200]
    assert res.chance == pytest.approx(180 / 240)


def test_name_that_dataset_convnet(digits: ImageDataset, printed: ImageDataset) -> None:
    res = name_that_dataset(
        [digits, printed], per_dataset=200, classifier="convnet", epochs=15, seed=0
    )
    assert res.classifier == "convnet" and res.accuracy > 0.85


def test_name_that_dataset_errors(digits: ImageDataset) -> None:
    with pytest.raises(ParameterError, match="at least 2 data sets"):
        name_that_dataset([digits])
    with pytest.raises(DTypeError, match="list of ImageDataset"):
        name_that_dataset(digits)  # type: ignore[arg-type]
    with pytest.raises(DTypeError, match=r"datasets\[1\] must be an ImageDataset"):
        name_that_dataset([digits, digits.x])  # type: ignore[list-item]
    with pytest.raises(ParameterError, match="'test_fraction' must be a float in"):
        name_that_dataset([digits, digits], test_fraction=1.5)
    with pytest.raises(ParameterError, match="'classifier' must be 'logistic' or 'convnet'"):
        name_that_dataset([digits, digits], classifier="svm")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'per_dataset' must be an int >= 2"):
        name_that_dataset([digits, digits], per_dataset=1)


# --------------------------------------------------------------------------- cross-dataset


def test_cross_dataset_matrix(digits: ImageDataset, printed: ImageDataset) -> None:
    res = cross_dataset_matrix([digits, printed], per_dataset=600, seed=0)
    acc = res.accuracy
    assert acc.shape == (2, 2) and bool(((acc >= 0) & (acc <= 1)).all())
    # Each classifier is best on its own data set: both data sets carry their own bias.
    assert acc[0, 0] > acc[0, 1] and acc[1, 1] > acc[1, 0]
    assert res.self_accuracy == acc.diagonal().tolist()
    assert res.others == pytest.approx([float(acc[0, 1]), float(acc[1, 0])])
    expected = [(float(acc[i, i]) - res.others[i]) / float(acc[i, i]) for i in range(2)]
    assert res.drop == pytest.approx(expected)
    assert res.n_train == [420, 420] and res.n_test == [180, 180]
    assert "| digits |" in res.table()
    json.dumps(res.to_dict())


def test_cross_dataset_matrix_needs_one_label_space(digits: ImageDataset) -> None:
    fm = rl.data.load("fashion-mnist")[:100]
    with pytest.raises(LabelError, match="share one label space"):
        cross_dataset_matrix([digits, fm])


# --------------------------------------------------------------------------- balance


def _toy(labels: list[int], classes: list[str], name: str) -> ImageDataset:
    return ImageDataset(
        torch.zeros(len(labels), 1, 4, 4), torch.tensor(labels), classes=classes, name=name
    )


def test_balance_statistics() -> None:
    a = _toy([0, 0, 1, 1], ["x", "y"], "a")
    b = _toy([0] * 6 + [1] * 2, ["x", "y"], "b")
    c = _toy([0, 1], ["y", "z"], "c")  # classes matched by name
    res = balance([a, b, c])
    assert res.classes == ["x", "y", "z"]
    assert res.counts.tolist() == [[2, 2, 0], [6, 2, 0], [0, 1, 1]]
    assert res.sizes == [4, 8, 2]
    assert res.imbalance_ratio == [math.inf, math.inf, math.inf]
    two = balance([a, b])
    assert two.imbalance_ratio == [1.0, 3.0]
    assert two.class_entropy[0] == pytest.approx(1.0)
    p = torch.tensor([0.75, 0.25])
    assert two.class_entropy[1] == pytest.approx(float(-(p * p.log()).sum() / math.log(2)))
    assert two.dataset_entropy == pytest.approx(
        float(-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)) / math.log(2)
    )
    torch.testing.assert_close(
        two.dataset_share, torch.tensor([[0.25, 0.5], [0.75, 0.5]], dtype=torch.float64)
    )
    json.dumps(two.to_dict())


def test_cramers_v_bounds() -> None:
    same = balance([_toy([0, 1, 1], ["x", "y"], "a"), _toy([0, 0, 1, 1, 1, 1], ["x", "y"], "b")])
    assert same.cramers_v == pytest.approx(0.0, abs=1e-12)
    apart = balance([_toy([0, 0], ["x", "y"], "a"), _toy([1, 1, 1], ["x", "y"], "b")])
    assert apart.cramers_v == pytest.approx(1.0)
    assert "| a |" in apart.table()
