"""DICOM export: a volume on the MRI grid as a new Secondary Capture series folder.

:func:`write_dicom_series` writes MONOCHROME2 (the fused volume) or RGB (the overlay) slices with the
MRI's patient, study and frame of reference, new UIDs, ImageType DERIVED\\SECONDARY and per-slice
position, orientation and spacing; the folder appears whole or not at all (:mod:`medfuse.atomic`).
:func:`plan_dicom_outputs` checks ``-o DIR --format dicom`` before any work and
:func:`write_fused_dicom` writes a fusion result there. Self-contained: the rest of medfuse only
calls these three functions and :func:`export_reference`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

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
from medfuse.dicom.headers import PATIENT_STUDY_KEYWORDS
from medfuse.errors import OutputError, UsageError

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: Sub-folders of ``-o DIR --format dicom``.
FUSED_SERIES_FOLDER = "fused"
OVERLAY_SERIES_FOLDER = "overlay"
_UINT16_MAX = 65535


def export_reference(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The reference to stamp on exported series: the MRI's patient, study and frame of reference.

    ``info`` is :attr:`DicomVolume.info` of the MRI; ``None`` (an MRI that was not DICOM) gives fresh
    study and frame-of-reference UIDs. Pass the same reference to every series of one result so they
    share study and frame of reference.
    """
    if info is not None and info.get("export_tags"):
        tags = dict(info["export_tags"])
    else:
        tags = dict.fromkeys(PATIENT_STUDY_KEYWORDS, "")
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
    meta.MediaStorageSOPClassUID = UID(SECONDARY_CAPTURE)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.SOPClassUID = SECONDARY_CAPTURE
    dataset.SOPInstanceUID = sop_uid
    for keyword in PATIENT_STUDY_KEYWORDS:
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
    folders = {"fused": FUSED_SERIES_FOLDER, **({"overlay": OVERLAY_SERIES_FOLDER} if overlay else {})}
    return {
        kind: check_output_path(output_dir / name, is_dir=True, inputs=inputs, overwrite=overwrite)
        for kind, name in folders.items()
    }


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
