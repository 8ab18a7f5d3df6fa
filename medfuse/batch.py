"""Batch fusion of study folders: one case per subfolder (or per row of a pairs CSV).

Each case is fused by :func:`medfuse.pipeline.fuse_files` into ``OUTPUT/<case>/`` (``fused.nii.gz``,
``fused_overlay.nii.gz``, ``preview.png``, ``pet_to_mri.tfm``, ``report.json``), all written in one
output transaction, so a case's outputs appear whole or not at all. A failing case is recorded and
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
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fnmatch
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medfuse.atomic import VOLUME_EXTENSIONS, check_output_path, full_suffix, output_transaction
from medfuse.console import console, is_quiet, make_progress, set_quiet, show_warning, warn
from medfuse.errors import InvalidInputError, MedfuseError, OutputError, UnreadableInputError, UsageError
from medfuse.options import FuseOptions

Status = Literal["ok", "failed", "skipped"]

DEFAULT_MRI_GLOBS: tuple[str, ...] = ("mri*", "t1*")
DEFAULT_PET_GLOBS: tuple[str, ...] = ("pet*",)
SUMMARY_NAME = "summary.csv"
SUMMARY_COLUMNS = ("case", "status", "error", "seconds", "outputs")
FUSED_NAME, OVERLAY_NAME = "fused.nii.gz", "fused_overlay.nii.gz"
PREVIEW_NAME, TRANSFORM_NAME, REPORT_NAME = "preview.png", "pet_to_mri.tfm", "report.json"
_VOLUME_FILES = (*VOLUME_EXTENSIONS, ".nhdr", ".mhd")
_MRI_MODALITIES, _PET_MODALITIES = ("MR",), ("PT", "NM")  # PET first, SPECT (NM) when there is no PET


@dataclass(frozen=True)
class Case:
    """One study: its name (the output subfolder) and either a folder to search or explicit inputs."""

    name: str
    folder: Path | None = None
    mri: Path | None = None
    pet: Path | None = None


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


@dataclass
class BatchResult:
    """All case results, in case order, and where the summary was written."""

    cases: list[CaseResult]
    summary: Path

    @property
    def failed(self) -> list[CaseResult]:
        return [case for case in self.cases if case.status == "failed"]

    def count(self, status: Status) -> int:
        """Number of cases that ended with ``status``."""
        return sum(case.status == status for case in self.cases)


# ---- finding cases and their inputs -------------------------------------------------------------------
def find_cases(input_dir: Path) -> list[Case]:
    """One case per (non-hidden) subfolder of ``input_dir``, sorted by name."""
    if not input_dir.exists():
        raise UnreadableInputError(f"{input_dir}: the input folder does not exist; check the path.")
    if not input_dir.is_dir():
        raise UsageError(f"{input_dir}: is a file; batch takes a folder with one subfolder per case (or --pairs).")
    folders = sorted(p for p in input_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [Case(name=folder.name, folder=folder) for folder in folders]


def _check_case_name(name: str, where: str) -> None:
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise InvalidInputError(
            f"{where}: case name {name!r} cannot be used as an output folder name; use letters, digits, - or _."
        )


def read_pairs(pairs: Path) -> list[Case]:
    """Cases from a CSV with columns case, mri, pet; relative paths are taken from the CSV's folder."""
    if not pairs.is_file():
        raise UnreadableInputError(f"{pairs}: the pairs file does not exist; check the --pairs path.")
    try:
        text = pairs.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableInputError(f"{pairs}: cannot be read as a UTF-8 CSV file ({exc}); save it as CSV.") from exc
    try:
        dialect: Any = csv.Sniffer().sniff(text.splitlines()[0] if text.strip() else ",", delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    columns = {name.strip().lower(): name for name in reader.fieldnames or []}
    missing = [name for name in ("case", "mri", "pet") if name not in columns]
    if missing:
        raise InvalidInputError(
            f"{pairs}: the pairs file lacks the column(s) {', '.join(missing)}; its first row must name "
            "the columns case, mri and pet."
        )
    cases: list[Case] = []
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        values = {key: (row.get(columns[key]) or "").strip() for key in ("case", "mri", "pet")}
        if not any(values.values()):
            continue
        where = f"{pairs} line {line}"
        _check_case_name(values["case"], where)
        if values["case"] in seen:
            raise InvalidInputError(f"{where}: case {values['case']!r} appears twice; give each case a unique name.")
        if not values["mri"] or not values["pet"]:
            raise InvalidInputError(f"{where}: case {values['case']!r} needs both an mri and a pet path.")
        seen.add(values["case"])
        mri, pet = (pairs.parent / Path(values[key]).expanduser() for key in ("mri", "pet"))
        cases.append(Case(values["case"], mri=mri, pet=pet))
    if not cases:
        raise InvalidInputError(f"{pairs}: the pairs file lists no cases; add one row per case (case, mri, pet).")
    return cases


def _common_folder(paths: Iterable[Path]) -> Path:
    common = Path(os.path.commonpath([str(p) for p in paths]))
    return common.parent if common.is_file() else common


def _is_volume_file(path: Path) -> bool:
    return not path.name.startswith(".") and full_suffix(path.name.lower()) in _VOLUME_FILES


def _named(folder: Path, globs: Sequence[str]) -> list[Path]:
    """Inputs found by name under ``folder`` (case-insensitive globs).

    A volume file counts when its name, or the name of a folder it is in, matches; a matching folder
    with no volume file inside counts itself (a DICOM folder whose headers did not say MR or PT).
    """
    patterns = [g.lower() for g in globs]

    def matches(name: str) -> bool:
        return any(fnmatch.fnmatch(name.lower(), p) for p in patterns)

    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(root)
        in_match = any(matches(part) for part in here.relative_to(folder).parts)
        found += [here / f for f in sorted(files) if _is_volume_file(here / f) and (in_match or matches(f))]
        for name in dirs:
            if matches(name) and not in_match and not any(_is_volume_file(p) for p in (here / name).rglob("*")):
                found.append(here / name)
    return sorted(found)


def locate_inputs(
    case: Case, mri_globs: Sequence[str] = DEFAULT_MRI_GLOBS, pet_globs: Sequence[str] = DEFAULT_PET_GLOBS
) -> tuple[Path, Path]:
    """The MRI and PET inputs of a case: explicit, by DICOM Modality, else by file or folder name."""
    if case.folder is None:
        assert case.mri is not None and case.pet is not None
        return case.mri, case.pet
    from medfuse.dicom import list_series

    series = list_series(case.folder)
    found: dict[str, Path] = {}
    for role, modalities, globs in (("MRI", _MRI_MODALITIES, mri_globs), ("PET", _PET_MODALITIES, pet_globs)):
        for modality in modalities:
            matching = [s for s in series if s.modality == modality]
            if matching:
                found[role] = _common_folder(p for s in matching for p in s.paths)
                break
        else:
            candidates = _named(case.folder, globs)
            names = ", ".join(globs)
            if not candidates:
                raise InvalidInputError(
                    f"{case.folder}: no {role} found (no DICOM series of modality {' or '.join(modalities)} "
                    f"and no volume file or folder named {names}); add it, rename it or list the case in --pairs."
                )
            if len(candidates) > 1:
                listed = ", ".join(str(p.relative_to(case.folder)) for p in candidates)
                raise InvalidInputError(
                    f"{case.folder}: several {role} candidates match {names} ({listed}); keep one or list the "
                    "case in --pairs."
                )
            found[role] = candidates[0]
    if found["MRI"] == found["PET"] and not found["MRI"].is_dir():
        raise InvalidInputError(
            f"{found['MRI']}: matches both the MRI and the PET names; rename it or list the case in --pairs."
        )
    return found["MRI"], found["PET"]


# ---- one case ---------------------------------------------------------------------------------------
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
        output_format="auto",
    )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def run_case(task: CaseTask, fuser: Any) -> CaseResult:
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
                error = f"unexpected internal error ({_first_line(exc)}); rerun this case with medfuse --debug fuse."
    finally:
        set_quiet(quiet)
    created = f"{folder}: the output folder did not exist and was created."
    messages = [str(w.message) for w in caught if str(w.message) != created]
    seconds = round(time.perf_counter() - started, 2)
    return CaseResult(task.case.name, status, error, seconds, outputs, list(dict.fromkeys(messages)))


# ---- worker processes and Dask workers: one fuser per process, built on first use -------------------
_FUSERS: dict[tuple[Any, ...], Any] = {}
# One case at a time per process: warning capture and the quiet switch are process-wide, and a case
# holds whole volumes in memory. A Dask worker with several threads therefore runs its cases in turn;
# parallelism comes from worker processes (dask worker --nworkers N --nthreads 1).
_CASE_LOCK = threading.Lock()


def _cached_fuser(options: FuseOptions) -> Any:
    key = (options.method, str(options.weights), options.device, options.threads, options.batch_size)
    if key not in _FUSERS:
        from medfuse import inference

        _FUSERS[key] = inference.load_fuser(options)
    return _FUSERS[key]


# Ctrl-C in a worker process interrupts the case it is running (whose outputs roll back) and makes
# it skip the cases still queued for it; while idle it only remembers the request.
_STOP = threading.Event()
_RUNNING = threading.Event()
NOT_RUN = "not run: the batch was interrupted."


def _interrupt_worker(signum: int, frame: object) -> None:
    _STOP.set()
    if _RUNNING.is_set():
        raise KeyboardInterrupt


def run_case_on_worker(task: CaseTask) -> CaseResult:
    """Entry point of a worker process or Dask task: the worker's cached fuser, then :func:`run_case`."""
    if _STOP.is_set():
        return CaseResult(task.case.name, "skipped", NOT_RUN)
    with _CASE_LOCK:
        started = time.time()
        try:
            _RUNNING.set()
            fuser = _cached_fuser(task.options)
            return run_case(task, fuser)
        except MedfuseError as exc:  # the fuser could not be built (weights, device)
            return CaseResult(task.case.name, "failed", exc.message, round(time.time() - started, 2))
        except KeyboardInterrupt:
            _STOP.set()
            return _interrupted(task, started)
        finally:
            _RUNNING.clear()


def _interrupted(task: CaseTask, started: float) -> CaseResult:
    """An interrupted case: done when all its outputs had been committed by then, else rolled back."""
    outputs = case_outputs(task.output_dir, task.case.name, task.options)
    if all(path.exists() and path.stat().st_mtime >= started for path in outputs):
        return CaseResult(task.case.name, "ok", "", round(time.time() - started, 2), [str(p) for p in outputs])
    return CaseResult(task.case.name, "skipped", "interrupted while running; nothing was written for it.")


def _init_worker(threads: int) -> None:
    """Spawned worker setup: ``threads`` CPU threads for torch and ITK, no progress output, Ctrl-C handling."""
    import signal

    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(threads)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    set_quiet(True)
    signal.signal(signal.SIGINT, _interrupt_worker)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---- running the batch ----------------------------------------------------------------------------
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


def _run_here(tasks: list[CaseTask], fuser: Any) -> Iterator[CaseResult]:
    for task in tasks:
        yield run_case(task, fuser)


def _run_processes(
    tasks: list[CaseTask], fuser: Any, options: FuseOptions, workers: int, late: Callable[[CaseResult], None]
) -> Iterator[CaseResult]:
    """Cases on ``workers`` processes: this one (with its loaded ``fuser``) and ``workers - 1`` spawned ones.

    The spawned workers take cases from the front of the list; this process takes them from the back
    (cancelling them in the pool before they start), so no core waits and no extra model is loaded.
    Results come as cases end; after an interruption, ``late`` gets those that still ended.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(
        workers - 1, mp_context=context, initializer=_init_worker, initargs=(options.threads or 1,)
    )
    others = set(multiprocessing.active_children())
    futures = {executor.submit(run_case_on_worker, task): task for task in tasks}
    spawned = set(multiprocessing.active_children()) - others
    reported: set[Future] = set()

    def finished() -> Iterator[CaseResult]:
        for future, task in futures.items():
            if future.done() and not future.cancelled() and future not in reported:
                reported.add(future)
                yield _result_of(future, task)

    try:
        for future in reversed(list(futures)):
            if future.cancel():  # not started by a spawned worker yet: run it here
                yield run_case(futures[future], fuser)
                yield from finished()
        for future in as_completed([f for f in futures if not f.cancelled() and f not in reported]):
            reported.add(future)
            yield _result_of(future, futures[future])
    except (KeyboardInterrupt, GeneratorExit):
        _interrupt(spawned)  # Ctrl-C may have reached this process only (SIGTERM, kill -INT)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        for result in finished():
            late(result)


def _interrupt(processes: Iterable[Any]) -> None:
    """Send Ctrl-C to worker processes: each rolls back its case and skips the rest of its queue."""
    import signal

    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            os.kill(process.pid, signal.SIGINT)


def _result_of(future: Future, task: CaseTask) -> CaseResult:
    try:
        return future.result()
    except Exception as exc:  # the worker process died (e.g. out of memory) or could not return the result
        return CaseResult(
            task.case.name,
            "failed",
            f"the worker fusing this case stopped unexpectedly ({_first_line(exc)}), e.g. out of memory; "
            "rerun it with fewer --workers.",
        )


_CONNECT_TIMEOUT = "10s"


def _connect(scheduler: str) -> Any:
    try:
        from distributed import Client
    except ImportError:
        raise UsageError(
            '--scheduler needs Dask distributed, which is not installed; run pip install "medfuse[distributed]".'
        ) from None
    try:
        return Client(scheduler, timeout=_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(
            f"--scheduler {scheduler}: cannot reach the Dask scheduler ({_first_line(exc)}); check the address "
            "and that `dask scheduler` is running."
        ) from exc


def _run_dask(tasks: list[CaseTask], client: Any) -> Iterator[CaseResult]:
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = {
        client.submit(run_case_on_worker, task, key=f"medfuse-{task.case.name}-{token}", pure=False): task
        for task in tasks
    }
    for future in as_completed(list(futures)):
        try:
            yield future.result()
        except Exception as exc:  # e.g. KilledWorker: the case crashed its worker
            yield CaseResult(futures[future].case.name, "failed", f"the Dask task failed ({_first_line(exc)}).")


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
    workers: int = 1,
    scheduler: str | None = None,
) -> BatchResult:
    """Fuse every case of ``input_dir`` (or of the ``pairs`` CSV) into ``output_dir``; never stops at a failed case.

    ``workers`` > 1 runs cases in that many processes, this one included (each with ``options.threads``
    or, by default, an equal share of the CPUs); ``scheduler`` (``tcp://host:port``) sends them to a Dask
    cluster instead. Returns the results; ``summary.csv`` is written even when interrupted.
    """
    if (input_dir is None) == (pairs is None):
        raise UsageError("give either INPUT_DIR (one subfolder per case) or --pairs FILE.csv, not both or neither.")
    if workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1.")
    if scheduler is not None and workers != 1:
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
    tasks = [CaseTask(case, output_path, options, tuple(mri_globs), tuple(pet_globs)) for case in cases]
    results = {task.case.name: early for task in tasks if (early := _precheck(task, skip_existing))}
    pending = [task for task in tasks if task.case.name not in results]
    parallel = min(workers, len(pending))
    if scheduler is None and parallel > 1 and options.threads is None:  # share the CPUs, do not oversubscribe
        options = dataclasses.replace(options, threads=max(1, _available_cpus() // parallel))
        pending = [dataclasses.replace(task, options=options) for task in pending]

    from medfuse import inference

    # Set up before anything is written: a wrong scheduler, weights file or device stops here.
    client = _connect(scheduler) if scheduler is not None and pending else None
    try:
        if client is not None:
            runs = _run_dask(pending, client)
        elif not pending:
            runs = iter(())
        elif parallel > 1:
            runs = _run_processes(pending, inference.load_fuser(options), options, parallel, late=_keeper(results))
        else:
            runs = _run_here(pending, inference.load_fuser(options))
        _create_folder(output_path)
        ordered = _collect(runs, tasks, results, len(pending), output_path / SUMMARY_NAME)
    finally:
        if client is not None:
            client.close()
    return BatchResult(ordered, output_path / SUMMARY_NAME)


def _keeper(results: dict[str, CaseResult]) -> Callable[[CaseResult], None]:
    """A callback storing a result that arrives after the batch was interrupted."""

    def keep(result: CaseResult) -> None:
        results[result.case] = result

    return keep


def _collect(
    runs: Iterator[CaseResult], tasks: list[CaseTask], results: dict[str, CaseResult], total: int, summary: Path
) -> list[CaseResult]:
    """Gather results with a progress bar; write the summary at the end, or when interrupted."""
    try:
        with make_progress() as progress:
            bar = progress.add_task("Fusing cases", total=total)
            for result in runs:
                results[result.case] = result
                for message in result.warnings:
                    show_warning(f"{result.case}: {message}")
                if result.status == "failed" and not is_quiet():
                    progress.console.print(f"{result.case}: failed: {result.error}", markup=False, highlight=False)
                progress.advance(bar)
    finally:
        ordered = [results.get(t.case.name) or CaseResult(t.case.name, "skipped", NOT_RUN) for t in tasks]
        write_summary(ordered, summary)
    return ordered


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
    console.print(
        f"{result.count('ok')} ok, {result.count('failed')} failed, {result.count('skipped')} skipped; "
        f"summary written to {result.summary}",
        markup=False,
        highlight=False,
    )
