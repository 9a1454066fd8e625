"""The report page in a real browser (headless Debian chromium through playwright): it loads
with no console or page errors and no network request, every image decodes, and the plots
are drawn (the first plot's region of a full-page screenshot is not blank).

Skipped when /usr/bin/chromium or playwright is absent, unless SERVESIM_REQUIRE_BROWSER=1 (CI
sets it), which turns the skip into a failure. Playwright drives the system chromium: no
``playwright install`` and no download.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sim.price import price_scenario, write_price_outputs
from sim.report.html import write_report
from sim.run import run_scenario, write_outputs

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRED = os.environ.get("SERVESIM_REQUIRE_BROWSER") == "1"


def _unavailable(why: str) -> None:
    if REQUIRED:
        pytest.fail(f"SERVESIM_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is absent (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _plan_json() -> dict:
    """The plan fixture of the unit tests (tests/unit/test_report_html.py)."""
    spec = importlib.util.spec_from_file_location("report_html_unit_tests", ROOT / "tests/unit/test_report_html.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plan_json()


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """Report pages: a run with its price study, a plan, and a sweep (its curves with CI bars and
    its cost frontier)."""
    run_dir = tmp_path_factory.mktemp("run")
    result = run_scenario(
        ROOT / "scenarios/pricing_study.yaml", overrides=("duration_s=30", "warmup_s=2", "replications=2")
    )
    write_outputs(result, run_dir, plots=False)
    write_price_outputs(price_scenario(result), run_dir)
    plan_dir = tmp_path_factory.mktemp("plan")
    (plan_dir / "plan.json").write_text(json.dumps(_plan_json()))
    from sim.sweep import run_sweep

    sweep_dir = tmp_path_factory.mktemp("sweep")
    grid = {"classes.chat.arrival.rate": [5, 15, 25], "pools.chat.replicas": [1, 2]}
    overrides = ("duration_s=20", "warmup_s=2", "replications=2")
    run_sweep(ROOT / "scenarios/quickstart.yaml", grid, sweep_dir, overrides=overrides, workers=1)
    return {"run+price": write_report(run_dir), "plan": write_report(plan_dir), "sweep": write_report(sweep_dir)}


def _non_white(png: Path, box: dict) -> float:
    """Fraction of the pixels in ``box`` (CSS pixels, device scale 1) that are not near white."""
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    x0, y0 = int(box["x"]), int(box["y"])
    region = pixels[y0 : y0 + int(box["height"]), x0 : x0 + int(box["width"])]
    assert region.size, f"the first plot ({box}) is outside the screenshot ({pixels.shape})"
    return float((region.min(axis=2) < 235).mean())


@pytest.mark.parametrize("name", ["run+price", "plan", "sweep"])
def test_report_renders_offline_with_its_plots(browser, pages, name, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    problems, urls = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("request", lambda r: urls.append(r.url))
    page.goto(pages[name].resolve().as_uri(), wait_until="load")
    sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    box = page.locator("img").first.bounding_box()
    page.close()

    assert not problems, problems
    assert all(u.startswith(("file:", "data:")) for u in urls), urls
    assert sizes and all(done and w > 0 and h > 0 for done, w, h in sizes), sizes
    assert box is not None and box["width"] > 300 and box["height"] > 150, box
    # A drawn plot: axes, ticks, lines and labels cover a good part of its area; a blank or
    # broken image would be white (or one flat colour).
    assert _non_white(shot, box) > 0.03, f"the first plot looks blank in {shot}"
