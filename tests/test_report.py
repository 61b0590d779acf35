"""The HTML report: self-contained, every section drawn, user strings escaped, numbers as given.

The results are built with small real computations (the zoo's Fashion-MNIST model: clean accuracy,
FGSM/PGD evaluation, DeepFool and Carlini-Wagner, a PGD gallery, NES through an oracle, LIME, random
against adversarial noise, ambiguous images, the label hierarchy; the planted-cue model's cue
reliance; shapes-cnn's shape bias) where that is cheap, and as dicts where it is not (defense audits,
corruptions, superpixel statistics). One class is renamed to a string of HTML.
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
from robustlens._images import (
    image_refs,
    is_image_ref,
    load_image,
    load_images,
    save_image,
    save_images,
)
from robustlens._runtime import batched_logits
from robustlens.errors import ParameterError, RangeError, ShapeError
from robustlens.report import build_page, render_html, write_report
from robustlens.report.figures import (
    bars_figure,
    confusion_figure,
    curves_figure,
    figure_to_data_uri,
    gallery_figure,
    perturbation_image,
)
from robustlens.report.sections import clean as clean_section
from robustlens.report.sections.bias import OVER_P, OVER_RATIO, over_represented
from robustlens.report.sections.whitebox import L2_BUDGETS, accuracy_at
from robustlens.report.verdicts import SHAPE_BAND, derive_verdicts

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


CORNERS = ("top-left", "top-right", "bottom-right", "bottom-left")  # data/spurious.py: k % 4


def _superpixels(ds: rl.data.ImageDataset) -> dict[str, Any]:
    """SuperpixelStats.to_dict() of robustlens.bias.superpixels written out (LIME over whole
    classes is too slow for this test): each class's top superpixels lie inside the planted patch
    (the mask) far beyond what its garments offer (warnings) and in the patch's corner (notes),
    and the examples' top superpixels lie on the planted patch."""
    picked = [0, 1, 4, 5]  # T-shirt/top, Trouser, the HTML class, Sandal
    planted = rl.data.plant_cue(ds, "patch", 1.0, seed=0).dataset
    classes: dict[str, Any] = {}
    examples: dict[str, Any] = {}
    quiet = {"ratio": 0.5, "p": 0.3, "excess": 0.8, "p_shape": 0.7}
    for j, k in enumerate(picked):
        name = ds.classes[k]
        cells = {
            c: {"class": 0.1, "others": 0.2, "all": 0.2, "expected": 0.12, **quiet}
            for c in (*CORNERS, "centre")
        }
        cells[CORNERS[k % 4]] = {
            "class": 0.6 - 0.05 * j,
            "others": 0.12,
            "all": 0.11,
            "expected": 0.1,
            "ratio": 5.0 - j,
            "p": 1e-6,
            "excess": 5.5 - j,
            "p_shape": 1e-7,
        }
        attributes = {
            "position": cells,
            "brightness": {  # bright: p_shape too large; dark: beyond the objects, like others
                "bright": {
                    "class": 0.5,
                    "others": 0.2,
                    "all": 0.3,
                    "expected": 0.2,
                    "ratio": 2.5,
                    "p": 1e-5,
                    "excess": 2.5,
                    "p_shape": 0.05,
                },
                "dark": {
                    "class": 0.3,
                    "others": 0.2,
                    "all": 0.3,
                    "expected": 0.1,
                    "ratio": 1.5,
                    "p": 1e-4,
                    "excess": 3.0,
                    "p_shape": 1e-6,
                },
            },
            "mask": {  # inside: beyond the objects, whatever the other classes do
                "inside": {
                    "class": 0.4,
                    "others": 0.35,
                    "all": 0.05,
                    "expected": 0.05,
                    "ratio": 1.1,
                    "p": 0.4,
                    "excess": 8.0,
                    "p_shape": 1e-9,
                },
                "outside": {
                    "class": 0.6,
                    "others": 0.65,
                    "all": 0.95,
                    "expected": 0.95,
                    "ratio": 0.9,
                    "p": 1.0,
                    "excess": 0.6,
                    "p_shape": 1.0,
                },
            },
        }
        classes[name] = {
            "n_images": 10 + j,
            "n_top": 3 * (10 + j),
            "attributes": attributes,
            "mask_overlap": 0.4 + j / 10,
        }
        idx = torch.nonzero(ds.y == k).flatten()[:2]
        patch = (planted.x[idx] != ds.x[idx]).any(1)
        examples[name] = [
            {"image": _images(planted.x[i]), "top": patch[n].int().tolist()}
            for n, i in enumerate(idx.tolist())
        ]
    flags = [f"class {name}: 40% of its top superpixels lie inside the mask" for name in classes]
    notes = [
        f"class {name}: {100 * c['attributes']['position'][CORNERS[k % 4]]['class']:.0f}% of its "
        f"top superpixels lie in the {CORNERS[k % 4]} cell vs 12% for other classes"
        for k, (name, c) in zip(picked, classes.items(), strict=True)
    ]
    return {
        "k": 3,
        "images_per_class": 10,
        "target": "label",
        "min_ratio": 2.0,
        "alpha": 0.01,
        "tests": 100,
        "foreground": 0.05,
        "classes": classes,
        "flags": flags,
        "notes": notes,
        "examples": examples,
    }


def _over(sp: dict[str, Any]) -> list[list[str]]:
    """The warnings and notes of superpixel statistics ``sp`` as the report must list them: the
    rule of robustlens.bias.superpixel_statistics, written out again."""
    level = sp["alpha"] / sp["tests"]
    out = []
    for name, c in sp["classes"].items():
        found = []
        for attr, values in c["attributes"].items():
            for value, r in values.items():
                beyond = r["class"] > 0 and r["excess"] >= sp["min_ratio"] and r["p_shape"] < level
                distinct = r["ratio"] >= sp["min_ratio"] and r["p"] < level
                if attr == "mask":
                    kind = "warning" if beyond and value == "inside" else None
                else:
                    kind = "note" if beyond and distinct else None
                if kind:
                    row = [name, kind, attr, value]
                    row += [pct(r[k]) for k in ("class", "others", "all", "expected")]
                    row += [f"{r['ratio']:.3g}", f"{r['p']:.2g}", f"{r['excess']:.3g}"]
                    found.append(
                        ((r["p_shape"], r["p"]), -r["ratio"], [*row, f"{r['p_shape']:.2g}"])
                    )
        out += [r for *_, r in sorted(found)]
    return out


@functools.cache
def _full() -> dict[str, Any]:
    torch.manual_seed(0)
    base = rl.data.load("fashion-mnist", split="test")
    classes = list(base.classes)
    classes[4] = MALICIOUS  # "Coat"
    big = rl.data.ImageDataset(base.x[:1000], base.y[:1000], classes=classes, name="fashion-mnist")
    ds = big[:300]
    model = rl.zoo.load("fmnist-cnn")
    clean = rl.evaluation.clean_accuracy(model, ds).to_dict()
    sub = ds[:40]
    eps = 0.1
    ev = rl.evaluation.evaluate(
        model, sub, [rl.attacks.FGSM(eps=eps), rl.attacks.PGD(eps=eps, steps=10)]
    )
    df = rl.attacks.DeepFool()(model, sub.x, sub.y)
    cw = rl.attacks.CarliniWagner(steps=30, search_steps=3)(model, sub.x[:20], sub.y[:20])
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
        faith = rl.explain.faithfulness(model, exp)
        d = exp.to_dict()
        d.update(
            label=classes[int(sub.y[i])],
            pred=classes[exp.prediction],
            deletion_auc=faith.deletion_auc,
            insertion_auc=faith.insertion_auc,
            random_deletion_auc=faith.random_deletion_auc,
            warnings=[*exp.warnings, *faith.warnings],
        )
        items.append(d)
    few = ["gaussian_noise", "defocus_blur", "contrast"]
    base_corr = rl.bias.corruption_robustness(
        rl.zoo.load("fmnist-cnn-adv"), sub, few, severities=(1, 3, 5)
    )
    corruptions = rl.bias.corruption_robustness(
        model, sub, few, severities=(1, 3, 5), baseline=base_corr
    )
    rva = rl.bias.random_vs_adversarial(model, sub.x[:12], sub.y[:12], trials=5, seed=0)
    amb = rl.bias.ambiguous(model, big, k=6).to_dict()
    for item in amb:
        item["image"] = _images(big.x[item["index"]])
    pred = batched_logits(model, big.x).argmax(1)
    hier = rl.bias.FASHION_MNIST
    group_confusion, groups = hier.confusion(pred, big.y, level=1)
    cue = rl.bias.cue_reliance(rl.zoo.load("fmnist-cnn-patch"), ds, "patch")
    shapes = rl.bias.shape_bias(rl.zoo.load("shapes-cnn"), rl.data.cue_conflict(120, seed=0))
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
                "min_norm": {df.attack: df.summary(), cw.attack: cw.summary()},
                "min_norm_n": len(sub),
                "accuracy_vs_l2_normalized": [
                    rl.evaluation.accuracy_vs_distance(df).to_dict(),
                    rl.evaluation.accuracy_vs_distance(cw).to_dict(),
                ],
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
                "shape_bias": {"shapes-cnn": shapes.to_dict()},
                "shape_bias_note": {
                    "note": "fmnist-cnn's classes are not the cue-conflict classes: the shape "
                    "bias shown is that of the zoo's shapes-cnn, for reference."
                },
                "corruptions": {**corruptions.to_dict(), "baseline": "fmnist-cnn-adv"},
                "random_vs_adversarial": {**rva.to_dict(), "n": 12},
                "ambiguous": {"n": len(big), "items": amb},
                "hierarchy": {
                    "levels": {
                        "classes": hier.accuracy(pred, big.y),
                        "groups": hier.accuracy(pred, big.y, level=1),
                    },
                    "groups": groups,
                    "confusion": group_confusion.tolist(),
                },
                "cue_reliance": {**cue.to_dict(), "model": "fmnist-cnn-patch"},
                "superpixels": _superpixels(ds),
                "dataset_bias": {"name_that_dataset": 0.83, "chance": 0.5},
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


def table(doc: str, *header: str) -> list[list[str]]:
    """The body rows of the first table whose header row starts with ``header``."""
    for t in parse(doc).tables:
        if t and t[0][: len(header)] == list(header):
            return t[1:]
    raise AssertionError(f"no table with the header {header}")


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
        "bias-corruptions",
        "bias-random-vs-adversarial",
        "bias-cue-reliance",
        "bias-superpixels",
        "bias-ambiguous",
        "bias-hierarchy",
        "bias-dataset-bias",
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


def test_clean_leaves_out_classes_with_no_image_and_no_prediction() -> None:
    # A 1000-class model audited on a folder of three classes: the other classes are counted, not
    # drawn; a class that has no image but was predicted stays (it is where errors went).
    names = [f"c{i}" for i in range(40)]
    m = np.zeros((40, 40), dtype=int)
    m[3, 3], m[3, 7], m[11, 11], m[20, 20], m[20, 11] = 5, 2, 4, 3, 1
    per_class = {c: None for c in names}
    per_class.update({"c3": 5 / 7, "c11": 1.0, "c20": 0.75})
    data = {
        "n": 15,
        "accuracy": 12 / 15,
        "per_class": per_class,
        "confusion": m.tolist(),
        "classes": names,
    }
    doc = render_html({"sections": {"clean": data}})
    assert "36 of the model&#39;s 40 classes have no test image and were never predicted" in doc
    table = [r for r in rows(doc) if r and r[0] in names]
    assert [r[0] for r in table][:4] == ["c3", "c7", "c11", "c20"]
    assert table[0][1:] == [pct(5 / 7), "7", "c7 (2)"]
    assert table[1][1:3] == ["-", "0"]
    # Four classes shown: the matrix is small enough to draw, restricted to them.
    conf = [r for r in rows(doc) if r and r[0] == "c3" and len(r) == 5]
    assert conf == [["c3", "5", "2", "0", "0"]]

    # Without a confusion matrix only the missing images are known.
    blocks, _ = clean_section.render({"per_class": per_class, "classes": names})
    assert blocks[0].text == (
        "37 of the model's 40 classes have no test image: they are left out of the tables below."
    )
    assert [r[0].text for r in blocks[1].rows] == ["c3", "c11", "c20"]

    # Every class present, more than CONFUSION_MAX: the table stays, the matrix goes to the JSON.
    k = clean_section.CONFUSION_MAX + 1
    big = np.eye(k, dtype=int)
    blocks, _ = clean_section.render({"confusion": big.tolist(), "classes": names[:k]})
    assert [b.kind for b in blocks] == ["table", "paragraph"]
    assert f"over {k} classes is too large to read here" in blocks[1].text
    # No image at all: nothing to leave out, the classes are listed as before.
    blocks, _ = clean_section.render({"confusion": [[0, 0], [0, 0]], "classes": ["a", "b"]})
    assert [b.kind for b in blocks] == ["table", "image", "table"]


def test_whitebox_tables_match_the_input(page: str) -> None:
    wb = full_results()["sections"]["whitebox"]
    ev = wb["evaluation"]
    part = section(page, "whitebox")
    by_name = {r[0]: r for r in rows(part) if r}
    for name, r in ev["per_attack"].items():
        assert by_name[name][1] == pct(r["robust_accuracy"])
        assert by_name[name][2] == pct(r["success_rate"])
    assert by_name["worst case over all"][1] == pct(ev["robust_accuracy"])
    curves = wb["accuracy_vs_l2_normalized"]
    assert [c["label"] for c in curves] == [
        "DeepFool",
        "CarliniWagner(steps=30, search_steps=3)",
    ]
    for curve in curves:  # every minimum-norm attack read off at the budgets
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
    part = section(page, "bias")
    got = table(part, "corruption", "severity 1", "severity 3", "severity 5", "mean")
    assert [r[0] for r in got] == ["gaussian_noise", "defocus_blur", "contrast"]
    for row, (name, accs) in zip(got, corr["accuracy"].items(), strict=True):
        assert row[1:4] == [pct(a) for a in accs]
        assert row[4] == pct(corr["corruption_accuracy"][name])
        assert row[5] == f"{corr['ce'][name]:.3g}" and row[6] == f"{corr['relative_ce'][name]:.3g}"
    assert (  # CE on Hendrycks' scale: 100 = the baseline's errors
        f"mean corruption error (mCE) {corr['mce']:.3g}; relative mCE "
        f"{corr['relative_mce']:.3g}; both relative to the baseline fmnist-cnn-adv (clean "
        f"accuracy {pct(corr['baseline_clean_accuracy'])}): 100 means" in part
    )
    assert "bias.corruptions" not in part  # every key of CorruptionResult.to_dict() has its place
    shapes = s["bias"]["shape_bias"]["shapes-cnn"]
    (row,) = table(part, "model", "shape bias")
    assert row == [
        "shapes-cnn",
        f"{shapes['score']:.3f}",
        pct(shapes["shape_fraction"]),
        pct(shapes["texture_fraction"]),
        pct(shapes["other_fraction"]),
        "120",
    ]
    items = s["explanations"]["items"]
    by_name = {r[0]: r for r in rows(section(page, "explanations")) if r}
    for i, item in enumerate(items):
        row = by_name[str(i + 1)]
        assert row[1:3] == [item["label"], item["pred"]]
        # LIME explained the prediction: named, and said to be the prediction (and the label
        # when the model is right).
        right = " and the label" if item["label"] == item["pred"] else ""
        assert row[3] == f"{item['pred']} (the prediction{right})"
        assert row[4] == f"{item['r2']:.3g}"
        gap = abs(item["local_pred"] - item["model_output"]) / item["output_std"]
        assert row[7] == f"{gap:.3g}"
        assert row[8] == f"{item['deletion_auc']:.3g}"
        assert row[9] == f"{item['random_deletion_auc']:.3g}"
        top = sorted(range(len(item["weights"])), key=lambda j: -item["weights"][j])[:4]
        assert row[11].startswith(f"1: #{top[0]} (")  # rank as in the figure, id as in the path
        assert row[12] == str(len(item["warnings"]))


def test_bias_subsections_are_drawn_and_leave_nothing_to_the_fallback(page: str) -> None:
    part = section(page, "bias")
    imgs = [a for t, a in parse(part).tags if t == "img"]
    # shape bias, corruptions, noise, planted cue, superpixel examples, ambiguous, hierarchy
    assert [a["alt"] for a in imgs] == [
        "shape bias per model",
        "accuracy per corruption and severity",
        "accuracy: clean, random noise, adversarial noise of the same norm",
        "accuracy with the cue aligned and conflicting",
        "examples per class with their top superpixels outlined",
        "ambiguous images 1 to 6",
        "confusion matrix among groups",
    ]
    assert "Other results" not in part  # every known key has its own renderer
    assert ["Name that dataset", "0.83"] in rows(part)  # an unknown key: the fallback, headed
    assert '<h3 id="bias-dataset-bias">Dataset bias</h3>' in part


def test_shape_bias_per_class_and_note(page: str) -> None:
    bias = full_results()["sections"]["bias"]
    part = section(page, "bias")
    per_class = bias["shape_bias"]["shapes-cnn"]["per_class"]
    got = table(part, "shape class", "shape bias")
    assert got == [
        [
            name,
            f"{c['score']:.3f}",
            pct(c["shape_fraction"]),
            pct(c["texture_fraction"]),
            str(c["n"]),
        ]
        for name, c in per_class.items()
    ]
    note = bias["shape_bias_note"]["note"]
    assert "Note: " + note in "".join(parse(part).text)
    assert '<p class="warn">Note: fmnist-cnn&#39;s classes' in part


def test_random_vs_adversarial_table(page: str) -> None:
    rva = full_results()["sections"]["bias"]["random_vs_adversarial"]
    part = section(page, "bias")
    assert table(part, "noise", "accuracy") == [
        ["none (clean images)", pct(rva["clean_accuracy"]), "-"],
        ["random, same L2 norm", pct(rva["random_accuracy"]), f"{rva['median_random_norm']:.4g}"],
        [
            "adversarial (DeepFool)",
            pct(rva["adversarial_accuracy"]),
            f"{rva['median_adversarial_norm']:.4g}",
        ],
    ]
    # Real numbers: DeepFool fools every image; random noise of the same norm almost none.
    assert rva["adversarial_accuracy"] == 0.0 and rva["random_accuracy"] >= 0.9
    assert rva["median_random_norm"] == pytest.approx(rva["median_adversarial_norm"], rel=1e-3)
    assert '<p class="ok">The adversarial noise is not random' in part
    same = render_html(
        {"sections": {"bias": {"random_vs_adversarial": {**rva, "random_accuracy": 0.1}}}}
    )
    assert '<p class="warn">Random noise of this size costs nearly as much' in same


def test_cue_reliance_table(page: str) -> None:
    cue = full_results()["sections"]["bias"]["cue_reliance"]
    assert cue["gap"] == pytest.approx(cue["aligned_accuracy"] - cue["conflicting_accuracy"])
    part = section(page, "bias")
    assert table(part, "model", "cue", "images") == [
        [
            "fmnist-cnn-patch",
            "patch",
            "300",
            pct(cue["clean_accuracy"]),
            pct(cue["aligned_accuracy"]),
            pct(cue["conflicting_accuracy"]),
            f"{cue['gap']:.3g}",
            pct(cue["cue_following"]),
        ]
    ]
    # Several models at once: one row and one group of bars each.
    two = {"a": {**cue, "gap": 0.02}, "b": {k: v for k, v in cue.items() if k != "gap"}}
    doc = render_html({"sections": {"bias": {"cue_reliance": two}}})
    got = table(doc, "model", "cue", "images")
    assert [r[0] for r in got] == ["a", "b"]
    assert got[0][6] == "0.02" and got[1][6] == f"{cue['gap']:.3g}"  # b: aligned - conflicting


def test_superpixel_flags_and_over_represented_values(page: str) -> None:
    sp = full_results()["sections"]["bias"]["superpixels"]
    part = section(page, "bias")
    for flag in sp["flags"]:
        assert f'<li class="warn">{html.escape(flag, quote=False)}</li>' in part
    for note in sp["notes"]:  # notes are not warnings
        assert f"<li>{html.escape(note, quote=False)}</li>" in part
    got = table(part, "class", "kind", "attribute", "value")
    assert got == _over(sp)
    assert [r[1:4] for r in got] == [  # most significant first (by p_shape): the mask, the corner
        x
        for k in (0, 1, 4, 5)
        for x in (["warning", "mask", "inside"], ["note", "position", CORNERS[k % 4]])
    ]
    assert not any(r[3] in ("bright", "dark") for r in got)  # p_shape too large; like others
    per_class = table(part, "class", "images", "top superpixels")
    assert per_class == [
        [name, str(c["n_images"]), str(c["n_top"]), pct(c["mask_overlap"]), "1", "1"]
        for name, c in sp["classes"].items()
    ]
    # The thresholds are stated: Bonferroni over the results' 100 tests.
    assert "p_shape &lt; 0.01 / 100 tests = 1.0e-04" in part
    # The rule is the one the results carry: a looser alpha lets 'bright' (p_shape 0.05) in.
    loose = {**sp, "alpha": 10.0}
    doc = render_html({"sections": {"bias": {"superpixels": loose}}})
    assert table(doc, "class", "kind", "attribute", "value") == _over(loose)
    assert sum(r[3] == "bright" for r in _over(loose)) == 4
    assert "p-values &lt; 1.0e-01" in doc
    # Older results (no shuffle): the other classes as the only baseline, flags as given.
    old = {k: v for k, v in sp.items() if k not in ("tests", "notes")}
    old["classes"] = {
        name: {
            **c,
            "attributes": {
                a: {
                    v: {k: x for k, x in r.items() if k in ("class", "others", "all", "ratio", "p")}
                    for v, r in t.items()
                }
                for a, t in c["attributes"].items()
            },
        }
        for name, c in sp["classes"].items()
    }
    doc = render_html({"sections": {"bias": {"superpixels": old}}})
    rows_old = table(doc, "class", "kind", "attribute", "value")
    assert {r[2] for r in rows_old} == {"position", "brightness"}  # ratio >= 2 and p < 0.01
    assert "(ratio &gt;= 2 and p &lt; 0.01)" in doc


def test_real_superpixel_statistics_are_rendered() -> None:
    stats = pytest.importorskip("robustlens.bias.superpixels")
    planted = rl.data.plant_cue(rl.data.load("fashion-mnist", split="test")[:300], "patch", 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.superpixel_statistics(
            rl.zoo.load("fmnist-cnn-patch"),
            planted.dataset,
            classes=[0, 1],
            images_per_class=8,
            lime=rl.explain.Lime(samples=100, K=5, seed=0),
            mask=stats.patch_mask(planted),
        )
    sp = json.loads(json.dumps(res.to_dict()))
    doc = render_html({"sections": {"bias": {"superpixels": sp}}})
    assert "Other results" not in doc  # every key of the real schema has its place
    found = _over(sp)
    assert table(doc, "class", "images", "top superpixels") == [
        [
            name,
            str(c["n_images"]),
            str(c["n_top"]),
            pct(c["mask_overlap"]),
            str(sum(r[0] == name and r[1] == "warning" for r in found)),
            str(sum(r[0] == name and r[1] == "note" for r in found)),
        ]
        for name, c in sp["classes"].items()
    ]
    # The report's table lists exactly what the producer found (the same rule, read from sp).
    assert sum(r[1] == "warning" for r in found) == len(sp["flags"])
    assert sum(r[1] == "note" for r in found) == len(sp["notes"])
    if found:
        assert table(doc, "class", "kind", "attribute", "value") == found
    (verdict,) = derive_verdicts({"bias": {"superpixels": sp}})
    assert verdict.level == ("warn" if sp["flags"] else "ok")
    assert doc.count("<img ") == 1  # the examples


def test_ambiguous_images_table(page: str) -> None:
    amb = full_results()["sections"]["bias"]["ambiguous"]
    part = section(page, "bias")
    got = table(part, "image", "top class")
    assert got == [
        [
            str(it["index"]),
            it["classes"][0],
            pct(it["probs"][0]),
            it["classes"][1],
            pct(it["probs"][1]),
            it["label"],
            "yes" if it["label"] in it["classes"] else "no",
        ]
        for it in amb["items"]
    ]
    hits = sum(it["label"] in it["classes"] for it in amb["items"])
    assert f"the true label is one of the two for {hits} of them" in part
    assert f"The {len(amb['items'])} images of the 1000 test images" in part


def test_hierarchy_tables(page: str) -> None:
    h = full_results()["sections"]["bias"]["hierarchy"]
    part = section(page, "bias")
    ac, ag = h["levels"]["classes"], h["levels"]["groups"]
    assert table(part, "level", "accuracy") == [
        ["Classes", pct(ac), pct(1 - ac)],
        ["Groups", pct(ag), pct(1 - ag)],
    ]
    m = np.array(h["confusion"])
    assert ag == pytest.approx(np.trace(m) / m.sum())  # the counts agree with the accuracy
    share = (ag - ac) / (1 - ac)
    assert f"{pct(share)} of the mistakes confuse two classes of one group" in part
    got = table(part, "true group", "images")
    assert [r[0] for r in got] == h["groups"] == ["tops", "bottoms", "footwear", "bags"]
    for i, r in enumerate(got):
        assert [int(v) for v in r[4:]] == h["confusion"][i]
        assert r[1] == str(int(m[i].sum())) and r[2] == pct(m[i, i] / m[i].sum())


def test_min_norm_curves_share_one_axis() -> None:
    curves = full_results()["sections"]["whitebox"]["accuracy_vs_l2_normalized"]
    fig = curves_figure(curves, xlabel="d", title="t", step=True)
    (ax,) = fig.axes
    assert len(ax.lines) == len(curves) == 2
    (legend,) = fig.legends  # below the plot, never on the curves
    assert [t.get_text() for t in legend.get_texts()] == [c["label"] for c in curves]


def test_bars_figure_draws_the_given_fractions() -> None:
    fig = bars_figure({"DeepFool": {"clean": 0.9, "random": 0.85, "adv": 0.0}}, title="t")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clean", "random", "adv"]
    assert [round(b.get_height(), 6) for b in ax.patches] == [90.0, 85.0, 0.0]
    assert ax.get_title() == "t: DeepFool" and ax.get_legend() is None and not fig.legends
    fig = bars_figure({"a": {"x": 0.5, "y": None}, "b": {"x": 0.25, "y": 1.0}}, title="t")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert [round(b.get_height(), 6) for b in ax.patches] == [50.0, 25.0, 100.0]  # None: no bar
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["x", "y"]


def test_over_represented_follows_the_documented_rule() -> None:
    def over(ratio: float | None, p: float, share: float = 0.5, others: float = 0.1) -> bool:
        return over_represented({"class": share, "others": others, "ratio": ratio, "p": p})

    assert (OVER_RATIO, OVER_P) == (2.0, 0.01)
    assert over(2.0, 0.0099) and not over(1.99, 1e-9) and not over(5.0, 0.01)
    assert over(None, 1e-3, others=0.0)  # never among the other classes: an infinite ratio
    assert not over(None, 1e-3, others=0.1) and not over(None, 1e-3, share=0.0, others=0.0)


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
    res = full_results()
    verdicts = derive_verdicts(res["sections"], model=res["model"])
    levels = {v.text.split(" ")[0]: v.level for v in verdicts}
    texts = " ".join(v.text for v in verdicts)
    ev = res["sections"]["whitebox"]["evaluation"]
    assert (
        f"accuracy on the {ev['n']} attacked images falls from {pct(ev['clean_accuracy'])} clean "
        f"to {pct(ev['robust_accuracy'])}" in texts
    )
    assert levels["JPEG(quality=75):"] == "bad" and levels["Blur(size=3):"] == "ok"
    assert '<li class="bad"><span class="mark">bad</span>' in page
    bias = res["sections"]["bias"]
    by_text = {v.text: v.level for v in verdicts}
    # Measurements of other models (the reference shape bias, the cue-trained model's reliance)
    # are left to their sections: every finding is about the audited fmnist-cnn.
    assert "shape bias" not in texts and "shapes-cnn" not in texts
    assert "fmnist-cnn-patch" not in texts and "planted patch cue" not in texts
    shown = "".join(parse(section(page, "verdicts")).text)
    assert all(v.text in shown for v in verdicts)  # the page shows the same findings
    # One clean accuracy per population, each with its image count, in one finding.
    clean = res["sections"]["clean"]
    (populations,) = [v for v in verdicts if v.text.startswith("Clean accuracy is")]
    assert populations.text.startswith(
        f"Clean accuracy is {pct(clean['accuracy'])} on the {clean['n']} test images; "
        f"{pct(ev['clean_accuracy'])} on the {ev['n']} attacked images (white-box); "
    )
    rva = bias["random_vs_adversarial"]
    assert f"{pct(rva['clean_accuracy'])} on the 12 images of the noise test" in populations.text
    said = (
        "Adversarial noise is not random: random noise of the same L2 norm as the DeepFool "
        f"perturbations leaves {pct(rva['random_accuracy'])} accuracy on the 12 images (clean: "
        f"{pct(rva['clean_accuracy'])}), the adversarial noise "
        f"{pct(rva['adversarial_accuracy'])} (a warning when random noise alone costs more than "
        "10 points)."
    )
    assert by_text[said] == "ok"
    (sp,) = [v for v in verdicts if v.text.startswith("Superpixel statistics")]
    assert sp.level == "warn" and sp.text.startswith(
        "Superpixel statistics: in 4 classes the top LIME superpixels lie inside the masked region"
    )
    ac, ag = bias["hierarchy"]["levels"]["classes"], bias["hierarchy"]["levels"]["groups"]
    share = (ag - ac) / (1 - ac)
    assert share > 0.5  # fmnist-cnn's mistakes are mostly between similar classes
    assert levels[pct(share)] == "ok"
    # Without the audited model's name, a lone measurement is taken to be the audited model's.
    cue = bias["cue_reliance"]
    assert cue["gap"] > 0.1  # fmnist-cnn-patch follows its cue: a warning
    anonymous = " ".join(v.text for v in derive_verdicts(res["sections"]))
    assert "fmnist-cnn-patch follows a planted patch cue" in anonymous
    assert "shapes-cnn" not in anonymous  # the note says it is a reference model's


def test_robust_verdict_levels_follow_the_documented_rule() -> None:
    def level(robust: float) -> str:
        wb = {
            "eps": 0.1,
            "evaluation": {"clean_accuracy": 0.8, "robust_accuracy": robust, "attacks": ["a"]},
        }
        (v,) = [v for v in build_page({"sections": {"whitebox": wb}}).verdicts if "falls" in v.text]
        assert "(ok when at least 70% of the clean accuracy survives, bad below 30%)" in v.text
        return v.level

    assert [level(0.7), level(0.56), level(0.5), level(0.24), level(0.2)] == [
        "ok",
        "ok",
        "warn",
        "warn",
        "bad",
    ]

    def min_norm(l2n: float) -> str:
        (v,) = derive_verdicts(
            {"whitebox": {"min_norm": {"DeepFool": {"median_l2_normalized": l2n}}}}
        )
        assert v.text.endswith("(a warning below 15%, bad below 5%).")
        return v.level

    assert [min_norm(0.15), min_norm(0.149), min_norm(0.05), min_norm(0.049)] == [
        "ok",
        "warn",
        "warn",
        "bad",
    ]

    def blackbox(rate: float) -> str:
        (v,) = derive_verdicts({"blackbox": {"n": 20, "attacks": {"NES": {"success_rate": rate}}}})
        assert f"fools {pct(rate)} of the 20 images (a warning from 10%, bad from 50%)" in v.text
        return v.level

    assert [blackbox(0.099), blackbox(0.1), blackbox(0.499), blackbox(0.5)] == [
        "ok",
        "warn",
        "warn",
        "bad",
    ]


def test_clean_verdicts_one_accuracy_per_population_and_the_weakest_class() -> None:
    def clean(per_class: dict[str, float]) -> list[tuple[str, str]]:
        sec = {"accuracy": 0.9, "n": 1000, "per_class": per_class}
        return [(v.level, v.text) for v in derive_verdicts({"clean": sec})]

    # The weakest class is always a finding; it warns beyond 15 points below the overall.
    assert clean({"a": 0.96, "b": 0.751}) == [
        ("ok", "Clean accuracy is 90.0% on the 1000 test images."),
        (
            "ok",
            "The weakest class, b, is recognised 75.1% of the time, 14.9 points below the "
            "overall 90.0% (a warning beyond 15 points).",
        ),
    ]
    assert clean({"a": 0.96, "b": 0.749})[1][0] == "warn"
    # No better than chance (one over the classes) is bad, and says what to check; a model mapped
    # onto part of its classes (an "(other)" column) chooses among more, so it is not judged.
    def at(acc: float, per_class: dict[str, float | None]) -> Any:
        return derive_verdicts({"clean": {"accuracy": acc, "n": 90, "per_class": per_class}})[0]

    three = {"a": 0.3, "b": 0.3, "c": 0.4}
    assert at(1 / 3, three).level == "bad" and "no better than chance (33.3% for 3 classes)" in (
        at(1 / 3, three).text
    ) and "check the weights, the preprocessing and the class mapping" in at(1 / 3, three).text
    assert at(0.35, three).level == "ok"
    assert at(0.2, {**three, "(other)": None}).level == "ok"
    # Populations: each once, labelled with its count, the test images first.
    sections = {
        "clean": {"accuracy": 0.937, "n": 10000},
        "whitebox": {
            "n": 1000,
            "evaluation": {"n": 1000, "clean_accuracy": 0.933, "robust_accuracy": 0.0},
            "min_norm": {"DeepFool": {"n": 200, "clean_accuracy": 0.925}},
        },
        "explanations": {"n": 6, "correct": 5, "items": []},
        "bias": {
            "corruptions": {"n": 1000, "clean_accuracy": 0.933},
            "random_vs_adversarial": {"n": 200, "clean_accuracy": 0.945},
            "cue_reliance": {"n": 300, "clean_accuracy": 0.9, "gap": 0.0},
        },
    }
    assert derive_verdicts(sections)[0].text == (
        "Clean accuracy is 93.7% on the 10000 test images; 93.3% on the 1000 attacked images "
        "(white-box); 92.5% on the 200 images of the minimum-norm attacks; 83.3% on the 6 "
        "explained images; 93.3% on the 1000 images of the corruption test; 94.5% on the 200 "
        "images of the noise test; 90.0% on the 300 images of the planted-cue test."
    )


def test_full_and_quick_audits_give_the_same_findings_for_the_same_numbers() -> None:
    """Which findings appear depends on which measurements exist, never on their values or on
    the number of images: values on either side of every threshold give the same findings."""

    def sections(good: bool, n: int) -> dict[str, Any]:
        x = 1.0 if good else 0.0
        return {
            "clean": {"accuracy": 0.9, "n": n, "per_class": {"a": 0.95, "b": 0.8 - 0.1 * (1 - x)}},
            "whitebox": {
                "eps": 0.1,
                "n": n // 10,
                "evaluation": {"n": n // 10, "clean_accuracy": 0.9, "robust_accuracy": 0.8 * x},
                "min_norm": {"DeepFool": {"median_l2_normalized": 0.2 * x + 0.01}},
            },
            "blackbox": {"n": 20, "attacks": {"NES": {"success_rate": 0.9 * (1 - x)}}},
            "explanations": {
                "items": [{"r2": 0.9, "warnings": [] if good else ["weighted R2 0.3 ..."]}]
            },
            "bias": {
                "shape_bias": {"audited model": {"score": 0.3 + 0.4 * x}},
                "corruptions": {
                    "n": n // 10,
                    "clean_accuracy": 0.9,
                    "accuracy": {"noise": [0.88 - 0.5 * (1 - x)]},
                },
                "random_vs_adversarial": {
                    "n": 20,
                    "clean_accuracy": 0.9,
                    "random_accuracy": 0.88 - 0.5 * (1 - x),
                    "adversarial_accuracy": 0.0,
                },
                "cue_reliance": {
                    "kind": "patch",
                    "aligned_accuracy": 0.9,
                    "conflicting_accuracy": 0.9 - 0.3 * (1 - x),
                },
                "superpixels": {
                    "tests": 10,
                    "flags": [] if good else ["class b: ..."],
                    "classes": {},
                },
                "hierarchy": {"levels": {"classes": 0.8, "groups": 0.95 - 0.1 * (1 - x)}},
            },
        }

    found = {
        (good, n): derive_verdicts(sections(good, n))
        for good in (True, False)
        for n in (1000, 10000)
    }
    counts = {key: len(v) for key, v in found.items()}
    assert len(set(counts.values())) == 1 and counts[True, 1000] == 12
    first_words = {key: [v.text.split(" ")[:2] for v in vs] for key, vs in found.items()}
    assert first_words[True, 1000] == first_words[True, 10000]  # quick vs full: same findings
    levels_good = [v.level for v in found[True, 1000]]
    levels_bad = [v.level for v in found[False, 1000]]
    assert levels_good.count("ok") == 12 and "ok" not in levels_bad[1:]


def test_bias_verdicts_follow_the_documented_rules() -> None:
    def verdicts(bias: dict[str, Any], model: str | None = None) -> list[tuple[str, str]]:
        found = derive_verdicts({"bias": bias}, model=model)  # without the clean populations
        return [(v.level, v.text) for v in found if not v.text.startswith("Clean accuracy")]

    # Shape bias: words tied to the stated band around 0.5.
    def shape(score: float) -> tuple[str, str]:
        (v,) = verdicts({"shape_bias": {"audited model": {"score": score}}})
        return v

    assert SHAPE_BAND == 0.1
    assert shape(0.49) == (
        "ok",
        "The audited model has a shape bias of 0.49: it decides no clear preference between "
        "shape and texture (mostly by shape from 0.6, by texture up to 0.4; people: about 0.96).",
    )
    assert [shape(s)[0] for s in (0.4, 0.41, 0.59, 0.6)] == ["warn", "ok", "ok", "ok"]
    assert "mostly by texture" in shape(0.4)[1] and "mostly by shape" in shape(0.6)[1]
    assert "no clear preference" in shape(0.41)[1] and "no clear preference" in shape(0.59)[1]
    # Another model's shape bias is not a finding: named another model, or with a note.
    assert verdicts({"shape_bias": {"shapes-cnn": {"score": 0.3}}}, model="fmnist-cnn") == []
    assert verdicts({"shape_bias": {"cnn": {"score": 0.3}}, "shape_bias_note": "other"}) == []
    assert verdicts({"shape_bias": {"fmnist-cnn": {"score": 0.3}}}, model="fmnist-cnn")[0][0] == (
        "warn"
    )

    def rva(clean: float, rand: float, adv: float) -> tuple[str, str]:
        noise = {"attack": "DeepFool", "norm": "l2", "clean_accuracy": clean}
        (v,) = verdicts(
            {
                "random_vs_adversarial": {
                    **noise,
                    "random_accuracy": rand,
                    "adversarial_accuracy": adv,
                }
            }
        )
        return v

    rule = " (a warning when random noise alone costs more than 10 points)."
    assert rva(0.9, 0.88, 0.0) == (
        "ok",
        "Adversarial noise is not random: random noise of the same L2 norm as the DeepFool "
        "perturbations leaves 88.0% accuracy (clean: 90.0%), the adversarial noise 0.0%" + rule,
    )
    assert rva(0.9, 0.88, 0.7)[0] == "ok" and rva(0.9, 0.88, 0.7)[1].startswith("Random noise")
    assert rva(0.9, 0.7, 0.0) == (
        "warn",
        "Random noise of the same L2 norm as the DeepFool perturbations already lowers accuracy "
        "from 90.0% to 70.0% (adversarial noise: 0.0%): the model is fragile to noise of that "
        "size" + rule,
    )
    assert rva(0.9, 0.8, 0.0)[0] == "ok" and rva(0.9, 0.799, 0.0)[0] == "warn"

    def corruptions(mean: float) -> str:
        (v,) = verdicts(
            {"corruptions": {"n": 50, "clean_accuracy": 0.9, "accuracy": {"x": [mean]}}}
        )
        assert v[1].endswith("(a warning beyond 10 points).") and "on the 50 images" in v[1]
        return v[0]

    assert [corruptions(0.8), corruptions(0.799)] == ["ok", "warn"]

    def cue(aligned: float, conflicting: float) -> str:
        row = {"kind": "patch", "aligned_accuracy": aligned, "conflicting_accuracy": conflicting}
        ((level, _),) = verdicts({"cue_reliance": row})
        return level

    assert [cue(0.95, 0.9), cue(0.95, 0.84), cue(0.99, 0.2)] == ["ok", "warn", "warn"]
    row = {"kind": "patch", "aligned_accuracy": 0.99, "conflicting_accuracy": 0.8, "gap": 0.19}
    assert verdicts({"cue_reliance": {**row, "n": 300}})[0][1] == (
        "The audited model follows a planted patch cue: accuracy on the 300 images 99.0% with "
        "the cue naming the true class, 80.0% with it naming another (gap 0.19; it follows the "
        "cue above 0.1)."
    )
    assert verdicts({"cue_reliance": {**row, "model": "other"}}, model="fmnist-cnn") == []

    # Superpixel statistics: warnings are the producer's flags; without a mask, no warning.
    assert verdicts(
        {"superpixels": {"tests": 40, "flags": [], "notes": ["n1"], "classes": {}}}
    ) == [
        (
            "ok",
            "Superpixel statistics raise no warning: no region was given to test as a cue (a "
            "mask); 1 notes say where classes' evidence concentrates; a position alone cannot "
            "tell a part of the object from a mark.",
        )
    ]
    masked = {"tests": 40, "flags": [], "classes": {"a": {"mask_overlap": 0.1}}}
    assert verdicts({"superpixels": masked})[0] == (
        "ok",
        "No class's top LIME superpixels favour the masked region beyond what its own objects "
        "explain.",
    )
    assert verdicts({"superpixels": {**masked, "flags": ["a", "b"]}}) == [
        (
            "warn",
            "Superpixel statistics: in 2 classes the top LIME superpixels lie inside the masked "
            "region beyond what the class's own objects explain (first: a).",
        )
    ]
    assert verdicts({"superpixels": {"flags": ["a"]}})[0][0] == "warn"  # older results
    assert verdicts({"superpixels": {"classes": {}}}) == []  # no flags computed: nothing to say

    def hierarchy(classes: float, groups: float) -> list[tuple[str, str]]:
        return verdicts({"hierarchy": {"levels": {"classes": classes, "groups": groups}}})

    assert hierarchy(0.8, 0.85) == [
        (
            "warn",
            "25.0% of the mistakes stay within a group of similar classes (accuracy 80.0% over "
            "classes, 85.0% over groups): most confuse dissimilar classes (ok from 50%).",
        )
    ]
    assert hierarchy(0.8, 0.9)[0][0] == "ok" and hierarchy(1.0, 1.0) == []


def test_explanation_verdict_counts_the_flagged_explanations() -> None:
    def level(warned: int) -> tuple[str, str]:
        items = [{"r2": 0.6, "warnings": ["w"] * (i < warned)} for i in range(4)]
        (v,) = derive_verdicts({"explanations": {"items": items}})
        return v.level, v.text

    assert level(0) == (
        "ok",
        "None of the 4 LIME explanations carries a warning (median weighted R2 0.60) (flagged: "
        "weighted R2 below 0.5, a surrogate more than one standard deviation from the model at "
        "the image, a deletion AUC not 10% below random order's).",
    )
    assert level(1)[0] == "warn" and level(1)[1].startswith("1 of 4 LIME explanations carry")


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


def test_bad_bias_inputs_give_clear_errors() -> None:
    def bias(value: dict[str, Any]) -> str:
        return render_html({"sections": {"bias": value}})

    item = {"index": 0, "classes": ["Shirt"], "probs": [0.5], "label": "Shirt"}
    with pytest.raises(ParameterError, match=r"ambiguous.items\[0\] needs 'classes'"):
        bias({"ambiguous": {"items": [item]}})
    with pytest.raises(ParameterError, match=r"ambiguous.items must be a list of objects"):
        bias({"ambiguous": {"items": "x"}})
    conf = {"levels": {"classes": 0.9}, "groups": ["a", "b"], "confusion": [[1, 2, 3]]}
    with pytest.raises(ShapeError, match=r"confusion must be \(2, 2\) for the 2 groups"):
        bias({"hierarchy": conf})
    example = {"image": np.zeros((1, 4, 4)).tolist(), "top": np.zeros((3, 4)).tolist()}
    with pytest.raises(ShapeError, match=r"'top' must be a 0/1 mask \(H, W\) = \(4, 4\)"):
        bias({"superpixels": {"examples": {"Bag": [example]}}})
    with pytest.raises(ParameterError, match="flags must be a list of strings"):
        bias({"superpixels": {"flags": "many"}})
    with pytest.raises(ParameterError, match=r"attributes\['position'\] must map values"):
        bias({"superpixels": {"classes": {"Bag": {"attributes": {"position": 3}}}}})
    with pytest.raises(ParameterError, match="must be one CueReliance.to_dict"):
        bias({"cue_reliance": {"a": 0.5}})
    with pytest.raises(ParameterError, match="shape_bias_note must be"):
        bias({"shape_bias_note": 3})


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


# --------------------------------------------------------------------------- images beside the results

_PIXEL_KEYS = frozenset({"x", "x_adv", "image", "segments", "top"})


def _as_tensors(value: Any, key: str | None = None) -> Any:
    """``value`` with the pixels at the report's image keys as tensors (as ``run_suite`` holds
    them before writing)."""
    if key in _PIXEL_KEYS and isinstance(value, list):
        return torch.tensor(value)
    if isinstance(value, dict):
        return {k: _as_tensors(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_tensors(v) for v in value]
    return value


def _as_lists(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_lists(v) for v in value]
    return value


def test_images_beside_the_results_are_read_when_rendering(tmp_path: Path, page: str) -> None:
    res = full_results()
    sections = {n: save_images(_as_tensors(s), tmp_path, n) for n, s in res["sections"].items()}
    written = {**res, "sections": sections}
    refs = image_refs(written)
    # 3 gallery pairs, 2 explanations with their segments, 2 superpixel examples (image and
    # mask) of 4 classes, 6 ambiguous images: every one a PNG file, the JSON numbers only.
    assert len(refs) == 6 + 4 + 16 + 6 and len(set(refs)) == len(refs)
    assert sections["whitebox"]["gallery"][0]["x_adv"] == "images/whitebox/gallery-0-x-adv.png"
    assert all((tmp_path / r).is_file() for r in refs)
    text = json.dumps(written)
    assert len(text) < len(json.dumps(res)) / 4  # 28 x 28 images; the gain grows with size
    (tmp_path / "results.json").write_text(text)
    # The page reads the files (beside results.json) and embeds every figure it drew from inline
    # pixels; from the pixels the files hold, it is the same page.
    index = write_report(json.loads(text), tmp_path).read_text(encoding="utf-8")
    uris = index.count('src="data:image/png;base64,')
    assert uris == page.count('src="data:image/png;base64,') and uris >= 10
    assert "images/" not in index
    assert index == render_html(_as_lists(load_images(written, tmp_path)))
    # Pixels as tensors (run_suite without an output folder) are drawn as they are.
    assert render_html({**res, "sections": _as_tensors(res["sections"])}) == page
    with pytest.raises(ParameterError, match="render_html: the results reference the image file"):
        render_html(written)
    (tmp_path / refs[0]).unlink()
    with pytest.raises(FileNotFoundError, match=f"{refs[0]}.*does not exist; keep the images/"):
        write_report(written, tmp_path)


def test_image_files_round_trip_and_refuse_what_they_cannot_hold(tmp_path: Path) -> None:
    x = torch.rand(3, 5, 7)
    labels = torch.randint(0, 70_000 // 2, (5, 7))
    out = save_images({"T-shirt/top": [x, x], "t-shirt top": labels}, tmp_path, "bias")
    assert out == {
        "T-shirt/top": ["images/bias/t-shirt-top-0.png", "images/bias/t-shirt-top-1.png"],
        "t-shirt top": "images/bias/t-shirt-top.png",
    }
    back = load_images(out, tmp_path)
    assert float((back["T-shirt/top"][0] - x).abs().max()) <= 0.5 / 255 + 1e-7
    assert torch.equal(back["t-shirt top"], labels)
    # Writing the section again replaces its files: nothing stale stays.
    assert save_images({"a": x}, tmp_path, "bias") == {"a": "images/bias/a.png"}
    assert sorted(p.name for p in (tmp_path / "images" / "bias").iterdir()) == ["a.png"]
    assert not is_image_ref("images/../results.json.png") and not is_image_ref("/images/a.png")
    with pytest.raises(RangeError, match=r"image values must be finite and in \[0, 1\]"):
        save_image(x * 255, tmp_path, "big")
    with pytest.raises(ShapeError, match=r"an image must be \(C, H, W\) with C = 1 or 3"):
        save_image(torch.rand(2, 5, 7), tmp_path, "two")
    with pytest.raises(RangeError, match="label map values must lie in 0..65535"):
        save_image(torch.full((2, 2), 70_000), tmp_path, "many")
    with pytest.raises(ParameterError, match="must be a path 'images/.../NAME.png'"):
        load_image("../secret.png", tmp_path)
