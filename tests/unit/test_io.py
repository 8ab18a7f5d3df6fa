"""Reading, validating, describing and writing volumes: every loader, orientations, bad files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import ORIENTATIONS, Grid, make_image, oblique_direction, phantom_mri

from medfuse import io
from medfuse.console import MedfuseWarning
from medfuse.errors import InvalidInputError, OutputError, UnreadableInputError, UsageError


def assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.fixture
def volume() -> sitk.Image:
    """A small anisotropic int16 head, RAS storage, origin with a fractional part."""
    grid = Grid((20, 24, 18), (3.5, 3.25, 4.0), ORIENTATIONS["RAS"], centre=(1.5, -2.25, 3.0))
    return phantom_mri(grid, dtype=np.int16)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_each_format_loads_as_float32_with_geometry_and_values(tmp_path: Path, volume: sitk.Image, suffix: str) -> None:
    path = tmp_path / f"head{suffix}"
    sitk.WriteImage(volume, str(path))
    loaded = io.load_volume(path)
    assert loaded.image.GetPixelID() == sitk.sitkFloat32
    assert loaded.info["pixel_type"] == "16-bit signed integer"
    assert_same_geometry(loaded.image, volume)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(loaded.image), sitk.GetArrayViewFromImage(volume))


@pytest.mark.parametrize("name", ["LPS", "RAS", "oblique"])
def test_orientation_survives_nifti_storage(tmp_path: Path, name: str) -> None:
    direction = oblique_direction() if name == "oblique" else ORIENTATIONS[name]
    image = phantom_mri(Grid((16, 18, 14), (4.0, 4.0, 4.0), direction))
    sitk.WriteImage(image, str(tmp_path / "head.nii.gz"))
    loaded = io.read_volume(tmp_path / "head.nii.gz")
    assert_same_geometry(loaded, image)
    described = io.describe(tmp_path / "head.nii.gz")
    assert described["oblique"] is (name == "oblique")
    if name != "oblique":
        assert described["orientation"] == name


def test_orientation_code_names_where_axes_point() -> None:
    assert io.orientation_code(np.eye(3)) == "LPS"
    assert io.orientation_code(np.diag([-1.0, -1.0, 1.0])) == "RAS"
    assert io.orientation_code(np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)) == "PIL"


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float64])
def test_any_scalar_pixel_type_becomes_float32(dtype: type) -> None:
    values = (np.arange(5 * 6 * 7) % 50).reshape(5, 6, 7).astype(dtype)
    image = io.validate_image(make_image(values))
    assert image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), values.astype(np.float32))


def test_nan_and_inf_become_zero_with_a_warning() -> None:
    values = np.ones((6, 6, 6), dtype=np.float32)
    values[0, 0, 0], values[1, 2, 3], values[2, 2, 2] = np.nan, np.inf, 5.0
    with pytest.warns(MedfuseWarning, match="2 NaN or infinite voxels in the PET were set to 0"):
        image = io.validate_image(make_image(values), role="PET")
    array = sitk.GetArrayViewFromImage(image)
    assert np.isfinite(array).all() and array[0, 0, 0] == 0 and array[1, 2, 3] == 0 and array[2, 2, 2] == 5


def test_constant_image_is_refused(tmp_path: Path) -> None:
    sitk.WriteImage(make_image(np.zeros((6, 6, 6), np.float32)), str(tmp_path / "zero.nii.gz"))
    with pytest.raises(InvalidInputError, match=r"zero\.nii\.gz: every voxel of the PET equals 0 .*empty or constant"):
        io.read_volume(tmp_path / "zero.nii.gz", role="PET")


def test_two_dimensional_and_single_slice_images_are_refused(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((8, 9))), str(tmp_path / "flat.nii"))
    with pytest.raises(InvalidInputError, match=r"flat\.nii: the MRI is a 2-D image \(9×8 voxels\)"):
        io.read_volume(tmp_path / "flat.nii")
    slab = make_image(np.random.default_rng(0).random((1, 8, 9)))
    with pytest.raises(InvalidInputError, match="single slice"):
        io.validate_image(slab)
    with pytest.raises(InvalidInputError, match="too thin"):
        io.validate_image(make_image(np.random.default_rng(0).random((3, 8, 9))))


def test_colour_volume_is_refused() -> None:
    rgb = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (5, 6, 7, 3), dtype=np.uint8), isVector=True)
    with pytest.raises(InvalidInputError, match="scalar"):
        io.validate_image(rgb)


def four_d(frames: int = 3) -> sitk.Image:
    values = np.stack([np.full((5, 6, 7), i + 1.0, np.float32) for i in range(frames)])
    values[:, 0, 0, 0] = 0.0  # not constant
    image = sitk.GetImageFromArray(values, isVector=False)
    image.SetSpacing((2.0, 3.0, 4.0, 60.0))
    image.SetOrigin((10.0, 20.0, 30.0, 0.0))
    return image


def test_four_d_pet_needs_a_frame(tmp_path: Path) -> None:
    sitk.WriteImage(four_d(), str(tmp_path / "dynamic.nii.gz"))
    with pytest.raises(InvalidInputError, match=r"has 3 frames .*--frame N \(0–2\) or .*--frame sum"):
        io.read_volume(tmp_path / "dynamic.nii.gz", role="PET")
    with pytest.raises(InvalidInputError, match=r"4-D .*extract one volume"):
        io.read_volume(tmp_path / "dynamic.nii.gz", role="MRI")
    frame = io.read_volume(tmp_path / "dynamic.nii.gz", role="PET", frame="2")
    assert frame.GetSize() == (7, 6, 5) and frame.GetSpacing() == (2.0, 3.0, 4.0)
    assert frame.GetOrigin() == (10.0, 20.0, 30.0)
    assert sitk.GetArrayViewFromImage(frame)[1, 1, 1] == 3.0
    summed = io.read_volume(tmp_path / "dynamic.nii.gz", role="PET", frame="sum")
    assert sitk.GetArrayViewFromImage(summed)[1, 1, 1] == 6.0
    with pytest.raises(UsageError, match=r"--frame 3: .* has frames 0–2"):
        io.read_volume(tmp_path / "dynamic.nii.gz", role="PET", frame=3)
    with pytest.raises(UsageError, match="--frame last: expected a frame number"):
        io.read_volume(tmp_path / "dynamic.nii.gz", role="PET", frame="last")


def test_missing_and_unsupported_files_are_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match=r"nowhere\.nii\.gz: the MRI input does not exist"):
        io.read_volume(tmp_path / "nowhere.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnreadableInputError, match=r"unsupported format '\.txt'"):
        io.read_volume(tmp_path / "notes.txt")


def test_text_file_named_nii_gz_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "fake.nii.gz").write_text("this is not an image\n" * 20)
    with pytest.raises(UnreadableInputError, match=r"fake\.nii\.gz: the PET file is not a readable NIfTI image"):
        io.read_volume(tmp_path / "fake.nii.gz", role="PET")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_truncated_files_are_unreadable(tmp_path: Path, volume: sitk.Image, suffix: str) -> None:
    whole = tmp_path / f"whole{suffix}"
    sitk.WriteImage(volume, str(whole), useCompression=suffix != ".nii")
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(UnreadableInputError, match=r"cut\..*(truncated|corrupt)"):
        io.read_volume(cut)


def nifti_bytes(values: np.ndarray, pixdim: tuple[float, float, float], dims: tuple[int, ...] | None = None) -> bytes:
    """A NIfTI-1 single file (float32) written by hand, so the header can say anything."""
    header = bytearray(348)
    shape = dims or values.shape[::-1]
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, len(shape), *shape, *([1] * (7 - len(shape))))
    struct.pack_into("<hh", header, 70, 16, 32)  # float32
    struct.pack_into("<8f", header, 76, 1.0, *pixdim, 0.0, 0.0, 0.0, 0.0)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<h", header, 252, 1)  # qform_code: scanner
    header[344:348] = b"n+1\0"
    return bytes(header) + b"\0" * 4 + values.astype("<f4").tobytes()


@pytest.mark.parametrize("pixdim", [(0.0, 2.0, 2.0), (-2.0, 2.0, 2.0), (2.0, float("nan"), 2.0)])
def test_zero_or_negative_nifti_voxel_size_is_refused(tmp_path: Path, pixdim: tuple[float, float, float]) -> None:
    values = np.random.default_rng(0).random((6, 7, 8))
    (tmp_path / "bad.nii").write_bytes(nifti_bytes(values, pixdim))
    with pytest.raises(InvalidInputError, match=r"bad\.nii: the NIfTI voxel sizes .* zero, negative or undefined"):
        io.read_volume(tmp_path / "bad.nii")
    (tmp_path / "good.nii").write_bytes(nifti_bytes(values, (2.0, 2.0, 2.0)))
    assert io.read_volume(tmp_path / "good.nii").GetSpacing() == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nan_in_nifti_is_reported_although_the_nifti_reader_zeroes_it(tmp_path: Path, suffix: str) -> None:
    values = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32) + 1.0
    values[0, 0, :3], values[1, 1, 1] = np.nan, -np.inf
    data = nifti_bytes(values, (2.0, 2.0, 2.0))
    path = tmp_path / f"nan{suffix}"
    path.write_bytes(gzip.compress(data) if suffix == ".nii.gz" else data)
    with pytest.warns(MedfuseWarning, match="4 NaN or infinite voxels in the PET were set to 0"):
        image = io.read_volume(path, role="PET")
    array = sitk.GetArrayFromImage(image)
    assert np.isfinite(array).all() and array[0, 0, 0] == 0.0 and array[1, 1, 1] == 0.0 and array[2, 2, 2] > 1.0
    assert io.describe(path)["non_finite_voxels"] == 4


def test_zero_spacing_in_metaimage_is_refused(tmp_path: Path, volume: sitk.Image) -> None:
    sitk.WriteImage(volume, str(tmp_path / "ok.mha"))
    text = (tmp_path / "ok.mha").read_bytes()
    (tmp_path / "bad.mha").write_bytes(text.replace(b"ElementSpacing = 3.5", b"ElementSpacing = 0"))
    with pytest.raises(InvalidInputError, match=r"bad\.mha: the voxel spacing .* zero, negative"):
        io.read_volume(tmp_path / "bad.mha")


def test_image_too_large_for_memory_is_refused_before_reading(tmp_path: Path) -> None:
    header = nifti_bytes(np.zeros(0, np.float32), (1.0, 1.0, 1.0), dims=(30000, 30000, 30000))
    (tmp_path / "huge.nii.gz").write_bytes(gzip.compress(header))
    with pytest.raises(
        InvalidInputError, match=r"huge\.nii\.gz: the image is 30000×30000×30000 voxels and needs about"
    ):
        io.read_volume(tmp_path / "huge.nii.gz")


def test_suv_needs_dicom(tmp_path: Path, volume: sitk.Image) -> None:
    sitk.WriteImage(volume, str(tmp_path / "pet.nii.gz"))
    with pytest.raises(UsageError, match="--suv: SUV conversion needs a DICOM PET folder"):
        io.read_volume(tmp_path / "pet.nii.gz", role="PET", suv=True)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_write_volume_round_trips_float_and_rgb(tmp_path: Path, volume: sitk.Image, suffix: str) -> None:
    fused = sitk.Cast(volume / 100.0, sitk.sitkFloat32)
    io.write_volume(fused, tmp_path / f"fused{suffix}")
    back = sitk.ReadImage(str(tmp_path / f"fused{suffix}"))
    assert back.GetPixelID() == sitk.sitkFloat32
    assert_same_geometry(back, fused)
    rgb = sitk.Compose([sitk.Cast(volume, sitk.sitkUInt8)] * 3)
    io.write_volume(rgb, tmp_path / f"rgb{suffix}")
    back = sitk.ReadImage(str(tmp_path / f"rgb{suffix}"))
    assert back.GetNumberOfComponentsPerPixel() == 3 and back.GetPixelID() == sitk.sitkVectorUInt8
    assert_same_geometry(back, rgb)


def test_write_volume_refuses_unknown_extension(tmp_path: Path, volume: sitk.Image) -> None:
    with pytest.raises(OutputError, match=r"cannot write volumes as '\.png'"):
        io.write_volume(volume, tmp_path / "fused.png")


def test_describe_reports_header_and_values(tmp_path: Path, volume: sitk.Image) -> None:
    sitk.WriteImage(volume, str(tmp_path / "head.nrrd"))
    described = io.describe(tmp_path / "head.nrrd")
    assert described["format"] == "NRRD"
    assert described["size"] == [20, 24, 18]
    assert described["spacing_mm"] == [3.5, 3.25, 4.0]
    assert described["orientation"] == "RAS"
    assert described["pixel_type"] == "16-bit signed integer" and described["components"] == 1
    values = sitk.GetArrayViewFromImage(volume)
    assert described["value_range"] == [float(values.min()), float(values.max())]
    text = io.format_description(described)
    assert "size           20 × 24 × 18" in text and "orientation    RAS" in text


def test_describe_shows_four_d_and_colour_without_refusing(tmp_path: Path) -> None:
    sitk.WriteImage(four_d(5), str(tmp_path / "dynamic.nii.gz"))
    described = io.describe(tmp_path / "dynamic.nii.gz")
    assert described["frames"] == 5 and described["dimension"] == 4
    with pytest.raises(UnreadableInputError, match="does not exist"):
        io.describe(tmp_path / "missing.nii.gz")
