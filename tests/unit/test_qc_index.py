"""The batch index without a browser: one row per case from the batch outcome and the case folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from qc_factory import HOSTILE, Case, bare_report, full_report, make_case, write_case_folder

from medfuse.batch import CaseResult
from medfuse.qc import rebuild_case_page
from medfuse.qc.index import index_row, write_index


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(tmp_path_factory.mktemp("qc-index-inputs"))


def test_rows_take_the_figures_of_each_case_folder(case: Case, tmp_path: Path) -> None:
    write_case_folder(case, tmp_path / "a b", full_report(case.report))
    rebuild_case_page(tmp_path / "a b")
    write_case_folder(case, tmp_path / "old", bare_report(case.report))
    full = index_row(tmp_path, CaseResult("a b", "ok", seconds=7.25))
    assert full.page == "a%20b/qc.html" and full.thumbnail and full.thumbnail.startswith("data:image/jpeg;base64,")
    assert (full.moved_mm, full.rotation_deg, full.metric_header, full.metric_value) == (12.34, 8.76, -0.4123, -0.7524)
    assert (full.confidence, full.hot_max, full.hot_text, full.warnings) == ("medium", 21.37, "21.37 SUVbw (g/mL)", 2)
    assert full.needs_look  # medium confidence and warnings
    old = index_row(tmp_path, CaseResult("old", "ok", seconds=5.0, warnings=["from the batch"]))
    assert old.page is None and old.thumbnail  # no qc.html in that folder: no link
    assert (old.moved_mm, old.confidence, old.hot_max, old.warnings) == (None, None, None, 1)
    failed = index_row(tmp_path, CaseResult("gone", "failed", "no PET found", 0.2))
    assert (failed.page, failed.thumbnail, failed.needs_look, failed.error) == (None, None, True, "no PET found")
    skipped = index_row(tmp_path, CaseResult("later", "skipped", "not run: the batch was interrupted."))
    assert skipped.seconds is None and not skipped.needs_look


def test_the_index_is_self_contained_and_escapes_what_it_shows(case: Case, tmp_path: Path) -> None:
    write_case_folder(case, tmp_path / "one", full_report(case.report))
    outcomes = [CaseResult("one", "ok", seconds=3.0), CaseResult("two", "failed", f"two: {HOSTILE}", 0.1)]
    path = write_index(tmp_path, outcomes)
    html = path.read_text(encoding="utf-8")
    assert path == tmp_path / "index.html"
    assert HOSTILE not in html and "&lt;script&gt;alert(" in html
    assert "Content-Security-Policy" in html and "<link" not in html and "http://" not in html
    assert html.count("<tr data-status=") == 2 and "2 cases: 1 ok, 1 failed, 0 skipped" in html
    assert html.count("</script>") == html.count("<script")
    write_index(tmp_path, outcomes[:1])
    assert path.read_text(encoding="utf-8").count("<tr data-status=") == 1  # replaced, not appended
