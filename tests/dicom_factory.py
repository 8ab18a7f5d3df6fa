"""Builders of tiny synthetic DICOM series for tests (pydicom; deterministic apart from fresh UIDs).

Every builder writes real DICOM files that a scanner export could contain and returns a
:class:`BuiltSeries` holding the values and geometry a correct reader must recover:

- :func:`make_series`: an MR, PT or other single-frame series from a numpy volume or a SimpleITK
  image, with series-wide or per-slice RescaleSlope/Intercept, any transfer syntax that can be
  encoded here (:data:`ENCODABLE`), file names shuffled so name order differs from slice order,
  optional missing slices, extra tags (SUV, ImageType...) and Philips' private SUV scale factor;
- :func:`make_nm_series` (SPECT, one multi-frame NM file) and :func:`make_enhanced_series`
  (enhanced multi-frame with per-frame functional groups);
- :func:`make_localizer` (tri-planar scout), :func:`pet_suv_tags` (QIBA SUV tags),
  :func:`write_corrupt_file`, :func:`write_undecodable_file`, :func:`mixed_study` (MR, PET,
  localizer, derived and a second PET of another patient in one folder) and
  :func:`clinical_folders` (the same on the synthetic head of ``tests/synthetic.py``, fusable).

Values are quantised exactly as the files store them, so ``BuiltSeries.values`` is what the reader
must return to float32 precision (lossy JPEG baseline excepted).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
NM_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
SOP_CLASS = {"MR": MR_STORAGE, "PT": PET_STORAGE, "NM": NM_STORAGE}

#: Transfer syntaxes the factory can write; JPEG-LS and JPEG lossless need python-gdcm.
ENCODABLE = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLosslessSV1,
)
_GDCM_SYNTAXES = {JPEGLSLossless: "JPEGLSLossless", JPEGLosslessSV1: "JPEGLosslessProcess14_1"}


@dataclass
class BuiltSeries:
    """A written series and the ground truth a reader must recover from it."""

    folder: Path
    uid: str
    paths: list[Path]
    values: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    frame_of_reference_uid: str
    study_uid: str
    patient_id: str
    modality: str

    def image(self) -> sitk.Image:
        """The expected volume as a float32 SimpleITK image on the series' grid."""
        image = sitk.GetImageFromArray(self.values.astype(np.float32))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def phantom(shape: tuple[int, int, int] = (6, 10, 12), *, kind: str = "mri", seed: int = 0) -> np.ndarray:
    """A small (z, y, x) float volume: a smooth ellipsoid ``mri`` or a hot-spot ``pet`` (Bq/ml-like)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = np.clip(1.2 - (x**2 + y**2 + z**2), 0, None)
    if kind == "mri":
        return 800.0 * body + 40.0 * rng.random(shape)
    spot = np.exp(-((x - 0.3) ** 2 + (y + 0.2) ** 2 + z**2) / 0.05)
    return 4000.0 * body + 30000.0 * spot + 100.0 * rng.random(shape)


def pet_suv_tags(
    *,
    weight_kg: float = 75.0,
    dose_bq: float = 370e6,
    half_life_s: float = 6586.2,
    series_date: str = "20240305",
    series_time: str = "103000",
    injection_time: str | None = "093000",
    injection_datetime: str | None = None,
    acquisition_time: str | None = None,
    units: str = "BQML",
    corrected: Sequence[str] = ("ATTN", "DECY", "NORM"),
    decay_correction: str = "START",
) -> dict[str, Any]:
    """PET header tags for SUV by the QIBA rule (pass to :func:`make_series` as ``extra``).

    Set a keyword to ``None``-like values by deleting it from the returned dict to test missing tags.
    """
    isotope: dict[str, Any] = {
        "Radiopharmaceutical": "Fluorodeoxyglucose",
        "RadionuclideTotalDose": format_number_as_ds(float(dose_bq)),
        "RadionuclideHalfLife": format_number_as_ds(float(half_life_s)),
    }
    if injection_time is not None:
        isotope["RadiopharmaceuticalStartTime"] = injection_time
    if injection_datetime is not None:
        isotope["RadiopharmaceuticalStartDateTime"] = injection_datetime
    tags: dict[str, Any] = {
        "Units": units,
        "CorrectedImage": list(corrected),
        "DecayCorrection": decay_correction,
        "PatientWeight": format_number_as_ds(float(weight_kg)),
        "SeriesDate": series_date,
        "SeriesTime": series_time,
        "AcquisitionDate": series_date,
        "AcquisitionTime": acquisition_time or series_time,
        "RadiopharmaceuticalInformationSequence": [isotope],
    }
    return tags


def _apply(dataset: Dataset, tags: Mapping[str, Any]) -> None:
    """Set keyword tags; a list of dicts becomes a sequence of items."""
    for keyword, value in tags.items():
        if isinstance(value, list) and value and isinstance(value[0], Mapping):
            items = []
            for item_tags in value:
                item = Dataset()
                _apply(item, item_tags)
                items.append(item)
            setattr(dataset, keyword, DicomSequence(items))
        else:
            setattr(dataset, keyword, value)


def _ds(value: float) -> float:
    """``value`` as it survives being written to a DS element."""
    return float(format_number_as_ds(float(value)))


def _quantise(
    values: np.ndarray, rescale: str, signed: bool
) -> tuple[np.ndarray, list[float], list[float], np.ndarray]:
    """Stored integers, per-slice slopes and intercepts, and the real-world values they give back."""
    info = np.iinfo(np.int16 if signed else np.uint16)
    stored_dtype = np.int16 if signed else np.uint16
    slices = values.shape[0]
    if rescale == "none":
        stored = np.clip(np.rint(values), info.min, info.max).astype(stored_dtype)
        return stored, [1.0] * slices, [0.0] * slices, stored.astype(np.float64)
    if rescale == "series":
        low, high = float(values.min()), float(values.max())
        lows, highs = [low] * slices, [high] * slices
    elif rescale == "slice":
        lows = [float(v.min()) for v in values]
        highs = [float(v.max()) for v in values]
    else:
        raise ValueError(f"rescale must be none, series or slice, not {rescale!r}")
    stored = np.empty(values.shape, stored_dtype)
    slopes, intercepts = [], []
    expected = np.empty(values.shape, np.float64)
    for k in range(slices):
        span = (highs[k] - lows[k]) or 1.0
        slope = _ds(span / (info.max - info.min - 100))
        intercept = _ds(lows[k] - slope * (info.min + 50))
        stored[k] = np.clip(np.rint((values[k] - intercept) / slope), info.min, info.max)
        expected[k] = stored[k].astype(np.float64) * slope + intercept
        slopes.append(slope)
        intercepts.append(intercept)
    return stored, slopes, intercepts, expected


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _gdcm_recompress(path: Path, syntax: str) -> None:
    """Re-encode ``path`` in place with python-gdcm (JPEG-LS and JPEG lossless encoders)."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise RuntimeError(f"gdcm cannot read {path}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, _GDCM_SYNTAXES[syntax])))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"gdcm cannot encode {path} as {syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"gdcm cannot write {path}")


def _jpeg_baseline(dataset: Dataset, plane: np.ndarray) -> np.ndarray:
    """Encode an 8-bit plane as JPEG baseline (Pillow, quality 95) and return what decoding gives."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(plane.astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=95)
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = encapsulate([buffer.getvalue()])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.LossyImageCompression = "01"
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64)


def _geometry(
    volume: np.ndarray | sitk.Image,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float] | None,
) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float], np.ndarray]:
    if isinstance(volume, sitk.Image):
        return (
            sitk.GetArrayFromImage(volume).astype(np.float64),
            tuple(volume.GetSpacing()),  # type: ignore[return-value]
            tuple(volume.GetOrigin()),  # type: ignore[return-value]
            np.asarray(volume.GetDirection(), float).reshape(3, 3),
        )
    matrix = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    return np.asarray(volume, np.float64), tuple(map(float, spacing)), tuple(map(float, origin)), matrix  # type: ignore[return-value]


def make_series(
    folder: Path,
    volume: np.ndarray | sitk.Image,
    *,
    modality: str = "MR",
    spacing: Sequence[float] = (1.0, 1.25, 2.0),
    origin: Sequence[float] = (-5.0, -6.0, -4.0),
    direction: Sequence[float] | None = None,
    patient_id: str = "PAT-001",
    patient_name: str = "Test^Patient",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    description: str | None = None,
    series_number: int = 1,
    rescale: str = "series",
    signed: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY"),
    extra: Mapping[str, Any] | None = None,
    philips_suv_scale: float | Sequence[float] | None = None,
    skip_slices: Sequence[int] = (),
    depths: Sequence[float] | None = None,
    prefix: str = "IM",
    suffix: str = ".dcm",
    shuffle_seed: int | None = 7,
) -> BuiltSeries:
    """Write ``volume`` ((z, y, x) values, or a SimpleITK image with its own grid) as one series.

    ``rescale``: ``"none"`` (integers stored as they are), ``"series"`` (one RescaleSlope/Intercept)
    or ``"slice"`` (one per slice, as PET does). File names are numbered in a shuffled order unless
    ``shuffle_seed`` is ``None``. ``skip_slices`` leaves those slice indices out (a gap). ``depths``
    places slice ``k`` at ``depths[k]`` mm along the normal from ``origin`` (default ``k`` × the
    slice spacing), e.g. the uneven junctions of a PET stitched from bed positions.
    """
    folder.mkdir(parents=True, exist_ok=True)
    values, spacing_t, origin_t, matrix = _geometry(volume, spacing, origin, direction)
    stored, slopes, intercepts, expected = _quantise(values, rescale, signed)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    sop_class = SOP_CLASS.get(modality, "1.2.840.10008.5.1.4.1.1.7")
    count = values.shape[0]
    order = np.arange(count)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(count)
    scales = [philips_suv_scale] * count if isinstance(philips_suv_scale, int | float) else philips_suv_scale
    paths: list[Path] = []
    for k in range(count):
        if k in skip_slices:
            continue
        sop_uid = generate_uid()
        dataset = Dataset()
        dataset.file_meta = _file_meta(sop_class, sop_uid)
        dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, sop_uid
        dataset.PatientName, dataset.PatientID = patient_name, patient_id
        dataset.PatientBirthDate, dataset.PatientSex = "19600101", "F"
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
        dataset.FrameOfReferenceUID = frame_uid
        dataset.StudyDate, dataset.StudyTime, dataset.StudyID = "20240305", "090000", "S1"
        dataset.AccessionNumber, dataset.StudyDescription = "ACC123", "Brain MRI PET"
        dataset.Modality, dataset.SeriesNumber = modality, series_number
        dataset.SeriesDescription = description if description is not None else f"{modality} test series"
        dataset.ImageType = list(image_type)
        dataset.InstanceNumber = k + 1
        depth = spacing_t[2] * k if depths is None else float(depths[k])
        position = np.asarray(origin_t) + matrix[:, 2] * depth
        dataset.ImagePositionPatient = [format_number_as_ds(float(v)) for v in position]
        dataset.ImageOrientationPatient = [format_number_as_ds(float(v)) for v in (*matrix[:, 0], *matrix[:, 1])]
        dataset.PixelSpacing = [format_number_as_ds(spacing_t[1]), format_number_as_ds(spacing_t[0])]
        dataset.SliceThickness = format_number_as_ds(spacing_t[2])
        dataset.Rows, dataset.Columns = values.shape[1], values.shape[2]
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated = dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 1 if signed else 0
        if rescale != "none":
            dataset.RescaleSlope = format_number_as_ds(slopes[k])
            dataset.RescaleIntercept = format_number_as_ds(intercepts[k])
        if extra:
            _apply(dataset, copy.deepcopy(dict(extra)))
        if scales is not None:
            block = dataset.private_block(0x7053, "Philips PET Private Group", create=True)
            block.add_new(0x00, "DS", format_number_as_ds(float(scales[k])))
        path = folder / f"{prefix}{int(order[k]) + 1:04d}{suffix}"
        dataset.PixelData = stored[k].tobytes()
        if transfer_syntax == JPEGBaseline8Bit:
            expected[k] = _jpeg_baseline(dataset, np.clip(values[k], 0, 255))
            for tag in ("RescaleSlope", "RescaleIntercept"):
                dataset.pop(tag, None)
        elif transfer_syntax in (RLELossless, JPEG2000Lossless):
            dataset.compress(transfer_syntax, stored[k])
        elif transfer_syntax == ImplicitVRLittleEndian:
            dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        dataset.save_as(path, enforce_file_format=True)
        if transfer_syntax in _GDCM_SYNTAXES:
            _gdcm_recompress(path, transfer_syntax)
        paths.append(path)
    keep = [k for k in range(count) if k not in skip_slices]
    return BuiltSeries(
        folder=folder,
        uid=series_uid,
        paths=paths,
        values=expected[keep].astype(np.float32),
        spacing=spacing_t,
        origin=origin_t,
        direction=tuple(float(v) for v in matrix.ravel()),
        frame_of_reference_uid=frame_uid,
        study_uid=study_uid,
        patient_id=patient_id,
        modality=modality,
    )


def _multiframe_base(modality: str, sop_class: str, shape: tuple[int, int, int], patient_id: str) -> Dataset:
    sop_uid = generate_uid()
    dataset = Dataset()
    dataset.file_meta = _file_meta(sop_class, sop_uid)
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, sop_uid
    dataset.PatientName, dataset.PatientID = "Test^Patient", patient_id
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.FrameOfReferenceUID = generate_uid()
    dataset.Modality, dataset.SeriesNumber, dataset.InstanceNumber = modality, 5, 1
    dataset.NumberOfFrames = shape[0]
    dataset.Rows, dataset.Columns = shape[1], shape[2]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    return dataset


def _built(folder: Path, path: Path, dataset: Dataset, values: np.ndarray, spacing, origin, matrix) -> BuiltSeries:
    return BuiltSeries(
        folder=folder,
        uid=str(dataset.SeriesInstanceUID),
        paths=[path],
        values=values.astype(np.float32),
        spacing=tuple(map(float, spacing)),  # type: ignore[arg-type]
        origin=tuple(map(float, origin)),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in np.asarray(matrix).ravel()),
        frame_of_reference_uid=str(dataset.FrameOfReferenceUID),
        study_uid=str(dataset.StudyInstanceUID),
        patient_id=str(dataset.PatientID),
        modality=str(dataset.Modality),
    )


def make_nm_series(
    folder: Path,
    counts: np.ndarray,
    *,
    spacing: Sequence[float] = (4.0, 4.0, 4.0),
    origin: Sequence[float] = (-20.0, -20.0, -10.0),
    patient_id: str = "PAT-001",
    slope: float = 0.5,
) -> BuiltSeries:
    """A reconstructed SPECT (NM, ``RECON TOMO``) as one multi-frame file with DetectorInformationSequence."""
    folder.mkdir(parents=True, exist_ok=True)
    shape = counts.shape
    dataset = _multiframe_base("NM", NM_STORAGE, shape, patient_id)  # type: ignore[arg-type]
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    dataset.SeriesDescription = "SPECT perfusion"
    detector = Dataset()
    detector.ImagePositionPatient = [format_number_as_ds(float(v)) for v in origin]
    detector.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    dataset.DetectorInformationSequence = DicomSequence([detector])
    dataset.PixelSpacing = [format_number_as_ds(spacing[1]), format_number_as_ds(spacing[0])]
    dataset.SpacingBetweenSlices = dataset.SliceThickness = format_number_as_ds(spacing[2])
    dataset.RescaleSlope, dataset.RescaleIntercept = format_number_as_ds(slope), 0
    stored = np.clip(np.rint(counts / slope), 0, 65535).astype(np.uint16)
    dataset.PixelData = stored.tobytes()
    path = folder / "SPECT.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return _built(folder, path, dataset, stored * slope, spacing, origin, np.eye(3))


def make_enhanced_series(
    folder: Path,
    values: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 3.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    patient_id: str = "PAT-001",
    frame_slopes: Sequence[float] | None = None,
) -> BuiltSeries:
    """An enhanced multi-frame MR file with per-frame positions (frames stored in reverse slice order)."""
    folder.mkdir(parents=True, exist_ok=True)
    shape = values.shape
    dataset = _multiframe_base("MR", ENHANCED_MR_STORAGE, shape, patient_id)  # type: ignore[arg-type]
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    dataset.SeriesDescription = "enhanced T1"
    slopes = list(frame_slopes) if frame_slopes is not None else [1.0] * shape[0]
    shared = Dataset()
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing = [format_number_as_ds(spacing[1]), format_number_as_ds(spacing[0])]
    measures.SliceThickness = format_number_as_ds(spacing[2])
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    dataset.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames, stored_frames, expected = [], [], np.empty(shape, np.float64)
    for k in reversed(range(shape[0])):
        item, plane, transform = Dataset(), Dataset(), Dataset()
        plane.ImagePositionPatient = [origin[0], origin[1], format_number_as_ds(origin[2] + k * spacing[2])]
        transform.RescaleSlope, transform.RescaleIntercept = format_number_as_ds(slopes[k]), 0
        transform.RescaleType = "US"
        item.PlanePositionSequence = DicomSequence([plane])
        item.PixelValueTransformationSequence = DicomSequence([transform])
        frames.append(item)
        stored = np.clip(np.rint(values[k] / slopes[k]), 0, 65535).astype(np.uint16)
        stored_frames.append(stored)
        expected[k] = stored * slopes[k]
    dataset.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    dataset.PixelData = np.stack(stored_frames).tobytes()
    path = folder / "ENHANCED.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return _built(folder, path, dataset, expected, spacing, origin, np.eye(3))


def make_localizer(folder: Path, *, patient_id: str = "PAT-001", study_uid: str | None = None) -> str:
    """A tri-planar MR localizer (3 slices, 3 orientations, ImageType LOCALIZER); returns its UID."""
    folder.mkdir(parents=True, exist_ok=True)
    uid, study_uid = generate_uid(), study_uid or generate_uid()
    planes = ([1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1])
    for k, orientation in enumerate(planes):
        sop_uid = generate_uid()
        dataset = Dataset()
        dataset.file_meta = _file_meta(MR_STORAGE, sop_uid)
        dataset.SOPClassUID, dataset.SOPInstanceUID = MR_STORAGE, sop_uid
        dataset.PatientName, dataset.PatientID = "Test^Patient", patient_id
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, uid
        dataset.FrameOfReferenceUID = generate_uid()
        dataset.Modality, dataset.SeriesNumber, dataset.InstanceNumber = "MR", 1, k + 1
        dataset.SeriesDescription = "3-plane loc"
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        dataset.ImagePositionPatient = [-64, -64, 0]
        dataset.ImageOrientationPatient = orientation
        dataset.PixelSpacing = [2, 2]
        dataset.Rows = dataset.Columns = 64
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated = dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 0
        dataset.PixelData = np.full((64, 64), 100 * (k + 1), np.uint16).tobytes()
        dataset.save_as(folder / f"LOC{k + 1}.dcm", enforce_file_format=True)
    return uid


def write_corrupt_file(path: Path) -> Path:
    """A file with the DICOM preamble and magic but a garbled header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7fgarbage" + bytes(range(256)) * 4)
    return path


def write_undecodable_file(source: Path) -> Path:
    """Rewrite ``source`` (a slice of an uncompressed series) claiming a JPEG 2000 syntax it does not hold."""
    dataset = pydicom.dcmread(source)
    dataset.file_meta.TransferSyntaxUID = JPEG2000Lossless
    dataset.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream" * 4])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(source, enforce_file_format=True)
    return source


def mixed_study(root: Path, *, shape: tuple[int, int, int] = (6, 10, 12)) -> dict[str, BuiltSeries | str]:
    """A PACS-like study folder: MR T1, a smaller MR T2, a localizer, a derived MR, a PET with
    per-slice slopes and SUV tags, and, in ``other/``, a PET of another patient (not in ``root/study``).

    Returns the built series by role: ``t1``, ``t2``, ``derived``, ``pet``, ``localizer`` (UID) and
    ``other_pet`` (in ``root/other``).
    """
    study = root / "study"
    study_uid, frame = generate_uid(), generate_uid()
    common = {"study_uid": study_uid, "frame_of_reference_uid": frame}
    t1 = make_series(study / "s1", phantom(shape), description="T1 MPRAGE", series_number=2, prefix="A", **common)
    t2 = make_series(
        study / "s2",
        phantom((shape[0] - 2, shape[1], shape[2]), seed=1),
        description="T2 FLAIR",
        series_number=3,
        prefix="B",
        **common,
    )
    derived = make_series(
        study / "s3",
        phantom((shape[0] + 4, shape[1], shape[2]), seed=2),
        description="T1 MPR",
        series_number=4,
        image_type=("DERIVED", "SECONDARY", "MPR"),
        prefix="C",
        **common,
    )
    localizer = make_localizer(study / "s0", study_uid=study_uid)
    pet = make_series(
        study / "s5",
        phantom(shape, kind="pet"),
        modality="PT",
        description="PET AC",
        series_number=5,
        rescale="slice",
        extra=pet_suv_tags(),
        prefix="D",
        **common,
    )
    other = make_series(
        root / "other",
        phantom(shape, kind="pet", seed=3),
        modality="PT",
        patient_id="PAT-999",
        description="PET AC",
        rescale="slice",
        extra=pet_suv_tags(),
    )
    return {"t1": t1, "t2": t2, "derived": derived, "localizer": localizer, "pet": pet, "other_pet": other}


def clinical_folders(root: Path) -> dict[str, Path]:
    """Clinical-style inputs on the synthetic head of ``tests/synthetic.py`` (patient PAT-001 unless said):

    - ``study``: T1 MR (int16), a derived MPR of it, a tri-planar localizer and an FDG PET with
      per-slice slopes and SUV tags, one sub-folder per series, sharing study and frame of reference;
    - ``other``: the PET of patient PAT-999; ``broken``: the PET plus a corrupt file (IM0007.dcm);
    - ``twins``: two MR series of equal size (an ambiguous choice).
    """
    from synthetic import Grid, phantom_mri, phantom_pet

    mri_image = phantom_mri(Grid((40, 44, 36), (4.0, 4.0, 4.0)), dtype=np.int16)
    pet_image = phantom_pet(Grid((30, 34, 28), (6.0, 6.0, 6.0)))
    study = {"study_uid": generate_uid(), "frame_of_reference_uid": generate_uid()}
    mri = {"rescale": "none", "signed": True, **study}
    make_series(root / "study" / "t1", mri_image, description="T1 MPRAGE", **mri)
    make_series(root / "study" / "mpr", mri_image, description="T1 MPR", image_type=("DERIVED", "SECONDARY"), **mri)
    make_localizer(root / "study" / "loc", study_uid=study["study_uid"])
    make_series(root / "study" / "pet", pet_image, modality="PT", description="PET AC", rescale="slice",
                extra=pet_suv_tags(), **study)  # fmt: skip
    make_series(root / "other", pet_image, modality="PT", patient_id="PAT-999", rescale="slice")
    make_series(root / "broken", pet_image, modality="PT", rescale="slice")
    write_corrupt_file(root / "broken" / "IM0007.dcm")
    make_series(root / "twins" / "a", mri_image, description="T1 run 1", **mri)
    make_series(root / "twins" / "b", mri_image, description="T1 run 2", **mri)
    return {name: root / name for name in ("study", "other", "broken", "twins")}
