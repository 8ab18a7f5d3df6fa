"""The cases of a batch: one per subfolder of the input folder (or per row of a pairs CSV), and each case's inputs.

Inside a case folder the MRI and the PET are found by DICOM Modality, else by file or folder name
(``--mri-glob``, ``--pet-glob``).
"""

from __future__ import annotations

import csv
import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfuse.atomic import VOLUME_EXTENSIONS, full_suffix
from medfuse.errors import InvalidInputError, UnreadableInputError, UsageError

if TYPE_CHECKING:
    from medfuse.dicom.series import SeriesInfo

DEFAULT_MRI_GLOBS: tuple[str, ...] = ("mri*", "t1*")
DEFAULT_PET_GLOBS: tuple[str, ...] = ("pet*",)
_VOLUME_FILES = (*VOLUME_EXTENSIONS, ".nhdr", ".mhd")
_MRI_MODALITIES, _PET_MODALITIES = ("MR",), ("PT", "NM")  # PET first, SPECT (NM) when there is no PET


@dataclass(frozen=True)
class Case:
    """One study: its name (the output subfolder) and either a folder to search or explicit inputs."""

    name: str
    folder: Path | None = None
    mri: Path | None = None
    pet: Path | None = None


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


def _dicom_series(folder: Path) -> list[SeriesInfo]:
    """The DICOM series under ``folder``; pydicom (a quarter of a second to import) only where a file looks DICOM."""
    from medfuse.dicom.files import candidate_files, looks_like_dicom, read_head

    def maybe_dicom(path: Path) -> bool:
        try:
            return looks_like_dicom(path, read_head(path))
        except OSError:  # unreadable: list_series names it
            return True

    if not any(maybe_dicom(path) for path in candidate_files(folder, recursive=True)):
        return []
    from medfuse.dicom import list_series

    return list_series(folder)


def locate_inputs(
    case: Case, mri_globs: Sequence[str] = DEFAULT_MRI_GLOBS, pet_globs: Sequence[str] = DEFAULT_PET_GLOBS
) -> tuple[Path, Path]:
    """The MRI and PET inputs of a case: explicit, by DICOM Modality, else by file or folder name."""
    if case.folder is None:
        assert case.mri is not None and case.pet is not None
        return case.mri, case.pet
    series = _dicom_series(case.folder)
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
