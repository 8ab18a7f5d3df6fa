"""Slice records: the 2-D images a DICOM file contributes, with the geometry and scaling of each.

A single-frame file gives one record; an enhanced multi-frame file (per-frame functional groups) or
an NM tomographic file gives one per frame. Records come from headers only (no pixels).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from pydicom.dataset import Dataset

from medfuse.dicom.headers import acquisition_time, first_item, floats, number, parse_datetime, private_value

_PHILIPS_SUV_SCALE = (0x7053, 0x1000)


@dataclass(frozen=True)
class SliceRecord:
    """One 2-D image of a series: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    frame: int | None
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    rows: int
    columns: int
    slope: float
    intercept: float
    acquired: dt.datetime | None
    vendor_suv_scale: float | None = None
    #: SOP Class and SOP Instance UID of the file, for the references an exported series makes to its sources.
    sop_class_uid: str = ""
    sop_instance_uid: str = ""


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    """The unit normal (row × column) of an ImageOrientationPatient."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, column)
    length = np.linalg.norm(normal)
    return normal / length if length > 0 else normal


class _Instance(TypedDict):
    sop_class_uid: str
    sop_instance_uid: str


def _instance(dataset: Dataset) -> _Instance:
    """The SOP Class and SOP Instance UID of a file (empty when missing)."""
    return {
        "sop_class_uid": str(dataset.get("SOPClassUID", "") or ""),
        "sop_instance_uid": str(dataset.get("SOPInstanceUID", "") or ""),
    }


def _frame_records(path: Path, dataset: Dataset, frames: int) -> list[SliceRecord]:
    """Slices of an enhanced multi-frame file (per-frame functional groups) or of an NM tomographic file."""
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    instance = _instance(dataset)
    records = []
    if "PerFrameFunctionalGroupsSequence" in dataset:
        shared = first_item(dataset, "SharedFunctionalGroupsSequence") or Dataset()
        for index, per_frame in enumerate(dataset.PerFrameFunctionalGroupsSequence):

            def group(keyword: str, per_frame: Dataset = per_frame) -> Dataset:
                return first_item(per_frame, keyword) or first_item(shared, keyword) or Dataset()

            transform = group("PixelValueTransformationSequence")
            content = group("FrameContentSequence")
            records.append(
                SliceRecord(
                    path=path,
                    frame=index,
                    position=floats(group("PlanePositionSequence").get("ImagePositionPatient"), 3),
                    orientation=floats(group("PlaneOrientationSequence").get("ImageOrientationPatient"), 6),
                    pixel_spacing=floats(group("PixelMeasuresSequence").get("PixelSpacing"), 2),
                    rows=rows,
                    columns=columns,
                    slope=number(transform.get("RescaleSlope"), 1.0) or 1.0,
                    intercept=number(transform.get("RescaleIntercept"), 0.0) or 0.0,
                    acquired=parse_datetime(content.get("FrameAcquisitionDateTime")) or acquisition_time(dataset),
                    **instance,
                )
            )
        return records
    detector = first_item(dataset, "DetectorInformationSequence") or Dataset()
    position = floats(detector.get("ImagePositionPatient"), 3)
    orientation = floats(detector.get("ImageOrientationPatient"), 6)
    step = number(dataset.get("SpacingBetweenSlices"), None) or number(dataset.get("SliceThickness"), None)
    is_tomo = any("TOMO" in str(v).upper() and "GATED" not in str(v).upper() for v in dataset.get("ImageType", []))
    normal = slice_normal(orientation) if orientation else None
    for index in range(frames):
        frame_position = None
        if is_tomo and position and normal is not None and step:
            frame_position = tuple(float(v) for v in np.asarray(position) + index * step * normal)
        records.append(
            SliceRecord(
                path=path,
                frame=index,
                position=frame_position,
                orientation=orientation,
                pixel_spacing=floats(dataset.get("PixelSpacing"), 2),
                rows=rows,
                columns=columns,
                slope=number(dataset.get("RescaleSlope"), 1.0) or 1.0,
                intercept=number(dataset.get("RescaleIntercept"), 0.0) or 0.0,
                acquired=acquisition_time(dataset),
                **instance,
            )
        )
    return records


def slice_records(path: Path, dataset: Dataset) -> list[SliceRecord]:
    """The 2-D images a file contributes (several for multi-frame files)."""
    frames = int(number(dataset.get("NumberOfFrames"), 1) or 1)
    if frames > 1 or "PerFrameFunctionalGroupsSequence" in dataset:
        return _frame_records(path, dataset, frames)
    vendor_scale = number(private_value(dataset, _PHILIPS_SUV_SCALE, "Philips PET Private Group"), None)
    return [
        SliceRecord(
            path=path,
            frame=None,
            position=floats(dataset.get("ImagePositionPatient"), 3),
            orientation=floats(dataset.get("ImageOrientationPatient"), 6),
            pixel_spacing=floats(dataset.get("PixelSpacing"), 2),
            rows=int(dataset.get("Rows", 0)),
            columns=int(dataset.get("Columns", 0)),
            slope=number(dataset.get("RescaleSlope"), 1.0) or 1.0,
            intercept=number(dataset.get("RescaleIntercept"), 0.0) or 0.0,
            acquired=acquisition_time(dataset),
            vendor_suv_scale=vendor_scale,
            **_instance(dataset),
        )
    ]


def source_references(records: Sequence[SliceRecord]) -> list[dict[str, Any]]:
    """How an exported series references each record as its source: SOP Class and Instance UID, the
    1-based frame number in a multi-frame file (else ``None``) and the position (to check the match)."""
    return [
        {
            "sop_class_uid": record.sop_class_uid,
            "sop_instance_uid": record.sop_instance_uid,
            "frame_number": None if record.frame is None else record.frame + 1,
            "position": None if record.position is None else list(record.position),
        }
        for record in records
    ]
