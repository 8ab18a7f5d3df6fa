"""Determinism: the same inputs give bit-identical outputs on the CPU across runs and ``--threads``.

The command line is run three times with the real network (bundled weights) on a tiny volume pair
that needs registering: ``--threads 1``, ``--threads 2`` and ``--threads 1`` again. The fused volume
and the overlay (compressed and not), the preview and the report's numbers (transform, windows) must
be identical to the bit. The 2-D path is checked the same way.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from synthetic import Grid, oblique_direction, phantom_mri, phantom_pet, rigid
from typer.testing import CliRunner

from medfuse.cli import app

runner = CliRunner()
THREADS = ("1", "2", "1")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An oblique int16 MRI and a PET moved by a known rigid transform, both small."""
    folder = tmp_path_factory.mktemp("pair")
    mri = phantom_mri(Grid((36, 40, 34), (5.0, 5.0, 5.0), oblique_direction((6.0, -4.0, 10.0))), dtype=np.int16)
    pet = phantom_pet(Grid((26, 30, 26), (7.0, 7.0, 7.0)), rigid((4.0, -3.0, 5.0), (6.0, -5.0, 4.0)))
    sitk.WriteImage(mri, str(folder / "mri.nii.gz"))
    sitk.WriteImage(pet, str(folder / "pet.nii.gz"))
    return folder / "mri.nii.gz", folder / "pet.nii.gz"


def fuse(*args: str | Path) -> None:
    result = runner.invoke(app, ["fuse", *(str(a) for a in args)])
    assert result.exit_code == 0, result.output


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _numbers(report: dict) -> dict:
    """What a report must repeat exactly: the transform, the windows and the fusion record (not timings)."""
    return {
        "transform": report["registration"]["transform"],
        "metric": report["registration"].get("metric_value"),
        "pet_window": report["pet_window"],
        "mri_window": report["mri_window"],
        "fusion": report["fusion"],
    }


@pytest.mark.slow
def test_volumes_are_bit_identical_across_runs_and_threads(pair: tuple[Path, Path], tmp_path: Path) -> None:
    mri, pet = pair
    runs = []
    for index, threads in enumerate(THREADS):
        out = tmp_path / f"run{index}"
        fuse(mri, pet, "-o", out / "fused.nii", "--threads", threads, "--preview", out / "preview.png",
             "--report", out / "report.json")  # fmt: skip
        fuse(mri, pet, "-o", out / "fused.nii.gz", "--threads", threads, "--method", "laplacian")
        names = ("fused.nii", "fused_overlay.nii", "preview.png", "fused.nii.gz", "fused_overlay.nii.gz")
        runs.append(
            {
                "files": {name: digest(out / name) for name in names},
                "report": _numbers(json.loads((out / "report.json").read_text())),
            }
        )
    assert runs[0]["report"]["fusion"]["method"] == "net" and runs[0]["report"]["fusion"]["device"] == "cpu"
    assert runs[1] == runs[0] and runs[2] == runs[0]
    fused = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "run0" / "fused.nii")))
    assert np.isfinite(fused).all() and fused.max() > 0.2  # a real result, not an empty one repeated


def test_2d_fusion_is_bit_identical_across_runs_and_threads(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for name in ("mri", "pet"):
        (tmp_path / name).mkdir()
        for index in range(3):
            Image.fromarray((rng.random((40, 36)) * 255).astype(np.uint8)).save(tmp_path / name / f"{index}.png")
    outputs = []
    for index, threads in enumerate(THREADS):
        out = tmp_path / f"out{index}"
        fuse(tmp_path / "mri", tmp_path / "pet", "-o", out, "--threads", threads)
        outputs.append({p.name: digest(p) for p in sorted(out.iterdir())})
    assert len(outputs[0]) == 3 and outputs[1] == outputs[0] and outputs[2] == outputs[0]
