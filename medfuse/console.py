"""Terminal output: one rich console on stderr, a quiet switch, warnings and progress bars.

Everything medfuse says goes to stderr so that stdout stays clean for data (``info --json``,
``evaluate``'s table when piped). ``--quiet`` silences progress and info, never errors.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from types import FrameType

T = TypeVar("T")

# emoji=False: a path or option value such as "scan:x:1" must print as given, not as an emoji.
console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
_state = {"quiet": False}
#: The message lists of the :func:`collect_warnings` blocks open in this thread (innermost last).
_collectors: ContextVar[tuple[list[str], ...]] = ContextVar("medfuse_warning_collectors", default=())


class MedfuseWarning(UserWarning):
    """A recoverable problem with the inputs (NaN voxels replaced, folder created...)."""


_interruption = threading.Event()


def note_interrupt(signum: int, frame: FrameType | None) -> None:
    """The command line's Ctrl-C / SIGTERM handler: remember the interruption, then raise KeyboardInterrupt
    (:func:`interrupt_outside_imports`).

    Remembering covers a KeyboardInterrupt Python loses all the same: waits call
    :func:`raise_if_interrupted`.
    """
    _interruption.set()
    if not _deferral["active"]:
        interrupt_outside_imports(signum, frame)


def interrupt_outside_imports(signum: int, frame: FrameType | None) -> None:
    """Raise KeyboardInterrupt from a signal handler, unless the signal arrived inside Python's import
    machinery: then send the signal again a moment later (:data:`_REDELIVERY_S`), once the import has
    moved on.

    Raised there (in an import's clean-up callback, between taking the global import lock and the
    ``try`` that releases it), the exception is reported as "ignored" and the lock stays held: the
    model loading on another thread then waits for it forever, and the process, exiting under it,
    may abort ("terminate called without an active exception").
    """
    if frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        threading.Timer(_REDELIVERY_S, os.kill, (os.getpid(), signum)).start()
        return
    raise KeyboardInterrupt


#: How soon a signal that arrived inside the import machinery is sent again.
_REDELIVERY_S = 0.02


_deferral = {"active": False}


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C / SIGTERM noted by :func:`note_interrupt` until the block ends, then raise it.

    For steps that must not be cut between two statements, such as starting the writer threads and
    waiting for them: raised in between, the interruption would leave a thread writing a file that
    the rollback had already cleared away.
    """
    previous = _deferral["active"]
    _deferral["active"] = True
    try:
        yield
    finally:
        _deferral["active"] = previous
    raise_if_interrupted()


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if :func:`note_interrupt` ran in this process (even if its exception was lost)."""
    if _interruption.is_set():
        raise KeyboardInterrupt


def set_quiet(quiet: bool) -> None:
    """Silence progress and informational messages (warnings and errors still show)."""
    _state["quiet"] = quiet


def is_quiet() -> bool:
    """Whether ``--quiet`` is in force."""
    return _state["quiet"]


def info(message: str) -> None:
    """Print an informational line on stderr unless quiet."""
    if not _state["quiet"]:
        console.print(message, markup=False)


def warn(message: str) -> None:
    """Raise a :class:`MedfuseWarning`; the CLI shows it as ``medfuse: warning: ...``.

    Library users can filter or record it with the :mod:`warnings` machinery; every open
    :func:`collect_warnings` block records it too, whatever the warning filters say.
    """
    for messages in _collectors.get():
        if message not in messages:
            messages.append(message)
    warnings.warn(message, MedfuseWarning, stacklevel=2)


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Record the message of every :func:`warn` inside the block (in order, each once) in the list it yields.

    The warnings still go to the :mod:`warnings` machinery (and so to the terminal); the list is for
    reports (``report.json``'s ``warnings``). Blocks nest, and each thread has its own.
    """
    messages: list[str] = []
    token = _collectors.set((*_collectors.get(), messages))
    try:
        yield messages
    finally:
        _collectors.reset(token)


def show_warning(message: str) -> None:
    """Print a warning line on stderr (used by the CLI's warning hook)."""
    console.print(Text.assemble(("medfuse: warning:", "yellow"), " ", message))


def make_progress(transient: bool = False) -> Progress:
    """A rich progress display on stderr (disabled when quiet or when stderr is no terminal)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=_state["quiet"] or not console.is_terminal,
    )


def batch_progress(target: Console | None = None) -> Progress:
    """The batch's progress display: cases done of all, how many failed, time spent and an ETA.

    Its task takes a ``failed`` field (``progress.add_task(..., failed=0)``). The ETA is rich's estimate
    from the recent rate of finished cases (shown once a case has ended).
    """
    shown = target or console
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("done, {task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=shown,
        disable=_state["quiet"] or not shown.is_terminal,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar."""
    with make_progress(transient=True) as progress:
        yield from progress.track(items, total=total, description=description)


@contextmanager
def stage(description: str) -> Iterator[None]:
    """Show a spinner while a pipeline stage runs."""
    if _state["quiet"]:
        yield
        return
    with console.status(description, spinner="dots"):
        yield
