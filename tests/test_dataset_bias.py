"""Dataset bias: harmonising data sets, name that dataset, the cross-dataset matrix, class vs
dataset balance, and the printed-digits source."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import robustlens as rl
from robustlens.bias.dataset import (
    balance,
    cross_dataset_matrix,
    harmonize,
    name_that_dataset,
)
from robustlens.data import ImageDataset, ImageFiles
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
    # The MNIST family keeps its smallest side in grey: the pixels, as before photos were handled.
    assert res.features == "pixels" and res.backbone is None and res.warnings == []
    assert res.description == (
        "logistic regression on 8x8 grey thumbnails (shorter side resized to 8, centre crop)"
    )
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


# --------------------------------------------------------------------------- photo folders

# The pictures the photo folders are cut from: scikit-image's bundled photographs (no download).
PICTURES = ("astronaut", "chelsea", "coffee", "rocket")
# A warm cast that leaves BT.601 luma unchanged: red up, blue down, green balancing them.
CAST = (0.1, -(0.299 - 0.114) * 0.1 / 0.587, -0.1)


def _write_cast_folders(root: Path, n: int, seed: int) -> tuple[Path, Path]:
    """Two ImageFolders (one class per picture) of random crops of the pictures, at random sizes
    and aspect ratios, each crop sent to ``plain/`` or ``warm/`` by a coin flip. They differ only
    in the colour cast of ``warm/``, which leaves every pixel's luma as it was."""
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    cast = np.array(CAST)
    for name in ("plain", "warm"):
        for picture in PICTURES:
            (root / name / picture).mkdir(parents=True)
    for i in range(n):
        picture = PICTURES[i % len(PICTURES)]
        image = getattr(skimage.data, picture)().astype(np.float64) / 255
        height, width, _ = image.shape
        h, w = int(rng.integers(height // 3, height)), int(rng.integers(width // 3, width))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        crop = image[top : top + h, left : left + w] * 0.76 + 0.12  # room for the cast
        warm = bool(rng.random() < 0.5)
        if warm:
            crop = crop + cast
        side = int(rng.integers(40, 120))
        Image.fromarray(np.round(crop * 255).astype(np.uint8)).resize(
            (side, max(1, round(side * h / w))), Image.Resampling.BILINEAR
        ).save(root / ("warm" if warm else "plain") / picture / f"{i:03d}.png")
    return root / "plain", root / "warm"


@pytest.fixture(scope="module")
def cast_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write_cast_folders(tmp_path_factory.mktemp("cast"), 160, seed=0)


@pytest.fixture(scope="module")
def cast_sets(cast_folders: tuple[Path, Path]) -> list[ImageFiles]:
    return [rl.data.open_folder(folder) for folder in cast_folders]


def test_colour_cast_is_named_in_rgb_thumbnails_not_at_8x8_grey(
    cast_sets: list[ImageFiles],
) -> None:
    plain = cast_sets[0]
    assert len({plain.decode(i).shape for i in range(8)}) > 1  # mixed sizes, streamed
    rgb = name_that_dataset(cast_sets, seed=0)
    assert (rgb.size, rgb.channels, rgb.features) == (32, 3, "pixels")
    assert rgb.description == (
        "logistic regression on 32x32 RGB thumbnails (shorter side resized to 32, centre crop)"
    )
    assert rgb.counts == [72, 72] and rgb.skipped == [0, 0] and rgb.chance == 0.5
    assert rgb.accuracy >= 0.9 and rgb.p_value < 1e-8
    # The old reduction sees only luma, which the cast leaves as it was: chance.
    grey = name_that_dataset(cast_sets, size=8, channels=1, seed=0)
    assert (grey.size, grey.channels) == (8, 1)
    assert grey.accuracy < 0.65 and grey.p_value > 0.05
    assert "8x8 grey thumbnails" in grey.description


def test_cross_dataset_matrix_on_photo_folders(cast_sets: list[ImageFiles]) -> None:
    res = cross_dataset_matrix(cast_sets, seed=0)
    assert res.names == ["plain", "warm"] and (res.size, res.channels) == (32, 3)
    assert res.n_train == [50, 50] and res.n_test == [22, 22] and res.skipped == [0, 0]
    acc = res.accuracy
    # Which picture a crop is from, learnt under one cast, transfers worse to the other.
    off = (float(acc.sum()) - float(acc.diagonal().sum())) / 2
    assert float(acc.diagonal().mean()) > off + 0.1 and min(res.drop) >= 0
    assert "32x32 RGB thumbnails" in res.description and res.to_dict()["features"] == "pixels"


def test_thumbnails_keep_framing(tmp_path: Path) -> None:
    from PIL import Image

    # A wide image: red outer quarters, blue centre half. The centre crop (and the resizing
    # filter's reach around it) is all blue; a squashing resize would put red at the edges.
    pixels = torch.zeros(1, 3, 24, 72)
    pixels[:, 0, :, :18] = pixels[:, 0, :, 54:] = 1.0
    pixels[:, 2, :, 18:54] = 1.0
    (tmp_path / "wide" / "a").mkdir(parents=True)
    array = (pixels[0].permute(1, 2, 0) * 255).round().byte().numpy()
    Image.fromarray(array).save(tmp_path / "wide" / "a" / "0.png")
    in_memory = ImageDataset(pixels, torch.tensor([0]), name="wide")
    files = rl.data.open_folder(tmp_path / "wide")
    blue = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    for data in (in_memory, files):
        (thumb,) = harmonize([data], size=8)
        assert thumb.shape == (3, 8, 8)
        torch.testing.assert_close(thumb.x, blue, atol=1e-6, rtol=0)
    # The default geometry: 32 px colour for photos of any size; 8 px grey next to digits.
    plain = rl.data.open_folder(tmp_path / "wide")
    assert harmonize([plain])[0].shape == (3, 32, 32)
    digits = rl.data.load("digits")[:5]
    assert [d.shape for d in harmonize([plain, digits])] == [(1, 8, 8), (1, 8, 8)]


def test_streamed_thumbnails_do_not_depend_on_the_batch_size(cast_sets: list[ImageFiles]) -> None:
    part = cast_sets[0][:10]
    one = harmonize([part], batch_size=1)[0]
    many = harmonize([part], batch_size=64)[0]
    assert one.x.shape == (10, 3, 32, 32) and torch.equal(one.x, many.x)
    assert torch.equal(one.y, part.y)


# --------------------------------------------------------------------------- backbone features


def test_name_that_dataset_on_a_seeded_random_resnet18(cast_sets: list[ImageFiles]) -> None:
    bb = rl.models.backbone("torchvision:resnet18", input_size=64, seed=0)
    assert bb.dim == 512 and bb.trained is False and bb.weights is None and bb.seed == 0
    assert bb.extractor.layer == "fc" and bb.preprocessing.input_size == (64, 64)
    res = name_that_dataset(cast_sets, features=bb, per_dataset=40, seed=0)
    assert res.features == "torchvision:resnet18" and res.classifier == "logistic"
    assert (res.size, res.channels, res.n_test) == (64, 3, 24)
    assert res.description.startswith(
        "logistic regression on torchvision:resnet18 penultimate features (512-d, "
    )
    assert "random weights, seed 0" in res.description
    record = res.to_dict()["backbone"]
    assert record["dim"] == 512 and record["trained"] is False and record["weights"] is None
    assert record["preprocessing"]["input_size"] == [64, 64]
    assert len(res.warnings) == 1 and "not a meaningful backbone" in res.warnings[0]
    json.dumps(res.to_dict())
    # Seeded: the same seed builds the same backbone, another seed another one.
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    same = rl.models.backbone("torchvision:resnet18", input_size=64, seed=0)
    other = rl.models.backbone("torchvision:resnet18", input_size=64, seed=1)
    assert torch.equal(bb(x), same(x)) and not torch.equal(bb(x), other(x))
    # The features are the flattened average pool, after the model's own normalisation.
    net = bb.extractor.base
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(net.children())[:-1]).eval()((x - mean) / std)
    torch.testing.assert_close(bb(x), expected.flatten(1), atol=1e-5, rtol=1e-5)


def test_features_of_a_model_with_weights_from_a_file(
    digits: ImageDataset, printed: ImageDataset
) -> None:
    res = name_that_dataset([digits, printed], features="digits-cnn", per_dataset=150, seed=0)
    record = res.backbone
    assert record is not None and record["trained"] is True
    assert str(record["weights"]).endswith("digits-cnn.pt") and res.warnings == []
    assert record["rule"].startswith("forward hook: the input of the last Linear")
    assert f"({record['dim']}-d, " in res.description and "weights from" in res.description
    assert res.accuracy > 0.8


def test_library_weights_file_is_recorded(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(3)
    file = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), file)
    bb = rl.models.backbone("torchvision:mobilenet_v3_small", weights=file, input_size=32)
    assert bb.trained is True and bb.weights == str(file) and bb.seed is None
    assert bb.warnings == [] and bb.dim == 1024 and "weights from" in bb.describe()


def test_penultimate_rules() -> None:
    import timm

    from robustlens.models import Normalized, penultimate

    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1))
    head = torch.nn.Linear(4, 2)
    net = torch.nn.Sequential(body, torch.nn.Flatten(), head).train()
    feats = penultimate(Normalized(net, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]))
    assert feats.rule == "forward hook: the input of the last Linear '2'"
    x = torch.rand(3, 3, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(feats(x), body((x - 0.5) / 0.25).flatten(1))
    assert not net[2]._forward_hooks  # the hook lives only during a forward pass
    with pytest.raises(ParameterError, match="has no nn.Linear layer"):
        penultimate(body)
    tm: Any = timm.create_model("test_resnet", pretrained=False).train()
    tb = rl.models.backbone(tm, input_size=32)
    assert tb.trained is None and tb.weights is None and tb.warnings == []
    assert tb.extractor.rule.startswith("timm forward_head")
    x = torch.rand(2, 3, 32, 32)
    tm.eval()
    with torch.no_grad():
        expected = tm.forward_head(tm.forward_features(x), pre_logits=True)
    tm.train()
    torch.testing.assert_close(tb(x), expected)
    assert tm.training and all(m.training for m in tm.modules())  # the caller's mode is kept


# --------------------------------------------------------------------------- errors


def test_bad_inputs_give_clear_errors(
    tmp_path: Path, cast_sets: list[ImageFiles], digits: ImageDataset
) -> None:
    with pytest.raises(ParameterError, match="at least 2 data sets, got 1; the measurement"):
        name_that_dataset(cast_sets[:1])
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(rl.errors.DataNotFoundError, match="no images"):
        rl.data.open_folder(tmp_path / "empty")
    with pytest.raises(ParameterError, match="'size' and 'channels' shape the thumbnails"):
        name_that_dataset(cast_sets, features="digits-cnn", size=32)
    with pytest.raises(ParameterError, match="on a backbone's features the classifier"):
        name_that_dataset(cast_sets, features="digits-cnn", classifier="convnet")
    with pytest.raises(ParameterError, match="give the input geometry"):
        name_that_dataset(cast_sets, features=torch.nn.Linear(3, 2))
    with pytest.raises(ParameterError, match="'features' must be 'pixels' or a backbone"):
        name_that_dataset(cast_sets, features=3)
    one_class = [d.with_classes(["x"]) for d in (digits[digits.y == 0], digits[digits.y == 0])]
    with pytest.raises(LabelError, match="one class"):
        cross_dataset_matrix(one_class)


# --------------------------------------------------------------------------- command line


def test_cli_dataset_bias(
    cast_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from robustlens.cli import main

    plain, warm = (str(f) for f in cast_folders)
    out = tmp_path / "run"
    args = ["dataset-bias", plain, warm, "--per-dataset", "40", "--workers", "0", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "name that dataset: logistic regression on 32x32 RGB thumbnails" in printed
    results = json.loads((out / "results.json").read_text())
    section = results["sections"]["dataset_bias"]
    named = section["name_that_dataset"]
    assert named["description"].startswith("logistic regression on 32x32 RGB thumbnails")
    assert [d["name"] for d in section["data"]] == ["plain", "warm"]
    assert "cross_dataset" in section and "balance" in section
    assert results["verdicts"][0]["level"] == "warn"
    page = (out / "index.html").read_text(encoding="utf-8")
    assert '<section id="dataset-bias">' in page and "Name that dataset" in page
    assert "names the data set of a held-out image" in page
    # The MNIST family by name: its 8x8 grey pixels.
    assert main(["dataset-bias", "digits", "printed-digits", "--quiet", "--no-cross",
                 "--per-dataset", "100", "--out", str(tmp_path / "digits")]) == 0  # fmt: skip
    assert "on 8x8 grey thumbnails" in capsys.readouterr().out


def test_cli_dataset_bias_bad_input(
    cast_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from robustlens.cli import main

    plain = str(cast_folders[0])
    (tmp_path / "empty").mkdir()
    cases = [
        ([plain], "give at least two data sets"),
        ([plain, str(tmp_path / "empty")], "holds no images"),
        ([plain, "no-such-set"], "neither a folder nor a registered data set"),
        ([plain, plain, "--features", "digits-cnn", "--size", "16"], "--size and --channels"),
        ([plain, plain, "--weights", "w.pt"], "configure the model of --features MODEL"),
    ]
    for extra, message in cases:
        code = main(["dataset-bias", *extra, "--workers", "0", "--out", str(tmp_path / "x")])
        assert code == 2, extra
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_report_names_the_backbone_and_its_weights() -> None:
    from robustlens.report.blocks import Bullets, Table
    from robustlens.report.sections import render_section

    named = {
        "names": ["a", "b"],
        "accuracy": 0.75,
        "chance": 0.5,
        "p_value": 0.001,
        "per_dataset": [0.8, 0.7],
        "confusion": [[8, 2], [3, 7]],
        "n_train": 40,
        "n_test": 20,
        "description": "logistic regression on torchvision:resnet18 penultimate features",
        "backbone": {
            "name": "torchvision:resnet18",
            "dim": 512,
            "rule": "the input of the last Linear 'fc'",
            "trained": False,
            "seed": 0,
            "weights": None,
            "preprocessing": {"description": "centre crop 64x64"},
        },
        "warnings": ["random weights: not a meaningful backbone"],
    }
    sec = render_section("dataset_bias", {"name_that_dataset": named}, section_id="db")
    texts = [getattr(b, "text", "") for b in sec.blocks]
    assert sec.title == "Dataset bias"
    assert texts[1].startswith("A logistic regression on torchvision:resnet18 penultimate")
    assert "75.0%" in texts[1] and "chance 50.0%" in texts[1]
    assert any(getattr(b, "cls", "") == "warn" for b in sec.blocks)
    bullets = next(b for b in sec.blocks if isinstance(b, Bullets))
    weights = [i.text for i in bullets.items][2]
    assert weights == "Weights: random (seed 0): not a meaningful backbone"
    table = next(b for b in sec.blocks if isinstance(b, Table))
    assert [c.text for c in table.rows[0]] == ["a", "10", "80.0%", "8", "2"]
