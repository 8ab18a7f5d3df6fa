"""Clinical DICOM: find the right series in an export, read it exactly, convert PET to SUV, export results.

Input: a folder (searched recursively) may hold many series of both modalities, localizers, derived
images and files that are not DICOM at all. :func:`list_series` reads every header once (no pixels)
and describes each series; :func:`read_dicom_series` picks the MRI or PET series (by UID, else by
Modality, else the largest proper 3-D volume), says why, and reads its pixels with pydicom so each
slice gets its own RescaleSlope/Intercept (PET stores one per slice). Slices are ordered by their
position along the slice normal, never by file name, and a stack with a missing slice, uneven
spacing, mixed orientations or a shear is refused with the culprit named. Compressed transfer
syntaxes decode through the pylibjpeg plugins declared in pyproject (libjpeg: JPEG baseline,
extended, lossless and JPEG-LS; openjpeg: JPEG 2000; rle: RLE) or python-gdcm when installed.

Output: :func:`write_dicom_series` writes a volume on the MRI grid as a new Secondary Capture series
(MONOCHROME2 for the fused volume, RGB for the overlay) with the MRI's patient, study and frame of
reference, new UIDs, ImageType DERIVED\\SECONDARY and per-slice position, orientation and spacing;
the folder appears whole or not at all (:mod:`medfuse.atomic`).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DA, DT, TM, format_number_as_ds

from medfuse import __version__
from medfuse.atomic import (
    IMAGE_EXTENSIONS,
    VOLUME_EXTENSIONS,
    OutputTransaction,
    check_output_path,
    full_suffix,
    output_transaction,
    strip_suffix,
)
from medfuse.console import info as say
from medfuse.console import track, warn
from medfuse.errors import InvalidInputError, OutputError, UnreadableInputError, UsageError
from medfuse.io import check_memory

Role = Literal["MRI", "PET"]

#: Modalities that can play each role, in order of preference (NM = SPECT).
ROLE_MODALITIES: dict[str, tuple[str, ...]] = {"MRI": ("MR",), "PET": ("PT", "NM")}
#: The option that names a series explicitly, per role.
SERIES_OPTION: dict[str, str] = {"MRI": "--mri-series", "PET": "--pet-series"}
#: Modalities that never stand in for another role when a folder lacks the wanted one.
_IMAGING_MODALITIES = frozenset({"MR", "PT", "NM", "CT", "US", "CR", "DX", "MG", "XA", "RF", "SEG", "RTDOSE"})

MIN_SLICES = 3
#: Slice gaps may deviate from the series' spacing by this fraction (plus an absolute 0.01 mm).
SPACING_TOLERANCE = 0.01
_ABS_TOLERANCE_MM = 0.01
_ORIENTATION_TOLERANCE = 1e-4

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: Sub-folders of ``-o DIR --format dicom``.
FUSED_SERIES_FOLDER = "fused"
OVERLAY_SERIES_FOLDER = "overlay"
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ".dc3"}
_FIRST_GROUPS = {0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028}
_PHILIPS_SUV_SCALE = (0x7053, 0x1000)
_GE_SCAN_DATETIME = (0x0009, 0x100D)
_PATIENT_STUDY_KEYWORDS = (
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
_UINT16_MAX = 65535


# ---- discovery -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SliceRecord:
    """One 2-D image of a series: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    frame: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    slope: float
    intercept: float
    acquired: dt.datetime | None
    vendor_suv_scale: float | None = None


@dataclass
class SeriesInfo:
    """What the headers say about one series, and whether it forms a proper 3-D volume."""

    uid: str
    modality: str
    description: str
    patient_id: str
    study_uid: str
    series_number: int | None
    image_type: tuple[str, ...]
    photometric: str
    samples_per_pixel: int
    paths: list[Path]
    slices: list[SliceRecord] = field(repr=False)
    units: str | None = None
    is_localizer: bool = False
    is_derived: bool = False
    attenuation_corrected: bool = False
    problem: str | None = None

    @property
    def slice_count(self) -> int:
        """Number of 2-D images (frames of multi-frame files counted one by one)."""
        return len(self.slices)

    @property
    def is_volume(self) -> bool:
        """Whether the slices form one evenly spaced, complete 3-D stack."""
        return self.problem is None

    @property
    def voxels(self) -> int:
        """Voxel count of the stack (rows × columns × slices)."""
        first = self.slices[0]
        return first.rows * first.columns * len(self.slices)

    def label(self) -> str:
        """``UID (modality, 'description', N slices)`` as shown in listings and messages."""
        return f"{self.uid} ({self.modality or '?'}, {self.description!r}, {self.slice_count} slices)"


@dataclass
class DicomVolume:
    """A DICOM series read as a float32 volume of real-world values, plus what it is and why it was chosen."""

    image: sitk.Image
    info: dict[str, Any]


@dataclass(frozen=True)
class _Stack:
    """Slices sorted along their normal, and the grid they form."""

    slices: list[SliceRecord]
    origin: np.ndarray
    direction: np.ndarray
    spacing: tuple[float, float, float]


def _quiet_dcmread(path: Path, *, stop_before_pixels: bool = False) -> Dataset:
    """``pydicom.dcmread`` of a file already recognised as DICOM (preamble or not), without pydicom's
    own warnings about non-conformant values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)


def _read_header(path: Path) -> Dataset | None:
    """The header of ``path`` (no pixels), ``None`` when it is no DICOM file; corrupt DICOM is an error."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        raise UnreadableInputError(
            f"{path}: cannot be read ({exc.strerror}); check that it exists and is readable."
        ) from exc
    has_preamble = head[128:132] == b"DICM"
    # Some exports omit the 128-byte preamble: such files start with a tag of an early group.
    looks_raw = len(head) >= 8 and int.from_bytes(head[:2], "little") in _FIRST_GROUPS
    claims_dicom = has_preamble or path.suffix.lower() in _DICOM_SUFFIXES
    if not (has_preamble or looks_raw or claims_dicom):
        return None
    try:
        dataset = _quiet_dcmread(path, stop_before_pixels=True)
        series_uid = str(dataset.get("SeriesInstanceUID", ""))
    except Exception as exc:
        if not claims_dicom:
            return None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableInputError(
            f"{path}: is a corrupt DICOM file ({reason}); remove it from the folder or export the series again."
        ) from exc
    if str(dataset.file_meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_CLASS or path.name == "DICOMDIR":
        return None
    if not series_uid:
        if claims_dicom:
            raise UnreadableInputError(
                f"{path}: is a corrupt DICOM file (no SeriesInstanceUID); remove it from the folder or export it again."
            )
        return None
    return dataset


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
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


def _number(value: Any, default: float | None) -> float | None:
    """A finite float from a DICOM value, ``default`` when absent or malformed."""
    numbers = _floats(value, 1)
    return numbers[0] if numbers else default


def _first_item(dataset: Dataset, keyword: str) -> Dataset | None:
    sequence = dataset.get(keyword)
    return sequence[0] if sequence else None


def _datetime(date: Any, time: Any) -> dt.datetime | None:
    """Combine DICOM DA and TM values; ``None`` when either is missing or malformed."""
    if not date or not time:
        return None
    try:
        return dt.datetime.combine(DA(str(date)), TM(str(time)))
    except (TypeError, ValueError):
        return None


def _dicom_datetime(value: Any) -> dt.datetime | None:
    """A DICOM DT value as a naive local datetime (a UTC offset, if any, is dropped like the TM values')."""
    if not value:
        return None
    try:
        return DT(str(value)).replace(tzinfo=None)
    except (TypeError, ValueError):
        return None


def _acquired(dataset: Dataset) -> dt.datetime | None:
    return _dicom_datetime(dataset.get("AcquisitionDateTime")) or _datetime(
        dataset.get("AcquisitionDate") or dataset.get("SeriesDate"), dataset.get("AcquisitionTime")
    )


def _private_value(dataset: Dataset, tag: tuple[int, int], creator: str) -> Any:
    """The value of private element ``tag`` (as usually allocated) in ``creator``'s block, wherever it sits."""
    group, element = tag
    try:
        block = dataset.private_block(group, creator)
        return block[element & 0xFF].value
    except (KeyError, ValueError):
        return None


def _frame_records(path: Path, dataset: Dataset, frames: int) -> list[SliceRecord]:
    """Slices of an enhanced multi-frame file (per-frame functional groups) or of an NM tomographic file."""
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    records = []
    if "PerFrameFunctionalGroupsSequence" in dataset:
        shared = _first_item(dataset, "SharedFunctionalGroupsSequence") or Dataset()
        for index, per_frame in enumerate(dataset.PerFrameFunctionalGroupsSequence):

            def group(keyword: str, per_frame: Dataset = per_frame) -> Dataset:
                return _first_item(per_frame, keyword) or _first_item(shared, keyword) or Dataset()

            transform = group("PixelValueTransformationSequence")
            content = group("FrameContentSequence")
            records.append(
                SliceRecord(
                    path=path,
                    frame=index,
                    position=_floats(group("PlanePositionSequence").get("ImagePositionPatient"), 3),
                    orientation=_floats(group("PlaneOrientationSequence").get("ImageOrientationPatient"), 6),
                    pixel_spacing=_floats(group("PixelMeasuresSequence").get("PixelSpacing"), 2),
                    rows=rows,
                    columns=columns,
                    slope=_number(transform.get("RescaleSlope"), 1.0) or 1.0,
                    intercept=_number(transform.get("RescaleIntercept"), 0.0) or 0.0,
                    acquired=_dicom_datetime(content.get("FrameAcquisitionDateTime")) or _acquired(dataset),
                )
            )
        return records
    detector = _first_item(dataset, "DetectorInformationSequence") or Dataset()
    position = _floats(detector.get("ImagePositionPatient"), 3)
    orientation = _floats(detector.get("ImageOrientationPatient"), 6)
    step = _number(dataset.get("SpacingBetweenSlices"), None) or _number(dataset.get("SliceThickness"), None)
    is_tomo = any("TOMO" in str(v).upper() and "GATED" not in str(v).upper() for v in dataset.get("ImageType", []))
    normal = _normal(orientation) if orientation else None
    for index in range(frames):
        frame_position = None
        if is_tomo and position and normal is not None and step:
            frame_position = tuple(float(v) for v in np.asarray(position) + index * step * normal)
        records.append(
            SliceRecord(
                path=path,
                frame=index,
                position=frame_position,  # type: ignore[arg-type]
                orientation=orientation,
                pixel_spacing=_floats(dataset.get("PixelSpacing"), 2),
                rows=rows,
                columns=columns,
                slope=_number(dataset.get("RescaleSlope"), 1.0) or 1.0,
                intercept=_number(dataset.get("RescaleIntercept"), 0.0) or 0.0,
                acquired=_acquired(dataset),
            )
        )
    return records


def _slice_records(path: Path, dataset: Dataset) -> list[SliceRecord]:
    """The 2-D images a file contributes (several for multi-frame files)."""
    frames = int(_number(dataset.get("NumberOfFrames"), 1) or 1)
    if frames > 1 or "PerFrameFunctionalGroupsSequence" in dataset:
        return _frame_records(path, dataset, frames)
    vendor_scale = _number(_private_value(dataset, _PHILIPS_SUV_SCALE, "Philips PET Private Group"), None)
    return [
        SliceRecord(
            path=path,
            frame=None,
            position=_floats(dataset.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
            orientation=_floats(dataset.get("ImageOrientationPatient"), 6),
            pixel_spacing=_floats(dataset.get("PixelSpacing"), 2),  # type: ignore[arg-type]
            rows=int(dataset.get("Rows", 0)),
            columns=int(dataset.get("Columns", 0)),
            slope=_number(dataset.get("RescaleSlope"), 1.0) or 1.0,
            intercept=_number(dataset.get("RescaleIntercept"), 0.0) or 0.0,
            acquired=_acquired(dataset),
            vendor_suv_scale=vendor_scale,
        )
    ]


def _dicom_files(folder: Path, recursive: bool) -> Iterator[Path]:
    """Candidate files in name order, skipping hidden files and folders (and medfuse's temporaries)."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    for path in sorted(candidates):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            yield path


def _is_localizer(image_type: tuple[str, ...], description: str, records: list[SliceRecord]) -> bool:
    if any(value in ("LOCALIZER", "SCOUT") for value in image_type):
        return True
    words = description.lower().replace("_", " ").split()
    if any(word in ("localizer", "localiser", "scout", "survey", "3-plane", "tri-plane") for word in words):
        return True
    orientations = {tuple(np.round(r.orientation, 3)) for r in records if r.orientation}
    return len(orientations) > 1 and len(records) <= 12


def list_series(folder: str | Path, *, recursive: bool = True) -> list[SeriesInfo]:
    """Describe every image series under ``folder`` (headers only), largest first.

    Files that are not DICOM are skipped, and so (with a warning) are copies of an instance already
    seen; a file that claims to be DICOM (preamble or ``.dcm``) but cannot be parsed raises
    :class:`UnreadableInputError` naming it. Returns ``[]`` when the folder holds no DICOM images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UnreadableInputError(f"{folder}: is not a folder; point to the folder holding the DICOM series.")
    headers: dict[str, Dataset] = {}
    records: dict[str, list[SliceRecord]] = {}
    paths: dict[str, list[Path]] = {}
    instances: dict[str, Path] = {}
    for path in _dicom_files(folder, recursive):
        dataset = _read_header(path)
        if dataset is None or "Rows" not in dataset:  # not DICOM, or no image (SR, PR, KO...)
            continue
        instance = str(dataset.get("SOPInstanceUID", "") or "")
        if instance in instances:
            warn(f"{path}: is a copy of {instances[instance]} (same SOPInstanceUID) and was ignored.")
            continue
        if instance:
            instances[instance] = path
        uid = str(dataset.SeriesInstanceUID)
        headers.setdefault(uid, dataset)
        records.setdefault(uid, []).extend(_slice_records(path, dataset))
        paths.setdefault(uid, []).append(path)
    series = [_describe(headers[uid], paths[uid], records[uid]) for uid in headers]
    return sorted(series, key=lambda s: (-s.voxels, s.uid))


def _describe(header: Dataset, paths: list[Path], records: list[SliceRecord]) -> SeriesInfo:
    image_type = tuple(str(v).upper() for v in (header.get("ImageType") or []))
    description = str(header.get("SeriesDescription", "") or "")
    corrected = {str(v).upper() for v in (header.get("CorrectedImage") or [])}
    number = _number(header.get("SeriesNumber"), None)
    info = SeriesInfo(
        uid=str(header.SeriesInstanceUID),
        modality=str(header.get("Modality", "") or "").upper(),
        description=description,
        patient_id=str(header.get("PatientID", "") or ""),
        study_uid=str(header.get("StudyInstanceUID", "") or ""),
        series_number=int(number) if number is not None else None,
        image_type=image_type,
        photometric=str(header.get("PhotometricInterpretation", "") or "").upper(),
        samples_per_pixel=int(_number(header.get("SamplesPerPixel"), 1) or 1),
        paths=paths,
        slices=records,
        units=str(header.get("Units", "") or "").upper() or None,
        is_localizer=_is_localizer(image_type, description, records),
        is_derived=bool(image_type) and image_type[0] == "DERIVED",
        attenuation_corrected="ATTN" in corrected,
    )
    _stack, info.problem = _analyse_stack(records)
    if info.problem is None and (info.samples_per_pixel != 1 or not info.photometric.startswith("MONOCHROME")):
        info.problem = f"holds colour pixels ({info.photometric or 'unknown photometric'}), not grey values"
    return info


# ---- geometry --------------------------------------------------------------------------------------
def _normal(orientation: tuple[float, ...]) -> np.ndarray:
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, column)
    length = np.linalg.norm(normal)
    return normal / length if length > 0 else normal


def _orthonormal(orientation: tuple[float, ...]) -> np.ndarray | None:
    """Columns (row, column, normal) of the direction matrix, or ``None`` for an invalid orientation."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        return None
    row = row / np.linalg.norm(row)
    column = column - (column @ row) * row
    column = column / np.linalg.norm(column)
    return np.column_stack([row, column, np.cross(row, column)])


def _where(record: SliceRecord) -> str:
    x, y, z = record.position or (math.nan,) * 3
    frame = f" frame {record.frame + 1}" if record.frame is not None else ""
    return f"({x:.2f}, {y:.2f}, {z:.2f}) [{record.path.name}{frame}]"


def _analyse_stack(records: list[SliceRecord]) -> tuple[_Stack | None, str | None]:
    """Sort the slices along their normal and check they form a complete, even, unsheared stack.

    Returns the stack, or ``None`` and the problem in words (naming the slices concerned).
    """
    if not records:
        return None, "has no image slices"
    for keyword, attribute in (
        ("ImagePositionPatient", "position"),
        ("ImageOrientationPatient", "orientation"),
        ("PixelSpacing", "pixel_spacing"),
    ):
        lacking = next((r for r in records if getattr(r, attribute) is None), None)
        if lacking is not None:
            frame = f" frame {lacking.frame + 1}" if lacking.frame is not None else ""
            return None, f"lacks a valid {keyword} ({lacking.path.name}{frame})"
    first = records[0]
    if any((r.rows, r.columns) != (first.rows, first.columns) for r in records):
        sizes = sorted({f"{r.columns}x{r.rows}" for r in records})
        return None, f"mixes image sizes ({', '.join(sizes)})"
    orientations = np.array([r.orientation for r in records])
    if np.abs(orientations - orientations[0]).max() > _ORIENTATION_TOLERANCE:
        count = len({tuple(np.round(o, 3)) for o in orientations})
        return None, f"mixes {count} slice orientations (a localizer or several stacks)"
    spacings = np.array([r.pixel_spacing for r in records])
    if np.abs(spacings - spacings[0]).max() > 1e-4 * max(spacings[0].max(), 1.0):
        return None, "mixes pixel spacings"
    if spacings[0].min() <= 0:
        return None, f"has a non-positive PixelSpacing {list(spacings[0])}"
    if len(records) < MIN_SLICES:
        return None, f"has only {len(records)} slice(s), not a 3-D volume"
    direction = _orthonormal(first.orientation)  # type: ignore[arg-type]
    if direction is None:
        return None, f"has an invalid ImageOrientationPatient {list(first.orientation or ())}"
    positions = np.array([r.position for r in records])
    depth = positions @ direction[:, 2]
    order = np.argsort(depth, kind="stable")
    ordered = [records[i] for i in order]
    positions, depth = positions[order], depth[order]
    gaps = np.diff(depth)
    tolerance = _ABS_TOLERANCE_MM + SPACING_TOLERANCE * float(np.median(gaps))
    if gaps.min() <= tolerance:
        k = int(np.argmin(gaps))
        return None, (
            f"holds several slices at one position, {_where(ordered[k])} and {_where(ordered[k + 1])} "
            "(a dynamic, multi-echo or multi-stack series)"
        )
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ direction[:, 2], direction[:, 2])
    if np.linalg.norm(in_plane, axis=1).max() > tolerance:
        k = int(np.argmax(np.linalg.norm(in_plane, axis=1)))
        return None, f"is not stacked along the slice normal (gantry tilt or shear), see {_where(ordered[k])}"
    spacing = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - spacing)))
    if abs(gaps[worst] - spacing) > tolerance:
        ratio = gaps[worst] / spacing
        missing = round(ratio) - 1
        hint = (
            f"{missing} missing slice{'s' if missing > 1 else ''}"
            if missing >= 1 and abs(ratio - round(ratio)) < 0.05
            else "uneven slice spacing"
        )
        return None, (
            f"has a gap of {gaps[worst]:.3f} mm between the slices at {_where(ordered[worst])} and "
            f"{_where(ordered[worst + 1])} where the others are {spacing:.3f} mm apart ({hint})"
        )
    step = float((depth[-1] - depth[0]) / (len(depth) - 1))
    pixel_spacing = ordered[0].pixel_spacing or (1.0, 1.0)
    return (
        _Stack(
            slices=ordered,
            origin=positions[0],
            direction=direction,
            spacing=(float(pixel_spacing[1]), float(pixel_spacing[0]), step),
        ),
        None,
    )


# ---- selection -------------------------------------------------------------------------------------
def _listing(series: list[SeriesInfo]) -> str:
    return "; ".join(s.label() for s in series) or "none"


def _choose(series: list[SeriesInfo], role: str, series_uid: str | None, folder: Path) -> tuple[SeriesInfo, str]:
    """Pick the series that plays ``role`` and say why (explicit UID, modality, then size)."""
    option = SERIES_OPTION[role]
    if series_uid:
        for candidate in series:
            if candidate.uid == series_uid:
                return candidate, f"given by {option}"
        raise UsageError(
            f"{option} {series_uid}: no such series in {folder}; the series there are: {_listing(series)}."
        )
    basis = ""
    for modality in ROLE_MODALITIES[role]:
        of_modality = [s for s in series if s.modality == modality]
        if of_modality:
            kind = f"{modality} series"
            break
    else:
        of_modality = [s for s in series if s.modality not in _IMAGING_MODALITIES]
        wanted = "/".join(ROLE_MODALITIES[role])
        if not of_modality:
            raise InvalidInputError(
                f"{folder}: holds no {wanted} series for the {role} (found: {_listing(series)}); "
                f"point to the {role} folder or pass {option} UID."
            )
        kind = "series of other modality"
        basis = f"no {wanted} series in the folder; "
    usable = [s for s in of_modality if s.is_volume and not s.is_localizer]
    pool = [s for s in usable if not s.is_derived] or usable
    if not pool:
        details = "; ".join(f"{s.label()}: {'a localizer' if s.is_localizer else s.problem}" for s in of_modality)
        raise InvalidInputError(
            f"{folder}: none of its {kind} forms a usable 3-D volume for the {role} ({details}); "
            f"export the complete series or pass {option} UID."
        )
    ignored = len(of_modality) - len(pool)
    ignored_note = f", {ignored} other {kind} ignored (localizer, derived or incomplete)" if ignored else ""
    if len(pool) == 1:
        derived = " (derived)" if pool[0].is_derived else ""
        return pool[0], f"{basis}the only {kind} forming a 3-D volume{derived}{ignored_note}"

    def rank(s: SeriesInfo) -> tuple[bool, int]:
        return (role == "PET" and s.attenuation_corrected, s.voxels)

    ranked = sorted(pool, key=rank, reverse=True)
    best, runner_up = ranked[0], ranked[1]
    if rank(best) == rank(runner_up):
        tied = [s for s in ranked if rank(s) == rank(best)]
        raise InvalidInputError(
            f"{folder}: holds {len(tied)} {kind} that could be the {role} and none stands out "
            f"({_listing(tied)}); pick one with {option} UID."
        )
    if best.attenuation_corrected and not runner_up.attenuation_corrected and role == "PET":
        why = f"the attenuation-corrected one of {len(pool)} {kind}"
    else:
        why = f"the largest of {len(pool)} {kind} ({best.voxels} voxels against {runner_up.voxels})"
    return best, f"{basis}{why}{ignored_note}"


# ---- reading ---------------------------------------------------------------------------------------
def _decode(path: Path) -> np.ndarray:
    """The stored pixel values of ``path`` (all frames), decoding any compressed transfer syntax."""
    try:
        dataset = _quiet_dcmread(path)
    except Exception as exc:
        raise UnreadableInputError(
            f"{path}: is a corrupt DICOM file ({_reason(exc)}); remove it or export the series again."
        ) from exc
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        raise UnreadableInputError(f"{path}: holds no pixel data; export the series again with its images.")
    if "TransferSyntaxUID" not in dataset.file_meta:  # a file without meta header: as parsed
        implicit = dataset.original_encoding[0]
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    syntax = pydicom.uid.UID(dataset.file_meta.TransferSyntaxUID)
    try:
        plugin = _decoding_plugin(syntax)
        if plugin:
            dataset.pixel_array_options(decoding_plugin=plugin)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(dataset.pixel_array)
    except Exception as exc:
        if not syntax.is_compressed:
            raise UnreadableInputError(
                f"{path}: its pixel data is truncated or corrupt ({_reason(exc)}); export the series again."
            ) from exc
        raise UnreadableInputError(
            f"{path}: its pixel data ({syntax.name}) cannot be decoded ({_reason(exc)}); "
            "export the series again, uncompressed, or reinstall medfuse with its DICOM decoders."
        ) from exc


def _decoding_plugin(syntax: str) -> str:
    """The pixel decoder to use for ``syntax``: a pylibjpeg plugin or pydicom's own when available.

    python-gdcm, when installed, is used only as a last resort because it aborts the whole process
    on some corrupt codestreams instead of raising an error.
    """
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return ""
    if decoder.is_native:
        return ""
    available = decoder.available_plugins
    return next((name for name in ("pylibjpeg", "pydicom", "pillow") if name in available), "")


def _reason(exc: BaseException) -> str:
    """The first line of an exception's text, with the next one when the first only introduces it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    reason = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return reason.rstrip(".")


def _real_world(stack: _Stack, folder: Path, factors: np.ndarray) -> np.ndarray:
    """Decode every slice and apply its own RescaleSlope/Intercept (and SUV factor): float32 (z, y, x)."""
    first = stack.slices[0]
    shape = (len(stack.slices), first.rows, first.columns)
    check_memory(folder, shape[::-1], sitk.sitkFloat32)  # refused before anything is allocated
    volume = np.empty(shape, np.float32)
    by_file: dict[Path, list[int]] = {}
    for index, record in enumerate(stack.slices):
        by_file.setdefault(record.path, []).append(index)
    for path, indices in track(by_file.items(), "Reading DICOM", total=len(by_file)):
        pixels = _decode(path)
        for index in indices:
            record = stack.slices[index]
            plane = pixels[record.frame] if record.frame is not None and pixels.ndim == 3 else pixels
            if plane.shape != shape[1:]:
                raise UnreadableInputError(
                    f"{path}: its pixel data has shape {plane.shape} where the header says {shape[1:]}; "
                    "export the series again."
                )
            volume[index] = (plane.astype(np.float64) * record.slope + record.intercept) * factors[index]
    return volume


def _to_image(volume: np.ndarray, stack: _Stack) -> sitk.Image:
    image = sitk.GetImageFromArray(volume, isVector=False)
    image.SetOrigin(tuple(float(v) for v in stack.origin))
    image.SetSpacing(stack.spacing)
    image.SetDirection(tuple(float(v) for v in stack.direction.ravel()))
    return image


def read_dicom_series(
    folder: str | Path,
    *,
    role: Role,
    series_uid: str | None = None,
    suv: bool = False,
) -> DicomVolume:
    """Read the MRI or PET series of a DICOM folder as a float32 volume of real-world values.

    ``folder`` may also be one file of the series. The series is chosen by ``series_uid``, else by
    Modality (MR; PT, then NM for SPECT), else as the largest proper 3-D volume, ignoring localizers
    and derived images; the choice and its reason are printed and stored in ``info["reason"]``.
    ``suv=True`` converts PET to SUVbw (:func:`suv_factors`). Raises :class:`UnreadableInputError`
    (no DICOM, corrupt file, undecodable pixels), :class:`InvalidInputError` (no usable or an
    ambiguous series, gaps, SUV tags missing) or :class:`UsageError` (unknown ``series_uid``).
    """
    if role not in ROLE_MODALITIES:
        raise ValueError(f"role must be 'MRI' or 'PET', not {role!r}")
    folder = Path(folder)
    if not folder.exists():
        raise UnreadableInputError(f"{folder}: does not exist; check the path.")
    if folder.is_file():
        header = _read_header(folder)
        if header is None:
            raise UnreadableInputError(f"{folder}: is not a DICOM file; point to the DICOM folder or a volume file.")
        series_uid = series_uid or str(header.SeriesInstanceUID)
        folder = folder.parent
        series = list_series(folder, recursive=False)
    else:
        series = list_series(folder)
    if not series:
        raise UnreadableInputError(
            f"{folder}: holds no DICOM images; point to the folder of the exported series (or to a volume file)."
        )
    chosen, reason = _choose(series, role, series_uid, folder)
    stack, _problem = _analyse_stack(chosen.slices)
    if stack is None or chosen.problem is not None:
        raise InvalidInputError(
            f"{folder}: series {chosen.label()} {chosen.problem}; export the complete series again "
            f"or choose another with {SERIES_OPTION[role]}."
        )
    if chosen.is_localizer:
        warn(f"{folder}: series {chosen.uid} looks like a localizer; check that it is the {role} you meant.")
    units = chosen.units
    factors = np.ones(len(stack.slices))
    suv_details = None
    if suv:
        factors, suv_details = suv_factors(chosen, stack.slices)
        units = "SUVbw"
    say(f"{role}: series {chosen.label()} from {folder}: {reason}.")
    image = _to_image(_real_world(stack, folder, factors), stack)
    reference = _quiet_dcmread(stack.slices[0].path, stop_before_pixels=True)
    return DicomVolume(
        image=image,
        info={
            "folder": str(folder),
            "series_uid": chosen.uid,
            "modality": chosen.modality,
            "description": chosen.description,
            "series_number": chosen.series_number,
            "patient_id": chosen.patient_id,
            "study_uid": chosen.study_uid,
            "frame_of_reference_uid": str(reference.get("FrameOfReferenceUID", "") or ""),
            "units": units,
            "reason": reason,
            "slice_count": chosen.slice_count,
            "suv": suv_details,
            "reference_file": str(stack.slices[0].path),
            "files": [str(p) for p in dict.fromkeys(r.path for r in stack.slices)],
            "export_tags": {kw: str(reference.get(kw, "") or "") for kw in _PATIENT_STUDY_KEYWORDS},
        },
    )


# ---- SUV -------------------------------------------------------------------------------------------
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


def _absent(dataset: Dataset, keyword: str) -> bool:
    """Whether ``keyword`` is missing or empty (a present zero is not absent: it is refused as a value)."""
    value = dataset.get(keyword)
    return value is None or (isinstance(value, str | list | MultiValue | pydicom.Sequence) and len(value) == 0)


def _missing(path: Path, names: list[str]) -> InvalidInputError:
    listed = ", ".join(f"{name} {_SUV_TAGS.get(name, '')}".strip() for name in names)
    return InvalidInputError(
        f"{path}: cannot compute SUV because the PET header lacks {listed}; complete the tags or omit --suv."
    )


def suv_factors(series: SeriesInfo, slices: list[SliceRecord]) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-slice factors turning rescaled PET values into SUVbw (g/ml), by the QIBA vendor-neutral rule.

    BQML with CorrectedImage ATTN and DECY and DecayCorrection START: SUV = value × weight[g] /
    (dose × 2^(-Δt / half-life)), Δt from RadiopharmaceuticalStartDateTime (or SeriesDate +
    RadiopharmaceuticalStartTime) to the series time (or, when the series time is after the earliest
    acquisition time, GE's private scan time or that acquisition time). GML is already SUV. CNTS
    needs Philips' private SUV scale factor (7053,1000). Everything else is refused naming the tag.
    """
    path = slices[0].path
    if series.modality != "PT":
        raise InvalidInputError(
            f"{path}: --suv applies to PET (Modality PT) but this series is "
            f"{series.modality or 'of unknown modality'}; omit --suv."
        )
    header = _quiet_dcmread(path, stop_before_pixels=True)
    units = str(header.get("Units", "") or "").upper()
    if not units:
        raise _missing(path, ["Units"])
    if units == "GML":
        return np.ones(len(slices)), {"method": "Units GML: already SUVbw", "factor": 1.0}
    if units == "CNTS":
        scales = [record.vendor_suv_scale for record in slices]
        if any(scale is None or scale <= 0 for scale in scales):
            raise InvalidInputError(
                f"{path}: the PET is in scanner counts (Units CNTS) without Philips' SUV scale factor (7053,1000); "
                "export it in Bq/ml (BQML) or omit --suv."
            )
        return np.asarray(scales, float), {"method": "Units CNTS: Philips private SUV scale factor (7053,1000)"}
    if units != "BQML":
        raise InvalidInputError(
            f"{path}: cannot compute SUV from PET in Units {units}; medfuse needs BQML, GML or Philips CNTS, "
            "so export the PET in Bq/ml or omit --suv."
        )
    missing = [kw for kw in ("CorrectedImage", "DecayCorrection", "PatientWeight") if _absent(header, kw)]
    isotope = _first_item(header, "RadiopharmaceuticalInformationSequence")
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
    weight = _number(header.PatientWeight, None)
    dose = _number(isotope.RadionuclideTotalDose, None)
    half_life = _number(isotope.RadionuclideHalfLife, None)
    for keyword, value in (
        ("PatientWeight", weight),
        ("RadionuclideTotalDose", dose),
        ("RadionuclideHalfLife", half_life),
    ):
        if value is None or value <= 0:
            raise InvalidInputError(
                f"{path}: cannot compute SUV because {keyword} {_SUV_TAGS[keyword]} is "
                f"{header.get(keyword, isotope.get(keyword))!r}, not a positive number; correct it or omit --suv."
            )
    series_time = _datetime(header.SeriesDate, header.SeriesTime)
    injection = _dicom_datetime(isotope.get("RadiopharmaceuticalStartDateTime")) or _datetime(
        header.SeriesDate, isotope.get("RadiopharmaceuticalStartTime")
    )
    if series_time is None or injection is None:
        bad = "SeriesDate/SeriesTime" if series_time is None else "RadiopharmaceuticalStartTime"
        raise InvalidInputError(f"{path}: cannot compute SUV because {bad} is malformed; correct it or omit --suv.")
    acquisitions = [record.acquired for record in slices if record.acquired is not None]
    earliest = min(acquisitions) if acquisitions else None
    scan_time, source = series_time, "SeriesDate/SeriesTime"
    if earliest is not None and series_time > earliest:
        # The series time was rewritten after the scan (post-processing): use the true scan start.
        ge_time = _dicom_datetime(_private_value(header, _GE_SCAN_DATETIME, "GEMS_PETD_01"))
        scan_time, source = (ge_time, "GE private scan time (0009,100D)") if ge_time else (earliest, "AcquisitionTime")
    elapsed = (scan_time - injection).total_seconds()
    if elapsed < 0:
        raise InvalidInputError(
            f"{path}: cannot compute SUV because the injection ({injection:%Y-%m-%d %H:%M:%S}) is after the scan "
            f"start ({scan_time:%Y-%m-%d %H:%M:%S}); correct RadiopharmaceuticalStartTime or omit --suv."
        )
    decayed_dose = dose * 2.0 ** (-elapsed / half_life)  # type: ignore[operator]
    factor = weight * 1000.0 / decayed_dose  # type: ignore[operator]
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


# ---- patients --------------------------------------------------------------------------------------
def check_same_patient(mri_info: Mapping[str, Any] | None, pet_info: Mapping[str, Any] | None, allow: bool) -> None:
    """Refuse an MRI and a PET whose DICOM PatientID differ, unless ``allow`` (then only warn).

    Inputs without a PatientID (NIfTI, anonymised exports) are not compared.
    """
    mri_id = str((mri_info or {}).get("patient_id") or "")
    pet_id = str((pet_info or {}).get("patient_id") or "")
    if not mri_id or not pet_id or mri_id == pet_id:
        return
    where = (pet_info or {}).get("folder") or "the PET"
    text = f"{where}: the PET belongs to PatientID {pet_id!r} but the MRI to {mri_id!r}"
    if allow:
        warn(f"{text}; fusing anyway because of --allow-different-patients.")
        return
    raise InvalidInputError(f"{text}; check the inputs, or pass --allow-different-patients if this is intended.")


# ---- export ----------------------------------------------------------------------------------------
def export_reference(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The reference to stamp on exported series: the MRI's patient, study and frame of reference.

    ``info`` is :attr:`DicomVolume.info` of the MRI; ``None`` (an MRI that was not DICOM) gives fresh
    study and frame-of-reference UIDs. Pass the same reference to every series of one result so they
    share study and frame of reference.
    """
    if info is not None and info.get("export_tags"):
        tags = dict(info["export_tags"])
    else:
        tags = dict.fromkeys(_PATIENT_STUDY_KEYWORDS, "")
        today = dt.datetime.now()
        tags.update(StudyDate=today.strftime("%Y%m%d"), StudyTime=today.strftime("%H%M%S"))
    tags["StudyInstanceUID"] = tags.get("StudyInstanceUID") or generate_uid()
    tags["FrameOfReferenceUID"] = tags.get("FrameOfReferenceUID") or generate_uid()
    return {"export_tags": tags}


def _grey_pixels(array: np.ndarray, out_dir: Path) -> tuple[np.ndarray, float, float]:
    """uint16 stored values plus the RescaleSlope/Intercept that map them back to ``array``."""
    if not np.isfinite(array).all():
        raise OutputError(f"{out_dir}: the volume to export holds NaN or infinite values; nothing was written.")
    low, high = float(array.min()), float(array.max())
    slope = float(format_number_as_ds((high - low) / _UINT16_MAX)) if high > low else 1.0
    intercept = float(format_number_as_ds(low))
    stored = np.clip(np.rint((array.astype(np.float64) - intercept) / slope), 0, _UINT16_MAX)
    return stored.astype(np.uint16), slope, intercept


def _rgb_pixels(array: np.ndarray, out_dir: Path) -> np.ndarray:
    """uint8 RGB triplets from an 8-bit or a [0, 1] floating-point colour volume."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1:
        return np.rint(array * 255).astype(np.uint8)
    raise OutputError(
        f"{out_dir}: an RGB series needs 8-bit colours or floats in [0, 1], not {array.dtype} values "
        f"from {array.min()} to {array.max()}; nothing was written."
    )


def _slice_dataset(
    tags: Mapping[str, str], series_uid: str, number: int, description: str, instance: int, now: dt.datetime
) -> Dataset:
    """A Secondary Capture dataset with the reference's patient/study tags and this series' identity."""
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.SOPClassUID = SECONDARY_CAPTURE
    dataset.SOPInstanceUID = sop_uid
    for keyword in _PATIENT_STUDY_KEYWORDS:
        setattr(dataset, keyword, tags.get(keyword, ""))
    dataset.Modality = "OT"
    dataset.ConversionType = "WSD"
    dataset.SecondaryCaptureDeviceManufacturer = "medfuse"
    dataset.SecondaryCaptureDeviceSoftwareVersions = __version__
    dataset.SoftwareVersions = __version__
    dataset.SeriesInstanceUID = series_uid
    dataset.SeriesNumber = number
    dataset.SeriesDescription = description[:64]
    dataset.DerivationDescription = f"{description} (medfuse {__version__})"[:1024]
    dataset.ImageType = ["DERIVED", "SECONDARY"]
    dataset.SeriesDate = dataset.ContentDate = dataset.InstanceCreationDate = now.strftime("%Y%m%d")
    dataset.SeriesTime = dataset.ContentTime = dataset.InstanceCreationTime = now.strftime("%H%M%S")
    dataset.InstanceNumber = instance
    dataset.PositionReferenceIndicator = ""
    dataset.BurnedInAnnotation = "NO"
    dataset.LossyImageCompression = "00"
    return dataset


def write_dicom_series(
    image: sitk.Image,
    out_dir: str | Path,
    *,
    reference: Mapping[str, Any] | None,
    description: str,
    rgb: bool,
    series_number: int = 9001,
    transaction: OutputTransaction | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 3-D volume as a new DICOM series folder (one file per slice) and return the folder.

    Grey volumes become MONOCHROME2 16-bit with a RescaleSlope/Intercept that restores their values
    (to 1/65535 of their range); ``rgb=True`` volumes (3 components, uint8 or floats in [0, 1]) become
    RGB 8-bit. Patient, study and FrameOfReferenceUID come from ``reference`` (:func:`export_reference`
    or the MRI's ``DicomVolume.info``; fresh UIDs when ``None``); Series and SOP Instance UIDs are new;
    each slice carries its position, the orientation and the spacing, so the series reads back on the
    image's grid (a left-handed grid comes back with its slice order reversed: same voxels in space).
    The folder is written under a temporary name and renamed when complete, inside ``transaction``
    when given (with the other outputs of a run) or in its own.
    """
    out_dir = Path(out_dir)
    if image.GetDimension() != 3:
        raise OutputError(
            f"{out_dir}: a DICOM series needs a 3-D volume, not {image.GetDimension()}-D; nothing was written."
        )
    components = image.GetNumberOfComponentsPerPixel()
    if components != (3 if rgb else 1):
        kind = "an RGB" if rgb else "a grey"
        raise OutputError(f"{out_dir}: {kind} series needs {3 if rgb else 1} component(s) per voxel, not {components}.")
    array = sitk.GetArrayFromImage(image)
    stored, slope, intercept = (_rgb_pixels(array, out_dir), 1.0, 0.0) if rgb else _grey_pixels(array, out_dir)
    tags = export_reference(reference)["export_tags"]
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    spacing, origin = image.GetSpacing(), np.asarray(image.GetOrigin(), float)
    normal = np.cross(direction[:, 0], direction[:, 1])
    orientation = [format_number_as_ds(float(v)) for v in (*direction[:, 0], *direction[:, 1])]
    positions = [origin + direction[:, 2] * spacing[2] * k for k in range(stored.shape[0])]
    # InstanceNumber follows the position along the DICOM normal, as viewers and readers sort.
    instance_of = {
        k: rank + 1 for rank, k in enumerate(sorted(range(len(positions)), key=lambda k: positions[k] @ normal))
    }
    series_uid, now = generate_uid(), dt.datetime.now()

    def write_into(folder: Path) -> None:
        folder.mkdir()
        for k, position in enumerate(positions):
            dataset = _slice_dataset(tags, series_uid, series_number, description, instance_of[k], now)
            dataset.ImagePositionPatient = [format_number_as_ds(float(v)) for v in position]
            dataset.ImageOrientationPatient = orientation
            dataset.PixelSpacing = [format_number_as_ds(float(spacing[1])), format_number_as_ds(float(spacing[0]))]
            dataset.SliceThickness = dataset.SpacingBetweenSlices = format_number_as_ds(float(spacing[2]))
            dataset.SliceLocation = format_number_as_ds(float(position @ normal))
            dataset.Rows, dataset.Columns = stored.shape[1], stored.shape[2]
            if rgb:
                dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
                dataset.BitsAllocated = dataset.BitsStored = 8
                dataset.HighBit = 7
            else:
                dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
                dataset.BitsAllocated = dataset.BitsStored = 16
                dataset.HighBit = 15
                dataset.RescaleSlope = format_number_as_ds(slope)
                dataset.RescaleIntercept = format_number_as_ds(intercept)
                dataset.RescaleType = "US"
                low, high = intercept, intercept + slope * _UINT16_MAX
                dataset.WindowCenter = format_number_as_ds((low + high) / 2)
                dataset.WindowWidth = format_number_as_ds(max(high - low, 1e-6))
            dataset.PixelRepresentation = 0
            dataset.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            dataset.save_as(folder / f"IM{instance_of[k]:05d}.dcm", enforce_file_format=True)

    def run(tx: OutputTransaction) -> None:
        temp = tx.path_for(out_dir)
        try:
            write_into(temp)
        except OSError as exc:
            raise OutputError(f"{out_dir}: the DICOM series could not be written ({exc.strerror or exc}).") from exc

    if transaction is not None:
        run(transaction)
    else:
        with output_transaction(overwrite=overwrite) as tx:
            run(tx)
    return out_dir


def plan_dicom_outputs(
    output_dir: str | Path, *, inputs: Sequence[str | Path], overlay: bool, overwrite: bool
) -> dict[str, Path]:
    """Check ``-o DIR --format dicom`` before any work; return the series folders by kind.

    The fused series goes to ``DIR/fused`` and the overlay to ``DIR/overlay``; ``DIR`` may exist
    (other files in it are left alone) or be created if its parent exists. Refused: a ``DIR`` named
    like a file (``.nii.gz``, ``.png``...), a ``DIR`` inside an input folder (inputs stay untouched),
    and existing series folders without ``overwrite``.
    """
    output_dir = Path(output_dir)
    suffix = full_suffix(output_dir)
    if suffix in (*VOLUME_EXTENSIONS, *IMAGE_EXTENSIONS, ".dcm", ".json"):
        raise UsageError(
            f"-o {output_dir}: --format dicom writes a folder of DICOM series, not a {suffix} file; "
            f"give -o a folder such as {strip_suffix(output_dir)}."
        )
    for item in inputs:
        source = Path(item)
        if source.is_dir() and output_dir.resolve().is_relative_to(source.resolve()):
            raise OutputError(
                f"{output_dir}: is inside the input folder {source}, which medfuse never writes into; "
                "choose another -o."
            )
    check = {"is_dir": True, "inputs": inputs, "overwrite": overwrite}
    targets = {"fused": check_output_path(output_dir / FUSED_SERIES_FOLDER, **check)}
    if overlay:
        targets["overlay"] = check_output_path(output_dir / OVERLAY_SERIES_FOLDER, **check)
    return targets


def write_fused_dicom(
    targets: Mapping[str, Path],
    fused: sitk.Image,
    overlay: sitk.Image | None,
    *,
    reference: Mapping[str, Any] | None,
    method: str,
    transaction: OutputTransaction,
) -> list[Path]:
    """Write a fusion result to the folders of :func:`plan_dicom_outputs`: the fused volume as a grey
    series in ``targets["fused"]`` and, when both are given, the overlay as an RGB series in
    ``targets["overlay"]``.

    Both series share the MRI's patient, study and frame of reference (``reference`` is the MRI's
    :attr:`DicomVolume.info`; fresh UIDs when the MRI was not DICOM) and are committed with the rest
    of ``transaction``.
    """
    shared = export_reference(reference)
    written = [
        write_dicom_series(
            fused,
            targets["fused"],
            reference=shared,
            description=f"medfuse fused MRI+PET ({method})",
            rgb=False,
            series_number=9001,
            transaction=transaction,
        )
    ]
    if overlay is not None and "overlay" in targets:
        written.append(
            write_dicom_series(
                overlay,
                targets["overlay"],
                reference=shared,
                description="medfuse MRI+PET colour overlay",
                rgb=True,
                series_number=9002,
                transaction=transaction,
            )
        )
    return written
