"""Shared fixtures: the real data sets (loaded once per session) and small toy models."""

from __future__ import annotations

import pytest
import torch

import robustlens as rl


@pytest.fixture(scope="session")
def fmnist_test() -> rl.data.ImageDataset:
    return rl.data.load("fashion-mnist", split="test")


@pytest.fixture(scope="session")
def fmnist_train() -> rl.data.ImageDataset:
    return rl.data.load("fashion-mnist", split="train")


@pytest.fixture
def toy_linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return rl.models.create("linear", in_channels=3, num_classes=4, image_size=5)
