"""Hotspot readout (medfuse.hotspots) against phantoms whose answers are computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from pet_phantoms import WHOLE_BODY_LESIONS, blur, distance_mm, spheres, whole_body
from scipy import ndimage
from scipy.special import erf

from medfuse import hotspots

#: Integer points (i, j, k) with i² + j² + k² <= 16: a radius-4 ball has 257 of them (OEIS A000605).
BALL_16 = 257


def test_sphere_on_its_grid_reads_exact_volume_max_and_mean() -> None:
    # 8 mm sphere at 2 mm voxels centred on a voxel: voxels (2i)² + (2j)² + (2k)² <= 64 -> 257 voxels
    values = spheres((40, 40, 40), (2.0, 2.0, 2.0), [((40.0, 40.0, 40.0), 8.0, 10.0)], background=1.0)
    assert int((values == 10.0).sum()) == BALL_16
    readout = hotspots.find_hotspots(values, (2.0, 2.0, 2.0))
    assert readout is not None
    region = readout.regions[0]
    assert region.voxels == BALL_16
    assert region.volume_ml == pytest.approx(BALL_16 * 0.008, abs=1e-12)  # 2.056 mL
    assert (region.max, region.mean) == (10.0, 10.0)
    assert region.background == 1.0 and region.threshold == pytest.approx(1.0 + 0.41 * 9.0)
    assert region.centroid == pytest.approx((20.0, 20.0, 20.0))
    # the 1 cm³ sphere (6.2 mm radius) fits inside the 8 mm one: peak is the activity itself
    assert region.peak == pytest.approx(10.0, abs=1e-9) and readout.peak == pytest.approx(10.0, abs=1e-9)
    assert readout.max == 10.0
    assert readout.sphere_ml == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (4.0, 4.0, 4.0), (2.73, 2.73, 3.27), (1.0, 1.0, 5.0)])
def test_peak_sphere_is_one_millilitre_on_any_grid(spacing: tuple[float, float, float]) -> None:
    fractions = hotspots.sphere_fractions(spacing)
    assert fractions.sum() * np.prod(spacing) / 1000 == pytest.approx(1.0, abs=0.01)
    assert fractions.max() == 1.0 and fractions.min() == 0.0  # whole voxels inside, corners outside
    # centre-in-sphere counting, as some tools do, is far from 1 cm³ on coarse grids
    shape = fractions.shape
    centre = [s // 2 for s in shape]
    inside = distance_mm(shape, spacing, [c * s for c, s in zip(centre[::-1], spacing, strict=True)]) <= 6.2035
    assert inside.sum() * np.prod(spacing) / 1000 != pytest.approx(1.0, abs=0.01) or spacing == (1.0, 1.0, 5.0)


def _brute_force_peak(values: np.ndarray, region: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """The peak by another route: weights from 20 × 20 × 20 sub-samples, mean at every region voxel."""
    radius = (3000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    half = [math.ceil(radius / s + 0.5) for s in spacing[::-1]]
    sub = (np.arange(20) + 0.5) / 20 - 0.5
    weights = np.zeros([2 * h + 1 for h in half])
    for offset in np.ndindex(*weights.shape):
        points = [(o - h + sub) * s for o, h, s in zip(offset, half, spacing[::-1], strict=True)]
        z, y, x = np.meshgrid(*points, indexing="ij")
        weights[offset] = np.mean(z**2 + y**2 + x**2 <= radius**2)
    padded = np.pad(values.astype(np.float64), [(h, h) for h in half])
    best = -np.inf
    for z, y, x in np.argwhere(region):
        window = padded[z : z + 2 * half[0] + 1, y : y + 2 * half[1] + 1, x : x + 2 * half[2] + 1]
        best = max(best, float((window * weights).sum() / weights.sum()))
    return best


def test_blurred_sphere_peak_matches_a_brute_force_search() -> None:
    spacing = (2.5, 2.5, 3.0)
    values = blur(spheres((36, 40, 40), spacing, [((50.0, 47.0, 54.0), 9.0, 20.0)], background=2.0), spacing, 6.0)
    readout = hotspots.find_hotspots(values, spacing)
    assert readout is not None
    region = readout.regions[0]
    threshold = region.background + 0.41 * (region.max - region.background)
    labels, _count = ndimage.label(values >= threshold)
    expected = labels == labels[region.max_index]
    assert region.voxels == int(expected.sum())
    assert region.mean == pytest.approx(float(values[expected].mean()), rel=1e-6)
    assert region.max == float(values.max())
    assert region.peak == pytest.approx(_brute_force_peak(values, expected, spacing), rel=2e-3)
    assert region.background == pytest.approx(2.0, abs=0.05)


def _partial_volume(radius_mm: float, voxel_mm: float, fwhm_mm: float, phase: float) -> np.ndarray:
    """A sphere of activity 1 sampled at 0.5 mm, blurred, then averaged into ``voxel_mm`` voxels (as a
    scanner's voxel integrates); ``phase`` 0 puts the centre on a voxel centre, 0.5 on a voxel corner."""
    fine, cells = 0.5, 16
    factor = round(voxel_mm / fine)
    centre = (cells // 2 + phase) * voxel_mm + voxel_mm / 2 - fine / 2
    values = spheres((cells * factor,) * 3, (fine,) * 3, [((centre,) * 3, radius_mm, 1.0)])
    values = blur(values, (fine,) * 3, fwhm_mm)
    return values.reshape(cells, factor, cells, factor, cells, factor).mean(axis=(1, 3, 5))


@pytest.mark.parametrize(("phase", "max_rc", "peak_rc"), [(0.0, 0.640, 0.296), (0.5, 0.436, 0.235)])
def test_partial_volume_of_a_10_mm_sphere_at_4_mm_voxels_and_6_mm_fwhm(
    phase: float, max_rc: float, peak_rc: float
) -> None:
    """README's partial-volume note: the max reads 64 % (centred) to 44 % (on a voxel corner) of the
    activity, below the 72 % of the continuous blurred image's centre; the peak 30 % to 24 %."""
    sigma = 6.0 / (2 * math.sqrt(2 * math.log(2)))
    x = 5.0 / sigma
    continuous_centre = erf(x / math.sqrt(2)) - math.sqrt(2 / math.pi) * x * math.exp(-x * x / 2)
    assert continuous_centre == pytest.approx(0.722, abs=1e-3)
    values = _partial_volume(5.0, 4.0, 6.0, phase)
    readout = hotspots.find_hotspots(values, (4.0, 4.0, 4.0))
    assert readout is not None
    assert readout.max == pytest.approx(float(values.max())) and readout.max < continuous_centre
    assert readout.max == pytest.approx(max_rc, abs=0.005)
    assert readout.peak == pytest.approx(peak_rc, abs=0.005)


def test_adjacent_hotspots_stay_apart_and_the_cooler_does_not_borrow_the_hotter() -> None:
    spacing = (2.0, 2.0, 2.0)
    hot, cool = ((40.0, 50.0, 50.0), 7.0, 20.0), ((68.0, 50.0, 50.0), 7.0, 8.0)  # 14 mm gap between edges
    values = blur(spheres((50, 50, 60), spacing, [hot, cool], background=1.0), spacing, 6.0)
    readout = hotspots.find_hotspots(values, spacing)
    assert readout is not None
    first, second = readout.regions[:2]
    assert first.centroid[2] == pytest.approx(20.0, abs=0.3) and second.centroid[2] == pytest.approx(34.0, abs=0.3)
    cool_only = blur(spheres((50, 50, 60), spacing, [cool], background=1.0), spacing, 6.0)
    assert second.max == pytest.approx(float(cool_only.max()), rel=0.02)  # not the hot sphere's shoulder
    assert second.peak <= second.max
    alone = hotspots.find_hotspots(cool_only, spacing)
    assert alone is not None
    assert second.volume_ml == pytest.approx(alone.regions[0].volume_ml, rel=0.15)


def test_a_lesion_in_warm_tissue_is_measured_above_the_local_background() -> None:
    # lesion 10 in a 40 mm organ at 4.5 (45 % of the lesion: a plain 41 % threshold spreads into the organ)
    spacing = (2.0, 2.0, 2.0)
    items = [((60.0, 60.0, 60.0), 40.0, 4.5), ((60.0, 60.0, 60.0), 8.0, 10.0)]
    values = spheres((60, 60, 60), spacing, items, background=0.5)
    readout = hotspots.find_hotspots(values, spacing)
    assert readout is not None
    lesion = readout.regions[0]
    assert lesion.background == 4.5
    assert lesion.voxels == BALL_16 and lesion.mean == 10.0
    assert 0.41 * 10.0 < 4.5  # the plain rule would have taken the organ too


def test_search_ignores_the_field_of_view_ends_and_noise_in_the_air() -> None:
    spacing = (3.0, 3.0, 3.0)
    values = spheres((40, 40, 40), spacing, [((60.0, 60.0, 60.0), 30.0, 1.0), ((60.0, 60.0, 57.0), 6.0, 5.0)])
    values[1, 20, 20] = 50.0  # a noise spike in the second slice (within 10 mm of the end)
    values[20, 2, 2] = 40.0  # a hot speck in the air, far from the body
    readout = hotspots.find_hotspots(values, spacing)
    assert readout is not None
    assert readout.edge_slices == 4  # ceil(10 mm / 3 mm)
    assert readout.max == 5.0 and readout.regions[0].mean == 5.0
    assert all(region.max < 40.0 for region in readout.regions)


def test_a_lung_nodule_in_a_cold_lung_is_inside_the_body() -> None:
    spacing = (2.0, 2.0, 2.0)
    body = ((80.0, 80.0, 60.0), 70.0, 1.0)
    lung = ((80.0, 80.0, 60.0), 40.0, 0.05)
    nodule = ((80.0, 80.0, 60.0), 4.0, 3.0)
    values = spheres((60, 80, 80), spacing, [body, lung, nodule])
    readout = hotspots.find_hotspots(values, spacing)
    assert readout is not None
    assert readout.max == 3.0
    nodule_region = next(r for r in readout.regions if r.max == 3.0)
    assert nodule_region.voxels == int((values == 3.0).sum())
    # ranked by peak: the 0.27 mL nodule's 1 cm³ sphere holds mostly lung, below the body's 1.0
    assert readout.regions[0].peak == pytest.approx(1.0) and nodule_region.peak < 1.0


def test_nothing_to_read_in_an_empty_image() -> None:
    assert hotspots.find_hotspots(np.zeros((8, 8, 8), np.float32), (2.0, 2.0, 2.0)) is None
    record = hotspots.hotspot_report(np.zeros((8, 8, 8)), hotspots.Grid((0, 0, 0), (2, 2, 2)), units=None, is_suv=False)
    assert record["max"] is None and record["regions"] == []
    assert hotspots.summary_line(record) == "Hotspots in image units: none, the PET holds no uptake to read out."


def test_whole_body_readout_finds_the_organs_and_lesions() -> None:
    shape, spacing = (150, 100, 100), (7.0, 7.0, 6.0)
    values = whole_body(shape, spacing)
    readout = hotspots.find_hotspots(values, spacing, max_regions=12)
    assert readout is not None
    scale = np.array(shape[::-1]) * np.array(spacing) / np.array([700.0, 700.0, 900.0])
    centres = [np.array(r.centroid)[::-1] * spacing for r in readout.regions]
    bladder = np.array([350, 350, 150]) * scale
    assert np.linalg.norm(centres[0] - bladder) < 5.0  # the bladder is the hottest uptake
    assert readout.max == pytest.approx(float(values[hotspots.body_mask(values, spacing)[0]].max()))
    for name, centre, _radius, _value in WHOLE_BODY_LESIONS:
        distances = [np.linalg.norm(c - np.array(centre) * scale) for c in centres]
        assert min(distances) < 8.0, name


def test_report_positions_follow_the_grid_and_the_mri_mapping() -> None:
    spacing = (2.0, 2.5, 3.0)
    direction = sitk.Euler3DTransform((0, 0, 0), 0.2, -0.1, 0.3).GetMatrix()
    values = spheres((30, 30, 30), spacing, [((30.0, 37.5, 45.0), 9.0, 12.0)], background=1.0)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin((-40.0, 12.0, 7.5))
    image.SetDirection(direction)
    grid = hotspots.Grid(image.GetOrigin(), image.GetSpacing(), image.GetDirection())

    def to_mri(point: list[float]) -> list[int]:
        return [round(v) for v in point]

    record = hotspots.hotspot_report(values, grid, units="BQML", is_suv=False, to_mri=to_mri)
    assert record["units"] == "Bq/mL" and record["is_suv"] is False
    assert record["grid"] == "PET (native, not resampled)"
    centre = image.TransformContinuousIndexToPhysicalPoint((15.0, 15.0, 15.0))
    assert record["regions"][0]["centre_mm"] == pytest.approx(centre, abs=1e-3)
    assert record["regions"][0]["mri_voxel"] == [round(v) for v in centre]
    assert record["peak"]["value"] == pytest.approx(12.0) and record["peak"]["sphere_ml"] == pytest.approx(
        1.0, abs=0.01
    )
    index = [int(v) for v in np.unravel_index(int(np.argmax(values)), values.shape)][::-1]
    assert record["max"]["position_mm"] == pytest.approx(image.TransformIndexToPhysicalPoint(index), abs=1e-3)
    assert record["regions"][0]["volume_ml"] == pytest.approx((values == 12.0).sum() * 0.015, abs=1e-4)
    line = hotspots.summary_line(record)
    assert line.startswith("Hotspots in Bq/mL: max 12 at (") and "MRI voxel" in line
    suv = hotspots.hotspot_report(values, grid, units="GML", is_suv=True)
    assert suv["units"] == "SUVbw (g/mL)" and suv["max"]["mri_voxel"] is None
    assert hotspots.hotspot_report(values, grid, units=None, is_suv=False)["units"] == "image units"


# ---- tiny voxels: memory and time bounded -----------------------------------------------------------
def _traced_readout(values: np.ndarray, spacing: tuple[float, float, float]) -> tuple[hotspots.Readout | None, int]:
    """The readout and the most memory (bytes) it allocated at once (tracemalloc sees numpy's arrays)."""
    import tracemalloc

    tracemalloc.start()
    try:
        return hotspots.find_hotspots(values, spacing), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("voxel_mm", [0.02, 0.001])
def test_tiny_voxels_keep_the_readout_small_and_the_sphere_one_millilitre(voxel_mm: float) -> None:
    """Micrometre voxels (a wrong header) asked the 1 cm³ sphere for billions of voxels; the peak is now
    computed on blocks of at least 0.32 mm, so memory stays that of the image's own size."""
    spacing = (voxel_mm,) * 3
    extent = 40 * voxel_mm
    values = blur(spheres((40, 40, 40), spacing, [((extent / 2,) * 3, extent / 4, 10.0)], background=1.0), spacing, 0.1)
    readout, used = _traced_readout(values, spacing)
    assert used < 50e6  # bytes; the sphere alone was 990 GB at 0.02 mm
    assert readout is not None and readout.max == float(values[4:-4].max())
    factor = math.ceil((1000 / hotspots.MAX_SPHERE_VOXELS) ** (1 / 3) / voxel_mm)
    assert readout.peak_factors == (factor,) * 3
    assert readout.sphere_ml == pytest.approx(1.0, abs=0.01)
    assert readout.peak <= readout.max


@pytest.mark.slow
def test_peak_on_blocks_of_a_fine_grid_matches_the_full_resolution_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 0.25 mm (16,000 voxels in 1 cm³) the peak is computed on 0.5 mm blocks: within 0.5 % of the
    full-resolution peak for a 5 mm lesion blurred by 4 mm FWHM (steeper than clinical PET), centred
    within one block of it; max and region unchanged."""
    spacing = (0.25, 0.25, 0.25)
    values = blur(spheres((80, 80, 80), spacing, [((10.0, 10.5, 9.5), 5.0, 20.0)], background=2.0), spacing, 4.0)
    blocks = hotspots.find_hotspots(values, spacing)
    monkeypatch.setattr(hotspots, "MAX_SPHERE_VOXELS", 10**9)  # the full grid: a 53³ kernel
    full = hotspots.find_hotspots(values, spacing)
    assert blocks is not None and full is not None
    assert blocks.peak_factors == (2, 2, 2) and full.peak_factors == (1, 1, 1)
    coarse, fine = blocks.regions[0], full.regions[0]
    assert (coarse.voxels, coarse.max, coarse.max_index) == (fine.voxels, fine.max, fine.max_index)
    assert coarse.peak == pytest.approx(fine.peak, rel=5e-3) and coarse.peak <= fine.peak
    assert np.abs(np.subtract(coarse.peak_index, fine.peak_index)).max() <= 2
    assert blocks.sphere_ml == pytest.approx(1.0, abs=0.01)


def test_report_says_when_the_peak_was_computed_on_blocks() -> None:
    spacing = (0.1, 0.1, 2.0)  # 50,000 voxels in 1 cm³: x and y in blocks of 4 (0.4 mm)
    values = spheres((12, 100, 100), spacing, [((5.0, 5.0, 12.0), 3.0, 9.0)], background=1.0)
    record = hotspots.hotspot_report(values, hotspots.Grid((0, 0, 0), spacing), units=None, is_suv=False)
    assert record["peak"]["grid_mm"] == [0.4, 0.4, 2.0]
    assert record["peak"]["note"].startswith("computed on blocks of 4 × 4 × 1 PET voxels (x × y × z)")
    plain = hotspots.hotspot_report(values, hotspots.Grid((0, 0, 0), (2, 2, 2)), units=None, is_suv=False)
    assert plain["peak"]["grid_mm"] == [2.0, 2.0, 2.0] and "note" not in plain["peak"]


@pytest.mark.parametrize(("voxel_mm", "size"), [(2.0, 60), (0.32, 60), (0.05, 60)])
def test_memory_estimate_covers_a_pet_that_is_one_hot_region(voxel_mm: float, size: int) -> None:
    """The worst case: one region as large as the grid, its peak correlated over the whole grid."""
    spacing = (voxel_mm,) * 3
    extent = size * voxel_mm
    values = blur(spheres((size,) * 3, spacing, [((extent / 2,) * 3, extent * 0.48, 1.0)]), spacing, 4 * voxel_mm)
    readout, used = _traced_readout(values, spacing)
    assert readout is not None and readout.regions[0].voxels > values.size / 4
    assert used <= hotspots.readout_bytes(values.shape, spacing)
