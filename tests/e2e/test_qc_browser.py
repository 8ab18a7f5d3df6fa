"""QC pages in a real browser: headless Chromium (the system's, driven by playwright), offline.

Each test saves a screenshot under pytest's tmp dir and prints its path (``pytest -s`` or the
captured output of a failure shows it). Without /usr/bin/chromium or playwright the tests skip,
unless MEDFUSE_REQUIRE_BROWSER=1 (set by .ci/run, which installs both) turns that into a failure.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qc_factory import HOSTILE, Case, bare_report, full_report, lesion_mri_voxel, make_case, write_case_folder

from medfuse.batch import CaseResult
from medfuse.qc import prepare_case_page, rebuild_case_page
from medfuse.qc.index import write_index
from medfuse.qc.volumes import qc_grid

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("MEDFUSE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, but MEDFUSE_REQUIRE_BROWSER=1 requires the browser tests to run")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium with a fresh profile (never a downloaded browser)."""
    if not CHROMIUM.exists():
        _unavailable("chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable('playwright is not installed (pip install -e ".[test]")')
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()


@dataclass
class Visit:
    """An open page and what happened while it loaded and ran."""

    page: Any
    problems: list[str]  # console errors and warnings, uncaught exceptions
    requests: list[str]  # anything but the page itself and data: URIs

    def check_clean(self) -> None:
        assert self.problems == [], self.problems
        assert self.requests == [], self.requests

    def screenshot(self, folder: Path, name: str) -> Path:
        path = folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path


def visit(browser: Any, path: Path) -> Visit:
    page = browser.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on(
        "console",
        lambda message: (
            problems.append(f"{message.type}: {message.text}") if message.type in ("error", "warning") else None
        ),
    )
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    own = path.parent.as_uri()
    page.on(
        "request", lambda request: requests.append(request.url) if not request.url.startswith(("data:", own)) else None
    )
    page.goto(path.as_uri())
    page.wait_for_function(
        "() => { const v = document.getElementById('viewer'); return v === null || v.dataset.state !== 'loading'; }",
        timeout=30_000,
    )
    return Visit(page, problems, requests)


def canvas_stats(visit: Visit, canvas_id: str) -> dict[str, Any]:
    """Statistics of what a canvas shows, read back as PNG (getImageData would make Chromium warn)."""
    import base64
    import io

    from PIL import Image

    url = visit.page.evaluate("(id) => document.getElementById(id).toDataURL('image/png')", canvas_id)
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")).astype(int)
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    return {
        "std": float(pixels.sum(axis=-1).std()),
        "colours": len(np.unique(pixels.reshape(-1, 3), axis=0)),
        "coloured": float(np.mean(spread > 3)),  # share of pixels that are not grey
        "hash": hash(pixels.tobytes()),
        "width": pixels.shape[1],
        "height": pixels.shape[0],
    }


ACCESSIBILITY = """() => {
  const problems = [];
  for (const image of document.images) if (!(image.getAttribute("alt") || "").trim()) problems.push("img without alt");
  for (const field of document.querySelectorAll("input, select"))
    if (!field.labels.length && !field.getAttribute("aria-label")) problems.push("unlabelled " + field.id);
  for (const canvas of document.querySelectorAll("canvas"))
    if (canvas.getAttribute("role") !== "img" || !canvas.getAttribute("aria-label"))
      problems.push("canvas " + canvas.id);
  for (const button of document.querySelectorAll("button"))
    if (!button.textContent.trim()) problems.push("button without text");
  if (!document.documentElement.lang) problems.push("no lang");
  const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => {
    const linear = [r, g, b].map((c) => {
      c /= 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  };
  const background = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const colour = rgb(getComputedStyle(node).backgroundColor);
      if (colour.length === 3 || (colour.length === 4 && colour[3] > 0.5)) return colour.slice(0, 3);
    }
    return [255, 255, 255];
  };
  let checked = 0;
  for (const element of document.body.querySelectorAll("*")) {
    const own = Array.from(element.childNodes).some((node) => node.nodeType === 3 && node.textContent.trim());
    if (!own || element.closest("script, style, noscript, [hidden], details:not([open]) > :not(summary)")) continue;
    if (!element.getClientRects().length) continue;
    const style = getComputedStyle(element);
    if (style.visibility === "hidden" || element.closest(".skip")) continue;
    const fg = luminance(rgb(style.color)), bg = luminance(background(element));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    checked++;
    if (ratio < 4.5)
      problems.push(`contrast ${ratio.toFixed(2)} of ${element.tagName}: ${element.textContent.trim().slice(0, 40)}`);
  }
  return {problems: problems, checked: checked};
}"""


def check_accessibility(visit: Visit) -> None:
    result = visit.page.evaluate(ACCESSIBILITY)
    assert result["checked"] > 20
    assert result["problems"] == [], result["problems"]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(tmp_path_factory.mktemp("qc-browser-inputs"))


@pytest.fixture(scope="module")
def full_page(case: Case, tmp_path_factory: pytest.TempPathFactory) -> Path:
    report = full_report(case.report)
    path = tmp_path_factory.mktemp("qc-page") / "qc.html"
    path.write_text(prepare_case_page(case.volumes, report, "case-01").html(report), encoding="utf-8")
    return path


def _readout(visit: Visit) -> dict[str, Any]:
    text = visit.page.inner_text("#readout")
    position = re.search(r"x (-?[\d.]+)\s+y (-?[\d.]+)\s+z (-?[\d.]+) mm", text)
    voxel = re.search(r"MRI voxel \((-?\d+), (-?\d+), (-?\d+)\)", text)
    pet = re.search(r"PET (-?[\d.e+-]+) ", text)
    assert position and voxel, text
    return {
        "mm": [float(v) for v in position.groups()],
        "voxel": [int(v) for v in voxel.groups()],
        "pet": float(pet.group(1)) if pet else None,
        "text": text,
    }


def _crosshair(visit: Visit) -> tuple[int, int, int]:
    """The crosshair voxel (x, y, z) of the QC grid, read from the three slice sliders."""
    values = [int(visit.page.input_value(f"#slice-{view}")) for view in ("sagittal", "coronal", "axial")]
    return values[0], values[1], values[2]


# ---- the case page -----------------------------------------------------------------------------------------
def test_case_page_loads_offline_without_errors_and_the_viewer_draws(
    browser: Any, full_page: Path, tmp_path: Path
) -> None:
    page = visit(browser, full_page)
    page.screenshot(tmp_path, "case-page")
    page.check_clean()
    assert page.page.get_attribute("#viewer", "data-state") == "ready"
    for view in ("axial", "coronal", "sagittal"):
        stats = canvas_stats(page, f"view-{view}")
        assert stats["std"] > 20 and stats["colours"] > 200, (view, stats)  # not blank
        assert stats["coloured"] > 0.2, (view, stats)  # the PET is blended in at 50 %
    nz, ny, nx = json.loads(page.page.inner_text("#viewer-data"))["shape"]
    sizes = {view: canvas_stats(page, f"view-{view}") for view in ("axial", "coronal", "sagittal")}
    scales = {sizes["axial"]["width"] / nx, sizes["axial"]["height"] / ny, sizes["coronal"]["height"] / nz}
    assert len(scales | {sizes["sagittal"]["width"] / ny}) == 1  # one pixel size for every view: square voxels
    images = page.page.evaluate("() => Array.from(document.images).map((i) => i.complete && i.naturalWidth > 0)")
    assert len(images) == 7 and all(images)
    check_accessibility(page)


def test_opacity_slider_changes_the_picture_and_follows_the_keyboard(
    browser: Any, full_page: Path, tmp_path: Path
) -> None:
    page = visit(browser, full_page)
    before = canvas_stats(page, "view-axial")
    page.page.focus("#opacity")
    page.page.keyboard.press("ArrowRight")
    assert page.page.input_value("#opacity") == "55"
    assert page.page.inner_text("#opacity-value") == "55 %"
    after = canvas_stats(page, "view-axial")
    assert after["hash"] != before["hash"]
    page.page.keyboard.press("Home")
    grey = canvas_stats(page, "view-axial")
    assert page.page.input_value("#opacity") == "0" and grey["coloured"] < 0.03  # only the crosshair is coloured
    page.page.keyboard.press("End")
    pet_only = canvas_stats(page, "view-axial")
    assert pet_only["coloured"] > after["coloured"]
    page.screenshot(tmp_path, "opacity-100")
    page.check_clean()


def test_slices_follow_slider_keys_canvas_keys_and_the_wheel(browser: Any, full_page: Path, tmp_path: Path) -> None:
    page = visit(browser, full_page)
    x, y, z = _crosshair(page)
    start = _readout(page)
    page.page.focus("#slice-axial")
    page.page.keyboard.press("ArrowRight")
    assert _crosshair(page) == (x, y, z + 1)
    moved = _readout(page)
    spacing = json.loads(page.page.inner_text("#viewer-data"))["spacing_mm"]
    assert moved["mm"][2] == pytest.approx(start["mm"][2] + spacing, abs=0.06)
    page.page.focus("#view-coronal")
    page.page.keyboard.press("PageUp")
    assert _crosshair(page) == (x, y + 10, z + 1)
    page.page.hover("#view-sagittal")
    page.page.mouse.wheel(0, 120)
    assert _crosshair(page) == (x - 1, y + 10, z + 1)
    page.screenshot(tmp_path, "slices")
    page.check_clean()


def test_a_click_moves_the_crosshair_and_the_readout_gives_position_and_pet_value(
    browser: Any, full_page: Path, case: Case, tmp_path: Path
) -> None:
    page = visit(browser, full_page)
    page.page.locator("#view-axial").scroll_into_view_if_needed()
    box = page.page.locator("#view-axial").bounding_box()
    grid = qc_grid(case.volumes.mri)
    width, height = grid.reference.GetSize()[0], grid.reference.GetSize()[1]
    page.page.mouse.click(box["x"] + box["width"] * 0.41, box["y"] + box["height"] * 0.37)
    x, y, z = _crosshair(page)
    assert (x, y) == (int(0.41 * width), int(0.37 * height))
    readout = _readout(page)
    expected_mm = grid.reference.TransformIndexToPhysicalPoint((x, y, z))
    np.testing.assert_allclose(readout["mm"], expected_mm, atol=0.051)
    expected_voxel = case.volumes.mri.TransformPhysicalPointToIndex(expected_mm)
    assert readout["voxel"] == list(expected_voxel)
    expected_pet = float(grid.resample(case.volumes.pet, case.volumes.transform)[z, y, x])
    assert readout["pet"] == pytest.approx(expected_pet, rel=1e-3, abs=1e-3)
    assert readout["text"].endswith("SUVbw (g/mL)")
    page.screenshot(tmp_path, "clicked")
    page.check_clean()


def test_show_buttons_put_the_crosshair_on_a_hotspot(browser: Any, full_page: Path, tmp_path: Path) -> None:
    page = visit(browser, full_page)
    page.page.click("table.regions button.goto")
    assert _readout(page)["voxel"] == lesion_mri_voxel()
    assert page.page.evaluate("document.activeElement.id") == "view-axial"
    page.screenshot(tmp_path, "hotspot")
    page.check_clean()


def test_a_page_without_pet_or_newer_report_keys_still_loads_cleanly(browser: Any, case: Case, tmp_path: Path) -> None:
    report = bare_report(case.report)
    report["inputs"]["mri"]["path"] = str(tmp_path / "gone.nii.gz")
    report["inputs"]["pet"]["path"] = str(tmp_path / "gone-too.nii.gz")
    folder = write_case_folder(case, tmp_path / "old-case", report, pet_on_mri=False)
    with pytest.warns(UserWarning):
        path = rebuild_case_page(folder)
    page = visit(browser, path)
    page.screenshot(tmp_path, "bare-page")
    page.check_clean()
    assert page.page.get_attribute("#viewer", "data-state") == "ready"
    assert page.page.is_disabled("#opacity")
    assert "PET not available" in page.page.inner_text("#readout")
    assert canvas_stats(page, "view-axial")["std"] > 20
    check_accessibility(page)


# ---- the batch index ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch_index(case: Case, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("batch-out")
    first = full_report(case.report)
    third = full_report(case.report)
    third["registration"].update(moved_mm=2.5, confidence={"level": "high", "spread_mm": 0.2, "reason": "ok"})
    third["warnings"] = []
    for name, report in (("case-a", first), ("case-c", third)):
        write_case_folder(case, output / name, report)
        rebuild_case_page(output / name)
    outcomes = [
        CaseResult("case-a", "ok", seconds=7.5, warnings=first["warnings"]),
        CaseResult("case-b", "failed", f"{output}/case-b: no PET found {HOSTILE}", 0.4),
        CaseResult("case-c", "ok", seconds=6.1),
    ]
    return write_index(output, outcomes)


def _visible_cases(page: Visit) -> list[str]:
    return page.page.eval_on_selector_all(
        "#cases tbody tr", "(rows) => rows.filter((r) => !r.hidden).map((r) => r.cells[0].textContent.trim())"
    )


def test_batch_index_loads_cleanly_sorts_and_filters(browser: Any, batch_index: Path, tmp_path: Path) -> None:
    page = visit(browser, batch_index)
    page.screenshot(tmp_path, "index")
    page.check_clean()
    assert _visible_cases(page) == ["case-a", "case-b", "case-c"]
    assert HOSTILE not in page.page.content() and "no PET found" in page.page.inner_text("#cases")
    moved = page.page.locator("th", has_text="Moved (mm)")
    moved.locator("button").click()
    assert moved.get_attribute("aria-sort") == "ascending"
    assert _visible_cases(page) == ["case-c", "case-a", "case-b"]  # 2.5, 12.3, then the failed case (no figure)
    moved.locator("button").click()
    assert moved.get_attribute("aria-sort") == "descending"
    assert _visible_cases(page) == ["case-a", "case-c", "case-b"]  # missing figures stay last
    page.page.locator("th", has_text="Case").locator("button").focus()
    page.page.keyboard.press("Enter")
    assert _visible_cases(page) == ["case-a", "case-b", "case-c"]
    page.page.fill("#filter-text", "case-c")
    assert _visible_cases(page) == ["case-c"]
    assert page.page.inner_text("#shown-count") == "Showing 1 of 3 cases"
    page.page.fill("#filter-text", "")
    page.page.select_option("#filter-status", "failed")
    assert _visible_cases(page) == ["case-b"]
    page.page.select_option("#filter-status", "all")
    page.page.check("#filter-attention")
    assert _visible_cases(page) == ["case-a", "case-b"]  # warnings and medium confidence; failed
    thumbnails = page.page.evaluate("() => Array.from(document.images).map((i) => i.naturalWidth)")
    assert len(thumbnails) == 2 and all(width > 50 for width in thumbnails)
    check_accessibility(page)
    page.screenshot(tmp_path, "index-filtered")


def test_index_links_open_the_case_pages(browser: Any, batch_index: Path, tmp_path: Path) -> None:
    page = visit(browser, batch_index)
    assert page.page.locator("#cases a").count() == 2  # the failed case has no page
    page.page.click("text=case-c")
    page.page.wait_for_function("() => document.getElementById('viewer')?.dataset.state === 'ready'", timeout=30_000)
    assert page.page.url.endswith("/case-c/qc.html")
    page.screenshot(tmp_path, "linked-case")
    page.check_clean()
