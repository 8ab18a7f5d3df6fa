"""HTML of the QC pages: Jinja2 templates (autoescaped) with the styles and scripts inlined.

:class:`CasePage` holds a case's drawn pictures and viewer volumes; :func:`render_case` and the
batch index (:mod:`medfuse.qc.index`) fill the templates of ``templates/``.

A page is one self-contained file: pictures are ``data:`` URIs, the stylesheet and scripts
(``medfuse/qc/assets``) are copied into it, and a Content-Security-Policy forbids every network
request, so it opens from a USB stick exactly as it does anywhere else. The report's figures go
through small formatting helpers that print "not available" for anything absent, so a report of an
older medfuse (without ``registration`` motion figures or ``hotspots``) still gives a full page.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

#: Forbids every request: the page needs nothing but itself (data: images, inline styles and scripts).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
NOT_AVAILABLE = None  # what the helpers return for an absent figure; the templates print "not available"


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("medfuse.qc", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@functools.lru_cache(maxsize=8)
def asset(name: str) -> str:
    """The text of a stylesheet or script of ``medfuse/qc/assets`` (inlined into pages)."""
    text = resources.files("medfuse.qc").joinpath("assets").joinpath(name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"medfuse/qc/assets/{name} contains a closing tag and cannot be inlined")
    return text


def render_template(template: str, **context: Any) -> str:
    """Render a page template with the stylesheet and the network-forbidding policy."""
    from markupsafe import Markup

    return (
        _environment()
        .get_template(template)
        .render(csp=CONTENT_SECURITY_POLICY, style=Markup(asset("style.css")), **context)
    )


@dataclass
class CasePage:
    """A case page whose pictures and viewer volumes are ready; :meth:`html` adds the report's figures."""

    title: str
    pictures: dict[str, str]  # data URIs by name (inputs_mri, inputs_pet, registration_header, ...)
    captions: dict[str, str]
    viewer: dict[str, Any] | None
    notes: list[str]

    def html(self, report: dict[str, Any]) -> str:
        """The self-contained HTML page of this case with ``report``'s figures."""
        return render_case(self, report)


# ---- reading a run report defensively (older medfuse versions, edited files) ---------------------------
def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one."""
    return value if isinstance(value, dict) else {}


def pet_units(report: dict[str, Any]) -> str:
    """The PET's units as the report knows them (hotspots, else DICOM Units), else 'image units'."""
    from medfuse.preview import unit_label

    hotspots = as_dict(report.get("hotspots"))
    if hotspots.get("units"):
        return str(hotspots["units"])
    return unit_label(as_dict(report.get("pet_window")).get("units")) or "image units"


def report_window(report: dict[str, Any]) -> tuple[float, float] | None:
    """The PET window (low, high) of the report, if it holds a valid one."""
    window = as_dict(report.get("pet_window"))
    try:
        low, high = float(window["low"]), float(window["high"])
    except (TypeError, ValueError, KeyError):
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) and high > low else None


def _lift(gamma: Any) -> str | None:
    """The power the PET's windowed value was raised to for the network, when it was lifted (< 1)."""
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0.0 < gamma < 1.0:
        return None
    return number(gamma, 3)


# ---- formatting ------------------------------------------------------------------------------------
def number(value: Any, digits: int = 4, unit: str = "") -> str | None:
    """A finite number with ``digits`` significant digits (and a unit); None when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return NOT_AVAILABLE
    text = f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return f"{text} {unit}".rstrip() if unit else text


def fixed(value: Any, decimals: int = 1, unit: str = "") -> str | None:
    """A finite number with a fixed number of decimals (and a unit); None when absent."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return NOT_AVAILABLE
    return f"{value:.{decimals}f} {unit}".rstrip()


def triple(values: Any, decimals: int = 1) -> str | None:
    """Three numbers as "a, b, c"; None unless ``values`` is three finite numbers."""
    if not isinstance(values, list | tuple) or len(values) != 3:
        return NOT_AVAILABLE
    parts = [fixed(v, decimals) for v in values]
    return ", ".join(parts) if all(parts) else NOT_AVAILABLE  # type: ignore[arg-type]


def _integers(values: Any, separator: str = " × ") -> str | None:
    """Integers joined (a size: "256 × 256 × 180"; a voxel index with ``separator=", "``); None if not integers."""
    if not isinstance(values, list | tuple) or not values or not all(isinstance(v, int) for v in values):
        return NOT_AVAILABLE
    return separator.join(str(v) for v in values)


def _text(value: Any) -> str | None:
    return NOT_AVAILABLE if value is None or value == "" else str(value)


# ---- the case page -----------------------------------------------------------------------------------
def _input_rows(report: dict[str, Any], units: str) -> list[tuple[str, str | None, str | None]]:
    inputs = as_dict(report.get("inputs"))
    mri, pet = as_dict(inputs.get("mri")), as_dict(inputs.get("pet"))

    def both(label: str, get: Any) -> tuple[str, str | None, str | None]:
        return label, get(mri), get(pet)

    def orientation(record: dict[str, Any]) -> str | None:
        code = record.get("orientation")
        return f"{code}{' (oblique)' if record.get('oblique') else ''}" if code else NOT_AVAILABLE

    def value_range(record: dict[str, Any]) -> str | None:
        values = record.get("value_range")
        if not isinstance(values, list) or len(values) != 2:
            return NOT_AVAILABLE
        low, high = number(values[0]), number(values[1])
        return f"{low} to {high}" if low and high else NOT_AVAILABLE

    def series(record: dict[str, Any]) -> str | None:
        dicom = as_dict(record.get("dicom"))
        parts = [str(dicom[key]) for key in ("modality", "description", "units") if dicom.get(key)]
        return ", ".join(parts) if parts else NOT_AVAILABLE

    rows = [
        both("File", lambda r: _text(r.get("path"))),
        both("Format", lambda r: _text(r.get("format"))),
        both("Pixel type", lambda r: _text(r.get("pixel_type"))),
        both("Size (voxels)", lambda r: _integers(r.get("size"))),
        both("Spacing (mm)", lambda r: triple(r.get("spacing_mm"), 3)),
        both("Origin (mm, LPS)", lambda r: triple(r.get("origin_mm"), 2)),
        both("Orientation", orientation),
        both("Extent (mm)", lambda r: triple(r.get("extent_mm"), 1)),
        both("Value range", value_range),
        both("DICOM series", series),
    ]
    rows.append(("PET frame", "", _text(pet.get("frame")) or "single frame"))
    rows.append(("PET units", "", units))
    return rows


def _registration(report: dict[str, Any]) -> dict[str, Any]:
    record = as_dict(report.get("registration"))
    transform = as_dict(record.get("transform"))
    confidence = as_dict(record.get("confidence"))
    overlap = record.get("overlap", record.get("head_overlap"))
    level = confidence.get("level") if confidence.get("level") in ("high", "medium", "low") else None
    spread = fixed(confidence.get("spread_mm"), 1, "mm")
    rows = [
        ("Requested", _text(record.get("requested"))),
        ("Source", _text(record.get("source"))),
        ("Decision", _text(record.get("decision"))),
        ("Metric", _text(record.get("metric"))),
        ("Metric at the header pose", number(record.get("metric_header"))),
        ("Metric after registration", number(record.get("metric_value"))),
        ("MRI foreground centre moved by", fixed(record.get("moved_mm"), 1, "mm")),
        ("Rotation from the header pose", fixed(record.get("rotation_deg"), 2, "°")),
        ("Head overlap", fixed(100 * overlap, 0, "%") if isinstance(overlap, int | float) else NOT_AVAILABLE),
        ("Confidence", f"{level}{f' (spread {spread})' if spread else ''}" if level else NOT_AVAILABLE),
        ("Why", _text(confidence.get("reason"))),
        ("Transform (MRI → PET)", _text(transform.get("type"))),
        ("Transform rotation", fixed(transform.get("rotation_deg"), 2, "°")),
        ("Transform translation (mm)", triple(transform.get("translation_mm"), 2)),
    ]
    return {"rows": rows, "level": level}


def _hotspots(report: dict[str, Any], units: str) -> dict[str, Any] | None:
    hotspots = report.get("hotspots")
    if not isinstance(hotspots, dict):
        return None
    peak_name = "SUVpeak" if hotspots.get("is_suv") else "Peak"
    max_name = "SUVmax" if hotspots.get("is_suv") else "Maximum"
    top, peak = as_dict(hotspots.get("max")), as_dict(hotspots.get("peak"))
    summary = [
        (
            max_name,
            number(top.get("value"), 4, units),
            triple(top.get("position_mm")),
            _integers(top.get("mri_voxel"), ", "),
        ),
        (
            f"{peak_name} ({number(peak.get('sphere_ml'), 3) or 1} mL sphere)",
            number(peak.get("value"), 4, units),
            triple(peak.get("centre_mm")),
            _integers(peak.get("mri_voxel"), ", "),
        ),
    ]
    regions = []
    for region in hotspots.get("regions") or []:
        region = as_dict(region)
        regions.append(
            {
                "rank": _text(region.get("rank")),
                "volume": number(region.get("volume_ml"), 3),
                "max": number(region.get("max"), 4),
                "peak": number(region.get("peak"), 4),
                "mean": number(region.get("mean"), 4),
                "centre": triple(region.get("centre_mm")),
                "voxel": _integers(region.get("mri_voxel"), ", "),
                "goto": _voxel_attribute(region.get("mri_voxel")),
            }
        )
    threshold = as_dict(hotspots.get("threshold"))
    return {
        "units": units,
        "grid": _text(hotspots.get("grid")),
        "threshold": _text(threshold.get("rule")),
        "summary": summary,
        "summary_goto": [_voxel_attribute(top.get("mri_voxel")), _voxel_attribute(peak.get("mri_voxel"))],
        "regions": regions,
        "max_name": max_name,
        "peak_name": peak_name,
    }


def _voxel_attribute(voxel: Any) -> str:
    """An MRI voxel as "i,j,k" for a viewer button; "" when absent (outside the MRI)."""
    return ",".join(str(v) for v in voxel) if _integers(voxel) and len(voxel) == 3 else ""


def _timings(report: dict[str, Any]) -> list[tuple[str, str, float]]:
    timings = {k: v for k, v in as_dict(report.get("timings_s")).items() if isinstance(v, int | float)}
    total = timings.get("total") or sum(v for k, v in timings.items() if k != "total") or 1.0
    return [(name.replace("_", " "), f"{seconds:.2f}", min(1.0, seconds / total)) for name, seconds in timings.items()]


def _summary_cards(
    report: dict[str, Any], registration: dict[str, Any], hotspots: dict[str, Any] | None
) -> list[tuple[str, str | None]]:
    record = as_dict(report.get("registration"))
    fusion = as_dict(report.get("fusion"))
    warnings = report.get("warnings")
    cards = [
        ("Registration", _text(record.get("source"))),
        ("Moved", fixed(record.get("moved_mm"), 1, "mm")),
        ("Rotation", fixed(record.get("rotation_deg"), 2, "°")),
        ("Confidence", registration["level"]),
        (
            "Metric header → result",
            _arrow(number(record.get("metric_header"), 3), number(record.get("metric_value"), 3)),
        ),
    ]
    if hotspots is not None:
        cards.append((hotspots["max_name"], hotspots["summary"][0][1]))
        cards.append((hotspots["peak_name"], hotspots["summary"][1][1]))
    else:
        cards.append(("PET maximum", NOT_AVAILABLE))
    cards += [
        ("Fusion", f"{fusion.get('method')} on {fusion.get('device')}" if fusion.get("method") else NOT_AVAILABLE),
        ("Warnings", str(len(warnings)) if isinstance(warnings, list) else NOT_AVAILABLE),
        ("Total time", fixed(as_dict(report.get("timings_s")).get("total"), 1, "s")),
    ]
    return cards


def _arrow(before: str | None, after: str | None) -> str | None:
    if before is None and after is None:
        return NOT_AVAILABLE
    return f"{before or 'n/a'} → {after or 'n/a'}"


def render_case(page: CasePage, report: dict[str, Any]) -> str:
    """The HTML of a case page (see :class:`medfuse.qc.case.CasePage`)."""
    from markupsafe import Markup

    units = pet_units(report)
    registration = _registration(report)
    hotspots = _hotspots(report, units)
    fusion = as_dict(report.get("fusion"))
    window = as_dict(report.get("pet_window"))
    warnings = report.get("warnings")
    return render_template(
        "case.html",
        title=page.title,
        pictures=page.pictures,
        captions=page.captions,
        notes=page.notes,
        viewer=page.viewer,
        viewer_js=Markup(asset("viewer.js")) if page.viewer is not None else "",
        cards=_summary_cards(report, registration, hotspots),
        input_rows=_input_rows(report, units),
        registration=registration,
        hotspots=hotspots,
        hotspots_skipped=_text(report.get("hotspots_skipped")) if report.get("hotspots_skipped") else None,
        units=units,
        pet_window=(number(window.get("low")), number(window.get("high")), _text(window.get("source"))),
        pet_lift=_lift(window.get("gamma")),
        warnings=warnings if isinstance(warnings, list) else None,
        timings=_timings(report),
        versions=[(str(k), str(v)) for k, v in as_dict(report.get("versions")).items()],
        fusion=[
            (str(k).replace("_", " "), json.dumps(v) if isinstance(v, list) else str(v)) for k, v in fusion.items()
        ],
        weights=_text(fusion.get("weights_sha256")),
        outputs=[(str(k), str(v)) for k, v in as_dict(report.get("outputs")).items()],
        report_json=json.dumps(report, indent=2, default=str),
    )
