"""The user's own model: one resolver for torchvision, timm, TorchScript, torch.export, user code,
bare state_dicts and pickles, with the model's preprocessing and class mapping.

Real libraries, seeded random weights (nothing can be downloaded here), small inputs (32-64 px)
so the mechanics run fast on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

import robustlens as rl
from robustlens.cli import main
from robustlens.errors import CheckpointError, LabelError, ParameterError, UnknownNameError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FACTORY = """
import torchvision

def build(num_classes=1000, width=1):
    assert width == 1
    return torchvision.models.resnet18(num_classes=num_classes)
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One seeded ResNet-18 (3 classes) saved every way a user may have it."""
    root = tmp_path_factory.mktemp("own-model")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.rand(2, 3, 48, 48)
    paths = {
        "state_dict": root / "weights.pt",
        "wrapped": root / "lightning.ckpt",
        "whole": root / "whole.pt",
        "script": root / "model.ts",
        "export": root / "model.pt2",
        "factory": root / "my_models.py",
        "text": root / "notes.pt",
    }
    torch.save(net.state_dict(), paths["state_dict"])
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3},
        paths["wrapped"],
    )
    torch.save(net, paths["whole"])
    torch.jit.save(torch.jit.trace(net, x), str(paths["script"]))
    torch.export.save(torch.export.export(net, (x,)), str(paths["export"]))  # fixed batch of 2
    paths["factory"].write_text(FACTORY)
    paths["text"].write_text("not a checkpoint")
    return paths


def _reference(x: torch.Tensor, files: dict[str, Path]) -> torch.Tensor:
    net = torchvision.models.resnet18(num_classes=3).eval()
    net.load_state_dict(torch.load(files["state_dict"], weights_only=True))
    with torch.no_grad():
        return net((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))


def test_same_logits_whichever_way_the_model_is_loaded(files: dict[str, Path]) -> None:
    x = torch.rand(5, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    want = _reference(x, files)
    norm = {"mean": MEAN, "std": STD}
    ways = {
        "torchvision": rl.models.load(
            "torchvision:resnet18", weights=files["state_dict"], num_classes=3
        ),
        "wrapped checkpoint": rl.models.load(
            "torchvision:resnet18", weights=files["wrapped"], num_classes=3
        ),
        "torchscript": rl.models.load(str(files["script"]), **norm),
        "export": rl.models.load(str(files["export"]), **norm),
        "factory file": rl.models.load(
            f"{files['factory']}:build",
            weights=files["state_dict"],
            num_classes=3,
            model_args={"width": 1},
            **norm,
        ),
        "pickle, trusted": rl.models.load(str(files["whole"]), trust_pickle=True, **norm),
    }
    for way, loaded in ways.items():
        assert not loaded.module.training, way
        with torch.no_grad():
            got = loaded.module(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"{way} differs")
    kinds = {way: loaded.kind for way, loaded in ways.items()}
    assert kinds == {
        "torchvision": "torchvision",
        "wrapped checkpoint": "torchvision",
        "torchscript": "torchscript",
        "export": "export",
        "factory file": "code",
        "pickle, trusted": "pickle",
    }
    # The exported program was traced at 48x48: its input size comes with it.
    assert ways["export"].preprocessing.input_size == (48, 48)


def test_library_models_bring_their_preprocessing() -> None:
    tv = rl.models.load("torchvision:resnet18")
    pre = tv.preprocessing
    assert (pre.input_size, pre.resize, pre.interpolation) == ((224, 224), 256, "bilinear")
    assert pre.mean == pytest.approx(MEAN) and pre.std == pytest.approx(STD)
    assert tv.classes is not None and tv.classes[1] == "goldfish" and not tv.trained
    assert any("random weights" in w for w in tv.warnings)
    timm_model = rl.models.load("timm:test_resnet", num_classes=5)
    tp = timm_model.preprocessing
    # timm's pretrained_cfg: 160 px, crop_pct 0.95 -> shorter side floor(160 / 0.95) = 168.
    assert (tp.input_size, tp.resize, tp.mean) == ((160, 160), 168, (0.5, 0.5, 0.5))
    assert timm_model.classes == [str(i) for i in range(5)]
    # Flags win over the library's metadata, and keep its crop ratio at the new size.
    small = rl.models.load("torchvision:resnet18", input_size=32)
    assert (small.preprocessing.input_size, small.preprocessing.resize) == ((32, 32), 36)
    assert small.preprocessing.source.startswith("flags over torchvision")


def test_timm_model_weights_and_logits(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=4).eval()
    torch.save(net.state_dict(), tmp_path / "t.pt")
    loaded = rl.models.load("timm:test_resnet", num_classes=4, weights=tmp_path / "t.pt")
    x = torch.rand(3, 3, 40, 40)
    with torch.no_grad():
        want = net((x - 0.5) / 0.5)
        got = loaded.module(x)
    torch.testing.assert_close(got, want)
    assert loaded.trained and not loaded.warnings


@pytest.mark.parametrize(
    ("spec", "kwargs", "error", "fragment"),
    [
        ("whole", {}, CheckpointError, "pass --trust-pickle"),
        ("whole", {}, CheckpointError, r"torch.save\(model.state_dict\(\)"),
        ("state_dict", {}, CheckpointError, "bare state_dict .*--model torchvision:NAME --weights"),
        ("text", {}, CheckpointError, "not a readable checkpoint"),
        ("torchvision:resnet19", {}, UnknownNameError, "did you mean 'torchvision:resnet18'"),
        ("timm:resnet181", {}, UnknownNameError, "did you mean 'timm:resnet18"),
        ("my_models_missing.nets:build", {}, UnknownNameError, "cannot import module"),
        ("factory:buildd", {}, UnknownNameError, "no callable 'buildd'; did you mean 'build'"),
        (
            "torchvision:resnet18",
            {"weights": "state_dict"},
            CheckpointError,
            "its classifier has 3 outputs: pass --num-classes 3",
        ),
        ("script", {"weights": "state_dict"}, ParameterError, "carries its own weights"),
        ("torchvision:resnet18", {"mean": MEAN}, ParameterError, "give both --mean and --std"),
        ("fmnist-cn", {}, UnknownNameError, "did you mean 'fmnist-cnn'"),
    ],
)
def test_every_refusal_says_what_works(
    files: dict[str, Path], spec: str, kwargs: dict, error: type, fragment: str
) -> None:
    if spec in files:
        spec = str(files[spec])
    elif spec.startswith("factory:"):
        spec = f"{files['factory']}:{spec.split(':')[1]}"
    kwargs = {k: (files[v] if isinstance(v, str) and v in files else v) for k, v in kwargs.items()}
    with pytest.raises(error, match=fragment):
        rl.models.load(spec, **kwargs)


def test_class_mapping_accuracy_against_a_hand_computed_value(photo_folder: Path) -> None:
    """A 1000-class model on a folder named by WordNet ids: accuracy and confusion use the map."""
    from robustlens.data import map_to_imagenet

    loaded = rl.models.load("torchvision:resnet18", input_size=32)
    ds = rl.data.load_folder(photo_folder, preprocessing=loaded.preprocessing)
    model, classes = rl.models.map_classes(loaded.module, ds.classes, num_outputs=1000)
    assert classes == [*ds.classes, "(other)"]
    mapped = rl.data.ImageDataset(ds.x, ds.y, classes=classes, name=ds.name)
    res = rl.evaluation.clean_accuracy(model, mapped)
    # By hand: the model's own argmax over its 1000 classes against each label's ImageNet index.
    index = torch.tensor(map_to_imagenet(ds.classes))
    with torch.no_grad():
        pred = loaded.module(ds.x).argmax(1)
    assert res.accuracy == pytest.approx(float((pred == index[ds.y]).float().mean()))
    outside = ~torch.isin(pred, index)
    assert int(res.confusion[:, -1].sum()) == int(outside.sum())
    assert int(res.confusion.sum()) == len(ds)
    assert all(acc == acc for acc in res.per_class[: len(ds.classes)].tolist())  # no NaN


def test_class_map_errors() -> None:
    with pytest.raises(LabelError, match="give --class-map FILE"):
        rl.models.map_classes(torch.nn.Identity(), ["a", "b", "c"], num_outputs=7)
    with pytest.raises(LabelError, match="same model output"):
        rl.models.ClassMapped(torch.nn.Identity(), [1, 1])


SMALL_SUITE = """
[whitebox]
attacks = ["fgsm", "pgd"]
steps = 5
[explanations]
samples = 60
stability_seeds = 2
[bias]
corruption_images = 9
superpixel_images = 1
superpixel_samples = 30
ambiguous = 3
"""


@pytest.fixture(scope="module")
def cli_models(
    files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[str]]:
    """The ``--model`` options of the same kind of model loaded five ways, at 32 px."""
    import timm

    root = tmp_path_factory.mktemp("cli-models")
    torch.manual_seed(0)
    timm_net = timm.create_model("test_resnet", num_classes=3).eval()
    torch.save(timm_net.state_dict(), root / "timm.pt")
    net = torchvision.models.resnet18(num_classes=3).eval()
    net.load_state_dict(torch.load(files["state_dict"], weights_only=True))
    x = torch.rand(4, 3, 32, 32)
    torch.jit.save(torch.jit.trace(net, x), str(root / "model.ts"))
    torch.export.save(torch.export.export(net, (x,)), str(root / "model.pt2"))
    norm = ["--mean", *map(str, MEAN), "--std", *map(str, STD)]
    weights = ["--weights", str(files["state_dict"]), "--num-classes", "3"]
    return {
        "torchvision": ["--model", "torchvision:resnet18", *weights, "--input-size", "32"],
        "timm": [
            "--model",
            "timm:test_resnet",
            "--weights",
            str(root / "timm.pt"),
            "--num-classes",
            "3",
            "--input-size",
            "32",
        ],
        "torchscript": ["--model", str(root / "model.ts"), *norm, "--input-size", "32"],
        "export": ["--model", str(root / "model.pt2"), *norm],
        "factory": ["--model", f"{files['factory']}:build", *weights, *norm, "--input-size", "32"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torchvision", "timm", "torchscript", "export", "factory"])
def test_cli_evaluate_explain_audit_on_real_photos(
    kind: str,
    cli_models: dict[str, list[str]],
    photo_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each way of loading a model goes through evaluate, explain and audit --quick on a folder of
    real photos of mixed sizes, with a 3-class model on 3 folders (no class mapping needed)."""
    common = [*cli_models[kind], "--data", str(photo_folder), "--quiet"]
    assert main(["evaluate", *common, "--attack", "fgsm", "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert "Linf eps 0.0313" in err  # 32 px RGB: CIFAR's 8/255
    payload = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert payload["model_info"]["preprocessing"]["input_size"] == [32, 32]
    assert payload["model_info"]["kind"] == kind.replace("factory", "code")
    assert payload["eps"] == pytest.approx(8 / 255)
    assert payload["clean"]["n"] == 9 and len(payload["clean"]["classes"]) == 3
    assert (
        main(["explain", *common, "--index", "4", "--samples", "40", "--out", str(tmp_path / "ex")])
        == 0
    )
    exp = json.loads((tmp_path / "ex" / "explanation.json").read_text())
    assert exp["label"] == 1 and exp["model_info"]["preprocessing"]["input_size"] == [32, 32]
    config = tmp_path / "small.toml"
    config.write_text(SMALL_SUITE)
    out = tmp_path / "audit"
    assert main(["audit", *common, "--quick", "--config", str(config), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["sections"]["clean"]["n"] == 9
    assert res["sections"]["whitebox"]["eps"] == pytest.approx(8 / 255)
    assert "centre crop 32x32" in res["meta"]["preprocessing"]
    assert "skipped" in res["sections"]["bias"]["shape_bias_note"]["note"]
    assert (out / "index.html").is_file()


def test_cli_maps_a_1000_class_model_onto_the_folder(
    photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        "--model",
        "torchvision:resnet18",
        "--input-size",
        "32",
        "--data",
        str(photo_folder),
        "--quiet",
    ]
    assert main(["evaluate", *common, "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert "random weights" in err and "mapped onto the model's 1000 outputs" in err
    payload = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert payload["clean"]["classes"][-1] == "(other)"
    assert payload["model_info"]["class_map"] == [281, 744, 967]
    assert (
        main(["explain", *common, "--index", "0", "--samples", "40", "--out", str(tmp_path / "ex")])
        == 0
    )
    exp = json.loads((tmp_path / "ex" / "explanation.json").read_text())
    # The explanation is in the model's own classes: the label is the folder's ImageNet index.
    assert (exp["label"], exp["label_name"]) == (281, "n02123045")
    # The audit with its standard attacks (the ensemble included) on the mapped model.
    out = tmp_path / "audit"
    assert main(["audit", *common, "--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["sections"]["clean"]["classes"] == [*payload["clean"]["classes"]]
    assert res["verdicts"][0]["level"] == "warn" and "random weights" in res["verdicts"][0]["text"]
    assert any("chance level" in v["text"] for v in res["verdicts"])


def test_cli_needs_data_for_a_model_of_unknown_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", "torchvision:resnet18", "--quiet"]) == 2
    assert "give --data NAME" in capsys.readouterr().err


def test_cli_mismatched_model_and_data_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # digits-cnn takes 8x8 images; Fashion-MNIST's 28x28 are resized to them, so this runs; a
    # torchvision model on greyscale digits gets RGB copies. Neither ends in a torch traceback.
    code = main(
        ["evaluate", "--model", "digits-cnn", "--data", "digits", "--limit", "20", "--quiet"]
    )
    assert code == 0
    assert (
        main(
            [
                "evaluate",
                "--model",
                "torchvision:resnet18",
                "--num-classes",
                "10",
                "--input-size",
                "32",
                "--data",
                "digits",
                "--limit",
                "20",
                "--quiet",
            ]
        )
        == 0
    )
    assert "converted to the model's input 3x32x32 batch by batch" in capsys.readouterr().err


def test_default_budget_follows_the_data() -> None:
    from robustlens.evaluation.defaults import default_eps

    assert default_eps((1, 28, 28)) == 0.1
    assert default_eps((3, 32, 32)) == pytest.approx(8 / 255)
    assert default_eps((3, 224, 224)) == pytest.approx(4 / 255)


def test_clean_accuracy_refuses_unmapped_classes_and_confusion_checks_its_range() -> None:
    """A 1000-class model on a 4-class data set used to report 0% and NaN for every class."""
    ds = rl.data.ImageDataset(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]),
                              classes=["a", "b", "c", "d"], name="four")
    wide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1000))
    with pytest.raises(LabelError, match=r"map_classes\(model, ds.classes, num_outputs=1000\)"):
        rl.evaluation.clean_accuracy(wide, ds)
    with pytest.raises(LabelError, match="y_pred holds classes outside 0..3"):
        rl.evaluation.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 4)


def test_mapped_logits_keep_the_models_verdict() -> None:
    """The mapped argmax is the data class exactly when the model's own argmax is (else other)."""
    logits = torch.randn(256, 50, generator=torch.Generator().manual_seed(0))
    index = [7, 3, 41, 0]
    mapped = rl.models.ClassMapped(torch.nn.Identity(), index, num_outputs=50)(logits)
    own = logits.argmax(1)
    want = torch.full_like(own, len(index))
    for k, i in enumerate(index):
        want[own == i] = k
    assert torch.equal(mapped.argmax(1), want)


def test_apgd_ensemble_runs_on_few_classes() -> None:
    """The targeted DLR loss needs four logits to scale by; with 2 or 3 classes it falls back."""
    from robustlens.attacks.apgd import dlr_loss, dlr_targeted_loss

    z = torch.tensor([[3.0, 1.0, 0.0]])
    y, t = torch.tensor([0]), torch.tensor([1])
    assert dlr_targeted_loss(z, y, t).item() == pytest.approx(-(3 - 1) / (3 - 0))
    assert dlr_targeted_loss(z[:, :2], y, t).item() == pytest.approx(-2.0)
    assert dlr_loss(z[:, :2], y).item() == pytest.approx(-2.0)
    torch.manual_seed(0)
    model = rl.models.create("linear", in_channels=1, num_classes=3, image_size=6)
    x = torch.rand(8, 1, 6, 6)
    y = model(x).argmax(1)
    res = rl.attacks.Ensemble.standard(eps=0.3, steps=10, square_queries=0)(model, x, y)
    assert res.success_rate == 1.0  # a linear model with a 0.3 budget on 6x6 inputs


def test_corrupt_file_message_has_no_unrelated_torch_advice(files: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError) as info:
        rl.models.load(str(files["text"]))
    message = str(info.value)
    assert "torch.save(model.state_dict(), path)" in message
    assert "https://" not in message and "weights_only" not in message


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "--attack", "fgsm"],
        ["audit", "--quick"],
        ["audit-defense", "--defense", "jpeg"],
        ["explain", "--index", "0"],
    ],
)
def test_every_command_refuses_a_model_that_does_not_fit_the_data(
    command: list[str], files: dict[str, Path], photo_folder: Path, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Exit 2 before any work, with the fix, and no traceback: too few classes for the folder's
    (a 2-class model on 3 classes), then a TorchScript model traced for 48 px fed 32 px."""
    out = ["--out", str(tmp_path / "out"), "--quiet"]
    narrow = ["--model", "torchvision:resnet18", "--num-classes", "2", "--input-size", "32"]
    assert main([*command, *narrow, "--data", str(photo_folder), *out]) == 2
    err = capfd.readouterr().err
    assert "--class-map FILE" in err and "Traceback" not in err
    norm = ["--mean", *map(str, MEAN), "--std", *map(str, STD)]
    export = ["--model", str(files["export"]), *norm, "--input-size", "32"]
    assert main([*command, *export, "--data", str(photo_folder), *out]) == 2
    err = capfd.readouterr().err
    assert "cannot take" in err and "--input-size" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_missing_data_names_the_cli_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", "fmnist-cnn", "--data", "cifar10", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "--data-root DIR" in err and "root=..." not in err


def test_no_robustness_verdict_when_nothing_was_attacked() -> None:
    from robustlens.report.verdicts import derive_verdicts

    sections = {"whitebox": {"eps": 0.1, "n": 9, "evaluation": {
        "robust_accuracy": 0.0, "clean_accuracy": 0.0, "n": 9, "attacks": ["PGD"]}}}
    texts = [(v.level, v.text) for v in derive_verdicts(sections)]
    assert any(level == "warn" and "nothing to break" in t for level, t in texts)
    assert not any("not robust at this budget" in t for _, t in texts)
