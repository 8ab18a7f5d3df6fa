"""PNG previews: orientation from the direction matrix, aspect, slice choice, overlays, colour, CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.console import MedfuseWarning
from medfuse.errors import InvalidInputError, UsageError
from medfuse.preview import mosaic_slices, orientation_letters, render_preview

MARKER = (-15.0, -15.0, 11.0)  # LPS mm: patient's right, anterior, superior (a voxel centre of every grid below)
SIDE, STEP = 32, 2.0
DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    # stored sagittally: columns run posterior, rows inferior, slices toward the patient's right
    "permuted": np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
}


def phantom(direction: np.ndarray, *, hot: tuple[float, float, float] = MARKER, value: float = 300.0) -> sitk.Image:
    """A body (100) with a bright sphere at ``hot``, sampled on a cube centred at 0 stored with ``direction``.

    Every direction gives the same set of voxel centres, so renders must agree exactly.
    """
    index = (np.arange(SIDE) - (SIDE - 1) / 2) * STEP
    k, j, i = np.meshgrid(index, index, index, indexing="ij")
    points = np.stack([i, j, k], axis=-1) @ direction.T
    body = np.sum((points / np.array([26.0, 28.0, 24.0])) ** 2, axis=-1) <= 1
    sphere = np.sum((points - np.array(hot)) ** 2, axis=-1) <= 6.5**2
    array = np.where(sphere, value, np.where(body, 100.0, 0.0)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((STEP,) * 3)
    image.SetDirection(tuple(direction.ravel()))
    image.SetOrigin(tuple(direction @ np.full(3, -(SIDE - 1) / 2 * STEP)))
    return image


def interior(picture: np.ndarray) -> np.ndarray:
    """The picture without a 10 % border, where the orientation letters and labels are written."""
    rows, cols = picture.shape[0] // 10, picture.shape[1] // 10
    return picture[rows:-rows, cols:-cols]


def bright_centroid(picture: np.ndarray) -> tuple[float, float]:
    """(row, column) as fractions of the height and width, of the brightest (marker) pixels inside the border."""
    picture = interior(picture)
    grey = picture.astype(float).mean(axis=-1)
    rows, cols = np.nonzero(grey >= 250)
    return rows.mean() / picture.shape[0], cols.mean() / picture.shape[1]


def coloured(picture: np.ndarray) -> np.ndarray:
    """Mask of clearly coloured (not grey) pixels inside the border."""
    picture = interior(picture)
    spread = picture.astype(int).max(axis=-1) - picture.astype(int).min(axis=-1)
    return spread > 60


@pytest.mark.parametrize("name", ["RAS", "permuted"])
def test_any_storage_order_renders_like_lps(name: str) -> None:
    reference, other = phantom(DIRECTIONS["LPS"]), phantom(DIRECTIONS[name])
    np.testing.assert_array_equal(render_preview(other, "triplanar", at=MARKER), render_preview(reference, "triplanar"))
    # the slice view is the same too, apart from its label (the slice number counts in each file's own order)
    expected = render_preview(reference, "slice", at=MARKER)[:-24]
    np.testing.assert_array_equal(render_preview(other, "slice", at=MARKER)[:-24], expected)
    np.testing.assert_array_equal(render_preview(other, "mip"), render_preview(reference, "mip"))
    for view in ("axial", "coronal", "sagittal"):
        assert orientation_letters(other, view) == orientation_letters(reference, view)


def test_radiological_and_neurological_layouts() -> None:
    volume = phantom(DIRECTIONS["RAS"])
    row, col = bright_centroid(render_preview(volume, "slice", at=MARKER))
    assert row < 0.5 and col < 0.5  # anterior up, patient's right on the viewer's left
    row, col = bright_centroid(render_preview(volume, "slice", at=MARKER, convention="neurological"))
    assert row < 0.5 and col > 0.5
    assert orientation_letters(volume, "axial") == ("A", "P", "R", "L")
    assert orientation_letters(volume, "coronal") == ("S", "I", "R", "L")
    assert orientation_letters(volume, "sagittal") == ("S", "I", "A", "P")
    assert orientation_letters(volume, "axial", "neurological") == ("A", "P", "L", "R")
    assert orientation_letters(volume, "sagittal", "neurological") == ("S", "I", "A", "P")


def test_oblique_volume_keeps_nearest_orientation() -> None:
    angle = np.deg2rad(20.0)
    tilt = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    volume = phantom(tilt @ DIRECTIONS["RAS"])
    assert orientation_letters(volume, "axial") == ("A", "P", "R", "L")
    row, col = bright_centroid(render_preview(volume, "slice", at=MARKER))
    assert row < 0.5 and col < 0.5


def test_anisotropic_voxels_keep_their_aspect() -> None:
    volume = sitk.GetImageFromArray(np.random.default_rng(0).random((6, 20, 40), dtype=np.float32))
    volume.SetSpacing((1.0, 2.0, 5.0))  # 40 mm by 40 mm in plane, 30 mm tall
    picture = render_preview(volume, "slice")
    assert picture.shape[0] == picture.shape[1]
    image_2d = sitk.GetImageFromArray(np.random.default_rng(1).random((30, 30), dtype=np.float32))
    image_2d.SetSpacing((1.0, 3.0))  # 30 mm wide, 90 mm tall
    picture = render_preview(image_2d, "mosaic")
    assert picture.shape[0] == pytest.approx(3 * picture.shape[1], abs=2)


def test_at_and_slice_pick_the_same_slice() -> None:
    volume = phantom(DIRECTIONS["RAS"])
    index = volume.TransformPhysicalPointToIndex(MARKER)
    np.testing.assert_array_equal(
        render_preview(volume, "slice", at=MARKER), render_preview(volume, "slice", slice_index=index[2])
    )
    far = interior(render_preview(volume, "slice", slice_index=1))
    assert not np.any(far.mean(axis=-1) >= 250)


def test_slice_choice_errors_name_the_option() -> None:
    volume = phantom(DIRECTIONS["LPS"])
    with pytest.raises(UsageError, match=r"--slice 40 is outside the volume's 32 axial slices; choose 0 to 31"):
        render_preview(volume, "slice", slice_index=40)
    with pytest.raises(UsageError, match=r"--at 0 0 500 mm lies outside the volume"):
        render_preview(volume, "triplanar", at=(0.0, 0.0, 500.0))
    with pytest.raises(UsageError, match="give only one of them"):
        render_preview(volume, "slice", at=MARKER, slice_index=3)
    with pytest.raises(UsageError, match="not to --mode mosaic"):
        render_preview(volume, "mosaic", slice_index=3)
    with pytest.raises(UsageError, match="--mode 'axial' is not a preview mode"):
        render_preview(volume, "axial")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--colormap 'rainbow'"):
        render_preview(volume, colormap="rainbow")


@pytest.mark.parametrize("flip_z", [False, True])
def test_mosaic_goes_through_the_focus_hotspot(flip_z: bool) -> None:
    array = np.zeros((30, 20, 20), np.float32)
    array[5:25, 4:16, 4:16] = 100.0
    focus_array = np.where(array > 0, 1.0, 0.0).astype(np.float32)
    focus_array[7, 9:12, 9:12] = 50.0  # the hotspot, file slice 7
    direction = np.diag([1.0, 1.0, -1.0 if flip_z else 1.0])
    volume, focus = sitk.GetImageFromArray(array), sitk.GetImageFromArray(focus_array)
    for image in (volume, focus):
        image.SetDirection(tuple(direction.ravel()))
    chosen = mosaic_slices(volume, focus, count=6)
    assert 7 in chosen and len(chosen) == 6
    plain = mosaic_slices(volume, count=6)
    assert plain == sorted(set(plain)) and len(plain) == 6 and min(plain) >= 5 and max(plain) <= 24


def test_pet_overlay_on_another_grid_lands_on_the_hotspot() -> None:
    volume = phantom(DIRECTIONS["LPS"], value=100.0)  # plain grey body, no marker
    pet_array = np.full((16, 16, 16), 1.0, np.float32)
    pet = sitk.GetImageFromArray(pet_array)
    pet.SetSpacing((4.0, 4.0, 4.0))
    pet.SetOrigin((-30.0, -30.0, -30.0))
    hot = pet.TransformPhysicalPointToIndex(MARKER)
    pet_array[hot[2] - 1 : hot[2] + 2, hot[1] - 1 : hot[1] + 2, hot[0] - 1 : hot[0] + 2] = 20.0
    pet = sitk.GetImageFromArray(pet_array)
    pet.SetSpacing((4.0, 4.0, 4.0))
    pet.SetOrigin((-30.0, -30.0, -30.0))
    assert not coloured(render_preview(volume, "slice", at=MARKER)).any()
    mask = coloured(render_preview(volume, "slice", pet=pet, at=MARKER, colormap="aanlib"))
    rows, cols = np.nonzero(mask)
    assert mask.any() and rows.mean() / mask.shape[0] < 0.5 and cols.mean() / mask.shape[1] < 0.5
    # with no slice given, the slice view goes through the PET hotspot by itself
    np.testing.assert_array_equal(coloured(render_preview(volume, "slice", pet=pet, colormap="aanlib")), mask)


def test_colorbar_adds_a_scale_and_warns_for_colour_volumes() -> None:
    volume = phantom(DIRECTIONS["LPS"])
    plain = render_preview(volume, "triplanar", at=MARKER)
    with_bar = render_preview(volume, "triplanar", at=MARKER, pet=volume, colorbar=True, units="SUV")
    assert with_bar.shape[0] == plain.shape[0] and with_bar.shape[1] > plain.shape[1] + 20
    assert coloured(with_bar[:, plain.shape[1] :]).any()
    rgb = sitk.Compose([sitk.Cast(sitk.RescaleIntensity(volume, 0, 255), sitk.sitkUInt8)] * 3)
    with pytest.warns(MedfuseWarning, match="--colorbar needs a grey volume"):
        render_preview(rgb, "slice", colorbar=True)
    with pytest.raises(UsageError, match="already in colour"):
        render_preview(rgb, pet=volume)


def test_pet_outside_the_volume_warns() -> None:
    volume = phantom(DIRECTIONS["LPS"])
    far = sitk.GetImageFromArray(np.ones((4, 4, 4), np.float32))
    far.SetOrigin((500.0, 500.0, 500.0))
    with pytest.warns(MedfuseWarning, match="no positive values where it overlaps"):
        picture = render_preview(volume, "slice", pet=far)
    assert not coloured(picture).any()


def test_rgb_images_are_shown_as_they_are(rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    image = sitk.GetImageFromArray(pixels, isVector=True)
    np.testing.assert_array_equal(render_preview(image, "slice"), pixels)
    # colour MIP: each ray keeps the colour of its brightest voxel (pure red in front of dark green)
    volume = np.zeros((8, 16, 16, 3), np.uint8)
    volume[2, :, :, 1] = 60
    volume[5, 4:12, 4:12, 0] = 255
    picture = render_preview(sitk.GetImageFromArray(volume, isVector=True), "mip")
    axial = picture[:, : picture.shape[0]]  # the first panel, square
    np.testing.assert_array_equal(axial[96, 96], [255, 0, 0])  # centre: red wins over the dark green behind it
    np.testing.assert_array_equal(axial[30, 30], [0, 60, 0])  # outside the red square: the green plane


def test_unsupported_images_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="4-D; previews show 2-D images and 3-D volumes"):
        render_preview(sitk.Image([4, 4, 4, 3], sitk.sitkFloat32))
    with pytest.raises(InvalidInputError, match="2 values per voxel"):
        render_preview(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 2))
    with pytest.raises(UsageError, match="--at needs a 3-D volume"):
        render_preview(sitk.Image([4, 4], sitk.sitkFloat32), "slice", at=(0.0, 0.0, 0.0))
    # a constant image is drawn (black), not refused
    assert render_preview(sitk.Image([5, 5, 5], sitk.sitkFloat32), "mip").max() <= 255


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_preview_writes_png(tmp_path: Path) -> None:
    volume_path, pet_path = tmp_path / "mri.nii.gz", tmp_path / "pet.nrrd"
    sitk.WriteImage(phantom(DIRECTIONS["RAS"]), str(volume_path))
    sitk.WriteImage(phantom(DIRECTIONS["LPS"], value=900.0), str(pet_path))
    before = (_digest(volume_path), _digest(pet_path))
    output = tmp_path / "out" / "preview.png"
    args = ["preview", str(volume_path), "-o", str(output), "--mode", "triplanar", "--pet", str(pet_path)]
    result = CliRunner().invoke(app, [*args, "--colorbar", "--units", "SUV"])
    assert result.exit_code == 0, result.output
    with Image.open(output) as written:
        assert written.mode == "RGB" and written.width > written.height > 100
    assert (_digest(volume_path), _digest(pet_path)) == before
    assert sorted(p.name for p in output.parent.iterdir()) == ["preview.png"]


def test_cli_preview_refusals(tmp_path: Path) -> None:
    volume_path = tmp_path / "mri.nii.gz"
    sitk.WriteImage(phantom(DIRECTIONS["LPS"]), str(volume_path))
    existing = tmp_path / "old.png"
    existing.write_bytes(b"keep me")
    fake = tmp_path / "text.nii.gz"
    fake.write_text("not an image")
    four_d = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.Image([4, 4, 4, 2], sitk.sitkFloat32), str(four_d))
    runner = CliRunner()
    png = str(tmp_path / "p.png")
    cases = [
        (["preview", str(volume_path), "-o", str(existing)], 5, "already exists; pass --overwrite"),
        (["preview", str(volume_path), "-o", str(tmp_path / "p.jpg")], 5, "unknown output extension '.jpg'"),
        (["preview", str(tmp_path / "none.nii.gz"), "-o", png], 3, "does not exist"),
        (["preview", str(fake), "-o", png], 3, "not a readable NIfTI image"),
        (["preview", str(four_d), "-o", png], 4, "is 4-D"),
        (["preview", str(volume_path), "-o", png, "--mode", "cine"], 2, "--mode 'cine'"),
        (
            ["preview", str(volume_path), "-o", png, "--mode", "slice", "--slice", "99"],
            2,
            "--slice 99",
        ),
        (["preview", str(volume_path), "-o", png, "--suv"], 2, "--suv needs a DICOM PET"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output
    assert existing.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["four.nii.gz", "mri.nii.gz", "old.png", "text.nii.gz"]


def test_mosaic_tiles_stay_within_the_pet_uptake() -> None:
    # Uptake in slices 10-29 of 60; the other slices hold only faint noise, as a PET above the head does.
    rng = np.random.default_rng(0)
    array = np.zeros((60, 20, 20), np.float32)
    array[5:55, 4:16, 4:16] = 100.0
    focus_array = rng.random((60, 20, 20)).astype(np.float32) * 0.05
    focus_array[10:30, 5:15, 5:15] += 1.0
    chosen = mosaic_slices(sitk.GetImageFromArray(array), sitk.GetImageFromArray(focus_array), count=8)
    assert len(chosen) == 8 and min(chosen) >= 8 and max(chosen) <= 31
