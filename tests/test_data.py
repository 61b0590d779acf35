"""Loaders on the real files, malformed IDX files, the digits split, folders and CIFAR batches."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import robustlens as rl
from robustlens.data import read_idx, write_idx
from robustlens.data.mnist import find_idx_files
from robustlens.errors import (
    DataFileError,
    DataNotFoundError,
    LabelError,
    ParameterError,
    UnknownNameError,
)


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_real_files(split: str, n: int, request: pytest.FixtureRequest) -> None:
    ds = request.getfixturevalue(f"fmnist_{split}")
    assert ds.name == "fashion-mnist"
    assert ds.x.shape == (n, 1, 28, 28)
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert ds.class_counts().tolist() == [n // 10] * 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    # Values are exact multiples of 1/255: nothing was resampled or clipped.
    assert torch.equal((ds.x[:50] * 255).round() / 255, ds.x[:50])


def test_fashion_mnist_found_through_debian_package() -> None:
    images, labels = find_idx_files("fashion-mnist", "test", download=False)
    assert images.parent == Path("/usr/share/datasets/fashion-mnist")
    assert labels.name == "t10k-labels-idx1-ubyte.gz"


def test_root_takes_precedence_and_raw_files_load(tmp_path: Path, fmnist_test) -> None:
    # Raw (uncompressed) copies of the first 20 test images in a user folder.
    write_idx(
        tmp_path / "t10k-images-idx3-ubyte", (fmnist_test.x[:20, 0] * 255).round().byte().numpy()
    )
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", fmnist_test.y[:20].byte().numpy())
    ds = rl.data.load("fashion-mnist", split="test", root=tmp_path)
    assert len(ds) == 20
    assert torch.equal(ds.x, fmnist_test.x[:20]) and torch.equal(ds.y, fmnist_test.y[:20])


def test_env_variable_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "mnist"
    sub.mkdir()
    write_idx(sub / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8), compress=True)
    write_idx(sub / "t10k-labels-idx1-ubyte", np.array([1, 2, 3], np.uint8), compress=True)
    monkeypatch.setenv("ROBUSTLENS_DATA", str(tmp_path))
    ds = rl.data.load("mnist", split="test")
    assert ds.y.tolist() == [1, 2, 3] and ds.classes == [str(i) for i in range(10)]


def test_missing_data_lists_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ROBUSTLENS_DATA", raising=False)
    with pytest.raises(DataNotFoundError) as info:
        rl.data.load("mnist", split="test", root=tmp_path, download=False)
    msg = str(info.value)
    for expected in (
        f"root={tmp_path}",
        "$ROBUSTLENS_DATA (not set)",
        "user cache",
        "official download (skipped: offline)",
        "pass root=...",
    ):
        assert expected in msg


@pytest.mark.parametrize(
    "header,match",
    [
        (b"\x01\x00\x08\x03", "not an IDX file"),  # non-zero leading bytes
        (b"\x00\x00\x07\x03", "not an IDX file"),  # unknown type code
        (b"\x00\x00\x08\x09", "not an IDX file"),  # too many dimensions
        (b"\x00\x00\x08", "too short"),
    ],
)
def test_malformed_idx_headers(tmp_path: Path, header: bytes, match: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(header + (bytes(16) if len(header) == 4 else b""))
    with pytest.raises(DataFileError, match=match):
        read_idx(path)


def test_truncated_and_overlong_idx(tmp_path: Path) -> None:
    good = struct.pack(">HBB3I", 0, 8, 3, 2, 4, 4) + bytes(32)
    (tmp_path / "short").write_bytes(good[:-5])
    (tmp_path / "long").write_bytes(good + b"\x00")
    (tmp_path / "header").write_bytes(good[:10])
    with pytest.raises(DataFileError, match="truncated: header declares shape \\(2, 4, 4\\)"):
        read_idx(tmp_path / "short")
    with pytest.raises(DataFileError, match="longer than its header says"):
        read_idx(tmp_path / "long")
    with pytest.raises(DataFileError, match="header truncated"):
        read_idx(tmp_path / "header")


def test_truncated_gzip(tmp_path: Path) -> None:
    blob = gzip.compress(struct.pack(">HBB1I", 0, 8, 1, 1000) + bytes(1000))
    (tmp_path / "cut.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFileError, match="corrupt or truncated gzip"):
        read_idx(tmp_path / "cut.gz")


def test_mismatched_label_file(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(DataFileError, match="expected 4 labels"):
        rl.data.load("mnist", root=tmp_path, download=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 2, 10], np.uint8))
    with pytest.raises(DataFileError, match="label 10 out of range"):
        rl.data.load("mnist", root=tmp_path, download=False)


def test_idx_roundtrip_all_types(tmp_path: Path) -> None:
    for dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        arr = np.arange(24, dtype=dtype).reshape(2, 3, 4)
        write_idx(tmp_path / "a", arr, compress=True)
        back = read_idx(tmp_path / "a")
        assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)


def test_digits_fixed_split() -> None:
    train, test = rl.data.load("digits", "train"), rl.data.load("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    assert train.x.shape[1:] == (1, 8, 8) and float(train.x.max()) == 1.0
    # Stratified: each class holds its share of the 450 test images, to within one image.
    everything = rl.data.load("digits", "all")
    share = everything.class_counts().double() * 450 / 1797
    assert bool(((test.class_counts() - share).abs() <= 1).all())
    # Disjoint, and together the whole set.
    assert len(everything) == 1797
    joined = torch.cat([train.x, test.x]).flatten(1)
    assert (
        torch.unique(joined, dim=0).shape[0]
        == torch.unique(everything.x.flatten(1), dim=0).shape[0]
    )
    # Fixed: the same on every call.
    assert torch.equal(rl.data.load("digits", "test").y, test.y)


def test_image_dataset_protocol(fmnist_test) -> None:
    image, label = fmnist_test[3]
    assert image.shape == (1, 28, 28) and label.dtype == torch.int64
    assert len(fmnist_test[10:30]) == 20
    mask = fmnist_test.y == 9
    assert len(fmnist_test[mask]) == 1000
    loader = torch.utils.data.DataLoader(fmnist_test, batch_size=64)
    xb, yb = next(iter(loader))
    assert xb.shape == (64, 1, 28, 28) and torch.equal(yb, fmnist_test.y[:64])
    sub = fmnist_test.subset(100, seed=1)
    assert len(sub) == 100 and sub.class_counts().tolist() == [10] * 10
    assert torch.equal(sub.y, fmnist_test.subset(100, seed=1).y)
    a, b = fmnist_test.split(0.3)
    assert len(a) == 3000 and len(b) == 7000


def test_image_dataset_validates() -> None:
    with pytest.raises(LabelError, match="must have shape \\(2,\\)"):
        rl.data.ImageDataset(torch.zeros(2, 1, 3, 3), torch.tensor([0, 1, 1]))
    with pytest.raises(LabelError, match="2 classes"):
        rl.data.ImageDataset(torch.zeros(2, 1, 3, 3), torch.tensor([0, 2]), classes=["a", "b"])
    with pytest.raises(LabelError, match="unique"):
        rl.data.ImageDataset(torch.zeros(2, 1, 3, 3), torch.tensor([0, 1]), classes=["a", "a"])
    with pytest.raises(ParameterError, match="'n' must be an int >= 1"):
        rl.data.ImageDataset(torch.zeros(2, 1, 3, 3), torch.tensor([0, 1])).subset(0)


def test_unknown_dataset_name_suggests() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'fashion-mnist'"):
        rl.data.load("fashion_mnist")


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls, n in (("<b>cat", 2), ("dog", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    ds = rl.data.load("folder", root=tmp_path)
    assert ds.x.shape == (5, 3, 6, 5) and ds.classes == ["<b>cat", "dog"]
    assert ds.y.tolist() == [0, 0, 1, 1, 1]
    first = np.asarray(Image.open(tmp_path / "<b>cat" / "0.png"), dtype=np.float32) / 255
    assert torch.allclose(ds.x[0].permute(1, 2, 0), torch.from_numpy(first))
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataFileError, match="cannot decode .*broken.png"):
        rl.data.load("folder", root=tmp_path)


def test_image_folder_sizes_must_agree(tmp_path: Path) -> None:
    from robustlens.data import load_folder

    (tmp_path / "a").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "a" / "1.png")
    Image.new("L", (5, 4)).save(tmp_path / "a" / "2.png")
    with pytest.raises(DataFileError, match="pass size=\\(H, W\\)"):
        load_folder(tmp_path)
    ds = load_folder(tmp_path, size=(8, 8))
    assert ds.x.shape == (2, 1, 8, 8)


def _cifar_batch(path: Path, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    with path.open("wb") as fh:
        pickle.dump(
            {b"data": data, b"labels": list(rng.integers(0, 10, n)), b"batch_label": b"x"}, fh
        )
    return data


def test_cifar10_python_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = _cifar_batch(folder / "test_batch", 7, seed=0)
    ds = rl.data.load("cifar10", split="test", root=tmp_path)
    assert ds.x.shape == (7, 3, 32, 32) and ds.classes[0] == "airplane"
    # Channel-major layout: the first 1024 bytes are the red plane.
    assert torch.allclose(ds.x[0, 0].flatten(), torch.from_numpy(data[0, :1024]).float() / 255)


def test_cifar10_refuses_code_in_pickle(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (tmp_path / "pwned",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataFileError, match="refusing to load global"):
        rl.data.load("cifar10", root=tmp_path)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataFileError, match="corrupt or truncated"):
        rl.data.load("cifar10", root=tmp_path)
