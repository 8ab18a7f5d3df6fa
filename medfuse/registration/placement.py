"""Where the PET goes on the MRI: the ``--register`` decision, and the report's ``registration`` record.

``auto`` (the default) trusts the scanners when the data says both images are in one space: DICOM
series that share a FrameOfReferenceUID (a PET/MR scanner, or an MRI resampled into the PET's frame)
are not registered, because registration can only add error there (mutual information on a cropped
body region is a weak signal). Otherwise ``auto`` registers rigidly. ``rigid`` and ``affine`` always
register, ``none`` never does, and ``--transform FILE`` uses the file. Unregistered placements are
checked for overlap: bodies that barely overlap are refused, naming what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfuse.errors import InvalidInputError, ProcessingError
from medfuse.options import RegisterMode
from medfuse.registration.core import RegistrationResult, register
from medfuse.registration.grids import WORK_SPACING_MM, check_extent, on_grid
from medfuse.registration.masks import MIN_OVERLAP, centroid, foreground_mask, overlap
from medfuse.registration.transforms import describe_transform, read_transform, rotation_angle_deg, transform_matrix

if TYPE_CHECKING:
    import SimpleITK as sitk


@dataclass
class Placement:
    """The MRI -> PET transform, the registration that found it (if any) and the report's record."""

    transform: sitk.Transform
    registered: RegistrationResult | None
    record: dict[str, Any]


def shared_frame(mri_frame: str | None, pet_frame: str | None) -> str | None:
    """The FrameOfReferenceUID both inputs share, or ``None`` (missing on either, or different)."""
    return mri_frame if mri_frame and mri_frame == pet_frame else None


def place_pet(
    mri: sitk.Image,
    pet: sitk.Image,
    register_mode: RegisterMode,
    transform_file: Path | None = None,
    frames: tuple[str | None, str | None] = (None, None),
    pet_name: str = "the PET image",
) -> Placement:
    """Decide how to place the PET on the MRI and do it (see the module docstring).

    ``frames`` are the FrameOfReferenceUIDs of the MRI and the PET (``None`` when not DICOM);
    ``pet_name`` (the PET's path as given) names the culprit in errors.
    """
    import SimpleITK as sitk

    for role, image, name in (("MRI", mri, "the MRI"), ("PET", pet, pet_name)):
        try:
            check_extent(image, role)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{name}: {exc}") from exc
    frame = shared_frame(*frames)
    if transform_file is not None:
        requested = "file"
        decision = f"--transform {transform_file} gives the transform"
    else:
        requested = str(register_mode)
        decision = _decision(register_mode, frame, frames)
    if requested in ("rigid", "affine") or (requested == "auto" and frame is None):
        mode = "affine" if requested == "affine" else "rigid"
        try:
            result = register(mri, pet, mode, pet_name)  # type: ignore[arg-type]
        except (InvalidInputError, ProcessingError) as exc:
            raise type(exc)(f"{pet_name}: {exc}") from exc
        record = {
            "requested": requested,
            "source": mode,
            "decision": decision,
            "transform": describe_transform(result.transform),
            **result.record(),
            "warnings": list(result.warnings),
        }
        return Placement(result.transform, result, record)
    if transform_file is not None:
        transform = read_transform(transform_file)
        source, where = f"file {transform_file}", f"{transform_file}: with this transform"
        advice = "check that the transform belongs to these images"
        confidence = {
            "level": "medium",
            "spread_mm": None,
            "reason": "read from a file, not checked against the images",
        }
    elif frame is not None:
        transform = sitk.Euler3DTransform()
        source, where = (
            "none (same FrameOfReferenceUID: scanner coordinates)",
            f"{pet_name}: although they share a frame of reference,",
        )
        advice = "check the inputs, or register them anyway with --register rigid"
        confidence = {"level": "high", "spread_mm": None, "reason": f"MRI and PET share FrameOfReferenceUID {frame}"}
    else:
        transform = sitk.Euler3DTransform()
        source, where = "none (scanner coordinates)", f"{pet_name}: under --register none"
        advice = "register them with --register rigid, or check the inputs"
        confidence = {"level": "medium", "spread_mm": None, "reason": "not registered (--register none): not checked"}
    moved, rotation, shared = _pose(mri, pet, transform)
    if shared < MIN_OVERLAP:
        raise InvalidInputError(f"{where} the PET and MRI barely overlap ({shared:.0%} of the smaller body); {advice}.")
    record = {
        "requested": requested,
        "source": source,
        "decision": decision,
        "transform": describe_transform(transform),
        "metric": None,
        "metric_header": None,
        "metric_value": None,
        "moved_mm": round(moved, 3),
        "rotation_deg": round(rotation, 3),
        "overlap": round(shared, 4),
        "confidence": confidence,
    }
    return Placement(transform, None, record)


def _decision(register_mode: RegisterMode, frame: str | None, frames: tuple[str | None, str | None]) -> str:
    """One sentence: why this placement."""
    if register_mode == RegisterMode.NONE:
        return "--register none keeps the scanners' coordinates"
    if register_mode != RegisterMode.AUTO:
        shared = f" although MRI and PET share FrameOfReferenceUID {frame}" if frame else ""
        return f"--register {register_mode} asks for a registration{shared}"
    if frame is not None:
        return f"MRI and PET share FrameOfReferenceUID {frame}: the scanners already placed them in one space"
    mri_frame, pet_frame = frames
    if mri_frame and pet_frame:
        return "MRI and PET have different FrameOfReferenceUIDs, so the PET is registered (rigid)"
    missing = " and ".join(role for role, uid in (("MRI", mri_frame), ("PET", pet_frame)) if not uid)
    return f"no frame of reference is known for the {missing} (not DICOM), so the PET is registered (rigid)"


def _pose(mri: sitk.Image, pet: sitk.Image, transform: sitk.Transform) -> tuple[float, float, float]:
    """How far ``transform`` moves the MRI's foreground centre (mm), its rotation (degrees), and the
    overlap of the foregrounds it gives (computed on 4 mm grids)."""
    fixed, moving = on_grid(mri, 2 * WORK_SPACING_MM), on_grid(pet, 2 * WORK_SPACING_MM)
    masks = (foreground_mask(fixed, "MRI"), foreground_mask(moving, "PET"))
    centre = centroid(masks[0])
    moved = float(np.linalg.norm(np.array(transform.TransformPoint(tuple(float(c) for c in centre))) - centre))
    matrix = transform_matrix(transform)
    rotation = rotation_angle_deg(matrix) if matrix is not None else 0.0
    return moved, rotation, overlap(fixed, moving, transform, masks)
