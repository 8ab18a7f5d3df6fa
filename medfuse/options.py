"""The options of a fusion run, shared by the CLI, the Python API and batch mode.

A plain dataclass with no heavy imports, so the CLI can build it before torch or SimpleITK load and
batch mode can send it to worker processes (it pickles).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

RegisterMode = Literal["rigid", "affine", "none"]
Method = Literal["net", "laplacian"]
OutputFormat = Literal["auto", "nifti", "nrrd", "mha", "dicom"]


@dataclass
class FuseOptions:
    """Everything that steers one fusion, with the defaults the CLI shows."""

    method: Method = "net"
    weights: Path | None = None
    device: str = "auto"
    threads: int | None = None
    batch_size: int = 16
    register: RegisterMode = "rigid"
    transform: Path | None = None
    save_transform: Path | None = None
    frame: str | None = None
    pet_window: tuple[float, float] | None = None
    colormap: str = "aanlib"
    overlay: bool = True
    preview: Path | None = None
    report: Path | None = None
    overwrite: bool = False
    output_format: OutputFormat = "auto"
    suv: bool = False
    mri_series: str | None = None
    pet_series: str | None = None
    allow_different_patients: bool = False
