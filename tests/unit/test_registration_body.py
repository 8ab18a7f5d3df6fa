"""Registration beyond the head (issue 10): body and limb phantoms with known offsets, foregrounds,
shading, the header-pose rules, confidence and warnings, the search for a thigh in a whole-body PET."""

from __future__ import annotations

import numpy as np
import phantoms
import pytest
import SimpleITK as sitk
from scipy import ndimage
from synthetic import Grid, phantom_mri

from medfuse import registration
from medfuse.console import MedfuseWarning
from medfuse.registration import bias, grids

CONTRACT_KEYS = {"metric", "metric_header", "metric_value", "moved_mm", "rotation_deg", "overlap", "confidence"}


@pytest.fixture(scope="module")
def thigh() -> phantoms.Pair:
    return phantoms.body_pair("thigh", 1, shrink=2)


@pytest.fixture(scope="module")
def thigh_result(thigh: phantoms.Pair) -> registration.RegistrationResult:
    return registration.register(thigh.mri, thigh.pet)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


# ---- foregrounds, grids, shading --------------------------------------------------------------------
def test_foregrounds_find_both_legs_in_mri_and_pet() -> None:
    grid = Grid((80, 56, 30), (4.4, 4.4, 6.0), centre=(0.0, 10.0, -200.0))
    mri, pet = phantoms.body_mri(grid), phantoms.body_pet(grid, supersample=1)
    body = phantoms.body_labels(grid.points()) != phantoms.AIR
    for image, role, least in ((mri, "MRI", 0.95), (pet, "PET", 0.9)):
        mask = sitk.GetArrayFromImage(registration.foreground_mask(image, role)).astype(bool)
        assert dice(mask, body) > least, role
        assert ndimage.label(mask[15])[1] == 2, f"{role}: both thighs, apart"
    # a PET whose hot tumour is 25 times its fat still keeps the fat (and so the body's outline)
    fat = phantoms.body_labels(grid.points()) == phantoms.FAT
    mask = sitk.GetArrayFromImage(registration.foreground_mask(pet, "PET")).astype(bool)
    assert np.count_nonzero(mask & fat) > 0.8 * np.count_nonzero(fat)


def test_a_field_of_view_inside_the_body_is_all_foreground() -> None:
    grid = Grid((40, 40, 20), (2.0, 2.0, 4.0), centre=(-85.0, 10.0, -240.0))  # inside the thigh's muscle
    mask = sitk.GetArrayFromImage(registration.foreground_mask(phantoms.body_pet(grid, supersample=1), "PET"))
    assert mask.all()


def test_coarse_grids_keep_the_edge_of_a_cropped_field_of_view() -> None:
    image = sitk.GetImageFromArray(np.full((26, 30, 34), 7.0, np.float32))
    image.SetSpacing((1.5, 1.5, 5.2))
    for spacing in grids.LEVEL_SPACINGS_MM:
        values = sitk.GetArrayFromImage(grids.on_grid(image, spacing))
        np.testing.assert_allclose(values, 7.0, rtol=1e-5)  # no dark rim posing as a body outline


def test_coil_shading_is_found_and_an_unshaded_head_is_left_alone() -> None:
    grid = Grid((40, 40, 36), (5.0, 5.0, 5.2), centre=(-85.0, 10.0, -240.0))
    shaded, plain = phantoms.body_mri(grid, bias=0.2), phantoms.body_mri(grid, bias=0.0)
    foreground = registration.foreground_mask(shaded, "MRI")
    field = bias.bias_field(shaded, foreground)
    assert field is not None
    truth = sitk.GetArrayFromImage(shaded) / np.maximum(sitk.GetArrayFromImage(plain), 1.0)
    inside = (sitk.GetArrayFromImage(foreground) > 0) & (sitk.GetArrayFromImage(plain) > 300)
    found = sitk.GetArrayFromImage(field)[inside]
    assert np.corrcoef(found, truth[inside])[0, 1] > 0.9 and np.ptp(found) > 0.25
    head = phantom_mri(Grid((40, 48, 44), (4.0, 4.0, 4.0)))
    assert bias.bias_field(head, registration.foreground_mask(head, "MRI")) is None


# ---- body pairs with known offsets ------------------------------------------------------------------
def test_a_thigh_ends_no_farther_than_its_header_pose(thigh: phantoms.Pair, thigh_result) -> None:
    """Along the leg the images barely tell positions apart: that direction stays at the header pose,
    the others are registered, and the report says the pose is only partly determined."""
    result = thigh_result
    header, error = thigh.header_error(), thigh.tumour_error(result.transform)
    assert error < 0.85 * header, f"tumour error {error:.1f} mm against {header:.1f} mm at the header pose"
    assert "the head–foot (z) position" in result.anchored and not result.kept_header
    assert result.confidence.level == "medium" and "kept from the header" in result.confidence.reason
    assert any(
        text.startswith("the registration is uncertain in the head–foot (z) position: the images do not determine it")
        and text.endswith("PET uptake lines up with the anatomy in that direction")
        for text in result.warnings
    )
    assert result.metric < result.metric_header and result.overlap > 0.9 and result.moved_mm > 3.0
    record = result.record()
    assert set(record) >= CONTRACT_KEYS and record["kept_from_header"] == result.anchored
    assert record["confidence"]["spread_mm"] is not None and record["confidence"]["spread_mm"] < 4.0


def test_a_pelvis_is_registered_in_every_direction() -> None:
    pair = phantoms.body_pair("pelvis", 2, shrink=2)
    result = registration.register(pair.mri, pair.pet)
    assert pair.tumour_error(result.transform) < 2.0 < pair.header_error()
    assert not result.anchored and not result.unanchored and result.confidence.level == "high"
    assert result.rotation_deg == pytest.approx(np.degrees(np.arccos((np.trace(
        np.array(pair.truth.GetMatrix()).reshape(3, 3)) - 1) / 2)), abs=1.0)  # fmt: skip


def test_body_registration_is_identical_across_runs_and_thread_counts(thigh: phantoms.Pair, thigh_result) -> None:
    default = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2 if default != 2 else 1)
        again = registration.register(thigh.mri, thigh.pet)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(default)
    assert again.transform.GetParameters() == thigh_result.transform.GetParameters()
    assert again.record() == thigh_result.record()


def test_an_aligned_pair_registered_anyway_stays_put() -> None:
    pair = phantoms.body_pair("cropped-thigh", 2, shrink=2, aligned=True)
    result = registration.register(pair.mri, pair.pet)
    assert pair.tumour_error(result.transform) < 2.0


@pytest.mark.slow
def test_an_undetermined_direction_without_a_header_to_trust_warns(
    thigh: phantoms.Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("medfuse.registration.core.HEADER_GUIDE_MM", 0.0)  # the header pose guides nothing
    monkeypatch.setattr("medfuse.registration.local.SCAN_STEPS", 1)  # the restarts' cost is not under test
    with pytest.warns(
        MedfuseWarning,
        match=r"The registration is uncertain: the images pin down the head–foot \(z\) position only weakly .*; "
        r"check in the fused result \(or the QC page, --qc\) that the PET uptake lines up with the anatomy",
    ):
        result = registration.register(thigh.mri, thigh.pet)
    assert result.confidence.level == "low" and "the head–foot (z) position" in result.unanchored
    assert "header pose is no guide" in result.confidence.reason


def test_a_result_no_better_than_the_header_pose_keeps_it(
    thigh: phantoms.Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check itself: were the optimiser to end anywhere worse than the scanners' coordinates by the
    metric, the header pose is kept and the user told."""
    real = registration.core._analyse

    def worse(middle, sampled, transform, scales):  # type: ignore[no-untyped-def]
        analysis = real(middle, sampled, transform, scales)
        far = sitk.Euler3DTransform(transform)
        far.SetTranslation(tuple(np.add(far.GetTranslation(), (40.0, 0.0, 0.0))))
        analysis.transform = far
        return analysis

    monkeypatch.setattr(registration.core, "_analyse", worse)
    with pytest.warns(MedfuseWarning, match="did not improve on the scanner coordinates .* header pose was kept"):
        result = registration.register(thigh.mri, thigh.pet)
    assert result.kept_header and result.moved_mm == 0.0 and result.transform.GetParameters() == (0.0,) * 6
    assert result.confidence.level == "medium"


@pytest.mark.slow
def test_a_thigh_is_found_in_a_whole_body_pet() -> None:
    """Different frames 500-700 mm apart: the search along the PET's long axis, on both legs, finds it."""
    pair = phantoms.wholebody_pair(2, mri_shrink=2)
    result = registration.register(pair.mri, pair.pet)
    assert result.initialisation.startswith("search along axis 2")
    assert pair.header_error() > 400.0 and pair.tumour_error(result.transform) < 10.0
    assert result.overlap > 0.8


@pytest.mark.slow
def test_registration_warnings_name_the_pet_and_the_patient_direction(thigh: phantoms.Pair) -> None:
    from medfuse.options import RegisterMode

    with pytest.warns(MedfuseWarning) as caught:
        placement = registration.place_pet(thigh.mri, thigh.pet, RegisterMode.RIGID, pet_name="in/pt")
    assert [str(w.message) for w in caught] == [
        "in/pt: the registration is uncertain in the head–foot (z) position: the images do not determine it, so the "
        "PET keeps its header pose (scanner coordinates) there; check in the fused result (or the QC page, --qc) "
        "that the PET uptake lines up with the anatomy in that direction."
    ]
    assert placement.record["kept_from_header"] == ["the head–foot (z) position"]
