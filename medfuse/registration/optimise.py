"""The multi-resolution Mattes mutual-information optimisation (single work unit, hence deterministic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medfuse.registration.bias import bias_field, corrected
from medfuse.registration.grids import LEVEL_SPACINGS_MM, on_grid
from medfuse.registration.masks import foreground_mask, mask_points
from medfuse.registration.transforms import single

if TYPE_CHECKING:
    import SimpleITK as sitk

#: Optimiser step (scaled to mm of voxel shift) at which each level stops: coarse levels only get close.
MIN_STEPS_MM = (0.02, 0.005, 0.001)
#: First optimiser step per level (mm of voxel shift): each level starts close to the previous answer.
FIRST_STEPS_MM = (2.0, 1.0, 0.5)
#: MRI foreground voxels sampled per level (coarse to fine); fixed counts keep the cost independent of grids.
SAMPLES_PER_LEVEL = (2_000, 6_000, 15_000)
HISTOGRAM_BINS = 64
SAMPLING_SEED = 20240613
#: PET values are clipped at this many times the median of its foreground (and at its 99.5th
#: percentile there): a few hot voxels (bladder, tumour) would otherwise squeeze all soft tissue
#: into the histogram's first bins.
PET_CLIP_MEDIANS = 4.0
#: The MRI is clipped at this percentile of its foreground (rare bright voxels: vessels, artefacts).
MRI_CLIP_PERCENTILE = 99.5
METRIC_NAME = "Mattes mutual information (negative; lower is better)"


def method(
    sampling: float, first_step: float, min_step: float, seed: int = SAMPLING_SEED
) -> sitk.ImageRegistrationMethod:
    """A one-level, single-work-unit Mattes-MI registration method with our optimiser settings."""
    import SimpleITK as sitk

    registration = sitk.ImageRegistrationMethod()
    registration.SetMetricAsMattesMutualInformation(HISTOGRAM_BINS)
    registration.SetMetricSamplingStrategy(registration.RANDOM)
    registration.SetMetricSamplingPercentage(sampling, seed)
    registration.SetMetricUseMovingImageGradientFilter(False)
    registration.SetMetricUseFixedImageGradientFilter(False)
    registration.SetInterpolator(sitk.sitkLinear)
    registration.SetOptimizerAsRegularStepGradientDescent(
        learningRate=first_step,
        minStep=min_step,
        numberOfIterations=300,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    registration.SetNumberOfThreads(1)
    registration.SetNumberOfWorkUnits(1)
    return registration


@dataclass
class Level:
    """One resolution level: MRI and PET (clipped) on ``spacing`` mm grids, and their foregrounds.

    ``mask`` (the MRI foreground grown by 4 mm, so the outline's edge counts) is where the metric
    samples; ``mri_foreground`` and ``pet_foreground`` are the bodies themselves.
    """

    spacing: float
    fixed: sitk.Image
    moving: sitk.Image
    mask: sitk.Image
    mri_foreground: sitk.Image
    pet_foreground: sitk.Image
    sampling: float
    first_step: float
    min_step: float

    def evaluate(self, transform: sitk.Transform, mask: sitk.Image | None = None) -> float | None:
        """The metric at ``transform`` over every voxel of ``mask`` (default: the level's sampling mask),
        each sampled at a fixed random point inside the voxel (as the optimiser samples: points on the
        voxel centres of two similar grids make mutual information jump as the grids align);
        ``None`` when they miss the PET."""
        evaluator = method(1.0, self.first_step, self.min_step)
        evaluator.SetMetricFixedMask(self.mask if mask is None else mask)
        evaluator.SetInitialTransform(transform, inPlace=False)
        try:
            return float(evaluator.MetricEvaluate(self.fixed, self.moving))
        except RuntimeError:
            return None


def _clipped(image: sitk.Image, ceiling: float) -> sitk.Image:
    import SimpleITK as sitk

    return sitk.Clamp(image, sitk.sitkFloat32, float(np.finfo(np.float32).min), float(ceiling))


def _like(mask: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """``mask`` on ``reference``'s grid (nearest neighbour)."""
    import SimpleITK as sitk

    if mask.GetSize() == reference.GetSize() and mask.GetSpacing() == reference.GetSpacing():
        return mask
    return sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _grown(mask: sitk.Image, mm: float) -> sitk.Image:
    """``mask`` dilated by about ``mm``."""
    import SimpleITK as sitk
    from scipy import ndimage

    steps = max(round(mm / max(mask.GetSpacing())), 1)
    grown = sitk.GetImageFromArray(
        ndimage.binary_dilation(sitk.GetArrayViewFromImage(mask) > 0, iterations=steps).astype(np.uint8)
    )
    grown.CopyInformation(mask)
    return grown


def pyramid(fixed_mri: sitk.Image, moving_pet: sitk.Image) -> list[Level]:
    """Coarse-to-fine levels on grids of :data:`LEVEL_SPACINGS_MM`, each resampled from the next finer one.

    Anti-aliasing is the only smoothing (Gaussian of the resolution lost), and a PET coarser than a
    level stays as it is. A volume too thin for a coarse level skips it. Foregrounds are found once,
    on the 4 mm level (cheap, and precise enough), and serve every level; the MRI's smooth bias is
    divided out (:mod:`.bias`) and intensities are clipped (:data:`PET_CLIP_MEDIANS`,
    :data:`MRI_CLIP_PERCENTILE`) so the histogram resolves soft tissue.
    """
    import SimpleITK as sitk

    images: dict[int, tuple[sitk.Image, sitk.Image]] = {}
    fixed, moving = fixed_mri, moving_pet
    for index in reversed(range(len(LEVEL_SPACINGS_MM))):
        fixed, moving = on_grid(fixed, LEVEL_SPACINGS_MM[index]), on_grid(moving, LEVEL_SPACINGS_MM[index])
        if images and min(fixed.GetSize()) < 8:
            break  # too thin for coarser levels
        images[index] = (fixed, moving)
    reference_fixed, reference_moving = images.get(1, images[len(LEVEL_SPACINGS_MM) - 1])
    mri_foreground = foreground_mask(reference_fixed, "MRI")
    pet_foreground = foreground_mask(reference_moving, "PET")
    sampled_region = _grown(mri_foreground, 4.0)
    coarsest = images[min(images)][0]
    field = bias_field(coarsest, _like(mri_foreground, coarsest))
    if field is not None:
        images = {index: (corrected(fixed, field), moving) for index, (fixed, moving) in images.items()}
        reference_fixed = images.get(1, images[len(LEVEL_SPACINGS_MM) - 1])[0]
    mri_values = sitk.GetArrayViewFromImage(reference_fixed)[sitk.GetArrayViewFromImage(mri_foreground) > 0]
    pet_values = sitk.GetArrayViewFromImage(reference_moving)[sitk.GetArrayViewFromImage(pet_foreground) > 0]
    mri_ceiling = float(np.percentile(mri_values, MRI_CLIP_PERCENTILE)) if mri_values.size else np.inf
    pet_ceiling = np.inf
    if pet_values.size:
        pet_ceiling = min(float(np.percentile(pet_values, 99.5)), PET_CLIP_MEDIANS * float(np.median(pet_values)))
    levels = []
    for index in sorted(images):
        fixed, moving = images[index]
        level_mask = _like(sampled_region, fixed)
        sampled_voxels = max(int(np.count_nonzero(sitk.GetArrayViewFromImage(level_mask))), 1)
        levels.append(
            Level(
                spacing=LEVEL_SPACINGS_MM[index],
                fixed=_clipped(fixed, mri_ceiling) if np.isfinite(mri_ceiling) else fixed,
                moving=_clipped(moving, pet_ceiling) if np.isfinite(pet_ceiling) else moving,
                mask=level_mask,
                mri_foreground=_like(mri_foreground, fixed),
                pet_foreground=_like(pet_foreground, moving),
                sampling=min(1.0, SAMPLES_PER_LEVEL[index] / sampled_voxels),
                first_step=FIRST_STEPS_MM[index],
                min_step=MIN_STEPS_MM[index],
            )
        )
    return levels


def parameter_scales(mask: sitk.Image, transform: sitk.Transform) -> list[float]:
    """Optimiser scales that make a unit step of every parameter move the body by about the same distance.

    A rotation about an axis moves foreground voxels by their distance to that axis, an affine
    matrix entry ``a_ij`` by their coordinate ``x_j``: the scales are the mean squares of those lever
    arms (translations: 1). ITK's corner-based estimate uses the whole field of view instead of the
    body and makes rotations crawl when the body is small in a large field of view.
    """
    arms = mask_points(mask) - np.array(transform.GetFixedParameters()[:3])
    second = (arms**2).mean(axis=0) if len(arms) else np.ones(3)
    if transform.GetName() == "Euler3DTransform":
        return [second[1] + second[2], second[0] + second[2], second[0] + second[1], 1.0, 1.0, 1.0]
    return [float(second[column]) for _row in range(3) for column in range(3)] + [1.0, 1.0, 1.0]


def optimise(
    level: Level, start: sitk.Transform, scales: list[float], seed: int = SAMPLING_SEED
) -> tuple[sitk.Transform, sitk.ImageRegistrationMethod]:
    """Run the optimiser on one level from ``start``; returns the result and the finished method."""
    registration = method(level.sampling, level.first_step, level.min_step, seed)
    registration.SetOptimizerScales(scales)
    registration.SetMetricFixedMask(level.mask)
    registration.SetInitialTransform(start, inPlace=False)
    return single(registration.Execute(level.fixed, level.moving)), registration
