"""The options of a fusion run, shared by the CLI, the Python API and batch mode, and the one place they are checked.

:class:`FuseOptions` is a plain dataclass with no heavy imports, so the CLI can build it before torch
or SimpleITK load and batch mode can send it to worker processes (it pickles). Options with a fixed
set of values are enums (:class:`Method`, :class:`RegisterMode`, :class:`OutputFormat`): the enum is
the only list of the values, and the CLI's help and error messages come from it, so a new value is
one new member. Their members are strings too (``RegisterMode.RIGID == "rigid"``), so library users
may pass plain strings; :func:`check_options` turns them into members.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from medfuse.errors import UsageError

C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """An option with a fixed set of values; a member compares, hashes, prints and serialises as its value."""

    #: The command-line flag and the noun its error message uses (``--register``, ``mode``).
    option: ClassVar[str]
    noun: ClassVar[str]

    def __init_subclass__(cls, *, option: str = "", noun: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.option, cls.noun = option, noun

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def choices(cls) -> str:
        """The values in words: ``rigid, affine or none``."""
        values = [str(member.value) for member in cls]
        return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"

    @classmethod
    def parse(cls: type[C], value: str) -> C:
        """The member whose value is ``value``; an unknown value is a :class:`UsageError` naming the option."""
        try:
            return cls(value)
        except ValueError:
            raise UsageError(f"{cls.option} {value}: unknown {cls.noun}; use {cls.choices()}.") from None


class Method(Choice, option="--method", noun="method"):
    """How slices are fused: the trained network or the classical Laplacian-pyramid baseline."""

    NET = "net"
    LAPLACIAN = "laplacian"


class RegisterMode(Choice, option="--register", noun="mode"):
    """How the PET is placed on the MRI: as the scanners placed it when DICOM says both share a frame
    of reference, else registered rigidly (auto); always registered (rigid, affine); never (none)."""

    AUTO = "auto"
    RIGID = "rigid"
    AFFINE = "affine"
    NONE = "none"


class OutputFormat(Choice, option="--format", noun="format"):
    """The format of the fused volume: from -o's extension (auto), a named file format, or DICOM series."""

    AUTO = "auto"
    NIFTI = "nifti"
    NRRD = "nrrd"
    MHA = "mha"
    DICOM = "dicom"


#: Share of the PET (the network's PET input) blended into the fused volume, voxel by voxel: every voxel then
#: brightens with its own uptake whatever the fusion learned, and at 0.15 the fused volume rises with uptake
#: within each MRI-intensity decile in >= 91 % of steps on the bundled example and every phantom, with each of
#: four training seeds of the network (model card, "The PET blend"); it costs the anatomy 15 % of its contrast.
DEFAULT_PET_BLEND = 0.15


@dataclass
class FuseOptions:
    """Everything that steers one fusion, with the defaults the CLI shows."""

    method: Method = Method.NET
    weights: Path | None = None
    device: str = "auto"
    threads: int | None = None
    batch_size: int = 16
    register: RegisterMode = RegisterMode.AUTO
    transform: Path | None = None
    save_transform: Path | None = None
    save_pet: Path | None = None
    frame: str | None = None
    pet_window: tuple[float, float] | None = None
    pet_blend: float = DEFAULT_PET_BLEND
    colormap: str = "aanlib"
    overlay: bool = True
    preview: Path | None = None
    report: Path | None = None
    overwrite: bool = False
    output_format: OutputFormat = OutputFormat.AUTO
    suv: bool = False
    mri_series: str | None = None
    pet_series: str | None = None
    allow_different_patients: bool = False
    qc: Path | None = None  # the QC report page (HTML) of a volume fusion


def check_options(options: FuseOptions) -> FuseOptions:
    """Refuse contradicting or unknown option values before anything is loaded; return them as enums.

    Checks the method, device, register mode, output format, PET window and blend, batch size and colour map;
    a :class:`UsageError` names the option. Plain strings (library callers) become enum members.
    """
    from medfuse.colour import colormap_lut
    from medfuse.device import check_device

    method = Method.parse(options.method)
    check_device(method, options.device)
    register = RegisterMode.parse(options.register)
    output_format = OutputFormat.parse(options.output_format)
    if options.pet_window is not None:
        low, high = (float(v) for v in options.pet_window)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise UsageError(f"--pet-window {low:g} {high:g}: LOW must be a number below HIGH (image units).")
    if not 0.0 <= options.pet_blend < 1.0:
        raise UsageError(f"--pet-blend {options.pet_blend:g}: use a share from 0 (off) to below 1.")
    if options.batch_size < 1:
        raise UsageError(f"--batch-size {options.batch_size}: use a positive number of slices.")
    colormap_lut(options.colormap)
    return dataclasses.replace(options, method=method, register=register, output_format=output_format)
