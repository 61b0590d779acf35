"""The command line: exit codes 0 / 1 / 2, output files, help text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustlens.cli import main

EVAL = ["evaluate", "--model", "digits-cnn", "--quiet"]


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("zoo", "train", "evaluate", "audit"):
        assert command in out


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["zoo"]) == 2
    assert "list" in capsys.readouterr().err


def test_zoo_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"fmnist-cnn", "digits-cnn"}
    assert main(["zoo", "list"]) == 0
    assert "digits-cnn" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["evaluate", "--model", "fmnist_cnn"], "did you mean 'fmnist-cnn'"),
        (["evaluate", "--model", "digits-cnn", "--data", "digitz"], "did you mean 'digits'"),
        (["evaluate", "--limit", "0"], "expected an integer >= 1"),
        (["evaluate", "--no-such-option"], "unrecognized arguments"),
        (["train", "--arch", "convnet"], "the following arguments are required: --out"),
        (["train", "--arch", "convnett", "--out", "x.pt"], "did you mean 'convnet'"),
        (["train", "--epochs", "0", "--out", "x.pt"], "expected an integer >= 1"),
        ([*EVAL, "--attack", "pgdd", "--eps", "0.1"], "did you mean 'pgd'"),
        ([*EVAL, "--attack", "pgd", "--eps", "-1"], "'eps' must be a float > 0, got -1.0"),
        (
            [*EVAL, "--attack", "pgd", "--eps", "0.1", "--attack-option", "gamma=2"],
            "takes no argument 'gamma'",
        ),
    ],
)
def test_bad_usage_exits_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    assert code == 2
    assert fragment in capsys.readouterr().err


def test_failed_run_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    assert main(["evaluate", "--model", str(tmp_path / "broken.pt"), "--data", "digits"]) == 1
    assert "corrupt, truncated, or not written by torch.save" in capsys.readouterr().err
    assert main(["evaluate", "--model", "digits-cnn", "--data", "cifar10", "--quiet"]) == 1
    assert "cifar10 needs --data-root DIR" in capsys.readouterr().err


def test_evaluate_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", "digits-cnn", "--quiet", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["data"] == "digits" and res["clean"]["n"] == 450
    assert res["clean"]["accuracy"] >= 0.97
    assert sum(map(sum, res["clean"]["confusion"])) == 450
    assert "accuracy: " in capsys.readouterr().out


def test_evaluate_under_attack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "evaluate",
        "--model",
        "digits-cnn",
        "--limit",
        "60",
        "--quiet",
        "--attack",
        "fgsm",
        "--attack",
        "pgd",
        "--eps",
        "0.1",
        "--steps",
        "5",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    rob = res["robustness"]
    assert set(rob["per_attack"]) == {"FGSM(eps=0.1)", "PGD(eps=0.1, steps=5)"}
    assert rob["robust_accuracy"] <= min(a["robust_accuracy"] for a in rob["per_attack"].values())
    assert (tmp_path / "samples.csv").read_text().count("\n") == 61
    assert "robust accuracy (worst case over 2 attacks)" in capsys.readouterr().out


def test_train_then_evaluate_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "lin.pt"
    assert (
        main(
            [
                "train",
                "--arch",
                "linear",
                "--data",
                "digits",
                "--epochs",
                "2",
                "--quiet",
                "--out",
                str(ckpt),
            ]
        )
        == 0
    )
    assert main(["evaluate", "--model", str(ckpt), "--quiet"]) == 0


def test_train_init_starts_from_given_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from robustlens.models import read_checkpoint

    base = ["train", "--arch", "linear", "--data", "digits", "--quiet"]
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main([*base, "--epochs", "2", "--out", str(first)]) == 0
    # A learning rate of 1e-12 leaves the starting weights as they are.
    argv = [*base, "--epochs", "1", "--lr", "1e-12", "--init", str(first), "--out", str(second)]
    assert main(argv) == 0
    a, b = read_checkpoint(first), read_checkpoint(second)
    for key, value in a["state_dict"].items():
        assert torch.allclose(b["state_dict"][key], value, atol=1e-6), key
    assert b["meta"]["init"] == str(first)
    # Weights of another architecture are refused with the fix.
    assert main([*base, "--init", "digits-cnn", "--out", str(tmp_path / "c.pt")]) == 2
    assert "use the same --arch" in capsys.readouterr().err


def test_audit_writes_results(tmp_path: Path) -> None:
    suite = tmp_path / "suite.toml"  # the default attacks, fewer images for the other sections
    suite.write_text(
        "[whitebox]\nmin_norm_limit = 30\n[blackbox]\nimages = 4\nqueries = 200\n"
        "[explanations]\nimages = 2\nsamples = 200\n[bias]\ncorruption_images = 50\n"
    )
    argv = [
        "audit",
        "--model",
        "digits-cnn",
        "--quiet",
        "--attack-limit",
        "60",
        "--config",
        str(suite),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["data"] == "digits" and res["sections"]["clean"]["accuracy"] >= 0.97
    assert res["meta"]["robustlens"] and res["meta"]["device"] == "cpu"
    wb = res["sections"]["whitebox"]
    assert wb["n"] == 60 and wb["eps"] == 0.1
    ev = wb["evaluation"]
    assert ev["robust_accuracy"] <= min(a["robust_accuracy"] for a in ev["per_attack"].values())
    curves = wb["accuracy_vs_l2_normalized"]
    assert [c["label"] for c in curves] == ["DeepFool", "CarliniWagner"]
    for curve in curves:
        assert curve["accuracy"] == sorted(curve["accuracy"], reverse=True)
    sweep = wb["pgd_accuracy_vs_eps"]
    assert sweep["budgets"] == [0.01, 0.02, 0.05, 0.1, 0.2, 0.3]
    assert sweep["accuracy"] == sorted(sweep["accuracy"], reverse=True)


def test_console_script_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "robustlens.cli", "evaluate", "--model", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr


def test_train_adversarial_records_its_config(tmp_path: Path) -> None:
    ckpt = tmp_path / "adv.pt"
    argv = ["train", "--arch", "linear", "--data", "digits", "--epochs", "1", "--quiet"]
    argv += ["--adversarial", "fast", "--eps", "0.05", "--lipschitz", "parseval"]
    assert main([*argv, "--out", str(ckpt)]) == 0
    from robustlens.models import read_checkpoint

    meta = read_checkpoint(ckpt)["meta"]
    adv = meta["config"]["adversarial"]
    assert (adv["method"], adv["eps"], adv["lipschitz"]) == ("fast", 0.05, "parseval")
    assert len(meta["history"]["guard_robust_accuracy"]) == 1


def test_audit_defense_flags_jpeg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["audit-defense", "--model", "digits-cnn", "--defense", "jpeg", "--quiet"]
    argv += [
        "--defense-option",
        "quality=60",
        "--limit",
        "20",
        "--steps",
        "5",
        "--ensemble-steps",
        "5",
    ]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "robustness claim not supported" in out and "BPDA(PGD" in out
    saved = json.loads((tmp_path / "defense_audit.json").read_text())
    assert saved["defenses"] == ["JPEG(quality=60)"]
    assert not saved["audit"]["supported"]
    assert main([*argv[:-4], "--defense-option", "qualty=60"]) == 2
    assert "takes no argument 'qualty'; it takes quality" in capsys.readouterr().err


def test_attack_ensemble_on_the_command_line_is_the_standard_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*EVAL, "--limit", "20", "--attack", "ensemble", "--eps", "0.1", "--steps", "3",
            "--attack-option", "square_queries=50"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Ensemble[APGD(eps=0.1, steps=3), APGD(eps=0.1, steps=3, loss=dlr, targets=9), Square" in out


def test_per_class_accuracies_stay_readable_for_1000_classes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An ImageNet-layout folder gives 1000 classes, most without an image: the terminal shows
    the weakest and strongest five of those with images and says where the rest are."""
    from robustlens.cli import _print_per_class

    rates: list[tuple[str, float | None]] = [(f"c{i}", None) for i in range(1000)]
    for i in range(30):
        rates[10 * i] = (f"c{10 * i}", i / 30)
    _print_per_class(rates, "run")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 2 * 5 + 1
    assert lines[0].strip() == "the 5 weakest of 30 classes:"
    assert lines[1].split() == ["c0", "0.0000"] and lines[7].split() == ["c290", "0.9667"]
    assert lines[-2].split() == ["c250", "0.8333"]  # the strongest first
    assert "every class in run/results.json" in lines[-1]
    assert "970 of the model's 1000 classes have no image" in lines[-1]
    # Up to 20 classes with images: every one, in the model's order, and no note.
    _print_per_class([("shirt", 0.5), ("coat", None), ("bag", 1.0)], None)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines[:2]] == [["shirt", "0.5000"], ["bag", "1.0000"]]
    assert lines[2].strip() == "(1 of the model's 3 classes have no image)"
    _print_per_class([("shirt", None)], None)
    assert capsys.readouterr().out.strip() == "(1 of the model's 1 classes have no image)"
