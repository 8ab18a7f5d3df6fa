"""The ``medfuse`` command: a thin Typer layer over the Python API.

Each command parses its options, calls one API function and turns a :class:`MedfuseError` into one
sentence on stderr and its exit code (README, "Exit codes"). Heavy modules (torch, SimpleITK) are
imported inside the commands so that ``medfuse --help`` stays instant.
"""

from __future__ import annotations

import functools
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from medfuse import __version__
from medfuse.console import console, set_quiet, show_warning
from medfuse.errors import EXIT_INTERRUPTED, EXIT_PROCESSING, MedfuseError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="medfuse",
    help="Fuse a patient's MRI with their PET (or SPECT): register, resample, fuse, write.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_options = {"debug": False}


def _print_warning(message: Any, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
    show_warning(str(message))


def _fail(message: str, code: int) -> None:
    console.print(f"[bold red]medfuse: error:[/bold red] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def handle_errors(command: F) -> F:
    """Run a command body; expected errors become one sentence and their exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _print_warning
            try:
                return command(*args, **kwargs)
            except MedfuseError as exc:
                if _options["debug"]:
                    traceback.print_exc(file=sys.stderr)
                _fail(exc.message.replace("[", "\\["), exc.exit_code)
            except KeyboardInterrupt:
                _fail("interrupted; no partial output was left behind.", EXIT_INTERRUPTED)
            except typer.Exit:
                raise
            except Exception as exc:  # an unexpected failure still ends in one sentence
                if _options["debug"]:
                    traceback.print_exc(file=sys.stderr)
                detail = f"{type(exc).__name__}: {exc}".strip().splitlines()[0].replace("[", "\\[")
                _fail(f"unexpected internal error ({detail}); rerun with --debug for details.", EXIT_PROCESSING)
        return None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medfuse {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, only warnings and errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """medfuse: MRI/PET fusion from the command line."""
    _options["debug"] = debug
    set_quiet(quiet)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
