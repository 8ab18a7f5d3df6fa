"""Foreground masks of MRI and PET (head, trunk or limbs alike) and how much two foregrounds overlap.

A foreground is what is not air: the threshold sits between the image's background level (its
0.5th percentile) and the typical level of its tissue (the median of the voxels clearly above the
background), at a fraction of the way that depends on the modality: on T1 MRI, fat is the brightest
tissue and air a noise floor; on FDG PET, fat (SUV ~0.35) is the faintest tissue and a few hot
voxels (bladder, tumour, brain) would put a range-based threshold above it. A field of view that
holds no air (a crop inside the body: hardly any voxel near zero) is foreground everywhere. Blobs
under 5 % of the largest are noise; larger ones stay (two legs, or a scalp apart from a brain
behind a dark skull), and holes are filled in 3-D and slice by slice (a shell cut open by the field
of view encloses nothing in 3-D).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np

from medfuse.registration.grids import WORK_SPACING_MM, on_grid, physical_points

if TYPE_CHECKING:
    import SimpleITK as sitk

Role = Literal["MRI", "PET"]

#: Where the threshold sits between background and the typical tissue level, per modality.
THRESHOLD_FRACTION: dict[str, float] = {"MRI": 0.3, "PET": 0.3}
#: With fewer than AIR_FRACTION of the voxels below AIR_LEVEL × the tissue level, the field of view
#: holds no air (a crop inside the body).
AIR_LEVEL = 0.05
AIR_FRACTION = 0.02
#: ... judged only on grids of at least this many voxels (a few voxels say nothing about air).
MIN_CROP_VOXELS = 1000
#: Below this fraction of the smaller foreground, PET and MRI count as "barely overlapping".
MIN_OVERLAP = 0.5


def _mask_array(values: np.ndarray, role: Role) -> np.ndarray:
    """The foreground of an array (see the module docstring)."""
    from scipy import ndimage

    low, high = (float(v) for v in np.percentile(values, (0.5, 99.5)))
    if high <= low:
        high = float(values.max())
    tissue = values[values > low + 0.05 * (high - low)]
    level = float(np.median(tissue)) if tissue.size else high
    if level - low <= 0:
        return values > values.min()
    zero = min(low, 0.0)  # MRI magnitudes and PET activities are not negative; air is near zero
    crop = values.size >= MIN_CROP_VOXELS and np.mean(values - zero < AIR_LEVEL * (level - zero)) < AIR_FRACTION
    if crop:  # a field of view inside the body
        return np.ones(values.shape, bool)
    mask = values > low + THRESHOLD_FRACTION[role] * (level - low)
    if not mask.any():
        return values > values.min()
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = sizes[labels] >= 0.05 * sizes.max()
    in_slice = np.zeros((3, 3, 3), dtype=bool)
    in_slice[1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(ndimage.binary_fill_holes(mask), structure=in_slice)


def foreground_mask(image: sitk.Image, role: Role, dilate_mm: float = 0.0) -> sitk.Image:
    """A uint8 mask of the body (head, trunk or limbs) in an MRI or PET, on ``image``'s own grid.

    Computed on a grid no finer than :data:`WORK_SPACING_MM` for speed (the anti-aliasing there also
    tames noise) and mapped back; ``dilate_mm`` grows it (e.g. to keep the outline's edge).
    """
    import SimpleITK as sitk
    from scipy import ndimage

    coarse = on_grid(image, WORK_SPACING_MM)
    mask = _mask_array(sitk.GetArrayViewFromImage(coarse), role)
    if dilate_mm > 0:
        steps = max(round(dilate_mm / max(coarse.GetSpacing())), 1)
        mask = ndimage.binary_dilation(mask, iterations=steps)
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(coarse)
    if coarse.GetSize() == image.GetSize() and coarse.GetSpacing() == image.GetSpacing():
        return mask_image
    return sitk.Resample(mask_image, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def mask_points(mask: sitk.Image, step: int = 1) -> np.ndarray:
    """Physical points (N, 3) of the mask's voxels (every ``step``-th along each axis)."""
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(mask)[::step, ::step, ::step]
    return physical_points(mask, np.argwhere(array > 0)[:, ::-1] * step)


def centroid(mask: sitk.Image) -> np.ndarray:
    """The physical centre of a mask's voxels."""
    points = mask_points(mask)
    return points.mean(axis=0) if len(points) else np.zeros(3)


def overlap_fraction(mri: sitk.Image, pet: sitk.Image, transform: sitk.Transform) -> float:
    """Shared foreground of the MRI and the PET placed by ``transform``, over the smaller foreground.

    1 means one foreground lies inside the other; 0 means the PET's body lands outside the MRI's.
    Computed on 4 mm grids.
    """
    return overlap(on_grid(mri, 2 * WORK_SPACING_MM), on_grid(pet, 2 * WORK_SPACING_MM), transform)


def overlap(
    mri: sitk.Image,
    pet: sitk.Image,
    transform: sitk.Transform,
    masks: tuple[sitk.Image, sitk.Image] | None = None,
) -> float:
    """:func:`overlap_fraction` on images already on working grids (``masks``: their foregrounds, if known)."""
    import SimpleITK as sitk

    mri_mask, pet_mask = masks or (foreground_mask(mri, "MRI"), foreground_mask(pet, "PET"))
    pet_on_mri = sitk.Resample(pet_mask, mri_mask, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    mri_voxels = sitk.GetArrayViewFromImage(mri_mask).astype(bool)
    shared = np.count_nonzero(mri_voxels & sitk.GetArrayViewFromImage(pet_on_mri).astype(bool))
    mri_volume = np.count_nonzero(mri_voxels) * math.prod(mri_mask.GetSpacing())
    pet_volume = np.count_nonzero(sitk.GetArrayViewFromImage(pet_mask)) * math.prod(pet_mask.GetSpacing())
    smaller = min(mri_volume, pet_volume)
    return float(shared * math.prod(mri_mask.GetSpacing()) / smaller) if smaller > 0 else 0.0
