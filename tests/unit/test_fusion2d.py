"""Tests of 2-D fusion: recognising inputs by content, reading image variants, single pairs and folders
through ``medfuse fuse`` (Laplacian fuser, so no weights are needed), colour handling and refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medfuse import colour, fusion2d
from medfuse.cli import app
from medfuse.errors import InvalidInputError, OutputError, UnreadableInputError, UsageError
from medfuse.inference import load_fuser
from medfuse.laplacian import LaplacianFuser, laplacian_fuse
from medfuse.options import FuseOptions

LAPLACIAN = FuseOptions(method="laplacian")


def _mri(size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A grey 8-bit head: a bright ellipse with a darker core on black."""
    rows, cols = np.mgrid[: size[0], : size[1]]
    r = ((rows - size[0] / 2) / (size[0] * 0.4)) ** 2 + ((cols - size[1] / 2) / (size[1] * 0.4)) ** 2
    return np.where(r < 1, np.where(r < 0.3, 90, 180), 0).astype(np.uint8)


def _pet_rgb(size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """An 8-bit pseudo-colour PET: a hotspot in the AANLIB map, black elsewhere."""
    rows, cols = np.mgrid[: size[0], : size[1]]
    uptake = np.clip(1 - np.hypot(rows - size[0] / 2, cols - size[1] / 2) / (size[0] * 0.3), 0, 1)
    return np.rint(colour.apply_colormap(uptake, "aanlib") * 255).astype(np.uint8)


def _save(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fuse(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["fuse", *args, "--method", "laplacian"])
    return result.exit_code, result.output


# ---- recognising inputs --------------------------------------------------------------------------------------
def test_sniff_by_content(tmp_path: Path) -> None:
    png = _save(tmp_path / "a.png", _mri())
    jpeg = tmp_path / "no_extension"
    Image.fromarray(_mri()).save(jpeg, format="JPEG")
    tiff = tmp_path / "a.tif"
    Image.fromarray(_mri()).save(tiff)
    dicom = tmp_path / "IM0001"
    dicom.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00" * 8)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert [fusion2d.sniff(p) for p in (png, jpeg, tiff, dicom, text)] == ["image", "image", "image", "dicom", None]


def test_is_2d_input_for_files_and_folders(tmp_path: Path) -> None:
    _save(tmp_path / "images" / "1.png", _mri())
    (tmp_path / "images" / "README.txt").write_text("ignored")
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    (dicom / "IM0001").write_bytes(b"\x00" * 128 + b"DICM")
    assert fusion2d.is_2d_input(tmp_path / "images")
    assert fusion2d.is_2d_input(tmp_path / "images" / "1.png")
    assert fusion2d.is_2d_input(tmp_path / "missing.jpg")
    assert not fusion2d.is_2d_input(dicom)
    assert not fusion2d.is_2d_input(tmp_path / "mri.nii.gz")
    _save(dicom / "shot.png", _mri())
    with pytest.raises(InvalidInputError, match=r"holds both 2-D images \(shot\.png\) and DICOM files \(IM0001\)"):
        fusion2d.is_2d_input(dicom)


# ---- reading -------------------------------------------------------------------------------------------------
def test_read_image_variants(tmp_path: Path) -> None:
    grey = _mri()
    np.testing.assert_allclose(fusion2d.read_image(_save(tmp_path / "g.png", grey)), grey / 255, atol=1e-7)
    rgba = np.dstack([_pet_rgb(), np.full(grey.shape, 7, np.uint8)])
    read = fusion2d.read_image(_save(tmp_path / "rgba.png", rgba))
    assert read.shape == (*grey.shape, 3)  # alpha dropped
    np.testing.assert_allclose(read, _pet_rgb() / 255, atol=1e-7)
    la = fusion2d.read_image(_save(tmp_path / "la.png", np.dstack([grey, grey]), mode="LA"))
    np.testing.assert_allclose(la, grey / 255, atol=1e-7)
    palette = Image.fromarray(grey).convert("P")
    palette.save(tmp_path / "p.png")
    np.testing.assert_allclose(fusion2d.read_image(tmp_path / "p.png"), grey / 255, atol=1e-7)


def test_read_16_bit_images_scales_by_their_maximum(tmp_path: Path) -> None:
    twelve_bit = (_mri().astype(np.uint16) * 16).astype(np.uint16)  # 0..2880, as 12-bit data in 16 bits
    Image.fromarray(twelve_bit).save(tmp_path / "deep.png")
    Image.fromarray(twelve_bit).save(tmp_path / "deep.tif")
    for name in ("deep.png", "deep.tif"):
        read = fusion2d.read_image(tmp_path / name)
        assert read.dtype == np.float32 and read.max() == pytest.approx(1.0)
        np.testing.assert_allclose(read, twelve_bit / 2880.0, atol=1e-6)


def test_read_image_refusals(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match="the image does not exist"):
        fusion2d.read_image(tmp_path / "missing.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(_save(tmp_path / "ok.png", _mri()).read_bytes()[:60])
    with pytest.raises(UnreadableInputError, match=r"broken\.png: cannot be decoded as an image"):
        fusion2d.read_image(broken)
    pages = [Image.fromarray(_mri()), Image.fromarray(_mri())]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(InvalidInputError, match="holds 2 pages; save one 2-D slice per file"):
        fusion2d.read_image(tmp_path / "stack.tif")


# ---- one pair ------------------------------------------------------------------------------------------------
def test_fuse_colour_pet_keeps_colours_size_and_black_background(tmp_path: Path) -> None:
    mri, pet = _save(tmp_path / "mri.png", _mri()), _save(tmp_path / "pet.png", _pet_rgb())
    before = (_digest(mri), _digest(pet))
    code, output = _fuse(str(mri), str(pet), "-o", str(tmp_path / "fused.png"))
    assert code == 0, output
    fused = np.asarray(Image.open(tmp_path / "fused.png"))
    assert fused.shape == (40, 48, 3) and fused.dtype == np.uint8
    assert (_digest(mri), _digest(pet)) == before  # inputs untouched
    y, cb, cr = colour.rgb_to_ycbcr(_pet_rgb() / 255.0)
    expected = colour.ycbcr_to_rgb(laplacian_fuse(_mri() / 255.0, np.clip(y, 0, 1)), cb, cr)
    np.testing.assert_allclose(fused / 255.0, expected, atol=1 / 255 + 1e-6)
    background = (_mri() == 0) & (_pet_rgb().max(axis=-1) == 0)
    assert np.all(fused[background] == 0)
    no_uptake = (_pet_rgb().max(axis=-1) == 0) & (_mri() > 0)
    assert np.all(fused[no_uptake].max(axis=-1) == fused[no_uptake].min(axis=-1))  # no colour without uptake


def test_fuse_grey_pet_gives_grey_output_in_the_format_of_the_extension(tmp_path: Path) -> None:
    mri = _save(tmp_path / "mri.png", np.dstack([_mri()] * 3))  # an RGB file with R = G = B counts as grey
    pet = _save(tmp_path / "pet.tif", (_pet_rgb().mean(axis=-1)).astype(np.uint8))
    for name, image_format in (("fused.tif", "TIFF"), ("fused.jpg", "JPEG"), ("fused.png", "PNG")):
        code, output = _fuse(str(mri), str(pet), "-o", str(tmp_path / name))
        assert code == 0, output
        with Image.open(tmp_path / name) as written:
            assert (written.format, written.mode, written.size) == (image_format, "L", (48, 40))
    expected = laplacian_fuse(_mri() / 255.0, _pet_rgb().mean(axis=-1).astype(np.uint8) / 255.0)
    np.testing.assert_allclose(np.asarray(Image.open(tmp_path / "fused.png")) / 255.0, expected, atol=0.5 / 255)


def test_fuse_pair_refusals(tmp_path: Path) -> None:
    mri, pet = _save(tmp_path / "mri.png", _mri()), _save(tmp_path / "pet.png", _pet_rgb())
    code, output = _fuse(str(pet), str(mri), "-o", str(tmp_path / "f.png"))
    assert code == InvalidInputError.exit_code
    assert "the MRI is a colour image (R, G and B differ); give a grey MRI (were the MRI and PET swapped?)" in output
    small = _save(tmp_path / "small.png", _pet_rgb((20, 24)))
    code, output = _fuse(str(mri), str(small), "-o", str(tmp_path / "f.png"))
    assert code == InvalidInputError.exit_code
    assert "small.png: its size 24x20 differs from the MRI mri.png (48x40); resample the PET" in output
    code, output = _fuse(str(mri), str(pet), "-o", str(tmp_path / "f.nii.gz"))
    assert code == OutputError.exit_code and "unknown output extension '.nii.gz'" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mri.png", "pet.png", "small.png"]


def test_fuse_pair_respects_overwrite(tmp_path: Path) -> None:
    mri, pet = _save(tmp_path / "mri.png", _mri()), _save(tmp_path / "pet.png", _pet_rgb())
    target = tmp_path / "fused.png"
    target.write_bytes(b"keep")
    code, output = _fuse(str(mri), str(pet), "-o", str(target))
    assert code == OutputError.exit_code and "pass --overwrite" in output and target.read_bytes() == b"keep"
    code, output = _fuse(str(mri), str(pet), "-o", str(target), "--overwrite")
    assert code == 0 and Image.open(target).size == (48, 40)


def test_mixing_an_image_with_a_volume_or_a_folder_is_refused(tmp_path: Path) -> None:
    mri = _save(tmp_path / "mri.png", _mri())
    _save(tmp_path / "pets" / "a.png", _pet_rgb())
    with pytest.raises(UsageError, match=r"mri\.png is a 2-D image \(or folder of them\) but .*pet\.nii\.gz is not"):
        fusion2d.fuse_2d(mri, tmp_path / "pet.nii.gz", tmp_path / "f.png", LAPLACIAN)
    with pytest.raises(UsageError, match=r"pets is a folder but .*mri\.png is a file"):
        fusion2d.fuse_2d(mri, tmp_path / "pets", tmp_path / "out", LAPLACIAN)


def test_volume_only_options_are_named_in_a_warning(tmp_path: Path) -> None:
    mri, pet = _save(tmp_path / "mri.png", _mri()), _save(tmp_path / "pet.png", _pet_rgb())
    options = FuseOptions(method="laplacian", register="none", pet_blend=0.0, preview=tmp_path / "p.png")
    with pytest.warns(UserWarning, match="--register, --pet-blend, --preview apply to volumes only and were ignored"):
        fusion2d.fuse_2d(mri, pet, tmp_path / "f.png", options)
    code, output = _fuse(str(mri), str(pet), "-o", str(tmp_path / "g.png"), "--colormap", "hot")
    assert code == 0 and "--colormap applies to volumes only and was ignored" in output
    assert f"Fused image written to {tmp_path / 'g.png'}" in output.replace("\n", "")


def test_fuse_arrays_matches_the_file_route() -> None:
    fused = fusion2d.fuse_arrays(_mri() / 255.0, _pet_rgb() / 255.0, load_fuser(LAPLACIAN))
    assert fused.shape == (40, 48, 3)
    with pytest.raises(ValueError, match="grey MRI"):
        fusion2d.fuse_arrays(_pet_rgb() / 255.0, _pet_rgb() / 255.0, load_fuser(LAPLACIAN))


# ---- folders -------------------------------------------------------------------------------------------------
@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Three pairs (one of another size, one with grey PET), an unpaired MRI and an unpaired PET."""
    mri, pet = tmp_path / "MRI", tmp_path / "PET"
    for name, size in (("01.png", (40, 48)), ("02.png", (40, 48)), ("03.png", (32, 32))):
        _save(mri / name, _mri(size))
        _save(pet / name, _pet_rgb(size))
    _save(pet / "02.png", _pet_rgb().mean(axis=-1).astype(np.uint8))
    _save(mri / "only_mri.png", _mri())
    _save(pet / "only_pet.png", _pet_rgb())
    return mri, pet


def test_fuse_folders_writes_same_names_and_names_the_unpaired(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    mri, pet = folders
    out = tmp_path / "out"
    code, output = _fuse(str(mri), str(pet), "-o", str(out))
    assert code == 0, output
    assert "2 images have no partner of the same name" in output
    assert "only_mri.png" in output and "only_pet.png" in output
    assert sorted(p.name for p in out.iterdir()) == ["01.png", "02.png", "03.png"]
    assert Image.open(out / "02.png").mode == "L" and Image.open(out / "03.png").size == (32, 32)
    fusion2d.fuse_image_files(mri / "01.png", pet / "01.png", tmp_path / "single.png", LAPLACIAN)
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "01.png")), np.asarray(Image.open(tmp_path / "single.png"))
    )


def test_fuse_folders_in_small_batches_gives_the_same_images(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    mri, pet = folders
    with pytest.warns(UserWarning):
        big = fusion2d.fuse_image_folders(mri, pet, tmp_path / "big", FuseOptions(method="laplacian", batch_size=16))
        small = fusion2d.fuse_image_folders(mri, pet, tmp_path / "small", FuseOptions(method="laplacian", batch_size=1))
    assert [p.name for p in big] == [p.name for p in small] == ["01.png", "02.png", "03.png"]
    for a, b in zip(big, small, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


class RecordingFuser(LaplacianFuser):
    """The Laplacian fuser, noting the shape of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []

    def fuse(self, mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
        self.calls.append(mri.shape)
        return super().fuse(mri, pet)


def test_fuse_folders_batches_pairs_of_equal_size_and_pet_kind(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    mri, pet = folders
    _save(mri / "04.png", _mri())
    _save(pet / "04.png", _pet_rgb())
    fuser = RecordingFuser()
    with pytest.warns(UserWarning):  # the unpaired files, the new output folder
        fusion2d.fuse_image_folders(mri, pet, tmp_path / "out", FuseOptions(batch_size=16), fuser=fuser)
    assert fuser.calls == [(2, 40, 48), (1, 40, 48), (1, 32, 32)]  # 01 and 04 (colour), 02 (grey), 03


@pytest.mark.parametrize(("weights", "loads"), [(None, ["colour", "uptake"]), (Path("own.safetensors"), ["colour"])])
def test_fuse_folders_loads_each_fuser_once(
    tmp_path: Path, folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, weights: Path | None, loads: list[str]
) -> None:
    """A bundled network is loaded once per PET kind the folder holds; a --weights file once for all kinds."""
    from medfuse import inference

    loaded: list[str] = []
    monkeypatch.setattr(inference, "load_fuser", lambda options, kind: loaded.append(kind) or LaplacianFuser())
    with pytest.warns(UserWarning):
        fusion2d.fuse_image_folders(*folders, tmp_path / "out", FuseOptions(weights=weights, batch_size=1))
    assert loaded == loads


@pytest.mark.slow
def test_each_pet_kind_goes_to_its_bundled_network(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    """A pseudo-colour PET's luminance is fused by the network trained on such luminance, a grey PET
    (brightness rising with uptake) by the volumes' network, in one folder run."""
    from medfuse.inference import NetFuser

    mri, pet = folders
    with pytest.warns(UserWarning):
        fusion2d.fuse_image_folders(mri, pet, tmp_path / "out", FuseOptions(device="cpu", threads=1))
    colour_net, uptake_net = NetFuser(device="cpu", kind="colour"), NetFuser(device="cpu", kind="uptake")
    grey_pet = _pet_rgb().mean(axis=-1).astype(np.uint8) / 255.0
    for name, pet_image, right, wrong in (
        ("01.png", _pet_rgb() / 255.0, colour_net, uptake_net),
        ("02.png", grey_pet, uptake_net, colour_net),
    ):
        expected = fusion2d.fuse_arrays(_mri() / 255.0, pet_image, right)
        written = np.asarray(Image.open(tmp_path / "out" / name)) / 255.0
        np.testing.assert_allclose(written, expected, atol=0.5 / 255 + 1e-6, err_msg=name)
        assert np.abs(fusion2d.fuse_arrays(_mri() / 255.0, pet_image, wrong) - expected).max() > 2 / 255, name


def test_fuse_folders_is_all_or_nothing(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    mri, pet = folders
    _save(pet / "03.png", _pet_rgb((20, 20)))  # the last pair fails after the first two were fused
    out = tmp_path / "out"
    code, output = _fuse(str(mri), str(pet), "-o", str(out))
    assert code == InvalidInputError.exit_code and "03.png: its size 20x20 differs" in output
    assert not out.exists()


def test_fuse_folders_refusals(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    mri, pet = folders
    other = tmp_path / "other"
    _save(other / "zz.png", _mri())
    code, output = _fuse(str(mri), str(other), "-o", str(tmp_path / "out"))
    assert code == InvalidInputError.exit_code and "no image has a partner of the same name" in output
    full = tmp_path / "full"
    _save(full / "x.png", _mri())
    code, output = _fuse(str(mri), str(pet), "-o", str(full))
    assert code == OutputError.exit_code and "pass --overwrite" in output
    (pet / "IM0001").write_bytes(b"\x00" * 128 + b"DICM")
    code, output = _fuse(str(mri), str(pet), "-o", str(tmp_path / "out"))
    assert code == InvalidInputError.exit_code and "holds both 2-D images" in output and "keep one kind" in output
