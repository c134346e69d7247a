"""The HTML reports in a real headless browser (Debian's Chromium driven by Selenium through chromedriver;
tests/browser.sh, part of the README's test command, installs both): comparison.html of an Optuna smoke study plus a failed run, and a run's report.html, load without
console errors, every image renders, the runs table has one row per run and sorts on a header click."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_cli

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no Chromium + chromedriver on this machine (tests/browser.sh installs them where apt-get and "
                    "root are available; it printed why it could not)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A 2-trial Optuna smoke study, a run refused at its config check, one comparison of all three."""
    base = tmp_path_factory.mktemp("html")
    study = run_cli(["search=quickstart", "debug=smoke", "hydra.sweeper.n_trials=2", "trainer.max_steps=8",
                     "trainer.logging_steps=2", "num_samples=2", "quiet=true", f"hydra.sweep.dir={base / 'study'}"])
    assert study.returncode == 0, study.stderr[-3000:]
    failed = run_cli(["debug=smoke", "method=prefix", "quiet=true", f"hydra.run.dir={base / 'failed'}"])
    assert failed.returncode == 2, failed.stderr[-2000:]
    from pipeline.commands.compare import main

    main([str(base / "study"), str(base / "failed"), "--out", str(base / "report")])
    return base


def _open(driver, path) -> dict:
    driver.get(path.as_uri())
    return driver.execute_script("""
        var imgs = Array.prototype.slice.call(document.images);
        return {images: imgs.length, rendered: imgs.filter(function (i) {
                  return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; }).length,
                title: document.title};""")


def _errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


@pytest.mark.slow
def test_comparison_page_loads_with_every_image_and_one_row_per_run(browser, reports):
    page = _open(browser, reports / "report" / "comparison.html")
    assert _errors(browser) == []
    assert page["title"] == "Fine-tuning comparison"
    assert page["images"] == 3 and page["rendered"] == 3  # the family's plots, Optuna history, importances
    rows = browser.execute_script("""return Array.prototype.map.call(
        document.querySelectorAll("table.runs tbody tr"), function (r) { return r.className; });""")
    assert sorted(rows) == ["", "", "failed"]  # two trials and the refused run
    text = browser.find_element("tag name", "body").text
    assert "Failed runs" in text and "prefix tuning" in text and "Optuna study quickstart" in text
    trials = browser.execute_script('return document.querySelectorAll("table.trials tbody tr").length;')
    assert trials == 2


@pytest.mark.slow
def test_runs_table_sorts_on_a_header_click(browser, reports):
    _open(browser, reports / "report" / "comparison.html")
    header = browser.find_element("css selector", "table.runs th:nth-child(2)")  # the headline metric
    assert header.text.startswith("test_f1")

    def column():
        return browser.execute_script("""return Array.prototype.map.call(
            document.querySelectorAll("table.runs tbody tr td:nth-child(2)"),
            function (c) { return c.getAttribute("data-value"); });""")

    header.click()
    up = column()
    header.click()
    down = column()
    values = [float(v) for v in up if v not in (None, "None")]
    assert len(values) == 2 and values == sorted(values)
    assert [float(v) for v in down if v not in (None, "None")] == sorted(values, reverse=True)
    assert _errors(browser) == []


@pytest.mark.slow
def test_run_report_loads_with_its_loss_curves_samples_and_config(browser, reports):
    run = reports / "study" / "0"
    page = _open(browser, run / "report.html")
    assert _errors(browser) == []
    assert page["images"] == 1 and page["rendered"] == 1  # the loss curves
    text = browser.find_element("tag name", "body").text
    m = json.loads((run / "metrics.json").read_text())
    assert f"test_f1 = {m['test_f1']:.4g}" in text
    assert "Samples" in text and "Config" in text and "finetune search=quickstart" in text
    samples = browser.execute_script('return document.querySelectorAll("h2 + table.plain tbody tr").length;')
    assert samples == 2
