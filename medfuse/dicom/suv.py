"""PET to SUVbw (g/ml), the way vendors store it: one small function per DICOM Units case.

- ``BQML`` (Bq/ml, every vendor): the QIBA vendor-neutral rule, SUV = value × weight[g] /
  (dose × 2^(-Δt / half-life)), with Δt from the injection to the scan start (:func:`scan_start`);
  needs CorrectedImage ATTN and DECY and DecayCorrection START.
- ``GML`` (g/ml): already SUVbw.
- ``CNTS`` (Philips counts): Philips' private SUV scale factor (7053,1000) of each slice.

Anything else, or a missing or malformed tag, is refused naming the tag.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medfuse.dicom.headers import (
    combine_datetime,
    first_item,
    number,
    parse_datetime,
    private_value,
    pydicom_quiet,
    quiet_dcmread,
)
from medfuse.dicom.records import SliceRecord
from medfuse.dicom.series import SeriesInfo
from medfuse.errors import InvalidInputError

#: Per-slice SUV factors and how they were found (stored in the run report).
SuvFactors = tuple[np.ndarray, dict[str, Any]]

_GE_SCAN_DATETIME = (0x0009, 0x100D)
_SUV_TAGS = {
    "Units": "(0054,1001)",
    "CorrectedImage": "(0028,0051)",
    "DecayCorrection": "(0054,1102)",
    "PatientWeight": "(0010,1030)",
    "RadiopharmaceuticalInformationSequence": "(0054,0016)",
    "RadionuclideTotalDose": "(0018,1074)",
    "RadionuclideHalfLife": "(0018,1075)",
    "RadiopharmaceuticalStartTime": "(0018,1072)",
    "SeriesDate": "(0008,0021)",
    "SeriesTime": "(0008,0031)",
}


@pydicom_quiet()
def suv_factors(series: SeriesInfo, slices: list[SliceRecord]) -> SuvFactors:
    """Per-slice factors turning rescaled PET values into SUVbw (g/ml), chosen by the series' Units."""
    path = slices[0].path
    if series.modality != "PT":
        raise InvalidInputError(
            f"{path}: --suv applies to PET (Modality PT) but this series is "
            f"{series.modality or 'of unknown modality'}; omit --suv."
        )
    header = quiet_dcmread(path, stop_before_pixels=True)
    units = str(header.get("Units", "") or "").upper()
    if not units:
        raise _missing(path, ["Units"])
    convert = _BY_UNITS.get(units)
    if convert is None:
        raise InvalidInputError(
            f"{path}: cannot compute SUV from PET in Units {units}; medfuse needs BQML, GML or Philips CNTS, "
            "so export the PET in Bq/ml or omit --suv."
        )
    return convert(header, slices)


def _from_gml(_header: Dataset, slices: list[SliceRecord]) -> SuvFactors:
    """Units GML: the values already are SUVbw."""
    return np.ones(len(slices)), {"method": "Units GML: already SUVbw", "factor": 1.0}


def _from_philips_counts(_header: Dataset, slices: list[SliceRecord]) -> SuvFactors:
    """Units CNTS: Philips' private SUV scale factor (7053,1000), slice by slice."""
    scales = [record.vendor_suv_scale for record in slices]
    if any(scale is None or scale <= 0 for scale in scales):
        raise InvalidInputError(
            f"{slices[0].path}: the PET is in scanner counts (Units CNTS) without Philips' SUV scale factor "
            "(7053,1000); export it in Bq/ml (BQML) or omit --suv."
        )
    return np.asarray(scales, float), {"method": "Units CNTS: Philips private SUV scale factor (7053,1000)"}


def _from_bqml(header: Dataset, slices: list[SliceRecord]) -> SuvFactors:
    """Units BQML: the QIBA SUVbw rule (body weight, injected dose decayed to the scan start)."""
    path = slices[0].path
    isotope = _checked_bqml_tags(header, path)
    weight = _positive(path, "PatientWeight", header.PatientWeight, header, isotope)
    dose = _positive(path, "RadionuclideTotalDose", isotope.RadionuclideTotalDose, header, isotope)
    half_life = _positive(path, "RadionuclideHalfLife", isotope.RadionuclideHalfLife, header, isotope)
    series_time = combine_datetime(header.SeriesDate, header.SeriesTime)
    injection = parse_datetime(isotope.get("RadiopharmaceuticalStartDateTime")) or combine_datetime(
        header.SeriesDate, isotope.get("RadiopharmaceuticalStartTime")
    )
    if series_time is None or injection is None:
        bad = "SeriesDate/SeriesTime" if series_time is None else "RadiopharmaceuticalStartTime"
        raise InvalidInputError(f"{path}: cannot compute SUV because {bad} is malformed; correct it or omit --suv.")
    scan_time, source = scan_start(header, slices, series_time)
    elapsed = (scan_time - injection).total_seconds()
    if elapsed < 0:
        raise InvalidInputError(
            f"{path}: cannot compute SUV because the injection ({injection:%Y-%m-%d %H:%M:%S}) is after the scan "
            f"start ({scan_time:%Y-%m-%d %H:%M:%S}); correct RadiopharmaceuticalStartTime or omit --suv."
        )
    decayed_dose = dose * 2.0 ** (-elapsed / half_life)
    factor = weight * 1000.0 / decayed_dose
    return np.full(len(slices), factor), {
        "method": "Units BQML: QIBA SUVbw",
        "factor": factor,
        "patient_weight_kg": weight,
        "injected_dose_bq": dose,
        "half_life_s": half_life,
        "injection_time": injection.isoformat(),
        "scan_time": scan_time.isoformat(),
        "scan_time_source": source,
        "decay_seconds": elapsed,
        "decayed_dose_bq": decayed_dose,
    }


_BY_UNITS: dict[str, Callable[[Dataset, list[SliceRecord]], SuvFactors]] = {
    "BQML": _from_bqml,
    "GML": _from_gml,
    "CNTS": _from_philips_counts,
}


def scan_start(header: Dataset, slices: list[SliceRecord], series_time: dt.datetime) -> tuple[dt.datetime, str]:
    """The time the injected dose is decayed to, and which tag gave it.

    The series time, unless it is after the earliest acquisition time: then the series time was
    rewritten after the scan (post-processing) and the true scan start is GE's private scan time
    (0009,100D) when present, else that earliest acquisition time.
    """
    acquisitions = [record.acquired for record in slices if record.acquired is not None]
    earliest = min(acquisitions) if acquisitions else None
    if earliest is None or series_time <= earliest:
        return series_time, "SeriesDate/SeriesTime"
    ge_time = parse_datetime(private_value(header, _GE_SCAN_DATETIME, "GEMS_PETD_01"))
    return (ge_time, "GE private scan time (0009,100D)") if ge_time else (earliest, "AcquisitionTime")


def _checked_bqml_tags(header: Dataset, path: Path) -> Dataset:
    """Refuse a BQML header that lacks a tag of the QIBA rule or is not corrected as it needs; its isotope item."""
    missing = [kw for kw in ("CorrectedImage", "DecayCorrection", "PatientWeight") if _absent(header, kw)]
    isotope = first_item(header, "RadiopharmaceuticalInformationSequence")
    if isotope is None:
        missing.append("RadiopharmaceuticalInformationSequence")
        isotope = Dataset()
    else:
        missing += [kw for kw in ("RadionuclideTotalDose", "RadionuclideHalfLife") if _absent(isotope, kw)]
        if _absent(isotope, "RadiopharmaceuticalStartDateTime") and _absent(isotope, "RadiopharmaceuticalStartTime"):
            missing.append("RadiopharmaceuticalStartTime")
    missing += [kw for kw in ("SeriesDate", "SeriesTime") if _absent(header, kw)]
    if missing:
        raise _missing(path, missing)
    corrected = {str(v).upper() for v in header.CorrectedImage}
    lacking = [flag for flag in ("ATTN", "DECY") if flag not in corrected]
    if lacking:
        raise InvalidInputError(
            f"{path}: cannot compute SUV because CorrectedImage (0028,0051) lacks {' and '.join(lacking)} "
            f"(it says {'/'.join(sorted(corrected))}); use the attenuation- and decay-corrected PET or omit --suv."
        )
    decay_correction = str(header.DecayCorrection).upper()
    if decay_correction != "START":
        raise InvalidInputError(
            f"{path}: cannot compute SUV because DecayCorrection (0054,1102) is {decay_correction}, not START; "
            "use a PET decay-corrected to the scan start or omit --suv."
        )
    return isotope


def _positive(path: Path, keyword: str, value: Any, header: Dataset, isotope: Dataset) -> float:
    """``value`` (of tag ``keyword``, in the header or its isotope item) as a positive number, else refused."""
    positive = number(value, None)
    if positive is None or positive <= 0:
        raise InvalidInputError(
            f"{path}: cannot compute SUV because {keyword} {_SUV_TAGS[keyword]} is "
            f"{header.get(keyword, isotope.get(keyword))!r}, not a positive number; correct it or omit --suv."
        )
    return positive


def _absent(dataset: Dataset, keyword: str) -> bool:
    """Whether ``keyword`` is missing or empty (a present zero is not absent: it is refused as a value)."""
    value = dataset.get(keyword)
    return value is None or (isinstance(value, str | list | MultiValue | pydicom.Sequence) and len(value) == 0)


def _missing(path: Path, names: list[str]) -> InvalidInputError:
    listed = ", ".join(f"{name} {_SUV_TAGS.get(name, '')}".strip() for name in names)
    return InvalidInputError(
        f"{path}: cannot compute SUV because the PET header lacks {listed}; complete the tags or omit --suv."
    )


#: What ``medfuse info`` shows of a PET header for SUV: keyword (in the header, or its isotope item) and tag.
_READINESS_TAGS = (
    ("Units", "(0054,1001)", False),
    ("PatientWeight", "(0010,1030)", False),
    ("RadionuclideTotalDose", "(0018,1074)", True),
    ("RadionuclideHalfLife", "(0018,1075)", True),
    ("RadiopharmaceuticalStartDateTime", "(0018,1078)", True),
    ("RadiopharmaceuticalStartTime", "(0018,1072)", True),
    ("SeriesDate", "(0008,0021)", False),
    ("SeriesTime", "(0008,0031)", False),
    ("AcquisitionTime", "(0008,0032)", False),
    ("CorrectedImage", "(0028,0051)", False),
    ("DecayCorrection", "(0054,1102)", False),
)


@pydicom_quiet()
def suv_readiness(series: SeriesInfo) -> dict[str, Any]:
    """The header values SUV needs and whether ``--suv`` will work, from the headers alone (``medfuse info``).

    ``tags`` maps ``"Keyword (gggg,eeee)"`` to the value as stored (``None`` when absent; the earliest
    AcquisitionTime of the series); ``suv_works`` says whether :func:`suv_factors` accepts them, with
    ``how`` (method, factor, decay time) or ``problem`` (its refusal, naming the tag).
    """
    slices = series.slices
    header = quiet_dcmread(slices[0].path, stop_before_pixels=True)
    isotope = first_item(header, "RadiopharmaceuticalInformationSequence") or Dataset()
    acquired = [record.acquired for record in slices if record.acquired is not None]
    tags: dict[str, str | None] = {}
    for keyword, tag, in_isotope in _READINESS_TAGS:
        value = (isotope if in_isotope else header).get(keyword)
        if keyword == "AcquisitionTime" and acquired:
            value = f"{min(acquired):%H%M%S} (earliest of the series)"
        if isinstance(value, MultiValue | list):
            value = "\\".join(str(v) for v in value)
        tags[f"{keyword} {tag}"] = str(value) if value not in (None, "") else None
    record: dict[str, Any] = {"tags": tags}
    try:
        _factors, details = suv_factors(series, slices)
    except InvalidInputError as exc:
        problem = exc.message.removeprefix(f"{slices[0].path}: ")
        return {**record, "suv_works": False, "problem": problem}
    how = details["method"]
    if "factor" in details and "decay_seconds" in details:
        how += f", factor {details['factor']:.4g} g/Bq, {details['decay_seconds']:.0f} s from injection to scan start"
    return {**record, "suv_works": True, "how": how}
