"""Data at scale: image files streamed batch by batch (``ImageFiles``), the same per-image results
as in memory, resuming after a kill, ImageNet's layout, labels files, corrupt files, ``--limit``.

Real photos (scikit-image's bundled pictures, :func:`photo_folder`) of mixed sizes, a small
convolutional net fitted to them in a few steps, 32x28 inputs (H != W catches a swapped axis).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

import robustlens as rl
from robustlens.attacks import FGSM, PGD, Run
from robustlens.cli import main
from robustlens.data import (
    ImageDataset,
    ImageFiles,
    Preprocessing,
    ResizedImages,
    batches,
    imagenet_wnids,
    in_memory,
    load_folder,
    open_folder,
)
from robustlens.errors import DataFileError, DataNotFoundError, LabelError, ParameterError
from robustlens.evaluation import audit_defense, clean_accuracy, evaluate

PRE = Preprocessing(input_size=(32, 28), resize=36)
WNIDS = ["n02123045", "n04008634", "n07920052"]  # tabby 281, projectile 744, espresso 967


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128, 3),
    )


@pytest.fixture(scope="module")
def model(photo_folder: Path) -> nn.Module:
    """A small net fitted to the nine photos (so that attacks have correct images to attack)."""
    ds = load_folder(photo_folder, preprocessing=PRE)
    torch.manual_seed(0)
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(ds.x), ds.y).backward()
        opt.step()
    return net.eval()


def _copy(photo_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(photo_folder, tmp_path / "photos"))


def _break(root: Path) -> None:
    """A truncated JPEG and a text file named .png, as found in folders of 50,000 images."""
    jpeg = root / "n04008634" / "rocket_2.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:600])
    (root / "n07920052" / "notes.png").write_text("shopping list, not an image")


def _same(a: Any, b: Any, path: str = "") -> None:
    """Recursive exact equality of results (tensors, NaN-aware floats, dicts, lists)."""
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.shape == b.shape, path
        assert torch.equal(a.cpu(), b.cpu()) or bool(
            torch.isclose(a.cpu(), b.cpu(), equal_nan=True, rtol=0, atol=0).all()
        ), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) - {"seconds"} == set(b) - {"seconds"}, path
        for k in a:
            if k != "seconds":
                _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _same(u, v, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


# --------------------------------------------------------------------------- ImageFiles


def test_files_are_listed_not_read_and_decode_like_load_folder(photo_folder: Path) -> None:
    files = open_folder(photo_folder, preprocessing=PRE)
    assert isinstance(files, ImageFiles) and len(files) == 9 and not hasattr(files, "x")
    assert files.classes == WNIDS and files.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert files.shape == (3, 32, 28) and files.relative(4) == "n04008634/rocket_1.png"
    memory = load_folder(photo_folder, preprocessing=PRE)
    streamed = in_memory(files.with_options(workers=2))
    assert torch.equal(streamed.x, memory.x) and torch.equal(streamed.y, memory.y)
    image, label = files[-2]  # a torch Dataset: one decoded image and its label
    assert torch.equal(image, memory.x[7]) and label == 2
    # Views read nothing and keep their files and labels.
    view = files[torch.tensor([8, 0, 4])]
    assert view.y.tolist() == [2, 0, 1] and view.relative(0) == "n07920052/coffee_2.jpg"
    assert files[1:3].y.tolist() == [0, 0] and len(files[files.y == 1]) == 3
    # A torch DataLoader takes it as it is.
    x, y = next(iter(torch.utils.data.DataLoader(files, batch_size=4)))
    assert torch.equal(x, memory.x[:4]) and y.tolist() == [0, 0, 0, 1]


def test_own_size_images_must_agree(photo_folder: Path) -> None:
    files = open_folder(photo_folder)  # no preprocessing: every photo keeps its own size
    with pytest.raises(
        DataFileError,
        match=r"chelsea_1\.png is 100x100 \(HxW\) but .*chelsea_0\.jpg is 80x120; .*--input-size H --resize",
    ):
        list(batches(files, 9))


def test_batches_are_fixed_chunks_of_positions() -> None:
    ds = ImageDataset(torch.rand(10, 1, 4, 5), torch.arange(10) % 2)
    assert [b.index.tolist() for b in batches(ds, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    got = [b.index.tolist() for b in batches(ds, 4, positions=[1, 2, 5, 9])]
    assert got == [[1, 2], [5], [9]]
    got = [b.index.tolist() for b in batches(ds, 3, positions=[1, 2, 5, 9], aligned=False)]
    assert got == [[1, 2, 5], [9]]
    b = next(iter(batches(ds, 4, positions=[1, 3])))
    assert torch.equal(b.x, ds.x[[1, 3]]) and torch.equal(b.y, ds.y[[1, 3]])
    with pytest.raises(ParameterError, match="strictly increasing"):
        list(batches(ds, 4, positions=[3, 1]))
    with pytest.raises(ParameterError, match="'batch_size' must be an int >= 1"):
        list(batches(ds, 0))


def test_files_validate(photo_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="'workers' must be an int >= 0"):
        open_folder(photo_folder, workers=-1)
    with pytest.raises(ParameterError, match="'layout' must be one of"):
        open_folder(photo_folder, layout="voc")  # type: ignore[arg-type]
    with pytest.raises(DataNotFoundError, match="is not a directory"):
        open_folder(tmp_path / "missing")
    with pytest.raises(LabelError, match=r"'y' must be int64 \(N,\) with N = 2 files"):
        ImageFiles(files=("a.png", "b.png"), y=torch.tensor([0]), classes=["a"])


# --------------------------------------------------------------------------- same results


@pytest.mark.filterwarnings("ignore:superpixel_statistics. LIME warned")
def test_streamed_and_in_memory_give_identical_per_image_results(
    model: nn.Module, photo_folder: Path
) -> None:
    files = open_folder(photo_folder, preprocessing=PRE, workers=2)
    memory = load_folder(photo_folder, preprocessing=PRE)
    attacks = [FGSM(eps=0.1), PGD(eps=0.1, steps=3, seed=1)]
    a = evaluate(model, files, attacks, batch_size=4)
    b = evaluate(model, memory, attacks, batch_size=4)
    assert [r.pop("file") for r in a.rows][:2] == [
        "n02123045/chelsea_0.jpg",
        "n02123045/chelsea_1.png",
    ]
    assert a.rows == b.rows and a.to_dict() == b.to_dict() and a.n == 9
    assert a.clean_accuracy > 0.5 and a.per_attack["PGD(eps=0.1, steps=3)"]["success_rate"] > 0
    ca, cb = clean_accuracy(model, files, batch_size=4), clean_accuracy(model, memory)
    assert torch.equal(ca.predictions, cb.predictions) and ca.to_dict() == cb.to_dict()
    corr = {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5], "seed": 3}
    _same(
        rl.bias.corruption_robustness(model, files, batch_size=4, **corr).to_dict(),
        rl.bias.corruption_robustness(model, memory, batch_size=4, **corr).to_dict(),
    )
    _same(
        rl.bias.ambiguous(model, files, margin=1.0, mass=0.0, k=4).to_dict(),
        rl.bias.ambiguous(model, memory, margin=1.0, mass=0.0, k=4).to_dict(),
    )
    lime = rl.explain.Lime(samples=40, K=3, segmenter="grid", output="logits", hide="constant")
    kw: dict[str, Any] = {"images_per_class": 2, "k": 2, "lime": lime, "target": "pred"}
    _same(
        rl.bias.superpixel_statistics(model, files, **kw).to_dict(pixels="tensors"),
        rl.bias.superpixel_statistics(model, memory, **kw).to_dict(pixels="tensors"),
    )
    defended = rl.defenses.defend(model, rl.defenses.BitDepth(bits=3))
    kw = {"eps": 0.03, "steps": 2, "samples": 2, "ensemble_steps": None, "blackbox_queries": None}
    _same(
        audit_defense(defended, files, model, batch_size=4, **kw).to_dict(),
        audit_defense(defended, memory, model, batch_size=4, **kw).to_dict(),
    )


def test_an_in_memory_set_is_resized_batch_by_batch_with_the_same_results() -> None:
    """A small set at a model's larger input (CIFAR-10 at 224: 6 GB as one tensor) is held at its
    own size and converted as it is read; per-image results equal converting it all at once."""
    small = rl.data.load("digits", split="test").subset(30, seed=0)
    pre = Preprocessing(input_size=(20, 20), resize=22, channels=3)
    lazy = ResizedImages.of(small, pre, workers=2)
    eager = ImageDataset(pre.apply_to(small.x), small.y, classes=list(small.classes), name="d")
    assert lazy.pixels.shape == small.x.shape  # nothing at the model's size is stored
    assert lazy.shape == (3, 20, 20) and torch.equal(in_memory(lazy).x, eager.x)
    view = lazy[torch.tensor([5, 2, 9])]
    assert view.relative(1) == f"{small.name}[2]" and torch.equal(view[1][0], eager.x[2])
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 20 * 20, 10))
    torch.manual_seed(0)
    nn.init.normal_(net[1].weight, std=0.3)
    attacks = [PGD(eps=0.05, steps=3, seed=1)]
    a, b = evaluate(net, lazy, attacks, batch_size=8), evaluate(net, eager, attacks, batch_size=8)
    for row in a.rows:
        assert row.pop("file").startswith(f"{small.name}[")
    assert a.rows == b.rows and a.n == 30
    assert lazy.fingerprint() != lazy.subset(10, seed=0).fingerprint()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:superpixel_statistics. LIME warned")
@pytest.mark.filterwarnings("ignore:Lime. effective sample size")
def test_audit_sections_read_streamed_data_like_in_memory(
    model: nn.Module, photo_folder: Path
) -> None:
    from robustlens.evaluation.config import SuiteConfig
    from robustlens.evaluation.suite import run_suite

    cfg = SuiteConfig.from_dict(
        {
            "data": {"attack_limit": 9},
            "whitebox": {
                "eps": 0.03,
                "attacks": ["fgsm", "pgd"],
                "steps": 3,
                "min_norm": ["deepfool"],
                "min_norm_limit": 6,
                "eps_curve": [0.01, 0.03],
                "gallery": 2,
            },
            "blackbox": {"images": 3, "queries": 60},
            "defenses": {
                "names": ["bitdepth"],
                "images": 6,
                "steps": 2,
                "samples": 2,
                "ensemble_steps": 0,
                "blackbox_images": 0,
            },
            "explanations": {"images": 2, "samples": 40, "stability_seeds": 2},
            "bias": {
                "corruption_images": 9,
                "severities": [2],
                "shape_bias": False,
                "superpixel_images": 1,
                "superpixel_samples": 30,
                "ambiguous": 2,
            },
        }
    )
    files = open_folder(photo_folder, preprocessing=PRE)
    memory = load_folder(photo_folder, preprocessing=PRE)
    streamed = run_suite(model, files, cfg)
    assert set(streamed) == {"clean", "whitebox", "blackbox", "defenses", "explanations", "bias"}
    _same(streamed, run_suite(model, memory, cfg))


# --------------------------------------------------------------------------- resume


@dataclass(frozen=True, kw_only=True)
class KilledPGD(PGD):
    """PGD that raises KeyboardInterrupt (a kill) once it has attacked ``budget`` batches."""

    budget: ClassVar[list[int]] = [1_000]

    def _run(self, run: Run) -> Tensor:
        KilledPGD.budget[0] -= 1
        if KilledPGD.budget[0] < 0:
            raise KeyboardInterrupt("killed")
        return super()._run(run)


def test_resume_after_an_interruption_gives_the_uninterrupted_results(
    model: nn.Module, photo_folder: Path, tmp_path: Path
) -> None:
    files = open_folder(photo_folder, preprocessing=PRE)
    attacks = [KilledPGD(eps=0.03, steps=3, seed=2)]
    KilledPGD.budget[0] = 1_000
    full = evaluate(model, files, attacks, batch_size=2)
    KilledPGD.budget[0] = 2  # killed while attacking the third batch
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, files, attacks, batch_size=2, out=tmp_path)
    rows = (tmp_path / "samples.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # the two finished batches
    # A write cut by the kill: one complete row of the third batch, then a torn line.
    with (tmp_path / "samples.csv").open("a") as fh:
        fh.write("4" + rows[-1][1:] + "\n5,1,1,0")
    KilledPGD.budget[0] = 1_000
    resumed = evaluate(model, files, attacks, batch_size=2, out=tmp_path)
    assert KilledPGD.budget[0] == 1_000 - 3  # batches 3 to 5 only; the cut batch from its start
    assert [int(r["index"]) for r in resumed.rows] == list(range(9))
    as_text = [{k: str(v) for k, v in r.items()} for r in resumed.rows]
    assert as_text == [{k: str(v) for k, v in r.items()} for r in full.rows]
    assert resumed.to_dict() == full.to_dict()
    with pytest.raises(rl.errors.ResumeError, match="differs in batch_size"):
        evaluate(model, files, attacks, batch_size=4, out=tmp_path)


def test_clean_pass_writes_rows_as_it_goes_and_resumes(
    model: nn.Module, photo_folder: Path, tmp_path: Path
) -> None:
    files = open_folder(photo_folder, preprocessing=PRE)
    full = clean_accuracy(model, files, batch_size=4, out=tmp_path)
    lines = (tmp_path / "clean.csv").read_text().splitlines()
    assert lines[0] == "index,label,pred,file" and len(lines) == 10
    (tmp_path / "clean.csv").write_text("\n".join(lines[:5]) + "\n6,2,")  # killed after a batch
    seen: list[int] = []
    hook = model.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    try:
        again = clean_accuracy(model, files, batch_size=4, out=tmp_path)
    finally:
        hook.remove()
    assert again.to_dict() == full.to_dict() and torch.equal(again.predictions, full.predictions)
    assert seen[1:] == [4, 1]  # after the 8-image probe: only positions 4 to 8
    # Another model in the same folder starts afresh rather than mixing its rows in.
    other = _net().eval()
    assert clean_accuracy(other, files, out=tmp_path).to_dict() == (
        clean_accuracy(other, files).to_dict()
    )


SLOW_MODEL = '''
import os, time
import torch
from torch import nn


class Slow(nn.Module):
    """A small net that sleeps in every forward pass once it has been called a few times."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten(), nn.Linear(16, 3))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if os.environ.get("SLOW_AFTER") and self.calls > int(os.environ["SLOW_AFTER"]):
            time.sleep(0.3)
        return self.net(x)


def build():
    return Slow()
'''


@pytest.mark.slow
def test_cli_killed_then_resumed_equals_an_uninterrupted_run(
    photo_folder: Path, tmp_path: Path
) -> None:
    code = tmp_path / "slow_model.py"
    code.write_text(SLOW_MODEL)
    argv = [
        "evaluate",
        "--model",
        f"{code}:build",
        "--input-size",
        "32",
        "--resize",
        "36",
        "--data",
        str(photo_folder),
        "--attack",
        "pgd",
        "--eps",
        "0.03",
        "--steps",
        "4",
        "--batch-size",
        "3",
        "--workers",
        "0",
        "--quiet",
    ]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "SLOW_AFTER": "0"}
    command = [sys.executable, "-m", "robustlens", *argv, "--out", str(out)]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    samples = out / "samples.csv"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if samples.is_file() and len(samples.read_text().splitlines()) >= 1 + 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = len(samples.read_text().splitlines()) - 1
    assert done in (3, 6)  # whole batches only, and not all of them
    assert main([*argv, "--out", str(out)]) == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["robustness"] == whole["robustness"] and resumed["clean"] == whole["clean"]
    assert samples.read_text() == (tmp_path / "whole" / "samples.csv").read_text()


# --------------------------------------------------------------------------- layouts


def test_imagenet_layout_maps_to_the_standard_index(photo_folder: Path, tmp_path: Path) -> None:
    files = open_folder(photo_folder, layout="imagenet", preprocessing=PRE)
    assert files.classes == imagenet_wnids() and files.num_classes == 1000
    assert files.y.tolist() == [281] * 3 + [744] * 3 + [967] * 3
    # The index is the sorted WordNet ids: a full val/ folder as an ImageFolder agrees with it.
    assert sorted(imagenet_wnids()) == imagenet_wnids()
    # ILSVRC's tree: root/val/<wnid>/..., found from root.
    shutil.copytree(photo_folder, tmp_path / "ILSVRC" / "val")
    nested = open_folder(tmp_path / "ILSVRC", layout="imagenet", split="test")
    assert nested.y.tolist() == files.y.tolist() and nested.root.endswith("val")


def test_imagenet_layout_errors(photo_folder_named: Path, tmp_path: Path) -> None:
    with pytest.raises(LabelError, match=r"'espresso', 'projectile', 'tabby'\] that are not"):
        open_folder(photo_folder_named, layout="imagenet")
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next(photo_folder_named.rglob("*.jpg")), flat / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(LabelError, match="needs its labels file"):
        open_folder(flat, layout="imagenet")


def _flat(photo_folder: Path, tmp_path: Path) -> tuple[Path, list[tuple[str, str]]]:
    """The photos in one flat folder, with (file name, WordNet id) in the ImageFolder's order."""
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = []
    for path in sorted(p for p in photo_folder.rglob("*") if p.is_file()):
        shutil.copy(path, flat / path.name)
        rows.append((path.name, path.parent.name))
    return flat, rows


def test_flat_folder_with_a_labels_csv(photo_folder: Path, tmp_path: Path) -> None:
    flat, rows = _flat(photo_folder, tmp_path)
    reference = load_folder(photo_folder, preprocessing=PRE)
    (flat / "labels.csv").write_text("path,label\n" + "".join(f"{p},{w}\n" for p, w in rows))
    files = open_folder(flat, labels=flat / "labels.csv", preprocessing=PRE)
    assert files.classes == WNIDS and torch.equal(files.y, reference.y)
    assert torch.equal(in_memory(files).x, reference.x)
    # Integer labels, no header, a labels file elsewhere: paths are relative to the folder.
    (tmp_path / "ints.csv").write_text("".join(f"{p},{WNIDS.index(w)}\n" for p, w in rows[::-1]))
    ints = open_folder(flat, labels=tmp_path / "ints.csv")
    assert ints.classes == ["0", "1", "2"] and ints.y.tolist() == reference.y.tolist()[::-1]
    # Kaggle's ImageNet LOC_val_solution.csv: no suffix, the WordNet id first among the boxes.
    (flat / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        + "".join(f"{Path(p).stem},{w} 10 20 30 40 {w} 1 2 3 4\n" for p, w in rows)
    )
    kaggle = open_folder(flat, labels=flat / "LOC_val_solution.csv", layout="imagenet")
    assert kaggle.y.tolist() == [281] * 3 + [744] * 3 + [967] * 3
    assert kaggle.relative(0) == rows[0][0]


def test_labels_file_errors(photo_folder: Path, tmp_path: Path) -> None:
    flat, rows = _flat(photo_folder, tmp_path)
    bad = flat / "bad.csv"
    bad.write_text(f"{rows[0][0]},cat\n{rows[0][0]},dog\n")
    with pytest.raises(DataFileError, match=r"lists 'chelsea_0\.jpg' twice \(lines 1 and 2\)"):
        open_folder(flat, labels=bad)
    bad.write_text(f"{rows[0][0]},cat\n{rows[1][0]}\n")
    with pytest.raises(DataFileError, match="line 2 of .* each row must be 'path,label'"):
        open_folder(flat, labels=bad)
    bad.write_text(f"{rows[0][0]},cat\n")
    with pytest.raises(LabelError, match=r"labels \['cat'\] that are not in 'classes'"):
        open_folder(flat, labels=bad, classes=["dog"])
    with pytest.raises(DataNotFoundError, match="no labels file"):
        open_folder(flat, labels=flat / "missing.csv")
    with pytest.raises(DataNotFoundError, match=r"has no sub-folders.*--labels FILE\.csv"):
        open_folder(flat)


# --------------------------------------------------------------------------- corrupt files


def test_corrupt_files_are_skipped_counted_and_listed(
    model: nn.Module, photo_folder: Path, tmp_path: Path
) -> None:
    root = _copy(photo_folder, tmp_path)
    _break(root)
    files = open_folder(root, preprocessing=PRE, workers=2)
    assert len(files) == 10  # listed by name: the text file has an image suffix
    res = clean_accuracy(model, files, batch_size=4)
    assert res.n == 8 and [(f.index, f.path) for f in res.skipped] == [
        (5, "n04008634/rocket_2.jpg"),
        (9, "n07920052/notes.png"),
    ]
    assert "truncated" in res.skipped[0].error.lower() and "cannot identify" in res.skipped[1].error
    assert res.predictions[5] == -1 and res.predictions[9] == -1
    assert res.to_dict()["skipped"][1]["path"] == "n07920052/notes.png"
    # The other images are unaffected: the same predictions as on the intact folder.
    intact = clean_accuracy(model, open_folder(photo_folder, preprocessing=PRE))
    keep = [0, 1, 2, 3, 4, 6, 7, 8]
    assert res.predictions[keep].tolist() == intact.predictions[keep].tolist()
    # Found once, never decoded again, and every view of the data knows them.
    assert len(files.log.errors) == 2 and [f.index for f in files[4:].skipped] == [1, 5]
    ev = evaluate(model, files, [FGSM(eps=0.03)], batch_size=4, out=tmp_path / "ev")
    assert ev.n == 8 and [f.path for f in ev.skipped] == [f.path for f in res.skipped]
    assert "2 file(s) of photos could not be read" in ev.warnings[-1]
    with (tmp_path / "ev" / "skipped.csv").open() as fh:
        assert [r["file"] for r in csv.DictReader(fh)] == [f.path for f in res.skipped]
    strict = open_folder(root, preprocessing=PRE, strict=True)
    with pytest.raises(
        DataFileError, match=r"(?i)cannot decode .*rocket_2\.jpg .*truncated.*strict"
    ):
        clean_accuracy(model, strict, batch_size=4)


def test_cli_skips_and_lists_corrupt_files_or_stops_with_strict(
    model: nn.Module, photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(photo_folder, tmp_path)
    _break(root)
    model_file = tmp_path / "model.pt"
    torch.save(model, model_file)
    factory = tmp_path / "net.py"
    factory.write_text(
        "import torch\n\ndef build():\n"
        f"    return torch.load({str(model_file)!r}, weights_only=False)\n"
    )
    argv = [
        "evaluate",
        "--model",
        f"{factory}:build",
        "--input-size",
        "32",
        "28",
        "--resize",
        "36",
        "--data",
        str(root),
        "--workers",
        "0",
        "--quiet",
    ]
    assert main([*argv, "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert "2 file(s) of photos could not be read and were left out" in err
    payload = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert payload["skipped"]["count"] == 2 and payload["clean"]["n"] == 8
    assert [f["path"] for f in payload["skipped"]["files"]] == [
        "n04008634/rocket_2.jpg",
        "n07920052/notes.png",
    ]
    assert main([*argv, "--strict"]) == 1
    assert "strict: stopped at the first unreadable file" in capsys.readouterr().err


# --------------------------------------------------------------------------- --limit


def test_limit_reads_only_the_chosen_files(
    photo_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import robustlens.data.files as files_module

    decoded: list[str] = []
    real = files_module._decode

    def counting(path: str, pre: Preprocessing) -> Tensor:
        decoded.append(Path(path).name)
        return real(path, pre)

    monkeypatch.setattr(files_module, "_decode", counting)
    files = open_folder(photo_folder, preprocessing=PRE)
    chosen = files.subset(4, seed=5)
    memory = load_folder(photo_folder, preprocessing=PRE).subset(4, seed=5)
    assert decoded == []  # drawing the sample reads no file
    assert torch.equal(chosen.y, memory.y) and chosen.class_counts().tolist() == [2, 1, 1]
    assert torch.equal(in_memory(chosen).x, memory.x)
    assert sorted(decoded) == sorted(Path(f).name for f in chosen.files)
