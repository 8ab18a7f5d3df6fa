"""DICOM input: series discovery and selection, exact values and geometry, compression, bad inputs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    clinical_folders,
    make_enhanced_series,
    make_localizer,
    make_nm_series,
    make_series,
    mixed_study,
    pet_suv_tags,
    phantom,
    write_corrupt_file,
    write_undecodable_file,
)
from phantoms import multibed_positions
from pydicom.valuerep import format_number_as_ds
from typer.testing import CliRunner, Result

from medfuse import dicom
from medfuse.cli import app
from medfuse.console import MedfuseWarning
from medfuse.errors import InvalidInputError, UnreadableInputError, UsageError

OBLIQUE = sitk.Euler3DTransform((0, 0, 0), 0.2, -0.15, 0.3).GetMatrix()
HAS_GDCM = importlib.util.find_spec("gdcm") is not None


def assert_same_grid(image: sitk.Image, spacing, origin, direction) -> None:
    np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), direction, atol=1e-6)


def test_reads_values_and_oblique_geometry_in_position_order(tmp_path: Path) -> None:
    built = make_series(tmp_path / "mr", phantom((7, 9, 11)), direction=OBLIQUE, spacing=(0.9, 1.1, 2.5))
    names = [p.name for p in built.paths]
    assert names != sorted(names), "the factory must shuffle file names against slice order"

    volume = dicom.read_dicom_series(tmp_path / "mr", role="MRI")

    assert volume.image.GetPixelID() == sitk.sitkFloat32
    assert volume.image.GetSize() == (11, 9, 7)
    assert_same_grid(volume.image, built.spacing, built.origin, built.direction)
    np.testing.assert_allclose(sitk.GetArrayFromImage(volume.image), built.values, rtol=1e-6)
    assert volume.info["series_uid"] == built.uid
    assert volume.info["modality"] == "MR"
    assert volume.info["frame_of_reference_uid"] == built.frame_of_reference_uid
    assert volume.info["reason"] == "the only MR series forming a 3-D volume"


def test_geometry_agrees_with_simpleitk_series_reader(tmp_path: Path) -> None:
    built = make_series(tmp_path / "mr", phantom((5, 8, 6)), direction=OBLIQUE, origin=(12.5, -30.25, 7.0))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(built.folder)))
    reference = reader.Execute()

    ours = dicom.read_dicom_series(built.folder, role="MRI").image

    assert_same_grid(ours, reference.GetSpacing(), reference.GetOrigin(), reference.GetDirection())
    np.testing.assert_allclose(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(reference), rtol=1e-5)


def test_per_slice_rescale_and_signed_pixels(tmp_path: Path) -> None:
    values = phantom((5, 6, 7), kind="pet")
    values[2] *= 10.0  # one slice far hotter: its slope differs from the others'
    built = make_series(tmp_path / "pt", values, modality="PT", rescale="slice")
    slopes = {float(pydicom.dcmread(p).RescaleSlope) for p in built.paths}
    assert len(slopes) == 5

    pet = dicom.read_dicom_series(tmp_path / "pt", role="PET")
    np.testing.assert_allclose(sitk.GetArrayFromImage(pet.image), built.values, rtol=1e-6)
    # and within half a quantisation step of the values the scanner measured
    np.testing.assert_allclose(sitk.GetArrayFromImage(pet.image), values, rtol=0, atol=max(slopes) / 2 + 1e-3)

    signed = make_series(tmp_path / "signed", phantom((4, 5, 6)) - 300.0, signed=True, rescale="none")
    image = dicom.read_dicom_series(tmp_path / "signed", role="MRI").image
    assert sitk.GetArrayFromImage(image).min() < 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), signed.values)


def test_mixed_study_picks_t1_and_pet_and_says_why(tmp_path: Path) -> None:
    built = mixed_study(tmp_path)
    study = tmp_path / "study"
    series = {s.uid: s for s in dicom.list_series(study)}
    assert series[built["localizer"]].is_localizer
    assert series[built["derived"].uid].is_derived
    assert series[built["t1"].uid].slice_count == 6
    assert series[built["pet"].uid].patient_id == "PAT-001"
    assert sorted(series[built["pet"].uid].paths) == sorted(built["pet"].paths)

    mri = dicom.read_dicom_series(study, role="MRI")
    pet = dicom.read_dicom_series(study, role="PET")

    assert mri.info["series_uid"] == built["t1"].uid
    assert mri.info["reason"].startswith("the largest of 2 MR series (720 voxels against 480)")
    assert "2 other MR series ignored" in mri.info["reason"]
    assert pet.info["series_uid"] == built["pet"].uid
    assert pet.info["units"] == "BQML"
    np.testing.assert_allclose(sitk.GetArrayFromImage(pet.image), built["pet"].values, rtol=1e-6)


def test_explicit_series_uid_wins_and_unknown_uid_lists_the_series(tmp_path: Path) -> None:
    built = mixed_study(tmp_path)
    t2 = dicom.read_dicom_series(tmp_path / "study", role="MRI", series_uid=built["t2"].uid)
    assert t2.info["series_uid"] == built["t2"].uid
    assert t2.info["reason"] == "given by --mri-series"

    with pytest.raises(UsageError) as caught:
        dicom.read_dicom_series(tmp_path / "study", role="PET", series_uid="1.2.3.4")
    message = str(caught.value)
    assert message.startswith("--pet-series 1.2.3.4: no such series in")
    assert built["pet"].uid in message and "'PET AC', 6 slices" in message


def test_two_equal_candidates_are_ambiguous_and_listed(tmp_path: Path) -> None:
    first = make_series(tmp_path / "a", phantom((5, 6, 7)), description="T1")
    second = make_series(tmp_path / "b", phantom((5, 6, 7), seed=4), description="T1 repeat")
    with pytest.raises(InvalidInputError) as caught:
        dicom.read_dicom_series(tmp_path, role="MRI")
    message = str(caught.value)
    assert "holds 2 MR series that could be the MRI and none stands out" in message
    assert first.uid in message and second.uid in message and "'T1 repeat', 5 slices" in message
    assert message.endswith("pick one with --mri-series UID.")


def test_attenuation_corrected_pet_preferred_over_uncorrected(tmp_path: Path) -> None:
    values = phantom((5, 6, 7), kind="pet")
    corrected = make_series(tmp_path / "ac", values, modality="PT", extra={"CorrectedImage": ["ATTN", "DECY"]})
    make_series(tmp_path / "nac", values, modality="PT", extra={"CorrectedImage": ["DECY"]})
    pet = dicom.read_dicom_series(tmp_path, role="PET")
    assert pet.info["series_uid"] == corrected.uid
    assert pet.info["reason"] == "the attenuation-corrected one of 2 PT series"


def test_spect_nm_multiframe_is_read_as_pet_role(tmp_path: Path) -> None:
    counts = phantom((6, 8, 8), kind="pet") / 10.0
    built = make_nm_series(tmp_path / "spect", counts)
    make_series(tmp_path / "mr", phantom((4, 5, 6)))
    spect = dicom.read_dicom_series(tmp_path, role="PET")
    assert spect.info["modality"] == "NM"
    assert spect.info["series_uid"] == built.uid
    assert_same_grid(spect.image, built.spacing, built.origin, built.direction)
    np.testing.assert_allclose(sitk.GetArrayFromImage(spect.image), built.values, rtol=1e-6)


def test_enhanced_multiframe_with_per_frame_slopes(tmp_path: Path) -> None:
    values = phantom((5, 6, 7))
    built = make_enhanced_series(tmp_path / "enh", values, frame_slopes=[0.5, 1.0, 2.0, 0.25, 1.5])
    volume = dicom.read_dicom_series(tmp_path / "enh", role="MRI")
    assert_same_grid(volume.image, built.spacing, built.origin, built.direction)
    np.testing.assert_allclose(sitk.GetArrayFromImage(volume.image), built.values, rtol=1e-6)


def test_single_file_path_reads_its_series(tmp_path: Path) -> None:
    built = make_series(tmp_path / "mr", phantom((4, 5, 6)))
    make_series(tmp_path / "mr", phantom((4, 5, 6), seed=9), prefix="X")
    volume = dicom.read_dicom_series(built.paths[2], role="MRI")
    assert volume.info["series_uid"] == built.uid
    np.testing.assert_allclose(sitk.GetArrayFromImage(volume.image), built.values, rtol=1e-6)


@pytest.mark.parametrize(
    "syntax",
    [
        RLELossless,
        JPEG2000Lossless,
        pytest.param(JPEGLSLossless, marks=pytest.mark.skipif(not HAS_GDCM, reason="python-gdcm encodes JPEG-LS")),
        pytest.param(JPEGLosslessSV1, marks=pytest.mark.skipif(not HAS_GDCM, reason="python-gdcm encodes JPEG")),
    ],
    ids=lambda uid: uid.name,
)
def test_lossless_compressed_series_decode_exactly(tmp_path: Path, syntax: str) -> None:
    built = make_series(tmp_path / "c", phantom((3, 32, 32), kind="pet"), modality="PT", rescale="slice",
                        transfer_syntax=syntax)  # fmt: skip
    assert pydicom.dcmread(built.paths[0]).file_meta.TransferSyntaxUID == syntax
    pet = dicom.read_dicom_series(tmp_path / "c", role="PET")
    np.testing.assert_allclose(sitk.GetArrayFromImage(pet.image), built.values, rtol=1e-6)


def test_jpeg_baseline_decodes_close_to_the_encoded_values(tmp_path: Path) -> None:
    values = phantom((4, 16, 16)) / 4.0  # 0-255, as 8-bit JPEG baseline holds
    built = make_series(tmp_path / "j", values, rescale="none", transfer_syntax=JPEGBaseline8Bit)
    assert pydicom.dcmread(built.paths[0]).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    image = dicom.read_dicom_series(tmp_path / "j", role="MRI").image
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), built.values, atol=2.0)


def test_missing_slice_is_refused_naming_the_gap(tmp_path: Path) -> None:
    make_series(tmp_path / "gap", phantom((6, 5, 5)), skip_slices=[3], origin=(0, 0, 0), spacing=(1, 1, 2))
    with pytest.raises(InvalidInputError) as caught:
        dicom.read_dicom_series(tmp_path / "gap", role="MRI")
    message = str(caught.value)
    assert "has a gap of 4.000 mm between the slices at (0.00, 0.00, 4.00)" in message
    assert "and (0.00, 0.00, 8.00)" in message and "where the others are 2.000 mm apart (1 missing slice)" in message
    assert message.endswith("export the complete series or pass --mri-series UID.")
    uid = dicom.list_series(tmp_path / "gap")[0].uid
    with pytest.raises(InvalidInputError, match=r"series .* \(1 missing slice\); export the complete series again"):
        dicom.read_dicom_series(tmp_path / "gap", role="MRI", series_uid=uid)


def test_uneven_spacing_is_refused(tmp_path: Path) -> None:
    built = make_series(tmp_path / "uneven", phantom((5, 5, 5)), origin=(0, 0, 0), spacing=(1, 1, 2), shuffle_seed=None)
    last = pydicom.dcmread(built.paths[-1])
    last.ImagePositionPatient = [0, 0, format_number_as_ds(8.7)]
    last.save_as(built.paths[-1])
    with pytest.raises(
        InvalidInputError, match=r"gap of 2\.700 mm .* \(uneven slice spacing, beyond 10% of the median\)"
    ):
        dicom.read_dicom_series(tmp_path / "uneven", role="MRI")


def test_a_multibed_pet_with_an_uneven_junction_is_resampled_onto_a_regular_grid(tmp_path: Path) -> None:
    """267 slices 3.27 mm apart except one bed junction 3.19 mm apart (a real whole-body PET): read,
    resampled linearly along the normal onto a regular grid from the first slice to the last, warned."""
    depths = multibed_positions()
    k = np.arange(len(depths), dtype=float)[:, None, None]
    values = 1000.0 + 400.0 * np.sin(depths[:, None, None] / 37.0) + phantom((1, 12, 10), kind="pet") + k
    built = make_series(tmp_path / "pet", values, modality="PT", spacing=(4.0, 4.0, 3.27), origin=(-20, -22, -900),
                        depths=depths, rescale="slice", description="WB PET")  # fmt: skip
    message = (
        r"series [\d.]+: slice spacing varies: a gap of 3\.190 mm between the slices at \(-20\.00, -22\.00, "
        r"-465\.09\) \[IM\d+\.dcm\] and \(-20\.00, -22\.00, -461\.90\) \[IM\d+\.dcm\], 0\.080 mm \(2\.4%\) "
        r"from the median 3\.270 mm \(as in a PET stitched from bed positions\); resampled onto 267 slices "
        r"3\.2697 mm apart along the slice normal \(linear interpolation\)\."
    )
    with pytest.warns(MedfuseWarning, match=message):
        volume = dicom.read_dicom_series(tmp_path / "pet", role="PET")
    image = volume.image
    extent = depths[-1] - depths[0]
    assert image.GetSize() == (10, 12, 267)
    np.testing.assert_allclose(image.GetSpacing(), (4.0, 4.0, extent / 266), rtol=0, atol=1e-9)
    np.testing.assert_allclose(image.GetOrigin(), (-20.0, -22.0, -900.0), atol=1e-6)
    regular = np.linspace(0.0, extent, 267)
    expected = np.apply_along_axis(lambda column: np.interp(regular, depths, column), 0, built.values)
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), expected, rtol=1e-5, atol=1e-3)
    resampled = volume.info["resampled_slices"]
    assert resampled["slices_read"] == resampled["slices"] == 267 and "3.190 mm" in resampled["why"]


@pytest.mark.parametrize(
    ("gap", "refusal"),
    [
        (3.27 * 1.12, r"where the others are 3\.270 mm apart \(uneven slice spacing, beyond 10% of the median\)"),
        (3.27 * 0.85, r"where the others are 3\.270 mm apart \(uneven slice spacing, beyond 10% of the median\)"),
        (3.27 * 1.5, r"where the others are 3\.270 mm apart \(1 missing slice\)"),
        (3.27 * 3.1, r"where the others are 3\.270 mm apart \(2 missing slices\)"),
    ],
)
def test_spacing_beyond_ten_percent_and_missing_slices_are_still_refused(
    tmp_path: Path, gap: float, refusal: str
) -> None:
    depths = multibed_positions(20, 3.27, ((9, gap),))
    make_series(tmp_path / "pet", phantom((20, 6, 5), kind="pet"), modality="PT", spacing=(4.0, 4.0, 3.27),
                origin=(0, 0, 0), depths=depths)  # fmt: skip
    with pytest.raises(InvalidInputError, match=refusal):
        dicom.read_dicom_series(tmp_path / "pet", role="PET")


def test_evenly_spaced_series_are_not_resampled(tmp_path: Path) -> None:
    """Rounding in the headers (a few micrometres) is no reason to resample, nor to warn."""
    depths = np.arange(12) * 2.5 + np.tile([0.0, 0.004], 6)
    built = make_series(tmp_path / "mr", phantom((12, 6, 5)), spacing=(1.0, 1.0, 2.5), depths=depths)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedfuseWarning)
        volume = dicom.read_dicom_series(tmp_path / "mr", role="MRI")
    assert volume.info["resampled_slices"] is None
    np.testing.assert_allclose(sitk.GetArrayFromImage(volume.image), built.values, rtol=1e-6)


def test_duplicate_positions_are_refused(tmp_path: Path) -> None:
    built = make_series(tmp_path / "dyn", phantom((4, 5, 5)))
    make_series(tmp_path / "dyn", phantom((4, 5, 5)), series_uid=built.uid, prefix="T2_",
                study_uid=built.study_uid)  # fmt: skip
    with pytest.raises(InvalidInputError, match="holds several slices at one position"):
        dicom.read_dicom_series(tmp_path / "dyn", role="MRI")


def test_only_a_localizer_is_not_a_volume(tmp_path: Path) -> None:
    uid = make_localizer(tmp_path / "loc")
    with pytest.raises(InvalidInputError) as caught:
        dicom.read_dicom_series(tmp_path / "loc", role="MRI")
    assert "none of its MR series forms a usable 3-D volume for the MRI" in str(caught.value)
    assert f"{uid} (MR, '3-plane loc', 3 slices): a localizer" in str(caught.value)


def test_wrong_modality_folder_is_refused(tmp_path: Path) -> None:
    make_series(tmp_path / "mr", phantom((4, 5, 5)), description="T1")
    with pytest.raises(InvalidInputError, match=r"holds no PT/NM series for the PET \(found: .*'T1', 4 slices\)"):
        dicom.read_dicom_series(tmp_path / "mr", role="PET")


def test_non_dicom_files_are_skipped(tmp_path: Path) -> None:
    built = make_series(tmp_path / "mr", phantom((4, 5, 5)))
    (tmp_path / "mr" / "README.txt").write_text("exported by PACS")
    (tmp_path / "mr" / "notes").write_bytes(b"\x00\x01binary junk" * 30)
    volume = dicom.read_dicom_series(tmp_path / "mr", role="MRI")
    assert volume.info["series_uid"] == built.uid


def test_folder_without_dicom_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "scan.txt").write_text("not an image")
    with pytest.raises(UnreadableInputError, match=r"empty: holds no DICOM images; point to the folder"):
        dicom.read_dicom_series(tmp_path / "empty", role="MRI")
    with pytest.raises(UnreadableInputError, match="missing: does not exist"):
        dicom.read_dicom_series(tmp_path / "missing", role="MRI")


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    make_series(tmp_path / "pt", phantom((4, 5, 5), kind="pet"), modality="PT")
    corrupt = write_corrupt_file(tmp_path / "pt" / "IM9999.dcm")
    with pytest.raises(UnreadableInputError) as caught:
        dicom.read_dicom_series(tmp_path / "pt", role="PET")
    assert str(caught.value).startswith(f"{corrupt}: is a corrupt DICOM file (")


def test_undecodable_pixel_data_is_named(tmp_path: Path) -> None:
    built = make_series(tmp_path / "pt", phantom((4, 5, 5), kind="pet"), modality="PT")
    bad = write_undecodable_file(built.paths[1])
    with pytest.raises(UnreadableInputError) as caught:
        dicom.read_dicom_series(tmp_path / "pt", role="PET")
    assert str(caught.value).startswith(
        f"{bad}: its pixel data (JPEG 2000 Image Compression (Lossless Only)) cannot be"
    )


def test_different_patients_refused_unless_allowed(tmp_path: Path) -> None:
    built = mixed_study(tmp_path)
    mri = dicom.read_dicom_series(tmp_path / "study", role="MRI")
    pet = dicom.read_dicom_series(tmp_path / "other", role="PET")
    assert built["other_pet"].patient_id == pet.info["patient_id"] == "PAT-999"
    with pytest.raises(InvalidInputError) as caught:
        dicom.check_same_patient(mri.info, pet.info, allow=False)
    assert str(caught.value) == (
        f"{tmp_path / 'other'}: the PET belongs to PatientID 'PAT-999' but the MRI to 'PAT-001'; "
        "check the inputs, or pass --allow-different-patients if this is intended."
    )
    with pytest.warns(MedfuseWarning, match="fusing anyway because of --allow-different-patients"):
        dicom.check_same_patient(mri.info, pet.info, allow=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dicom.check_same_patient(mri.info, None, allow=False)  # a NIfTI PET has no PatientID to compare
        dicom.check_same_patient(mri.info, dicom.read_dicom_series(tmp_path / "study", role="PET").info, allow=False)


def test_copies_of_an_instance_are_ignored_with_a_warning(tmp_path: Path) -> None:
    built = make_series(tmp_path / "mr", phantom((4, 5, 5)))
    copy = tmp_path / "mr" / "zz_copy.dcm"
    copy.write_bytes(built.paths[0].read_bytes())
    with pytest.warns(MedfuseWarning, match=r"zz_copy\.dcm: is a copy of .* \(same SOPInstanceUID\) and was ignored"):
        volume = dicom.read_dicom_series(tmp_path / "mr", role="MRI")
    np.testing.assert_allclose(sitk.GetArrayFromImage(volume.image), built.values, rtol=1e-6)


def _series_with_invalid_values(folder: Path) -> Path:
    """A PET series whose headers break their VRs as real exports do: UIDs with a leading zero or
    letters, a 20-character StudyID (SH: 16), 70-character LO values."""
    tags = {**pet_suv_tags(), "StudyID": "X" * 20, "StudyInstanceUID": "1.2.3.abc", "SeriesDescription": "x" * 70}
    with warnings.catch_warnings():  # pydicom warns about the invalid values it is told to write
        warnings.simplefilter("ignore")
        make_series(folder, phantom((5, 9, 7), kind="pet"), modality="PT", series_uid="1.2.3.04", rescale="slice",
                    patient_id="P" * 70, extra=tags)  # fmt: skip
    return folder


def test_invalid_header_values_raise_no_pydicom_warnings_and_an_invalid_series_uid_is_named(tmp_path: Path) -> None:
    folder = _series_with_invalid_values(tmp_path / "pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (series,) = dicom.list_series(folder)
        dicom.suv_readiness(series)
        dicom.read_dicom_series(folder, role="PET", suv=True)
    assert [str(w.message) for w in caught if not issubclass(w.category, MedfuseWarning)] == []
    (named,) = [str(w.message) for w in caught]
    assert re.fullmatch(
        rf"{re.escape(str(folder))}/IM\d+\.dcm: its SeriesInstanceUID '1\.2\.3\.04' is not a valid DICOM UID \(digits "
        r"and dots, no leading zeros, at most 64 characters\); medfuse groups and selects the series by it as "
        r"written, but other DICOM tools may not\.",
        named,
    )


def test_info_on_invalid_headers_prints_only_medfuse_s_warning(tmp_path: Path) -> None:
    folder = _series_with_invalid_values(tmp_path / "pt")
    result = CliRunner().invoke(app, ["info", str(folder)])
    assert result.exit_code == 0, result.output
    assert "Invalid value for VR" not in result.output and "exceeds the maximum length" not in result.output
    assert (
        result.output.count("warning:") == 1
        and "SeriesInstanceUID '1.2.3.04' is not a valid DICOM UID" in result.output
    )
    assert "--suv          will work" in result.output


def test_the_cli_says_each_warning_once_though_a_folder_is_listed_twice(tmp_path: Path) -> None:
    """``info`` lists the folder and then reads the series; ``fuse`` lists one folder for both roles."""
    mixed_study(tmp_path)
    study = tmp_path / "study"
    first = next(path for path in sorted(study.rglob("*.dcm")))
    (study / "zz_copy.dcm").write_bytes(first.read_bytes())
    info = CliRunner().invoke(app, ["info", str(study)])
    fused = CliRunner().invoke(app, ["fuse", str(study), str(study), "-o", str(tmp_path / "f.nii.gz"),
                                     "--method", "laplacian", "--register", "none"])  # fmt: skip
    for result in (info, fused):
        assert result.exit_code == 0, result.output
        assert result.output.count("zz_copy.dcm: is a copy of") == 1


def test_files_without_preamble_or_extension_are_read(tmp_path: Path) -> None:
    built = make_series(tmp_path / "mr", phantom((4, 5, 5)), suffix="")
    for path in built.paths:  # an old export: no 128-byte preamble, no file meta, no extension
        dataset = pydicom.dcmread(path)
        dataset.preamble = None
        del dataset.file_meta
        dataset.save_as(path, enforce_file_format=False)
        assert path.read_bytes()[128:132] != b"DICM"
    volume = dicom.read_dicom_series(tmp_path / "mr", role="MRI")
    np.testing.assert_allclose(sitk.GetArrayFromImage(volume.image), built.values, rtol=1e-6)


def test_truncated_pixel_data_is_named(tmp_path: Path) -> None:
    built = make_series(tmp_path / "pt", phantom((4, 8, 8), kind="pet"), modality="PT")
    data = built.paths[1].read_bytes()
    built.paths[1].write_bytes(data[: len(data) - 40])
    with pytest.raises(UnreadableInputError) as caught:
        dicom.read_dicom_series(tmp_path / "pt", role="PET")
    message = str(caught.value)
    assert message.startswith(f"{built.paths[1]}: its pixel data is truncated or corrupt (")
    assert message.endswith("; export the series again.")


# ---- the fuse command on clinical-style DICOM folders ----------------------------------------------
runner = CliRunner()


@pytest.fixture(scope="module")
def clinical(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return clinical_folders(tmp_path_factory.mktemp("clinical"))


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def fuse(*args: str | Path) -> Result:
    return runner.invoke(app, ["fuse", *(str(a) for a in args), "--method", "laplacian", "--register", "none"])


def test_cli_fuses_mri_and_suv_pet_found_in_one_study_folder(clinical: dict[str, Path], tmp_path: Path) -> None:
    study = clinical["study"]
    out = tmp_path / "out"
    before = folder_digest(study)
    result = fuse(study, study, "-o", out / "fused.nii.gz", "--suv", "--report", out / "report.json")
    assert result.exit_code == 0, result.output
    assert folder_digest(study) == before, "the input folder must stay untouched"
    assert "MRI: series" in result.output and "'T1 MPRAGE'" in result.output
    assert "PET: series" in result.output and "the only PT series forming a 3-D volume" in result.output
    mri = dicom.read_dicom_series(study, role="MRI").image
    fused = sitk.ReadImage(str(out / "fused.nii.gz"))
    assert_same_grid(fused, mri.GetSpacing(), mri.GetOrigin(), mri.GetDirection())
    assert fused.GetSize() == mri.GetSize()
    report = json.loads((out / "report.json").read_text())
    assert "SUVbw" in json.dumps(report["inputs"]["pet"])


def test_cli_refuses_a_pet_of_another_patient(clinical: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = fuse(clinical["study"], clinical["other"], "-o", out / "fused.nii.gz")
    assert result.exit_code == 4
    assert "the PET belongs to PatientID 'PAT-999' but the MRI to 'PAT-001'" in result.output
    assert "--allow-different-patients" in result.output and "Traceback" not in result.output
    assert not out.exists()
    allowed = fuse(clinical["study"], clinical["other"], "-o", out / "fused.nii.gz", "--allow-different-patients")
    assert allowed.exit_code == 0, allowed.output
    assert "warning:" in allowed.output and "fusing anyway" in allowed.output


def test_cli_names_a_corrupt_file_and_writes_nothing(clinical: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = fuse(clinical["study"], clinical["broken"], "-o", out / "fused.nii.gz")
    assert result.exit_code == 3
    assert "IM0007.dcm: is a corrupt DICOM file" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_cli_lists_the_series_when_the_mri_is_ambiguous(clinical: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "fused.nii.gz"
    result = fuse(clinical["twins"], clinical["study"], "-o", out)
    assert result.exit_code == 4
    assert "holds 2 MR series that could be the MRI and none stands out" in result.output
    assert "'T1 run 1', 36 slices" in result.output and "'T1 run 2', 36 slices" in result.output
    assert "pick one with --mri-series UID" in result.output and not out.parent.exists()
    second = next(s for s in dicom.list_series(clinical["twins"]) if s.description == "T1 run 2")
    chosen = fuse(clinical["twins"], clinical["study"], "--mri-series", second.uid, "-o", out)
    assert chosen.exit_code == 0, chosen.output
    assert f"MRI: series {second.uid}" in chosen.output and "given by --mri-series" in chosen.output


def test_a_series_too_large_for_memory_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    make_series(tmp_path / "mr", phantom((4, 16, 16)))
    monkeypatch.setattr("medfuse.memory.available_memory", lambda: 10_000)
    monkeypatch.setattr("medfuse.dicom.read._decode", lambda path: pytest.fail("pixels were decoded"))
    with pytest.raises(InvalidInputError, match=r"mr: the image is 16×16×4 voxels and needs about .* available"):
        dicom.read_dicom_series(tmp_path / "mr", role="MRI")
