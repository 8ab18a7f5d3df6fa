"""Builders of tiny synthetic head volumes for tests and benchmarks (deterministic, in memory).

The head is defined analytically in physical (LPS, millimetre) coordinates, so the same anatomy can
be sampled on any grid: any size, spacing, origin or direction (RAS or LPS storage, oblique). A
T1-like MRI and an FDG-like PET are drawn from the same tissue labels; the PET can be moved by a known
rigid transform, blurred and made noisy, so registration tests know the true answer.

Transform convention (as in medfuse.registration): ``T`` maps MRI physical points to PET physical
points, i.e. the PET voxel at point ``p`` shows the tissue at ``T^-1(p)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

BACKGROUND, SCALP, SKULL, CSF, GREY, WHITE, DEEP_GREY, LESION = range(8)

#: T1-weighted intensities (arbitrary units): white matter brightest, CSF and skull dark.
T1_INTENSITY = {BACKGROUND: 0.0, SCALP: 55.0, SKULL: 8.0, CSF: 12.0, GREY: 50.0, WHITE: 80.0, DEEP_GREY: 58.0}
T1_INTENSITY[LESION] = 45.0
#: FDG uptake (kBq/mL-like): grey matter ~3.6x white matter, CSF ~0, one hypermetabolic lesion.
FDG_UPTAKE = {BACKGROUND: 0.0, SCALP: 0.6, SKULL: 0.2, CSF: 0.05, GREY: 8.0, WHITE: 2.2, DEEP_GREY: 9.0}
FDG_UPTAKE[LESION] = 20.0

#: Lesion centre (LPS mm, head frame) and radius: in the right frontal lobe, off every symmetry plane.
LESION_CENTRE = (-28.0, -38.0, 22.0)
LESION_RADIUS = 9.0

ORIENTATIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
}


def oblique_direction(angles_deg: Sequence[float] = (12.0, -8.0, 20.0)) -> np.ndarray:
    """A proper rotation matrix (direction cosines) tilted by the given Euler angles."""
    transform = sitk.Euler3DTransform((0.0, 0.0, 0.0), *np.deg2rad(angles_deg))
    return np.array(transform.GetMatrix()).reshape(3, 3)


@dataclass
class Grid:
    """A voxel grid: size (x, y, z), spacing (mm), origin (mm, LPS) and direction (3x3 columns = axes)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    origin: tuple[float, float, float] | None = None
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if self.origin is None:
            half_extent = (np.array(self.size) - 1) * np.array(self.spacing) / 2.0
            self.origin = tuple(np.array(self.centre) - self.direction @ half_extent)

    def points(self) -> np.ndarray:
        """Physical coordinates of every voxel centre, shape (z, y, x, 3)."""
        k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in self.size[::-1]), indexing="ij")
        index_mm = np.stack([i, j, k], axis=-1) * np.array(self.spacing)
        return index_mm @ self.direction.T + np.array(self.origin)

    def image(self, array_zyx: np.ndarray) -> sitk.Image:
        """Wrap a (z, y, x) array as a SimpleITK image on this grid."""
        return make_image(array_zyx, self.spacing, self.origin, self.direction)


def make_image(
    array_zyx: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: np.ndarray | Sequence[float] | None = None,
) -> sitk.Image:
    """A 3-D SimpleITK image from a (z, y, x) array with the given geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in np.asarray(direction, dtype=float).ravel()))
    return image


def _inside(points: np.ndarray, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    scaled = (points - np.asarray(centre)) / np.asarray(radii)
    return np.einsum("...i,...i->...", scaled, scaled) <= 1.0


def head_labels(points: np.ndarray, lesion: bool = True) -> np.ndarray:
    """Tissue labels of the analytic head at physical points (..., 3) in LPS mm (head centred at 0).

    Nested ellipsoids (scalp, skull, CSF, cortex, white matter), asymmetric ventricles and deep grey
    nuclei, a cerebellum and an optional lesion, so that no rotation or flip maps the head onto itself.
    """
    labels = np.zeros(points.shape[:-1], dtype=np.uint8)
    head = (72.0, 90.0, 78.0)
    for fraction, label in ((1.0, SCALP), (0.93, SKULL), (0.87, CSF), (0.83, GREY), (0.70, WHITE)):
        labels[_inside(points, (0.0, 0.0, 4.0), np.array(head) * fraction)] = label
    labels[_inside(points, (0.0, 48.0, -44.0), (44.0, 28.0, 22.0))] = GREY  # cerebellum (posterior, inferior)
    labels[_inside(points, (0.0, 48.0, -44.0), (30.0, 18.0, 12.0))] = WHITE
    labels[_inside(points, (0.0, -62.0, -40.0), (30.0, 18.0, 14.0))] = SCALP  # face, anterior
    labels[_inside(points, (-9.0, -2.0, 14.0), (6.0, 24.0, 9.0))] = CSF  # right ventricle
    labels[_inside(points, (10.0, 4.0, 12.0), (5.0, 20.0, 8.0))] = CSF  # left ventricle, smaller
    labels[_inside(points, (-22.0, 6.0, -2.0), (8.0, 12.0, 8.0))] = DEEP_GREY
    labels[_inside(points, (20.0, 2.0, 0.0), (7.0, 10.0, 7.0))] = DEEP_GREY
    labels[_inside(points, (30.0, 30.0, 30.0), (10.0, 10.0, 10.0))] = GREY  # a sulcal fold, left parietal
    if lesion:
        labels[_inside(points, LESION_CENTRE, (LESION_RADIUS,) * 3)] = LESION
    return labels


def _lookup(labels: np.ndarray, table: dict[int, float]) -> np.ndarray:
    values = np.zeros(max(table) + 1, dtype=np.float32)
    for label, value in table.items():
        values[label] = value
    return values[labels]


def phantom_mri(grid: Grid, noise: float = 0.01, seed: int = 0, dtype: type = np.float32) -> sitk.Image:
    """A T1-like MRI of the analytic head on ``grid`` (light partial-volume blur, Gaussian noise)."""
    values = _lookup(head_labels(grid.points()), T1_INTENSITY)
    image = sitk.SmoothingRecursiveGaussian(grid.image(values), [0.6 * s for s in grid.spacing])
    array = sitk.GetArrayFromImage(image)
    array = array + np.random.default_rng(seed).normal(0.0, noise * 80.0, array.shape).astype(np.float32)
    array = np.clip(array, 0.0, None)
    if np.issubdtype(dtype, np.integer):
        array = np.round(array)
    return grid.image(array.astype(dtype))


@functools.lru_cache(maxsize=4)
def _blurred_uptake(fwhm_mm: float, work_spacing: float) -> sitk.Image:
    """FDG uptake of the head on an axis-aligned grid, blurred to ``fwhm_mm`` (cached: it is the slow part)."""
    work_size = tuple(int(np.ceil(extent / work_spacing)) for extent in (190.0, 230.0, 210.0))
    work = Grid(work_size, (work_spacing,) * 3)
    uptake = work.image(_lookup(head_labels(work.points()), FDG_UPTAKE))
    return sitk.SmoothingRecursiveGaussian(uptake, fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))))


def phantom_pet(
    grid: Grid,
    transform: sitk.Transform | None = None,
    fwhm_mm: float = 6.0,
    noise: float = 0.03,
    seed: int = 1,
    work_spacing: float = 1.5,
) -> sitk.Image:
    """An FDG-like PET of the head on ``grid``, moved by ``transform`` (MRI -> PET points), blurred, noisy.

    The uptake is drawn on an axis-aligned ``work_spacing`` grid in the head frame, blurred to
    ``fwhm_mm`` and sampled at ``transform^-1`` of every PET voxel centre.
    """
    uptake = _blurred_uptake(fwhm_mm, work_spacing)
    moved_to_head = sitk.Transform(3, sitk.sitkIdentity) if transform is None else transform.GetInverse()
    reference = grid.image(np.zeros(grid.size[::-1], dtype=np.float32))
    pet = sitk.Resample(uptake, reference, moved_to_head, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(pet)
    array = array + np.random.default_rng(seed).normal(0.0, noise * FDG_UPTAKE[GREY], array.shape)
    return grid.image(np.clip(array, 0.0, None).astype(np.float32))


def rigid(
    angles_deg: Sequence[float] = (0.0, 0.0, 0.0),
    translation_mm: Sequence[float] = (0.0, 0.0, 0.0),
    centre: Sequence[float] = (0.0, 0.0, 0.0),
) -> sitk.Euler3DTransform:
    """A rigid transform: rotation (degrees about x, y, z) about ``centre``, then a translation."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(float(c) for c in centre))
    transform.SetRotation(*(float(a) for a in np.deg2rad(angles_deg)))
    transform.SetTranslation(tuple(float(t) for t in translation_mm))
    return transform


def head_points(grid: Grid, step: int = 2) -> np.ndarray:
    """Physical points (N, 3) of the head's voxels on ``grid`` (every ``step``-th voxel per axis)."""
    points = grid.points()[::step, ::step, ::step]
    return points[head_labels(points) != BACKGROUND]


def mean_tre(truth: sitk.Transform, estimate: sitk.Transform, points: np.ndarray) -> float:
    """Mean distance (mm) between where ``truth`` and ``estimate`` send each point."""
    distances = [
        np.linalg.norm(np.subtract(truth.TransformPoint(tuple(p)), estimate.TransformPoint(tuple(p))))
        for p in points.astype(float)
    ]
    return float(np.mean(distances))


class FakeFuser:
    """A stand-in for the network following the fuser contract: the mean of MRI and PET luminance.

    It records the shapes of the batches it was given so tests can check cropping and batching.
    """

    method = "fake-mean"
    device = "cpu"
    weights_sha256 = None

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def fuse(self, mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
        """Average the two [0, 1] inputs (same shape)."""
        assert mri.shape == pet.shape and mri.dtype == np.float32 and pet.dtype == np.float32
        assert mri.min() >= 0.0 and mri.max() <= 1.0 and pet.min() >= 0.0 and pet.max() <= 1.0
        self.calls.append(mri.shape)
        return ((mri + pet) / 2.0).astype(np.float32)
