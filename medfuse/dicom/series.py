"""DICOM series: describe every series of a folder from its headers, and choose the MRI or the PET.

A folder (searched recursively) may hold many series of both modalities, localizers, derived images
and files that are not DICOM at all. :func:`list_series` reads every header once (no pixels) and
describes each series; :func:`choose_series` picks the one that plays a role (by UID, else by
Modality, else the largest proper 3-D volume) and says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from medfuse.console import warn
from medfuse.dicom.files import candidate_files
from medfuse.dicom.headers import number, pydicom_quiet, read_header
from medfuse.dicom.records import SliceRecord, slice_records
from medfuse.dicom.stack import analyse_stack
from medfuse.errors import InvalidInputError, UnreadableInputError, UsageError

#: The part an input plays in a fusion.
Role = Literal["MRI", "PET"]
#: Modalities that can play each role, in order of preference (NM = SPECT).
ROLE_MODALITIES: dict[str, tuple[str, ...]] = {"MRI": ("MR",), "PET": ("PT", "NM")}
#: The option that names a series explicitly, per role.
SERIES_OPTION: dict[str, str] = {"MRI": "--mri-series", "PET": "--pet-series"}
#: Modalities that never stand in for another role when a folder lacks the wanted one.
_IMAGING_MODALITIES = frozenset({"MR", "PT", "NM", "CT", "US", "CR", "DX", "MG", "XA", "RF", "SEG", "RTDOSE"})


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


def _is_localizer(image_type: tuple[str, ...], description: str, records: list[SliceRecord]) -> bool:
    if any(value in ("LOCALIZER", "SCOUT") for value in image_type):
        return True
    words = description.lower().replace("_", " ").split()
    if any(word in ("localizer", "localiser", "scout", "survey", "3-plane", "tri-plane") for word in words):
        return True
    orientations = {tuple(np.round(r.orientation, 3)) for r in records if r.orientation}
    return len(orientations) > 1 and len(records) <= 12


@pydicom_quiet()
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
    for path in candidate_files(folder, recursive):
        dataset = read_header(path)
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
        records.setdefault(uid, []).extend(slice_records(path, dataset))
        paths.setdefault(uid, []).append(path)
    series = [_describe(headers[uid], paths[uid], records[uid]) for uid in headers]
    return sorted(series, key=lambda s: (-s.voxels, s.uid))


def _describe(header: Dataset, paths: list[Path], records: list[SliceRecord]) -> SeriesInfo:
    image_type = tuple(str(v).upper() for v in (header.get("ImageType") or []))
    description = str(header.get("SeriesDescription", "") or "")
    corrected = {str(v).upper() for v in (header.get("CorrectedImage") or [])}
    series_number = number(header.get("SeriesNumber"), None)
    info = SeriesInfo(
        uid=str(header.SeriesInstanceUID),
        modality=str(header.get("Modality", "") or "").upper(),
        description=description,
        patient_id=str(header.get("PatientID", "") or ""),
        study_uid=str(header.get("StudyInstanceUID", "") or ""),
        series_number=int(series_number) if series_number is not None else None,
        image_type=image_type,
        photometric=str(header.get("PhotometricInterpretation", "") or "").upper(),
        samples_per_pixel=int(number(header.get("SamplesPerPixel"), 1) or 1),
        paths=paths,
        slices=records,
        units=str(header.get("Units", "") or "").upper() or None,
        is_localizer=_is_localizer(image_type, description, records),
        is_derived=bool(image_type) and image_type[0] == "DERIVED",
        attenuation_corrected="ATTN" in corrected,
    )
    _stack, info.problem = analyse_stack(records)
    if info.problem is None and (info.samples_per_pixel != 1 or not info.photometric.startswith("MONOCHROME")):
        info.problem = f"holds colour pixels ({info.photometric or 'unknown photometric'}), not grey values"
    return info


def _listing(series: list[SeriesInfo]) -> str:
    return "; ".join(s.label() for s in series) or "none"


def choose_series(series: list[SeriesInfo], role: str, series_uid: str | None, folder: Path) -> tuple[SeriesInfo, str]:
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
