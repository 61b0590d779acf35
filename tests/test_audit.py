"""The audit suite: its TOML configuration, resuming, verdicts, and the command end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image as PILImage

import robustlens as rl
from robustlens._images import image_refs, load_image, load_images
from robustlens.cli import main
from robustlens.errors import ParameterError
from robustlens.evaluation.config import SuiteConfig
from robustlens.evaluation.suite import run_suite, success_vs_queries
from robustlens.report import render_html

SMALL = {
    "data": {"attack_limit": 40},
    "whitebox": {
        "attacks": ["fgsm", "pgd"],
        "steps": 5,
        "min_norm": ["deepfool"],
        "min_norm_limit": 20,
        "eps_curve": [0.05, 0.1],
        "gallery": 3,
    },
    "blackbox": {"images": 4, "queries": 200},
    "explanations": {"images": 2, "samples": 200, "stability_seeds": 2},
    "bias": {
        "corruption_images": 60,
        "severities": [1, 5],
        "shape_stimuli": 60,
        "superpixel_images": 4,
        "superpixel_samples": 100,
        "ambiguous": 3,
    },
}


def test_config_defaults_quick_and_overrides() -> None:
    full, quick = SuiteConfig(), SuiteConfig.quick()
    assert full.whitebox.eps == 0.1 and full.defenses.names == ()
    assert quick.data.attack_limit < full.data.attack_limit
    assert quick.blackbox.queries <= full.blackbox.queries
    cfg = SuiteConfig.from_dict({"seed": 3, "defenses": {"names": ["jpeg"]}}, base=quick)
    assert cfg.seed == 3 and cfg.defenses.names == ("jpeg",)
    assert cfg.data == quick.data  # untouched sections keep the base's values
    assert SuiteConfig.from_dict(cfg.to_dict()) == cfg  # round trip through the JSON form
    # ImageNet-sized images: every sample at most the 28x28 quick one's, the same data limit.
    large = SuiteConfig.quick((3, 224, 224))
    assert SuiteConfig.quick((3, 64, 64)) == quick and SuiteConfig.quick((1, 28, 28)) == quick
    assert large.data.limit == quick.data.limit and large.whitebox.steps == 10
    for section, key in [("data", "attack_limit"), ("whitebox", "min_norm_limit"),
                         ("blackbox", "images"), ("blackbox", "queries"),
                         ("explanations", "samples"), ("bias", "corruption_images"),
                         ("bias", "superpixel_samples"), ("defenses", "images")]:
        small, big = getattr(getattr(quick, section), key), getattr(getattr(large, section), key)
        assert big < small, (section, key)


def test_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "suite.toml"
    path.write_text(
        'seed = 7\n[whitebox]\neps = 0.05\nattacks = ["pgd", "ensemble"]\n'
        "eps_curve = [0.2, 0.1]\n[bias]\nseverities = [5, 1]\n"
    )
    cfg = SuiteConfig.from_toml(path)
    assert (cfg.seed, cfg.whitebox.eps, cfg.whitebox.attacks) == (7, 0.05, ("pgd", "ensemble"))
    assert cfg.whitebox.eps_curve == (0.1, 0.2) and cfg.bias.severities == (1, 5)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"whitebx": {}}, "unknown section 'whitebx'; did you mean 'whitebox'"),
        ({"whitebox": {"epz": 0.1}}, r"\[whitebox\]: unknown key 'epz'; did you mean 'eps'"),
        ({"whitebox": {"eps": -0.1}}, "'eps' must be a finite number > 0, got -0.1"),
        ({"whitebox": {"attacks": ["pgdd"]}}, "unknown name 'pgdd'; did you mean 'pgd'"),
        ({"whitebox": {"attacks": []}}, "'attacks' is empty"),
        ({"blackbox": {"images": 2.5}}, "'images' must be an integer >= 1"),
        ({"defenses": {"names": ["jpg"]}}, "did you mean 'jpeg'"),
        ({"bias": {"severities": [0, 6]}}, "'severities' must be a list of 1..5"),
        ({"bias": {"enabled": "yes"}}, "'enabled' must be true or false"),
        ({"seed": "0"}, "'seed' must be an integer"),
    ],
)
def test_config_errors(raw: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        SuiteConfig.from_dict(raw)


def test_run_suite_checks_before_running(tmp_path: Path) -> None:
    model, ds = rl.zoo.load("digits-cnn"), rl.data.load("digits")[:20]
    with pytest.raises(ParameterError, match="resume=True needs the out= folder"):
        run_suite(model, ds, SuiteConfig(), resume=True)
    quilt = SuiteConfig.from_dict({"defenses": {"names": ["quilting"]}})
    with pytest.raises(ParameterError, match="builds its database from clean training images"):
        run_suite(model, ds, quilt)
    base = SuiteConfig.from_dict({"bias": {"baseline": "fmnist-cnnn"}})
    with pytest.raises(ParameterError, match="neither a zoo model"):
        run_suite(model, ds, base, out=tmp_path)
    assert not (tmp_path / ".robustlens" / "sections" / "clean.json").exists()


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="does not exist"):
        SuiteConfig.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[whitebox\neps = 1")
    with pytest.raises(ParameterError, match="not valid TOML"):
        SuiteConfig.from_toml(bad)


def test_success_vs_queries_counts_within_budget() -> None:
    ds = rl.data.load("digits")[:6]
    oracle = rl.blackbox.Oracle(rl.zoo.load("digits-cnn"), output="probs", budget=300)
    res = rl.blackbox.NES(eps=0.3, max_queries=300)(oracle, ds.x, ds.y)
    curve = success_vs_queries(res, 300, points=31)
    rates = curve["success_rate"]
    assert rates == sorted(rates) and rates[0] == 0.0
    ok = res.success & res.attacked
    within = int((ok & (res.queries <= 150)).sum()) / int(res.attacked.sum())
    assert rates[15] == pytest.approx(within)


def test_run_suite_resumes_finished_sections(tmp_path: Path) -> None:
    model = rl.zoo.load("digits-cnn")
    ds = rl.data.load("digits")[:120]
    cfg = SuiteConfig.from_dict(
        {**SMALL, "explanations": {"enabled": False}, "bias": {"enabled": False}}
    )
    messages: list[str] = []
    first = run_suite(model, ds, cfg, out=tmp_path, log=messages.append)
    assert set(first) == {"clean", "whitebox", "blackbox"}
    stamps = {
        p.name: p.stat().st_mtime_ns for p in (tmp_path / ".robustlens" / "sections").iterdir()
    }
    messages.clear()
    again = run_suite(model, ds, cfg, out=tmp_path, resume=True, log=messages.append)
    assert again == json.loads(json.dumps(first))
    assert sum("reused" in m for m in messages) == 3
    assert stamps == {
        p.name: p.stat().st_mtime_ns for p in (tmp_path / ".robustlens" / "sections").iterdir()
    }
    # A changed setting reruns only the sections it touches.
    changed = SuiteConfig.from_dict({"blackbox": {"queries": 100}}, base=cfg)
    messages.clear()
    run_suite(model, ds, changed, out=tmp_path, resume=True, log=messages.append)
    assert sum("reused" in m for m in messages) == 2
    assert any("settings changed" in m for m in messages)
    # A changed budget reruns the attacks that use it, the white-box evaluation in a fresh
    # scratch folder (no clash with the rows of the earlier budget); other images rerun every
    # attack section.
    messages.clear()
    eps = SuiteConfig.from_dict({"whitebox": {"eps": 0.05}}, base=cfg)
    assert run_suite(model, ds, eps, out=tmp_path, resume=True, log=messages.append)
    assert [m for m in messages if "reused" in m] == ["clean: reused from the earlier run"]
    messages.clear()
    fewer = SuiteConfig.from_dict({"data": {"attack_limit": 20}}, base=cfg)
    again = run_suite(model, ds, fewer, out=tmp_path, resume=True, log=messages.append)
    assert [m for m in messages if "reused" in m] == ["clean: reused from the earlier run"]
    assert again["whitebox"]["n"] == 20
    # Without resume every section runs again.
    messages.clear()
    run_suite(model, ds, cfg, out=tmp_path, log=messages.append)
    assert not any("reused" in m for m in messages)


def test_audit_command_writes_report(tmp_path: Path) -> None:
    suite = tmp_path / "suite.toml"
    lines = []
    for name, table in SMALL.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    suite.write_text("\n".join(lines) + "\n")
    out = tmp_path / "audit"
    argv = ["audit", "--model", "digits-cnn", "--config", str(suite), "--quiet", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["whitebox"]["attacks"] == ["fgsm", "pgd"]
    assert set(res["sections"]) == {"clean", "whitebox", "blackbox", "explanations", "bias"}
    wb = res["sections"]["whitebox"]
    assert wb["n"] == 40 and len(wb["gallery"]) == 3
    curve = wb["accuracy_vs_l2_normalized"][0]
    assert curve["accuracy"] == sorted(curve["accuracy"], reverse=True)
    assert res["verdicts"] and all(v["level"] in ("ok", "warn", "bad") for v in res["verdicts"])
    bias = res["sections"]["bias"]
    assert {
        "corruptions",
        "random_vs_adversarial",
        "ambiguous",
        "superpixels",
    } <= set(bias)
    assert bias["corruptions"]["severities"] == [1, 5]
    # Fashion-MNIST's classes are not the cue-conflict shapes: skipped with the reason, and no
    # other model's bias reported in its place.
    assert "shape_bias" not in bias
    assert bias["shape_bias_note"]["note"].startswith("skipped: the audited model does not")
    assert set(bias["superpixels"]["classes"]) == set(res["sections"]["clean"]["classes"])
    # Superpixel statistics without a mask: calibrated notes, never a warning.
    assert bias["superpixels"]["flags"] == [] and bias["superpixels"]["tests"] > 0
    # Each explanation names its class's role and carries its trust flags and baseline.
    names = res["sections"]["clean"]["classes"]
    for item in res["sections"]["explanations"]["items"]:
        assert item["target"] == item["prediction"] and item["pred"] == names[item["prediction"]]
        assert 0 <= item["random_deletion_auc"] <= 1 and item["output_std"] > 0
        assert all(isinstance(w, str) and w for w in item["warnings"])
    # One clean accuracy per population, each with its image count, in the first finding.
    clean, wb = res["sections"]["clean"], res["sections"]["whitebox"]
    first = res["verdicts"][0]["text"]
    assert first.startswith("Clean accuracy is ") and f"on the {clean['n']} test images" in first
    assert f"on the {wb['evaluation']['n']} attacked images (white-box)" in first
    assert sum(v["text"].startswith("Clean accuracy") for v in res["verdicts"]) == 1
    html = (out / "index.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "https://" not in html
    for section in res["sections"]:
        assert f'id="{section}"' in html


def _pixel_lists(value: Any, path: str = "") -> list[str]:
    """Where ``value`` holds a list nested three deep whose innermost items are numbers (an image
    written out as lists)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _pixel_lists(v, f"{path}.{k}")]
    if isinstance(value, list):
        deep = [
            w
            for v in value
            if isinstance(v, list)
            for u in v
            if isinstance(u, list)
            for w in u
            if isinstance(w, int | float) and not isinstance(w, bool)
        ]
        if deep:
            return [path]
        return [p for i, v in enumerate(value) for p in _pixel_lists(v, f"{path}[{i}]")]
    return []


def _data_uris(page: str) -> int:
    return page.count('<img src="data:image/png;base64,')


def _inline(value: Any) -> Any:
    """``value`` with every tensor as nested lists (results as they were written before images
    went to files)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _inline(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline(v) for v in value]
    return value


def test_audit_results_hold_numbers_and_images_are_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(
        "".join(
            f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
            for name, table in SMALL.items()
        )
    )
    out = tmp_path / "audit"
    argv = ["audit", "--model", "digits-cnn", "--config", str(suite), "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    text = (out / "results.json").read_text()
    res = json.loads(text)
    sections = res["sections"]
    # Numbers only: no image as nested lists, every picture a path to a PNG file beside it.
    assert _pixel_lists(res) == []
    assert len(text) < 150_000  # 180 KB with the 53 tiny images inline (33 MB at 224 x 224)
    wb, ex, bias = sections["whitebox"], sections["explanations"], sections["bias"]
    images = [(it, key) for it in wb["gallery"] for key in ("x", "x_adv")]
    images += [(it, "image") for it in ex["items"] + bias["ambiguous"]["items"]]
    examples = [e for exs in bias["superpixels"]["examples"].values() for e in exs]
    images += [(e, "image") for e in examples]
    maps = [(it, "segments") for it in ex["items"]] + [(e, "top") for e in examples]
    assert (len(wb["gallery"]), len(ex["items"]), len(bias["ambiguous"]["items"])) == (3, 2, 3)
    refs = image_refs(res)
    assert sorted(refs) == sorted(it[key] for it, key in images + maps)
    assert len(set(refs)) == len(refs) and all(r.startswith("images/") for r in refs)
    for kind, shape, mode, dtype in (
        (images, (1, 8, 8), "L", torch.float32),  # 8-bit grey
        (maps, (8, 8), "I;16", torch.int64),  # 16-bit label maps
    ):
        for item, key in kind:
            with PILImage.open(out / item[key]) as png:  # a real PNG, 8 x 8 like the digits
                assert (png.format, png.size, png.mode) == ("PNG", (8, 8), mode)
            x = load_image(item[key], out)
            assert x.shape == shape and x.dtype == dtype
            assert float(x.min()) >= 0 and float(x.max()) <= (1 if kind is images else 64)
    for e in examples:  # the top-superpixel masks are 0/1
        assert set(load_image(e["top"], out).unique().tolist()) <= {0, 1}
    for it in ex["items"]:  # one weight per superpixel id
        assert int(load_image(it["segments"], out).max()) == len(it["weights"]) - 1
    # The images are the right ones, to 8 bits: the ambiguous images are the test images, the
    # gallery's perturbations lie in the Linf ball and have the recorded L2 norm.
    test = rl.data.load("digits", split="test")
    for it in bias["ambiguous"]["items"]:
        got = load_image(it["image"], out)
        assert float((got - test.x[it["index"]]).abs().max()) <= 0.5 / 255 + 1e-6
    for it in wb["gallery"]:
        d = load_image(it["x_adv"], out) - load_image(it["x"], out)
        assert 0 < float(d.abs().max()) <= wb["eps"] + 1 / 255 + 1e-6
        assert float(d.norm()) == pytest.approx(it["l2"], abs=8 / 255)
    # The report reads the files and embeds every figure: the same page as from inline pixels.
    page = (out / "index.html").read_text()
    assert _data_uris(page) >= 7  # gallery, 2 x 2 explanations, superpixel examples, ambiguous
    assert "images/" not in page
    before = render_html(_inline(load_images(res, out)))
    assert _data_uris(page) == _data_uris(before) and page == before
    with pytest.raises(ParameterError, match="render_html: the results reference the image file"):
        render_html(res)
    # --resume reuses every section with its images; a section whose image is gone runs again.
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    assert sum("reused from the earlier run" in m for m in err.splitlines()) == 5
    assert json.loads((out / "results.json").read_text())["sections"] == sections
    gone = wb["gallery"][0]["x_adv"]
    (out / gone).unlink()
    assert main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"whitebox: 1 of its image files are missing ({gone}), running again" in err
    assert sum("reused from the earlier run" in m for m in err.splitlines()) == 4
    again = json.loads((out / "results.json").read_text())
    assert (out / gone).is_file() and sorted(image_refs(again)) == sorted(refs)
    assert _data_uris((out / "index.html").read_text()) == _data_uris(page)


def test_bias_section_with_a_planted_patch_tests_it_as_the_mask() -> None:
    """With [bias] cue = "patch", the superpixel statistics explain the test images carrying
    their class's patch, the patch as the mask (what a warning needs)."""
    from robustlens.evaluation.suite import bias_section

    model, ds = rl.zoo.load("digits-cnn"), rl.data.load("digits")[:120]
    bias = {
        **SMALL["bias"],
        "cue": "patch",
        "shape_bias": False,
        "ambiguous": 0,
        "severities": [1],
        "corruption_images": 10,
        "superpixel_images": 2,
        "superpixel_samples": 60,
    }
    cfg = SuiteConfig.from_dict({"bias": bias})
    out = bias_section(model, ds, cfg, log=lambda _: None)
    sp = out["superpixels"]
    assert sp["data"].startswith("test images with the planted patch of their class")
    assert all(c["mask_overlap"] is not None for c in sp["classes"].values())
    assert set(sp["classes"]["0"]["attributes"]) >= {"position", "mask"}
    assert out["cue_reliance"]["kind"] == "patch" and out["cue_reliance"]["n"] == 120


def test_superpixel_statistics_study_a_seeded_draw_of_classes_when_there_are_many() -> None:
    """A 1000-class data set would mean 30 explanations for each of 1000 classes: the audit
    studies [bias] superpixel_classes of them, drawn with the seed, and says so."""
    from robustlens.evaluation.suite import _classes_studied, bias_section

    model, ds = rl.zoo.load("digits-cnn"), rl.data.load("digits")[:120]
    assert _classes_studied(ds, 10, 0) is None  # 10 classes: all of them
    drawn = _classes_studied(ds, 3, 0)
    assert drawn is not None and len(drawn) == 3 and drawn == sorted(drawn)
    assert drawn == _classes_studied(ds, 3, 0) and drawn != _classes_studied(ds, 3, 1)
    bias = {
        **SMALL["bias"],
        "shape_bias": False,
        "ambiguous": 0,
        "severities": [1],
        "corruption_images": 10,
        "superpixel_images": 2,
        "superpixel_samples": 40,
        "superpixel_classes": 3,
    }
    out = bias_section(model, ds, SuiteConfig.from_dict({"bias": bias}), log=lambda _: None)
    sp = out["superpixels"]
    assert sorted(sp["classes"]) == sorted(ds.classes[k] for k in drawn)
    assert sp["data"] == "3 of the data set's 10 classes, drawn at random (seed 0; [bias] " \
        "superpixel_classes sets how many)"


def test_the_audit_attacks_at_most_attack_batch_images_at_a_time(monkeypatch: Any) -> None:
    """Large images are attacked a few at a time (64 at 224x224): every gradient pass of the
    white-box section and of the noise comparison holds at most ``attack_batch`` images, and the
    numbers are those of one batch."""
    import robustlens.evaluation.defaults as defaults

    model = rl.zoo.load("digits-cnn")
    ds = rl.data.load("digits")[:40]
    cfg = SuiteConfig.from_dict(
        {
            **SMALL,
            "blackbox": {"enabled": False},
            "explanations": {"enabled": False},
            "bias": {
                "corruption_images": 12,
                "severities": [1],
                "shape_bias": False,
                "superpixel_images": 0,
                "ambiguous": 0,
            },
        }
    )
    whole = run_suite(model, ds, cfg, show_progress=False)
    monkeypatch.setattr(defaults, "ATTACK_BATCH_ELEMENTS", 6 * 64)  # six 8x8 images
    assert defaults.attack_batch(ds.shape) == 6
    held: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _m, args: held.append(len(args[0])) if torch.is_grad_enabled() else None
    )
    parts = run_suite(model, ds, cfg, show_progress=False)
    hook.remove()
    assert held and max(held) <= 6
    for name in ("whitebox", "bias"):
        a, b = dict(whole[name]), dict(parts[name])
        a.pop("seconds"), b.pop("seconds")
        _assert_close(a, b, name)


def _assert_close(a: Any, b: Any, where: str) -> None:
    """Equal structure and labels; numbers and tensors equal up to float rounding (a batch of
    another size rounds a distance's last digits differently)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _assert_close(u, v, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=where)
    elif isinstance(a, float) and not isinstance(b, str):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6, nan_ok=True), where
    else:
        assert a == b, where
