"""Recognising DICOM files: one rule for every caller (series discovery, 2-D folder sorting).

Standard library only, so that modules which merely need to tell DICOM from other files (e.g.
:mod:`medfuse.fusion2d`) do not load pydicom.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

#: File name endings that declare a DICOM file (Siemens exports use ``.ima``).
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima", ".dc3"})
#: Bytes read to recognise a file: the 128-byte preamble and the "DICM" marker.
HEAD_BYTES = 132
# Some exports omit the 128-byte preamble: such files start with a tag of an early group.
_FIRST_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})


def read_head(path: Path) -> bytes:
    """The first :data:`HEAD_BYTES` bytes of ``path`` (fewer for a shorter file); raises ``OSError``."""
    with path.open("rb") as handle:
        return handle.read(HEAD_BYTES)


def has_preamble(head: bytes) -> bool:
    """Whether ``head`` holds "DICM" after the 128-byte preamble (a conformant DICOM file)."""
    return head[128:132] == b"DICM"


def claims_dicom(path: Path, head: bytes) -> bool:
    """Whether the file declares itself DICOM (preamble or a DICOM suffix): then it must parse as DICOM."""
    return has_preamble(head) or path.suffix.lower() in DICOM_SUFFIXES


def looks_like_dicom(path: Path, head: bytes) -> bool:
    """Whether ``path`` (whose first bytes are ``head``) is a DICOM file, by content or by name.

    True for the "DICM" preamble marker, for a file that starts with a tag of an early group (exports
    without preamble), and for a DICOM suffix (:data:`DICOM_SUFFIXES`).
    """
    starts_raw = len(head) >= 8 and int.from_bytes(head[:2], "little") in _FIRST_GROUPS
    return starts_raw or claims_dicom(path, head)


def candidate_files(folder: Path, recursive: bool) -> Iterator[Path]:
    """Candidate files in name order, skipping hidden files and folders (and medfuse's temporaries)."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    for path in sorted(candidates):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            yield path
