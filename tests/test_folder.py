"""Image folders of real photos of mixed sizes, and the ImageNet class index and class maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import robustlens as rl
from robustlens.data import (
    Preprocessing,
    imagenet_names,
    imagenet_wnids,
    load_folder,
    map_to_imagenet,
    read_class_map,
)
from robustlens.errors import DataFileError, DataNotFoundError, LabelError, ParameterError

WNIDS = ["n02123045", "n04008634", "n07920052"]  # tabby, projectile, espresso
PRE = Preprocessing(input_size=(56, 48), resize=64)  # H != W catches a swapped axis


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _copy(photo_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(photo_folder, tmp_path / "photos"))


# --------------------------------------------------------------------------- the folder loader


def test_photo_folder_really_has_mixed_sizes_and_formats(photo_folder: Path) -> None:
    files = _files(photo_folder)
    sizes = {Image.open(p).size for p in files}
    assert len(files) == 9 and len(sizes) == 9
    assert {p.suffix for p in files} == {".jpg", ".png"}
    assert all(min(s) >= 60 and max(s) <= 160 for s in sizes)
    assert all(Image.open(p).mode == "RGB" for p in files)


def test_mixed_sizes_load_through_preprocessing(photo_folder: Path) -> None:
    ds = load_folder(photo_folder, preprocessing=PRE)
    assert ds.x.shape == (9, 3, 56, 48) and ds.x.dtype == torch.float32
    assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.classes == WNIDS and ds.name == photo_folder.name
    # Real photos, not blank buffers: every image has contrast.
    assert bool((ds.x.flatten(1).std(dim=1) > 0.05).all())


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_equals_torchvision_resize_and_center_crop(photo_folder: Path, interpolation: str) -> None:
    pre = Preprocessing(input_size=(56, 48), resize=64, interpolation=interpolation)  # type: ignore[arg-type]
    ds = load_folder(photo_folder, preprocessing=pre)
    # torchvision's evaluation order: resize and crop the 8-bit image, then convert to float.
    reference = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(64, interpolation=v2.InterpolationMode(interpolation), antialias=True),
            v2.CenterCrop((56, 48)),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    for i, path in enumerate(_files(photo_folder)):
        expected = reference(Image.open(path).convert("RGB")).clamp(0, 1)
        assert torch.allclose(ds.x[i], expected, atol=1e-6), path


def test_greyscale_preprocessing_matches_rgb_luma(photo_folder: Path) -> None:
    rgb = load_folder(photo_folder, preprocessing=PRE)
    grey = load_folder(
        photo_folder, preprocessing=Preprocessing(input_size=(56, 48), resize=64, channels=1)
    )
    assert grey.x.shape == (9, 1, 56, 48)
    luma = v2.functional.rgb_to_grayscale(rgb.x)
    # Pillow rounds the luma to 8 bits before the (linear) resize, and each 8-bit resize rounds
    # once more: at most one and a half levels apart.
    assert float((grey.x - luma).abs().max()) <= 1.5 / 255 + 1e-5


def test_size_squashes_as_before(photo_folder: Path) -> None:
    ds = load_folder(photo_folder, size=(40, 30))
    first = _files(photo_folder)[0]
    expected = Image.open(first).convert("RGB").resize((30, 40), Image.Resampling.BILINEAR)
    assert ds.x.shape == (9, 3, 40, 30)
    assert torch.equal(ds.x[0], torch.from_numpy(np.array(expected)).permute(2, 0, 1) / 255.0)


def test_mixed_sizes_without_preprocessing_say_how_to_fix(photo_folder: Path) -> None:
    with pytest.raises(DataFileError) as info:
        load_folder(photo_folder)
    msg = str(info.value)
    assert "chelsea_1.png is 100x100 (HxW) but" in msg and "chelsea_0.jpg is 80x120" in msg
    assert "preprocessing=Preprocessing(input_size=(H, W), resize=R)" in msg
    assert "--input-size H --resize R" in msg


def test_own_size_preprocessing_still_needs_one_size(photo_folder: Path) -> None:
    with pytest.raises(DataFileError, match=r"input_size=\(H, W\)"):
        load_folder(photo_folder, preprocessing=Preprocessing(input_size=None))


def test_truncated_jpeg_is_named(photo_folder: Path, tmp_path: Path) -> None:
    root = _copy(photo_folder, tmp_path)
    victim = root / "n04008634" / "rocket_2.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match=r"cannot decode .*n04008634/rocket_2\.jpg .*truncated"):
        load_folder(root, preprocessing=PRE)


def test_text_file_named_png_is_named(photo_folder: Path, tmp_path: Path) -> None:
    root = _copy(photo_folder, tmp_path)
    (root / "n07920052" / "notes.png").write_text("not an image\n")
    with pytest.raises(DataFileError, match=r"cannot decode .*n07920052/notes\.png"):
        load_folder(root, preprocessing=PRE)


def test_hidden_and_foreign_files_are_skipped(photo_folder: Path, tmp_path: Path) -> None:
    root = _copy(photo_folder, tmp_path)
    (root / "n02123045" / "._chelsea_0.jpg").write_bytes(b"macOS resource fork")
    (root / "n02123045" / "README.txt").write_text("hello")
    (root / ".cache").mkdir()
    assert load_folder(root, preprocessing=PRE).y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_exif_orientation_is_applied(photo_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    photo = Image.open(photo_folder / "n02123045" / "chelsea_1.png").crop((0, 0, 100, 60))  # 60x100
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    photo.save(tmp_path / "cat" / "phone.png", exif=exif)
    ds = load_folder(tmp_path)
    assert ds.x.shape == (1, 3, 100, 60)
    upright = torch.from_numpy(np.array(photo.transpose(Image.Transpose.ROTATE_270))).permute(
        2, 0, 1
    )
    assert torch.equal(ds.x[0], upright / 255.0)


def test_classes_give_the_label_space(photo_folder: Path) -> None:
    ds = load_folder(photo_folder, preprocessing=PRE, classes=imagenet_wnids())
    assert len(ds.classes) == 1000
    assert ds.y.tolist() == [281] * 3 + [744] * 3 + [967] * 3
    with pytest.raises(LabelError, match=r"sub-folder\(s\) \['n04008634'\] .* not in 'classes'"):
        load_folder(photo_folder, preprocessing=PRE, classes=["n02123045", "n07920052"])


def test_contradicting_arguments(photo_folder: Path) -> None:
    with pytest.raises(ParameterError, match="not both"):
        load_folder(photo_folder, size=(8, 8), preprocessing=PRE)
    with pytest.raises(ParameterError, match="mode='L' contradicts preprocessing.channels=3"):
        load_folder(photo_folder, mode="L", preprocessing=PRE)
    with pytest.raises(DataNotFoundError, match="is not a directory"):
        load_folder(photo_folder / "missing", preprocessing=PRE)


# --------------------------------------------------------------------------- ImageNet index


def test_imagenet_index_from_installed_packages() -> None:
    import timm.data

    wnids, names = imagenet_wnids(), imagenet_names()
    assert len(wnids) == len(set(wnids)) == 1000 and len(names) == 1000
    assert wnids == list(timm.data.ImageNetInfo().label_names())
    assert (wnids[0], names[0]) == ("n01440764", "tench")
    assert (wnids[1], names[1]) == ("n01443537", "goldfish")
    assert names[281] == "tabby" and names[967] == "espresso"


def test_map_to_imagenet_on_wnids_and_names(photo_folder: Path, photo_folder_named: Path) -> None:
    assert map_to_imagenet(load_folder(photo_folder, size=(8, 8)).classes) == [281, 744, 967]
    named = load_folder(photo_folder_named, size=(8, 8)).classes
    assert named == ["espresso", "projectile", "tabby"]
    assert map_to_imagenet(named) == [967, 744, 281]
    assert map_to_imagenet(["n01440764", "goldfish", "GOLDFISH", "great_white_shark"]) == [
        0,
        1,
        1,
        2,
    ]
    # Lemmas from timm's synset-to-lemma table: "tabby cat", "Carassius auratus", "missile" (744's).
    assert map_to_imagenet(["tabby cat", "Carassius auratus", "crane bird"]) == [281, 1, 134]


def test_map_to_imagenet_unknown_names() -> None:
    with pytest.raises(LabelError) as info:
        map_to_imagenet(["tabby", "kitty-kat", "espreso"])
    msg = str(info.value)
    assert "2 of 3 class name(s)" in msg
    assert "'kitty-kat' names no ImageNet-1k class" in msg
    assert "'espreso' names no ImageNet-1k class (did you mean 'espresso'?)" in msg
    assert "rename each such folder to its WordNet id" in msg and "class-map file" in msg


def test_map_to_imagenet_ambiguous_names() -> None:
    with pytest.raises(
        LabelError,
        match=r"'crane' is ambiguous: it names 134 \(n02012849, crane bird\) or 517 \(n03126707, crane\).*WordNet id",
    ):
        map_to_imagenet(["crane"])
    with pytest.raises(LabelError, match=r"'Cardigan' is ambiguous: it names 264 .* or 474 "):
        map_to_imagenet(["Cardigan"])


# --------------------------------------------------------------------------- class-map files

DATA = ["espresso cup", "kitty", "rocket"]


def test_read_class_map_json(tmp_path: Path) -> None:
    f = tmp_path / "map.json"
    f.write_text(
        json.dumps({"kitty": "n02123045", "rocket": 744, "espresso cup": "Espresso", "extra": 3})
    )
    assert read_class_map(f, DATA) == [967, 281, 744]
    f.write_text(json.dumps({"kitty": "cat", "rocket": 1, "espresso cup": "coffee"}))
    assert read_class_map(f, DATA, model_classes=["Cat", "rocket", "coffee"]) == [2, 0, 1]


@pytest.mark.parametrize(
    "text",
    [
        "espresso cup\tespresso\nkitty\t281\nrocket\tprojectile\n",
        "# data class, model class\nespresso cup,967\nkitty, tabby cat\n\nrocket,n04008634\n",
        "espresso cup espresso\nkitty   tabby cat\nrocket 744\n",
    ],
    ids=["tab", "comma", "space"],
)
def test_read_class_map_text(tmp_path: Path, text: str) -> None:
    f = tmp_path / "map.txt"
    f.write_text(text)
    assert read_class_map(f, DATA) == [967, 281, 744]


def test_read_class_map_errors(tmp_path: Path) -> None:
    f = tmp_path / "map.txt"
    with pytest.raises(DataNotFoundError, match=r"no class-map file at .*map\.txt"):
        read_class_map(f, DATA)
    f.write_text("espresso cup\t967\nkity\t281\n")
    with pytest.raises(
        LabelError,
        match=r"maps 1 of 3 data classes; no entry for \['kitty', 'rocket'\]; the file maps \['kity'\]",
    ):
        read_class_map(f, DATA)
    f.write_text("espresso cup\t967\nkitty\tkitty-kat\nrocket\t-1\n")
    with pytest.raises(
        LabelError,
        match=r"'kitty' -> 'kitty-kat' names no ImageNet-1k class; 'rocket' -> -1: a model index must be an int >= 0",
    ):
        read_class_map(f, DATA)
    f.write_text("espresso cup\t967\nkitty\tcrane\nrocket\t744\n")
    with pytest.raises(LabelError, match=r"'kitty' -> 'crane' is ambiguous"):
        read_class_map(f, DATA)
    f.write_text("espresso cup\t2\nkitty\t0\nrocket\t3\n")
    with pytest.raises(LabelError, match=r"'rocket' -> 3: a model index must be an int in 0\.\.2"):
        read_class_map(f, DATA, model_classes=["a", "b", "c"])
    f.write_text("espresso cup\t2\nkitty\t0\nkitty\t1\nrocket\t1\n")
    with pytest.raises(DataFileError, match=r"maps data class 'kitty' twice \(line 3\)"):
        read_class_map(f, DATA)
    f.write_text("espresso cup\n")
    with pytest.raises(
        DataFileError, match=r"line 1 of .* names data class 'espresso cup' but no model index"
    ):
        read_class_map(f, DATA)
    f.write_text("kitty 281\ncoffee\n")
    with pytest.raises(DataFileError, match=r"line 2 of .* is 'coffee'; each line must be"):
        read_class_map(f, DATA)


def test_read_class_map_json_errors(tmp_path: Path) -> None:
    f = tmp_path / "map.json"
    f.write_text('{"kitty": 281,\n "rocket": }')
    with pytest.raises(
        DataFileError, match=r"map\.json is not valid JSON \(Expecting value at line 2, column 12\)"
    ):
        read_class_map(f, DATA)
    f.write_text("[281, 744]")
    with pytest.raises(DataFileError, match="holds a JSON list, but it must be an object"):
        read_class_map(f, DATA)
    f.write_text(json.dumps({"kitty": True, "rocket": 2.5, "espresso cup": "cofee"}))
    with pytest.raises(LabelError) as info:
        read_class_map(f, DATA, model_classes=["cat", "rocket", "coffee"])
    msg = str(info.value)
    assert "'kitty' -> True: a value must be a model index" in msg
    assert "'rocket' -> 2.5: a value must be a model index" in msg
    assert (
        "'espresso cup' -> 'cofee' is not one of the model's 3 classes (did you mean 'coffee'?)"
        in msg
    )


def test_exports() -> None:
    assert rl.data.Preprocessing is Preprocessing
    assert {"map_to_imagenet", "read_class_map", "imagenet_wnids", "imagenet_names"} <= set(
        rl.data.__all__
    )
