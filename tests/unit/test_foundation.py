"""Tests of the shared foundation: errors, atomic outputs, colour conversions, CLI error path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medfuse import colour
from medfuse.atomic import check_output_path, full_suffix, output_transaction, sibling
from medfuse.errors import OutputError


def test_full_suffix_keeps_nii_gz() -> None:
    assert full_suffix("a/b/fused.nii.gz") == ".nii.gz"
    assert full_suffix("x.PNG") == ".png"
    assert sibling("out/fused.nii.gz", "_overlay") == Path("out/fused_overlay.nii.gz")


def test_transaction_commits_all_or_nothing(tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(RuntimeError), output_transaction() as tx:
        tx.write(first, lambda p: p.write_text("one"))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with output_transaction() as tx:
        tx.write(first, lambda p: p.write_text("one"))
        tx.write(second, lambda p: p.write_text("two"))
    assert first.read_text() == "one" and second.read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_transaction_write_error_becomes_output_error(tmp_path: Path) -> None:
    def failing_writer(path: Path) -> None:
        path.write_text("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"), output_transaction() as tx:
        tx.write(tmp_path / "out.nii.gz", failing_writer)
    assert list(tmp_path.iterdir()) == []


def test_transaction_removes_created_folder_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "new" / "out.txt"
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="created"):
        with output_transaction() as tx:
            tx.write(target, lambda p: p.write_text("x"))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_check_output_path_refusals(tmp_path: Path) -> None:
    existing = tmp_path / "fused.nii.gz"
    existing.write_bytes(b"keep")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        check_output_path(existing, allowed=(".nii.gz",))
    assert existing.read_bytes() == b"keep"
    assert check_output_path(existing, allowed=(".nii.gz",), overwrite=True) == existing
    with pytest.raises(OutputError, match=r"unknown output extension '\.xyz'"):
        check_output_path(tmp_path / "f.xyz", allowed=(".nii.gz",))
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_path(existing / "inner.nii.gz", allowed=(".nii.gz",))
    with pytest.raises(OutputError, match="is one of the inputs"):
        check_output_path(existing, allowed=(".nii.gz",), inputs=[existing], overwrite=True)
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "a" / "b" / "f.nii.gz", allowed=(".nii.gz",))


def test_ycbcr_round_trip_and_known_values(rng: np.random.Generator) -> None:
    rgb = rng.random((8, 9, 3), dtype=np.float32)
    y, cb, cr = colour.rgb_to_ycbcr(rgb)
    np.testing.assert_allclose(colour.ycbcr_to_rgb(y, cb, cr), rgb, atol=1e-5)
    y, cb, cr = colour.rgb_to_ycbcr(np.array([1.0, 0.0, 0.0], np.float32))
    assert y == pytest.approx(0.299) and cb == pytest.approx(0.5 - 0.168736) and cr == pytest.approx(1.0)
    grey = np.full((4, 4, 3), 0.3, np.float32)
    y, cb, cr = colour.rgb_to_ycbcr(grey)
    np.testing.assert_allclose(y, 0.3, atol=1e-6)
    np.testing.assert_allclose(cb, 0.5, atol=1e-6)


def test_is_grey() -> None:
    assert colour.is_grey(np.zeros((3, 3), np.uint8))
    grey_rgb = np.repeat(np.arange(9, dtype=np.uint8).reshape(3, 3, 1), 3, axis=2)
    assert colour.is_grey(grey_rgb)
    grey_rgb[0, 0, 0] = 200
    assert not colour.is_grey(grey_rgb)


def test_help_is_fast_and_does_not_import_torch() -> None:
    code = "import sys; import medfuse.cli; print('torch' in sys.modules, 'SimpleITK' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"


def test_version_option() -> None:
    from medfuse.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and "medfuse" in result.output


def test_ycbcr_rebuild_keeps_luminance_out_of_gamut() -> None:
    # A bright fused luminance under saturated red chroma does not fit the RGB cube as it is.
    _, cb, cr = colour.rgb_to_ycbcr(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32))
    y = np.array([0.9, 0.05], np.float32)
    rgb = colour.ycbcr_to_rgb(y, cb, cr)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    rebuilt_y, rebuilt_cb, rebuilt_cr = colour.rgb_to_ycbcr(rgb)
    np.testing.assert_allclose(rebuilt_y, y, atol=1e-6)
    # Hue kept: the chroma only shrinks towards grey, in the same direction.
    assert rebuilt_cr[0] > 0.5 and rebuilt_cb[1] > 0.5
    np.testing.assert_allclose((rebuilt_cb - 0.5) * (cr - 0.5), (rebuilt_cr - 0.5) * (cb - 0.5), atol=1e-6)


def test_closed_stdout_pipe_ends_quietly(tmp_path: Path) -> None:
    import SimpleITK as sitk

    volume = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6))
    path = tmp_path / "v.nii.gz"
    sitk.WriteImage(volume, str(path))
    process = subprocess.Popen(
        [sys.executable, "-m", "medfuse", "info", str(path), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == b""


def test_ycbcr_rebuild_for_display_clips_channels() -> None:
    _, cb, cr = colour.rgb_to_ycbcr(np.array([1.0, 0.0, 0.0], np.float32))
    rgb = colour.ycbcr_to_rgb(np.float32(0.9), cb, cr, keep_luminance=False)
    # Plain conversion: R saturates at 1 and G/B keep their (clipped) values: hue stays red, Y drops.
    np.testing.assert_allclose(rgb, np.clip(0.9 + (np.array([1.0, 0.0, 0.0]) - 0.299), 0, 1), atol=1e-5)
    assert colour.rgb_to_ycbcr(rgb)[0] < 0.9
