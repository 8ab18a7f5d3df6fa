"""Clinical DICOM: find the right series in an export, read it exactly, convert PET to SUV, export results.

One module per concern (a dependency only points down this list):

- :mod:`~medfuse.dicom.files`: recognising DICOM files (:func:`looks_like_dicom`); no pydicom.
- :mod:`~medfuse.dicom.headers`: reading a header (no pixels) and its values tolerantly.
- :mod:`~medfuse.dicom.records`: the 2-D images (:class:`SliceRecord`) a file contributes.
- :mod:`~medfuse.dicom.stack`: whether slices form one complete, even, unsheared 3-D stack.
- :mod:`~medfuse.dicom.series`: describing a folder's series (:func:`list_series`), choosing MRI or PET.
- :mod:`~medfuse.dicom.suv`: PET to SUVbw, one function per DICOM Units case.
- :mod:`~medfuse.dicom.read`: reading the chosen series as a volume (:func:`read_dicom_series`).
- :mod:`~medfuse.dicom.export`: writing results as new Enhanced MR (Color) series.

The names below are imported on first use, so that ``medfuse.dicom.files`` stays free of pydicom
and SimpleITK for callers that only sort files.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfuse.dicom.export import (
        ENHANCED_MR,
        ENHANCED_MR_COLOR,
        FUSED_SERIES_FOLDER,
        OVERLAY_SERIES_FOLDER,
        export_reference,
        plan_dicom_outputs,
        write_dicom_series,
        write_fused_dicom,
    )
    from medfuse.dicom.files import (
        DICOM_SUFFIXES,
        looks_like_dicom,
    )
    from medfuse.dicom.read import (
        DicomVolume,
        check_same_patient,
        read_dicom_series,
    )
    from medfuse.dicom.records import (
        SliceRecord,
    )
    from medfuse.dicom.series import (
        ROLE_MODALITIES,
        SERIES_OPTION,
        Role,
        SeriesInfo,
        list_series,
    )
    from medfuse.dicom.stack import (
        MIN_SLICES,
        SPACING_TOLERANCE,
    )
    from medfuse.dicom.suv import (
        suv_factors,
        suv_readiness,
    )

__all__ = [
    "DICOM_SUFFIXES",
    "ENHANCED_MR",
    "ENHANCED_MR_COLOR",
    "FUSED_SERIES_FOLDER",
    "MIN_SLICES",
    "OVERLAY_SERIES_FOLDER",
    "ROLE_MODALITIES",
    "SERIES_OPTION",
    "SPACING_TOLERANCE",
    "DicomVolume",
    "Role",
    "SeriesInfo",
    "SliceRecord",
    "check_same_patient",
    "export_reference",
    "list_series",
    "looks_like_dicom",
    "plan_dicom_outputs",
    "read_dicom_series",
    "suv_factors",
    "suv_readiness",
    "write_dicom_series",
    "write_fused_dicom",
]


#: The modules, in dependency order, that hold the names above.
_MODULES = ("files", "headers", "records", "stack", "series", "suv", "read", "export")


def __getattr__(name: str) -> Any:
    """Import the module holding a public name on first use (``medfuse.dicom.files`` needs no pydicom)."""
    if name in __all__:
        for module_name in _MODULES:
            module = importlib.import_module(f"medfuse.dicom.{module_name}")
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module 'medfuse.dicom' has no attribute {name!r}")
