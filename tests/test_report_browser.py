"""The report in a real browser: headless Chromium through Selenium and Debian's chromedriver.

The page (every section, every subsection of the bias section, one class name made of HTML) must
load with no console error, show every section, load every image, render the HTML class name as
text and open no alert. A screenshot of the whole page is kept at
``tests/artifacts/report.png``.

Layout, on the full report:

- every figure, while it is drawn: no legend over plotted data (lines, markers, bars, their
  labels), checked on the figure's own geometry; numbers on heat maps at least
  :data:`HEATMAP_FONT` points with a WCAG contrast of 4.5 against their cell;
- in Chromium at a desktop and a phone width (screenshots ``tests/artifacts/report-<width>.png``):
  the page never scrolls sideways, every figure's smallest text is at least
  :data:`READABLE_TEXT_PX` CSS pixels high on screen (a figure too wide scrolls in its frame
  rather than shrink), legends lie outside every plot on screen, nothing covers a heat map (its
  pixels on the screenshot are the figure's), and the rank numbers on each explanation's image
  name the superpixels the table lists under those ranks.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from robustlens.explain import Explanation, plot_explanation
from robustlens.report import write_report
from robustlens.report.figures import HEATMAP_FONT, READABLE_TEXT_PX, contrast, png_layout
from test_report import MALICIOUS, SECTIONS, full_results

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).parent / "artifacts"

if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip(
        "chromium and chromedriver are not installed: apt-get install -y chromium chromium-driver",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(20)
    yield drv
    drv.quit()


def test_report_renders_in_chromium(driver: webdriver.Chrome, tmp_path: Path) -> None:
    results = full_results()  # computed once per session (shared with test_report.py)
    index = write_report(results, tmp_path / "report")
    driver.get(index.resolve().as_uri())
    assert driver.title.startswith("robustlens audit: fmnist-cnn")

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors

    bias_parts = ("shape", "corruptions", "random-vs-adversarial", "cue-reliance", "superpixels")
    bias_parts += ("ambiguous", "hierarchy")
    for sid in (
        *SECTIONS,
        "verdicts",
        "notes",
        "meta",
        "contents",
        *(f"bias-{b}" for b in bias_parts),
    ):
        el = driver.find_element(By.ID, sid)
        assert el.is_displayed(), sid
        assert el.size["height"] > (20 if not sid.startswith("bias-") else 10), sid

    images = driver.find_elements(By.TAG_NAME, "img")
    assert len(images) == index.read_text(encoding="utf-8").count("<img ") >= 17
    bias_images = driver.find_elements(By.CSS_SELECTOR, "#bias img")
    assert len(bias_images) == 7  # shape, corruptions, noise, cue, superpixels, ambiguous, groups
    for img in images:
        assert img.get_property("complete") is True
        assert int(img.get_property("naturalWidth")) > 50, img.get_attribute("alt")
        assert img.is_displayed()

    # The class name made of HTML is text in the page, not markup: no <b>, no <script> ran.
    cells = [c for c in driver.find_elements(By.TAG_NAME, "td") if c.text == MALICIOUS]
    assert len(cells) >= 2  # the per-class table and the confusion matrix, at least
    assert driver.find_elements(By.TAG_NAME, "script") == []
    assert driver.find_elements(By.CSS_SELECTOR, "td b") == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018

    # Contents links lead to their section.
    driver.find_element(By.CSS_SELECTOR, 'a[href="#bias"]').click()
    assert driver.current_url.endswith("#bias")

    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 200, 16000))
    shot = ARTIFACTS / "report.png"
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


# --------------------------------------------------------------------------- layout

WIDTHS = (1280, 400)  # a desktop window and a phone


def _legend_problems(fig: Figure) -> list[str]:
    """Plotted data (line and step paths, markers, bars, texts in the axes) under a legend."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    legends = [*fig.legends, *(a.get_legend() for a in fig.axes if a.get_legend() is not None)]
    boxes = [lg.get_window_extent(renderer) for lg in legends]
    found: list[str] = []
    for ax in fig.axes:
        clip = ax.get_window_extent(renderer)
        points = [np.empty((0, 2))]
        for line in ax.get_lines():
            v = line.get_transform().transform_path(line.get_path()).vertices
            if len(v) > 1:  # every segment, sampled finely
                t = np.linspace(0.0, 1.0, 25)[None, :, None]
                points.append((v[:-1, None] * (1 - t) + v[1:, None] * t).reshape(-1, 2))
            points.append(v)
        for coll in ax.collections:
            offsets = coll.get_offsets()
            if len(offsets):
                points.append(coll.get_offset_transform().transform(offsets))
        pts = np.concatenate(points)
        visible = (
            (pts[:, 0] >= clip.x0)
            & (pts[:, 0] <= clip.x1)
            & (pts[:, 1] >= clip.y0)
            & (pts[:, 1] <= clip.y1)
        )
        pts = pts[visible]
        rects = [p.get_window_extent(renderer) for p in ax.patches if p.get_visible()]
        rects += [t.get_window_extent(renderer) for t in ax.texts if t.get_text().strip()]
        for box in boxes:
            inside = (
                (pts[:, 0] > box.x0)
                & (pts[:, 0] < box.x1)
                & (pts[:, 1] > box.y0)
                & (pts[:, 1] < box.y1)
            )
            covered = [r for r in rects if r.overlaps(box) and r.width > 0 and r.height > 0]
            if inside.any() or covered:
                found.append(
                    f"{ax.get_title() or fig.get_suptitle()!r}: the legend covers "
                    f"{int(inside.sum())} plotted points and {len(covered)} bars or labels"
                )
    return found


def _heatmap_problems(fig: Figure) -> list[str]:
    """Numbers written on an image's cells: too small, or too little contrast with the cell (or
    with their own box, for labels drawn in a box)."""
    found = []
    for ax in fig.axes:
        images = ax.get_images()
        if not images:
            continue
        im = images[0]
        values = np.asarray(im.get_array())
        if values.ndim != 2:  # a photograph, not a heat map: only boxed labels are checked
            values = None
        for t in ax.texts:
            if not t.get_text().strip():
                continue
            box = t.get_bbox_patch()
            x, y = t.get_position()
            if box is not None:
                back = box.get_facecolor()
            elif values is not None:
                back = im.to_rgba(values[round(y), round(x)])
            else:
                continue
            from matplotlib.colors import to_rgba

            ratio = contrast(to_rgba(t.get_color()), back)
            if ratio < 4.5 or (box is None and t.get_fontsize() < HEATMAP_FONT):
                found.append(
                    f"{ax.get_title()!r}: {t.get_text()!r} at {t.get_fontsize():g} pt, "
                    f"contrast {ratio:.1f} with its cell"
                )
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The full report, written while every figure it draws is checked (legends, heat maps)."""
    problems: list[str] = []
    save = Figure.savefig

    def checked(fig: Figure, *args: Any, **kwargs: Any) -> Any:
        problems.extend(_legend_problems(fig) + _heatmap_problems(fig))
        return save(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", checked)
        index = write_report(full_results(), tmp_path_factory.mktemp("layout") / "report")
    return index, problems


def test_no_legend_covers_data_and_heatmap_numbers_read(rendered: tuple[Path, list[str]]) -> None:
    index, problems = rendered
    assert index.read_text(encoding="utf-8").count("<img ") >= 17  # every figure was checked
    assert problems == []


def test_legend_check_catches_a_legend_over_a_curve() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k in range(8):
        ax.plot([0, 1], [k, k], label=f"line {k}")
    ax.legend(loc="upper left")  # over the lines, as the explanation path's legend was
    fig.canvas.draw()
    assert _legend_problems(fig)
    ax.text(0.5, 7, "7", fontsize=7)  # a small label: only heat-map cells are held to 9 pt
    assert _heatmap_problems(fig) == []


def _rect(driver: webdriver.Chrome, el: Any) -> dict[str, float]:
    rect: dict[str, float] = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height};",
        el,
    )
    return rect


@pytest.mark.parametrize("width", WIDTHS)
def test_layout_at_two_widths(
    driver: webdriver.Chrome, rendered: tuple[Path, list[str]], width: int
) -> None:
    index, _ = rendered
    driver.set_window_size(width, 1000)
    driver.get(index.resolve().as_uri())
    inner = int(driver.execute_script("return document.documentElement.clientWidth"))
    assert int(driver.execute_script("return document.documentElement.scrollWidth")) <= inner

    images = driver.find_elements(By.CSS_SELECTOR, "figure img")
    assert len(images) >= 17
    shown: list[tuple[Any, dict[str, float], dict[str, Any]]] = []
    for img in images:
        name = img.get_attribute("alt")
        layout = png_layout(img.get_attribute("src") or "")
        assert layout is not None, name
        natural = int(img.get_property("naturalWidth"))
        assert natural == layout["size"][0], name
        # The border (1 CSS pixel each side) is part of the drawn width.
        rect = _rect(driver, img)
        scale = (rect["w"] - 2) / natural
        assert float(img.get_attribute("data-text-px")) == layout["text_px"], name
        assert layout["text_px"] * scale >= READABLE_TEXT_PX - 0.05, (name, scale)
        frame = img.find_element(By.XPATH, "..")
        fits = driver.execute_script(
            "const f = arguments[0]; return [f.scrollWidth <= f.clientWidth + 1,"
            " getComputedStyle(f).overflowX];",
            frame,
        )
        # Too wide for the page: the figure scrolls in its frame; on a desktop none has to.
        assert fits[0] or fits[1] == "auto", name
        if width >= 1280:
            assert fits[0], f"{name} does not fit a {width} px window"
        # On screen, every legend lies outside every plot of its figure.
        for lg in layout["legends"]:
            for ax in layout["axes"]:
                apart = lg[2] <= ax[0] or ax[2] <= lg[0] or lg[3] <= ax[1] or ax[3] <= lg[1]
                assert apart, f"{name}: legend {lg} over the plot {ax}"
        shown.append((img, rect, layout))

    ARTIFACTS.mkdir(exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, min(height + 200, 16000))
    shot_path = ARTIFACTS / f"report-{width}.png"
    assert driver.save_screenshot(str(shot_path))
    shot = Image.open(shot_path).convert("RGB")
    ratio = shot.width / int(driver.execute_script("return window.innerWidth"))  # device pixels
    heatmaps = [s for s in shown if "heat map" in (s[0].get_attribute("alt") or "")]
    heatmaps += [s for s in shown if "corruption" in (s[0].get_attribute("alt") or "")]
    assert len(heatmaps) >= 2
    for img, _, _ in heatmaps:
        # Nothing covers a heat map: the screenshot shows the figure's own pixels there (at the
        # scale it is drawn, in the part of its frame that is in view).
        rect = _rect(driver, img)
        frame = _rect(driver, img.find_element(By.XPATH, ".."))
        x0, x1 = (
            max(rect["x"], frame["x"]) + 1,
            min(rect["x"] + rect["w"], frame["x"] + frame["w"]) - 1,
        )
        y0, y1 = rect["y"] + 1, rect["y"] + rect["h"] - 1
        seen = shot.crop(tuple(round(v * ratio) for v in (x0, y0, x1, y1)))
        src = img.get_attribute("src") or ""
        figure = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")
        inner_w = rect["w"] - 2
        left = (x0 - rect["x"] - 1) * figure.width / inner_w
        right = (x1 - rect["x"] - 1) * figure.width / inner_w
        part = figure.crop((round(left), 0, round(right), figure.height)).resize(seen.size)
        diff = np.abs(np.asarray(seen, dtype=np.float64) - np.asarray(part, dtype=np.float64))
        assert diff.mean() < 12, (img.get_attribute("alt"), diff.mean())
        assert np.asarray(seen).std() > 20  # drawn, not blank

    # Rank labels: the numbers written on each explanation's image name the superpixels the
    # table lists under those ranks ("1: #22 (+0.0011), 2: #27 ...").
    section = driver.find_element(By.ID, "explanations")
    header = [th.text for th in section.find_elements(By.CSS_SELECTOR, "table th")]
    col = next(i for i, h in enumerate(header) if h.startswith("top superpixels"))
    body = section.find_elements(By.CSS_SELECTOR, "table tbody tr")
    items = full_results()["sections"]["explanations"]["items"]
    assert len(body) == len(items) >= 2
    for row, item in zip(body, items, strict=True):
        cell = row.find_elements(By.TAG_NAME, "td")[col].text
        listed = {int(r): int(i) for r, i in re.findall(r"(\d+): #(\d+)", cell)}
        exp = Explanation.from_dict(item)
        fig = plot_explanation(exp, k=4)
        ax = fig.axes[0]
        seg = exp.segments.numpy()
        positions = {
            int(t.get_text()): t.get_position() for t in ax.texts if t.get_text().isdigit()
        }
        drawn = {rank: int(seg[round(y), round(x)]) for rank, (x, y) in positions.items()}
        assert listed and drawn == listed, (cell, drawn)
