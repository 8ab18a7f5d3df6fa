"""DICOM headers: reading one file's header (no pixels) and its values, tolerantly.

Real exports carry malformed values (a decimal string with junk, an empty date, a private tag moved
to another block): the helpers here return ``None`` (or a default) for those instead of raising, so
that callers decide what is fatal and say so naming the tag.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DA, DT, TM

from medfuse.dicom.files import claims_dicom, looks_like_dicom, read_head
from medfuse.errors import UnreadableInputError

_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: The patient, study and frame-of-reference tags an exported series copies from the MRI.
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "FrameOfReferenceUID",
)
#: What an exported series copies from the MRI: the above, and where the patient lay and what was scanned.
EXPORT_KEYWORDS = (*PATIENT_STUDY_KEYWORDS, "PatientPosition", "BodyPartExamined")


@contextlib.contextmanager
def pydicom_quiet() -> Iterator[None]:
    """Hide pydicom's own warnings (a value invalid for its VR, a non-conformant header) while medfuse
    reads DICOM: they name no file. Where an invalid value matters medfuse says so itself, naming the
    file; other warnings still show. Also a decorator.

    pydicom warns when a value is first accessed, not when the file is read, so this wraps every
    function that reads header values (listing series, reading a series, ``medfuse info``).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        yield


@pydicom_quiet()
def quiet_dcmread(path: Path, *, stop_before_pixels: bool = False) -> Dataset:
    """``pydicom.dcmread`` of a file already recognised as DICOM (preamble or not), without pydicom's
    own warnings about non-conformant values."""
    return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)


def is_valid_uid(value: str) -> bool:
    """Whether ``value`` is a valid DICOM UID (digits and dots, no leading zeros, at most 64 characters)."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    try:
        validate_value("UI", value, config.RAISE)
    except ValueError:
        return False
    return bool(value)


@pydicom_quiet()
def read_header(path: Path) -> Dataset | None:
    """The header of ``path`` (no pixels), ``None`` when it is no DICOM file; corrupt DICOM is an error."""
    try:
        head = read_head(path)
    except OSError as exc:
        raise UnreadableInputError(
            f"{path}: cannot be read ({exc.strerror}); check that it exists and is readable."
        ) from exc
    if not looks_like_dicom(path, head):
        return None
    claimed = claims_dicom(path, head)
    try:
        dataset = quiet_dcmread(path, stop_before_pixels=True)
        series_uid = str(dataset.get("SeriesInstanceUID", ""))
    except Exception as exc:
        if not claimed:
            return None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableInputError(
            f"{path}: is a corrupt DICOM file ({reason}); remove it from the folder or export the series again."
        ) from exc
    if str(dataset.file_meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_CLASS or path.name == "DICOMDIR":
        return None
    if not series_uid:
        if claimed:
            raise UnreadableInputError(
                f"{path}: is a corrupt DICOM file (no SeriesInstanceUID); remove it from the folder or export it again."
            )
        return None
    return dataset


def floats(value: Any, count: int) -> tuple[float, ...] | None:
    """``count`` finite floats from a DICOM multi-value, or ``None`` when absent or malformed."""
    if value is None:
        return None
    try:
        values = value if isinstance(value, list | tuple | MultiValue) else [value]
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


def number(value: Any, default: float | None) -> float | None:
    """A finite float from a DICOM value, ``default`` when absent or malformed."""
    numbers = floats(value, 1)
    return numbers[0] if numbers else default


def first_item(dataset: Dataset, keyword: str) -> Dataset | None:
    """The first item of sequence ``keyword``, ``None`` when the sequence is absent or empty."""
    sequence = dataset.get(keyword)
    return sequence[0] if sequence else None


def combine_datetime(date: Any, time: Any) -> dt.datetime | None:
    """Combine DICOM DA and TM values; ``None`` when either is missing or malformed."""
    if not date or not time:
        return None
    try:
        return dt.datetime.combine(DA(str(date)), TM(str(time)))
    except (TypeError, ValueError):
        return None


def parse_datetime(value: Any) -> dt.datetime | None:
    """A DICOM DT value as a naive local datetime (a UTC offset, if any, is dropped like the TM values')."""
    if not value:
        return None
    try:
        return DT(str(value)).replace(tzinfo=None)
    except (TypeError, ValueError):
        return None


def acquisition_time(dataset: Dataset) -> dt.datetime | None:
    """When the slice was acquired: AcquisitionDateTime, else (Acquisition or Series) date + AcquisitionTime."""
    return parse_datetime(dataset.get("AcquisitionDateTime")) or combine_datetime(
        dataset.get("AcquisitionDate") or dataset.get("SeriesDate"), dataset.get("AcquisitionTime")
    )


def private_value(dataset: Dataset, tag: tuple[int, int], creator: str) -> Any:
    """The value of private element ``tag`` (as usually allocated) in ``creator``'s block, wherever it sits."""
    group, element = tag
    try:
        block = dataset.private_block(group, creator)
        return block[element & 0xFF].value
    except (KeyError, ValueError):
        return None
