"""How many worker processes, and threads each, a local batch runs with (``--workers auto``, the default).

On a small machine one process cannot keep every core busy: reading, masks, previews and writing
run on one thread, and only registration and the network use them all. So ``auto`` runs one
single-threaded process per idle CPU, each fusing whole cases side by side, unless memory says fewer
(each process holds a case's volumes; the first case's MRI header gives their size) or there are
fewer cases than CPUs; the CPUs are then shared out as threads. CPUs that other work keeps busy
(measured over a moment before the batch) get no process of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from medfuse.errors import MedfuseError
from medfuse.memory import format_bytes

#: Resident memory of a worker process before its first case: Python, torch, ONNX Runtime, the model.
PROCESS_BASE_BYTES = 450_000_000
#: Peak memory of a case per MRI voxel on top of that: inputs, registration grids, the fused and overlay
#: volumes, writing. 33 bytes were measured on a 37.7 M-voxel case (benchmarks/bench_case.py); 40 leaves margin.
CASE_BYTES_PER_VOXEL = 40
#: What a case is assumed to hold when its MRI cannot be sized before the batch (a 1 mm head MRI).
DEFAULT_CASE_VOXELS = 256**3
#: Share of the memory available at the start that the batch plans to use.
MEMORY_SHARE = 0.8
AUTO = "auto"


@dataclass(frozen=True)
class WorkerPlan:
    """Processes and threads per process for a local batch, and why (shown to the user)."""

    processes: int
    threads: int
    reason: str

    def __str__(self) -> str:
        processes = f"{self.processes} worker process{'es' if self.processes > 1 else ''}"
        return f"{processes} × {self.threads} thread{'s' if self.threads > 1 else ''} ({self.reason})"


def parse_workers(workers: int | str) -> int | None:
    """``--workers``: a positive number, or ``None`` for ``auto``; anything else is a :class:`UsageError`."""
    from medfuse.errors import UsageError

    text = str(workers).strip().lower()
    if text == AUTO:
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UsageError(f"--workers {workers}: use auto or a number of processes (1 or more).")


def plan_workers(
    cpus: int,
    cases: int,
    available_bytes: int | None,
    case_voxels: int | None,
    threads: int | None = None,
    busy: float = 0.0,
) -> WorkerPlan:
    """The plan for ``cases`` cases on ``cpus`` CPUs with ``available_bytes`` of memory (``None``: unknown).

    ``threads`` (``--threads``) fixes the threads per process; processes then share the CPUs by it.
    ``busy`` is how many CPUs other work kept busy just before the batch (:func:`busy_cpus`); those
    (rounded, at most all but one) get no process of their own, since on a busy machine one
    multi-threaded process gets more of the CPUs than several single-threaded ones that each pay
    their start-up.
    """
    cpus, cases = max(cpus, 1), max(cases, 1)
    taken = min(cpus - 1, max(round(busy), 0))
    voxels = case_voxels or DEFAULT_CASE_VOXELS
    per_process = PROCESS_BASE_BYTES + CASE_BYTES_PER_VOXEL * voxels
    by_cpu = max(1, (cpus - taken) // threads) if threads else cpus - taken
    by_memory = by_cpu if available_bytes is None else max(1, int(available_bytes * MEMORY_SHARE // per_process))
    processes = min(by_cpu, cases, by_memory)
    free = f"{cpus} CPUs" if not taken else f"{cpus} CPUs, {busy:.1f} of them busy with other work"
    limits = {cases: f"{cases} case{'s' if cases != 1 else ''}", by_cpu: free}  # the CPUs named on a tie
    if available_bytes is not None:
        limits.setdefault(
            by_memory,
            f"{format_bytes(available_bytes)} free memory at about {format_bytes(per_process)} per process",
        )
    reason = limits.get(processes, free)
    size = f"cases of about {voxels / 1e6:.1f} M voxels" if case_voxels else "case size unknown"
    return WorkerPlan(processes, threads or max(1, cpus // processes), f"{reason}; {size}")


def busy_cpus(seconds: float = 0.1) -> float:
    """CPUs other processes keep busy, measured from /proc/stat over ``seconds`` (0 where it cannot be read).

    An instant measure rather than the load average, which still counts a batch that just ended.
    """
    import time

    def counters() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0)  # total, idle + iowait

    try:
        total_before, idle_before = counters()
        time.sleep(seconds)
        total_after, idle_after = counters()
    except (OSError, ValueError, IndexError):
        return 0.0
    elapsed = total_after - total_before
    if elapsed <= 0:
        return 0.0
    from os import cpu_count

    return (1.0 - (idle_after - idle_before) / elapsed) * (cpu_count() or 1)


def case_voxels(mri: Path) -> int | None:
    """Voxels of an MRI before reading it: from a volume file's header, or a DICOM folder's bytes (2 per voxel)."""
    try:
        if mri.is_dir():
            total = sum(path.stat().st_size for path in mri.rglob("*") if path.is_file())
            return total // 2 or None
        if mri.name.lower().endswith((".nii", ".nii.gz")):  # the header alone, without importing SimpleITK
            from medfuse.nifti import spatial_voxels

            return spatial_voxels(mri)
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(mri))
        reader.ReadImageInformation()
        return math.prod(reader.GetSize()[:3])
    except (OSError, RuntimeError, MedfuseError):
        return None
