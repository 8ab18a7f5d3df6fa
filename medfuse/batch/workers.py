"""Where the cases of a batch run: this process, spawned worker processes, or a Dask cluster.

Every process loads the fusion model once (:func:`run_case_on_worker` keeps it) and runs one case at
a time. Ctrl-C (or SIGTERM) reaches the workers: the case in progress rolls back its outputs and the
cases still queued are skipped.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from medfuse.batch.task import NOT_RUN, CaseResult, CaseTask, case_outputs, first_line, run_case
from medfuse.console import set_quiet
from medfuse.errors import MedfuseError, UsageError
from medfuse.options import FuseOptions

if TYPE_CHECKING:
    from medfuse.inference import Fuser

_FUSERS: dict[tuple[Any, ...], Fuser] = {}
# One case at a time per process: warning capture and the quiet switch are process-wide, and a case
# holds whole volumes in memory. A Dask worker with several threads therefore runs its cases in turn;
# parallelism comes from worker processes (dask worker --nworkers N --nthreads 1).
_CASE_LOCK = threading.Lock()


def _cached_fuser(options: FuseOptions) -> Fuser:
    key = (options.method, str(options.weights), options.device, options.threads, options.batch_size)
    if key not in _FUSERS:
        from medfuse import inference

        _FUSERS[key] = inference.load_fuser(options)
    return _FUSERS[key]


# Ctrl-C in a worker process interrupts the case it is running (whose outputs roll back) and makes
# it skip the cases still queued for it; while idle it only remembers the request.
_STOP = threading.Event()
_RUNNING = threading.Event()


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
    outputs = case_outputs(task.output_dir, task.case.name, task.options, task.qc)
    if all(path.exists() and path.stat().st_mtime >= started for path in outputs):
        return CaseResult(task.case.name, "ok", "", round(time.time() - started, 2), [str(p) for p in outputs])
    return CaseResult(task.case.name, "skipped", "interrupted while running; nothing was written for it.")


def _init_worker(threads: int) -> None:
    """Spawned worker setup: Ctrl-C handling, ``threads`` CPU threads for torch and ITK, no progress output.

    The worker starts with Ctrl-C ignored (:func:`_ctrl_c_ignored_by_new_workers`); its handler comes
    first. A Ctrl-C sent before that is lost to this worker: it may still fuse a queued case, whole.
    """
    import signal

    signal.signal(signal.SIGINT, _interrupt_worker)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(threads)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    set_quiet(True)


@contextlib.contextmanager
def _ctrl_c_ignored_by_new_workers() -> Iterator[None]:
    """Ignore Ctrl-C (SIGINT) while worker processes are spawned: they start with it ignored (an ignored
    signal stays ignored across exec, and Python then keeps it so) until :func:`_init_worker` installs
    their handler, so a Ctrl-C during their start-up never prints a traceback from their imports."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_here(tasks: list[CaseTask], fuser: Fuser) -> Iterator[CaseResult]:
    for task in tasks:
        yield run_case(task, fuser)


def run_processes(
    tasks: list[CaseTask],
    load_fuser: Callable[[], Fuser],
    options: FuseOptions,
    workers: int,
    late: Callable[[CaseResult], None],
    ready: Callable[[], None] = lambda: None,
) -> Iterator[CaseResult]:
    """Cases on ``workers`` processes: this one (with the fuser ``load_fuser`` gives) and ``workers - 1`` spawned ones.

    The spawned workers start first, so their start-up (imports, model) overlaps this process loading
    its own fuser; then ``ready()`` runs (e.g. creating the output folder). A fuser that cannot be
    loaded, or a failing ``ready``, stops the workers and the batch here, before anything is written
    (the workers fail to load their fusers as well). The spawned workers take cases from the front of the list;
    this process takes them from the back (cancelling them in the pool before they start), so no core
    waits and no extra model is loaded. Results come as cases end; after an interruption, ``late``
    gets those that still ended.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with _ctrl_c_ignored_by_new_workers():
        executor = ProcessPoolExecutor(
            workers - 1, mp_context=context, initializer=_init_worker, initargs=(options.threads or 1,)
        )
        others = set(multiprocessing.active_children())
        futures = {executor.submit(run_case_on_worker, task): task for task in tasks}
        spawned = set(multiprocessing.active_children()) - others
    try:
        fuser = load_fuser()
        ready()
    except BaseException:
        _interrupt(spawned)
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    return _process_results(executor, futures, fuser, spawned, late)


def _process_results(
    executor: Any,
    futures: dict[Future, CaseTask],
    fuser: Fuser,
    spawned: set[Any],
    late: Callable[[CaseResult], None],
) -> Iterator[CaseResult]:
    """The results of :func:`run_processes` as cases end, this process fusing from the back of the list."""
    from concurrent.futures import as_completed

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
            f"the worker fusing this case stopped unexpectedly ({first_line(exc)}), e.g. out of memory; "
            "rerun it with fewer --workers.",
        )


_CONNECT_TIMEOUT = "10s"


def connect(scheduler: str) -> Any:
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
            f"--scheduler {scheduler}: cannot reach the Dask scheduler ({first_line(exc)}); check the address "
            "and that `dask scheduler` is running."
        ) from exc


def run_dask(tasks: list[CaseTask], client: Any) -> Iterator[CaseResult]:
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
            yield CaseResult(futures[future].case.name, "failed", f"the Dask task failed ({first_line(exc)}).")
