"""Small image-classifier architectures, registered by name.

Every factory takes ``in_channels``, ``num_classes`` and ``image_size`` (the side of a square
input) plus its own options, and returns an ``nn.Module`` mapping ``(N, C, H, W)`` to logits
``(N, K)``. ``create(name, **kw)`` builds one; ``names()`` lists them.

Example:
    >>> import torch
    >>> net = create("convnet", in_channels=3, num_classes=7, image_size=12)
    >>> net(torch.rand(2, 3, 12, 12)).shape
    torch.Size([2, 7])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustlens.errors import ParameterError
from robustlens.registry import Registry

__all__ = ["ARCHITECTURES", "BasicBlock", "create", "names"]

ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture")


def names() -> list[str]:
    """Registered architecture names."""
    return ARCHITECTURES.names()


def create(name: str, /, **kwargs: Any) -> nn.Module:
    """Build architecture ``name`` with ``kwargs`` (unknown keywords are refused)."""
    return ARCHITECTURES.create(name, **kwargs)


def _check_common(in_channels: int, num_classes: int, image_size: int) -> None:
    for field, value, low in (
        ("in_channels", in_channels, 1),
        ("num_classes", num_classes, 2),
        ("image_size", image_size, 4),
    ):
        if not isinstance(value, int) or value < low:
            raise ParameterError(f"architecture: {field!r} must be an int >= {low}, got {value!r}")


def _flat_features(body: nn.Module, in_channels: int, image_size: int) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, in_channels, image_size, image_size)).flatten(1).shape[1])


@ARCHITECTURES.register("linear")
def linear(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """A linear classifier on the flattened pixels (the closed-form reference of many tests)."""
    _check_common(in_channels, num_classes, image_size)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))


@ARCHITECTURES.register("mlp")
def mlp(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    hidden: Sequence[int] = (256, 128),
) -> nn.Module:
    """A fully connected network with ReLU hidden layers of widths ``hidden``."""
    _check_common(in_channels, num_classes, image_size)
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * image_size**2
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@ARCHITECTURES.register("lenet")
def lenet(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, padded so 8x8 inputs also fit."""
    _check_common(in_channels, num_classes, image_size)
    body = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2 if image_size < 16 else 0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    flat = _flat_features(body, in_channels, image_size)
    return nn.Sequential(
        body,
        nn.Linear(flat, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


@ARCHITECTURES.register("convnet")
def convnet(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    widths: Sequence[int] = (32, 64),
    hidden: int = 64,
    dropout: float = 0.25,
    batchnorm: bool = True,
) -> nn.Module:
    """VGG-style stages (two 3x3 conv + ReLU, then 2x2 max pool) and a two-layer head.

    With the defaults on 28x28 greyscale: 32 and 64 channels, 268k parameters (1.1 MB).
    """
    _check_common(in_channels, num_classes, image_size)
    if not 0 <= dropout < 1:
        raise ParameterError(f"convnet: 'dropout' must lie in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        for _ in range(2):
            layers.append(nn.Conv2d(c, int(w), 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(int(w)))
            layers.append(nn.ReLU())
            c = int(w)
        layers.append(nn.MaxPool2d(2))
    body = nn.Sequential(*layers, nn.Flatten())
    flat = _flat_features(body, in_channels, image_size)
    return nn.Sequential(
        body,
        nn.Linear(flat, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet-18/34 (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@ARCHITECTURES.register("resnet")
def resnet(
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    widths: Sequence[int] = (64, 128, 256, 512),
    blocks: Sequence[int] = (2, 2, 2, 2),
) -> nn.Module:
    """ResNet with basic blocks; the defaults are ResNet-18 (11M parameters).

    Inputs of side >= 96 get ImageNet's stem (7x7 stride-2 conv and max pool); smaller ones a 3x3
    stride-1 stem, as is usual for CIFAR-sized images.
    """
    _check_common(in_channels, num_classes, image_size)
    if len(widths) != len(blocks) or not widths:
        raise ParameterError(
            f"resnet: 'widths' and 'blocks' must have the same non-zero length, got {widths}, {blocks}"
        )
    if image_size >= 96:
        stem: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
    else:
        stem = [
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        ]
    layers: list[nn.Module] = list(stem)
    c = int(widths[0])
    for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
        for j in range(int(n)):
            layers.append(BasicBlock(c, int(w), 2 if (i > 0 and j == 0) else 1))
            c = int(w)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)
