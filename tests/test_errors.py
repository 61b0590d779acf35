"""Every validation error, with its message, raised at the entry point."""

from __future__ import annotations

import pytest
import torch

import robustlens as rl
from robustlens._checks import (
    check_at_least,
    check_images,
    check_labels,
    check_logits,
    check_positive,
    check_same_device,
)
from robustlens.errors import (
    DeviceError,
    DTypeError,
    LabelError,
    ModelOutputError,
    NonFiniteError,
    ParameterError,
    RangeError,
    RobustLensError,
    ShapeError,
    UnknownNameError,
)


def test_hierarchy_subclasses_builtins() -> None:
    assert issubclass(ShapeError, ValueError) and issubclass(DTypeError, TypeError)
    assert issubclass(UnknownNameError, KeyError)
    for cls in (ShapeError, DTypeError, RangeError, LabelError, DeviceError, UnknownNameError):
        assert issubclass(cls, RobustLensError)
    assert str(UnknownNameError("plain message")) == "plain message"


@pytest.mark.parametrize(
    "x,error,match",
    [
        (
            torch.rand(28, 28),
            ShapeError,
            r"must have shape \(N, C, H, W\), got \(28, 28\); a single greyscale image needs x\[None, None\]",
        ),
        (
            torch.rand(1, 28, 28),
            ShapeError,
            r"a single image needs a batch dimension: x.unsqueeze\(0\)",
        ),
        (
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            DTypeError,
            r"must be a float tensor, got dtype torch.uint8; convert with x.float\(\) / 255",
        ),
        (
            torch.full((2, 1, 4, 4), 200.0),
            RangeError,
            r"x lies in \[200, 200\] but images must be in \[0, 1\]; divide by 255 or wrap the model",
        ),
        (
            torch.full((2, 1, 4, 4), -0.5),
            RangeError,
            r"undo the mean/std normalisation .* robustlens.models.Normalized",
        ),
        (torch.full((2, 1, 4, 4), 300.0), RangeError, r"rescale them to \[0, 1\]"),
        (
            torch.tensor([[[[0.5, float("nan")]]]]),
            NonFiniteError,
            r"contains 1 NaN or infinite values",
        ),
        (torch.zeros(0, 1, 4, 4), ShapeError, r"is empty"),
        ([[0.5]], DTypeError, r"must be a torch.Tensor"),
    ],
)
def test_image_errors(x: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        check_images(x, where="PGD")
    with pytest.raises(error, match="^PGD: "):
        check_images(x, where="PGD")


def test_images_are_not_clamped_or_copied() -> None:
    x = torch.rand(3, 2, 4, 5)
    assert check_images(x) is x


@pytest.mark.parametrize(
    "y,error,match",
    [
        (
            torch.tensor([0, 1, 2]),
            LabelError,
            r"must have shape \(2,\), one label per image, got \(3,\)",
        ),
        (
            torch.tensor([0.0, 1.0]),
            DTypeError,
            r"integer class indices \(int64\), got dtype torch.float32",
        ),
        (
            torch.tensor([0, 10]),
            LabelError,
            r"labels in \[0, 10\] but the model has 10 classes \(0..9\)",
        ),
        (torch.tensor([-1, 0]), LabelError, r"labels in \[-1, 0\]"),
        ([0, 1], DTypeError, r"must be a torch.Tensor of int64 labels"),
    ],
)
def test_label_errors(y: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        check_labels(y, 2, num_classes=10)


def test_labels_converted_to_int64() -> None:
    assert (
        check_labels(torch.tensor([1, 2], dtype=torch.int32), 2, num_classes=3).dtype == torch.int64
    )


@pytest.mark.parametrize(
    "out,match",
    [
        (torch.zeros(4), r"logits of shape \(N, K\) = \(4, K >= 2\), got \(4,\)"),
        (torch.zeros(3, 10), r"got \(3, 10\)"),
        (torch.zeros(4, 1), r"K >= 2"),
        ((torch.zeros(4, 10), torch.zeros(4)), r"returned a tuple of 2 tensors"),
        ("logits", r"got str"),
    ],
)
def test_model_output_errors(out: object, match: str) -> None:
    with pytest.raises(ModelOutputError, match=match):
        check_logits(out, 4)


def test_model_output_error_at_entry_point() -> None:
    model = torch.nn.Flatten()  # returns (N, 16), fine; a conv without head is not
    conv = torch.nn.Conv2d(1, 2, 3)
    ds = rl.data.ImageDataset(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1]))
    assert rl.evaluation.clean_accuracy(model, ds).n == 4
    with pytest.raises(ModelOutputError, match="must return logits of shape"):
        rl.evaluation.clean_accuracy(conv, ds)
    with pytest.raises(DTypeError, match="model must be a torch.nn.Module"):
        rl.evaluation.clean_accuracy(lambda x: x, ds)  # type: ignore[arg-type]


def test_device_mismatch() -> None:
    model = torch.nn.Linear(2, 2).to("meta")
    with pytest.raises(DeviceError, match="the model is on meta but the input is on cpu; move"):
        check_same_device(model, torch.zeros(1, 1, 1, 2))


def test_parameter_errors() -> None:
    class PGDLike:
        eps = -1.0
        steps = 0

    with pytest.raises(ParameterError, match=r"PGDLike: 'eps' must be a float > 0, got -1.0"):
        check_positive(PGDLike(), "eps")
    with pytest.raises(ParameterError, match=r"'steps' must be an int >= 1, got 0"):
        check_at_least(PGDLike(), "steps", 1)
    with pytest.raises(ParameterError, match=r"'epochs' must be an int >= 1, got 0"):
        rl.training.TrainConfig(epochs=0)
    with pytest.raises(ParameterError, match=r"'lr' must be a float > 0, got nan"):
        rl.training.TrainConfig(lr=float("nan"))
