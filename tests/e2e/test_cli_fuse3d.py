"""The ``medfuse fuse`` command on 3-D volumes and ``medfuse info``, through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import ORIENTATIONS, Grid, phantom_mri, phantom_pet, rigid
from typer.testing import CliRunner

from medfuse.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    mri = phantom_mri(Grid((56, 68, 60), (3.0, 3.0, 3.0), ORIENTATIONS["RAS"]), dtype=np.int16)
    pet = phantom_pet(Grid((44, 44, 40), (4.0, 4.0, 4.0)), rigid((4.0, -3.0, 5.0), (6.0, -5.0, 8.0)))
    sitk.WriteImage(mri, str(folder / "mri.nii.gz"))
    sitk.WriteImage(pet, str(folder / "pet.nii.gz"))
    return folder / "mri.nii.gz", folder / "pet.nii.gz"


def fuse(*args: str | Path) -> object:
    return runner.invoke(app, ["fuse", *(str(a) for a in args)])


@pytest.mark.slow
def test_fuse_writes_volumes_preview_report_and_transform(pair: tuple[Path, Path], tmp_path: Path) -> None:
    mri, pet = pair
    out = tmp_path / "out"
    result = fuse(mri, pet, "-o", out / "fused.nrrd", "--method", "laplacian", "--preview", out / "preview.png",
                  "--report", out / "report.json", "--save-transform", out / "pet_to_mri.tfm",
                  "--save-pet", out / "pet_on_mri.nii.gz")  # fmt: skip
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["fused.nrrd", "fused_overlay.nrrd", "pet_on_mri.nii.gz", "pet_to_mri.tfm", "preview.png",
                     "report.json"]  # fmt: skip
    fused = sitk.ReadImage(str(out / "fused.nrrd"))
    reference = sitk.ReadImage(str(mri))
    assert fused.GetSize() == reference.GetSize() and fused.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(fused.GetOrigin(), reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(fused.GetDirection(), reference.GetDirection(), atol=1e-6)
    report = json.loads((out / "report.json").read_text())
    assert report["fusion"]["method"] == "laplacian" and report["fusion"]["device"] == "cpu"
    summary = [line for line in result.output.splitlines() if line.startswith("Fused ")]
    assert (
        len(summary) == 1 and "laplacian on cpu" in summary[0] and "registration: rigid (the PET moved " in summary[0]
    )
    assert report["registration"]["requested"] == "auto" and report["registration"]["source"] == "rigid"
    assert "(+ overlay, preview, report, transform, pet)" in summary[0]
    hotspots = [line for line in result.output.splitlines() if line.startswith("Hotspots ")]
    assert (
        len(hotspots) == 1 and hotspots[0].startswith("Hotspots in image units: max ") and "MRI voxel (" in hotspots[0]
    )
    assert report["hotspots"]["regions"][0]["rank"] == 1
    pet_on_mri = sitk.ReadImage(str(out / "pet_on_mri.nii.gz"))
    assert pet_on_mri.GetPixelID() == sitk.sitkFloat32 and pet_on_mri.GetSize() == reference.GetSize()


@pytest.mark.slow
def test_transform_is_reused_and_register_none_needs_overlap(pair: tuple[Path, Path], tmp_path: Path) -> None:
    mri, pet = pair
    first = fuse(mri, pet, "-o", tmp_path / "a.nii.gz", "--method", "laplacian", "--no-overlay",
                 "--save-transform", tmp_path / "t.tfm")  # fmt: skip
    assert first.exit_code == 0, first.output
    second = fuse(mri, pet, "-o", tmp_path / "b.nii.gz", "--method", "laplacian", "--no-overlay",
                  "--transform", tmp_path / "t.tfm", "--report", tmp_path / "b.json")  # fmt: skip
    assert second.exit_code == 0, second.output
    assert json.loads((tmp_path / "b.json").read_text())["registration"]["source"].startswith("file ")
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b.nii.gz")))
    np.testing.assert_allclose(a, b, atol=1e-6)

    far = tmp_path / "far"
    far.mkdir()
    moved = sitk.ReadImage(str(pet))
    moved.SetOrigin(tuple(o + 600.0 for o in moved.GetOrigin()))
    sitk.WriteImage(moved, str(far / "pet.nii.gz"))
    refused = fuse(
        mri, far / "pet.nii.gz", "-o", far / "out" / "f.nii.gz", "--register", "none", "--method", "laplacian"
    )
    assert refused.exit_code == 4
    assert "overlap" in refused.output and "Traceback" not in refused.output
    assert not (far / "out").exists()


def test_four_d_pet_needs_frame_on_the_command_line(pair: tuple[Path, Path], tmp_path: Path) -> None:
    mri, pet = pair
    frames = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(str(pet)))] * 2)
    dynamic = sitk.GetImageFromArray(frames, isVector=False)
    sitk.WriteImage(dynamic, str(tmp_path / "dynamic.nii.gz"))
    refused = fuse(mri, tmp_path / "dynamic.nii.gz", "-o", tmp_path / "f.nii.gz", "--method", "laplacian")
    assert refused.exit_code == 4 and "--frame" in refused.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamic.nii.gz"]


def test_bad_inputs_end_in_one_sentence_and_their_exit_code(pair: tuple[Path, Path], tmp_path: Path) -> None:
    mri, _pet = pair
    missing = fuse(mri, tmp_path / "nope.nii.gz", "-o", tmp_path / "f.nii.gz", "--method", "laplacian")
    assert missing.exit_code == 3 and "nope.nii.gz: the PET input does not exist" in missing.output
    (tmp_path / "text.nii.gz").write_text("not an image")
    text = fuse(mri, tmp_path / "text.nii.gz", "-o", tmp_path / "f.nii.gz", "--method", "laplacian")
    assert text.exit_code == 3 and "not a readable NIfTI image" in text.output
    bad_window = fuse(mri, mri, "-o", tmp_path / "f.nii.gz", "--pet-window", "5", "1")
    assert bad_window.exit_code == 2 and "--pet-window" in bad_window.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.nii.gz"]


def test_info_prints_geometry_and_json(pair: tuple[Path, Path]) -> None:
    mri, _pet = pair
    text = runner.invoke(app, ["info", str(mri)])
    assert text.exit_code == 0, text.output
    assert "size           56 × 68 × 60" in text.output
    assert "spacing (mm)   3 × 3 × 3" in text.output and "orientation    RAS" in text.output
    assert "pixel type     16-bit signed integer" in text.output
    as_json = runner.invoke(app, ["info", str(mri), "--json"])
    described = json.loads(as_json.stdout)
    assert described["size"] == [56, 68, 60] and described["orientation"] == "RAS"
    missing = runner.invoke(app, ["info", str(mri.parent / "missing.nii.gz")])
    assert missing.exit_code == 3 and "missing.nii.gz: the input does not exist; check the path." in missing.output


def test_info_lists_and_describes_dicom_series(tmp_path: Path) -> None:
    from dicom_factory import make_series

    mri = phantom_mri(Grid((20, 22, 18), (4.0, 4.0, 4.0)), dtype=np.int16)
    built = make_series(tmp_path / "one", mri, modality="MR", description="T1 head")
    single = runner.invoke(app, ["info", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    assert "format         DICOM" in single.output and "size           20 × 22 × 18" in single.output
    assert "modality       MR" in single.output and "description    T1 head" in single.output
    assert "the only series in the folder" in single.output and "--mri-series" not in single.output
    make_series(tmp_path / "one" / "more", mri, modality="MR", description="T2 head", series_number=2)
    listed = runner.invoke(app, ["info", str(tmp_path / "one")])
    assert listed.exit_code == 0 and "size" not in listed.output
    assert sum(line.startswith("series ") for line in listed.output.splitlines()) == 2
    assert "described      none of the 2 series; pass --series UID to describe one" in listed.output
    chosen = runner.invoke(app, ["info", str(tmp_path / "one"), "--series", built.uid])
    assert chosen.exit_code == 0 and "description    T1 head" in chosen.output
    assert f"described      {built.uid}: the series given by --series" in chosen.output
    assert f"Series {built.uid} (MR, 'T1 head', 18 slices) from {tmp_path / 'one'}: the series given by --series." in (
        chosen.output
    )
    assert "--mri-series" not in chosen.output and "MRI:" not in chosen.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["info", str(tmp_path / "empty")])  # not "none of the 0 series"
    assert empty.exit_code == 3 and "empty: holds no DICOM images; point to the folder of the exported series" in (
        " ".join(empty.output.split())
    )


@pytest.mark.slow
def test_default_method_is_the_bundled_network(pair: tuple[Path, Path], tmp_path: Path) -> None:
    from medfuse.inference import BUNDLED

    mri, pet = pair
    result = fuse(mri, pet, "-o", tmp_path / "fused.nii.gz", "--report", tmp_path / "report.json", "--threads", "1")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["fusion"]["method"] == "net"
    assert report["fusion"]["weights_sha256"] == BUNDLED["uptake"].weights_sha256  # volumes: the uptake network
    fused = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "fused.nii.gz")))
    assert np.isfinite(fused).all() and fused.min() >= 0.0 and fused.max() <= 1.0 and fused.max() > 0.2
