"""Where the optimisation starts: candidate poses scored by the metric on the coarsest level.

Always tried: the scanners' own coordinates (right when both came from one session or one frame of
reference), the foreground centroids (right when the coordinate systems differ but both images show
the same part of the body) and the image centres. When the MRI's foreground is much shorter than the
PET's along one of the PET's axes (a thigh in a whole-body PET), the MRI is also slid along that axis
over the PET's whole extent and, at each position, placed on the header's crossing point and on the
centre of each separate body part the PET shows there (each leg, so a limb is tried on both sides).
Candidates whose MRI foreground mostly falls outside the PET's field of view are not trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medfuse.errors import InvalidInputError
from medfuse.registration.grids import continuous_indices, physical_points
from medfuse.registration.masks import centroid, mask_points
from medfuse.registration.optimise import Level

if TYPE_CHECKING:
    import SimpleITK as sitk

#: An MRI foreground shorter than this fraction of the PET's along an axis triggers the search along it.
SHORT_FOV_RATIO = 0.6
#: Body parts (in one slab of the PET) smaller than this fraction of the largest are not tried.
MIN_PART_FRACTION = 0.2
#: Candidates with less than this fraction of the best candidate's MRI samples inside the PET are dropped.
MIN_INSIDE_FRACTION = 0.5


@dataclass
class Start:
    """A candidate starting pose: a rigid translation from the header pose, and its coarse metric."""

    name: str
    transform: sitk.Euler3DTransform
    metric: float = float("inf")
    inside: float = 0.0


def _translation(centre: np.ndarray, offset: np.ndarray) -> sitk.Euler3DTransform:
    import SimpleITK as sitk

    start = sitk.Euler3DTransform()
    start.SetCenter(tuple(float(c) for c in centre))
    start.SetTranslation(tuple(float(t) for t in offset))
    return start


def _image_centre(image: sitk.Image) -> np.ndarray:
    centre_index = (np.array(image.GetSize()) - 1) / 2.0
    return np.array(image.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in centre_index)))


def _inside_fraction(points: np.ndarray, offset: np.ndarray, moving: sitk.Image) -> float:
    """Fraction of ``points`` (MRI samples) that the translation ``offset`` puts inside the PET's grid."""
    indices = continuous_indices(moving, points + offset)
    size = np.array(moving.GetSize()) - 1
    return float(np.mean(np.all((indices >= 0) & (indices <= size), axis=1))) if len(points) else 0.0


def _axial_offsets(coarse: Level, mri_centre: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Offsets sliding the MRI along a PET axis where its foreground is much shorter (see module doc)."""
    import SimpleITK as sitk
    from scipy import ndimage

    pet_mask = coarse.pet_foreground
    pet_array = sitk.GetArrayViewFromImage(pet_mask) > 0
    pet_points = mask_points(pet_mask)
    mri_points = mask_points(coarse.mri_foreground)
    if not len(pet_points) or not len(mri_points):
        return []
    directions = np.array(pet_mask.GetDirection()).reshape(3, 3)
    offsets: list[tuple[str, np.ndarray]] = []
    for axis in range(3):
        along = directions[:, axis]
        mri_span = np.ptp(mri_points @ along)
        pet_along = pet_points @ along
        pet_low, pet_high = float(pet_along.min()), float(pet_along.max())
        if mri_span >= SHORT_FOV_RATIO * (pet_high - pet_low):
            continue
        step = float(np.clip(mri_span / 8.0, 2.0 * coarse.spacing, 40.0))
        mri_middle = float(mri_centre @ along)
        for middle in np.arange(pet_low + mri_span / 2.0, pet_high - mri_span / 2.0 + step / 2.0, step):
            shift = (middle - mri_middle) * along
            offsets.append((f"search along axis {axis} at {middle:.0f} mm", shift))
            # the PET's separate body parts in the slab the MRI covers there
            low_index = continuous_indices(pet_mask, (mri_centre + shift - along * mri_span / 2.0)[None])[0][axis]
            high_index = continuous_indices(pet_mask, (mri_centre + shift + along * mri_span / 2.0)[None])[0][axis]
            first, last = sorted((int(np.floor(low_index)), int(np.ceil(high_index))))
            array_axis = 2 - axis
            slab = np.take(pet_array, range(max(first, 0), min(last, pet_array.shape[array_axis] - 1) + 1), array_axis)
            if slab.size == 0:
                continue
            section = slab.any(axis=array_axis)
            labels, count = ndimage.label(section)
            if count == 0:
                continue
            sizes = np.bincount(labels.ravel())[1:]
            for part in np.flatnonzero(sizes >= MIN_PART_FRACTION * sizes.max()) + 1:
                plane = np.argwhere(labels == part).mean(axis=0)  # (row, column) of the 2-D section
                index = np.zeros(3)
                others = [a for a in range(3) if a != axis]  # ITK axes of the section, in x-y-z order
                index[others[1]], index[others[0]] = plane[0], plane[1]
                index[axis] = (low_index + high_index) / 2.0
                target = physical_points(pet_mask, index[None])[0]
                across = target - mri_centre - ((target - mri_centre) @ along) * along
                offsets.append((f"search along axis {axis} at {middle:.0f} mm, body part {part}", shift + across))
    return offsets


def candidate_starts(coarse: Level, moving_pet: sitk.Image) -> list[Start]:
    """Candidate starting poses, best first by the coarse metric (see the module docstring)."""
    centre = centroid(coarse.mri_foreground)
    offsets = [
        ("scanner coordinates", np.zeros(3)),
        ("foreground centroids", centroid(coarse.pet_foreground) - centre),
        ("image centres", _image_centre(moving_pet) - _image_centre(coarse.fixed)),
        *_axial_offsets(coarse, centre),
    ]
    samples = mask_points(coarse.mask)
    starts = []
    for name, offset in offsets:
        start = Start(name, _translation(centre, offset), inside=_inside_fraction(samples, offset, coarse.moving))
        if start.inside > 0:
            start.metric = coarse.evaluate(start.transform) or float("inf")
        starts.append(start)
    best_inside = max(start.inside for start in starts)
    trusted = [s for s in starts if np.isfinite(s.metric) and s.inside >= MIN_INSIDE_FRACTION * best_inside]
    if not trusted:
        raise InvalidInputError(
            "the PET and MRI do not overlap from any starting point; check that they show the same part of the body."
        )
    return sorted(trusted, key=lambda s: s.metric)
