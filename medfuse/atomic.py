"""Safe outputs: checked before any work, written under temporary names, renamed when all are done.

A command that writes several files (fused volume, overlay, preview, report) does so inside one
:class:`OutputTransaction`: each file is written to a hidden temporary name in its target folder and
all are renamed into place only when every one is complete. An exception, a write error or Ctrl-C
removes the temporaries (and any folder the transaction created), so the user never finds a partial
output, and an existing file is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medfuse.console import interrupts_deferred, warn
from medfuse.errors import MedfuseError, OutputError

if TYPE_CHECKING:
    from concurrent.futures import Future

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TEMP_MARKER = ".medfuse-tmp-"


def full_suffix(path: str | Path) -> str:
    """The lower-case extension, with ``.nii.gz`` (and other ``.gz``) kept whole."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        inner = Path(name[:-3]).suffix
        return inner + ".gz" if inner else ".gz"
    return Path(name).suffix


def strip_suffix(path: str | Path) -> Path:
    """``path`` without its full extension: ``out/fused.nii.gz`` -> ``out/fused``."""
    path = Path(path)
    suffix = full_suffix(path)
    return path.with_name(path.name[: len(path.name) - len(suffix)]) if suffix else path


def sibling(path: str | Path, tag: str, suffix: str | None = None) -> Path:
    """A file beside ``path`` named ``<stem><tag><suffix>``; ``suffix`` defaults to ``path``'s."""
    path = Path(path)
    ext = full_suffix(path) if suffix is None else suffix
    return strip_suffix(path).with_name(strip_suffix(path).name + tag + ext)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output_path(
    path: str | Path,
    *,
    allowed: Iterable[str] | None = None,
    inputs: Iterable[str | Path] = (),
    overwrite: bool = False,
    is_dir: bool = False,
    option: str = "-o",
) -> Path:
    """Refuse an output path before any work is done; return it as a :class:`Path`.

    Refused: an extension not in ``allowed``; a path equal to (or inside, for folders) an input; a
    path under an existing file; a missing folder whose parent is missing too; an existing output
    without ``overwrite``; an existing folder where a file is wanted (and the reverse).
    """
    path = Path(path)
    if allowed is not None and not is_dir:
        allowed = tuple(allowed)
        if full_suffix(path) not in allowed:
            raise OutputError(
                f"{path}: unknown output extension {full_suffix(path) or '(none)'!r} for {option}; "
                f"use one of {', '.join(allowed)}."
            )
    for item in inputs:
        item_path = Path(item)
        if _same_file(path, item_path):
            raise OutputError(f"{path}: the output path is one of the inputs; choose another {option}.")
        if item_path.is_dir() and path.resolve().is_relative_to(item_path.resolve()):
            raise OutputError(
                f"{path}: is inside the input folder {item_path}, which medfuse never writes into; "
                f"choose another {option}."
            )
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{path}: {parent} is a file, not a folder; choose another {option}.")
    parent = path.parent
    if not parent.exists() and not parent.parent.exists():
        raise OutputError(f"{path}: the folder {parent.parent} does not exist; create it first.")
    if path.exists():
        if is_dir and not path.is_dir():
            raise OutputError(f"{path}: a file of that name exists where a folder is wanted.")
        if not is_dir and path.is_dir():
            raise OutputError(f"{path}: a folder of that name exists where a file is wanted.")
        if not overwrite and not (is_dir and not any(path.iterdir())):
            raise OutputError(f"{path}: the output already exists; pass --overwrite to replace it.")
    return path


class OutputTransaction:
    """A set of outputs that appear together or not at all."""

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._pending: list[tuple[Path, Path]] = []
        self._created_dirs: list[Path] = []

    def _ensure_folder(self, folder: Path) -> None:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except OSError as exc:
                raise OutputError(f"{directory}: cannot create the output folder ({exc.strerror}).") from exc
            self._created_dirs.append(directory)
            warn(f"{directory}: the output folder did not exist and was created.")

    def _temp_for(self, final: Path) -> Path:
        suffix = full_suffix(final)
        stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
        return final.with_name(f".{stem}{TEMP_MARKER}{uuid.uuid4().hex[:8]}{suffix}")

    def path_for(self, final: str | Path) -> Path:
        """Register ``final`` and return the temporary path to write it to."""
        final = Path(final)
        if final.exists() and not self.overwrite:
            raise OutputError(f"{final}: the output already exists; pass --overwrite to replace it.")
        self._ensure_folder(final.parent)
        temp = self._temp_for(final)
        self._pending.append((temp, final))
        return temp

    def write(self, final: str | Path, writer: Callable[[Path], object]) -> Path:
        """Call ``writer(temp_path)``; a failure of the writer becomes an :class:`OutputError`."""
        final = Path(final)
        _run_writer(final, self.path_for(final), writer)
        return final

    def write_parallel(self, jobs: Sequence[tuple[Path, Callable[[Path], object]]]) -> None:
        """Like :meth:`write` for each ``(final, writer)``, the writers running side by side in threads.

        For writers that release the GIL (SimpleITK, gzip, PNG encoding): two volumes take the time
        of the larger one. The first failure is raised once all writers have ended.
        """
        from concurrent.futures import ThreadPoolExecutor

        temps = [(Path(final), self.path_for(final), writer) for final, writer in jobs]  # folders made here, in turn
        if len(temps) < 2:
            for final, temp, writer in temps:
                _run_writer(final, temp, writer)
            return
        running: list[Future[None]] = []
        with interrupts_deferred():
            pool = ThreadPoolExecutor(len(temps), thread_name_prefix="medfuse-write")
            try:
                for final, temp, writer in temps:
                    running.append(pool.submit(_run_writer, final, temp, writer))
            finally:
                pool.shutdown(wait=False)  # each thread ends once its writer has
                _wait_through_interrupts(running)
        for done in running:
            done.result()

    def commit(self) -> None:
        """Move every completed temporary into place.

        Should a move fail, the outputs this commit already put in place under new names are removed
        again, so that a run leaves all its outputs or none (replaced files cannot come back).
        """
        if not self.overwrite:  # another program may have written one of them since the checks
            for _temp, final in self._pending:
                if final.exists():
                    raise OutputError(f"{final}: appeared while medfuse was running; pass --overwrite to replace it.")
        placed: list[Path] = []
        try:
            for temp, final in self._pending:
                existed = final.exists()
                if final.is_dir() and temp.is_dir():
                    shutil.rmtree(final)
                os.replace(temp, final)
                if not existed:
                    placed.append(final)
        except BaseException as exc:  # a failed move or Ctrl-C between two moves
            for done in placed:
                with contextlib.suppress(OSError):
                    if done.is_dir():
                        shutil.rmtree(done)
                    else:
                        done.unlink()
            if isinstance(exc, OSError):
                raise OutputError(f"{final}: could not be moved into place ({exc.strerror or exc}).") from exc
            raise
        self._pending.clear()
        self._created_dirs.clear()

    def rollback(self) -> None:
        """Delete the temporaries and the folders this transaction created (when left empty)."""
        for temp, _final in self._pending:
            with contextlib.suppress(OSError):
                if temp.is_dir():
                    shutil.rmtree(temp)
                else:
                    temp.unlink(missing_ok=True)
        self._pending.clear()
        for directory in reversed(self._created_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()
        self._created_dirs.clear()


def _wait_through_interrupts(futures: Sequence[Future[None]]) -> None:
    """Wait until every future has ended, even through a Ctrl-C (raised again afterwards) that was
    not deferred (:func:`~medfuse.console.interrupts_deferred`: Python's own handler, in library use,
    where a Ctrl-C while the threads start can still cut in before the last one is recorded).

    A writer cannot be stopped in the middle of its file, and the rollback must not delete a file
    still being written. The wait is on the futures, never a join of the threads: in Python 3.11 a
    ``Thread.join`` interrupted by Ctrl-C marks a thread that is still running as ended, and the
    interpreter then shuts down under it (the process aborts with "FATAL: exception not rethrown").
    """
    from concurrent.futures import wait

    interrupted: KeyboardInterrupt | None = None
    while True:
        try:
            wait(futures)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _run_writer(final: Path, temp: Path, writer: Callable[[Path], object]) -> None:
    """``writer(temp)``, its OS or library failure turned into an :class:`OutputError` naming ``final``."""
    try:
        writer(temp)
    except MedfuseError:
        raise
    except (OSError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1:] or ["write failed"]
        reason = reason if isinstance(reason, str) else reason[0]
        raise OutputError(f"{final}: could not be written ({reason}).") from exc


@contextlib.contextmanager
def output_transaction(overwrite: bool = False) -> Iterator[OutputTransaction]:
    """Open a transaction; commit on success, roll back on any exception (Ctrl-C included)."""
    transaction = OutputTransaction(overwrite=overwrite)
    try:
        yield transaction
    except BaseException:
        transaction.rollback()
        raise
    try:
        transaction.commit()
    except BaseException:
        transaction.rollback()
        raise
