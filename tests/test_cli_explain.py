"""``robustlens explain``: output files, printed summary, --image, usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import robustlens as rl
from robustlens.cli import main

BASE = ["explain", "--model", "digits-cnn", "--samples", "120", "--K", "3", "--quiet"]


def test_explain_writes_json_and_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = [*BASE, "--index", "4", "--output", "logits", "--segmenter", "grid", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "top" in text and "r2" in text and "ess" in text and "deletion AUC" in text
    payload = json.loads((out / "explanation.json").read_text())
    exp = rl.explain.Explanation.from_dict(payload["explanation"])
    ds = rl.data.load("digits", split="test")
    assert payload["index"] == 4 and payload["label"] == int(ds.y[4])
    # The explained class is named, with its role: by default the model's prediction.
    label = int(ds.y[4])
    assert exp.target == exp.prediction
    role = "the label" if exp.target == label else f"not the label ({label})"
    assert (
        f"explained class: {exp.label} (index {exp.target}): the model's prediction, {role}; "
        "by default the prediction" in text
    )
    assert payload["explained"] == {
        "class": exp.target,
        "name": exp.label,
        "prediction": exp.prediction,
        "is_prediction": True,
        "is_label": exp.target == label,
        "given": False,
    }
    # Every trust flag is printed and kept; the last line counts them.
    flags = payload["warnings"]
    assert flags == [*exp.warnings, *payload["faithfulness"]["warnings"]]
    assert all(f"warning: {w}" in text for w in flags)
    assert (f"trust: {len(flags)} warning(s)" if flags else "trust: no warning") in text
    assert f"random order {payload['faithfulness']['random_deletion_auc']:.4f}" in text
    assert f"gap {exp.gap:.4f} = {exp.relative_gap:.2f} standard deviations" in text
    np.testing.assert_allclose(exp.image.numpy(), ds.x[4].numpy(), atol=5e-5)
    assert exp.num_segments == 16 and exp.K == 3 and exp.output == "logits"
    assert exp.class_names == tuple(ds.classes)
    for i in exp.top_ids().tolist():
        assert f"{i:>4}: {exp.weights[i].item():+.4f}" in text
    assert 0.0 <= payload["faithfulness"]["deletion_auc"] <= 1.0
    for name in ("explanation.png", "path.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size[0] > 300


def test_explain_names_another_target_as_not_the_prediction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = rl.data.load("digits", split="test")
    label = int(ds.y[4])
    other = (label + 1) % 10
    out = tmp_path / "run"
    args = [*BASE, "--index", "4", "--segmenter", "grid", "--target", str(other), "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    payload = json.loads((out / "explanation.json").read_text())
    pred = payload["explained"]["prediction"]
    assert payload["explained"]["class"] == other and payload["explained"]["given"] is True
    assert payload["explained"]["is_label"] is False
    assert pred == label != other  # the zoo's digits model gets this image right
    assert payload["explained"]["is_prediction"] is False
    said = f"explained class: {other} (index {other}): not the model's prediction ({pred})"
    assert said in text and f"not the label ({label}); given by --target" in text


def test_explain_an_image_file(tmp_path: Path) -> None:
    rgb = (np.random.default_rng(0).random((30, 20, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    out = tmp_path / "run"
    assert main([*BASE, "--image", str(tmp_path / "photo.png"), "--out", str(out)]) == 0
    payload = json.loads((out / "explanation.json").read_text())
    image = np.array(payload["explanation"]["image"])
    assert image.shape == (1, 8, 8)  # converted to the model's greyscale 8x8
    assert payload["image"].endswith("photo.png")
    assert payload["explained"]["is_label"] is None  # an image file has no label


@pytest.mark.parametrize(
    "extra,fragment,code",
    [
        (["--index", "100000"], "--index must lie in 0..", 2),
        (["--segmenter", "slick"], "invalid choice", 2),
        (["--K", "0"], "expected an integer >= 1", 2),
        (["--image", "/no/such/file.png"], "cannot read image", 2),
    ],
)
def test_explain_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str, code: int
) -> None:
    argv = [*BASE, *extra, "--out", str(tmp_path / "x")]
    if code == 2 and fragment in ("invalid choice", "expected an integer >= 1"):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    else:
        assert main(argv) == code
    assert fragment in capsys.readouterr().err
