"""The batch index: ``OUT/index.html``, one row per case, sortable and filterable without a server.

Each row comes from the batch's result for the case (status, error, seconds, warnings) and what the
case folder holds: ``report.json`` (registration figures, hotspots), ``preview.png`` (shrunk to a
thumbnail) and ``qc.html`` (linked). Rows of cases that failed or were skipped show their message.
Reading a case folder costs a few milliseconds, so the index of a resumed batch also covers the
cases finished by earlier runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import numpy as np

from medfuse.atomic import output_transaction
from medfuse.qc.case import QC_NAME, REPORT_NAME, find_output
from medfuse.qc.page import as_dict, asset, number, pet_units, render_template

INDEX_NAME = "index.html"
_THUMBNAIL_SIDE = 160


class CaseOutcome(Protocol):
    """What the index needs of a batch case result (:class:`medfuse.batch.CaseResult` has it)."""

    @property
    def case(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def error(self) -> str: ...

    @property
    def seconds(self) -> float: ...

    @property
    def warnings(self) -> list[str]: ...


@dataclass
class IndexRow:
    """One case of the index, ready for the template (None: not available)."""

    case: str
    status: str
    error: str
    seconds: float | None
    warnings: int | None
    page: str | None  # link to the case page, relative to the index
    thumbnail: str | None  # data URI
    moved_mm: float | None
    rotation_deg: float | None
    metric_header: float | None
    metric_value: float | None
    confidence: str | None
    hot_max: float | None
    hot_text: str | None  # the maximum with its units, as the case page prints it
    needs_look: bool


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _read_report(folder: Path) -> dict[str, Any]:
    try:
        report = json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _thumbnail(folder: Path, report: dict[str, Any]) -> str | None:
    from PIL import Image, UnidentifiedImageError

    from medfuse.qc.images import data_uri, thumbnail

    preview = find_output(folder, report, "preview")
    if preview is None:
        return None
    try:
        with Image.open(preview) as image:
            picture = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError):
        return None
    return data_uri(thumbnail(picture, _THUMBNAIL_SIDE), "jpeg")


def index_row(output_dir: Path, outcome: CaseOutcome) -> IndexRow:
    """The index row of one case: its batch outcome and what its folder holds."""
    folder = output_dir / outcome.case
    report = _read_report(folder) if outcome.status != "failed" else {}
    registration = as_dict(report.get("registration"))
    level = as_dict(registration.get("confidence")).get("level")
    level = level if level in ("high", "medium", "low") else None
    hot_max = _float(as_dict(as_dict(report.get("hotspots")).get("max")).get("value"))
    warnings = report.get("warnings")
    count = len(warnings) if isinstance(warnings, list) and outcome.status != "failed" else len(outcome.warnings)
    page = folder / QC_NAME
    return IndexRow(
        case=outcome.case,
        status=outcome.status,
        error=outcome.error,
        seconds=outcome.seconds if outcome.status != "skipped" else None,
        warnings=count,
        page=f"{quote(outcome.case)}/{QC_NAME}" if page.is_file() else None,
        thumbnail=_thumbnail(folder, report) if outcome.status != "failed" else None,
        moved_mm=_float(registration.get("moved_mm")),
        rotation_deg=_float(registration.get("rotation_deg")),
        metric_header=_float(registration.get("metric_header")),
        metric_value=_float(registration.get("metric_value")),
        confidence=level,
        hot_max=hot_max,
        hot_text=number(hot_max, 4, pet_units(report)),
        needs_look=outcome.status == "failed" or level in ("low", "medium") or count > 0,
    )


def render_index(rows: Sequence[IndexRow], title: str) -> str:
    """The HTML of a batch index."""
    from markupsafe import Markup

    counts = {status: sum(row.status == status for row in rows) for status in ("ok", "failed", "skipped")}
    seconds = sum(row.seconds or 0.0 for row in rows)
    return render_template(
        "index.html",
        title=title,
        rows=rows,
        counts=counts,
        total_seconds=seconds,
        index_js=Markup(asset("index.js")),
    )


def write_index(output_dir: str | Path, outcomes: Sequence[CaseOutcome]) -> Path:
    """Write ``output_dir/index.html`` for a batch's case outcomes (atomically, replacing an older one)."""
    output_dir = Path(output_dir)
    rows = [index_row(output_dir, outcome) for outcome in outcomes]
    text = render_index(rows, output_dir.absolute().name)
    path = output_dir / INDEX_NAME
    with output_transaction(overwrite=True) as transaction:
        transaction.write(path, lambda target: target.write_text(text, encoding="utf-8"))
    return path
