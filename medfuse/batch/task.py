"""One case of a batch: the task a worker gets, how it ended, and running it.

A case is fused by :func:`medfuse.pipeline.fuse_files` into ``OUTPUT/<case>/``, all its outputs in
one transaction; any failure becomes a ``failed`` result with one sentence, never an exception.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from medfuse.batch.cases import DEFAULT_MRI_GLOBS, DEFAULT_PET_GLOBS, Case, locate_inputs
from medfuse.console import is_quiet, set_quiet
from medfuse.errors import MedfuseError
from medfuse.options import FuseOptions, OutputFormat
from medfuse.qc.case import QC_NAME

if TYPE_CHECKING:
    from medfuse.inference import Fuser

Status = Literal["ok", "failed", "skipped"]

FUSED_NAME, OVERLAY_NAME = "fused.nii.gz", "fused_overlay.nii.gz"
PREVIEW_NAME, TRANSFORM_NAME, REPORT_NAME = "preview.png", "pet_to_mri.tfm", "report.json"
#: The registered PET on the MRI grid (float32, the PET's units), for measuring.
PET_NAME = "pet_on_mri.nii.gz"
NOT_RUN = "not run: the batch was interrupted."


@dataclass(frozen=True)
class CaseTask:
    """Everything a worker needs to fuse one case (picklable, sent to processes and Dask workers)."""

    case: Case
    output_dir: Path
    options: FuseOptions
    mri_globs: tuple[str, ...] = DEFAULT_MRI_GLOBS
    pet_globs: tuple[str, ...] = DEFAULT_PET_GLOBS
    qc: bool = True  # write the case's QC page, OUTPUT/<case>/qc.html


@dataclass
class CaseResult:
    """How one case ended: one row of ``summary.csv`` plus the warnings it raised."""

    case: str
    status: Status
    error: str = ""
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def case_outputs(output_dir: Path, name: str, options: FuseOptions, qc: bool = False) -> list[Path]:
    """The files a finished case leaves in ``output_dir/name`` (with ``qc``, its QC page too)."""
    folder = output_dir / name
    names = [FUSED_NAME, OVERLAY_NAME, PREVIEW_NAME, TRANSFORM_NAME, REPORT_NAME, PET_NAME] + ([QC_NAME] if qc else [])
    if not options.overlay:
        names.remove(OVERLAY_NAME)
    return [folder / n for n in names]


def _case_options(task: CaseTask) -> FuseOptions:
    folder = task.output_dir / task.case.name
    return dataclasses.replace(
        task.options,
        preview=folder / PREVIEW_NAME,
        report=folder / REPORT_NAME,
        save_transform=folder / TRANSFORM_NAME,
        save_pet=folder / PET_NAME,
        qc=folder / QC_NAME if task.qc else None,
        transform=None,
        output_format=OutputFormat.AUTO,
    )


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def run_case(task: CaseTask, fuser: Fuser) -> CaseResult:
    """Fuse one case with a loaded fuser; any failure becomes a 'failed' result with one sentence."""
    from medfuse import pipeline

    started = time.perf_counter()
    folder = task.output_dir / task.case.name
    # The case folder is made here (and removed again if nothing lands in it), so that the run's report
    # does not warn, case after case, that its output folder was created.
    made = task.output_dir.is_dir() and not folder.exists()
    quiet = is_quiet()
    set_quiet(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                mri, pet = locate_inputs(task.case, task.mri_globs, task.pet_globs)
                if made:
                    folder.mkdir()
                pipeline.fuse_files(mri, pet, folder / FUSED_NAME, _case_options(task), fuser=fuser)
                written = case_outputs(task.output_dir, task.case.name, task.options, task.qc)
                outputs = [str(p) for p in written if p.exists()]
                status: Status = "ok"
                error = ""
            except MedfuseError as exc:
                status, error, outputs = "failed", exc.message, []
            except OSError as exc:  # the case folder could not be made
                status, error, outputs = "failed", f"{folder}: cannot create the case folder ({exc.strerror}).", []
            except Exception as exc:  # an unexpected failure ends this case only
                status, outputs = "failed", []
                error = f"unexpected internal error ({first_line(exc)}); rerun this case with medfuse --debug fuse."
    finally:
        set_quiet(quiet)
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    messages = [str(w.message) for w in caught]
    seconds = round(time.perf_counter() - started, 2)
    return CaseResult(task.case.name, status, error, seconds, outputs, list(dict.fromkeys(messages)))
