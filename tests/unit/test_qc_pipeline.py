"""The QC page inside a fusion: ``--qc`` written with the other outputs, warnings collected for the report."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from qc_factory import Case, make_case
from synthetic import FakeFuser

from medfuse import pipeline
from medfuse.console import MedfuseWarning, collect_warnings, warn
from medfuse.errors import OutputError
from medfuse.options import FuseOptions


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(tmp_path_factory.mktemp("qc-pipeline-inputs"))


def test_collect_warnings_records_every_warning_once_in_order_whatever_the_filters() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with collect_warnings() as outer:
            warn("first")
            with collect_warnings() as inner:
                warn("second")
                warn("second")
            warn("third")
        warn("after the block")
    assert outer == ["first", "second", "third"] and inner == ["second"]


def test_fuse_files_writes_the_qc_page_with_its_outputs_and_reports_every_warning(case: Case, tmp_path: Path) -> None:
    pet = sitk.GetArrayFromImage(sitk.ReadImage(str(case.pet_path)))
    pet[0, 0, :7] = np.nan
    nan_pet = tmp_path / "inputs" / "pet_nan.nii.gz"
    nan_pet.parent.mkdir()
    image = sitk.GetImageFromArray(pet)
    image.CopyInformation(sitk.ReadImage(str(case.pet_path)))
    sitk.WriteImage(image, str(nan_pet))
    out = tmp_path / "brain"  # missing: the transaction creates it, with a warning
    options = FuseOptions(transform=case.transform_path, report=out / "report.json", qc=out / "qc.html")
    with pytest.warns(MedfuseWarning):
        result = pipeline.fuse_files(case.mri_path, nan_pet, out / "brain_fused.nii.gz", options, FakeFuser())
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["outputs"]["qc"] == str(out / "qc.html") and report["timings_s"]["qc"] > 0
    assert report["warnings"] == result.report["warnings"]
    assert any("7 NaN or infinite voxels in the PET were set to 0" in w for w in report["warnings"])
    assert any("the output folder did not exist and was created" in w for w in report["warnings"])
    html = (out / "qc.html").read_text(encoding="utf-8")
    assert "medfuse QC: brain_fused" in html and "7 NaN or infinite voxels" in html
    assert html.count("<img ") == 7  # the overlay was drawn for the page although no preview was asked


def test_fuse_images_reports_its_warnings_too(case: Case) -> None:
    result = pipeline.fuse_images(case.volumes.mri, case.volumes.pet, FuseOptions(register="none"), FakeFuser())
    assert result.report["warnings"] == []


def test_the_qc_path_is_checked_before_any_work(case: Case, tmp_path: Path) -> None:
    for qc, message in (
        (tmp_path / "qc.png", "unknown output extension '.png' for --qc"),
        (tmp_path / "missing" / "deeper" / "qc.html", "folder"),
    ):
        options = FuseOptions(transform=case.transform_path, qc=qc)
        with pytest.raises(OutputError, match=message):
            pipeline.fuse_files(case.mri_path, case.pet_path, tmp_path / "f.nii.gz", options, FakeFuser())
    (tmp_path / "old.html").write_text("an earlier page", encoding="utf-8")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        pipeline.fuse_files(
            case.mri_path, case.pet_path, tmp_path / "f.nii.gz", FuseOptions(qc=tmp_path / "old.html"), FakeFuser()
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.html"]  # nothing written, nothing replaced
