"""A smooth intensity bias of the MRI (receive-coil shading), estimated and divided out for registration.

Mutual information assumes one tissue gives one intensity. A surface or body coil makes fat at
one end of a limb 20 % brighter than at the other, and mutual information then prefers poses that
line the PET up with the shading instead of the anatomy (on a thigh, a shift of centimetres along
the leg). The bias is modelled as a linear function of position in the log domain (a quadratic
one also absorbs how tissues are arranged: ±10 % on an unshaded head) and fitted
by alternating two steps on the MRI's foreground (coarsest level): assign each voxel to one of
:data:`CLASSES` intensity classes (k-means on the corrected log intensities), then fit the
polynomial to what the classes leave unexplained (least squares, outliers beyond two standard
deviations dropped). A field weaker than :data:`MIN_BIAS` is ignored. The field is evaluated on
the coarsest grid and resampled to the others; it only serves registration (the outputs keep the
MRI's own values).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medfuse.registration.grids import physical_points

if TYPE_CHECKING:
    import SimpleITK as sitk

CLASSES = 4
ROUNDS = 4
#: A fitted field that varies less than this (either way, over the foreground) is left alone: the fit
#: cannot tell such weak shading from the way tissues are arranged (a head's is ±1–5 % unshaded).
MIN_BIAS = 0.08


def _basis(points: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """The linear terms (x, y, z) of positions scaled to about [-1, 1]."""
    return (points - centre) / scale


def _classes(values: np.ndarray) -> np.ndarray:
    """Class means of a 1-D k-means (:data:`CLASSES` classes, started at evenly spaced quantiles)."""
    means = np.quantile(values, (np.arange(CLASSES) + 0.5) / CLASSES)
    for _ in range(10):
        labels = np.argmin(np.abs(values[:, None] - means[None, :]), axis=1)
        means = np.array([values[labels == k].mean() if np.any(labels == k) else means[k] for k in range(CLASSES)])
    return means


def bias_field(image: sitk.Image, foreground: sitk.Image) -> sitk.Image | None:
    """The multiplicative bias of ``image`` on its own grid (1 = none), fitted on ``foreground``;
    ``None`` when the foreground is too small to fit it or the field is weaker than :data:`MIN_BIAS`."""
    import SimpleITK as sitk

    values = sitk.GetArrayViewFromImage(image)
    inside = (sitk.GetArrayViewFromImage(foreground) > 0) & (values > 0)
    if np.count_nonzero(inside) < 200:
        return None
    indices = np.argwhere(inside)[:, ::-1]
    points = physical_points(image, indices)
    centre = points.mean(axis=0)
    scale = max(float(np.abs(points - centre).max()), 1.0)
    basis = _basis(points, centre, scale)
    logs = np.log(values[inside].astype(np.float64))
    coefficients = np.zeros(basis.shape[1])
    keep = np.ones(len(logs), bool)
    for _ in range(ROUNDS):
        corrected = logs - basis @ coefficients
        if np.count_nonzero(keep) < 200:
            return None
        means = _classes(corrected[keep])
        explained = means[np.argmin(np.abs(corrected[:, None] - means[None, :]), axis=1)]
        residual = logs - explained
        keep = np.abs(residual - basis @ coefficients) <= 2.0 * float(
            np.std(residual[keep] - (basis @ coefficients)[keep])
        )
        target = residual[keep] - residual[keep].mean()
        coefficients = np.linalg.lstsq(basis[keep] - basis[keep].mean(axis=0), target, rcond=None)[0]
    fitted = (basis - basis.mean(axis=0)) @ coefficients
    if float(np.abs(fitted).max()) < np.log1p(MIN_BIAS):
        return None
    every = physical_points(image, np.argwhere(np.ones(values.shape, bool))[:, ::-1])
    field = basis_mean_free(every, basis, centre, scale) @ coefficients
    array = np.exp(np.clip(field, -1.0, 1.0)).reshape(values.shape).astype(np.float32)
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


def basis_mean_free(points: np.ndarray, fitted: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """The basis at ``points``, shifted by the mean the fit removed (so the foreground's mean factor is 1)."""
    return _basis(points, centre, scale) - fitted.mean(axis=0)


def corrected(image: sitk.Image, field: sitk.Image) -> sitk.Image:
    """``image`` divided by ``field`` resampled onto its grid (edges extended)."""
    import SimpleITK as sitk

    on_grid = sitk.Resample(field, image, sitk.Transform(), sitk.sitkLinear, 1.0, sitk.sitkFloat32, True)
    return sitk.Cast(image, sitk.sitkFloat32) / on_grid
