"""The metric around a result: which directions the images determine, and how well.

Everything here works in *displacement units*: a change of the six rigid parameters is measured by
how far it moves the MRI's foreground (RMS, mm), so rotations and translations compare fairly.

* **Sampled metric.** Mutual information of :data:`MODEL_SAMPLES` fixed random points of the MRI's
  foreground (4 mm level, each at a random place inside its voxel) with the PET at the points they
  map to, from a 64 × 64 joint histogram with linear (Parzen) binning. It is cheap (numpy, no
  registration object per call) and smooth, so finite differences of it are meaningful.
* **Local model.** Central differences with steps of :data:`STEP_MM` give the metric's gradient and
  Hessian around the result. Its eigenvectors are the directions the pose can move in; the
  eigenvalues say how sharply the images pin each down.
* **Flat directions.** A direction with less than :data:`FLAT_CURVATURE_RATIO` (1/20) of the largest
  curvature (a limb's long axis, the roll about it: a cylinder looks the same shifted along itself)
  carries no information the header lacks. Measured on the phantoms: 0.07–0.2 for the synthetic
  heads' least-pinned direction, 0.36 for the real head of ``examples/``, 0.005–0.035 along a thigh;
  steps of one 4 mm voxel keep the estimate steady.
* **Spread.** :data:`SUBSETS` disjoint subsets of the points each give their own optimum (one
  Newton step from the result along the determined directions); the spread is their RMS distance
  from their mean. Noise, weak contrast and a shallow metric all make the subsets disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medfuse.registration.grids import physical_points
from medfuse.registration.optimise import SAMPLING_SEED, Level
from medfuse.registration.transforms import transform_matrix

if TYPE_CHECKING:
    import SimpleITK as sitk

#: Finite-difference step, mm of RMS displacement of the MRI's foreground.
STEP_MM = 4.0
#: Points of the MRI's foreground (4 mm level) the local model is computed on.
MODEL_SAMPLES = 4_000
#: Disjoint point subsets whose optima measure the spread.
SUBSETS = 4
#: Directions with less than this fraction of the largest curvature are "flat".
FLAT_CURVATURE_RATIO = 0.05
#: Restarts along a flat translation that no credible header pose guides: this many steps each way, this long.
SCAN_STEPS = 6
SCAN_STEP_MM = 8.0
BINS = 64
#: The physical axes (ITK/DICOM LPS: x to the patient's left, y to the back, z to the head) in a patient's words.
_AXES = ("left–right (x)", "front–back (y)", "head–foot (z)")


class SampledMetric:
    """Negative mutual information (lower is better) of fixed MRI points with the PET they map to."""

    def __init__(self, level: Level, count: int = MODEL_SAMPLES, seed: int = SAMPLING_SEED) -> None:
        import SimpleITK as sitk
        from scipy import ndimage

        rng = np.random.default_rng(seed)
        voxels = np.argwhere(sitk.GetArrayViewFromImage(level.mask) > 0)[:, ::-1]  # x-y-z indices
        chosen = rng.permutation(len(voxels))[:count]
        indices = voxels[chosen] + rng.uniform(-0.5, 0.5, (len(chosen), 3))
        fixed = sitk.GetArrayViewFromImage(level.fixed)
        fixed_values = ndimage.map_coordinates(fixed, indices[:, ::-1].T, order=1, mode="nearest")
        self.points = physical_points(level.fixed, indices)
        self.fixed_bins = self._scaled(fixed_values, float(fixed.min()), float(fixed.max()))
        geometry = np.array(level.moving.GetDirection()).reshape(3, 3) * np.array(level.moving.GetSpacing())
        self.to_index = np.linalg.inv(geometry)
        self.moving_origin = np.array(level.moving.GetOrigin())
        self.moving = sitk.GetArrayFromImage(level.moving)
        self.moving_range = (float(self.moving.min()), float(self.moving.max()))
        self.upper = np.array(level.moving.GetSize(), float) - 1.0

    @staticmethod
    def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
        fraction = (np.asarray(values, np.float64) - low) / max(high - low, 1e-12)
        return np.clip(fraction, 0.0, 1.0) * (BINS - 1.001)

    def value(self, transform: sitk.Transform, subset: slice | np.ndarray = slice(None)) -> float | None:
        """The metric at ``transform`` over the points of ``subset`` (``None`` if most miss the PET)."""
        from scipy import ndimage

        matrix = transform_matrix(transform)
        if matrix is None:
            return None
        points = self.points[subset]
        mapped = points @ matrix[:3, :3].T + matrix[:3, 3]
        indices = (mapped - self.moving_origin) @ self.to_index.T
        inside = np.all((indices >= 0) & (indices <= self.upper), axis=1)
        if np.count_nonzero(inside) < len(points) / 2:
            return None
        moving_values = ndimage.map_coordinates(self.moving, indices[inside][:, ::-1].T, order=1, mode="nearest")
        return -_mutual_information(self.fixed_bins[subset][inside], self._scaled(moving_values, *self.moving_range))


def _mutual_information(first: np.ndarray, second: np.ndarray) -> float:
    """Mutual information (nats) of two sets of continuous bin positions, with linear binning."""
    low_a, low_b = np.floor(first).astype(int), np.floor(second).astype(int)
    weight_a, weight_b = first - low_a, second - low_b
    joint = np.zeros(BINS * BINS)
    for step_a, share_a in ((0, 1.0 - weight_a), (1, weight_a)):
        for step_b, share_b in ((0, 1.0 - weight_b), (1, weight_b)):
            joint += np.bincount((low_a + step_a) * BINS + low_b + step_b, share_a * share_b, BINS * BINS)
    joint = joint.reshape(BINS, BINS) / max(joint.sum(), 1e-12)
    outer = joint.sum(axis=1, keepdims=True) @ joint.sum(axis=0, keepdims=True)
    used = joint > 0
    return float(np.sum(joint[used] * np.log(joint[used] / outer[used])))


@dataclass
class LocalModel:
    """The metric around a rigid pose: value, gradient and Hessian per mm of displacement."""

    transform: sitk.Euler3DTransform
    units: np.ndarray  # parameter change that moves the foreground by 1 mm (RMS), per parameter
    value: float
    gradient: np.ndarray
    hessian: np.ndarray

    def moved(self, displacement: np.ndarray) -> sitk.Euler3DTransform:
        """The pose moved by ``displacement`` (six values in mm of displacement)."""
        import SimpleITK as sitk

        moved = sitk.Euler3DTransform(self.transform)
        parameters = np.array(self.transform.GetParameters()) + np.asarray(displacement) * self.units
        moved.SetParameters(tuple(float(v) for v in parameters))
        return moved

    def displacement_to(self, transform: sitk.Euler3DTransform) -> np.ndarray:
        """The displacement (mm units) from this pose to ``transform`` (same centre of rotation)."""
        return (np.array(transform.GetParameters()) - np.array(self.transform.GetParameters())) / self.units

    def modes(self) -> tuple[np.ndarray, np.ndarray]:
        """Curvatures (ascending) and directions (columns) of the Hessian."""
        return np.linalg.eigh((self.hessian + self.hessian.T) / 2.0)

    def flat(self) -> np.ndarray:
        """The directions (columns) that are flat (see :data:`FLAT_CURVATURE_RATIO`)."""
        curvatures, directions = self.modes()
        return directions[:, curvatures < FLAT_CURVATURE_RATIO * max(float(curvatures.max()), 0.0)]


def _differences(
    metric: SampledMetric, model: LocalModel, subset: slice | np.ndarray, with_hessian: bool
) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Value, gradient and (``with_hessian``) Hessian of the metric by central differences."""
    basis = np.eye(6) * STEP_MM
    cache: dict[tuple[float, ...], float | None] = {}

    def at(displacement: np.ndarray) -> float:
        key = tuple(np.round(displacement, 9))
        if key not in cache:
            cache[key] = metric.value(model.moved(displacement), subset)
        found = cache[key]
        if found is None:
            raise LookupError
        return found

    try:
        centre = at(np.zeros(6))
        gradient = np.array([(at(basis[i]) - at(-basis[i])) / (2.0 * STEP_MM) for i in range(6)])
        hessian = np.zeros((6, 6))
        if with_hessian:
            for i in range(6):
                hessian[i, i] = (at(basis[i]) - 2.0 * centre + at(-basis[i])) / STEP_MM**2
                for j in range(i + 1, 6):
                    plus, minus = basis[i] + basis[j], basis[i] - basis[j]
                    mixed = at(plus) - at(minus) - at(-minus) + at(-plus)
                    hessian[i, j] = hessian[j, i] = mixed / (4.0 * STEP_MM**2)
    except LookupError:
        return None
    return centre, gradient, hessian


def local_model(metric: SampledMetric, transform: sitk.Transform, scales: list[float]) -> LocalModel | None:
    """The local model of ``metric`` around a rigid ``transform`` (``None`` for other transforms, or
    when the probes leave the PET)."""
    import SimpleITK as sitk

    if transform.GetName() != "Euler3DTransform":
        return None
    model = LocalModel(
        sitk.Euler3DTransform(transform), 1.0 / np.sqrt(np.array(scales, float)), 0.0, np.zeros(6), np.zeros((6, 6))
    )
    found = _differences(metric, model, slice(None), with_hessian=True)
    if found is None:
        return None
    model.value, model.gradient, model.hessian = found
    return model


def is_translation(direction: np.ndarray) -> bool:
    """Whether a direction of the six rigid parameters is mostly a translation (else a rotation)."""
    return bool(np.abs(direction[3:]).max() >= np.abs(direction[:3]).max())


def describe_direction(direction: np.ndarray) -> str:
    """A direction of the six rigid parameters in a patient's words, by its largest translation or
    rotation part: "the head–foot (z) position", "the rotation about the head–foot (z) axis"."""
    rotation, translation = np.abs(direction[:3]), np.abs(direction[3:])
    if is_translation(direction):
        return f"the {_AXES[int(np.argmax(translation))]} position"
    return f"the rotation about the {_AXES[int(np.argmax(rotation))]} axis"


def subset_spread(metric: SampledMetric, model: LocalModel) -> float | None:
    """RMS distance (mm) of the subsets' optima from their mean (see the module docstring)."""
    curvatures, directions = model.modes()
    determined = curvatures >= FLAT_CURVATURE_RATIO * max(float(curvatures.max()), 0.0)
    if not determined.any() or curvatures[determined].min() <= 0:
        return None
    inverse = (directions[:, determined] / curvatures[determined]) @ directions[:, determined].T
    optima = []
    for subset in np.array_split(np.arange(len(metric.points)), SUBSETS):
        found = _differences(metric, model, subset, with_hessian=False)
        if found is None:
            return None
        optima.append(-inverse @ found[1])
    spread = np.array(optima) - np.mean(optima, axis=0)
    return float(np.sqrt(np.mean(np.sum(spread**2, axis=1))))
