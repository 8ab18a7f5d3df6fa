"""How sure a registration is: edge agreement as a second opinion, and a confidence level.

* **Edge agreement** (normalised gradient fields, on the coarsest level): the mean over the MRI's foreground of
  cos²(angle between the MRI's and the PET's intensity gradients), each gradient damped by its
  image's median gradient. It does not care which tissue is bright in which modality, and the
  body's outline, bones and a tumour's rim all count: a second opinion where mutual information is
  weak. 0 = no shared edges.
* **Confidence** (the spread and flat directions come from :mod:`.local`): ``high`` when voxel
  subsets agree within half a PET voxel, ``medium`` within one or when some direction was left at
  the header pose, ``low`` beyond, when a flat direction could not be left at a credible header
  pose, when the edges agree less at the result than at the header pose although the pair moved by
  more than a PET voxel, or when the bodies barely overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medfuse.registration.local import SCAN_STEP_MM, SUBSETS
from medfuse.registration.masks import MIN_OVERLAP
from medfuse.registration.optimise import Level

if TYPE_CHECKING:
    import SimpleITK as sitk


@dataclass
class Confidence:
    """How far to trust a pose: ``level`` high/medium/low, the voxel subsets' ``spread_mm`` and why."""

    level: str = "high"
    spread_mm: float | None = None
    reason: str = ""

    def record(self) -> dict[str, Any]:
        """JSON-ready, as the report's ``registration.confidence``."""
        spread = None if self.spread_mm is None else round(self.spread_mm, 3)
        return {"level": self.level, "spread_mm": spread, "reason": self.reason}


def _gradients(values: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Intensity gradients (z, y, x, 3) of a (z, y, x) array in physical units (x, y, z components)."""
    dz, dy, dx = np.gradient(values.astype(np.float64), *spacing[::-1])
    return np.stack([dx, dy, dz], axis=-1)


class EdgeAgreement:
    """Normalised-gradient-field agreement of the MRI and the PET placed by a transform (0..1, higher is
    better) over the MRI's foreground on ``level``, away from the PET's field-of-view border."""

    def __init__(self, level: Level) -> None:
        import SimpleITK as sitk

        self.level = level
        self.usable = min(level.fixed.GetSize()) >= 3  # central differences need three voxels per axis
        values = sitk.GetArrayViewFromImage(level.fixed)
        self.mri_gradient = _gradients(values, level.fixed.GetSpacing()) if self.usable else np.zeros((1, 3))
        self.mask = sitk.GetArrayViewFromImage(level.mask) > 0
        ones = sitk.Image(level.moving.GetSize(), sitk.sitkUInt8) + 1
        ones.CopyInformation(level.moving)
        self.ones = ones

    def __call__(self, transform: sitk.Transform) -> float | None:
        """The agreement at ``transform``; ``None`` when too little of the foreground lies inside the PET."""
        import SimpleITK as sitk
        from scipy import ndimage

        if not self.usable:
            return None
        level = self.level
        pet = sitk.GetArrayFromImage(sitk.Resample(level.moving, level.fixed, transform, sitk.sitkLinear, 0.0))
        placed = sitk.Resample(self.ones, level.fixed, transform, sitk.sitkNearestNeighbor, 0)
        inside = ndimage.binary_erosion(sitk.GetArrayViewFromImage(placed) > 0, iterations=2)
        region = self.mask & inside
        if np.count_nonzero(region) < 100:
            return None
        mri_gradient = self.mri_gradient[region]
        pet_gradient = _gradients(pet, level.fixed.GetSpacing())[region]
        mri_norm = np.einsum("ij,ij->i", mri_gradient, mri_gradient)
        pet_norm = np.einsum("ij,ij->i", pet_gradient, pet_gradient)
        mri_damping, pet_damping = float(np.median(mri_norm)), float(np.median(pet_norm))
        if mri_damping <= 0 or pet_damping <= 0:
            return None
        dot = np.einsum("ij,ij->i", mri_gradient, pet_gradient)
        return float(np.mean(dot**2 / ((mri_norm + mri_damping) * (pet_norm + pet_damping))))


def confidence(result: Any, pet_voxel_mm: float) -> Confidence:
    """The confidence level of a registration result (see the module docstring)."""
    spread = result.spread_mm
    if result.overlap < MIN_OVERLAP:
        return Confidence("low", spread, f"the PET and MRI foregrounds overlap by only {result.overlap:.0%}")
    if result.kept_header:
        return Confidence("medium", spread, "registration found no better pose than the scanner coordinates")
    if result.unanchored:
        return Confidence(
            "low",
            spread,
            f"the images pin down {' and '.join(result.unanchored)} only weakly and the header pose is no guide "
            f"(along a translation, the best of restarts {SCAN_STEP_MM:g} mm apart was taken)",
        )
    edges_worse = (
        result.edges_header is not None and result.edges_value is not None and result.edges_value < result.edges_header
    )
    if edges_worse and result.moved_mm > pet_voxel_mm:
        return Confidence(
            "low",
            spread,
            f"it moved the PET {result.moved_mm:.1f} mm from its header pose although edges agree less there "
            f"({result.edges_value:.4f} against {result.edges_header:.4f})",
        )
    if spread is None:
        return Confidence("medium", None, "the agreement of voxel subsets could not be measured")
    where = f"{SUBSETS} voxel subsets agree within {spread:.1f} mm (PET voxel {pet_voxel_mm:.1f} mm)"
    if spread > pet_voxel_mm:
        return Confidence("low", spread, f"{where}: the metric barely determines the pose")
    if result.anchored:
        kept = " and ".join(result.anchored)
        return Confidence("medium", spread, f"{where}; the images do not determine {kept}, kept from the header")
    if spread > pet_voxel_mm / 2.0:
        return Confidence("medium", spread, where)
    return Confidence("high", spread, where)
