"""Shared fixtures: the real data sets (loaded once per session), a folder of real photos and
small toy models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import robustlens as rl


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped, with the reason, on a machine without a GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


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


# --------------------------------------------------------------------------- real photos

# class folder (ImageNet WordNet id) -> (short name, scikit-image picture, variants). Each variant
# is (crop box (left, top, right, bottom) or None for the whole picture, mirror?, (W, H), format).
_Variant = tuple[tuple[int, int, int, int] | None, bool, tuple[int, int], str]
_PHOTOS: dict[str, tuple[str, str, list[_Variant]]] = {
    "n02123045": (  # tabby: Chelsea the cat
        "tabby",
        "chelsea",
        [
            (None, False, (120, 80), "JPEG"),
            ((90, 0, 390, 300), False, (100, 100), "PNG"),
            ((100, 40, 360, 240), True, (130, 100), "JPEG"),
        ],
    ),
    "n04008634": (  # projectile, missile: the Falcon 9 on its pad
        "projectile",
        "rocket",
        [
            (None, False, (135, 90), "JPEG"),
            ((200, 60, 440, 427), False, (100, 154), "PNG"),
            ((230, 100, 410, 427), True, (66, 120), "JPEG"),
        ],
    ),
    "n07920052": (  # espresso: a cup on its saucer
        "espresso",
        "coffee",
        [
            (None, False, (144, 96), "PNG"),
            ((120, 0, 480, 360), True, (112, 112), "JPEG"),
            ((60, 40, 520, 400), False, (128, 100), "JPEG"),
        ],
    ),
}


def _write_photo_folder(root: Path, *, named: bool) -> Path:
    import skimage.data
    from PIL import Image, ImageOps

    for wnid, (short, picture, variants) in _PHOTOS.items():
        folder = root / (short if named else wnid)
        folder.mkdir(parents=True)
        source = Image.fromarray(getattr(skimage.data, picture)())  # bundled, no download
        for i, (box, mirror, size, fmt) in enumerate(variants):
            image = source.crop(box) if box is not None else source
            image = ImageOps.mirror(image) if mirror else image
            image = image.resize(size, Image.Resampling.LANCZOS)
            suffix = ".jpg" if fmt == "JPEG" else ".png"
            image.save(
                folder / f"{picture}_{i}{suffix}", fmt, **({"quality": 90} if fmt == "JPEG" else {})
            )
    return root


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of real RGB photos of mixed sizes (scikit-image's bundled pictures).

    Layout (3 classes x 3 images; classes are ImageNet WordNet ids, sorted, so labels 0, 1, 2
    are ImageNet indices 281, 744, 967)::

        root/n02123045/  (tabby, 281)       chelsea_0.jpg 120x80, chelsea_1.png 100x100,
                                            chelsea_2.jpg 130x100 (mirrored)
        root/n04008634/  (projectile, 744)  rocket_0.jpg 135x90, rocket_1.png 100x154,
                                            rocket_2.jpg 66x120 (mirrored)
        root/n07920052/  (espresso, 967)    coffee_0.png 144x96, coffee_1.jpg 112x112 (mirrored),
                                            coffee_2.jpg 128x100

    Sizes are W x H; all images are 8-bit RGB (JPEG quality 90, or PNG). Read-only: copy it
    before changing anything.
    """
    return _write_photo_folder(tmp_path_factory.mktemp("photos"), named=False)


@pytest.fixture(scope="session")
def photo_folder_named(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The images of :func:`photo_folder` with class folders named by ImageNet short name:
    ``espresso/``, ``projectile/``, ``tabby/`` (sorted: labels 0, 1, 2 are ImageNet 967, 744,
    281)."""
    return _write_photo_folder(tmp_path_factory.mktemp("photos-named"), named=True)
