"""Running a batch: check the output folder, run the cases, and report them in ``summary.csv`` and a table."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from medfuse.atomic import check_output_path, output_transaction
from medfuse.batch.cases import DEFAULT_MRI_GLOBS, DEFAULT_PET_GLOBS, Case, find_cases, locate_inputs, read_pairs
from medfuse.batch.plan import AUTO, busy_cpus, case_voxels, parse_workers, plan_workers
from medfuse.batch.task import NOT_RUN, CaseResult, CaseTask, Status, case_outputs
from medfuse.batch.workers import connect, run_dask, run_here, run_processes
from medfuse.console import batch_progress, console, info, is_quiet, show_warning, warn
from medfuse.device import usable_cpus
from medfuse.errors import InvalidInputError, MedfuseError, OutputError, UsageError
from medfuse.memory import available_memory
from medfuse.options import FuseOptions
from medfuse.qc.index import INDEX_NAME

SUMMARY_NAME = "summary.csv"
SUMMARY_COLUMNS = ("case", "status", "error", "seconds", "outputs")


@dataclass
class BatchResult:
    """All case results, in case order, and where the summary was written."""

    cases: list[CaseResult]
    summary: Path
    index: Path | None = None  # the QC index page, when the batch wrote one

    @property
    def failed(self) -> list[CaseResult]:
        return [case for case in self.cases if case.status == "failed"]

    def count(self, status: Status) -> int:
        """Number of cases that ended with ``status``."""
        return sum(case.status == status for case in self.cases)


def _absolute(case: Case) -> Case:
    return Case(case.name, *(p.absolute() if p is not None else None for p in (case.folder, case.mri, case.pet)))


def _check_output(output_dir: Path, input_dir: Path | None) -> Path:
    """Refuse an output folder that is a file, an input, or inside the input folder (nothing is created)."""
    output_dir = check_output_path(output_dir, is_dir=True, overwrite=True, inputs=[input_dir] if input_dir else ())
    if input_dir is not None and output_dir.resolve().is_relative_to(input_dir.resolve()):
        raise OutputError(
            f"{output_dir}: is inside the input folder {input_dir}, where it would be taken for a case; "
            "choose an output folder outside it."
        )
    return output_dir


def _create_folder(output_dir: Path) -> None:
    if output_dir.exists():
        return
    try:
        output_dir.mkdir()
    except OSError as exc:
        raise OutputError(f"{output_dir}: cannot create the output folder ({exc.strerror}).") from exc
    warn(f"{output_dir}: the output folder did not exist and was created.")


def _precheck(task: CaseTask, skip_existing: bool) -> CaseResult | None:
    """A result without running the case: skipped (already done) or failed (old outputs in the way)."""
    expected = case_outputs(task.output_dir, task.case.name, task.options)
    existing = [p for p in expected if p.exists()]
    if skip_existing and len(existing) == len(expected):
        return CaseResult(task.case.name, "skipped", "", 0.0, [str(p) for p in expected])
    if existing and not task.options.overwrite:
        return CaseResult(
            task.case.name,
            "failed",
            f"{task.output_dir / task.case.name}: outputs of an earlier run are there; pass --skip-existing to keep "
            "finished cases or --overwrite to fuse them again.",
        )
    return None


def write_summary(results: list[CaseResult], path: Path) -> Path:
    """Write ``summary.csv`` (case, status, error, seconds, outputs) atomically, replacing an older one."""

    def writer(temp: Path) -> None:
        with temp.open("w", newline="", encoding="utf-8") as handle:
            table = csv.writer(handle)
            table.writerow(SUMMARY_COLUMNS)
            for r in results:
                table.writerow([r.case, r.status, r.error, f"{r.seconds:.2f}", ";".join(r.outputs)])

    with output_transaction(overwrite=True) as transaction:
        transaction.write(path, writer)
    return path


def run_batch(
    input_dir: str | Path | None,
    output_dir: str | Path,
    options: FuseOptions,
    *,
    pairs: str | Path | None = None,
    mri_globs: Sequence[str] = DEFAULT_MRI_GLOBS,
    pet_globs: Sequence[str] = DEFAULT_PET_GLOBS,
    skip_existing: bool = False,
    workers: int | str = AUTO,
    scheduler: str | None = None,
    qc: bool = True,
) -> BatchResult:
    """Fuse every case of ``input_dir`` (or of the ``pairs`` CSV) into ``output_dir``; never stops at a failed case.

    ``workers`` > 1 runs cases in that many processes, this one included (each with ``options.threads``
    or, by default, an equal share of the CPUs); ``"auto"`` (the default) chooses processes and threads
    from the CPUs, the free memory and the first case's size (:mod:`medfuse.batch.plan`);
    ``scheduler`` (``tcp://host:port``) sends the cases to a Dask cluster instead. ``qc`` writes each
    case's QC page (``<case>/qc.html``) and the batch's ``index.html``. Returns the results;
    ``summary.csv`` (and the index) are written even when interrupted.
    """
    if (input_dir is None) == (pairs is None):
        raise UsageError("give either INPUT_DIR (one subfolder per case) or --pairs FILE.csv, not both or neither.")
    requested = parse_workers(workers)
    if scheduler is not None and requested not in (None, 1):
        raise UsageError("--workers applies to local runs; with --scheduler the Dask cluster sets the parallelism.")
    input_path = Path(input_dir) if input_dir is not None else None
    cases = find_cases(input_path) if input_path is not None else read_pairs(Path(pairs))  # type: ignore[arg-type]
    if scheduler is not None:  # Dask workers run elsewhere: give them absolute paths
        cases = [_absolute(case) for case in cases]
        output_dir = Path(output_dir).absolute()
    if not cases:
        raise InvalidInputError(
            f"{input_path}: holds no case folders; put each study (one MRI and one PET) in its own subfolder, "
            "or list the cases with --pairs."
        )
    output_path = _check_output(Path(output_dir), input_path)
    tasks = [CaseTask(case, output_path, options, tuple(mri_globs), tuple(pet_globs), qc) for case in cases]
    results = {task.case.name: early for task in tasks if (early := _precheck(task, skip_existing))}
    pending = [task for task in tasks if task.case.name not in results]
    parallel = min(requested or 1, len(pending))
    threads = max(1, usable_cpus() // max(parallel, 1))
    if scheduler is None and requested is None and pending:
        plan = plan_workers(
            usable_cpus(),
            len(pending),
            available_memory(),
            _first_case_voxels(pending),
            options.threads,
            busy_cpus(),
        )
        parallel, threads = plan.processes, plan.threads
        info(f"Running {plan}.")
    if scheduler is None and parallel > 1 and options.threads is None:  # share the CPUs, do not oversubscribe
        options = dataclasses.replace(options, threads=threads)
        pending = [dataclasses.replace(task, options=options) for task in pending]

    from medfuse import inference

    # Set up before anything is written: a wrong scheduler, weights file or device stops here.
    client = connect(scheduler) if scheduler is not None and pending else None
    try:
        if client is not None:
            runs = run_dask(pending, client)
        elif not pending:
            runs = iter(())
        elif parallel > 1:
            runs = run_processes(
                pending,
                lambda: inference.load_fuser(options),
                options,
                parallel,
                late=_keeper(results),
                ready=lambda: _create_folder(output_path),
            )
        else:
            runs = run_here(pending, inference.load_fuser(options))
        _create_folder(output_path)
        ordered = _collect(runs, tasks, results, len(pending), output_path / SUMMARY_NAME, qc)
    finally:
        if client is not None:
            client.close()
    return BatchResult(ordered, output_path / SUMMARY_NAME, output_path / INDEX_NAME if qc else None)


def _first_case_voxels(tasks: list[CaseTask]) -> int | None:
    """Voxels of the first case's MRI, read from its header (``None`` when it cannot be found or read)."""
    task = tasks[0]
    try:
        mri, _pet = locate_inputs(task.case, task.mri_globs, task.pet_globs)
    except MedfuseError:
        return None
    return case_voxels(mri)


def _keeper(results: dict[str, CaseResult]) -> Callable[[CaseResult], None]:
    """A callback storing a result that arrives after the batch was interrupted."""

    def keep(result: CaseResult) -> None:
        results[result.case] = result

    return keep


def _collect(
    runs: Iterator[CaseResult],
    tasks: list[CaseTask],
    results: dict[str, CaseResult],
    total: int,
    summary: Path,
    qc: bool,
) -> list[CaseResult]:
    """Gather results with a progress bar; write the summary (and the QC index) at the end, or when interrupted."""
    try:
        with batch_progress() as progress:
            bar = progress.add_task("Fusing cases", total=total, failed=0)
            failed = 0
            for result in runs:
                results[result.case] = result
                for message in result.warnings:
                    show_warning(f"{result.case}: {message}")
                if result.status == "failed":
                    failed += 1
                    if not is_quiet():
                        progress.console.print(f"{result.case}: failed: {result.error}", markup=False, highlight=False)
                progress.update(bar, advance=1, failed=failed)
    finally:
        ordered = [results.get(t.case.name) or CaseResult(t.case.name, "skipped", NOT_RUN) for t in tasks]
        write_summary(ordered, summary)
        if qc:
            _write_index(summary.parent, ordered)
    return ordered


def _write_index(output_dir: Path, results: list[CaseResult]) -> None:
    """Write the QC index; a failure to do so is a warning, never the batch's failure."""
    from medfuse.qc.index import write_index

    try:
        write_index(output_dir, results)
    except (MedfuseError, OSError) as exc:
        warn(f"{output_dir / INDEX_NAME}: the QC index could not be written ({exc}).")


def print_summary(result: BatchResult) -> None:
    """A table of the cases (status, seconds, error) and the totals, on stderr unless quiet."""
    if is_quiet():
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title="medfuse batch", title_justify="left")
    for column, justify in (("case", "left"), ("status", "left"), ("seconds", "right"), ("error", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    styles = {"ok": "green", "failed": "bold red", "skipped": "yellow"}
    for case in result.cases:
        table.add_row(
            Text(case.case), Text(case.status, style=styles[case.status]), f"{case.seconds:.1f}", Text(case.error)
        )
    console.print(table)
    index = f", QC index {result.index}" if result.index is not None and result.index.exists() else ""
    console.print(
        f"{result.count('ok')} ok, {result.count('failed')} failed, {result.count('skipped')} skipped; "
        f"summary written to {result.summary}{index}",
        markup=False,
        highlight=False,
    )
