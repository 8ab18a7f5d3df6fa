"""Volume evaluation: uptake fidelity on arrays with known answers, grid checks, and `medfuse evaluate` on volumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import Grid, phantom_mri, phantom_pet
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.colour import apply_colormap, rgb_to_ycbcr
from medfuse.errors import InvalidInputError
from medfuse.volume_metrics import check_same_grid, evaluate_volume_images, uptake_fidelity

SHAPE = (12, 40, 40)


@pytest.fixture
def anatomy(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MRI and PET arrays with independent textures, and a head mask (all voxels)."""
    mri = rng.random(SHAPE, dtype=np.float32)
    pet = rng.random(SHAPE, dtype=np.float32) ** 2
    return mri, pet, np.ones(SHAPE, dtype=bool)


def test_a_fused_volume_rising_with_uptake_scores_fully(anatomy: tuple[np.ndarray, ...]) -> None:
    mri, pet, mask = anatomy
    fidelity = uptake_fidelity(0.5 * mri + 0.5 * pet, mri, pet, mask)
    assert fidelity.rank_correlation > 0.95 and fidelity.rank_correlation_min > 0.9
    assert fidelity.rising_steps == 1.0 and fidelity.steps == 10 * 9
    assert fidelity.hottest_is_brightest
    assert list(fidelity.class_means) == ["0-50", "50-90", "90-99", "99-99.9", "99.9-100"]
    assert fidelity.hot_contrast > 1.2


def test_a_fused_volume_ignoring_the_pet_scores_no_fidelity(anatomy: tuple[np.ndarray, ...]) -> None:
    mri, pet, mask = anatomy
    fidelity = uptake_fidelity(mri.copy(), mri, pet, mask)
    assert abs(fidelity.rank_correlation) < 0.05
    assert fidelity.rising_steps < 0.8
    assert fidelity.hot_contrast == pytest.approx(1.0, abs=0.05)


def test_the_luminance_of_the_aanlib_map_darkens_the_hottest_uptake(anatomy: tuple[np.ndarray, ...]) -> None:
    """What v1 showed: Y of the aanlib map peaks at half the window, so the hottest class is not the brightest."""
    mri, pet, mask = anatomy
    luminance = rgb_to_ycbcr(apply_colormap(pet, "aanlib"))[0]
    fidelity = uptake_fidelity(0.5 * mri + 0.5 * luminance, mri, pet, mask)
    assert not fidelity.hottest_is_brightest
    assert fidelity.hot_contrast < 1.0


def test_each_decile_is_reported_and_one_spanning_two_tissues_shows_its_range(rng: np.random.Generator) -> None:
    """A phantom-like MRI of two flat tissues (75 % at 0.4, 25 % at 0.8, 1 % noise): one decile takes the top of
    the first tissue and the bottom of the second. Uptake is lower in the bright tissue, so there the PET deciles
    sort the tissues and the fused mean falls where they meet, although the fused value rises with uptake in
    every voxel."""
    bright = rng.random(SHAPE) < 0.25
    mri = np.where(bright, 0.8, 0.4) + rng.normal(0.0, 0.01, SHAPE)
    pet = np.where(bright, 0.1, 0.2) + rng.normal(0.0, 0.02, SHAPE)
    fidelity = uptake_fidelity(mri + 0.5 * pet, mri, pet, np.ones(SHAPE, dtype=bool))
    assert len(fidelity.strata) == 10 and sum(s.voxels for s in fidelity.strata) == mri.size
    spanning = [s for s in fidelity.strata if s.mri_low < 0.5 < s.mri_high]
    assert len(spanning) == 1 and spanning[0].rising < spanning[0].steps and spanning[0].rank_correlation < 0
    within = [s for s in fidelity.strata if s not in spanning]
    assert all(s.rising == s.steps == 9 and s.rank_correlation > 0.5 for s in within)
    assert fidelity.rising_steps == sum(s.rising for s in fidelity.strata) / 90
    assert fidelity.rank_correlation_min == min(s.rank_correlation for s in fidelity.strata)


def test_only_head_voxels_count(anatomy: tuple[np.ndarray, ...]) -> None:
    mri, pet, _ = anatomy
    fused = 0.5 * mri + 0.5 * pet
    outside = np.zeros(SHAPE, dtype=bool)
    outside[:, :, :20] = True
    fused[outside] = 1.0 - fused[outside]  # falls with uptake, but outside the mask
    assert uptake_fidelity(fused, mri, pet, ~outside).rising_steps == 1.0
    with pytest.raises(InvalidInputError, match="too few to measure"):
        uptake_fidelity(fused, mri, pet, np.zeros(SHAPE, dtype=bool))


def _image(values: np.ndarray, spacing: float = 2.0) -> sitk.Image:
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((spacing,) * 3)
    return image


def test_volumes_off_one_grid_are_refused() -> None:
    volume = _image(np.ones((4, 5, 6)))
    check_same_grid({"a": volume, "b": _image(np.zeros((4, 5, 6)))})
    with pytest.raises(InvalidInputError, match=r"the PET: not on the grid of the fused volume .*--save-pet"):
        check_same_grid({"the fused volume": volume, "the PET": _image(np.ones((4, 5, 6)), spacing=2.5)})
    moved = _image(np.ones((4, 5, 6)))
    moved.SetOrigin((0.0, 0.0, 1.0))
    with pytest.raises(InvalidInputError, match="not on the grid of a"):
        check_same_grid({"a": volume, "b": moved})


@pytest.fixture
def volumes(tmp_path: Path) -> dict[str, Path]:
    """A phantom head MRI and PET on one grid and a fused volume that rises with both, as NIfTI files."""
    grid = Grid((40, 48, 44), (4.0, 4.0, 4.0))
    mri, pet = phantom_mri(grid), phantom_pet(grid)
    mri_values, pet_values = sitk.GetArrayFromImage(mri), sitk.GetArrayFromImage(pet)
    fused = 0.5 * mri_values / mri_values.max() + 0.5 * pet_values / pet_values.max()
    paths = {"fused": tmp_path / "fused.nii.gz", "mri": tmp_path / "mri.nii.gz", "pet": tmp_path / "pet.nii.gz"}
    for name, image in (("fused", grid.image(fused.astype(np.float32))), ("mri", mri), ("pet", pet)):
        sitk.WriteImage(image, str(paths[name]))
    return paths


def test_evaluate_volumes_scores_head_slices_and_fidelity(volumes: dict[str, Path]) -> None:
    images = [sitk.ReadImage(str(volumes[name])) for name in ("fused", "mri", "pet")]
    per_slice, fidelity, windows = evaluate_volume_images(*images)
    assert 10 < len(per_slice) < 44, "slices above and below the head are not scored"
    assert all(row["SSIM"] <= 2.0 and row["EN"] > 0 for row in per_slice.values())
    assert fidelity.rising_steps > 0.9 and fidelity.hottest_is_brightest
    assert windows["mri"][0] < windows["mri"][1] and windows["pet"][0] < windows["pet"][1]


def test_evaluate_command_on_volumes(volumes: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "scores.json"
    args = ["evaluate", "--fused", str(volumes["fused"]), "--mri", str(volumes["mri"]), "--pet", str(volumes["pet"])]
    result = CliRunner().invoke(app, [*args, "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "axial slices of the head" in result.output and "hottest class is the brightest" in result.output
    scores = json.loads(report.read_text())
    assert set(scores["means"]) == {"EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"}
    assert scores["slices"] == len(scores["per_slice"])
    assert scores["uptake_fidelity"]["hottest_is_brightest"] is True
    fidelity, strata = scores["uptake_fidelity"], scores["uptake_fidelity"]["strata"]
    assert len(strata) == 10
    assert set(strata[0]) == {"mri_low", "mri_high", "voxels", "rank_correlation", "rising", "steps"}
    assert sum(s["rising"] for s in strata) / sum(s["steps"] for s in strata) == fidelity["rising_steps"]
    assert "rising steps by MRI decile" in result.output


def test_evaluate_command_refuses_mixed_inputs_and_other_grids(volumes: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    mixed = ["evaluate", "--fused", str(volumes["fused"]), "--mri", str(folder), "--pet", str(volumes["pet"])]
    result = CliRunner().invoke(app, mixed)
    assert result.exit_code == 2
    assert "is a 2-D image (or folder of them) but --fused" in result.output
    small = tmp_path / "small.nii.gz"
    sitk.WriteImage(_image(np.arange(512.0).reshape(8, 8, 8)), str(small))
    other = ["evaluate", "--fused", str(volumes["fused"]), "--mri", str(volumes["mri"]), "--pet", str(small)]
    result = CliRunner().invoke(app, other)
    assert result.exit_code == 4
    assert "small.nii.gz: not on the grid of" in result.output and "fused.nii.gz" in result.output
