"""The one error path of medfuse.

Every expected failure raises a subclass of :class:`MedfuseError`. Its message is one sentence that
names the file (or option) and the problem and says what to do; its ``exit_code`` is what the CLI
returns. The table is documented in README.md ("Exit codes").
"""

from __future__ import annotations

from pathlib import Path

EXIT_PROCESSING = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_INVALID = 4
EXIT_OUTPUT = 5
EXIT_WEIGHTS = 6
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class MedfuseError(Exception):
    """Base class: an expected failure with a user-facing message and an exit code."""

    exit_code: int = EXIT_PROCESSING

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        text = message.strip()
        if self.path is not None and str(self.path) not in text:
            text = f"{self.path}: {text}"
        super().__init__(text)

    @property
    def message(self) -> str:
        """The one-sentence message shown to the user."""
        return str(self)


class ProcessingError(MedfuseError):
    """A step (registration, fusion, a batch case) failed on valid inputs."""

    exit_code = EXIT_PROCESSING


class UsageError(MedfuseError):
    """Options that contradict each other or name something unknown (e.g. ``--device tpu``)."""

    exit_code = EXIT_USAGE


class UnreadableInputError(MedfuseError):
    """An input that does not exist or cannot be decoded (missing, truncated, not an image)."""

    exit_code = EXIT_UNREADABLE


class InvalidInputError(MedfuseError):
    """An input that reads fine but cannot be fused (constant, 4-D without --frame, no overlap...)."""

    exit_code = EXIT_INVALID


class OutputError(MedfuseError):
    """An output that cannot or must not be written (exists, unknown extension, disk full...)."""

    exit_code = EXIT_OUTPUT


class WeightsError(MedfuseError):
    """Network weights that are missing, corrupt, truncated or fail their SHA-256 check."""

    exit_code = EXIT_WEIGHTS
