"""Clinical DICOM pairs through the command line (issue 10): the frame of reference decides whether to
register, multi-bed PET with an uneven junction is read, a folder of real-world quirks is read right."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import phantoms
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import make_localizer, make_series, pet_suv_tags
from pydicom.uid import generate_uid
from synthetic import Grid
from typer.testing import CliRunner

from medfuse.cli import app

runner = CliRunner()
pytestmark = pytest.mark.slow


def write_pair(folder: Path, pair: phantoms.Pair, *, same_frame: bool, **pet: object) -> tuple[Path, Path]:
    """The pair as a T1 MR series (int16) and a PET series (per-slice slopes, SUV tags) under ``folder``."""
    frame = generate_uid()
    mri = sitk.Cast(sitk.Clamp(pair.mri, lowerBound=0.0, upperBound=32000.0), sitk.sitkInt16)
    study = {"study_uid": generate_uid(), "patient_id": "SARC-01"}
    make_series(folder / "mr", mri, description="T1 SE ax", rescale="none", signed=True,
                frame_of_reference_uid=frame, **study)  # fmt: skip
    make_series(folder / "pt", pair.pet, modality="PT", description="PET AC", rescale="slice", extra=pet_suv_tags(),
                frame_of_reference_uid=frame if same_frame else generate_uid(), **study, **pet)  # type: ignore[arg-type]  # fmt: skip
    return folder / "mr", folder / "pt"


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory) -> tuple[phantoms.Pair, Path, Path]:
    """A thigh MRI resampled into its PET's frame: one FrameOfReferenceUID, already aligned."""
    pair = phantoms.body_pair("thigh", 4, shrink=2, aligned=True)
    return pair, *write_pair(tmp_path_factory.mktemp("same"), pair, same_frame=True)


def fuse(*args: str | Path) -> object:
    return runner.invoke(app, ["fuse", *(str(a) for a in args), "--method", "laplacian", "--no-overlay"])


def report_of(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def summary_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("Fused "))


def test_same_frame_dicom_pair_is_not_registered_by_default(aligned, tmp_path: Path) -> None:
    _pair, mr, pt = aligned
    result = fuse(mr, pt, "-o", tmp_path / "f.nii.gz", "--report", tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    assert "registration: none (same FrameOfReferenceUID: scanner coordinates)." in summary_line(result.output)
    record = report_of(tmp_path)["registration"]
    frame = pydicom.dcmread(next(mr.iterdir()), stop_before_pixels=True).FrameOfReferenceUID
    assert record["requested"] == "auto" and record["source"] == "none (same FrameOfReferenceUID: scanner coordinates)"
    assert (
        record["decision"]
        == f"MRI and PET share FrameOfReferenceUID {frame}: the scanners already placed them in one space"
    )
    assert record["moved_mm"] == 0.0 and record["rotation_deg"] == 0.0 and record["overlap"] > 0.9
    assert record["metric"] is None and record["metric_value"] is None and record["metric_header"] is None
    assert record["confidence"] == {
        "level": "high",
        "spread_mm": None,
        "reason": f"MRI and PET share FrameOfReferenceUID {frame}",
    }
    assert record["transform"]["parameters"] == [0.0] * 6
    assert report_of(tmp_path)["inputs"]["pet"]["dicom"]["frame_of_reference_uid"] == frame


def test_register_rigid_still_registers_a_same_frame_pair_and_keeps_it_in_place(aligned, tmp_path: Path) -> None:
    pair, mr, pt = aligned
    result = fuse(mr, pt, "-o", tmp_path / "f.nii.gz", "--register", "rigid", "--report", tmp_path / "report.json",
                  "--save-transform", tmp_path / "t.tfm")  # fmt: skip
    assert result.exit_code == 0, result.output
    record = report_of(tmp_path)["registration"]
    assert record["requested"] == "rigid" and record["source"] == "rigid"
    assert record["decision"].startswith("--register rigid asks for a registration although MRI and PET share")
    assert pair.tumour_error(sitk.ReadTransform(str(tmp_path / "t.tfm"))) < 2.0
    assert record["metric_value"] <= record["metric_header"] and record["confidence"]["level"] in ("high", "medium")


def test_different_frames_are_registered(tmp_path: Path) -> None:
    pair = phantoms.body_pair("cropped-thigh", 3, shrink=2)
    mr, pt = write_pair(tmp_path / "in", pair, same_frame=False)
    result = fuse(mr, pt, "-o", tmp_path / "f.nii.gz", "--report", tmp_path / "report.json",
                  "--save-transform", tmp_path / "t.tfm")  # fmt: skip
    assert result.exit_code == 0, result.output
    record = report_of(tmp_path)["registration"]
    assert record["requested"] == "auto" and record["source"] == "rigid"
    assert record["decision"] == "MRI and PET have different FrameOfReferenceUIDs, so the PET is registered (rigid)"
    assert "registration: rigid (the PET moved " in summary_line(result.output)
    assert pair.tumour_error(sitk.ReadTransform(str(tmp_path / "t.tfm"))) < pair.header_error()


def test_batch_follows_the_frame_of_reference_too(aligned, tmp_path: Path) -> None:
    _pair, mr, pt = aligned
    case = tmp_path / "studies" / "sarc01"
    shutil.copytree(mr, case / "mr")
    shutil.copytree(pt, case / "pt")
    result = runner.invoke(app, ["batch", str(tmp_path / "studies"), "-o", str(tmp_path / "out"),
                                 "--method", "laplacian", "--workers", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = report_of(tmp_path / "out" / "sarc01")["registration"]
    assert record["requested"] == "auto" and record["source"].startswith("none (same FrameOfReferenceUID")


def test_a_folder_of_real_world_quirks_is_read_right(tmp_path: Path) -> None:
    """One export folder: a whole-body PET of beds with an uneven junction, filed in two sub-folders under
    names without extension; the T1 in the same frame; a localizer, a derived reformat, a copy of one
    PET file, notes and hidden files. The right series are found, the PET is resampled (and says so),
    and the pair is fused in scanner coordinates."""
    depths = phantoms.multibed_positions(60, 3.27, ((29, 3.19),))
    mri_grid = Grid((48, 48, 24), (4.0, 4.0, 5.0), centre=(-85.0, 10.0, -240.0))
    pet_grid = Grid((40, 40, 60), (6.0, 6.0, 3.27), centre=(-60.0, 10.0, -240.0))
    pair = phantoms.Pair("quirks", phantoms.body_mri(mri_grid), phantoms.body_pet(pet_grid, supersample=1),
                         sitk.Euler3DTransform(), phantoms.RIGHT_THIGH_SARCOMA)  # fmt: skip
    export = tmp_path / "EXPORT"
    mr, pt = write_pair(export / "S01", pair, same_frame=True, depths=depths, suffix="", prefix="1.3.12.2.")
    for index, path in enumerate(sorted(pt.iterdir())):  # beds filed apart, as some archives do
        bed = pt.parent / f"bed{1 + index % 2}"
        bed.mkdir(exist_ok=True)
        path.rename(bed / path.name)
    pt.rmdir()
    study = pydicom.dcmread(next(mr.iterdir()), stop_before_pixels=True).StudyInstanceUID
    make_localizer(export / "S00", study_uid=study, patient_id="SARC-01")
    make_series(export / "S02", sitk.Cast(pair.mri, sitk.sitkInt16), description="T1 MPR cor", rescale="none",
                image_type=("DERIVED", "SECONDARY", "MPR"), patient_id="SARC-01")  # fmt: skip
    first_pet = sorted((export / "S01" / "bed1").iterdir())[0]
    shutil.copy(first_pet, export / "S01" / "copy_of_first_slice")
    (export / "README.TXT").write_text("exported by PACS\n")
    (export / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    result = fuse(export, export, "-o", tmp_path / "out" / "f.nii.gz", "--report", tmp_path / "out" / "report.json")
    assert result.exit_code == 0, result.output
    assert "copy_of_first_slice: is a copy of" in result.output
    assert "slice spacing varies: a gap of 3.190 mm" in result.output and "resampled onto 60 slices" in result.output
    report = report_of(tmp_path / "out")
    inputs = report["inputs"]
    assert inputs["mri"]["dicom"]["description"] == "T1 SE ax" and inputs["pet"]["dicom"]["description"] == "PET AC"
    assert inputs["pet"]["size"] == [40, 40, 60] and inputs["pet"]["dicom"]["resampled_slices"]["slices_read"] == 60
    np.testing.assert_allclose(inputs["pet"]["spacing_mm"][2], (depths[-1] - depths[0]) / 59, atol=1e-9)
    assert report["registration"]["source"] == "none (same FrameOfReferenceUID: scanner coordinates)"
