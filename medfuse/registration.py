"""PET → MRI registration and resampling (SimpleITK), deterministic across runs and thread counts.

Convention (the one ``sitk.Resample(pet, mri, T)`` takes): a transform maps MRI physical points to
PET physical points, so the PET value shown at MRI point ``x`` is ``pet(T(x))``.

How registration works, and why:

* **Pyramid.** The MRI and PET are resampled (with anti-aliasing) to isotropic grids of 8, 4 and
  2 mm (:data:`LEVEL_SPACINGS_MM`; a PET coarser than a level stays as it is). PET voxels are 2–4 mm
  with ~6 mm resolution, so finer MRI detail adds cost, not accuracy, and the cost no longer grows
  with the MRI's resolution.
* **Initialisation.** Three starting points are scored by the metric on the coarsest level: the
  scanners' own coordinates (right when both came from one session), the head centroids (right when
  the coordinate systems differ) and the image centres; the best one starts the optimisation.
* **Optimisation.** Mattes mutual information (:data:`HISTOGRAM_BINS` bins) on a fixed number of
  randomly drawn MRI head voxels per level (:data:`SAMPLES_PER_LEVEL`, fixed seed), regular-step
  gradient descent whose parameter scales come from the head's own lever arms (a unit step of any
  parameter moves the head by about the same distance), each level starting with a smaller step.
  ``affine`` refines the rigid result with an affine stage on the two finer levels.
* **Determinism.** With more than one work unit ITK adds the metric derivative's partial sums in an
  order that varies between runs (the transform then differs in its last bits from run to run and
  with ``--threads``). The optimisation therefore runs as one work unit; its grids are small, so this
  costs little, and the filters that prepare them compute each voxel on its own, so they are
  deterministic at any thread count.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medfuse.console import warn
from medfuse.errors import InvalidInputError, ProcessingError, UnreadableInputError
from medfuse.memory import WORKING_BYTES_PER_VOXEL, available_memory, format_bytes

if TYPE_CHECKING:
    import SimpleITK as sitk

Mode = Literal["rigid", "affine"]

WORK_SPACING_MM = 2.0
LEVEL_SPACINGS_MM = (8.0, 4.0, WORK_SPACING_MM)
#: Optimiser step (scaled to mm of voxel shift) at which each level stops: coarse levels only get close.
MIN_STEPS_MM = (0.02, 0.005, 0.001)
#: First optimiser step per level (mm of voxel shift): each level starts close to the previous answer.
FIRST_STEPS_MM = (2.0, 1.0, 0.5)
#: MRI head voxels sampled per level (coarse to fine); fixed counts keep the cost independent of grids.
SAMPLES_PER_LEVEL = (2_000, 6_000, 15_000)
HISTOGRAM_BINS = 48
SAMPLING_SEED = 20240613
#: Below this fraction of shared head volume, PET and MRI count as "barely overlapping".
MIN_OVERLAP = 0.5


@dataclass
class RegistrationResult:
    """The PET → MRI transform (MRI points to PET points) and how it was found."""

    transform: sitk.Transform
    metric: float
    mode: str
    initialisation: str
    iterations: int = 0
    stop_condition: str = ""
    overlap: float = 1.0


# ---- head masks and overlap ------------------------------------------------------------------------
def _smooth(image: sitk.Image, sigmas_mm: list[float]) -> sitk.Image:
    """Gaussian smoothing axis by axis (recursive filter); axes with sigma 0 or under 4 voxels are left alone."""
    import SimpleITK as sitk

    for axis, sigma in enumerate(sigmas_mm):
        if sigma > 0 and image.GetSize()[axis] >= 4:
            image = sitk.RecursiveGaussian(image, sigma, False, sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    return image


def _grid_size(image: sitk.Image, spacing: float = WORK_SPACING_MM) -> tuple[int, ...]:
    """Voxels per axis of ``image`` on the isotropic ``spacing`` grid of :func:`_on_grid` (its own size
    when it is already that coarse)."""
    if all(s >= spacing * 0.999 for s in image.GetSpacing()):
        return tuple(image.GetSize())
    return tuple(max(math.ceil(n * s / spacing), 1) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True))


def check_work_grid(image: sitk.Image, name: str) -> None:
    """Refuse, before any is built, an image whose registration grids would not fit in memory.

    Registration, head masks and the PET window resample the images to isotropic grids of
    :data:`LEVEL_SPACINGS_MM` (axes coarser than a grid are resampled too); a header whose voxel sizes
    are off by orders of magnitude (micrometres read as millimetres) would ask for billions of voxels.
    ``name`` (the input's path as given) names the culprit.
    """
    size = max((_grid_size(image, spacing) for spacing in LEVEL_SPACINGS_MM), key=math.prod)
    needed = math.prod(size) * (4 + WORKING_BYTES_PER_VOXEL)
    available = available_memory()
    if available is not None and needed > available:
        extent = " × ".join(f"{n * s:g}" for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True))
        raise InvalidInputError(
            f"{name}: its field of view of {extent} mm needs a {'×'.join(map(str, size))}-voxel registration "
            f"grid, about {format_bytes(needed)} of memory, more than the {format_bytes(available)} available; "
            "check the voxel spacing in its header."
        )


#: Inside :func:`shared_grids`: (input image, spacing, antialias) -> grid already made from it.
_GRIDS: dict[tuple[int, float, bool], tuple[sitk.Image, sitk.Image]] | None = None


@contextlib.contextmanager
def shared_grids() -> Iterator[None]:
    """Within this block, :func:`_on_grid` makes each grid of the same image object once.

    The pipeline's head mask for fusion wants the grid registration already made of the MRI (on a
    clinical-size MRI each costs seconds of smoothing); the images are kept only for the block.
    """
    global _GRIDS
    outer, _GRIDS = _GRIDS, {} if _GRIDS is None else _GRIDS
    try:
        yield
    finally:
        _GRIDS = outer


def _on_grid(image: sitk.Image, spacing: float, antialias: bool = True) -> sitk.Image:
    """``image`` resampled to an isotropic ``spacing`` grid with its own orientation and outer corner.

    An image already this coarse is returned as it is (float32). ``antialias`` first smooths away the
    detail the coarser grid cannot hold (when the grid coarsens by 1.5x or more; linear interpolation
    is smoothing enough below that). Inside :func:`shared_grids` a grid made before is reused.
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
        image = _smooth(image, [math.sqrt(max(spacing**2 - s**2, 0.0)) / 2.355 for s in old_spacing])
    size = list(_grid_size(image, spacing))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    corner = np.array(image.GetOrigin()) - direction @ (old_spacing / 2.0)
    origin = corner + direction @ np.full(3, spacing / 2.0)
    return sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, tuple(origin), (spacing,) * 3, image.GetDirection(), 0.0
    )


def _mask_array(values: np.ndarray, fraction: float) -> np.ndarray:
    """Foreground of a head image: above ``fraction`` of its robust range, specks dropped, holes filled.

    Blobs under 5 % of the largest are noise; larger ones stay (the scalp is a shell apart from the
    brain behind a dark skull). Holes are filled in 3-D and slice by slice, since a shell cut open by
    the field of view (at the neck) encloses nothing in 3-D.
    """
    from scipy import ndimage

    low, high = np.percentile(values, (0.5, 99.5))
    if high <= low:
        high = float(values.max())
    mask = values > low + fraction * (high - low)
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


def head_mask(image: sitk.Image, fraction: float = 0.1, dilate_mm: float = 0.0) -> sitk.Image:
    """A uint8 mask of the head (the largest bright blob, holes filled) on ``image``'s own grid.

    Computed on a grid no finer than :data:`WORK_SPACING_MM` for speed and mapped back; ``fraction``
    is the threshold as a fraction of the image's robust intensity range (0.5th–99.5th percentile).
    """
    import SimpleITK as sitk
    from scipy import ndimage

    coarse = _on_grid(image, WORK_SPACING_MM)
    mask = _mask_array(sitk.GetArrayViewFromImage(coarse), fraction)
    if dilate_mm > 0:
        steps = max(round(dilate_mm / max(coarse.GetSpacing())), 1)
        mask = ndimage.binary_dilation(mask, iterations=steps)
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(coarse)
    if coarse.GetSize() == image.GetSize() and coarse.GetSpacing() == image.GetSpacing():
        return mask_image
    return sitk.Resample(mask_image, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def overlap_fraction(mri: sitk.Image, pet: sitk.Image, transform: sitk.Transform) -> float:
    """Shared head volume of the MRI and the PET placed by ``transform``, over the smaller head's volume.

    1 means one head lies inside the other; 0 means the PET's head lands outside the MRI's head.
    Computed on 4 mm grids.
    """
    return _overlap(_on_grid(mri, 2 * WORK_SPACING_MM), _on_grid(pet, 2 * WORK_SPACING_MM), transform)


def _overlap(mri: sitk.Image, pet: sitk.Image, transform: sitk.Transform) -> float:
    import SimpleITK as sitk

    mri_mask = head_mask(mri, fraction=0.1)
    pet_mask = head_mask(pet, fraction=0.15)
    pet_on_mri = sitk.Resample(pet_mask, mri_mask, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    mri_voxels = sitk.GetArrayViewFromImage(mri_mask).astype(bool)
    shared = np.count_nonzero(mri_voxels & sitk.GetArrayViewFromImage(pet_on_mri).astype(bool))
    mri_volume = np.count_nonzero(mri_voxels) * math.prod(mri_mask.GetSpacing())
    pet_volume = np.count_nonzero(sitk.GetArrayViewFromImage(pet_mask)) * math.prod(pet_mask.GetSpacing())
    smaller = min(mri_volume, pet_volume)
    return float(shared * math.prod(mri_mask.GetSpacing()) / smaller) if smaller > 0 else 0.0


# ---- registration ----------------------------------------------------------------------------------
def _centroid(mask: sitk.Image) -> np.ndarray:
    import SimpleITK as sitk

    indices = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1].mean(axis=0)
    return np.array(mask.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in indices)))


def _image_centre(image: sitk.Image) -> np.ndarray:
    centre_index = (np.array(image.GetSize()) - 1) / 2.0
    return np.array(image.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in centre_index)))


def _method(sampling: float, first_step: float, min_step: float) -> sitk.ImageRegistrationMethod:
    """A one-level, single-work-unit Mattes-MI registration method with our optimiser settings."""
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, SAMPLING_SEED)
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetMetricUseFixedImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=first_step,
        minStep=min_step,
        numberOfIterations=300,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetNumberOfThreads(1)
    method.SetNumberOfWorkUnits(1)
    return method


@dataclass
class _Level:
    """The images of one resolution level: MRI and PET on a grid of ``spacing`` mm, the MRI head mask."""

    fixed: sitk.Image
    moving: sitk.Image
    mask: sitk.Image
    sampling: float
    first_step: float
    min_step: float


def _pyramid(fixed_mri: sitk.Image, moving_pet: sitk.Image) -> list[_Level]:
    """Coarse-to-fine levels on grids of :data:`LEVEL_SPACINGS_MM`, each resampled from the next finer one.

    Anti-aliasing is the only smoothing (Gaussian of the resolution lost), and a PET coarser than a
    level stays as it is. A volume too thin for a coarse level skips it.
    """
    import SimpleITK as sitk

    images: dict[int, tuple[sitk.Image, sitk.Image]] = {}
    fixed, moving = fixed_mri, moving_pet
    for index in reversed(range(len(LEVEL_SPACINGS_MM))):
        fixed, moving = _on_grid(fixed, LEVEL_SPACINGS_MM[index]), _on_grid(moving, LEVEL_SPACINGS_MM[index])
        if images and min(fixed.GetSize()) < 8:
            break  # too thin for coarser levels
        images[index] = (fixed, moving)
    # the head mask of the 4 mm level (cheap, and precise enough once dilated) serves every level
    mask = head_mask(images.get(1, images[len(LEVEL_SPACINGS_MM) - 1])[0], fraction=0.1, dilate_mm=4.0)
    levels = []
    for index in sorted(images):
        fixed, moving = images[index]
        level_mask = sitk.Resample(mask, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        head_voxels = max(int(np.count_nonzero(sitk.GetArrayViewFromImage(level_mask))), 1)
        sampling = min(1.0, SAMPLES_PER_LEVEL[index] / head_voxels)
        levels.append(_Level(fixed, moving, level_mask, sampling, FIRST_STEPS_MM[index], MIN_STEPS_MM[index]))
    return levels


def _parameter_scales(mask: sitk.Image, transform: sitk.Transform) -> list[float]:
    """Optimiser scales that make a unit step of every parameter move the head by about the same distance.

    A rotation about an axis moves head voxels by their distance to that axis, an affine matrix
    entry ``a_ij`` by their coordinate ``x_j``: the scales are the mean squares of those lever arms
    (translations: 1). ITK's corner-based estimate uses the whole field of view instead of the head
    and makes rotations crawl when the head is small in a large field of view.
    """
    import SimpleITK as sitk

    indices = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1].astype(float)
    matrix = np.array(mask.GetDirection()).reshape(3, 3) * np.array(mask.GetSpacing())
    points = indices @ matrix.T + np.array(mask.GetOrigin())
    arms = points - np.array(transform.GetFixedParameters()[:3])
    second = (arms**2).mean(axis=0) if len(arms) else np.ones(3)
    if transform.GetName() == "Euler3DTransform":
        return [second[1] + second[2], second[0] + second[2], second[0] + second[1], 1.0, 1.0, 1.0]
    return [float(second[column]) for _row in range(3) for column in range(3)] + [1.0, 1.0, 1.0]


def _optimise(
    level: _Level, start: sitk.Transform, scales: list[float]
) -> tuple[sitk.Transform, sitk.ImageRegistrationMethod]:
    method = _method(level.sampling, level.first_step, level.min_step)
    method.SetOptimizerScales(scales)
    method.SetMetricFixedMask(level.mask)
    method.SetInitialTransform(start, inPlace=False)
    return _single(method.Execute(level.fixed, level.moving)), method


def _single(transform: sitk.Transform) -> sitk.Transform:
    """The concrete transform (Euler3D, Affine...) inside what SimpleITK returns."""
    import SimpleITK as sitk

    transform = transform.Downcast()
    while isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        transform = transform.GetNthTransform(0).Downcast()
    return transform


def register(fixed_mri: sitk.Image, moving_pet: sitk.Image, mode: Mode = "rigid") -> RegistrationResult:
    """Register the PET to the MRI; the transform maps MRI physical points to PET physical points.

    Deterministic: the same images give the same transform on every run and at any thread count.
    A result that leaves the heads barely overlapping is returned with a warning.
    """
    import SimpleITK as sitk

    if mode not in ("rigid", "affine"):
        raise ValueError(f"mode must be 'rigid' or 'affine', not {mode!r}")
    moving_pet = sitk.Cast(moving_pet, sitk.sitkFloat32)
    levels = _pyramid(sitk.Cast(fixed_mri, sitk.sitkFloat32), moving_pet)
    transform, initialisation = _initial_transform(levels[0], moving_pet)
    head = levels[-2] if len(levels) > 1 else levels[-1]  # the 4 mm level, where masks are cheap
    try:
        scales = _parameter_scales(head.mask, transform)
        for level in levels:
            transform, method = _optimise(level, transform, scales)
        if mode == "affine":
            rigid = sitk.Euler3DTransform(transform)
            transform = sitk.AffineTransform(rigid.GetMatrix(), rigid.GetTranslation(), rigid.GetCenter())
            scales = _parameter_scales(head.mask, transform)
            for level in levels[-2:]:
                transform, method = _optimise(level, transform, scales)
    except RuntimeError as exc:
        raise ProcessingError(
            f"registration of the PET to the MRI failed ({str(exc).strip().splitlines()[-1][:160]}); "
            "check that both images show the same head, or pass --register none or --transform."
        ) from exc
    overlap = _overlap(head.fixed, head.moving, transform)
    if overlap < MIN_OVERLAP:
        warn(
            f"after registration the PET and MRI heads barely overlap ({overlap:.0%} of the smaller head); "
            "check that the inputs show the same patient and region."
        )
    return RegistrationResult(
        transform=transform,
        metric=float(method.GetMetricValue()),
        mode=mode,
        initialisation=initialisation,
        iterations=int(method.GetOptimizerIteration()),
        stop_condition=method.GetOptimizerStopConditionDescription(),
        overlap=overlap,
    )


def _initial_transform(coarse: _Level, moving_pet: sitk.Image) -> tuple[sitk.Transform, str]:
    """The best of three rigid starting points, scored by the metric on the coarsest level."""
    import SimpleITK as sitk

    centre = _centroid(coarse.mask)
    candidates = {
        "scanner coordinates": np.zeros(3),
        "head centroids": _centroid(head_mask(coarse.moving, fraction=0.15)) - centre,
        "image centres": _image_centre(moving_pet) - _image_centre(coarse.fixed),
    }
    scores = {}
    for name, translation in candidates.items():
        start = sitk.Euler3DTransform()
        start.SetCenter(tuple(float(c) for c in centre))
        start.SetTranslation(tuple(float(t) for t in translation))
        evaluator = _method(1.0, coarse.first_step, coarse.min_step)
        evaluator.SetMetricFixedMask(coarse.mask)
        evaluator.SetInitialTransform(start, inPlace=False)
        try:
            scores[name] = (evaluator.MetricEvaluate(coarse.fixed, coarse.moving), start)
        except RuntimeError:
            continue  # no overlap at all from this starting point
    if not scores:
        raise InvalidInputError(
            "the PET and MRI do not overlap from any starting point; check that they show the same head."
        )
    best = min(scores, key=lambda name: scores[name][0])
    return scores[best][1], best


def resample_to(pet: sitk.Image, mri: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """The PET on the MRI's grid (linear interpolation; 0 outside the PET's field of view), float32."""
    import SimpleITK as sitk

    return sitk.Resample(pet, mri, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


# ---- transforms on disk and in reports -------------------------------------------------------------
def read_transform(path: str | Path) -> sitk.Transform:
    """Read an ITK transform file (.tfm/.txt/.h5) that maps MRI points to PET points."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise UnreadableInputError(f"{path}: the --transform file does not exist; check the path.")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise UnreadableInputError(
            f"{path}: the --transform file is not a readable ITK transform; give a .tfm written by "
            "--save-transform (or by ITK/SimpleITK)."
        ) from exc
    if transform.GetDimension() != 3:
        raise InvalidInputError(f"{path}: the --transform is {transform.GetDimension()}-D; a 3-D transform is needed.")
    return _single(transform)


def write_transform(transform: sitk.Transform, path: str | Path) -> None:
    """Write ``transform`` as an ITK text transform (``sitk.ReadTransform`` gives it back)."""
    import SimpleITK as sitk

    sitk.WriteTransform(transform, str(path))


def transform_matrix(transform: sitk.Transform) -> np.ndarray | None:
    """The 4x4 homogeneous matrix of a linear transform (MRI mm -> PET mm), or None if non-linear."""
    probe = np.vstack([np.zeros(3), np.eye(3)])
    mapped = np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in probe])
    offset = mapped[0]
    matrix = (mapped[1:] - offset).T
    check = np.array([10.0, -20.0, 30.0])
    if not np.allclose(matrix @ check + offset, transform.TransformPoint(tuple(check)), atol=1e-6):
        return None
    homogeneous = np.eye(4)
    homogeneous[:3, :3] = matrix
    homogeneous[:3, 3] = offset
    return homogeneous


def describe_transform(transform: sitk.Transform) -> dict[str, Any]:
    """Type, ITK parameters and (when linear) the 4x4 matrix of a transform, JSON-ready."""
    described: dict[str, Any] = {
        "type": transform.GetName(),
        "maps": "MRI physical points (LPS mm) to PET physical points",
        "parameters": [float(p) for p in transform.GetParameters()],
        "fixed_parameters": [float(p) for p in transform.GetFixedParameters()],
    }
    matrix = transform_matrix(transform)
    if matrix is not None:
        described["matrix"] = matrix.round(9).tolist()
        rotation = matrix[:3, :3]
        if np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6):
            angle = math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))
            described["rotation_deg"] = round(angle, 4)
        described["translation_mm"] = matrix[:3, 3].round(4).tolist()
    return described
