"""Writing volumes: .nii.gz through ISA-L at the fastest level, read back identically by any reader."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medfuse import io


def _volumes() -> list[sitk.Image]:
    rng = np.random.default_rng(7)
    fused = sitk.GetImageFromArray(rng.random((9, 20, 17), dtype=np.float32))
    fused.SetSpacing((0.5, 0.7, 1.2))
    fused.SetOrigin((-10.0, 4.5, 30.25))
    fused.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    overlay = sitk.GetImageFromArray(rng.integers(0, 256, (9, 20, 17, 3), dtype=np.uint8), isVector=True)
    overlay.CopyInformation(fused)
    return [fused, overlay]


@pytest.mark.parametrize("index", [0, 1], ids=["float32", "rgb"])
def test_nii_gz_reads_back_identically_and_decompresses_to_plain_nifti(tmp_path: Path, index: int) -> None:
    image = _volumes()[index]
    io.write_volume(image, tmp_path / "out.nii.gz")
    sitk.WriteImage(image, str(tmp_path / "plain.nii"), useCompression=False)
    back = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    for read, written in ((back.GetSpacing(), image.GetSpacing()), (back.GetOrigin(), image.GetOrigin())):
        np.testing.assert_allclose(read, written, atol=1e-6)  # NIfTI keeps them as float32
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    assert gzip.decompress((tmp_path / "out.nii.gz").read_bytes()) == (tmp_path / "plain.nii").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz", "plain.nii"]  # no temporary left


def test_the_same_volume_gives_the_same_bytes_at_the_fast_level(tmp_path: Path) -> None:
    image = _volumes()[0]
    io.write_volume(image, tmp_path / "a.nii.gz")
    io.write_volume(image, tmp_path / "b.nii.gz")
    data = (tmp_path / "a.nii.gz").read_bytes()
    assert data == (tmp_path / "b.nii.gz").read_bytes()  # no file name or time in the gzip header
    assert data[3] & 0x08 == 0 and data[4:8] == b"\0\0\0\0"


def test_without_isal_zlib_writes_the_same_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _volumes()[1]
    io.write_volume(image, tmp_path / "isal.nii.gz")
    monkeypatch.setitem(sys.modules, "isal.igzip", None)
    io.write_volume(image, tmp_path / "zlib.nii.gz")
    assert gzip.decompress((tmp_path / "zlib.nii.gz").read_bytes()) == gzip.decompress(
        (tmp_path / "isal.nii.gz").read_bytes()
    )


def test_a_failed_compression_leaves_no_uncompressed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(source: Path, target: Path, level: int = 1) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "gzip_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.write_volume(_volumes()[0], tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("isal", [True, False], ids=["isal", "zlib"])
def test_damaged_nii_gz_inputs_are_refused_by_either_decompressor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isal: bool
) -> None:
    from medfuse.errors import UnreadableInputError

    if not isal:
        monkeypatch.setitem(sys.modules, "isal.igzip", None)
    io.write_volume(_volumes()[0], tmp_path / "good.nii.gz")
    data = bytearray((tmp_path / "good.nii.gz").read_bytes())
    (tmp_path / "short.nii.gz").write_bytes(bytes(data[: len(data) // 2]))
    for offset in range(40, len(data) - 8, max(1, (len(data) - 48) // 7)):  # flips inside the deflate stream
        data[offset] ^= 0x5A
    (tmp_path / "flipped.nii.gz").write_bytes(bytes(data))
    assert io.read_volume(tmp_path / "good.nii.gz").GetSize() == (17, 20, 9)
    for name in ("short.nii.gz", "flipped.nii.gz"):
        with pytest.raises(UnreadableInputError, match=name):
            io.read_volume(tmp_path / name)
