"""Working grids of registration: isotropic resampling with anti-aliasing, memory checks, final resampling."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from medfuse.errors import InvalidInputError
from medfuse.memory import WORKING_BYTES_PER_VOXEL, available_memory, format_bytes

if TYPE_CHECKING:
    import SimpleITK as sitk

WORK_SPACING_MM = 2.0
LEVEL_SPACINGS_MM = (8.0, 4.0, WORK_SPACING_MM)
#: A volume thinner than this along an axis (two voxels of the finest working grid) cannot be placed.
MIN_EXTENT_MM = 4.0


def smooth(image: sitk.Image, sigmas_mm: list[float]) -> sitk.Image:
    """Gaussian smoothing axis by axis (recursive filter); axes with sigma 0 or under 4 voxels are left alone."""
    import SimpleITK as sitk

    for axis, sigma in enumerate(sigmas_mm):
        if sigma > 0 and image.GetSize()[axis] >= 4:
            image = sitk.RecursiveGaussian(image, sigma, False, sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    return image


def grid_size(image: sitk.Image, spacing: float = WORK_SPACING_MM) -> tuple[int, ...]:
    """Voxels per axis of ``image`` on the isotropic ``spacing`` grid of :func:`on_grid` (its own size
    when it is already that coarse)."""
    if all(s >= spacing * 0.999 for s in image.GetSpacing()):
        return tuple(image.GetSize())
    return tuple(max(math.ceil(n * s / spacing), 1) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True))


def check_work_grid(image: sitk.Image, name: str) -> None:
    """Refuse, before any is built, an image whose registration grids would not fit in memory.

    Registration, foreground masks and the PET window resample the images to isotropic grids of
    :data:`LEVEL_SPACINGS_MM` (axes coarser than a grid are resampled too); a header whose voxel sizes
    are off by orders of magnitude (micrometres read as millimetres) would ask for billions of voxels.
    ``name`` (the input's path as given) names the culprit.
    """
    size = max((grid_size(image, spacing) for spacing in LEVEL_SPACINGS_MM), key=math.prod)
    needed = math.prod(size) * (4 + WORKING_BYTES_PER_VOXEL)
    available = available_memory()
    if available is not None and needed > available:
        extent = " × ".join(f"{n * s:g}" for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True))
        raise InvalidInputError(
            f"{name}: its field of view of {extent} mm needs a {'×'.join(map(str, size))}-voxel registration "
            f"grid, about {format_bytes(needed)} of memory, more than the {format_bytes(available)} available; "
            "check the voxel spacing in its header."
        )


def check_extent(image: sitk.Image, role: str) -> None:
    """Refuse a volume thinner than :data:`MIN_EXTENT_MM` along an axis: its voxel spacing is wrong
    (micrometres read as millimetres), and neither registration nor an overlap check means anything."""
    thickness = min(n * s for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True))
    if thickness < MIN_EXTENT_MM:
        raise InvalidInputError(
            f"the {role} is only {thickness:.3g} mm thick along one axis (voxel spacing "
            f"{', '.join(f'{s:g}' for s in image.GetSpacing())} mm); a volume to fuse is at least "
            f"{MIN_EXTENT_MM:g} mm thick, so check the voxel spacing in its header."
        )


#: Inside :func:`shared_grids`: (input image, spacing, antialias) -> grid already made from it.
_GRIDS: dict[tuple[int, float, bool], tuple[sitk.Image, sitk.Image]] | None = None


@contextlib.contextmanager
def shared_grids() -> Iterator[None]:
    """Within this block, :func:`on_grid` makes each grid of the same image object once.

    The pipeline's foreground mask for fusion wants the grid registration already made of the MRI (on
    a clinical-size MRI each costs seconds of smoothing); the images are kept only for the block.
    """
    global _GRIDS
    outer, _GRIDS = _GRIDS, {} if _GRIDS is None else _GRIDS
    try:
        yield
    finally:
        _GRIDS = outer


def on_grid(image: sitk.Image, spacing: float, antialias: bool = True) -> sitk.Image:
    """``image`` resampled to an isotropic ``spacing`` grid with its own orientation and outer corner.

    An image already this coarse is returned as it is (float32). ``antialias`` first smooths away the
    detail the coarser grid cannot hold (when the grid coarsens by 1.5x or more; linear interpolation
    is smoothing enough below that). Voxels of the new grid that lie within half an old voxel of the
    outer corner take the nearest edge value, not 0: a field of view that cuts through the body must
    not gain a dark rim that looks like the body's outline. Inside :func:`shared_grids` a grid made
    before is reused.
    """
    if _GRIDS is None:
        return _make_grid(image, spacing, antialias)
    key = (id(image), float(spacing), antialias)
    known = _GRIDS.get(key)
    if known is None or known[0] is not image:
        known = _GRIDS[key] = (image, _make_grid(image, spacing, antialias))
    return known[1]


def _make_grid(image: sitk.Image, spacing: float, antialias: bool) -> sitk.Image:
    import SimpleITK as sitk

    if image.GetPixelID() != sitk.sitkFloat32:  # a float32 image needs no copy (images copy on write)
        image = sitk.Cast(image, sitk.sitkFloat32)
    old_spacing = np.array(image.GetSpacing())
    if np.all(old_spacing >= spacing * 0.999):
        return image
    if antialias and spacing >= 1.5 * float(old_spacing.min()):
        image = smooth(image, [math.sqrt(max(spacing**2 - s**2, 0.0)) / 2.355 for s in old_spacing])
    size = list(grid_size(image, spacing))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    corner = np.array(image.GetOrigin()) - direction @ (old_spacing / 2.0)
    origin = corner + direction @ np.full(3, spacing / 2.0)
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        tuple(origin),
        (spacing,) * 3,
        image.GetDirection(),
        0.0,
        sitk.sitkFloat32,
        True,
    )


def resample_to(pet: sitk.Image, mri: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """The PET on the MRI's grid (linear interpolation; 0 outside the PET's field of view), float32."""
    import SimpleITK as sitk

    return sitk.Resample(pet, mri, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def physical_points(image: sitk.Image, indices_xyz: np.ndarray) -> np.ndarray:
    """Physical points (N, 3) of voxel indices (N, 3, ITK x-y-z order) of ``image``."""
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    return np.asarray(indices_xyz, float) @ matrix.T + np.array(image.GetOrigin())


def continuous_indices(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Continuous voxel indices (N, 3, x-y-z) of physical points (N, 3) in ``image``."""
    matrix = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    return np.linalg.solve(matrix, (np.asarray(points, float) - np.array(image.GetOrigin())).T).T
