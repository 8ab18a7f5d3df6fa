"""PET → MRI registration and resampling (SimpleITK), deterministic across runs and thread counts.

Convention (the one ``sitk.Resample(pet, mri, T)`` takes): a transform maps MRI physical points to
PET physical points, so the PET value shown at MRI point ``x`` is ``pet(T(x))``.

How registration works, and why (one module per step):

* **Pyramid** (:mod:`.optimise`, :mod:`.grids`). The MRI and PET are resampled (with anti-aliasing)
  to isotropic grids of 8, 4 and 2 mm (a PET coarser than a level stays as it is). PET voxels are
  2–5 mm with ~5 mm resolution, so finer MRI detail adds cost, not accuracy. A field of view that
  cuts through the body keeps its edge values (no dark rim posing as the body's outline).
* **Foregrounds** (:mod:`.masks`): per modality, for a head, a trunk or limbs alike; the metric
  samples the MRI's foreground grown by 4 mm, so the body's outline counts. PET values are clipped
  at a few times its typical tissue level so that hot spots do not squeeze soft tissue into a few
  histogram bins.
* **Starts** (:mod:`.search`): the header pose (scanner coordinates), the foreground centroids and
  the image centres, plus, when the MRI is much shorter than the PET along an axis (a thigh in a
  whole-body PET), positions along that axis on each body part (both legs); the best few by the
  coarse metric are optimised on the coarsest level and the best of those goes on.
* **Optimisation** (:mod:`.optimise`): Mattes mutual information on a fixed number of randomly
  drawn foreground voxels per level (fixed seed), regular-step gradient descent whose parameter
  scales come from the body's own lever arms, each level starting with a smaller step. ``affine``
  refines the rigid result on the two finer levels.
* **Assessment** (:mod:`.assess`): the metric at the header pose and at the result (a result that
  is not better is replaced by the header pose), how far the MRI's foreground centre moved, the
  rotation, the overlap of the foregrounds, the agreement of edges at both poses, and the spread of
  restarts as a confidence level; doubtful results warn.
* **Placement** (:mod:`.placement`): whether to register at all (``--register auto``: not when
  both DICOM series share a FrameOfReferenceUID) and the report's ``registration`` record.
* **Determinism.** With more than one work unit ITK adds the metric derivative's partial sums in an
  order that varies between runs. The optimisation therefore runs as one work unit; its grids are
  small, so this costs little, and the filters that prepare them compute each voxel on its own.
"""

from medfuse.registration.assess import Confidence
from medfuse.registration.core import Mode, RegistrationResult, register
from medfuse.registration.grids import (
    LEVEL_SPACINGS_MM,
    WORK_SPACING_MM,
    check_work_grid,
    resample_to,
    shared_grids,
)
from medfuse.registration.masks import MIN_OVERLAP, foreground_mask, overlap_fraction
from medfuse.registration.placement import Placement, place_pet, shared_frame
from medfuse.registration.transforms import describe_transform, read_transform, transform_matrix, write_transform

__all__ = [
    "LEVEL_SPACINGS_MM",
    "MIN_OVERLAP",
    "WORK_SPACING_MM",
    "Confidence",
    "Mode",
    "Placement",
    "RegistrationResult",
    "check_work_grid",
    "describe_transform",
    "foreground_mask",
    "overlap_fraction",
    "place_pet",
    "read_transform",
    "register",
    "resample_to",
    "shared_frame",
    "shared_grids",
    "transform_matrix",
    "write_transform",
]
