"""PET -> MRI registration: accuracy on known misalignments, determinism, resampling, transform files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import (
    ORIENTATIONS,
    Grid,
    head_labels,
    head_points,
    mean_tre,
    oblique_direction,
    phantom_mri,
    phantom_pet,
    rigid,
)

from medfuse import registration
from medfuse.console import MedfuseWarning
from medfuse.errors import InvalidInputError, UnreadableInputError

MRI_GRID = Grid((64, 78, 68), (2.4, 2.4, 2.4), ORIENTATIONS["RAS"])

# Misalignments up to 15 mm and 10 degrees, PET voxels 2-4 mm, different fields of view and storage.
CASES = {
    "2mm-pet-lps-mri": (
        Grid((80, 80, 80), (2.0, 2.0, 2.2), centre=(6.0, -4.0, 8.0)),
        (10.0, -6.0, 4.0),
        (-12.0, 9.0, 15.0),
    ),
    "3mm-pet-ras-mri": (
        Grid((64, 64, 56), (3.0, 3.0, 3.3), ORIENTATIONS["RAS"]),
        (-4.0, 9.0, -10.0),
        (15.0, -8.0, -6.0),
    ),
    "4mm-pet-oblique": (
        Grid((50, 50, 44), (4.0, 4.0, 4.0), oblique_direction((5, 3, -8))),
        (7.0, -10.0, 6.0),
        (-9.0, -15.0, 11.0),
    ),
}


@pytest.fixture(scope="module")
def mri() -> sitk.Image:
    return phantom_mri(MRI_GRID)


def _centre(mri: sitk.Image) -> np.ndarray:
    """The physical centre of the MRI's foreground (what ``moved_mm`` measures from)."""
    mask = sitk.GetArrayFromImage(registration.foreground_mask(mri, "MRI"))
    index = np.argwhere(mask > 0)[:, ::-1].mean(axis=0)
    return np.array(mri.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in index)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_rigid_registration_recovers_known_misalignment(mri: sitk.Image, case: str) -> None:
    grid, angles, translation = CASES[case]
    truth = rigid(angles, translation)
    pet = phantom_pet(grid, truth, seed=3)
    result = registration.register(mri, pet)
    tre = mean_tre(truth, result.transform, head_points(MRI_GRID, step=3))
    assert tre < 0.5, f"mean target registration error {tre:.3f} mm"
    assert result.transform.GetName() == "Euler3DTransform"
    assert result.metric < -0.5 and result.overlap > 0.9 and result.mode == "rigid"
    assert result.metric_header is not None and result.metric < result.metric_header and not result.kept_header
    assert not result.anchored and not result.unanchored  # a head pins every direction down
    assert result.confidence.level == "high" and result.confidence.spread_mm is not None
    assert result.confidence.spread_mm < 1.0 and not result.warnings
    moved = np.linalg.norm(np.subtract(truth.TransformPoint(tuple(_centre(mri))), _centre(mri)))
    assert result.moved_mm == pytest.approx(moved, abs=1.5)


def test_affine_registration_refines_the_rigid_result(mri: sitk.Image) -> None:
    grid, angles, translation = CASES["3mm-pet-ras-mri"]
    truth = rigid(angles, translation)
    result = registration.register(mri, phantom_pet(grid, truth, seed=3), mode="affine")
    assert result.transform.GetName() == "AffineTransform"
    assert mean_tre(truth, result.transform, head_points(MRI_GRID, step=3)) < 1.0


def test_registration_is_identical_across_runs_and_thread_counts(mri: sitk.Image) -> None:
    grid, angles, translation = CASES["4mm-pet-oblique"]
    pet = phantom_pet(grid, rigid(angles, translation), seed=5)
    default = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    results = []
    try:
        for threads in (1, 3, 1):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
            result = registration.register(mri, pet)
            results.append((result.transform.GetParameters(), result.metric))
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(default)
    assert results[0] == results[1] == results[2]


def test_far_away_starting_geometry_is_found_from_foreground_centroids(mri: sitk.Image) -> None:
    """PET in another scanner's coordinates (80 mm off): a centroid or centre start brings it within reach,
    and the header pose (no overlap) neither wins nor guides anything."""
    truth = rigid((3.0, -5.0, 4.0), (80.0, -60.0, 40.0))
    pet = phantom_pet(Grid((64, 64, 56), (3.0, 3.0, 3.3), centre=(80.0, -60.0, 40.0)), truth, seed=2)
    result = registration.register(mri, pet)
    assert result.initialisation in ("foreground centroids", "image centres")
    assert mean_tre(truth, result.transform, head_points(MRI_GRID, step=3)) < 0.5
    assert not result.kept_header and not result.anchored and result.moved_mm > 80.0


def test_barely_overlapping_result_warns(mri: sitk.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    grid, angles, translation = CASES["4mm-pet-oblique"]
    pet = phantom_pet(grid, rigid(angles, translation))
    monkeypatch.setattr("medfuse.registration.core.MIN_OVERLAP", 1.01)  # nothing overlaps that much
    with pytest.warns(MedfuseWarning, match=r"barely overlap \(\d+% of the smaller body\)"):
        result = registration.register(mri, pet)
    assert result.warnings and "barely overlap" in result.warnings[0]


def test_resample_to_puts_pet_on_the_mri_grid_with_zero_outside_its_field_of_view(mri: sitk.Image) -> None:
    small_fov = Grid((20, 20, 20), (4.0, 4.0, 4.0))  # 80 mm cube, head is ~150 mm
    pet = phantom_pet(small_fov, noise=0.0)
    on_mri = registration.resample_to(pet, mri, sitk.Euler3DTransform())
    assert on_mri.GetSize() == mri.GetSize() and on_mri.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(on_mri.GetOrigin(), mri.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(on_mri.GetDirection(), mri.GetDirection(), atol=1e-6)
    values = sitk.GetArrayViewFromImage(on_mri)
    points = MRI_GRID.points()
    outside = np.abs(points).max(axis=-1) > 42.0
    assert np.all(values[outside] == 0.0) and values[~outside].max() > 1.0


def test_transform_convention_maps_mri_points_to_pet_points(mri: sitk.Image) -> None:
    """The registered transform, given to resample_to, lines the PET's grey matter up with the MRI's."""
    grid, angles, translation = CASES["2mm-pet-lps-mri"]
    pet = phantom_pet(grid, rigid(angles, translation), noise=0.0)
    result = registration.register(mri, pet)
    aligned = sitk.GetArrayFromImage(registration.resample_to(pet, mri, result.transform))
    unaligned = sitk.GetArrayFromImage(registration.resample_to(pet, mri, sitk.Euler3DTransform()))
    grey = head_labels(MRI_GRID.points(), lesion=False) == 4
    assert aligned[grey].mean() > 1.3 * unaligned[grey].mean()


def test_overlap_fraction(mri: sitk.Image) -> None:
    pet = phantom_pet(Grid((50, 50, 44), (4.0, 4.0, 4.0)))
    assert registration.overlap_fraction(mri, pet, sitk.Euler3DTransform()) > 0.9
    far = sitk.Euler3DTransform()
    far.SetTranslation((0.0, 0.0, 400.0))
    assert registration.overlap_fraction(mri, pet, far) == 0.0


def test_foreground_mask_covers_the_head(mri: sitk.Image) -> None:
    mask = sitk.GetArrayFromImage(registration.foreground_mask(mri, "MRI")).astype(bool)
    head = head_labels(MRI_GRID.points()) != 0
    dice = 2 * np.count_nonzero(mask & head) / (np.count_nonzero(mask) + np.count_nonzero(head))
    assert dice > 0.95


def test_transform_files_round_trip(tmp_path: Path) -> None:
    transform = rigid((4.0, -3.0, 7.0), (9.0, -6.0, 12.0), centre=(1.0, 2.0, 3.0))
    registration.write_transform(transform, tmp_path / "t.tfm")
    back = registration.read_transform(tmp_path / "t.tfm")
    plain = sitk.ReadTransform(str(tmp_path / "t.tfm"))
    for point in ((0.0, 0.0, 0.0), (50.0, -20.0, 10.0)):
        np.testing.assert_allclose(back.TransformPoint(point), transform.TransformPoint(point), atol=1e-9)
        np.testing.assert_allclose(plain.TransformPoint(point), transform.TransformPoint(point), atol=1e-9)
    described = registration.describe_transform(back)
    assert described["type"] == "Euler3DTransform"
    matrix = np.array(described["matrix"])
    point = np.array([50.0, -20.0, 10.0])
    np.testing.assert_allclose(
        matrix[:3, :3] @ point + matrix[:3, 3], transform.TransformPoint(tuple(point)), atol=1e-6
    )
    about_z = registration.describe_transform(rigid((0.0, 0.0, 7.0), (1.0, 2.0, 3.0)))
    assert about_z["rotation_deg"] == pytest.approx(7.0) and about_z["translation_mm"] == [1.0, 2.0, 3.0]


def test_bad_transform_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match=r"missing\.tfm: the --transform file does not exist"):
        registration.read_transform(tmp_path / "missing.tfm")
    (tmp_path / "junk.tfm").write_text("not a transform\n")
    with pytest.raises(UnreadableInputError, match=r"junk\.tfm: the --transform file is not a readable ITK transform"):
        registration.read_transform(tmp_path / "junk.tfm")
    sitk.WriteTransform(sitk.Euler2DTransform(), str(tmp_path / "flat.tfm"))
    with pytest.raises(InvalidInputError, match="is 2-D; a 3-D transform is needed"):
        registration.read_transform(tmp_path / "flat.tfm")


@pytest.mark.slow
def test_example_pair_registers_to_its_known_misalignment() -> None:
    """The committed example (examples/, made by make_example.py) against its stored truth."""
    import json

    from medfuse import io

    examples = Path(__file__).resolve().parents[2] / "examples"
    mri = io.read_volume(examples / "mri.nii.gz")
    pet = io.read_volume(examples / "pet.nii.gz", role="PET")
    record = json.loads((examples / "truth.json").read_text())
    truth = sitk.Euler3DTransform()
    truth.SetFixedParameters(record["transform"]["itk_fixed_parameters"])
    truth.SetParameters(record["transform"]["itk_parameters"])
    result = registration.register(mri, pet)
    head = np.argwhere(sitk.GetArrayFromImage(registration.foreground_mask(mri, "MRI")) > 0)[::40, ::-1]
    points = np.array([mri.TransformIndexToPhysicalPoint(tuple(int(i) for i in index)) for index in head])
    assert mean_tre(truth, result.transform, points) < 0.5
    for lesion in record["lesions"]:
        found = result.transform.TransformPoint(tuple(lesion["mri_lps_mm"]))
        assert np.linalg.norm(np.subtract(found, lesion["pet_lps_mm"])) < 0.5
