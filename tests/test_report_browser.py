"""The report in a real browser: headless Chromium through Selenium and Debian's chromedriver.

The page (every section, every subsection of the bias section, one class name made of HTML) must
load with no console error, show every section, load every image, render the HTML class name as
text and open no alert. A screenshot of
the whole page is kept at ``tests/artifacts/report.png``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from robustlens.report import write_report
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
