"""Synthetic fused cases for the QC report tests: volumes, run reports with and without the newer keys.

A small phantom head: the PET moved by a known rigid transform, "fused" by :class:`FakeFuser` with
that transform given as ``--transform`` (no registration, so a case takes a fraction of a second).
The full report adds the ``registration`` motion figures, ``hotspots`` and ``warnings`` as
docs/CONTRACTS.md describes them; the bare report is what a medfuse without them writes.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from synthetic import LESION_CENTRE, ORIENTATIONS, FakeFuser, Grid, phantom_mri, phantom_pet, rigid

from medfuse import pipeline
from medfuse.options import FuseOptions
from medfuse.qc.case import CaseVolumes

MRI_GRID = Grid((60, 72, 64), (3.0, 3.0, 3.0), ORIENTATIONS["RAS"], centre=(2.0, -3.0, 5.0))
PET_GRID = Grid((48, 48, 40), (4.0, 4.0, 4.4), centre=(-4.0, 6.0, 2.0))
TRUTH = rigid((5.0, -4.0, 6.0), (8.0, -6.0, 10.0))
HOSTILE = '<script>alert("x")</script></script><!--'


@dataclass
class Case:
    """A fused synthetic case in memory, with the files it was read from."""

    volumes: CaseVolumes
    report: dict[str, Any]
    mri_path: Path
    pet_path: Path
    transform_path: Path


def make_case(folder: Path) -> Case:
    """Write the inputs and the true transform to ``folder`` and fuse them (fake fuser, no registration)."""
    folder.mkdir(parents=True, exist_ok=True)
    mri, pet = phantom_mri(MRI_GRID, dtype=np.int16), phantom_pet(PET_GRID, TRUTH)
    mri_path, pet_path, transform_path = folder / "mri.nii.gz", folder / "pet.nii.gz", folder / "truth.tfm"
    sitk.WriteImage(mri, str(mri_path))
    sitk.WriteImage(pet, str(pet_path))
    sitk.WriteTransform(TRUTH, str(transform_path))
    mri, pet = (sitk.ReadImage(str(p), sitk.sitkFloat32) for p in (mri_path, pet_path))
    result = pipeline.fuse_images(mri, pet, FuseOptions(transform=transform_path), fuser=FakeFuser())
    result.report["inputs"]["mri"]["path"] = str(mri_path)
    result.report["inputs"]["pet"]["path"] = str(pet_path)
    result.report["timings_s"]["total"] = round(sum(result.report["timings_s"].values()), 4)
    volumes = CaseVolumes(mri, pet, result.pet_on_mri, result.fused, result.overlay, result.transform)
    return Case(volumes, result.report, mri_path, pet_path, transform_path)


def lesion_mri_voxel() -> list[int]:
    """The MRI voxel of the lesion centre (the PET's hottest region)."""
    image = MRI_GRID.image(np.zeros(MRI_GRID.size[::-1], np.uint8))
    return list(image.TransformPhysicalPointToIndex(LESION_CENTRE))


def full_report(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with the registration figures, hotspots and warnings of the newer contract."""
    full = copy.deepcopy(report)
    full["registration"].update(
        requested="auto",
        decision="the MRI and PET have different FrameOfReferenceUIDs, so the PET was registered",
        metric="Mattes mutual information (negative; lower is better)",
        metric_header=-0.4123,
        metric_value=-0.7524,
        moved_mm=12.34,
        rotation_deg=8.76,
        overlap=0.97,
        confidence={"level": "medium", "spread_mm": 1.8, "reason": "two starts ended 1.8 mm apart"},
    )
    lesion_pet = [round(v, 3) for v in TRUTH.TransformPoint(LESION_CENTRE)]
    full["hotspots"] = {
        "units": "SUVbw (g/mL)",
        "is_suv": True,
        "grid": "PET (native, not resampled)",
        "max": {"value": 21.37, "position_mm": lesion_pet, "mri_voxel": lesion_mri_voxel()},
        "peak": {"value": 18.02, "centre_mm": lesion_pet, "mri_voxel": lesion_mri_voxel(), "sphere_ml": 1.0},
        "threshold": {"rule": "41 % of the local maximum above background"},
        "regions": [
            {
                "rank": 1,
                "volume_ml": 3.05,
                "mean": 14.2,
                "max": 21.37,
                "peak": 18.02,
                "centre_mm": lesion_pet,
                "mri_voxel": lesion_mri_voxel(),
            },
            {
                "rank": 2,
                "volume_ml": 41.9,
                "mean": 9.1,
                "max": 10.4,
                "peak": 9.9,
                "centre_mm": [1, 2, 3],
                "mri_voxel": None,
            },
        ],
    }
    full["warnings"] = ["examples/pet.nii.gz: 12 NaN voxels were set to 0.", f"hostile {HOSTILE}"]
    return full


def bare_report(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` as a medfuse without the newer keys writes it."""
    bare = copy.deepcopy(report)
    for key in ("hotspots", "warnings"):
        bare.pop(key, None)
    for key in ("requested", "decision", "metric_header", "moved_mm", "rotation_deg", "overlap", "confidence"):
        bare["registration"].pop(key, None)
    return bare


def write_case_folder(case: Case, folder: Path, report: dict[str, Any], pet_on_mri: bool = True) -> Path:
    """A finished batch case folder: the outputs under their batch names, and ``report.json`` naming them."""
    from medfuse.preview import render_preview, write_png

    folder.mkdir(parents=True, exist_ok=True)
    volumes = case.volumes
    outputs = {
        "fused": folder / "fused.nii.gz",
        "overlay": folder / "fused_overlay.nii.gz",
        "preview": folder / "preview.png",
        "report": folder / "report.json",
        "transform": folder / "pet_to_mri.tfm",
    }
    sitk.WriteImage(volumes.fused, str(outputs["fused"]))
    sitk.WriteImage(volumes.overlay, str(outputs["overlay"]))
    sitk.WriteTransform(volumes.transform, str(outputs["transform"]))
    write_png(render_preview(volumes.overlay, "mosaic", focus=volumes.pet_on_mri), outputs["preview"])
    if pet_on_mri:
        outputs["pet"] = folder / "pet_on_mri.nii.gz"
        sitk.WriteImage(volumes.pet_on_mri, str(outputs["pet"]))
    report = {**report, "outputs": {kind: str(path) for kind, path in outputs.items()}}
    outputs["report"].write_text(json.dumps(report, indent=2), encoding="utf-8")
    return folder
