"""Batch fusion of study folders: one case per subfolder (or per row of a pairs CSV).

Each case is fused by :func:`medfuse.pipeline.fuse_files` into ``OUTPUT/<case>/`` (``fused.nii.gz``,
``fused_overlay.nii.gz``, ``preview.png``, ``pet_to_mri.tfm``, ``report.json``, ``pet_on_mri.nii.gz``),
all written in one output transaction, so a case's outputs appear whole or not at all. A failing case is recorded and
the batch goes on; ``OUTPUT/summary.csv`` lists every case (written atomically, also after Ctrl-C).

Cases run in this process (``workers=1``), in this process and ``workers - 1`` spawned ones, or as
tasks on an existing Dask cluster (``scheduler``); every process loads the fusion model once.

Running on a site's own Dask cluster (``pip install "medfuse[distributed]"`` on every machine)::

    dask scheduler --port 8786                               # on one host
    dask worker tcp://HOST:8786 --nworkers 4 --nthreads 1    # on each compute host
    medfuse batch /shared/studies -o /shared/fused --scheduler tcp://HOST:8786

The workers read the inputs and write the outputs themselves, so INPUT_DIR and OUTPUT_DIR must be on
a file system every worker sees under the same path (paths are sent as absolute paths), and every
worker needs the same medfuse (and weights). A worker process runs one case at a time; parallelism
comes from ``--nworkers``; ``--threads`` sets the torch/ITK threads of each case.

Modules: :mod:`~medfuse.batch.cases` (finding cases and their inputs), :mod:`~medfuse.batch.task`
(one case), :mod:`~medfuse.batch.workers` (processes, Dask) and :mod:`~medfuse.batch.run`
(:func:`run_batch`, the summary).
"""

from medfuse.batch.cases import DEFAULT_MRI_GLOBS, DEFAULT_PET_GLOBS, Case, find_cases, locate_inputs, read_pairs
from medfuse.batch.run import SUMMARY_NAME, BatchResult, print_summary, run_batch, write_summary
from medfuse.batch.task import (
    FUSED_NAME,
    OVERLAY_NAME,
    PET_NAME,
    PREVIEW_NAME,
    REPORT_NAME,
    TRANSFORM_NAME,
    CaseResult,
    CaseTask,
    case_outputs,
    run_case,
)
from medfuse.batch.workers import run_case_on_worker

__all__ = [
    "DEFAULT_MRI_GLOBS",
    "DEFAULT_PET_GLOBS",
    "FUSED_NAME",
    "OVERLAY_NAME",
    "PET_NAME",
    "PREVIEW_NAME",
    "REPORT_NAME",
    "SUMMARY_NAME",
    "TRANSFORM_NAME",
    "BatchResult",
    "Case",
    "CaseResult",
    "CaseTask",
    "case_outputs",
    "find_cases",
    "locate_inputs",
    "print_summary",
    "read_pairs",
    "run_batch",
    "run_case",
    "run_case_on_worker",
    "write_summary",
]
