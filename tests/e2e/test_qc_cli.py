"""QC pages from the command line: ``fuse --qc``, ``batch`` (QC on by default, ``--no-qc``), ``report``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from qc_factory import Case, make_case
from typer.testing import CliRunner

from medfuse.cli import app

runner = CliRunner()
FAST = ("--method", "laplacian", "--register", "none")


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(tmp_path_factory.mktemp("qc-cli-inputs"))


def medfuse(*args: str | Path) -> object:
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_fuse_qc_writes_one_page_with_the_other_outputs(case: Case, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = medfuse("fuse", case.mri_path, case.pet_path, "-o", out / "fused.nii.gz", *FAST, "--qc", out / "qc.html",
                     "--report", out / "report.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["fused.nii.gz", "fused_overlay.nii.gz", "qc.html", "report.json"]
    assert "(+ overlay, report, qc)" in result.output
    html = (out / "qc.html").read_text(encoding="utf-8")
    assert "medfuse QC: out" in html and 'id="viewer-data"' in html
    bad = medfuse("fuse", case.mri_path, case.pet_path, "-o", tmp_path / "x.nii.gz", *FAST, "--qc", tmp_path / "qc.htm")
    assert bad.exit_code == 5 and "--qc" in bad.output and not (tmp_path / "x.nii.gz").exists()


@pytest.mark.slow
def test_batch_writes_case_pages_and_an_index_and_report_rebuilds_a_page(case: Case, tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    for name in ("good", "no-pet"):
        (studies / name).mkdir(parents=True)
        shutil.copy(case.mri_path, studies / name / "mri.nii.gz")
    shutil.copy(case.pet_path, studies / "good" / "pet.nii.gz")
    out = tmp_path / "out"
    result = medfuse("batch", studies, "-o", out, *FAST)
    assert result.exit_code == 1, result.output  # one case failed
    assert (out / "good" / "qc.html").is_file() and not (out / "no-pet").exists()
    index = (out / "index.html").read_text(encoding="utf-8")
    assert (
        'href="good/qc.html"' in index and "no PET found" in index and f"QC index {out / 'index.html'}" in result.output
    )
    report = json.loads((out / "good" / "report.json").read_text(encoding="utf-8"))
    assert report["outputs"]["qc"] == str(out / "good" / "qc.html")
    assert report["warnings"] == []  # not "the output folder was created", case after case

    (out / "good" / "qc.html").unlink()
    rebuilt = medfuse("report", out / "good")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (out / "good" / "qc.html").is_file()
    again = medfuse("report", out / "good")
    assert again.exit_code == 5 and "--overwrite" in again.output
    other = medfuse("report", out / "good" / "report.json", "-o", tmp_path / "elsewhere.html")
    assert other.exit_code == 0 and "medfuse QC: good" in (tmp_path / "elsewhere.html").read_text(encoding="utf-8")
    missing = medfuse("report", studies / "good")
    assert missing.exit_code == 3 and "has no report.json" in missing.output

    plain = tmp_path / "plain"
    assert medfuse("batch", studies, "-o", plain, *FAST, "--no-qc").exit_code == 1
    assert not (plain / "index.html").exists() and not (plain / "good" / "qc.html").exists()
    assert (plain / "good" / "report.json").is_file()
