"""Hotspot readout of a PET on its own grid: max, PERCIST peak and the hottest regions.

Pure numpy/scipy on a ``(z, y, x)`` array plus its geometry (:class:`Grid`); nothing is resampled,
so the values are the scanner's. Definitions (README, "Hotspots"):

* **Search volume**: the body. Voxels above :data:`BODY_FRACTION` of the 99th percentile of the
  positive voxels, holes filled slice by slice (lungs, bladder), pieces under :data:`MIN_PIECE_ML`
  dropped unless it is the largest (noise in the air); the first and last :data:`EDGE_MM` of the
  axial field of view (the grid's third axis) are left out, where PET noise is highest because the
  scanner's sensitivity falls off.
* **Max**: the hottest voxel of the search volume.
* **Peak** (PERCIST 1.0, Wahl et al. 2009): the highest mean in a sphere of :data:`PEAK_VOLUME_ML`
  (1 cm³, 12.4 mm across) centred on a voxel of a region, placed to maximise it. Every voxel counts
  with the fraction of it inside the sphere (sub-sampled 8 × 8 × 8), so the sphere is 1 cm³ on any
  grid (counting whole voxels whose centres fall inside gives 0.5 to 2 cm³ on coarse grids).
  On a grid so fine that the sphere would hold more than :data:`MAX_SPHERE_VOXELS` voxels (voxels
  under 0.32 mm: no clinical or preclinical PET; micrometre voxels from a wrong header), the peak is
  computed on blocks of voxels averaged to at least that size (:func:`peak_factors`), so the
  readout's memory and time stay bounded on any grid (:func:`readout_bytes`): the sphere is still
  1 cm³, centred on a block's middle voxel; it reads up to 0.5 % low (measured at 0.25–0.3 mm on
  lesions blurred by 4–6 mm FWHM: boundary blocks average their hotter inner and cooler outer voxels).
* **Regions** are found hottest first, as in a watershed by immersion: voxels are visited from the
  hottest down; one that touches (shares a face with) a region or its slope already found is part of
  that slope; one that does not is a new maximum, the seed of a region: the face-connected voxels at
  or above ``T = B + 0.41 × (max − B)`` not yet taken. That is the EANM 41 % threshold measured from
  the local background ``B`` rather than from 0, so a lesion in grey matter or liver does not spread
  into that tissue: ``B`` is the median of the body voxels 20–30 mm from the max that are below half
  of it (voxels above belong to the hot structure itself, e.g. inside the bladder); 0 where there are
  none, which gives the plain 41 % threshold. Two maxima whose valley stays above the hotter one's
  threshold also stay above the cooler one's (41 % of a smaller max), so by the same rule they are one
  region. A cooler
  region's peak sphere leaves out the voxels of hotter regions and their slopes (weights
  renormalised), so it never borrows a neighbour's uptake and a peak never exceeds its region's max.
  Regions are ranked by peak (PERCIST ranks lesions by SUVpeak); the top :data:`MAX_REGIONS` are
  reported.

The readout is the hottest uptake whatever its cause: brain, bladder, kidneys, heart or an injection
site are listed like lesions.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

THRESHOLD_FRACTION = 0.41
PEAK_VOLUME_ML = 1.0
MAX_REGIONS = 5
EDGE_MM = 10.0
BODY_FRACTION = 0.1
MIN_PIECE_ML = 2.0
BACKGROUND_SHELL_MM = (20.0, 30.0)
#: The background shell is sampled at least this far apart along each axis (every voxel of grids of
#: 1 mm or more; at most 80,000 samples on finer ones).
SHELL_STEP_MM = 1.0
#: Shell voxels at or above this fraction of the max belong to the hot structure, not its background.
BACKGROUND_BELOW = 0.5
#: Regions grown at most; in a noisy image the rest are noise blobs.
MAX_SEEDS = 100
#: Hottest body voxels visited (regions grow beyond them).
MAX_CANDIDATES = 500_000
#: Volumes above this many voxels get their body mask on a 2 × 2 × 2 coarser grid (speed).
_COARSE_ABOVE = 4_000_000
#: The peak sphere holds at most this many voxels of the grid it is computed on (voxels of 0.32 mm
#: or more); finer PET grids are averaged in blocks first.
MAX_SPHERE_VOXELS = 32768
_SUBSAMPLES = 8
#: Boxes × kernel sizes above this are correlated by FFT (about 5 × faster there).
_DIRECT_LIMIT = 2_000_000
_CHUNK = 4096
_FACES = ndimage.generate_binary_structure(3, 1)
_SLICE_FACES = np.array([np.zeros((3, 3)), ndimage.generate_binary_structure(2, 1), np.zeros((3, 3))], bool)
_FACE_STEPS = np.array([(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)])

#: Maps a PET point (LPS mm) to the MRI voxel (i, j, k) it falls in, or ``None`` outside the MRI.
PointToVoxel = Callable[[Sequence[float]], "list[int] | None"]


@dataclass(frozen=True)
class Grid:
    """Where a ``(z, y, x)`` array lies: ITK/DICOM geometry (LPS mm; spacing and index in x, y, z order)."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def point(self, index_zyx: Sequence[float]) -> list[float]:
        """The physical point (LPS mm) of a (possibly fractional) array index ``(z, y, x)``."""
        ijk = np.asarray(index_zyx, float)[::-1] * np.asarray(self.spacing, float)
        matrix = np.asarray(self.direction, float).reshape(3, 3)
        return [float(v) for v in np.asarray(self.origin, float) + matrix @ ijk]


@dataclass
class Region:
    """One hotspot: its voxels' statistics, the threshold that made it and where it lies (array indices)."""

    voxels: int
    volume_ml: float
    mean: float
    max: float
    max_index: tuple[int, int, int]
    peak: float
    peak_index: tuple[int, int, int]
    centroid: tuple[float, float, float]
    threshold: float
    background: float


@dataclass
class Readout:
    """Everything :func:`find_hotspots` measured, in array indices and image units."""

    max: float
    max_index: tuple[int, int, int]
    peak: float
    peak_index: tuple[int, int, int]
    regions: list[Region]
    body_voxels: int
    edge_slices: int
    sphere_ml: float
    seeds: int
    peak_factors: tuple[int, int, int] = (1, 1, 1)  # (z, y, x) voxels per block the peak was computed on


# ---- search volume ----------------------------------------------------------------------------------
def _edge_slices(slices: int, slice_mm: float) -> int:
    """Slices left out at each axial end: :data:`EDGE_MM`, never more than a quarter of the stack."""
    return min(math.ceil(EDGE_MM / slice_mm - 1e-9), slices // 4)


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the holes of every slice filled (background not connected to the slice border)."""
    holes, count = ndimage.label(~mask, structure=_SLICE_FACES)
    if not count:
        return mask
    border = np.zeros(mask.shape, bool)
    border[:, [0, -1], :] = True
    border[:, :, [0, -1]] = True
    enclosed = np.ones(count + 1, bool)
    enclosed[0] = False
    enclosed[np.unique(holes[border])] = False
    return mask | enclosed[holes]


def _coarse_max(values: np.ndarray, factor: int) -> np.ndarray:
    """Block maximum over ``factor``³ blocks of the even-sized part of ``values`` (NaN counts as low)."""
    even = tuple(slice(0, n - n % factor) for n in values.shape)
    part = values[even]
    steps = itertools.product(range(factor), repeat=3)
    return functools.reduce(np.fmax, (part[a::factor, b::factor, c::factor] for a, b, c in steps))


def body_mask(values: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, int]:
    """The search volume (see the module docstring) and how many slices each axial end lost."""
    sample = values.ravel()[:: max(1, values.size // 1_000_000)]
    positive = sample[sample > 0]  # NaN compares False
    if positive.size == 0:
        return np.zeros(values.shape, bool), 0
    level = BODY_FRACTION * float(np.percentile(positive, 99))
    factor = 2 if values.size > _COARSE_ABOVE and min(values.shape) >= 4 else 1
    mask = _fill_slices((_coarse_max(values, factor) if factor > 1 else values) > level)
    pieces, count = ndimage.label(mask, structure=_FACES)
    if count > 1:
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        keep = sizes * float(np.prod(spacing)) * factor**3 / 1000.0 >= MIN_PIECE_ML
        keep[int(np.argmax(sizes))] = True
        keep[0] = False
        mask = keep[pieces]
    if factor > 1:  # back to the full grid; an odd last slice takes its neighbour's mask
        for axis in range(3):
            mask = np.repeat(mask, factor, axis=axis)
        mask = np.pad(mask, [(0, n - m) for n, m in zip(values.shape, mask.shape, strict=True)], mode="edge")
    mask &= np.isfinite(values)
    edge = _edge_slices(values.shape[0], float(spacing[2]))
    if edge:
        mask[:edge] = False
        mask[-edge:] = False
    return mask, edge


# ---- the peak sphere --------------------------------------------------------------------------------
def sphere_fractions(spacing: Sequence[float], volume_ml: float = PEAK_VOLUME_ML) -> np.ndarray:
    """Each voxel's fraction (z, y, x) inside a sphere of ``volume_ml`` centred on the middle voxel.

    Sub-sampled 8 × 8 × 8 per voxel, one plane of the kernel at a time (memory: one plane's samples).
    """
    radius = _radius_mm(volume_ml)
    spacing_zyx = np.asarray(spacing, float)[::-1]
    half = sphere_half_widths(spacing, volume_ml)
    sub = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5
    z, y, x = ((np.arange(-h, h + 1)[:, None] + sub[None, :]) * s for h, s in zip(half, spacing_zyx, strict=True))
    across = (y**2)[:, :, None, None] + (x**2)[None, None, :, :]  # (y voxel, y sample, x voxel, x sample)
    fractions = np.empty(tuple(2 * h + 1 for h in half))
    for plane, depths in enumerate(z):
        inside = (depths[:, None, None, None, None] ** 2 + across[None]) <= radius**2
        fractions[plane] = inside.mean(axis=(0, 2, 4))
    return fractions


def peak_factors(spacing: Sequence[float]) -> tuple[int, int, int]:
    """Block size (z, y, x voxels) the peak is computed on: 1 unless the 1 cm³ sphere would hold more
    than :data:`MAX_SPHERE_VOXELS` voxels; then every axis finer than 0.32 mm is averaged in blocks at
    least that long (e.g. 0.25 mm voxels in 2-voxel blocks: 0.5 mm)."""
    if PEAK_VOLUME_ML * 1000.0 / math.prod(spacing) <= MAX_SPHERE_VOXELS:
        return (1, 1, 1)
    edge = (PEAK_VOLUME_ML * 1000.0 / MAX_SPHERE_VOXELS) ** (1.0 / 3.0)
    z, y, x = (max(1, math.ceil(edge / s - 1e-9)) for s in spacing[::-1])
    return z, y, x


def readout_bytes(shape: Sequence[int], spacing: Sequence[float]) -> int:
    """An upper estimate of the memory :func:`find_hotspots` allocates for a ``(z, y, x)`` PET of voxel
    ``spacing`` (x, y, z mm): 40 bytes a voxel (masks, candidate lists, a region's box) plus 32 per
    element of the largest peak correlation (a region as large as the grid, by FFT, padded by the
    sphere). Measured (tracemalloc): 55 bytes a voxel on a 200³ PET that is one hot region (estimate
    76), 74 on a 150³ one at 0.32 mm (estimate 105), 4 on the whole-body phantom (estimate 75)."""
    factors = peak_factors(spacing)
    kernel = sphere_half_widths([s * f for s, f in zip(spacing, factors[::-1], strict=True)])
    correlation = math.prod(-(-n // f) + 2 * h for n, f, h in zip(shape, factors, kernel, strict=True))
    return 40 * math.prod(shape) + 32 * correlation


def sphere_half_widths(spacing: Sequence[float], volume_ml: float = PEAK_VOLUME_ML) -> tuple[int, int, int]:
    """Half the size (z, y, x voxels) of the kernel :func:`sphere_fractions` makes on a grid of ``spacing``."""
    z, y, x = (math.ceil(_radius_mm(volume_ml) / s + 0.5) for s in spacing[::-1])
    return z, y, x


def _radius_mm(volume_ml: float) -> float:
    return (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)


def _block_mean(values: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Means over ``factors`` blocks (z, y, x), voxels past the array's end counting as zeros (float64)."""
    result = np.asarray(values, np.float64)
    for axis, factor in enumerate(factors):
        if factor > 1:
            result = np.add.reduceat(result, np.arange(0, result.shape[axis], factor), axis=axis)
    return result / math.prod(factors) if math.prod(factors) > 1 else result


def _box(index: Sequence[int], half: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(0, i - h), min(n, i + h + 1)) for i, h, n in zip(index, half, shape, strict=True))


def _correlate(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``ndimage.correlate`` with zeros outside (odd kernel sizes); by FFT where that is faster (large boxes).

    numpy's FFT, not scipy.signal's: importing scipy.signal costs about a second per process.
    """
    if values.size * kernel.size < _DIRECT_LIMIT:
        return np.asarray(ndimage.correlate(values, kernel, mode="constant", cval=0.0))
    shape = [n + k - 1 for n, k in zip(values.shape, kernel.shape, strict=True)]
    axes = (0, 1, 2)
    product = np.fft.rfftn(values, shape, axes) * np.fft.rfftn(kernel[::-1, ::-1, ::-1], shape, axes)
    full = np.fft.irfftn(product, shape, axes)
    return full[tuple(slice(k // 2, k // 2 + n) for n, k in zip(values.shape, kernel.shape, strict=True))]


def _peak(
    values: np.ndarray,
    region: np.ndarray,
    box: tuple[slice, ...],
    excluded: np.ndarray,
    kernel: np.ndarray,
    factors: Sequence[int],
) -> tuple[float, tuple[int, int, int]]:
    """Highest sphere mean centred on a ``region`` voxel (``region`` is a mask of ``box``), leaving
    ``excluded`` voxels out of the sphere, and the index of its centre in ``values``.

    ``kernel`` is the sphere on blocks of ``factors`` voxels (:func:`peak_factors`): values and the
    kept-voxel weights are averaged per block, blocks holding a region voxel are the candidate centres,
    and the centre is reported at the block's middle voxel.
    """
    pad = [s // 2 for s in kernel.shape]
    blocks = [-(-n // f) for n, f in zip(values.shape, factors, strict=True)]
    inner_blocks = [slice(b.start // f, -(-b.stop // f)) for b, f in zip(box, factors, strict=True)]
    outer_blocks = [
        slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(inner_blocks, pad, blocks, strict=True)
    ]
    outer = tuple(
        slice(b.start * f, min(n, b.stop * f)) for b, f, n in zip(outer_blocks, factors, values.shape, strict=True)
    )
    keep = ~excluded[outer] & np.isfinite(values[outer])
    sums = _correlate(_block_mean(np.where(keep, values[outer], 0.0), factors), kernel)
    weights = _correlate(_block_mean(keep, factors), kernel)
    inner = tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner_blocks, outer_blocks, strict=True))
    placed = np.zeros(keep.shape, bool)  # the region on the outer box, then per block
    placed[tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer, strict=True))] = region
    centres = _block_mean(placed, factors)[inner] > 0
    sums, weights = sums[inner], weights[inner]
    means = np.where(centres & (weights > 1e-9), sums / np.maximum(weights, 1e-9), -np.inf)
    flat = int(np.argmax(means))
    offset = np.unravel_index(flat, means.shape)
    index = [
        min((o + i.start) * f + (f - 1) // 2, n - 1)
        for o, i, f, n in zip(offset, inner_blocks, factors, values.shape, strict=True)
    ]
    return float(means.flat[flat]), (int(index[0]), int(index[1]), int(index[2]))


# ---- regions ----------------------------------------------------------------------------------------
def _shell_offsets(spacing: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Index offsets (z, y, x) of the voxels :data:`BACKGROUND_SHELL_MM` from a centre voxel that can lie
    in an array of ``shape``, every :data:`SHELL_STEP_MM` or more along each axis (a bounded sample)."""
    inner, outer = BACKGROUND_SHELL_MM
    spacing_zyx = np.asarray(spacing, float)[::-1]
    half = np.minimum(np.ceil(outer / spacing_zyx), np.asarray(shape) - 1).astype(int)
    stride = np.maximum(1, np.ceil(SHELL_STEP_MM / spacing_zyx - 1e-9)).astype(int)
    grids = np.meshgrid(*(np.arange(-h, h + 1, s) for h, s in zip(half, stride, strict=True)), indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    distance = np.linalg.norm(offsets * spacing_zyx, axis=1)
    return offsets[(distance >= inner) & (distance <= outer)]


def _background(values: np.ndarray, mask: np.ndarray, seed: np.ndarray, top: float, shell: np.ndarray) -> float:
    """Median of the body voxels in the shell around ``seed`` below half of ``top``; 0 when none."""
    points = shell + seed
    points = points[np.all((points >= 0) & (points < values.shape), axis=1)]
    z, y, x = points.T
    ring = values[z, y, x][mask[z, y, x]]
    ring = ring[ring < BACKGROUND_BELOW * top]
    return float(np.median(ring)) if ring.size else 0.0


def _touching(claimed: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Whether each voxel (flat index) shares a face with a ``claimed`` voxel."""
    index = np.stack(np.unravel_index(flat, claimed.shape), axis=1)
    touching = np.zeros(flat.size, bool)
    for step in _FACE_STEPS:
        near = index + step
        inside = np.all((near >= 0) & (near < claimed.shape), axis=1)
        z, y, x = near[inside].T
        touching[inside] |= claimed[z, y, x]
    return touching


def _grow(
    values: np.ndarray, allowed: np.ndarray, seed: tuple[int, ...], threshold: float
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Face-connected ``allowed`` voxels >= ``threshold`` holding ``seed``, as a mask of a box around
    them (the box grows until the region fits)."""
    half = [16, 16, 16]
    while True:
        box = _box(seed, half, values.shape)
        labels, _count = ndimage.label((values[box] >= threshold) & allowed[box], structure=_FACES)
        region = labels == labels[tuple(s - b.start for s, b in zip(seed, box, strict=True))]
        touches = [
            bool(region.take(0, axis=a).any() and box[a].start > 0)
            or bool(region.take(-1, axis=a).any() and box[a].stop < values.shape[a])
            for a in range(3)
        ]
        if not any(touches):
            return region, box
        half = [h * 2 if t else h for h, t in zip(half, touches, strict=True)]


def _measure(
    values: np.ndarray,
    region: np.ndarray,
    box: tuple[slice, ...],
    excluded: np.ndarray,
    sphere: tuple[np.ndarray, tuple[int, int, int]],
    voxel_ml: float,
    threshold: float,
    background: float,
) -> Region:
    """A region's statistics; ``region`` is a mask of ``box``. Per-axis projections give its extent and
    centroid (no index list: a region may hold most of a fine grid's voxels)."""
    counts = [region.sum(axis=tuple(other for other in range(3) if other != axis)) for axis in range(3)]
    voxels = int(counts[0].sum())
    spans = [slice(int(found[0]), int(found[-1]) + 1) for found in (np.flatnonzero(count) for count in counts)]
    tight = tuple(slice(b.start + span.start, b.start + span.stop) for b, span in zip(box, spans, strict=True))
    inside = region[tuple(spans)]
    centroid = [b.start + float(count @ np.arange(count.size)) / voxels for b, count in zip(box, counts, strict=True)]
    local = np.asarray(values[tight], np.float64)
    hottest = np.unravel_index(int(np.argmax(np.where(inside, local, -np.inf))), local.shape)
    peak, peak_index = _peak(values, inside, tight, excluded, *sphere)
    return Region(
        voxels=voxels,
        volume_ml=float(voxels * voxel_ml),
        mean=float(local[inside].mean()),
        max=float(local[hottest]),
        max_index=tuple(int(h + s.start) for h, s in zip(hottest, tight, strict=True)),  # type: ignore[arg-type]
        peak=peak,
        peak_index=peak_index,
        centroid=(centroid[0], centroid[1], centroid[2]),
        threshold=float(threshold),
        background=float(background),
    )


def _candidates(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Flat indices of the hottest body voxels, hottest first (at most :data:`MAX_CANDIDATES`)."""
    inside = np.flatnonzero(mask)
    body = values.ravel()[inside]
    if inside.size > MAX_CANDIDATES:
        keep = np.argpartition(body, -MAX_CANDIDATES)[-MAX_CANDIDATES:]
        inside, body = inside[keep], body[keep]
    return inside[np.argsort(-body, kind="stable")]


def find_hotspots(values: np.ndarray, spacing: Sequence[float], *, max_regions: int = MAX_REGIONS) -> Readout | None:
    """Max, peak and the hottest regions of a PET ``(z, y, x)`` array with voxel ``spacing`` (x, y, z mm).

    Returns ``None`` when the image holds no positive value (nothing to read out).
    """
    values = np.asarray(values)
    mask, edge = body_mask(values, spacing)
    if not mask.any():
        return None
    factors = peak_factors(spacing)
    fractions = sphere_fractions([s * f for s, f in zip(spacing, factors[::-1], strict=True)])
    kernel = fractions / fractions.sum()
    shell = _shell_offsets(spacing, values.shape)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    claimed = np.zeros(values.shape, bool)  # regions, and the slopes around them
    regions: list[Region] = []
    order = _candidates(values, mask)
    position, seeds = 0, 0
    while position < order.size and seeds < MAX_SEEDS:
        chunk = order[position : position + _CHUNK]
        chunk = chunk[~claimed.flat[chunk]]
        if chunk.size == 0:
            position += _CHUNK
            continue
        touching = _touching(claimed, chunk)
        if touching[0]:  # the hottest voxels left lie on a slope: take them in one go
            run = int(np.argmin(touching)) if not touching.all() else touching.size
            claimed.flat[chunk[:run]] = True
            continue
        top = float(values.flat[chunk[0]])
        peaks = sorted((r.peak for r in regions), reverse=True)
        if len(peaks) >= max_regions and top < peaks[max_regions - 1]:
            break  # a region's peak cannot exceed its max: no later region can enter the ranking
        seeds += 1
        seed = np.array(np.unravel_index(int(chunk[0]), values.shape))
        background = _background(values, mask, seed, top, shell)
        threshold = background + THRESHOLD_FRACTION * (top - background)
        region, box = _grow(values, mask & ~claimed, tuple(int(s) for s in seed), threshold)
        regions.append(_measure(values, region, box, claimed, (kernel, factors), voxel_ml, threshold, background))
        claimed[box] |= region
    regions.sort(key=lambda r: -r.peak)
    hottest = max(regions, key=lambda r: r.max)
    return Readout(
        max=hottest.max,
        max_index=hottest.max_index,
        peak=regions[0].peak,
        peak_index=regions[0].peak_index,
        regions=regions[:max_regions],
        body_voxels=int(mask.sum()),
        edge_slices=edge,
        sphere_ml=float(fractions.sum() * voxel_ml * math.prod(factors)),
        peak_factors=factors,
        seeds=seeds,
    )


# ---- report -----------------------------------------------------------------------------------------
def units_label(units: str | None, is_suv: bool) -> str:
    """How the report names the PET's units: SUV, Bq/mL, or the image's own (unknown) units."""
    if is_suv:
        return "SUVbw (g/mL)"
    if units and units.upper() == "BQML":
        return "Bq/mL"
    return f"image units ({units})" if units else "image units"


def hotspot_report(
    values: np.ndarray,
    grid: Grid,
    *,
    units: str | None,
    is_suv: bool,
    to_mri: PointToVoxel | None = None,
    max_regions: int = MAX_REGIONS,
) -> dict[str, Any]:
    """The ``hotspots`` key of report.json (docs/CONTRACTS.md) for a PET array on ``grid``.

    ``to_mri`` maps a PET point to the MRI voxel it falls in (through the registration); ``None``
    leaves ``mri_voxel`` null.
    """

    def where(index: Sequence[float]) -> tuple[list[float], list[int] | None]:
        point = grid.point(index)
        return [round(v, 3) for v in point], (to_mri(point) if to_mri else None)

    readout = find_hotspots(values, grid.spacing, max_regions=max_regions)
    shell = "-".join(f"{v:g}" for v in BACKGROUND_SHELL_MM)
    record: dict[str, Any] = {
        "units": units_label(units, is_suv),
        "is_suv": is_suv,
        "grid": "PET (native, not resampled)",
        "threshold": {
            "rule": (
                f"face-connected voxels >= B + {THRESHOLD_FRACTION} x (region max - B); B = median of the body "
                f"voxels {shell} mm from the max that are below {BACKGROUND_BELOW:.0%} of it (0 if none); "
                "voxels touching a hotter region or its slope are left to it"
            ),
            "fraction": THRESHOLD_FRACTION,
            "background_shell_mm": list(BACKGROUND_SHELL_MM),
            "connectivity": "6 (faces)",
            "ranked_by": "peak",
        },
        "search": {
            "body": (
                f"voxels above {BODY_FRACTION:.0%} of the 99th percentile of positive voxels, holes filled "
                f"slice by slice, pieces under {MIN_PIECE_ML:g} mL dropped unless the largest"
            ),
            "edge_mm": EDGE_MM,
        },
    }
    if readout is None:
        record.update(max=None, peak=None, regions=[])
        record["search"]["body_voxels"] = 0
        return record
    record["search"].update(body_voxels=readout.body_voxels, edge_slices_each_end=readout.edge_slices)
    max_mm, max_voxel = where(readout.max_index)
    peak_mm, peak_voxel = where(readout.peak_index)
    record["max"] = {"value": readout.max, "position_mm": max_mm, "mri_voxel": max_voxel}
    record["peak"] = {
        "value": readout.peak,
        "centre_mm": peak_mm,
        "mri_voxel": peak_voxel,
        "sphere_ml": round(readout.sphere_ml, 4),
        "grid_mm": [round(s * f, 6) for s, f in zip(grid.spacing, readout.peak_factors[::-1], strict=True)],
    }
    if readout.peak_factors != (1, 1, 1):
        blocks = " × ".join(map(str, readout.peak_factors[::-1]))
        record["peak"]["note"] = (
            f"computed on blocks of {blocks} PET voxels (x × y × z), averaged: the voxels are so small that a "
            f"1 cm³ sphere would hold more than {MAX_SPHERE_VOXELS} of them"
        )
    regions = []
    for rank, region in enumerate(readout.regions, start=1):
        centre_mm, centre_voxel = where(region.centroid)
        regions.append(
            {
                "rank": rank,
                "volume_ml": round(region.volume_ml, 4),
                "mean": region.mean,
                "max": region.max,
                "peak": region.peak,
                "centre_mm": centre_mm,
                "mri_voxel": centre_voxel,
                "voxels": region.voxels,
                "threshold": region.threshold,
                "background": region.background,
            }
        )
    record["regions"] = regions
    return record


def summary_line(record: dict[str, Any]) -> str:
    """One sentence for the run summary: max and peak with positions, and how many regions are listed."""
    units = record["units"]
    if record.get("max") is None:
        return f"Hotspots in {units}: none, the PET holds no uptake to read out."
    top, peak = record["max"], record["peak"]
    voxel = f", MRI voxel {tuple(top['mri_voxel'])}" if top.get("mri_voxel") is not None else ""
    x, y, z = top["position_mm"]
    return (
        f"Hotspots in {units}: max {_shown(top['value'])} at ({x:.1f}, {y:.1f}, {z:.1f}) mm{voxel}; "
        f"peak {_shown(peak['value'])}; {len(record['regions'])} region(s) in the report."
    )


def _shown(value: float) -> str:
    """A value as people read them: 28,158 (Bq/mL), 12.3 (SUV)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
