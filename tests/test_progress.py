"""Progress lines: one helper (``robustlens._runtime``), drawn on stderr with an ETA for every
long step of an audit (attacks and the ensemble's members, C&W's binary search, NES, corruptions,
LIME, superpixel statistics), silenced by ``show_progress=False`` and ``--quiet``.

The lines normally appear only after :data:`PROGRESS_DELAY` seconds and redraw at most every
:data:`PROGRESS_INTERVAL` seconds; the ``drawn`` fixture sets both to 0 so that the small, fast
workloads here draw every line they would draw in a long run.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

import robustlens as rl
import robustlens._runtime as rt
from robustlens.cli import main
from robustlens.evaluation.config import SuiteConfig
from robustlens.evaluation.suite import run_suite

#: An estimate of the time left (tqdm's "?" before the first step is not one).
ETA = re.compile(r"ETA \d\d:\d\d")


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "PROGRESS_DELAY", 0.0)
    monkeypatch.setattr(rt, "PROGRESS_INTERVAL", 0.0)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, rl.data.ImageDataset]:
    return rl.zoo.load("digits-cnn"), rl.data.load("digits")


def lines(err: str, start: str) -> list[str]:
    """The redraws of the progress lines whose description starts with ``start``."""
    return [part for part in re.split(r"[\r\n]|\x1b\[A", err) if part.startswith(start)]


def assert_progress(err: str, start: str) -> list[str]:
    """A line starting with ``start`` was drawn, with an ETA; returns its redraws."""
    found = lines(err, start)
    assert found, f"no progress line {start!r} in stderr: {err[-2000:]!r}"
    assert any(ETA.search(line) for line in found), found[-3:]
    return found


# --------------------------------------------------------------------------- the switch


def test_switch_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "_interactive", lambda: False)
    monkeypatch.delenv("ROBUSTLENS_PROGRESS", raising=False)
    assert rt.progress_enabled() is False  # a log file or a pipe: off by default
    monkeypatch.setattr(rt, "_interactive", lambda: True)
    assert rt.progress_enabled() is True  # a terminal or a notebook: on
    monkeypatch.setenv("ROBUSTLENS_PROGRESS", "0")
    assert rt.progress_enabled() is False  # the environment beats the terminal
    with rt.progress_scope(True):
        assert rt.progress_enabled() is True  # a scope beats the environment
        with rt.progress_scope(None):
            assert rt.progress_enabled() is True  # None inherits
        with rt.progress_scope(False):
            assert rt.progress_enabled() is False  # the innermost scope wins
            assert rt.progress_enabled(True) is True  # an explicit show= beats every scope
    assert rt.progress_enabled() is False  # the scope ended


def test_status_draws_an_eta_on_stderr_only_when_on(
    drawn: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with rt.status("demo loop", 4, show=True) as ticker:
        assert ticker.shown
        for _ in range(4):
            ticker.tick()
        ticker.note("half way")
    out, err = capsys.readouterr()
    assert out == ""
    found = assert_progress(err, "demo loop:")
    assert any("4/4" in line for line in found)

    with rt.status("silent loop", 4, show=False) as ticker:
        assert not ticker.shown
        ticker.tick(4)
    assert ticker.n == 4  # counted, not drawn
    assert [x for x in rt.progress(range(3), desc="silent", show=False)] == [0, 1, 2]
    assert capsys.readouterr() == ("", "")


def test_a_long_step_keeps_its_line_ticking(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A step longer than the delay: the line appears during it, and keeps being redrawn.
    monkeypatch.setattr(rt, "PROGRESS_DELAY", 0.2)
    monkeypatch.setattr(rt, "PROGRESS_REFRESH", 0.05)
    seen = ""
    with rt.status("one long step", 2, show=True) as ticker:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(lines(seen, "one long step")) < 3:
            time.sleep(0.05)  # the step: no tick
            seen += capsys.readouterr().err
        ticker.tick(2)
    assert len(lines(seen, "one long step")) >= 3, "the line was not redrawn while the step ran"
    assert all("0/2 [" in line for line in lines(seen, "one long step"))  # drawn before any tick


def test_progress_option_sets_the_scope_of_the_whole_call(
    drawn: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    digits: tuple[torch.nn.Module, rl.data.ImageDataset],
) -> None:
    model, ds = digits
    monkeypatch.setenv("ROBUSTLENS_PROGRESS", "1")  # on, unless the call says otherwise
    attacks = [rl.attacks.PGD(eps=0.1, steps=5)]
    quiet = rl.evaluation.evaluate(model, ds[:24], attacks, batch_size=12, show_progress=False)
    assert capsys.readouterr().err == ""  # nor the attacks' lines inside it
    loud = rl.evaluation.evaluate(model, ds[:24], attacks, batch_size=12)  # None: inherits
    err = capsys.readouterr().err
    assert_progress(err, "evaluate:")
    assert_progress(err, "PGD(eps=0.1, steps=5) on ")
    assert quiet.rows == loud.rows  # progress changes nothing else


# --------------------------------------------------------------------------- the long steps


def test_cw_shows_its_binary_search_and_changes_nothing(
    drawn: None,
    capsys: pytest.CaptureFixture[str],
    digits: tuple[torch.nn.Module, rl.data.ImageDataset],
) -> None:
    model, ds = digits
    cw = rl.attacks.CarliniWagner(steps=10, search_steps=3, tol=0)
    with rt.progress_scope(True):
        shown = cw(model, ds.x[:8], ds.y[:8])
    err = capsys.readouterr().err
    found = assert_progress(err, "CarliniWagner(steps=10, search_steps=3, tol=0) on 8 images")
    notes = " ".join(found)
    assert "binary-search step 1/3" in notes and "binary-search step 3/3" in notes
    assert all("/30 [" in line for line in found)  # every Adam step of every search step
    with rt.progress_scope(False):
        silent = cw(model, ds.x[:8], ds.y[:8])
    assert capsys.readouterr().err == ""
    assert torch.equal(shown.x_adv, silent.x_adv) and torch.equal(shown.queries, silent.queries)


def test_ensemble_shows_each_member_below_its_own_line(
    drawn: None,
    capsys: pytest.CaptureFixture[str],
    digits: tuple[torch.nn.Module, rl.data.ImageDataset],
) -> None:
    model, ds = digits
    ens = rl.attacks.Ensemble.standard(eps=0.05, steps=5, square_queries=40)
    with rt.progress_scope(True):
        res = ens(model, ds.x[:32], ds.y[:32])
    err = capsys.readouterr().err
    outer = assert_progress(err, "Ensemble[")
    assert any("member 1/3: APGD(eps=0.05, steps=5)" in line for line in outer)
    assert_progress(err, "APGD(eps=0.05, steps=5) on ")  # the member's own line
    if res.details["contribution"]["Square(eps=0.05, queries=40)"] or int(res.robust.sum()):
        assert_progress(err, "Square(eps=0.05, queries=40) on ")


def test_blackbox_shows_queries(
    drawn: None,
    capsys: pytest.CaptureFixture[str],
    digits: tuple[torch.nn.Module, rl.data.ImageDataset],
) -> None:
    model, ds = digits
    oracle = rl.blackbox.Oracle(model, output="probs", budget=300)
    with rt.progress_scope(True):
        rl.blackbox.NES(eps=0.05, max_queries=300)(oracle, ds.x[:4], ds.y[:4])
    found = assert_progress(capsys.readouterr().err, "NES(eps=0.05, max_queries=300) on ")
    assert any("/299 " in line for line in found)  # the budget per image, less the label query


def test_bias_parts_and_lime_show_progress(
    drawn: None,
    capsys: pytest.CaptureFixture[str],
    digits: tuple[torch.nn.Module, rl.data.ImageDataset],
) -> None:
    model, ds = digits
    with rt.progress_scope(True):
        rl.bias.corruption_robustness(
            model, ds[:40], ["contrast", "gaussian_noise"], severities=[1, 5], batch_size=20
        )
        rl.explain.Lime(samples=60, batch_size=20, seed=0)(model, ds.x[:2])
        lime = rl.explain.Lime(samples=30, K=3, seed=0)
        rl.bias.superpixel_statistics(model, ds, images_per_class=1, lime=lime, batch_size=4)
    err = capsys.readouterr().err
    found = assert_progress(err, "corruptions: 2 x 2 severities on 40 images")
    assert all("/10 [" in line for line in found)  # (1 clean + 4) runs x 2 batches
    assert_progress(err, "LIME: 60 samples x 2 images")
    found = assert_progress(err, "superpixel statistics: LIME on 10 images")
    assert all("/10 [" in line for line in found)  # one image of each class


# --------------------------------------------------------------------------- end to end


def test_run_suite_shows_every_long_step_and_nothing_when_quiet(
    drawn: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    digits: tuple[torch.nn.Module, rl.data.ImageDataset],
) -> None:
    model, ds = digits
    cfg = SuiteConfig.from_dict(
        {
            "data": {"attack_limit": 12},
            "whitebox": {  # the ensemble and C&W: their own tests above
                "attacks": ["fgsm", "pgd"],
                "steps": 10,
                "min_norm": ["deepfool"],
                "min_norm_limit": 6,
                "eps_curve": [0.1],
                "gallery": 0,
            },
            "blackbox": {"images": 2, "queries": 100},
            "explanations": {"images": 1, "samples": 40, "stability_seeds": 0},
            "bias": {
                "corruption_images": 20,
                "severities": [3],
                "shape_stimuli": 20,
                "superpixel_images": 1,
                "superpixel_samples": 20,
                "ambiguous": 0,
            },
        }
    )
    monkeypatch.setenv("ROBUSTLENS_PROGRESS", "1")
    run_suite(model, ds[:200], cfg, show_progress=False)
    assert capsys.readouterr().err == ""

    run_suite(model, ds[:200], cfg, show_progress=True)
    err = capsys.readouterr().err
    for start in (
        "clean accuracy",
        "evaluate:",
        "PGD(eps=0.1, steps=10) on ",
        "DeepFool on 6 images",
        "NES(eps=0.1, max_queries=100) on ",
        "explanations: LIME on 1 images",
        "LIME: 40 samples x 1 images",
        "corruptions: ",
        "superpixel statistics: LIME on 10 images",
    ):
        assert_progress(err, start)


def test_cli_draws_progress_unless_quiet(
    drawn: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["evaluate", "--model", "digits-cnn", "--limit", "30", "--attack", "pgd"]
    argv += ["--eps", "0.05", "--steps", "20", "--out", str(tmp_path)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert_progress(err, "PGD(eps=0.05, steps=20) on ")
    assert not ETA.search(out)  # results on stdout, progress on stderr
    assert main([*argv, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "ETA" not in err and "\r" not in err
