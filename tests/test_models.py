"""Architectures, Normalized, checkpoints (safe loading, wrong architecture) and the zoo."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

import robustlens as rl
from robustlens.errors import CheckpointError, ParameterError, ShapeError, UnknownNameError
from robustlens.models import Normalized, create, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("name", rl.models.names())
@pytest.mark.parametrize("c,k,size", [(1, 10, 28), (3, 4, 8)])
def test_every_architecture_maps_images_to_logits(name: str, c: int, k: int, size: int) -> None:
    kw = {"widths": (8, 16), "blocks": (1, 1)} if name == "resnet" else {}
    net = create(name, in_channels=c, num_classes=k, image_size=size, **kw).eval()
    out = net(torch.rand(5, c, size, size))
    assert out.shape == (5, k) and out.dtype == torch.float32


def test_architecture_parameters_are_checked() -> None:
    with pytest.raises(ParameterError, match="'num_classes' must be an int >= 2"):
        create("convnet", num_classes=1)
    with pytest.raises(ParameterError, match="takes no argument 'depth'"):
        create("convnet", depth=3)
    with pytest.raises(UnknownNameError, match="did you mean 'convnet'"):
        create("convnett")


def test_normalized_matches_manual_normalisation() -> None:
    torch.manual_seed(0)
    inner = create("linear", in_channels=3, num_classes=4, image_size=5)
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    x = torch.rand(4, 3, 5, 5)
    manual = inner((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(Normalized(inner, mean, std)(x), manual, atol=1e-6)
    with pytest.raises(ParameterError, match="'std' must be > 0"):
        Normalized(inner, mean, [1.0, 0.0, 1.0])
    with pytest.raises(ParameterError, match="one value per channel"):
        Normalized(inner, mean, [1.0])
    with pytest.raises(ShapeError, match="expected \\(N, 3, H, W\\)"):
        Normalized(inner, mean, std)(torch.rand(4, 1, 5, 5))


def test_checkpoint_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kw = {"in_channels": 1, "num_classes": 3, "image_size": 8, "widths": (4, 8), "hidden": 16}
    model = Normalized(create("convnet", **kw), [0.5], [0.2]).eval()
    save_checkpoint(tmp_path / "m.pt", model, arch="convnet", arch_kwargs=kw, meta={"note": "x"})
    back = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(3, 1, 8, 8)
    assert isinstance(back, Normalized) and not back.training
    assert torch.equal(back(x), model(x))


def test_bare_state_dict_needs_arch(tmp_path: Path) -> None:
    net = create("linear", in_channels=1, num_classes=3, image_size=4)
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="bare state_dict; say which architecture"):
        load_checkpoint(tmp_path / "sd.pt")
    kw = {"in_channels": 1, "num_classes": 3, "image_size": 4}
    back = load_checkpoint(tmp_path / "sd.pt", arch="linear", arch_kwargs=kw)
    assert torch.equal(back[1].weight, net[1].weight)
    with pytest.raises(CheckpointError, match="do not fit architecture 'mlp'"):
        load_checkpoint(tmp_path / "sd.pt", arch="mlp", arch_kwargs=kw)


def test_checkpoint_of_other_architecture(tmp_path: Path) -> None:
    kw = {"in_channels": 1, "num_classes": 3, "image_size": 4}
    save_checkpoint(tmp_path / "lin.pt", create("linear", **kw), arch="linear", arch_kwargs=kw)
    with pytest.raises(CheckpointError, match="holds a 'linear' model but arch='convnet'"):
        load_checkpoint(tmp_path / "lin.pt", arch="convnet")


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(self.target),))  # type: ignore[attr-defined]


def test_untrusted_checkpoint_never_runs_code(tmp_path: Path) -> None:
    payload = _Payload()
    payload.target = str(tmp_path / "pwned")  # type: ignore[attr-defined]
    torch.save({"state_dict": payload}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing to load .*could run code"):
        load_checkpoint(tmp_path / "evil.pt", arch="linear")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "plain.pkl", arch="linear")
    assert not (tmp_path / "pwned").exists()


def test_corrupt_and_truncated_checkpoints(tmp_path: Path) -> None:
    kw = {"in_channels": 1, "num_classes": 3, "image_size": 4}
    save_checkpoint(tmp_path / "ok.pt", create("linear", **kw), arch="linear", arch_kwargs=kw)
    raw = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pt")


# --------------------------------------------------------------------------- zoo


def test_zoo_names_and_sizes() -> None:
    assert {"fmnist-cnn", "digits-cnn"} <= set(rl.zoo.names())
    for name in rl.zoo.names():
        info = rl.zoo.info(name)
        assert info["size_bytes"] is not None and info["size_bytes"] <= 2_000_000, name
        assert info["command"].startswith("robustlens train ")
        assert info["test_accuracy"] >= info["min_accuracy"]


@pytest.mark.parametrize("name", rl.zoo.names())
def test_zoo_accuracy_from_shipped_weights(name: str) -> None:
    info = rl.zoo.info(name)
    model = rl.zoo.load(name)
    assert not model.training
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())
    ds = rl.data.load(info["dataset"], split="test")
    res = rl.evaluation.clean_accuracy(model, ds)
    assert res.accuracy >= info["min_accuracy"]
    # The accuracy recorded at training time is what the shipped weights give today.
    assert res.accuracy == pytest.approx(info["test_accuracy"], abs=1e-4)


def test_zoo_unknown_name() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'fmnist-cnn'"):
        rl.zoo.load("fmnist_cnn")
