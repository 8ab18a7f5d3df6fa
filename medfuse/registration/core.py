"""``register()``: candidate starts, multi-level optimisation, header-pose check and confidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medfuse.console import warn
from medfuse.errors import ProcessingError
from medfuse.registration import assess, local
from medfuse.registration.grids import check_extent
from medfuse.registration.masks import MIN_OVERLAP, mask_points, overlap
from medfuse.registration.optimise import METRIC_NAME, Level, optimise, parameter_scales, pyramid
from medfuse.registration.search import candidate_starts
from medfuse.registration.transforms import rotation_angle_deg, transform_matrix

if TYPE_CHECKING:
    import SimpleITK as sitk

Mode = Literal["rigid", "affine"]

#: What a doubtful registration asks the user to look at.
CHECK_ALIGNMENT = "check in the fused result (or the QC page, --qc) that the PET uptake lines up with the anatomy"
#: A relative metric gain below this, for a move of more than two PET voxels, is "little gain".
LITTLE_GAIN = 0.02
#: The header pose guides directions the images do not determine only when it lies within this
#: distance (RMS over the foreground) of the result: the same patient position, not another frame.
HEADER_GUIDE_MM = 50.0
#: Candidate starts optimised on the coarsest level before the best one goes on to the finer levels.
STARTS_REFINED = 8
#: ... if their coarse metric is within this fraction of the best one's.
REFINE_MARGIN = 0.25


@dataclass
class RegistrationResult:
    """The PET → MRI transform (MRI points to PET points), how it was found and how sure it is."""

    transform: sitk.Transform
    metric: float
    mode: str
    initialisation: str
    iterations: int = 0
    stop_condition: str = ""
    overlap: float = 1.0
    metric_name: str = METRIC_NAME
    metric_header: float | None = None
    moved_mm: float = 0.0
    rotation_deg: float = 0.0
    confidence: assess.Confidence = field(default_factory=assess.Confidence)
    edges_header: float | None = None
    edges_value: float | None = None
    kept_header: bool = False
    anchored: list[str] = field(default_factory=list)
    unanchored: list[str] = field(default_factory=list)
    spread_mm: float | None = None
    warnings: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The report's detail keys (see notes/CONTRACTS.md, ``registration``)."""
        return {
            "metric": self.metric_name,
            "metric_header": self.metric_header,
            "metric_value": self.metric,
            "moved_mm": round(self.moved_mm, 3),
            "rotation_deg": round(self.rotation_deg, 3),
            "overlap": round(self.overlap, 4),
            "confidence": self.confidence.record(),
            "edge_agreement_header": self.edges_header,
            "edge_agreement_value": self.edges_value,
            "kept_header_pose": self.kept_header,
            "kept_from_header": self.anchored,
            "undetermined": self.unanchored,
            "mode": self.mode,
            "initialisation": self.initialisation,
            "iterations_last_level": self.iterations,
            "stop_condition": self.stop_condition,
        }


def _distinct(starts: list[Any], within_mm: float) -> list[Any]:
    """The starts whose translations differ from every better one by at least ``within_mm``."""
    kept: list[Any] = []
    for start in starts:
        offset = np.array(start.transform.GetTranslation())
        if all(np.linalg.norm(offset - np.array(other.transform.GetTranslation())) >= within_mm for other in kept):
            kept.append(start)
    return kept


def register(
    fixed_mri: sitk.Image, moving_pet: sitk.Image, mode: Mode = "rigid", pet_name: str | None = None
) -> RegistrationResult:
    """Register the PET to the MRI; the transform maps MRI physical points to PET physical points.

    Deterministic: the same images give the same transform on every run and at any thread count.
    A result no better than the header pose by the metric is replaced by the header pose; an
    uncertain result, one that leaves the bodies barely overlapping or one that moved far for little
    gain is returned with a warning (also kept in ``warnings``), which starts with ``pet_name`` (the
    PET's path as given) when there is one.
    """
    import SimpleITK as sitk

    if mode not in ("rigid", "affine"):
        raise ValueError(f"mode must be 'rigid' or 'affine', not {mode!r}")
    if moving_pet.GetPixelID() != sitk.sitkFloat32:  # float32 images stay the same objects (shared grids)
        moving_pet = sitk.Cast(moving_pet, sitk.sitkFloat32)
    if fixed_mri.GetPixelID() != sitk.sitkFloat32:
        fixed_mri = sitk.Cast(fixed_mri, sitk.sitkFloat32)
    check_extent(fixed_mri, "MRI")
    check_extent(moving_pet, "PET")
    levels = pyramid(fixed_mri, moving_pet)
    coarse, middle = levels[0], levels[-2] if len(levels) > 1 else levels[-1]
    sampled = local.SampledMetric(middle)
    try:
        starts = candidate_starts(coarse, moving_pet)
        scales = parameter_scales(middle.mask, starts[0].transform)
        best = starts[0].metric
        promising = [start for start in starts if start.metric <= best + REFINE_MARGIN * abs(best)]
        chosen = _distinct(promising, coarse.spacing)[:STARTS_REFINED]
        refined = []
        for start in chosen:
            transform, _ = optimise(coarse, start.transform, scales)
            score = _score(middle, transform) if len(chosen) > 1 else 0.0  # one start needs no judging
            refined.append((score, start.name, transform))
        _, initialisation, transform = min(refined, key=lambda found: found[0])
        transform, method = _refine(levels, transform, scales)
        analysis = _analyse(middle, sampled, transform, scales)
        transform = analysis.transform
        if analysis.unanchored:
            transform, method = _scan(levels, middle, analysis, scales, method)
        if mode == "affine":
            rigid = sitk.Euler3DTransform(transform)
            transform = sitk.AffineTransform(rigid.GetMatrix(), rigid.GetTranslation(), rigid.GetCenter())
            affine_scales = parameter_scales(middle.mask, transform)
            for level in levels[-2:]:
                transform, method = optimise(level, transform, affine_scales)
    except RuntimeError as exc:
        raise ProcessingError(
            f"registration of the PET to the MRI failed ({str(exc).strip().splitlines()[-1][:160]}); "
            "check that both images show the same part of the body, or pass --register none or --transform."
        ) from exc
    result = _assessed(levels, middle, transform, method, mode, initialisation, analysis)
    for text in result.warnings:
        warn(f"{pet_name}: {text}." if pet_name else text[0].upper() + text[1:] + ".")
    return result


def _score(level: Level, transform: sitk.Transform) -> float:
    """The metric over all of ``level``'s sampled voxels (infinite when they miss the PET)."""
    found = level.evaluate(transform)
    return np.inf if found is None else found


def _refine(
    levels: list[Level], transform: sitk.Transform, scales: list[float]
) -> tuple[sitk.Transform, sitk.ImageRegistrationMethod]:
    """Optimise from ``transform`` on every level finer than the coarsest (or on the only one)."""
    for level in levels[1:] or levels:
        transform, method = optimise(level, transform, scales)
    return transform, method


@dataclass
class _Analysis:
    """The rigid result after the header pose has guided the directions the images do not determine."""

    transform: sitk.Transform
    header: sitk.Euler3DTransform
    metric_header: float | None
    header_overlap: float
    model: local.LocalModel | None = None
    anchored: list[str] = field(default_factory=list)
    unanchored: list[str] = field(default_factory=list)
    spread_mm: float | None = None


def _analyse(middle: Level, sampled: local.SampledMetric, transform: sitk.Transform, scales: list[float]) -> _Analysis:
    """Find the flat directions around ``transform``, keep them at a credible header pose, measure the spread."""
    import SimpleITK as sitk

    header = sitk.Euler3DTransform()
    header.SetCenter(transform.GetFixedParameters()[:3])
    masks = (middle.mri_foreground, middle.pet_foreground)
    analysis = _Analysis(
        transform, header, middle.evaluate(header), overlap(middle.fixed, middle.moving, header, masks)
    )
    model = local.local_model(sampled, transform, scales)
    if model is None:
        return analysis
    analysis.model = model
    flat = model.flat()
    names = [local.describe_direction(direction) for direction in flat.T]
    to_header = model.displacement_to(header)
    credible = (
        analysis.metric_header is not None
        and analysis.header_overlap >= MIN_OVERLAP
        and float(np.linalg.norm(to_header)) <= HEADER_GUIDE_MM
    )
    if flat.size and credible:
        analysis.transform = model.moved(flat @ (flat.T @ to_header))
        analysis.anchored = names
    else:
        analysis.unanchored = names
    analysis.spread_mm = local.subset_spread(sampled, model)
    return analysis


def _scan(
    levels: list[Level],
    middle: Level,
    analysis: _Analysis,
    scales: list[float],
    method: sitk.ImageRegistrationMethod,
) -> tuple[sitk.Transform, sitk.ImageRegistrationMethod]:
    """Restart from poses along each flat translation the header cannot guide (±``local.SCAN_STEPS``
    steps of ``local.SCAN_STEP_MM``), each optimised on the two finer levels; the best by the finest
    level's metric (the same voxel samples for every restart) wins. Only the finest level sees the
    detail (fat planes, vessels, a tumour's rim) that tells positions along a limb apart."""
    model = analysis.model
    if model is None or len(levels) < 2:
        return analysis.transform, method
    best, best_method = analysis.transform, method
    best_score = float(method.GetMetricValue())
    for direction in model.flat().T:
        if not local.is_translation(direction):
            continue
        for step in range(-local.SCAN_STEPS, local.SCAN_STEPS + 1):
            if step == 0:
                continue
            restarted: sitk.Transform = model.moved(direction * step * local.SCAN_STEP_MM)
            for level in levels[levels.index(middle) :]:
                restarted, finished = optimise(level, restarted, scales)
            if float(finished.GetMetricValue()) < best_score:
                best, best_method, best_score = restarted, finished, float(finished.GetMetricValue())
    return best, best_method


def _assessed(
    levels: list[Level],
    middle: Level,
    transform: sitk.Transform,
    method: sitk.ImageRegistrationMethod,
    mode: str,
    initialisation: str,
    analysis: _Analysis,
) -> RegistrationResult:
    """Check the result against the header pose, measure how sure it is, and say in ``warnings`` when it
    is doubtful."""
    masks = (middle.mri_foreground, middle.pet_foreground)
    header, metric_header = analysis.header, analysis.metric_header
    anchored, unanchored, spread = analysis.anchored, analysis.unanchored, analysis.spread_mm
    edges = assess.EdgeAgreement(levels[0])
    metric_value = middle.evaluate(transform)
    result = RegistrationResult(
        transform=transform,
        metric=float(metric_value if metric_value is not None else method.GetMetricValue()),
        mode=mode,
        initialisation=initialisation,
        iterations=int(method.GetOptimizerIteration()),
        stop_condition=method.GetOptimizerStopConditionDescription(),
        metric_header=metric_header,
        edges_header=edges(header),
        edges_value=edges(transform),
        anchored=anchored,
        unanchored=unanchored,
        spread_mm=spread,
    )
    if metric_header is not None and result.metric >= metric_header:
        result.transform, result.metric, result.edges_value = header, metric_header, result.edges_header
        result.kept_header, result.anchored = True, []
        result.warnings.append(
            "registration did not improve on the scanner coordinates by the metric "
            f"({result.metric:.4f} against {metric_header:.4f}), so the header pose was kept: the PET stays where "
            "its header puts it"
        )
    foreground = mask_points(middle.mri_foreground)
    centre = foreground.mean(axis=0) if len(foreground) else np.zeros(3)
    result.moved_mm = float(np.linalg.norm(np.array(result.transform.TransformPoint(tuple(centre))) - centre))
    matrix = transform_matrix(result.transform)
    result.rotation_deg = rotation_angle_deg(matrix) if matrix is not None else 0.0
    result.overlap = overlap(middle.fixed, middle.moving, result.transform, masks)
    pet_voxel = max(levels[-1].moving.GetSpacing()) if min(levels[-1].moving.GetSpacing()) > 0 else 1.0
    result.confidence = assess.confidence(result, pet_voxel)
    gain = None if metric_header is None else (metric_header - result.metric) / max(abs(metric_header), 1e-12)
    if result.overlap < MIN_OVERLAP:
        result.warnings.append(
            f"after registration the PET and MRI barely overlap ({result.overlap:.0%} of the smaller body); "
            "check that the inputs show the same patient and region"
        )
    elif result.confidence.level == "low":
        result.warnings.append(f"the registration is uncertain: {result.confidence.reason}; {CHECK_ALIGNMENT}")
    elif gain is not None and result.moved_mm > 2.0 * pet_voxel and gain < LITTLE_GAIN:
        result.warnings.append(
            f"registration moved the PET {result.moved_mm:.1f} mm from where its header puts it (the header pose) "
            f"for only {gain:.1%} better mutual information; {CHECK_ALIGNMENT}, or keep the header pose with "
            "--register none"
        )
    elif result.anchored:
        result.warnings.append(
            f"the registration is uncertain in {' and '.join(result.anchored)}: the images do not determine it, "
            f"so the PET keeps its header pose (scanner coordinates) there; {CHECK_ALIGNMENT} in that direction"
        )
    return result
