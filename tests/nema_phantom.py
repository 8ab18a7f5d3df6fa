"""Phantoms for the uptake fidelity of fused volumes (tests and benchmarks/volume_fidelity.py).

``nema_phantom`` is a NEMA NU 2 / IEC-like body phantom: an elliptical water cylinder (300 x 230 mm,
here 80 mm long around the sphere plane) with a 51 mm cold lung insert on its axis and six hot spheres
(10, 13, 17, 22, 28 and 37 mm across) on a 57.2 mm ring in its central plane, filled at ``contrast``
times the background activity. Its MRI is a mid-grey anatomy: water at half the brightness of a
12 mm fat layer under the wall, a dark lung insert and dark 1 mm sphere walls, 1 % noise; with
``flat_anatomy`` it is one flat tissue instead (the water level throughout the body, 1 % noise), as when an
MRI is made from the PET's body outline to fuse a real phantom scan. Its PET is the
activity blurred to 6 mm FWHM with 5 % Gaussian noise. Both are sampled on the same grid (the PET is
"already registered"), 2 mm voxels by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

SPHERE_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
SPHERE_RING_MM = 57.2
BODY_AXES_MM = (150.0, 115.0)  # half axes of the elliptical body (x, y)
LUNG_RADIUS_MM = 25.5
FAT_MM = 12.0
LENGTH_MM = 80.0
BACKGROUND_ACTIVITY = 5.0  # kBq/mL
MRI_WATER, MRI_FAT, MRI_LUNG, MRI_WALL = 500.0, 1000.0, 40.0, 80.0


@dataclass
class NemaPhantom:
    """MRI and PET on one grid, plus voxel masks (z, y, x) of each sphere and of the background region."""

    mri: sitk.Image
    pet: sitk.Image
    spheres: dict[float, np.ndarray]
    background: np.ndarray
    contrast: float


def _grid_points(spacing_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, sitk.Image]:
    size = [int(np.ceil(2 * BODY_AXES_MM[0] / spacing_mm)) + 8, int(np.ceil(2 * BODY_AXES_MM[1] / spacing_mm)) + 8]
    size.append(int(np.ceil(LENGTH_MM / spacing_mm)))
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetSpacing((spacing_mm,) * 3)
    reference.SetOrigin(tuple(-(n - 1) * spacing_mm / 2.0 for n in size))
    z, y, x = (np.arange(n) * spacing_mm - (n - 1) * spacing_mm / 2.0 for n in size[::-1])
    return z[:, None, None], y[None, :, None], x[None, None, :], reference


def _image(values: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.CopyInformation(reference)
    return image


def nema_phantom(
    contrast: float = 4.0, spacing_mm: float = 2.0, seed: int = 0, *, flat_anatomy: bool = False
) -> NemaPhantom:
    """The NEMA-like phantom of the module docstring at sphere-to-background ``contrast``."""
    z, y, x = _grid_points(spacing_mm)[:3]
    reference = _grid_points(spacing_mm)[3]
    shape = np.broadcast_shapes(z.shape, y.shape, x.shape)
    ellipse = (x / BODY_AXES_MM[0]) ** 2 + (y / BODY_AXES_MM[1]) ** 2
    body = np.broadcast_to(ellipse <= 1.0, shape)
    water = np.broadcast_to((x / (BODY_AXES_MM[0] - FAT_MM)) ** 2 + (y / (BODY_AXES_MM[1] - FAT_MM)) ** 2 <= 1.0, shape)
    lung = np.broadcast_to(x**2 + y**2 <= LUNG_RADIUS_MM**2, shape)
    activity = np.where(body, BACKGROUND_ACTIVITY, 0.0)
    activity[lung] = 0.1 * BACKGROUND_ACTIVITY
    mri = np.where(water, MRI_WATER, np.where(body, MRI_FAT, 0.0))
    mri[lung] = MRI_LUNG
    spheres: dict[float, np.ndarray] = {}
    near_sphere = np.zeros(shape, dtype=bool)
    for index, diameter in enumerate(SPHERE_DIAMETERS_MM):
        angle = np.deg2rad(60.0 * index)
        cx, cy = SPHERE_RING_MM * np.cos(angle), SPHERE_RING_MM * np.sin(angle)
        distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + z**2)
        inside = distance <= diameter / 2.0
        spheres[diameter] = inside
        activity[inside] = contrast * BACKGROUND_ACTIVITY
        mri[(distance > diameter / 2.0) & (distance <= diameter / 2.0 + 1.0)] = MRI_WALL
        near_sphere |= distance <= diameter / 2.0 + 15.0
    if flat_anatomy:
        mri = np.where(body, MRI_WATER, 0.0)
    rng = np.random.default_rng(seed)
    mri = np.clip(mri + rng.normal(0.0, 0.01 * mri.max(), shape) * body, 0.0, None)
    sigma = 6.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    blurred = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(_image(activity, reference), sigma))
    pet = np.clip(blurred + rng.normal(0.0, 0.05 * BACKGROUND_ACTIVITY, shape) * (blurred > 0.01), 0.0, None)
    inner_water = (x / (BODY_AXES_MM[0] - FAT_MM - 15.0)) ** 2 + (y / (BODY_AXES_MM[1] - FAT_MM - 15.0)) ** 2 <= 1.0
    far_from_lung = x**2 + y**2 > (LUNG_RADIUS_MM + 15.0) ** 2
    background = np.broadcast_to(inner_water & far_from_lung, shape) & ~near_sphere & (np.abs(z) <= 20.0)
    return NemaPhantom(_image(mri, reference), _image(pet, reference), spheres, background, contrast)


def sphere_ratios(fused: np.ndarray, phantom: NemaPhantom) -> dict[float, float]:
    """Mean fused value inside each sphere divided by the mean of the background region."""
    background = float(fused[phantom.background].mean())
    return {diameter: float(fused[mask].mean()) / background for diameter, mask in phantom.spheres.items()}


def central_slice_ratios(fused: np.ndarray, phantom: NemaPhantom) -> dict[float, float]:
    """Each sphere as NEMA NU 2's image-quality test reads it: the mean over the sphere's cross-section on the
    transverse slice(s) through its centre (the slices where that cross-section is largest; two when the centre
    falls between slices), divided by the mean of the background region."""
    background = float(fused[phantom.background].mean())
    ratios = {}
    for diameter, mask in phantom.spheres.items():
        area = mask.sum(axis=(1, 2))
        central = mask & (area == area.max())[:, None, None]
        ratios[diameter] = float(fused[central].mean()) / background
    return ratios
