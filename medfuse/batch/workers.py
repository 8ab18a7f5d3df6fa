"""Where the cases of a batch run: this process, spawned worker processes, or a Dask cluster.

Every process loads the fusion model once (:func:`run_case_on_worker` keeps it) and runs one case at
a time. Ctrl-C (or SIGTERM) reaches the workers: the case in progress rolls back its outputs and the
cases still queued are skipped.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from medfuse.batch.task import NOT_RUN, CaseResult, CaseTask, case_outputs, first_line, run_case
from medfuse.console import interrupt_outside_imports, raise_if_interrupted, set_quiet
from medfuse.errors import MedfuseError, UsageError
from medfuse.options import FuseOptions

if TYPE_CHECKING:
    from types import FrameType

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


def _interrupt_worker(signum: int, frame: FrameType | None) -> None:
    _STOP.set()
    if _RUNNING.is_set():
        interrupt_outside_imports(signum, frame)


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
    (the workers fail to load their fusers as well). Cases are handed out as processes become free
    (:class:`_Dispatch`): the spawned workers from the front of the list, this process from the back,
    so no process waits while cases are left and no extra model is loaded. Results come as cases end;
    after an interruption, ``late`` gets those that still ended.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with _ctrl_c_ignored_by_new_workers():
        executor = ProcessPoolExecutor(
            workers - 1, mp_context=context, initializer=_init_worker, initargs=(options.threads or 1,)
        )
        others = set(multiprocessing.active_children())
        dispatch = _Dispatch(executor, tasks, workers - 1)
        spawned = set(multiprocessing.active_children()) - others
    try:
        fuser = load_fuser()
        ready()
    except BaseException:
        dispatch.close()
        _interrupt(spawned)
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    return _process_results(executor, dispatch, fuser, spawned, late)


class _Dispatch:
    """The cases of :func:`run_processes`, handed out one at a time as processes become free.

    Each spawned worker holds one case at a time: the next is submitted when its case ends (from the
    pool's result thread). A pool given every case at once queues some ahead for its workers, where
    this process can no longer take them: on 8 cases and 2 processes it sat idle for the last two
    cases' time. This process takes cases from the back of the list (:meth:`take_last`). Ended
    spawned cases wait in a queue until this process reports them (:meth:`reports`).
    """

    def __init__(self, executor: Any, tasks: list[CaseTask], spawned_workers: int) -> None:
        self._executor = executor
        self._queued = collections.deque(tasks)
        self._lock = threading.Lock()
        self._open = True
        self._unreported = 0  # cases submitted to the pool whose results were not taken yet
        self._ended: queue.SimpleQueue[tuple[Future, CaseTask]] = queue.SimpleQueue()
        for _ in range(spawned_workers):
            self._hand_out()

    def _hand_out(self) -> None:
        """Submit the case at the front to the pool, unless none is left or the batch is stopping."""
        with self._lock:
            if not self._open or not self._queued:
                return
            task = self._queued.popleft()
            try:
                future = self._executor.submit(run_case_on_worker, task)
            except RuntimeError:  # the pool broke (a worker died) or shut down: this process fuses the rest
                self._queued.appendleft(task)
                self._open = False
                return
            self._unreported += 1
        future.add_done_callback(lambda done: self._end(done, task))

    def _end(self, future: Future, task: CaseTask) -> None:
        self._ended.put((future, task))
        self._hand_out()

    def take_last(self) -> CaseTask | None:
        """The case at the back, for this process (``None`` when none is left)."""
        with self._lock:
            return self._queued.pop() if self._queued else None

    def reports(self, wait: bool = False) -> Iterator[CaseResult]:
        """Results of the spawned cases that ended; with ``wait``, first wait for one while any is running.

        The wait polls in short steps so that a Ctrl-C whose KeyboardInterrupt Python lost (see
        :func:`medfuse.console.note_interrupt`) still ends it.
        """
        while True:
            with self._lock:
                if not self._unreported:
                    return
            try:
                future, task = self._ended.get(timeout=0.1 if wait else 0)
            except queue.Empty:
                if not wait:
                    return
                raise_if_interrupted()
                continue
            with self._lock:
                self._unreported -= 1
            wait = False
            yield _result_of(future, task)

    def running(self) -> bool:
        """Whether spawned cases were submitted whose results were not reported yet."""
        with self._lock:
            return self._unreported > 0

    def close(self) -> None:
        """Hand out no more cases (an interruption, a failed start, the end of the batch)."""
        with self._lock:
            self._open = False


def _process_results(
    executor: Any, dispatch: _Dispatch, fuser: Fuser, spawned: set[Any], late: Callable[[CaseResult], None]
) -> Iterator[CaseResult]:
    """The results of :func:`run_processes` as cases end, this process fusing from the back of the list."""
    try:
        while True:
            yield from dispatch.reports()
            task = dispatch.take_last()
            if task is not None:
                yield run_case(task, fuser)
            elif dispatch.running():
                yield from dispatch.reports(wait=True)
            else:
                return
    except (KeyboardInterrupt, GeneratorExit):
        dispatch.close()
        _interrupt(spawned)  # Ctrl-C may have reached this process only (SIGTERM, kill -INT)
        raise
    finally:
        dispatch.close()
        executor.shutdown(wait=True, cancel_futures=True)
        for result in dispatch.reports():
            late(result)


def _interrupt(processes: Iterable[Any]) -> None:
    """Send Ctrl-C to worker processes: each rolls back its case and skips the rest of its queue."""
    import signal

    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            os.kill(process.pid, signal.SIGINT)


def _result_of(future: Future, task: CaseTask) -> CaseResult:
    if future.cancelled():  # still queued in the pool when the batch stopped
        return CaseResult(task.case.name, "skipped", NOT_RUN)
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
