"""The HTML report: self-contained, every section drawn, user strings escaped, numbers as given.

The results are built with small real computations (the zoo's Fashion-MNIST model: clean accuracy,
FGSM/PGD evaluation, DeepFool, a PGD gallery, NES through an oracle, LIME) where that is cheap, and
as dicts where it is not (defense audits, biases). One class is renamed to a string of HTML.
"""

from __future__ import annotations

import base64
import copy
import functools
import html
import io
import json
import math
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import robustlens as rl
from robustlens.errors import ParameterError, RangeError, ShapeError
from robustlens.report import build_page, render_html, write_report
from robustlens.report.figures import (
    confusion_figure,
    figure_to_data_uri,
    gallery_figure,
    perturbation_image,
)
from robustlens.report.sections.whitebox import L2_BUDGETS, accuracy_at
from robustlens.report.verdicts import derive_verdicts

MALICIOUS = "<b>Coat</b><script>alert(1)</script>"
SECTIONS = ("clean", "whitebox", "blackbox", "defenses", "explanations", "bias", "calibration")


# --------------------------------------------------------------------------- inputs


def _images(x: torch.Tensor) -> list[Any]:
    return torch.round(x * 10_000).div(10_000).tolist()


def _success_curve(res: Any, budget: int) -> dict[str, list[float]]:
    grid = np.linspace(0, budget, 11)
    att = res.attacked.numpy()
    q, ok = res.queries.numpy()[att], res.success.numpy()[att]
    return {
        "queries": grid.tolist(),
        "success_rate": [float(((q <= g) & ok).mean()) for g in grid],
    }


@functools.cache
def _full() -> dict[str, Any]:
    torch.manual_seed(0)
    base = rl.data.load("fashion-mnist", split="test")
    classes = list(base.classes)
    classes[4] = MALICIOUS  # "Coat"
    ds = rl.data.ImageDataset(base.x[:300], base.y[:300], classes=classes, name="fashion-mnist")
    model = rl.zoo.load("fmnist-cnn")
    clean = rl.evaluation.clean_accuracy(model, ds).to_dict()
    sub = ds[:40]
    eps = 0.1
    ev = rl.evaluation.evaluate(
        model, sub, [rl.attacks.FGSM(eps=eps), rl.attacks.PGD(eps=eps, steps=10)]
    )
    df = rl.attacks.DeepFool()(model, sub.x, sub.y)
    sweep = rl.evaluation.robust_accuracy_curve(
        rl.attacks.PGD(eps=eps, steps=10), model, sub.x, sub.y, [0.02, 0.05, 0.1]
    )
    pgd = rl.attacks.PGD(eps=eps, steps=10)(model, sub.x, sub.y)
    fooled = torch.nonzero(pgd.success & pgd.attacked).flatten()
    coat = torch.nonzero((sub.y == 4) & pgd.success & pgd.attacked).flatten()
    picks = [*coat[:1].tolist(), *(i for i in fooled.tolist() if i not in coat[:1].tolist())][:3]
    gallery = [
        {
            "index": i,
            "label": classes[int(sub.y[i])],
            "clean_pred": classes[int(sub.y[i])],
            "adv_pred": classes[int(pgd.pred[i])],
            "attack": "PGD(eps=0.1, steps=10)",
            "x": _images(sub.x[i]),
            "x_adv": _images(pgd.x_adv[i]),
        }
        for i in picks
    ]
    oracle = rl.blackbox.Oracle(model, output="probs", budget=1000)
    nes = rl.blackbox.NES(eps=eps, max_queries=1000, seed=0)(oracle, sub.x[:4], sub.y[:4])
    ok = nes.success & nes.attacked
    lime = rl.explain.Lime(samples=150, K=4, seed=0, class_names=classes)
    with warnings.catch_warnings():  # saturated probabilities: the warning is kept in the items
        warnings.simplefilter("ignore", RuntimeWarning)
        exps = lime(model, sub.x[:2])
    items = []
    for i, exp in enumerate(exps):
        d = exp.to_dict()
        d.update(
            label=classes[int(sub.y[i])],
            pred=classes[exp.target],
            deletion_auc=rl.explain.deletion_auc(model, exp),
            insertion_auc=rl.explain.insertion_auc(model, exp),
        )
        items.append(d)
    audit = {
        "eps": eps,
        "norm": "linf",
        "n": 100,
        "num_classes": 10,
        "table": [
            {"measure": "clean", "attack": "none", "accuracy": 0.91},
            {"measure": "naive", "attack": "PGD(eps=0.1)", "accuracy": 0.62},
            {"measure": "adaptive", "attack": "BPDA(PGD(eps=0.1))", "accuracy": 0.03},
            {"measure": "worst case", "attack": "all of the above", "accuracy": 0.02},
        ],
        "checks": [
            {
                "name": "gradients",
                "passed": False,
                "numbers": {"zero": 16},
                "detail": "zero gradients for 100% of images",
            },
            {
                "name": "reaches chance",
                "passed": True,
                "numbers": {},
                "detail": "at eps 0.5 the attack leaves 0.0%",
            },
        ],
        "verdict": "The naive figure (62.0%) does not hold: adaptive attacks leave 2.0%.",
        "supported": False,
        "claimed_accuracy": 0.62,
        "robust_accuracy": 0.02,
        "diagnosis": {"gradient": "zero", "randomized": False},
        "notes": ["note about <JPEG>"],
    }
    blur = {
        **copy.deepcopy(audit),
        "table": [
            {"measure": "clean", "attack": "none", "accuracy": 0.88},
            {"measure": "naive", "attack": "PGD(eps=0.1)", "accuracy": 0.05},
            {"measure": "adaptive", "attack": "PGD(eps=0.1)", "accuracy": 0.05},
        ],
        "checks": [{"name": "gradients", "passed": True, "numbers": {}, "detail": "fine"}],
        "verdict": "The claim holds: 5.0% under adaptive attacks.",
        "supported": True,
        "claimed_accuracy": 0.05,
        "robust_accuracy": 0.05,
        "notes": [],
    }
    return {
        "model": "fmnist-cnn",
        "data": "fashion-mnist",
        "notes": ["a note with <i>markup</i>"],
        "sections": {
            "clean": {**clean, "seconds": 0.5},
            "whitebox": {
                "eps": eps,
                "n": len(sub),
                "evaluation": ev.to_dict(),
                "min_norm": {df.attack: df.summary()},
                "min_norm_n": len(sub),
                "accuracy_vs_l2_normalized": [rl.evaluation.accuracy_vs_distance(df).to_dict()],
                "pgd_accuracy_vs_eps": sweep.to_dict(),
                "gallery": gallery,
                "seconds": 3.0,
            },
            "blackbox": {
                "n": 4,
                "eps": eps,
                "queries": 1000,
                "attacks": {
                    "NES, scores": {
                        "success_rate": nes.success_rate,
                        "robust_accuracy": nes.robust_accuracy,
                        "median_queries": float(nes.queries[ok].double().median())
                        if ok.any()
                        else None,
                        "curve": _success_curve(nes, 1000),
                    }
                },
            },
            "defenses": {"JPEG(quality=75)": audit, "Blur(size=3)": blur},
            "explanations": {"samples": 150, "K": 4, "items": items, "stability": 0.71},
            "bias": {
                "shape_bias": {
                    "fmnist-cnn": {
                        "score": 0.31,
                        "shape_fraction": 0.2,
                        "texture_fraction": 0.45,
                        "n": 120,
                    },
                    "shape-cnn": {
                        "score": 0.78,
                        "shape_fraction": 0.5,
                        "texture_fraction": 0.14,
                        "n": 120,
                    },
                },
                "corruptions": {
                    "clean_accuracy": 0.9,
                    "accuracy": {
                        "gaussian_noise": [0.85, 0.7, 0.5, 0.3, 0.2],
                        "blur": [0.88, 0.8, 0.66, 0.5, 0.41],
                        "contrast": [0.9, 0.89, 0.8, 0.6, None],
                    },
                    "ce": {"gaussian_noise": 1.1, "blur": 0.9, "contrast": 0.7},
                    "mce": 0.9,
                    "baseline": "digits-cnn",
                },
                "cue_reliance": {
                    "cue": "corner patch",
                    "accuracy_with_cue": 0.99,
                    "accuracy_flipped": 0.2,
                },
            },
            "calibration": {
                "ece": 0.0412,
                "bins": [
                    {"lo": 0.0, "hi": 0.5, "accuracy": 0.3},
                    {"lo": 0.5, "hi": 1.0, "accuracy": 0.93},
                ],
                "reliability": [[0.1, 0.2], [0.3, 0.4]],
                "per_model": {"a": {"ece": 0.01}, "b": {"ece": 0.02}},
                "per_level": {"deep": {"value": 7}},
                "nested": {"level": 2, "deeper": {"v": 7}},
            },
        },
        "meta": {
            "robustlens": rl.__version__,
            "torch": torch.__version__,
            "python": "3.11",
            "device": "cpu",
            "seed": 0,
            "command": "robustlens audit --out </script>",
            "seconds": 12.5,
        },
    }


def full_results() -> dict[str, Any]:
    """Results with every section (a fresh copy: JSON round trip, as read from results.json)."""
    return json.loads(json.dumps(_full()))


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(full_results())


# --------------------------------------------------------------------------- parsing


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(doc: str) -> _Parser:
    p = _Parser()
    p.feed(doc)
    return p


def rows(doc: str) -> list[list[str]]:
    return [r for t in parse(doc).tables for r in t]


def section(doc: str, sid: str) -> str:
    """The HTML of the section with id ``sid``."""
    start = doc.index(f'<section id="{sid}">')
    return doc[start : doc.index("</section>", start)]


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


# --------------------------------------------------------------------------- self-contained


def test_page_is_self_contained(page: str) -> None:
    low = page.lower()
    for bad in (
        "http://",
        "https://",
        "<script",
        "url(",
        "@import",
        "<link",
        "@font-face",
        "//cdn",
    ):
        assert bad not in low, bad
    p = parse(page)
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) >= 10
    for a in imgs:
        src = a["src"] or ""
        assert src.startswith("data:image/png;base64,")
        png = PILImage.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert png.format == "PNG" and png.width > 50 and png.height > 50
        assert a["alt"]
    assert "default-src 'none'; img-src data:" in page  # the CSP forbids fetching anything


def test_every_section_has_a_stable_id_and_a_contents_link(page: str) -> None:
    ids = [a["id"] for _, a in parse(page).tags if a.get("id")]
    assert len(ids) == len(set(ids)), "ids must be unique"
    for name in (*SECTIONS, "verdicts", "notes", "meta"):
        assert name in ids
        assert f'href="#{name}"' in page
    order = [page.index(f'<section id="{s}">') for s in SECTIONS]
    assert order == sorted(order)  # known sections in the documented order, unknown ones last
    for anchor in (
        "whitebox-gallery",
        "defenses-jpeg-quality-75",
        "defenses-blur-size-3",
        "bias-shape",
    ):
        assert anchor in ids


def test_html_in_class_names_notes_and_meta_is_escaped(page: str) -> None:
    assert MALICIOUS not in page
    assert "<script>" not in page and "<b>Coat" not in page and "<i>markup" not in page
    assert html.escape(MALICIOUS, quote=False) in page
    text = "".join(parse(page).text)
    assert MALICIOUS in text  # shown as text in tables and the gallery's table
    assert "a note with <i>markup</i>" in text
    assert "robustlens audit --out </script>" in text
    assert "note about <JPEG>" in text
    for t, _ in parse(page).tags:
        assert t not in ("script", "b", "i", "iframe", "object")


def test_html_in_model_name_and_section_key_is_escaped() -> None:
    res = {"model": '"><img src=x onerror=alert(1)>', "sections": {"<svg onload=x>": {"a": 1}}}
    doc = render_html(res)
    assert "<img src=x" not in doc and "<svg" not in doc
    assert "&lt;svg onload=x&gt;" in doc
    assert 'id="svg-onload-x"' in doc


# --------------------------------------------------------------------------- numbers


def test_clean_tables_match_the_input(page: str) -> None:
    clean = full_results()["sections"]["clean"]
    table: dict[str, list[str]] = {}
    for r in rows(page):  # the first table naming the classes: accuracy per class
        if r and r[0] in clean["classes"]:
            table.setdefault(r[0], r)
    m = np.array(clean["confusion"])
    for k, name in enumerate(clean["classes"]):
        row = table[name]
        assert row[1] == pct(clean["per_class"][name])
        assert row[2] == str(int(m[k].sum()))
    assert f"Accuracy {pct(clean['accuracy'])} on {clean['n']} test images." in page
    conf = [r for r in rows(page) if r and r[0] == clean["classes"][0] and len(r) == 11]
    assert [int(v) for v in conf[0][1:]] == clean["confusion"][0]


def test_whitebox_tables_match_the_input(page: str) -> None:
    wb = full_results()["sections"]["whitebox"]
    ev = wb["evaluation"]
    part = section(page, "whitebox")
    by_name = {r[0]: r for r in rows(part) if r}
    for name, r in ev["per_attack"].items():
        assert by_name[name][1] == pct(r["robust_accuracy"])
        assert by_name[name][2] == pct(r["success_rate"])
    assert by_name["worst case over all"][1] == pct(ev["robust_accuracy"])
    curve = wb["accuracy_vs_l2_normalized"][0]
    b, a = np.array(curve["budgets"]), np.array(curve["accuracy"])
    expected = [pct(a[np.searchsorted(b, t, side="right") - 1]) for t in L2_BUDGETS]
    assert by_name[curve["label"]][1:] == expected
    sweep = wb["pgd_accuracy_vs_eps"]
    pts = [r[1:] for r in rows(part) if r and r[0] == sweep["label"] and len(r) == 3]
    assert pts == [
        [f"{e:.4g}", pct(v)] for e, v in zip(sweep["budgets"], sweep["accuracy"], strict=True)
    ]
    gal = [r for r in rows(part) if len(r) == 8 and r[0] != "image"]
    assert [int(r[0]) for r in gal] == [g["index"] for g in wb["gallery"]]
    for r, g in zip(gal, wb["gallery"], strict=True):
        d = np.array(g["x_adv"]) - np.array(g["x"])
        assert r[3] == g["adv_pred"]
        assert float(r[7]) == pytest.approx(np.abs(d).max(), rel=1e-3)
        assert float(r[7]) <= 0.1 + 1e-3  # inside the PGD ball


def test_other_sections_match_the_input(page: str) -> None:
    s = full_results()["sections"]
    by_name = {r[0]: r for r in rows(section(page, "blackbox")) if r}
    nes = s["blackbox"]["attacks"]["NES, scores"]
    assert by_name["NES, scores"][1:3] == [pct(nes["success_rate"]), pct(nes["robust_accuracy"])]
    by_name = {r[0]: r for r in reversed(rows(section(page, "defenses"))) if r}
    jpeg = by_name["JPEG(quality=75)"]  # the summary row
    assert jpeg[1:5] == ["91.0%", "62.0%", "3.0%", "2.0%"] and jpeg[5] == "no"
    assert jpeg[6] == "gradients"
    checks = [
        r for r in rows(section(page, "defenses")) if len(r) == 3 and r[1] in ("pass", "FAIL")
    ]
    assert [r[:2] for r in checks[:2]] == [["gradients", "FAIL"], ["reaches chance", "pass"]]
    assert '<td class="bad">FAIL</td>' in page and '<td class="ok">pass</td>' in page
    corr = s["bias"]["corruptions"]
    by_name = {r[0]: r for r in rows(section(page, "bias")) if r}
    for name, accs in corr["accuracy"].items():
        row = by_name[name]
        assert row[1:6] == [pct(a) if a is not None else "-" for a in accs]
        known = [a for a in accs if a is not None]
        assert row[6] == pct(sum(known) / len(known))
        assert row[7] == f"{corr['ce'][name]:.3g}"
    assert by_name["fmnist-cnn"][1:5] == ["0.310", "20.0%", "45.0%", "120"]
    items = s["explanations"]["items"]
    by_name = {r[0]: r for r in rows(section(page, "explanations")) if r}
    for i, item in enumerate(items):
        row = by_name[str(i + 1)]
        assert row[1:3] == [item["label"], item["pred"]]
        assert row[4] == f"{item['r2']:.3g}"
        assert row[7] == f"{item['deletion_auc']:.3g}"
        top = sorted(range(len(item["weights"])), key=lambda j: -item["weights"][j])[:4]
        assert row[9].startswith(f"{top[0]} (")
        assert row[10] == str(len(item["warnings"]))


def test_unknown_section_is_rendered_by_the_fallback(page: str) -> None:
    part = section(page, "calibration")
    assert "<h2>Calibration</h2>" in part
    r = rows(part)
    assert ["Ece", "0.0412"] in r
    assert ["Lo", "Hi", "Accuracy"] in r and ["0.5", "1", "0.93"] in r
    assert ["0", "0.1", "0.2"] in r and ["1", "0.3", "0.4"] in r  # the 2-D list with row index
    assert ["a", "0.01"] in r and ["b", "0.02"] in r  # dict of records
    assert ["Name", "Value"] in r and ["deep", "7"] in r
    assert "<h4>Nested</h4>" in part and ["Level", "2"] in r
    assert "<h4>Deeper</h4>" in part and ["V", "7"] in r


def test_unused_keys_of_known_sections_are_not_lost() -> None:
    res = {"sections": {"clean": {"accuracy": 0.5, "n": 2, "brand_new": {"x": 3.25}}}}
    doc = render_html(res)
    assert "Other results" in doc and ["X", "3.25"] in rows(doc)


def test_timings_and_meta(page: str) -> None:
    meta = {r[0]: r[1] for r in rows(page) if len(r) == 2}
    assert meta["Seed"] == "0" and meta["Device"] == "cpu"
    assert meta["total time"] == "12.5 s"
    assert meta["time: White-box attacks"] == "3.0 s"
    assert '<span class="took">0.5 s</span>' in page


# --------------------------------------------------------------------------- verdicts


def test_derived_verdicts_summarise_the_sections(page: str) -> None:
    verdicts = derive_verdicts(full_results()["sections"])
    levels = {v.text.split(" ")[0]: v.level for v in verdicts}
    texts = " ".join(v.text for v in verdicts)
    ev = full_results()["sections"]["whitebox"]["evaluation"]
    assert f"accuracy falls to {pct(ev['robust_accuracy'])}" in texts
    assert levels["JPEG(quality=75):"] == "bad" and levels["Blur(size=3):"] == "ok"
    assert levels["fmnist-cnn"] == "warn" and levels["shape-cnn"] == "ok"
    assert '<li class="bad"><span class="mark">bad</span>' in page


def test_robust_verdict_levels_follow_the_documented_rule() -> None:
    def level(robust: float) -> str:
        wb = {
            "eps": 0.1,
            "evaluation": {"clean_accuracy": 0.8, "robust_accuracy": robust, "attacks": ["a"]},
        }
        (v,) = build_page({"sections": {"whitebox": wb}}).verdicts
        return v.level

    assert [level(0.7), level(0.56), level(0.5), level(0.24), level(0.2)] == [
        "ok",
        "ok",
        "warn",
        "warn",
        "bad",
    ]


def test_given_verdicts_are_shown_as_given() -> None:
    given = [{"level": "warn", "text": "first <b>"}, {"level": "ok", "text": "second"}]
    doc = render_html({"verdicts": given, "sections": {"clean": {"accuracy": 0.5}}})
    part = section(doc, "verdicts")
    assert "first &lt;b&gt;" in part and "second" in part and "Clean accuracy is" not in part
    assert part.index("first") < part.index("second")


def test_bad_verdicts_are_refused() -> None:
    with pytest.raises(ParameterError, match=r"verdicts\[0\] must be \{'level': one of"):
        render_html({"verdicts": [{"level": "fatal", "text": "x"}]})


# --------------------------------------------------------------------------- errors


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(ParameterError, match="'results' must be a dict"):
        render_html([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"results\['sections'\] must be a dict"):
        render_html({"sections": [1]})
    bad_confusion = {"per_class": {"a": 1.0, "b": 1.0}, "classes": ["a", "b"], "confusion": [[1]]}
    with pytest.raises(ShapeError, match=r"must be \(2, 2\) for the 2 classes"):
        render_html({"sections": {"clean": bad_confusion}})
    item = {"x": [[[0.0, 2.0]]], "x_adv": [[[0.0, 1.0]]]}
    with pytest.raises(RangeError, match=r"values must lie in \[0, 1\], got \[0, 2\]"):
        render_html({"sections": {"whitebox": {"gallery": [item]}}})
    with pytest.raises(ShapeError, match="C = 1 or 3"):
        gallery_figure([{"x": np.zeros((2, 3, 3)).tolist(), "x_adv": np.zeros((2, 3, 3)).tolist()}])
    with pytest.raises(ParameterError, match="must be a curve"):
        render_html({"sections": {"whitebox": {"pgd_accuracy_vs_eps": 3}}})


def test_empty_results_still_give_a_page() -> None:
    doc = render_html({})
    assert "No section of the results supports a verdict." in doc and 'id="meta"' in doc


# --------------------------------------------------------------------------- figures


def test_perturbation_is_magnified_around_grey() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, (3, 5, 7))
    d = rng.uniform(-0.03, 0.03, x.shape)
    img, gain = perturbation_image(x, x + d)
    assert gain == pytest.approx(0.5 / np.abs(d).max())
    np.testing.assert_allclose(img, 0.5 + d * gain)
    assert math.isclose(max(img.max(), 1 - img.min()), 1.0)  # the largest change reaches 0 or 1
    same, g = perturbation_image(x, x.copy())
    assert g == 1.0 and np.all(same == 0.5)


def test_figure_uri_is_a_png_of_the_figure_size() -> None:
    fig = confusion_figure([[3, 1], [0, 4]], ["a $x", "b$y$"])  # '$' drawn as text, not math
    w, h = fig.get_size_inches()
    uri = figure_to_data_uri(fig, dpi=50)
    png = PILImage.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert png.size == (round(w * 50), round(h * 50))


def test_rendering_is_deterministic_and_write_report_writes_it(tmp_path: Path) -> None:
    res = full_results()
    res["sections"] = {k: res["sections"][k] for k in ("clean", "bias")}
    first = render_html(res)
    path = write_report(res, tmp_path / "new" / "dir")
    assert path == tmp_path / "new" / "dir" / "index.html"
    assert path.read_text(encoding="utf-8") == first


def test_accuracy_at_is_the_step_function() -> None:
    curve = {"budgets": [0.0, 0.01, 0.05], "accuracy": [0.9, 0.6, 0.1]}
    assert [accuracy_at(curve, b) for b in (-1.0, 0.0, 0.02, 0.05, 9.0)] == [
        None,
        0.9,
        0.6,
        0.1,
        0.1,
    ]
