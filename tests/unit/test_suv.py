"""PET to SUVbw by the QIBA rule, checked against factors computed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import BuiltSeries, make_nm_series, make_series, pet_suv_tags, phantom

from medfuse import dicom
from medfuse.errors import InvalidInputError

# 75 kg, 370 MBq of F-18 (half-life 6586.2 s) injected at 09:30, series at 10:30 (3600 s later):
# decayed dose = 370e6 * 2**(-3600/6586.2) = 370e6 * 0.6846329195720021 = 253314180.24 Bq
# SUV factor  = 75 * 1000 g / 253314180.24 Bq = 2.960750161260463e-4 g/Bq
FACTOR_1H = 2.960750161260463e-4
# 70 kg, 200 MBq, 40 min (2400 s): 70000 / (200e6 * 0.7767927886438515) = 4.5057060919816296e-4
FACTOR_40MIN = 4.5057060919816296e-4


def pet(tmp_path: Path, tags: dict[str, Any], **kwargs: Any) -> BuiltSeries:
    return make_series(tmp_path / "pet", phantom((4, 5, 6), kind="pet"), modality="PT", rescale="slice", extra=tags,
                       **kwargs)  # fmt: skip


def suv_of(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    volume = dicom.read_dicom_series(folder, role="PET", suv=True)
    return sitk.GetArrayFromImage(volume.image), volume.info


def test_bqml_suv_matches_hand_computed_factor(tmp_path: Path) -> None:
    built = pet(tmp_path, pet_suv_tags())
    values, info = suv_of(built.folder)
    assert info["units"] == "SUVbw"
    assert info["suv"]["factor"] == pytest.approx(FACTOR_1H, rel=1e-12)
    assert info["suv"]["decay_seconds"] == 3600.0
    assert info["suv"]["scan_time_source"] == "SeriesDate/SeriesTime"
    np.testing.assert_allclose(values, built.values * FACTOR_1H, rtol=1e-6)
    # a plain read stays in Bq/ml
    plain = dicom.read_dicom_series(built.folder, role="PET")
    assert plain.info["units"] == "BQML" and plain.info["suv"] is None
    np.testing.assert_allclose(sitk.GetArrayFromImage(plain.image), built.values, rtol=1e-6)


def test_start_datetime_across_midnight(tmp_path: Path) -> None:
    tags = pet_suv_tags(
        weight_kg=70, dose_bq=200e6, series_date="20240305", series_time="001000",
        injection_time=None, injection_datetime="20240304233000",
    )  # fmt: skip
    _values, info = suv_of(pet(tmp_path, tags).folder)
    assert info["suv"]["decay_seconds"] == 2400.0
    assert info["suv"]["factor"] == pytest.approx(FACTOR_40MIN, rel=1e-12)


def test_series_time_after_acquisition_uses_the_acquisition_time(tmp_path: Path) -> None:
    # A post-processed series: SeriesTime 12:00 is when it was re-saved; the scan began at 10:30.
    tags = pet_suv_tags(series_time="120000", acquisition_time="103000")
    _values, info = suv_of(pet(tmp_path, tags).folder)
    assert info["suv"]["scan_time_source"] == "AcquisitionTime"
    assert info["suv"]["factor"] == pytest.approx(FACTOR_1H, rel=1e-12)


def test_ge_private_scan_time_preferred_when_series_time_was_rewritten(tmp_path: Path) -> None:
    tags = pet_suv_tags(series_time="120000", acquisition_time="110000")
    built = pet(tmp_path, tags)
    for path in built.paths:  # GE stores the true scan start in a private tag
        dataset = pydicom.dcmread(path)
        block = dataset.private_block(0x0009, "GEMS_PETD_01", create=True)
        block.add_new(0x0D, "DT", "20240305103000")
        dataset.save_as(path)
    _values, info = suv_of(built.folder)
    assert info["suv"]["scan_time_source"] == "GE private scan time (0009,100D)"
    assert info["suv"]["factor"] == pytest.approx(FACTOR_1H, rel=1e-12)


def test_gml_is_already_suv(tmp_path: Path) -> None:
    built = pet(tmp_path, pet_suv_tags(units="GML"))
    values, info = suv_of(built.folder)
    assert info["units"] == "SUVbw" and info["suv"]["factor"] == 1.0
    np.testing.assert_allclose(values, built.values, rtol=1e-6)


def test_philips_counts_use_the_private_per_slice_scale(tmp_path: Path) -> None:
    scales = [1e-4, 2e-4, 3e-4, 4e-4]
    built = pet(tmp_path, pet_suv_tags(units="CNTS"), philips_suv_scale=scales)
    values, _info = suv_of(built.folder)
    np.testing.assert_allclose(values, built.values * np.array(scales)[:, None, None], rtol=1e-6)


def test_counts_without_vendor_scale_are_refused(tmp_path: Path) -> None:
    built = pet(tmp_path, pet_suv_tags(units="CNTS"))
    with pytest.raises(InvalidInputError, match=r"in scanner counts \(Units CNTS\) without Philips' SUV scale factor"):
        suv_of(built.folder)


def test_missing_tags_are_all_named(tmp_path: Path) -> None:
    tags = pet_suv_tags()
    del tags["PatientWeight"]
    del tags["RadiopharmaceuticalInformationSequence"][0]["RadionuclideTotalDose"]
    built = pet(tmp_path, tags)
    with pytest.raises(InvalidInputError) as caught:
        suv_of(built.folder)
    message = str(caught.value)
    assert (
        "cannot compute SUV because the PET header lacks PatientWeight (0010,1030), RadionuclideTotalDose (0018,1074)"
        in message
    )
    assert message.endswith("complete the tags or omit --suv.")
    assert message.startswith(str(built.folder))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"corrected": ("ATTN", "NORM")}, r"CorrectedImage \(0028,0051\) lacks DECY \(it says ATTN/NORM\)"),
        ({"decay_correction": "ADMIN"}, r"DecayCorrection \(0054,1102\) is ADMIN, not START"),
        ({"units": "PROPCNTS"}, r"cannot compute SUV from PET in Units PROPCNTS"),
        ({"weight_kg": 0}, r"PatientWeight \(0010,1030\) is .*, not a positive number"),
        ({"injection_time": "113000"}, r"the injection \(2024-03-05 11:30:00\) is after the scan start"),
    ],
    ids=["no-decay-correction", "decay-admin", "units", "zero-weight", "injection-after-scan"],
)
def test_unusable_suv_tags_are_refused(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    built = pet(tmp_path, pet_suv_tags(**change))
    with pytest.raises(InvalidInputError, match=expected):
        suv_of(built.folder)


def test_suv_of_spect_is_refused(tmp_path: Path) -> None:
    make_nm_series(tmp_path / "spect", phantom((4, 6, 6), kind="pet") / 10.0)
    with pytest.raises(InvalidInputError, match=r"--suv applies to PET \(Modality PT\) but this series is NM"):
        suv_of(tmp_path / "spect")


# ---- what medfuse info shows before anything is fused -------------------------------------------------
def test_readiness_lists_the_tags_and_says_suv_will_work(tmp_path: Path) -> None:
    built = pet(tmp_path, pet_suv_tags())
    (series,) = dicom.list_series(built.folder)
    readiness = dicom.suv_readiness(series)
    assert readiness["suv_works"] is True
    assert readiness["how"] == "Units BQML: QIBA SUVbw, factor 0.0002961 g/Bq, 3600 s from injection to scan start"
    tags = readiness["tags"]
    assert tags["Units (0054,1001)"] == "BQML" and tags["PatientWeight (0010,1030)"] == "75.0"
    assert tags["RadiopharmaceuticalStartTime (0018,1072)"] == "093000"
    assert tags["RadiopharmaceuticalStartDateTime (0018,1078)"] is None
    assert tags["CorrectedImage (0028,0051)"] == "ATTN\\DECY\\NORM" and tags["DecayCorrection (0054,1102)"] == "START"
    assert tags["AcquisitionTime (0008,0032)"] == "103000 (earliest of the series)"


def test_readiness_names_the_missing_tag_without_the_path(tmp_path: Path) -> None:
    tags = pet_suv_tags()
    del tags["PatientWeight"]
    (series,) = dicom.list_series(pet(tmp_path, tags).folder)
    readiness = dicom.suv_readiness(series)
    assert readiness["suv_works"] is False and readiness["tags"]["PatientWeight (0010,1030)"] is None
    assert readiness["problem"] == (
        "cannot compute SUV because the PET header lacks PatientWeight (0010,1030); complete the tags or omit --suv."
    )


def test_info_on_a_pet_folder_shows_what_suv_needs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medfuse.cli import app

    built = pet(tmp_path, pet_suv_tags(units="CNTS"))
    result = CliRunner().invoke(app, ["info", str(built.folder)])
    assert result.exit_code == 0, result.output
    assert f"described      {built.uid}: the only series in the folder" in result.output
    assert "SUV tag        Units (0054,1001) = CNTS" in result.output
    assert "--suv          will not work: the PET is in scanner counts (Units CNTS) without Philips' SUV scale" in (
        result.output
    )
    assert "MRI:" not in result.output and "--pet-series" not in result.output
