"""--workers auto: processes x threads from CPUs, cases, free memory and case size; the batch progress display."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from rich.console import Console

from medfuse.batch import plan
from medfuse.batch.plan import WorkerPlan, case_voxels, parse_workers, plan_workers
from medfuse.console import batch_progress
from medfuse.errors import UsageError

GB = 1_000_000_000


@pytest.mark.parametrize(
    ("cpus", "cases", "memory", "voxels", "threads", "expected"),
    [
        (2, 8, 20 * GB, 2_600_000, None, (2, 1)),  # the example cases on this machine: one process per core
        (2, 1, 20 * GB, 2_600_000, None, (1, 2)),  # one case: one process, both cores as threads
        (8, 3, 64 * GB, 2_600_000, None, (3, 2)),  # fewer cases than CPUs: the CPUs shared out as threads
        (8, 20, 4 * GB, 37_700_000, None, (1, 8)),  # clinical-size cases on a small laptop: memory decides
        (8, 20, 8 * GB, 37_700_000, None, (3, 2)),
        (16, 40, None, None, None, (16, 1)),  # memory unknown: CPUs decide
        (8, 40, 64 * GB, 2_600_000, 2, (4, 2)),  # --threads 2 given: processes share the CPUs by it
        (1, 5, 1 * GB, 500_000_000, None, (1, 1)),  # never fewer than one process
    ],
)
def test_auto_chooses_processes_and_threads(
    cpus: int, cases: int, memory: int | None, voxels: int | None, threads: int | None, expected: tuple[int, int]
) -> None:
    chosen = plan_workers(cpus, cases, memory, voxels, threads)
    assert (chosen.processes, chosen.threads) == expected
    needed = plan.PROCESS_BASE_BYTES + plan.CASE_BYTES_PER_VOXEL * (voxels or plan.DEFAULT_CASE_VOXELS)
    assert memory is None or chosen.processes == 1 or chosen.processes * needed <= memory * plan.MEMORY_SHARE


@pytest.mark.parametrize(
    ("cpus", "busy", "threads", "expected"),
    [
        (2, 0.3, None, (2, 1)),  # an idle machine: one process per CPU
        (2, 1.2, None, (1, 2)),  # others keep a CPU busy: one process, both CPUs as threads
        (8, 2.4, None, (6, 1)),  # two of eight busy: six processes
        (8, 2.4, 2, (3, 2)),
        (4, 4.0, None, (1, 4)),  # never fewer than one process
    ],
)
def test_cpus_busy_with_other_work_get_no_process(
    cpus: int, busy: float, threads: int | None, expected: tuple[int, int]
) -> None:
    chosen = plan_workers(cpus, 50, 64 * GB, 2_600_000, threads, busy)
    assert (chosen.processes, chosen.threads) == expected
    if round(busy):
        assert f"{busy:.1f} of them busy with other work" in chosen.reason


def test_busy_cpus_is_measured_between_none_and_all() -> None:
    assert 0.0 <= plan.busy_cpus(0.05) <= (__import__("os").cpu_count() or 1) + 1e-9


def test_the_plan_says_what_limited_it() -> None:
    assert str(plan_workers(2, 8, 20 * GB, 2_600_000)) == (
        "2 worker processes × 1 thread (2 CPUs; cases of about 2.6 M voxels)"
    )
    assert "1 case;" in str(plan_workers(2, 1, 20 * GB, 2_600_000))
    assert "4.0 GB free memory at about 2.0 GB per process" in plan_workers(8, 20, 4 * GB, 37_700_000).reason
    assert plan_workers(4, 4, None, None).reason.endswith("case size unknown")


@pytest.mark.parametrize(("text", "value"), [("auto", None), ("AUTO", None), (" 3 ", 3), (1, 1), ("12", 12)])
def test_workers_option_values(text: str | int, value: int | None) -> None:
    assert parse_workers(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "two", "", "1.5"])
def test_bad_workers_option_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match=f"--workers {text}: use auto or a number"):
        parse_workers(text)


def test_case_size_comes_from_the_header_or_the_dicom_bytes(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.zeros((7, 11, 13), dtype=np.int16))
    sitk.WriteImage(image, str(tmp_path / "mri.nii.gz"))
    assert case_voxels(tmp_path / "mri.nii.gz") == 7 * 11 * 13
    folder = tmp_path / "dicom"
    folder.mkdir()
    for index in range(4):
        (folder / f"{index}.dcm").write_bytes(bytes(1000))
    assert case_voxels(folder) == 2000
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    assert case_voxels(tmp_path / "broken.nii.gz") is None


def test_progress_shows_cases_done_failed_and_an_eta() -> None:
    screen = io.StringIO()
    with batch_progress(Console(file=screen, force_terminal=True, width=160)) as progress:
        task = progress.add_task("Fusing cases", total=8, failed=0)
        progress.update(task, advance=3, failed=1)
        progress.refresh()
    shown = screen.getvalue()
    assert "Fusing cases" in shown and "3/8" in shown and "done, 1 failed" in shown and "ETA" in shown


def test_worker_plan_is_plain_data() -> None:
    assert WorkerPlan(2, 1, "2 CPUs") == WorkerPlan(2, 1, "2 CPUs")
