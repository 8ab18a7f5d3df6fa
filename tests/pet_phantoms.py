"""PET phantoms with known answers for the hotspot readout (numpy arrays (z, y, x), deterministic).

- :func:`spheres`: uniform spheres of given activity on a background, sampled exactly (a voxel is in
  a sphere when its centre is), so the true voxel count, volume, max and mean are known by hand;
- :func:`blur`: a Gaussian of given FWHM in mm, the scanner's resolution;
- :func:`whole_body`: an FDG-like whole-body PET (SUV-like values, 200 × 200 × 300 voxels of
  3.5 × 3.5 × 3 mm by default): body 0.8, lungs 0.35, liver 2.4, brain 8, heart 4, kidneys 5,
  bladder 30, three lesions (lung 7.0 in a 10 mm radius, liver 6.0 in 8 mm, neck node 12.0 in 5 mm),
  6 mm FWHM, noise of 10 % of sqrt(value × 2.4), and noisier end slices where sensitivity falls off.
  Used by tests/test_hotspots.py (a smaller grid) and benchmarks/bench_hotspots.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Whole-body lesions: name, centre (x, y, z mm from the grid's first voxel), radius mm, value.
WHOLE_BODY_LESIONS = (
    ("lung", (250.0, 330.0, 640.0), 10.0, 7.0),
    ("liver", (290.0, 370.0, 520.0), 8.0, 6.0),
    ("neck node", (330.0, 340.0, 760.0), 5.0, 12.0),
)


def distance_mm(shape: Sequence[int], spacing: Sequence[float], centre_mm: Sequence[float]) -> np.ndarray:
    """Distance (mm) of every voxel centre of a (z, y, x) array from ``centre_mm`` (x, y, z from voxel 0)."""
    axes = [np.arange(n) * s - c for n, s, c in zip(shape, spacing[::-1], centre_mm[::-1], strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    return np.sqrt(z**2 + y**2 + x**2)


def spheres(
    shape: Sequence[int],
    spacing: Sequence[float],
    items: Sequence[tuple[Sequence[float], float, float]],
    background: float = 0.0,
) -> np.ndarray:
    """Uniform spheres ``(centre_mm, radius_mm, value)`` on ``background``; a voxel belongs to a sphere
    when its centre is inside (later spheres overwrite earlier ones)."""
    values = np.full(tuple(shape), background, np.float32)
    for centre, radius, value in items:
        values[distance_mm(shape, spacing, centre) <= radius] = value
    return values


def blur(values: np.ndarray, spacing: Sequence[float], fwhm_mm: float) -> np.ndarray:
    """A Gaussian blur of ``fwhm_mm`` (the scanner's resolution), zero outside the array."""
    sigma = [fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / s for s in spacing[::-1]]
    return ndimage.gaussian_filter(values.astype(np.float64), sigma, mode="constant").astype(np.float32)


def _ellipsoid(
    shape: Sequence[int], spacing: Sequence[float], centre: Sequence[float], radii: Sequence[float]
) -> np.ndarray:
    axes = [
        (np.arange(n) * s - c) / r for n, s, c, r in zip(shape, spacing[::-1], centre[::-1], radii[::-1], strict=True)
    ]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    return z**2 + y**2 + x**2 <= 1.0


def whole_body(
    shape: Sequence[int] = (300, 200, 200), spacing: Sequence[float] = (3.5, 3.5, 3.0), seed: int = 0
) -> np.ndarray:
    """The whole-body FDG-like PET of the module docstring on a (z, y, x) grid of ``shape``."""
    rng = np.random.default_rng(seed)
    scale = np.array(shape[::-1]) * np.array(spacing) / np.array([700.0, 700.0, 900.0])
    shape = tuple(shape)

    def at(centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
        return _ellipsoid(shape, spacing, np.array(centre) * scale, np.array(radii) * scale)

    values = np.zeros(shape, np.float32)
    values[at((350, 350, 450), (170, 115, 460))] = 0.8
    values[at((290, 350, 620), (55, 70, 110))] = 0.35
    values[at((410, 350, 620), (55, 70, 110))] = 0.35
    values[at((300, 360, 520), (90, 70, 60))] = 2.4
    values[at((370, 330, 640), (45, 45, 45))] = 4.0
    values[at((300, 390, 420), (25, 25, 45))] = 5.0
    values[at((400, 390, 420), (25, 25, 45))] = 5.0
    values[at((350, 350, 150), (40, 35, 35))] = 30.0
    values[at((350, 350, 840), (70, 85, 60))] = 8.0
    for _name, centre, radius, value in WHOLE_BODY_LESIONS:
        values[distance_mm(shape, spacing, np.array(centre) * scale) <= radius] = value
    values = blur(values, spacing, 6.0)
    noise = rng.normal(0.0, 1.0, shape).astype(np.float32) * 0.1 * np.sqrt(np.clip(values, 0, None) * 2.4)
    noise[:3] *= 4.0
    noise[-3:] *= 4.0
    return np.clip(values + noise, 0.0, None).astype(np.float32)
