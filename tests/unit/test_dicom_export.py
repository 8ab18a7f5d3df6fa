"""DICOM export: Enhanced MR (fused) and Enhanced MR Color (overlay) series on the MRI grid.

Every written file is checked by the standard's validator (dciodvfy, Debian dicom3tools: zero errors)
and read back by three independent readers (pydicom by hand from the functional groups, SimpleITK's
GDCM and dcm2niix), whose geometry must match the MRI to 1e-4 mm and values to the quantisation step.
The references to the source series are checked against the source files themselves: the frame at
each position must name the MRI slice (file, or frame of a multi-frame file) at that position.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import PET_STORAGE, clinical_folders, make_enhanced_series, make_series, pet_suv_tags, phantom
from typer.testing import CliRunner

from medfuse import dicom
from medfuse.atomic import output_transaction
from medfuse.cli import app
from medfuse.console import MedfuseWarning
from medfuse.dicom.headers import quiet_dcmread
from medfuse.errors import InvalidInputError, OutputError, UsageError

OBLIQUE = sitk.Euler3DTransform((0, 0, 0), -0.1, 0.25, 0.4).GetMatrix()
GEOMETRY_MM = 1e-4
#: Values a real export carries that are not valid DICOM (a 20-character StudyID in an SH field...).
INVALID_TAGS = {
    "StudyID": "ABCDEFGHIJKLMNOPQRST",
    "AccessionNumber": "ACC-0123456789-XYZ",
    "PatientBirthDate": "1960-01-01",
    "PatientSex": "female",
    "PatientAge": "45 years",
    "StudyTime": "10:30:00",
    "StudyDescription": "PET/MRI brain " * 6,
    "PatientName": "Doe^" + "J" * 70,
    "BodyPartExamined": "HEAD",
    "PatientPosition": "HFS",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # .ci/run installs both; a machine without them cannot check the export
        pytest.fail(f"{name} is not installed: apt-get install dicom3tools dcm2niix (see .ci/run)")
    return path


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """The standard's validator on one file: its error and warning lines."""
    done = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]


def assert_valid(folder: Path) -> None:
    files = sorted(folder.iterdir())
    assert files, f"{folder} is empty"
    for path in files:
        errors, warnings = dciodvfy(path)
        assert not errors, f"{path.name}: {errors} (warnings: {warnings})"


def canonical(image: sitk.Image) -> sitk.Image:
    """The image with its axes permuted and flipped to the nearest LPS order, so readers that store the
    same voxels in another order (dcm2niix flips rows; a left-handed grid) compare directly."""
    return sitk.DICOMOrient(image, "LPS")


def assert_on_grid(image: sitk.Image, grid: sitk.Image, *, values: np.ndarray | None = None, atol: float = 0) -> None:
    image, grid = canonical(image), canonical(grid)
    assert image.GetSize() == grid.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), grid.GetSpacing(), atol=GEOMETRY_MM)
    np.testing.assert_allclose(image.GetOrigin(), grid.GetOrigin(), atol=GEOMETRY_MM)
    np.testing.assert_allclose(image.GetDirection(), grid.GetDirection(), atol=GEOMETRY_MM)
    if values is not None:
        np.testing.assert_allclose(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(grid), atol=atol, rtol=0)


def read_with_pydicom(folder: Path) -> sitk.Image:
    """The series read with pydicom alone: pixels through the rescale, frames placed by their own
    Plane Position, orientation and spacing from the shared functional groups."""
    (path,) = sorted(folder.iterdir())
    dataset = pydicom.dcmread(path)
    shared = dataset.SharedFunctionalGroupsSequence[0]
    row_col = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    positions = np.array(
        [frame.PlanePositionSequence[0].ImagePositionPatient for frame in dataset.PerFrameFunctionalGroupsSequence],
        float,
    )
    steps = np.diff(positions, axis=0)
    assert np.allclose(steps, steps[0], atol=1e-6), "frames are not evenly spaced along one line"
    slice_step = float(np.linalg.norm(steps[0]))
    normal = steps[0] / slice_step
    assert np.allclose(normal, np.cross(row_col[:3], row_col[3:]), atol=1e-6), "frames not stacked along the normal"
    pixels = dataset.pixel_array.astype(np.float64)
    if "PixelValueTransformationSequence" in shared:
        transform = shared.PixelValueTransformationSequence[0]
        pixels = pixels * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
    image = sitk.GetImageFromArray(pixels, isVector=pixels.ndim == 4)
    image.SetOrigin(positions[0])
    image.SetSpacing((column_spacing, row_spacing, slice_step))
    image.SetDirection(np.column_stack([row_col[:3], row_col[3:], normal]).ravel())
    return image


def read_with_sitk(folder: Path) -> sitk.Image:
    (path,) = sorted(folder.iterdir())
    return sitk.ReadImage(str(path))


def read_with_dcm2niix(folder: Path, scratch: Path) -> sitk.Image:
    scratch.mkdir(parents=True)
    done = subprocess.run([_tool("dcm2niix"), "-z", "n", "-f", "series", "-o", str(scratch), str(folder)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (nifti,) = scratch.glob("*.nii")
    return sitk.ReadImage(str(nifti))


def check_readers(folder: Path, expected: sitk.Image, scratch: Path, step: float) -> None:
    """Geometry to 1e-4 mm and values to ``step`` in pydicom, SimpleITK and dcm2niix."""
    for image in (read_with_pydicom(folder), read_with_sitk(folder), read_with_dcm2niix(folder, scratch)):
        assert_on_grid(image, expected, values=sitk.GetArrayFromImage(expected), atol=step)


@pytest.fixture
def mri(tmp_path: Path) -> dicom.DicomVolume:
    with warnings.catch_warnings():  # pydicom warns about the invalid values the factory is told to write
        warnings.simplefilter("ignore")
        make_series(tmp_path / "mri", phantom((5, 9, 7)), direction=OBLIQUE, spacing=(0.8, 0.9, 3.0),
                    origin=(10, -20, 5), extra=INVALID_TAGS)  # fmt: skip
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


def quantisation_step(folder: Path) -> float:
    (path,) = sorted(folder.iterdir())
    return float(
        pydicom.dcmread(path).SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope
    )


def test_fused_series_validates_and_sits_on_the_mri_grid_in_every_reader(
    tmp_path: Path, mri: dicom.DicomVolume
) -> None:
    fused = fused_like(mri.image)
    with pytest.warns(MedfuseWarning) as caught:
        out = dicom.write_dicom_series(
            fused, tmp_path / "out" / "fused", reference=mri.info, description="medfuse fused MRI+PET (net)", rgb=False
        )
    assert_valid(out)
    step = quantisation_step(out)
    assert step == pytest.approx(float(np.ptp(sitk.GetArrayFromImage(fused))) / 65535, rel=1e-6)
    check_readers(out, fused, tmp_path / "nii", step / 2 + 1e-6)
    again = dicom.read_dicom_series(out, role="MRI")  # and our own reader, as the next run reads it
    assert_on_grid(again.image, fused, values=sitk.GetArrayFromImage(fused), atol=step / 2 + 1e-6)

    (path,) = sorted(out.iterdir())
    dataset = pydicom.dcmread(path)
    source = quiet_dcmread(Path(mri.info["reference_file"]))
    assert dataset.SOPClassUID == dicom.ENHANCED_MR and dataset.Modality == "MR"
    assert list(dataset.ImageType) == ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    assert dataset.SeriesInstanceUID != mri.info["series_uid"]
    assert (dataset.PatientID, dataset.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)
    assert dataset.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert dataset.SeriesDescription == "medfuse fused MRI+PET (net)"
    # invalid input values made valid, each change said once
    assert dataset.StudyID == "ABCDEFGHIJKLMNOP" and dataset.AccessionNumber == "ACC-0123456789-X"
    assert (dataset.PatientBirthDate, dataset.PatientSex, dataset.StudyTime) == ("19600101", "F", "103000")
    assert "PatientAge" not in dataset and len(dataset.StudyDescription) <= 64
    assert len(str(dataset.PatientName)) == 64 and dataset.PatientPosition == "HFS"
    region = dataset.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodeMeaning) == ("69536005", "Head")
    messages = [str(w.message) for w in caught]
    assert any("the MRI's StudyID 'ABCDEFGHIJKLMNOPQRST' is not a valid DICOM SH value; the exported series "
               "carry 'ABCDEFGHIJKLMNOP'" in m for m in messages)  # fmt: skip
    assert any("PatientAge '45 years' is not a valid DICOM AS value; the exported series leave it out" in m
               for m in messages)  # fmt: skip
    assert sum("StudyID" in m for m in messages) == 1


def test_overlay_series_validates_and_reads_back_exactly(tmp_path: Path, mri: dicom.DicomVolume) -> None:
    overlay = overlay_like(mri.image)
    with pytest.warns(MedfuseWarning):
        out = dicom.write_dicom_series(
            overlay, tmp_path / "overlay", reference=mri.info, description="medfuse MRI+PET colour overlay", rgb=True
        )
    assert_valid(out)
    check_readers(out, overlay, tmp_path / "nii", 0)
    (path,) = sorted(out.iterdir())
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == dicom.ENHANCED_MR_COLOR
    assert (dataset.PhotometricInterpretation, dataset.SamplesPerPixel, dataset.BitsAllocated) == ("RGB", 3, 8)
    assert dataset.pixel_array.shape == (5, 9, 7, 3)
    assert dataset.ICCProfile[12:16] == b"spac" and dataset.ICCProfile[16:20] == b"RGB "


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
    for folder in written:
        assert_valid(folder)
    fused, overlay = (pydicom.dcmread(next(folder.iterdir())) for folder in written)
    assert_no_references(fused)  # a NIfTI MRI (and PET) has no instances to reference
    assert_no_references(overlay)
    assert fused.StudyInstanceUID == overlay.StudyInstanceUID and fused.StudyInstanceUID
    assert fused.FrameOfReferenceUID == overlay.FrameOfReferenceUID and fused.FrameOfReferenceUID
    assert fused.SeriesInstanceUID != overlay.SeriesInstanceUID
    assert fused.SeriesDescription == "medfuse fused MRI+PET (net)"
    assert overlay.SeriesDescription == "medfuse MRI+PET colour overlay"
    region = fused.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].AnatomicRegionSequence[0]
    assert region.CodeMeaning == "Body structure"  # a NIfTI MRI does not say what it shows
    check_readers(written[0], fused_like(grid), tmp_path / "nii_fused", quantisation_step(written[0]) / 2 + 1e-6)
    check_readers(written[1], overlay_like(grid), tmp_path / "nii_overlay", 0)
    assert sorted(p.name for p in (tmp_path / "result").iterdir()) == ["fused", "overlay"]


def test_left_handed_grid_is_stored_along_the_normal_with_the_same_voxels_in_space(tmp_path: Path) -> None:
    grid = sitk.GetImageFromArray(phantom((4, 5, 6)).astype(np.float32) / 1000)
    grid.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))  # slices stacked against the DICOM normal
    out = dicom.write_dicom_series(grid, tmp_path / "lh", reference=None, description="lh", rgb=False)
    assert_valid(out)
    step = quantisation_step(out)
    check_readers(out, grid, tmp_path / "nii", step / 2 + 1e-6)
    back = read_with_sitk(out)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(grid)[::-1], atol=step)
    for index in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        point = grid.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(back.TransformIndexToPhysicalPoint(back.TransformPhysicalPointToIndex(point)), point,
                                   atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("StudyID", "ABCDEFGHIJKLMNOPQRST", "ABCDEFGHIJKLMNOP"),
        ("StudyID", "Étude-ßü-Ärztin-Öl", "Étude-ßü-Ärz"),  # 16 bytes of UTF-8, not 16 characters
        ("PatientID", "P\\1", "P 1"),  # a backslash would split it into two values
        ("StudyDate", "2024/03/05", "20240305"),
        ("StudyDate", "March 5th", ""),
        ("PatientSex", "X", ""),
        ("PatientPosition", "hfs", "HFS"),
        ("StudyDescription", "x" * 70, "x" * 64),
    ],
)
def test_copied_values_are_made_valid_for_their_vr(keyword: str, value: str, expected: str) -> None:
    with pytest.warns(MedfuseWarning, match=f"mri: the MRI's {keyword} .* is not a valid DICOM"):
        clean = dicom.export_reference({"folder": "mri", "export_tags": {keyword: value}})["export_tags"]
    assert clean[keyword] == expected


def test_an_invalid_uid_gets_a_new_one_and_says_so(tmp_path: Path) -> None:
    with pytest.warns(MedfuseWarning, match="StudyInstanceUID '1.2.03' is not a valid DICOM UI value; the exported "
                      "series get a new one, so a PACS files them apart from the MRI"):  # fmt: skip
        clean = dicom.export_reference({"folder": "mri", "export_tags": {"StudyInstanceUID": "1.2.03"}})
    assert clean["export_tags"]["StudyInstanceUID"].startswith("1.2.826.0.1.3680043")


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    grid = sitk.GetImageFromArray(phantom((4, 6, 5)).astype(np.float32))
    fused = fused_like(grid)
    out = dicom.write_dicom_series(fused, tmp_path / "f", reference=None, description="one", rgb=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OutputError, match=r"f: the output already exists; pass --overwrite to replace it\."):
        dicom.write_dicom_series(fused, out, reference=None, description="two", rgb=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    dicom.write_dicom_series(fused, out, reference=None, description="two", rgb=False, overwrite=True)
    assert {str(pydicom.dcmread(p).SeriesDescription) for p in out.iterdir()} == {"two"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_write_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    grid = sitk.GetImageFromArray(phantom((4, 6, 5)).astype(np.float32))
    calls = {"n": 0}
    original = pydicom.Dataset.save_as

    def failing_save(self, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the overlay, after the fused series was written
            raise OSError(28, "No space left on device")
        return original(self, filename, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", failing_save)
    targets = dicom.plan_dicom_outputs(tmp_path / "out", inputs=[], overlay=True, overwrite=False)
    expected = r"out/overlay: the DICOM series could not be written \(No space left on device\)"
    with pytest.warns(MedfuseWarning, match="was created"), pytest.raises(OutputError, match=expected):
        with output_transaction() as tx:
            dicom.write_fused_dicom(targets, fused_like(grid), overlay_like(grid), reference=None, method="net",
                                    transaction=tx)  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # not even the folder the plan created


def test_unwritable_volumes_are_refused_before_writing(tmp_path: Path) -> None:
    fused = fused_like(sitk.GetImageFromArray(phantom((4, 6, 5)).astype(np.float32)))
    broken = sitk.GetArrayFromImage(fused)
    broken[2, 3, 4] = np.nan
    nan_image = sitk.GetImageFromArray(broken)
    nan_image.CopyInformation(fused)
    with pytest.raises(OutputError, match="holds NaN or infinite values; nothing was written"):
        dicom.write_dicom_series(nan_image, tmp_path / "nan", reference=None, description="x", rgb=False)
    with pytest.raises(OutputError, match=r"an RGB series needs 3 component\(s\) per voxel, not 1"):
        dicom.write_dicom_series(fused, tmp_path / "rgb", reference=None, description="x", rgb=True)
    too_bright = sitk.Compose([fused * 2.0] * 3)
    with pytest.raises(OutputError, match=r"needs 8-bit colours or floats in \[0, 1\]"):
        dicom.write_dicom_series(too_bright, tmp_path / "rgb", reference=None, description="x", rgb=True)
    assert list(tmp_path.iterdir()) == []


def test_float_rgb_in_unit_range_is_scaled_to_8_bit(tmp_path: Path) -> None:
    fused = fused_like(sitk.GetImageFromArray(phantom((4, 6, 5)).astype(np.float32)))
    colour = sitk.Compose([fused, fused * 0.5, fused * 0.0])
    back = read_with_sitk(dicom.write_dicom_series(colour, tmp_path / "c", reference=None, description="c", rgb=True))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), np.rint(sitk.GetArrayFromImage(colour) * 255))


def test_an_exported_overlay_is_not_taken_as_a_grey_input(tmp_path: Path) -> None:
    grid = sitk.GetImageFromArray(phantom((4, 6, 5)).astype(np.float32))
    out = dicom.write_dicom_series(overlay_like(grid), tmp_path / "o", reference=None, description="o", rgb=True)
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


# ---- references to the source series ------------------------------------------------------------------
def slices_on_disk(folder: Path) -> dict[tuple[str, int | None], tuple[str, np.ndarray]]:
    """SOP Class UID and position of every slice of a series as its files say, read with pydicom alone,
    by (SOP Instance UID, frame number) – the frame number ``None`` for single-frame files."""
    slices = {}
    for path in sorted(folder.iterdir()):
        dataset = quiet_dcmread(path)
        if "PerFrameFunctionalGroupsSequence" in dataset:
            for number, frame in enumerate(dataset.PerFrameFunctionalGroupsSequence, start=1):
                position = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float)
                slices[(dataset.SOPInstanceUID, number)] = (dataset.SOPClassUID, position)
        else:
            slices[(dataset.SOPInstanceUID, None)] = (
                dataset.SOPClassUID,
                np.array(dataset.ImagePositionPatient, float),
            )
    return slices


def code(item: pydicom.Dataset) -> tuple[str, str, str]:
    return item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning


SOURCE_IMAGE = ("121322", "DCM", "Source image for image processing operation")
SOURCE_SERIES = ("121323", "DCM", "Source series for image processing operation")
RESAMPLING = ("113085", "DCM", "Spatial resampling")


def evidence(sequence: pydicom.Sequence) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(study, series) -> {(SOP Class, SOP Instance)} of a Hierarchical SOP Instance Reference sequence."""
    found: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for study in sequence:
        for series in study.ReferencedSeriesSequence:
            found.setdefault((study.StudyInstanceUID, series.SeriesInstanceUID), set()).update(
                (item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) for item in series.ReferencedSOPSequence
            )
    return found


def assert_frames_reference_their_mri_slices(folder: Path, mri_folder: Path, mri: dicom.DicomVolume) -> None:
    """Every frame derives from exactly the MRI slice at its position (checked against the MRI's files),
    each slice is referenced once, and the Source Image Evidence lists exactly those instances."""
    (path,) = sorted(folder.iterdir())
    dataset = pydicom.dcmread(path)
    on_disk = slices_on_disk(mri_folder)
    referenced = []
    for frame in dataset.PerFrameFunctionalGroupsSequence:
        (derivation,) = frame.DerivationImageSequence
        assert [code(c) for c in derivation.DerivationCodeSequence] == [RESAMPLING]
        assert "registered to the MRI and resampled onto its grid" in derivation.DerivationDescription
        (source,) = derivation.SourceImageSequence
        key = (source.ReferencedSOPInstanceUID, source.get("ReferencedFrameNumber"))
        sop_class, position = on_disk[key]
        np.testing.assert_allclose(frame.PlanePositionSequence[0].ImagePositionPatient, position, atol=GEOMETRY_MM)
        assert source.ReferencedSOPClassUID == sop_class
        assert [code(c) for c in source.PurposeOfReferenceCodeSequence] == [SOURCE_IMAGE]
        assert source.SpatialLocationsPreserved == "YES"
        referenced.append(key)
    assert sorted(referenced, key=str) == sorted(on_disk, key=str)  # every slice, once
    assert "DerivationImageSequence" not in dataset.SharedFunctionalGroupsSequence[0]
    instances = {(on_disk[key][0], key[0]) for key in referenced}
    assert evidence(dataset.SourceImageEvidenceSequence) == {(mri.info["study_uid"], mri.info["series_uid"]): instances}
    assert (mri.info["study_uid"], mri.info["series_uid"], [SOURCE_SERIES]) in related_series(dataset)


def related_series(dataset: pydicom.Dataset) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    return [
        (item.StudyInstanceUID, item.SeriesInstanceUID, [code(c) for c in item.PurposeOfReferenceCodeSequence])
        for item in dataset.get("RelatedSeriesSequence", [])
    ]


def assert_no_references(dataset: pydicom.Dataset) -> None:
    groups = [dataset.SharedFunctionalGroupsSequence[0], *dataset.PerFrameFunctionalGroupsSequence]
    assert not any("DerivationImageSequence" in group or "ReferencedImageSequence" in group for group in groups)
    for keyword in ("RelatedSeriesSequence", "SourceImageEvidenceSequence", "ReferencedImageEvidenceSequence"):
        assert keyword not in dataset


def left_handed(image: sitk.Image) -> sitk.Image:
    """The same voxels in space on a left-handed grid: slices in reverse order, third axis reversed."""
    flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[::-1])
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3) * [1, 1, -1]
    flipped.SetDirection(direction.ravel())
    flipped.SetSpacing(image.GetSpacing())
    flipped.SetOrigin(image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1)))
    return flipped


@pytest.mark.parametrize(
    ("files", "grid"),
    [
        ("oblique", "as read"),
        ("oblique, numbered against the normal", "as read"),  # a left-handed series on disk
        ("oblique", "left-handed"),  # the volume handed over on a left-handed grid (same voxels)
    ],
)
def test_every_frame_references_the_mri_slice_at_its_position(tmp_path: Path, files: str, grid: str) -> None:
    direction = np.asarray(OBLIQUE).reshape(3, 3)
    if "against" in files:
        direction = direction * [1, 1, -1]
    make_series(tmp_path / "mri", phantom((6, 9, 7)), direction=direction.ravel(), spacing=(0.8, 0.9, 3.0),
                origin=(10, -20, 5))  # fmt: skip
    mri = dicom.read_dicom_series(tmp_path / "mri", role="MRI")
    image = mri.image if grid == "as read" else left_handed(mri.image)
    fused, overlay = fused_like(image), overlay_like(image)
    out = dicom.write_dicom_series(fused, tmp_path / "fused", reference=mri.info, description="f", rgb=False)
    colour = dicom.write_dicom_series(overlay, tmp_path / "overlay", reference=mri.info, description="o", rgb=True)
    for folder in (out, colour):
        assert_valid(folder)
        assert_frames_reference_their_mri_slices(folder, tmp_path / "mri", mri)
    check_readers(out, fused, tmp_path / "nii", quantisation_step(out) / 2 + 1e-6)
    check_readers(colour, overlay, tmp_path / "nii_colour", 0)


def test_an_enhanced_multi_frame_mri_is_referenced_frame_by_frame(tmp_path: Path) -> None:
    make_enhanced_series(tmp_path / "mri", phantom((5, 8, 6)), spacing=(1.0, 1.2, 2.5), origin=(3, 4, 5))
    mri = dicom.read_dicom_series(tmp_path / "mri", role="MRI")
    fused = fused_like(mri.image)
    out = dicom.write_dicom_series(fused, tmp_path / "fused", reference=mri.info, description="f", rgb=False)
    assert_valid(out)
    assert_frames_reference_their_mri_slices(out, tmp_path / "mri", mri)
    frames = pydicom.dcmread(next(out.iterdir())).PerFrameFunctionalGroupsSequence
    numbers = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber for f in frames]
    assert numbers == [5, 4, 3, 2, 1]  # the factory stores the frames from the top slice down
    check_readers(out, fused, tmp_path / "nii", quantisation_step(out) / 2 + 1e-6)


@pytest.fixture
def pet(tmp_path: Path) -> dicom.DicomVolume:
    make_series(tmp_path / "pet", phantom((4, 6, 5), kind="pet"), modality="PT", spacing=(4.0, 4.0, 4.0),
                rescale="slice", extra=pet_suv_tags())  # fmt: skip
    return dicom.read_dicom_series(tmp_path / "pet", role="PET")


def test_fused_and_overlay_reference_the_pet_series_and_all_its_instances(
    tmp_path: Path, mri: dicom.DicomVolume, pet: dicom.DicomVolume
) -> None:
    targets = dicom.plan_dicom_outputs(tmp_path / "result", inputs=[], overlay=True, overwrite=False)
    fused, overlay = fused_like(mri.image), overlay_like(mri.image)
    with pytest.warns(MedfuseWarning), output_transaction() as tx:  # the MRI's invalid values, repaired
        written = dicom.write_fused_dicom(targets, fused, overlay, reference=mri.info, pet=pet.info, method="net",
                                          transaction=tx)  # fmt: skip
    pet_instances = {(v[0], k[0]) for k, v in slices_on_disk(tmp_path / "pet").items()}
    assert {c for c, _ in pet_instances} == {PET_STORAGE} and len(pet_instances) == 4
    for folder in written:
        assert_valid(folder)
        assert_frames_reference_their_mri_slices(folder, tmp_path / "mri", mri)
        dataset = pydicom.dcmread(next(folder.iterdir()))
        assert related_series(dataset) == [
            (mri.info["study_uid"], mri.info["series_uid"], [SOURCE_SERIES]),
            (pet.info["study_uid"], pet.info["series_uid"], [SOURCE_SERIES]),
        ]
        shared = dataset.SharedFunctionalGroupsSequence[0]
        assert {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in shared.ReferencedImageSequence} == (
            pet_instances
        )
        assert all([code(c) for c in i.PurposeOfReferenceCodeSequence] == [SOURCE_IMAGE]
                   for i in shared.ReferencedImageSequence)  # fmt: skip
        assert evidence(dataset.ReferencedImageEvidenceSequence) == {
            (pet.info["study_uid"], pet.info["series_uid"]): pet_instances
        }
    check_readers(written[0], fused, tmp_path / "nii_fused", quantisation_step(written[0]) / 2 + 1e-6)
    check_readers(written[1], overlay, tmp_path / "nii_overlay", 0)


def test_a_nifti_mri_with_a_dicom_pet_derives_from_the_pet_instances_alone(
    tmp_path: Path, pet: dicom.DicomVolume
) -> None:
    grid = sitk.GetImageFromArray(phantom((4, 6, 5)).astype(np.float32))
    reference = dicom.export_reference(None, pet.info)
    out = dicom.write_dicom_series(fused_like(grid), tmp_path / "f", reference=reference, description="f", rgb=False)
    assert_valid(out)
    dataset = pydicom.dcmread(next(out.iterdir()))
    assert related_series(dataset) == [(pet.info["study_uid"], pet.info["series_uid"], [SOURCE_SERIES])]
    assert not any("DerivationImageSequence" in frame for frame in dataset.PerFrameFunctionalGroupsSequence)
    (derivation,) = dataset.SharedFunctionalGroupsSequence[0].DerivationImageSequence
    assert [code(c) for c in derivation.DerivationCodeSequence] == [RESAMPLING]
    pet_instances = {(v[0], k[0]) for k, v in slices_on_disk(tmp_path / "pet").items()}
    assert {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in derivation.SourceImageSequence} == (
        pet_instances
    )
    assert evidence(dataset.SourceImageEvidenceSequence) == {
        (pet.info["study_uid"], pet.info["series_uid"]): pet_instances
    }


def test_a_volume_off_the_mri_grid_references_the_mri_as_a_whole_series(tmp_path: Path) -> None:
    make_series(tmp_path / "mri", phantom((6, 9, 7)), direction=OBLIQUE, spacing=(0.8, 0.9, 3.0))
    mri = dicom.read_dicom_series(tmp_path / "mri", role="MRI")
    cropped = mri.image[:, :, 1:]  # five of the six slices: no frame can claim "made from this slice" blindly
    out = dicom.write_dicom_series(fused_like(cropped), tmp_path / "f", reference=mri.info, description="f", rgb=False)
    assert_valid(out)
    dataset = pydicom.dcmread(next(out.iterdir()))
    assert not any("DerivationImageSequence" in frame for frame in dataset.PerFrameFunctionalGroupsSequence)
    (derivation,) = dataset.SharedFunctionalGroupsSequence[0].DerivationImageSequence
    mri_instances = {(v[0], k[0]) for k, v in slices_on_disk(tmp_path / "mri").items()}
    assert {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in derivation.SourceImageSequence} == (
        mri_instances
    )


def test_an_mri_with_an_invalid_uid_is_not_referenced_and_the_export_stays_valid(tmp_path: Path) -> None:
    built = make_series(tmp_path / "mri", phantom((5, 9, 7)), spacing=(0.8, 0.9, 3.0))
    broken = pydicom.dcmread(built.paths[2])
    with warnings.catch_warnings():  # pydicom warns about the invalid value it is told to write
        warnings.simplefilter("ignore")
        broken.SOPInstanceUID = broken.file_meta.MediaStorageSOPInstanceUID = "1.2.03"  # a leading zero: invalid
        broken.save_as(built.paths[2])
    mri = dicom.read_dicom_series(tmp_path / "mri", role="MRI")
    with pytest.warns(MedfuseWarning, match=r"mri: the MRI's UID '1\.2\.03' is not a valid DICOM UID; the exported "
                      "series do not reference the MRI series"):  # fmt: skip
        out = dicom.write_dicom_series(fused_like(mri.image), tmp_path / "f", reference=mri.info, description="f",
                                       rgb=False)  # fmt: skip
    assert_valid(out)
    assert_no_references(pydicom.dcmread(next(out.iterdir())))


# ---- medfuse fuse ... --format dicom -----------------------------------------------------------------
def test_cli_writes_valid_fused_and_overlay_series_on_the_mri_grid(tmp_path: Path) -> None:
    folders = clinical_folders(tmp_path / "in")
    study = folders["study"]
    out = tmp_path / "result"
    result = CliRunner().invoke(app, ["fuse", str(study), str(study), "-o", str(out), "--format", "dicom",
                                      "--method", "laplacian", "--register", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["fused", "overlay"]
    assert_valid(out / "fused")
    assert_valid(out / "overlay")
    mri = dicom.read_dicom_series(study, role="MRI")
    assert_on_grid(read_with_dcm2niix(out / "fused", tmp_path / "nii_fused"), mri.image)
    assert_on_grid(read_with_sitk(out / "overlay"), mri.image)
    values = sitk.GetArrayFromImage(read_with_pydicom(out / "fused"))
    assert values.min() >= -1e-6 and values.max() <= 1.0 + 1e-4 and values.std() > 0.01
    first = pydicom.dcmread(next((out / "fused").iterdir()))
    source = pydicom.dcmread(mri.info["reference_file"])
    assert (first.PatientID, first.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)
    assert first.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert first.SeriesDescription == "medfuse fused MRI+PET (laplacian)"
    pet = dicom.read_dicom_series(study, role="PET")
    for folder in (out / "fused", out / "overlay"):  # made from the T1 slice at each frame's position and the PET
        assert_frames_reference_their_mri_slices(folder, study / "t1", mri)
        dataset = pydicom.dcmread(next(folder.iterdir()))
        assert (pet.info["study_uid"], pet.info["series_uid"], [SOURCE_SERIES]) in related_series(dataset)
        assert len(dataset.SharedFunctionalGroupsSequence[0].ReferencedImageSequence) == pet.info["slice_count"]

    again = CliRunner().invoke(app, ["fuse", str(study), str(study), "-o", str(out), "--format", "dicom",
                                     "--method", "laplacian", "--register", "none"])  # fmt: skip
    assert again.exit_code == 5 and "the output already exists; pass --overwrite" in again.output


def test_cli_refuses_a_file_name_for_dicom_output(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fuse", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "x.nii.gz"),
                                      "--format", "dicom"])  # fmt: skip
    assert result.exit_code == 2
    assert "--format dicom writes a folder of DICOM series, not a .nii.gz file" in result.output
