"""The GPU path: what only shows on CUDA (devices of results, dtypes, pinned batches, CPU-equal
answers). Every test here is marked ``cuda`` and skipped on a machine without a GPU; on one, run
``python -m pytest -m cuda``. Tests elsewhere that also exercise CUDA carry the same mark."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import robustlens as rl
from robustlens.attacks import ATTACKS

pytestmark = pytest.mark.cuda

SMALL = {
    "ensemble": {"eps": 0.1},
    "fgsm": {"eps": 0.1},
    "ifgsm": {"eps": 0.1, "steps": 10},
    "pgd": {"eps": 0.1, "steps": 10},
    "deepfool": {"steps": 20},
    "apgd": {"eps": 0.1, "steps": 20},
    "cw": {"steps": 30, "search_steps": 3},
    "square": {"eps": 0.1, "queries": 200},
}


@pytest.fixture(scope="module")
def digits() -> rl.data.ImageDataset:
    return rl.data.load("digits")[:64]


def test_every_attack_has_a_gpu_setting() -> None:
    assert set(SMALL) == set(rl.attacks.names())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_attack_runs_on_the_gpu_like_on_the_cpu(
    name: str, digits: rl.data.ImageDataset
) -> None:
    kwargs = SMALL[name] if name != "ensemble" else {}
    make = (
        (lambda: rl.attacks.Ensemble.standard(eps=0.1, seed=0))
        if name == "ensemble"
        else (lambda: ATTACKS.create(name, **kwargs))
    )
    model = rl.zoo.load("digits-cnn")
    cpu = make()(model, digits.x, digits.y)
    gpu_model = rl.zoo.load("digits-cnn").cuda()
    gpu = make()(gpu_model, digits.x.cuda(), digits.y.cuda())
    assert gpu.x_adv.device.type == "cuda" and gpu.x_adv.dtype == torch.float32
    assert float(gpu.x_adv.min()) >= 0 and float(gpu.x_adv.max()) <= 1
    ball = make().ball() if name != "ensemble" else ("linf", 0.1)
    if ball is not None:
        dist = gpu.linf if ball[0] == "linf" else gpu.l2
        assert float(dist.max()) <= ball[1] + 1e-5
    assert torch.equal(gpu.attacked.cpu(), cpu.attacked)  # the same clean predictions
    # Kernels differ in their last bits; success may flip on a borderline image, no more.
    assert abs(gpu.success_rate - cpu.success_rate) <= 0.05


def test_lime_batches_on_the_gpu_like_on_the_cpu(digits: rl.data.ImageDataset) -> None:
    lime = rl.explain.Lime(samples=300, K=3, segmenter="grid", output="logits", seed=0)
    model = rl.zoo.load("digits-cnn")
    a = lime(model, digits.x[0])
    b = lime(rl.zoo.load("digits-cnn").cuda(), digits.x[0].cuda())
    wa, wb = a.weights.double().cpu(), b.weights.double().cpu()
    assert torch.corrcoef(torch.stack([wa, wb]))[0, 1] > 0.95
    assert abs(a.r2 - b.r2) < 0.05


def test_streamed_folder_evaluates_on_the_gpu(photo_folder: Path) -> None:
    pre = rl.data.Preprocessing(input_size=(56, 56), resize=64)
    files = rl.data.open_folder(photo_folder, preprocessing=pre, workers=2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 56 * 56, 3))
    attacks = [rl.attacks.PGD(eps=0.03, steps=5, seed=1)]
    cpu = rl.evaluation.evaluate(net, files, attacks, batch_size=4)
    gpu = rl.evaluation.evaluate(net.cuda(), files, attacks, batch_size=4)
    assert [r["clean_pred"] for r in gpu.rows] == [r["clean_pred"] for r in cpu.rows]
    assert abs(gpu.robust_accuracy - cpu.robust_accuracy) <= 1 / 9


def test_corruptions_follow_the_images_to_the_gpu(digits: rl.data.ImageDataset) -> None:
    x = digits.x[:4].cuda()
    for name in rl.bias.corruptions.names():
        out = rl.bias.corruptions.corrupt(x, name, 3, seed=0)
        assert out.device == x.device and out.shape == x.shape, name
        assert float(out.min()) >= 0 and float(out.max()) <= 1, name
