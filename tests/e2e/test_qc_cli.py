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


@pytest.mark.slow
def test_report_finds_inputs_typed_relative_to_the_run_s_folder_from_another_folder(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, elsewhere = tmp_path / "study", tmp_path / "elsewhere"
    (run_dir / "in").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(case.mri_path, run_dir / "in" / "mri.nii.gz")
    shutil.copy(case.pet_path, run_dir / "in" / "pet.nii.gz")
    monkeypatch.chdir(run_dir)
    result = medfuse("fuse", "in/mri.nii.gz", "in/pet.nii.gz", "-o", "out/fused.nii.gz", *FAST,
                     "--report", "out/report.json", "--save-pet", "out/pet.nii.gz")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["working_directory"] == str(run_dir) and report["inputs"]["mri"]["path"] == "in/mri.nii.gz"

    monkeypatch.chdir(elsewhere)  # the inputs' paths as typed mean nothing here
    rebuilt = medfuse("report", run_dir / "out")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "no longer exists" not in rebuilt.output
    html = (run_dir / "out" / "qc.html").read_text(encoding="utf-8")
    assert "Notes on this page" not in html and "MRI picture not available" not in html
    assert html.count("<img ") == 7  # the inputs' pictures among them

    report["working_directory"] = str(tmp_path / "gone")  # a run folder that moved: the notes say where we looked
    (run_dir / "out" / "report.json").write_text(json.dumps(report), encoding="utf-8")
    degraded = medfuse("report", run_dir / "out", "--overwrite")
    assert degraded.exit_code == 0, degraded.output
    assert f"The MRI input in/mri.nii.gz no longer exists (looked for {tmp_path / 'gone' / 'in' / 'mri.nii.gz'}, " in (
        " ".join(degraded.output.split())
    )
