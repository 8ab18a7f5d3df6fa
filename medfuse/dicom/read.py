"""Reading a DICOM series as a volume of real-world values, exactly as its headers place it.

Pixels are read with pydicom so each slice gets its own RescaleSlope/Intercept (PET stores one per
slice). Compressed transfer syntaxes decode through the pylibjpeg plugins declared in pyproject
(libjpeg: JPEG baseline, extended, lossless and JPEG-LS; openjpeg: JPEG 2000; rle: RLE) or
python-gdcm when installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medfuse.console import info as say
from medfuse.console import track, warn
from medfuse.dicom.headers import EXPORT_KEYWORDS, is_valid_uid, pydicom_quiet, quiet_dcmread, read_header
from medfuse.dicom.records import source_references
from medfuse.dicom.series import ROLE_MODALITIES, SERIES_OPTION, Role, choose_series, list_series
from medfuse.dicom.stack import Stack, analyse_stack, resample_slices
from medfuse.dicom.suv import suv_factors
from medfuse.errors import InvalidInputError, UnreadableInputError
from medfuse.memory import check_memory


@dataclass
class DicomVolume:
    """A DICOM series read as a float32 volume of real-world values, plus what it is and why it was chosen."""

    image: sitk.Image
    info: dict[str, Any]


def _decode(path: Path) -> np.ndarray:
    """The stored pixel values of ``path`` (all frames), decoding any compressed transfer syntax."""
    try:
        dataset = quiet_dcmread(path)
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
        with pydicom_quiet():
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


def _real_world(stack: Stack, folder: Path, factors: np.ndarray) -> np.ndarray:
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


def _to_image(volume: np.ndarray, stack: Stack) -> sitk.Image:
    image = sitk.GetImageFromArray(volume, isVector=False)
    image.SetOrigin(tuple(float(v) for v in stack.origin))
    image.SetSpacing(stack.spacing)
    image.SetDirection(tuple(float(v) for v in stack.direction.ravel()))
    return image


@pydicom_quiet()
def read_dicom_series(
    folder: str | Path,
    *,
    role: Role,
    series_uid: str | None = None,
    suv: bool = False,
    why: str | None = None,
) -> DicomVolume:
    """Read the MRI or PET series of a DICOM folder as a float32 volume of real-world values.

    ``folder`` may also be one file of the series. The series is chosen by ``series_uid``, else by
    Modality (MR; PT, then NM for SPECT), else as the largest proper 3-D volume, ignoring localizers
    and derived images; the choice and its reason are printed and stored in ``info["reason"]``.
    ``suv=True`` converts PET to SUVbw (:func:`suv_factors`). ``why`` replaces the role's reason in
    the message and ``info["reason"]`` when the caller chose the series itself (``medfuse info``).
    Raises :class:`UnreadableInputError` (no DICOM, corrupt file, undecodable pixels),
    :class:`InvalidInputError` (no usable or an ambiguous series, gaps, SUV tags missing) or
    :class:`UsageError` (unknown ``series_uid``).
    """
    if role not in ROLE_MODALITIES:
        raise ValueError(f"role must be 'MRI' or 'PET', not {role!r}")
    folder = Path(folder)
    if not folder.exists():
        raise UnreadableInputError(f"{folder}: does not exist; check the path.")
    if folder.is_file():
        header = read_header(folder)
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
    chosen, reason = choose_series(series, role, series_uid, folder)
    stack, _problem = analyse_stack(chosen.slices)
    if stack is None or chosen.problem is not None:
        raise InvalidInputError(
            f"{folder}: series {chosen.label()} {chosen.problem}; export the complete series again "
            f"or choose another with {SERIES_OPTION[role]}."
        )
    if chosen.is_localizer:
        warn(f"{folder}: series {chosen.uid} looks like a localizer; check that it is the {role} you meant.")
    if not is_valid_uid(chosen.uid):
        warn(
            f"{chosen.paths[0]}: its SeriesInstanceUID {chosen.uid!r} is not a valid DICOM UID (digits and dots, "
            "no leading zeros, at most 64 characters); medfuse groups and selects the series by it as written, "
            "but other DICOM tools may not."
        )
    units = chosen.units
    factors = np.ones(len(stack.slices))
    suv_details = None
    if suv:
        factors, suv_details = suv_factors(chosen, stack.slices)
        units = "SUVbw"
    if why is not None:
        reason = why
        say(f"Series {chosen.label()} from {folder}: {reason}.")
    else:
        say(f"{role}: series {chosen.label()} from {folder}: {reason}.")
    volume = _real_world(stack, folder, factors)
    resampled: dict[str, Any] | None = None
    if stack.uneven is not None:
        volume = resample_slices(volume, stack)
        resampled = {"slices_read": len(stack.slices), "slices": int(volume.shape[0]), "spacing_mm": stack.spacing[2]}
        resampled["why"] = stack.uneven
        warn(
            f"{folder}: series {chosen.uid}: {stack.uneven} (as in a PET stitched from bed positions); "
            f"resampled onto {volume.shape[0]} slices {stack.spacing[2]:.4f} mm apart along the slice normal "
            "(linear interpolation)."
        )
    image = _to_image(volume, stack)
    reference = quiet_dcmread(stack.slices[0].path, stop_before_pixels=True)
    export_tags = {kw: str(reference.get(kw, "") or "") for kw in EXPORT_KEYWORDS}  # the export repairs them
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
            "resampled_slices": resampled,
            "suv": suv_details,
            "reference_file": str(stack.slices[0].path),
            "files": [str(p) for p in dict.fromkeys(r.path for r in stack.slices)],
            "export_tags": export_tags,
            "source_slices": source_references(stack.slices),  # one per slice of the volume, in its order
            "source_instances": source_references(chosen.slices),  # the whole series
        },
    )


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
