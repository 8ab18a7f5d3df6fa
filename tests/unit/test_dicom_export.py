"""DICOM export: fused (MONOCHROME2) and overlay (RGB) series on the MRI grid, read back two ways."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import clinical_folders, make_series, phantom
from typer.testing import CliRunner

from medfuse import dicom
from medfuse.atomic import output_transaction
from medfuse.cli import app
from medfuse.console import MedfuseWarning
from medfuse.errors import InvalidInputError, OutputError, UsageError

OBLIQUE = sitk.Euler3DTransform((0, 0, 0), -0.1, 0.25, 0.4).GetMatrix()


def read_back(folder: Path) -> sitk.Image:
    """The series as SimpleITK (GDCM) reads it: an independent reader of position and orientation."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_on_grid(image: sitk.Image, grid: sitk.Image) -> None:
    assert image.GetSize() == grid.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), grid.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), grid.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), grid.GetDirection(), atol=1e-6)


@pytest.fixture
def mri(tmp_path: Path) -> dicom.DicomVolume:
    make_series(tmp_path / "mri", phantom((5, 9, 7)), direction=OBLIQUE, spacing=(0.8, 0.9, 3.0), origin=(10, -20, 5))
    return dicom.read_dicom_series(tmp_path / "mri", role="MRI")


def fused_like(grid: sitk.Image) -> sitk.Image:
    values = sitk.GetArrayFromImage(grid)
    fused = sitk.GetImageFromArray((values / values.max()).astype(np.float32))
    fused.CopyInformation(grid)
    return fused


def overlay_like(grid: sitk.Image) -> sitk.Image:
    values = sitk.GetArrayFromImage(grid)
    rgb = np.stack([values / values.max() * 255, np.zeros_like(values), 255 - values / values.max() * 255], axis=-1)
    overlay = sitk.GetImageFromArray(np.rint(rgb).astype(np.uint8), isVector=True)
    overlay.CopyInformation(grid)
    return overlay


def test_fused_series_round_trip_keeps_grid_values_and_patient(tmp_path: Path, mri: dicom.DicomVolume) -> None:
    fused = fused_like(mri.image)
    with pytest.warns(MedfuseWarning, match="out: the output folder did not exist and was created"):
        out = dicom.write_dicom_series(
            fused, tmp_path / "out" / "fused", reference=mri.info, description="medfuse fused MRI+PET (net)", rgb=False
        )

    back = read_back(out)
    assert_on_grid(back, mri.image)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(fused), atol=1 / 65535)

    files = sorted(out.iterdir())
    assert len(files) == 5
    datasets = [pydicom.dcmread(f) for f in files]
    source = pydicom.dcmread(mri.info["reference_file"])
    series_uids = {str(d.SeriesInstanceUID) for d in datasets}
    assert len(series_uids) == 1 and mri.info["series_uid"] not in series_uids
    assert len({str(d.SOPInstanceUID) for d in datasets}) == 5
    for dataset in datasets:
        assert dataset.PatientID == source.PatientID and str(dataset.PatientName) == str(source.PatientName)
        assert dataset.PatientBirthDate == source.PatientBirthDate
        assert dataset.StudyInstanceUID == source.StudyInstanceUID
        assert dataset.AccessionNumber == source.AccessionNumber
        assert dataset.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert list(dataset.ImageType) == ["DERIVED", "SECONDARY"]
        assert dataset.SeriesDescription == "medfuse fused MRI+PET (net)"
        assert dataset.PhotometricInterpretation == "MONOCHROME2"
        assert dataset.SOPClassUID == dicom.SECONDARY_CAPTURE
        np.testing.assert_allclose([float(v) for v in dataset.ImageOrientationPatient], OBLIQUE[0::3] + OBLIQUE[1::3],
                                   atol=1e-9)  # fmt: skip
    # and our own reader (as used on the next run) lands on the same grid with the same values
    again = dicom.read_dicom_series(out, role="MRI", series_uid=series_uids.pop())
    assert_on_grid(again.image, mri.image)
    np.testing.assert_allclose(sitk.GetArrayFromImage(again.image), sitk.GetArrayFromImage(fused), atol=1 / 65535)


def test_rgb_overlay_round_trip_is_exact(tmp_path: Path, mri: dicom.DicomVolume) -> None:
    overlay = overlay_like(mri.image)
    out = dicom.write_dicom_series(
        overlay, tmp_path / "overlay", reference=mri.info, description="medfuse MRI+PET colour overlay", rgb=True
    )
    back = read_back(out)
    assert back.GetNumberOfComponentsPerPixel() == 3
    assert_on_grid(back, mri.image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(overlay))
    first = pydicom.dcmread(sorted(out.iterdir())[0])
    assert first.PhotometricInterpretation == "RGB" and first.SamplesPerPixel == 3
    assert first.pixel_array.shape == (9, 7, 3)


def test_fused_and_overlay_of_a_nifti_mri_share_fresh_study_and_frame(tmp_path: Path) -> None:
    grid = sitk.GetImageFromArray(phantom((4, 6, 5)).astype(np.float32))
    grid.SetSpacing((1.0, 1.5, 2.5))
    grid.SetOrigin((3.0, 4.0, 5.0))
    targets = dicom.plan_dicom_outputs(tmp_path / "result", inputs=[], overlay=True, overwrite=False)
    with pytest.warns(MedfuseWarning, match="result: the output folder"), output_transaction() as tx:
        written = dicom.write_fused_dicom(
            targets, fused_like(grid), overlay_like(grid), reference=None, method="net", transaction=tx
        )
        assert not (tmp_path / "result" / "fused").exists()  # nothing visible before commit
    assert written == [tmp_path / "result" / "fused", tmp_path / "result" / "overlay"]
    fused, overlay = (pydicom.dcmread(sorted(folder.iterdir())[0]) for folder in written)
    assert fused.StudyInstanceUID == overlay.StudyInstanceUID and fused.StudyInstanceUID
    assert fused.FrameOfReferenceUID == overlay.FrameOfReferenceUID and fused.FrameOfReferenceUID
    assert fused.SeriesInstanceUID != overlay.SeriesInstanceUID
    assert fused.SeriesDescription == "medfuse fused MRI+PET (net)"
    assert overlay.SeriesDescription == "medfuse MRI+PET colour overlay"
    assert_on_grid(read_back(written[0]), grid)
    assert_on_grid(read_back(written[1]), grid)
    assert sorted(p.name for p in (tmp_path / "result").iterdir()) == ["fused", "overlay"]


def test_left_handed_grid_comes_back_with_the_same_voxels_in_space(tmp_path: Path) -> None:
    grid = sitk.GetImageFromArray(phantom((4, 5, 6)).astype(np.float32) / 1000)
    grid.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))  # slices stacked against the DICOM normal
    back = read_back(dicom.write_dicom_series(grid, tmp_path / "lh", reference=None, description="lh", rgb=False))
    values, returned = sitk.GetArrayFromImage(grid), sitk.GetArrayFromImage(back)
    np.testing.assert_allclose(returned, values[::-1], atol=1 / 65535)
    for index in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        point = grid.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(back.TransformIndexToPhysicalPoint(back.TransformPhysicalPointToIndex(point)), point,
                                   atol=1e-6)  # fmt: skip


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path, mri: dicom.DicomVolume) -> None:
    fused = fused_like(mri.image)
    out = dicom.write_dicom_series(fused, tmp_path / "f", reference=mri.info, description="one", rgb=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OutputError, match=r"f: the output already exists; pass --overwrite to replace it\."):
        dicom.write_dicom_series(fused, out, reference=mri.info, description="two", rgb=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    dicom.write_dicom_series(fused, out, reference=mri.info, description="two", rgb=False, overwrite=True)
    assert {str(pydicom.dcmread(p).SeriesDescription) for p in out.iterdir()} == {"two"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "mri"]


def test_a_write_failure_leaves_nothing(tmp_path: Path, mri: dicom.DicomVolume, monkeypatch) -> None:
    calls = {"n": 0}
    original = pydicom.Dataset.save_as

    def failing_save(self, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return original(self, filename, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", failing_save)
    expected = r"out/fused: the DICOM series could not be written \(No space left on device\)"
    with pytest.warns(MedfuseWarning, match="was created"), pytest.raises(OutputError, match=expected):
        dicom.write_dicom_series(fused_like(mri.image), tmp_path / "out" / "fused", reference=mri.info,
                                 description="x", rgb=False)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mri"]


def test_unwritable_volumes_are_refused_before_writing(tmp_path: Path, mri: dicom.DicomVolume) -> None:
    fused = fused_like(mri.image)
    broken = sitk.GetArrayFromImage(fused)
    broken[2, 3, 4] = np.nan
    nan_image = sitk.GetImageFromArray(broken)
    nan_image.CopyInformation(fused)
    with pytest.raises(OutputError, match="holds NaN or infinite values; nothing was written"):
        dicom.write_dicom_series(nan_image, tmp_path / "nan", reference=mri.info, description="x", rgb=False)
    with pytest.raises(OutputError, match=r"an RGB series needs 3 component\(s\) per voxel, not 1"):
        dicom.write_dicom_series(fused, tmp_path / "rgb", reference=mri.info, description="x", rgb=True)
    too_bright = sitk.Compose([fused * 2.0] * 3)
    with pytest.raises(OutputError, match=r"needs 8-bit colours or floats in \[0, 1\]"):
        dicom.write_dicom_series(too_bright, tmp_path / "rgb", reference=mri.info, description="x", rgb=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mri"]


def test_float_rgb_in_unit_range_is_scaled_to_8_bit(tmp_path: Path, mri: dicom.DicomVolume) -> None:
    fused = fused_like(mri.image)
    colour = sitk.Compose([fused, fused * 0.5, fused * 0.0])
    back = read_back(dicom.write_dicom_series(colour, tmp_path / "c", reference=None, description="c", rgb=True))
    expected = np.rint(sitk.GetArrayFromImage(colour) * 255)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), expected)


def test_an_exported_overlay_is_not_taken_as_a_grey_input(tmp_path: Path, mri: dicom.DicomVolume) -> None:
    out = dicom.write_dicom_series(
        overlay_like(mri.image), tmp_path / "o", reference=mri.info, description="o", rgb=True
    )
    uid = str(pydicom.dcmread(next(out.iterdir())).SeriesInstanceUID)
    with pytest.raises(InvalidInputError, match=r"series .* holds colour pixels \(RGB\), not grey values"):
        dicom.read_dicom_series(out, role="PET", series_uid=uid)


def test_dicom_output_folder_is_checked_before_any_work(tmp_path: Path, mri: dicom.DicomVolume) -> None:
    with pytest.raises(UsageError, match=r"--format dicom writes a folder of DICOM series, not a \.nii\.gz file"):
        dicom.plan_dicom_outputs(tmp_path / "fused.nii.gz", inputs=[], overlay=True, overwrite=False)
    with pytest.raises(OutputError, match=r"mri/out: is inside the input folder .*mri, which medfuse never writes"):
        dicom.plan_dicom_outputs(tmp_path / "mri" / "out", inputs=[tmp_path / "mri"], overlay=True, overwrite=False)
    (tmp_path / "res" / "overlay").mkdir(parents=True)
    (tmp_path / "res" / "overlay" / "IM00001.dcm").write_bytes(b"earlier result")
    with pytest.raises(OutputError, match=r"res/overlay: the output already exists; pass --overwrite"):
        dicom.plan_dicom_outputs(tmp_path / "res", inputs=[tmp_path / "mri"], overlay=True, overwrite=False)
    targets = dicom.plan_dicom_outputs(tmp_path / "res", inputs=[tmp_path / "mri"], overlay=False, overwrite=False)
    assert targets == {"fused": tmp_path / "res" / "fused"}


# ---- medfuse fuse ... --format dicom -----------------------------------------------------------------
@pytest.mark.slow
def test_cli_writes_fused_and_overlay_series_on_the_mri_grid(tmp_path: Path) -> None:
    folders = clinical_folders(tmp_path / "in")
    study = folders["study"]
    out = tmp_path / "result"
    result = CliRunner().invoke(app, ["fuse", str(study), str(study), "-o", str(out), "--format", "dicom",
                                      "--method", "laplacian", "--register", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["fused", "overlay"]
    mri = dicom.read_dicom_series(study, role="MRI")
    fused, overlay = read_back(out / "fused"), read_back(out / "overlay")
    assert_on_grid(fused, mri.image)
    assert_on_grid(overlay, mri.image)
    assert overlay.GetNumberOfComponentsPerPixel() == 3
    values = sitk.GetArrayFromImage(fused)
    assert values.min() >= -1e-6 and values.max() <= 1.0 + 1e-4 and values.std() > 0.01
    first = pydicom.dcmread(sorted((out / "fused").iterdir())[0])
    source = pydicom.dcmread(mri.info["reference_file"])
    assert (first.PatientID, first.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)
    assert first.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert first.SeriesDescription == "medfuse fused MRI+PET (laplacian)"

    again = CliRunner().invoke(app, ["fuse", str(study), str(study), "-o", str(out), "--format", "dicom",
                                     "--method", "laplacian", "--register", "none"])  # fmt: skip
    assert again.exit_code == 5 and "the output already exists; pass --overwrite" in again.output


def test_cli_refuses_a_file_name_for_dicom_output(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fuse", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "x.nii.gz"),
                                      "--format", "dicom"])  # fmt: skip
    assert result.exit_code == 2
    assert "--format dicom writes a folder of DICOM series, not a .nii.gz file" in result.output
