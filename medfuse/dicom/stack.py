"""Stack analysis: do a series' slices form one complete, unsheared 3-D volume, and on what grid?

Slices are ordered by their position along the slice normal (never by file name). A missing slice
(a gap of :data:`MISSING_SLICE_RATIO` times the median spacing or more), spacing that varies by
more than :data:`UNEVEN_TOLERANCE` of the median, mixed orientations, sizes or pixel spacings,
several slices at one position or a gantry tilt is reported in words naming the slices concerned.
Spacing that varies by less (a whole-body PET stitched from overlapping bed positions: 3.27 mm
apart except 3.19 mm at a junction) is accepted: the stack then records each slice's depth and the
regular grid it is resampled onto (:func:`regular_depths`), and says where it deviates most.
Self-contained: :func:`analyse_stack` takes slice records and returns the grid they form, so the
rules can change here alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medfuse.dicom.records import SliceRecord

MIN_SLICES = 3
#: Slice gaps may deviate from the series' spacing by this fraction (plus an absolute 0.01 mm).
SPACING_TOLERANCE = 0.01
#: Gaps deviating by up to this fraction of the median are resampled onto a regular grid.
UNEVEN_TOLERANCE = 0.10
#: A gap this many times the median spacing, or more, means slices are missing.
MISSING_SLICE_RATIO = 1.5
_ABS_TOLERANCE_MM = 0.01
_ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Stack:
    """Slices sorted along their normal, and the grid they form.

    ``depths`` are the slices' positions along the normal from the first one (mm); ``uneven``
    describes the largest deviation from even spacing when it is beyond the tolerance of rounding
    (the volume must then be resampled onto :func:`regular_depths`), else ``None``.
    """

    slices: list[SliceRecord]
    origin: np.ndarray
    direction: np.ndarray
    spacing: tuple[float, float, float]
    depths: np.ndarray
    uneven: str | None = None


def regular_depths(stack: Stack) -> np.ndarray:
    """Depths (mm from the first slice) of the regular grid an uneven stack is resampled onto: from
    the first slice to the last, as many slices as the median spacing fits (the stack's spacing is
    the step between them)."""
    count = round(float(stack.depths[-1]) / stack.spacing[2]) + 1
    return np.arange(count) * stack.spacing[2]


def resample_slices(volume: np.ndarray, stack: Stack) -> np.ndarray:
    """A (z, y, x) volume on the stack's slices, linearly interpolated onto :func:`regular_depths`."""
    targets = regular_depths(stack)
    upper = np.clip(np.searchsorted(stack.depths, targets, side="right"), 1, len(stack.depths) - 1)
    lower = upper - 1
    weight = (targets - stack.depths[lower]) / (stack.depths[upper] - stack.depths[lower])
    weight = np.clip(weight, 0.0, 1.0)[:, None, None].astype(np.float32)
    return volume[lower] * (1.0 - weight) + volume[upper] * weight


def _orthonormal(orientation: tuple[float, ...]) -> np.ndarray | None:
    """Columns (row, column, normal) of the direction matrix, or ``None`` for an invalid orientation."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        return None
    row = row / np.linalg.norm(row)
    column = column - (column @ row) * row
    column = column / np.linalg.norm(column)
    return np.column_stack([row, column, np.cross(row, column)])


def _where(record: SliceRecord) -> str:
    x, y, z = record.position or (math.nan,) * 3
    frame = f" frame {record.frame + 1}" if record.frame is not None else ""
    return f"({x:.2f}, {y:.2f}, {z:.2f}) [{record.path.name}{frame}]"


def analyse_stack(records: list[SliceRecord]) -> tuple[Stack | None, str | None]:
    """Sort the slices along their normal and check they form a complete, even, unsheared stack.

    Returns the stack, or ``None`` and the problem in words (naming the slices concerned).
    """
    if not records:
        return None, "has no image slices"
    for keyword, attribute in (
        ("ImagePositionPatient", "position"),
        ("ImageOrientationPatient", "orientation"),
        ("PixelSpacing", "pixel_spacing"),
    ):
        lacking = next((r for r in records if getattr(r, attribute) is None), None)
        if lacking is not None:
            frame = f" frame {lacking.frame + 1}" if lacking.frame is not None else ""
            return None, f"lacks a valid {keyword} ({lacking.path.name}{frame})"
    first = records[0]
    if any((r.rows, r.columns) != (first.rows, first.columns) for r in records):
        sizes = sorted({f"{r.columns}x{r.rows}" for r in records})
        return None, f"mixes image sizes ({', '.join(sizes)})"
    orientations = np.array([r.orientation for r in records])
    if np.abs(orientations - orientations[0]).max() > _ORIENTATION_TOLERANCE:
        count = len({tuple(np.round(o, 3)) for o in orientations})
        return None, f"mixes {count} slice orientations (a localizer or several stacks)"
    spacings = np.array([r.pixel_spacing for r in records])
    if np.abs(spacings - spacings[0]).max() > 1e-4 * max(spacings[0].max(), 1.0):
        return None, "mixes pixel spacings"
    if spacings[0].min() <= 0:
        return None, f"has a non-positive PixelSpacing {list(spacings[0])}"
    if len(records) < MIN_SLICES:
        return None, f"has only {len(records)} slice(s), not a 3-D volume"
    direction = _orthonormal(first.orientation)  # type: ignore[arg-type]
    if direction is None:
        return None, f"has an invalid ImageOrientationPatient {list(first.orientation or ())}"
    positions = np.array([r.position for r in records])
    depth = positions @ direction[:, 2]
    order = np.argsort(depth, kind="stable")
    ordered = [records[i] for i in order]
    positions, depth = positions[order], depth[order]
    gaps = np.diff(depth)
    tolerance = _ABS_TOLERANCE_MM + SPACING_TOLERANCE * float(np.median(gaps))
    if gaps.min() <= tolerance:
        k = int(np.argmin(gaps))
        return None, (
            f"holds several slices at one position, {_where(ordered[k])} and {_where(ordered[k + 1])} "
            "(a dynamic, multi-echo or multi-stack series)"
        )
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ direction[:, 2], direction[:, 2])
    if np.linalg.norm(in_plane, axis=1).max() > tolerance:
        k = int(np.argmax(np.linalg.norm(in_plane, axis=1)))
        return None, f"is not stacked along the slice normal (gantry tilt or shear), see {_where(ordered[k])}"
    spacing = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - spacing)))
    deviation = float(gaps[worst] - spacing)
    between = f"between the slices at {_where(ordered[worst])} and {_where(ordered[worst + 1])}"
    uneven = None
    if abs(deviation) > tolerance:
        ratio = gaps[worst] / spacing
        if ratio >= MISSING_SLICE_RATIO or abs(deviation) > UNEVEN_TOLERANCE * spacing:
            missing = max(round(ratio) - 1, 1)
            hint = f"{missing} missing slice{'s' if missing > 1 else ''}" if ratio >= MISSING_SLICE_RATIO else None
            return None, (
                f"has a gap of {gaps[worst]:.3f} mm {between} where the others are {spacing:.3f} mm apart "
                f"({hint or 'uneven slice spacing, beyond ' + format(UNEVEN_TOLERANCE, '.0%') + ' of the median'})"
            )
        uneven = (
            f"slice spacing varies: a gap of {gaps[worst]:.3f} mm {between}, {abs(deviation):.3f} mm "
            f"({abs(deviation) / spacing:.1%}) from the median {spacing:.3f} mm"
        )
    extent = float(depth[-1] - depth[0])
    step = extent / round(extent / spacing) if uneven else extent / (len(depth) - 1)
    pixel_spacing = ordered[0].pixel_spacing or (1.0, 1.0)
    return (
        Stack(
            slices=ordered,
            origin=positions[0],
            direction=direction,
            spacing=(float(pixel_spacing[1]), float(pixel_spacing[0]), step),
            depths=depth - depth[0],
            uneven=uneven,
        ),
        None,
    )
