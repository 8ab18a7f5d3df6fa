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

if TYPE_CHECKING:
    from medfuse.inference import Fuser

Status = Literal["ok", "failed", "skipped"]

FUSED_NAME, OVERLAY_NAME = "fused.nii.gz", "fused_overlay.nii.gz"
PREVIEW_NAME, TRANSFORM_NAME, REPORT_NAME = "preview.png", "pet_to_mri.tfm", "report.json"
NOT_RUN = "not run: the batch was interrupted."


@dataclass(frozen=True)
class CaseTask:
    """Everything a worker needs to fuse one case (picklable, sent to processes and Dask workers)."""

    case: Case
    output_dir: Path
    options: FuseOptions
    mri_globs: tuple[str, ...] = DEFAULT_MRI_GLOBS
    pet_globs: tuple[str, ...] = DEFAULT_PET_GLOBS


@dataclass
class CaseResult:
    """How one case ended: one row of ``summary.csv`` plus the warnings it raised."""

    case: str
    status: Status
    error: str = ""
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def case_outputs(output_dir: Path, name: str, options: FuseOptions) -> list[Path]:
    """The files a finished case leaves in ``output_dir/name``."""
    folder = output_dir / name
    names = [FUSED_NAME, OVERLAY_NAME, PREVIEW_NAME, TRANSFORM_NAME, REPORT_NAME]
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
    quiet = is_quiet()
    set_quiet(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                mri, pet = locate_inputs(task.case, task.mri_globs, task.pet_globs)
                pipeline.fuse_files(mri, pet, folder / FUSED_NAME, _case_options(task), fuser=fuser)
                outputs = [str(p) for p in case_outputs(task.output_dir, task.case.name, task.options) if p.exists()]
                status: Status = "ok"
                error = ""
            except MedfuseError as exc:
                status, error, outputs = "failed", exc.message, []
            except Exception as exc:  # an unexpected failure ends this case only
                status, outputs = "failed", []
                error = f"unexpected internal error ({first_line(exc)}); rerun this case with medfuse --debug fuse."
    finally:
        set_quiet(quiet)
    created = f"{folder}: the output folder did not exist and was created."
    messages = [str(w.message) for w in caught if str(w.message) != created]
    seconds = round(time.perf_counter() - started, 2)
    return CaseResult(task.case.name, status, error, seconds, outputs, list(dict.fromkeys(messages)))
