"""DICOM export: results on the MRI grid as standard Enhanced MR objects that stack on the MRI.

:func:`write_dicom_series` writes one volume as a new series folder holding one multi-frame file:

- a grey volume (the fused image) as **Enhanced MR Image** (``1.2.840.10008.5.1.4.1.1.4.1``),
  MONOCHROME2 16-bit, its float values restored by the Pixel Value Transformation (rescale) to
  1/65535 of their range;
- a colour volume (the overlay) as **Enhanced MR Color Image** (``1.2.840.10008.5.1.4.1.1.4.3``),
  RGB 8-bit with an sRGB ICC profile.

Both are DERIVED MR images (the MRI's grid, patient, study and frame of reference; new series and
instance UIDs) whose slice geometry is the standard per-frame Plane Position, Plane Orientation and
Pixel Measures functional groups (built with highdicom), so viewers and converters place every frame
on the MRI (README, "DICOM output", says why these IODs). Where the MRI and PET were DICOM, the
series reference them as their sources: every frame the MRI slice it was made from, the PET as a
whole series (:func:`_reference_sources`). Values copied from the MRI are made valid
for their VR first (:func:`valid_tags`), saying what changed. :func:`plan_dicom_outputs` checks
``-o DIR --format dicom`` before any work and :func:`write_fused_dicom` writes a fusion result
there; folders appear whole or not at all (:mod:`medfuse.atomic`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import MAX_VALUE_LEN, format_number_as_ds, validate_value

from medfuse import __version__
from medfuse.atomic import (
    IMAGE_EXTENSIONS,
    VOLUME_EXTENSIONS,
    OutputTransaction,
    check_output_path,
    full_suffix,
    output_transaction,
    strip_suffix,
)
from medfuse.console import warn
from medfuse.dicom.headers import EXPORT_KEYWORDS
from medfuse.errors import OutputError, UsageError

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
ENHANCED_MR_COLOR = "1.2.840.10008.5.1.4.1.1.4.3"
#: Sub-folders of ``-o DIR --format dicom``.
FUSED_SERIES_FOLDER = "fused"
OVERLAY_SERIES_FOLDER = "overlay"
#: The one file of each exported series.
SERIES_FILE = "IM00001.dcm"
_UINT16_MAX = 65535
#: Type of each copied attribute in the exported IODs: 1 must hold a valid value, 2 may be empty, 3 may go.
_COPIED_TYPE = {
    "StudyInstanceUID": 1,
    "FrameOfReferenceUID": 1,
    "IssuerOfPatientID": 3,
    "PatientAge": 3,
    "StudyDescription": 3,
    "BodyPartExamined": 3,
}
_SEX = {"M": "M", "F": "F", "O": "O", "MALE": "M", "FEMALE": "F", "OTHER": "O"}
#: PS3.16 Annex L: Body Part Examined -> anatomic region (SNOMED CT), for the regions PET/MRI covers.
_BODY_PARTS = {
    "HEAD": ("69536005", "Head"),
    "BRAIN": ("12738006", "Brain"),
    "NECK": ("45048000", "Neck"),
    "HEADNECK": ("774007", "Head and Neck"),
    "CHEST": ("51185008", "Chest"),
    "ABDOMEN": ("818983003", "Abdomen"),
    "PELVIS": ("816092008", "Pelvis"),
    "WHOLEBODY": ("38266002", "Entire body"),
}
#: Frame Anatomy is Type 1; an MRI that does not say what it shows (NIfTI) gets the general code.
_UNKNOWN_REGION = ("123037004", "Body structure")


# ---- values copied from the MRI ---------------------------------------------------------------------
def _fits(keyword: str, vr: str, value: str) -> bool:
    """Whether ``value`` is valid for ``keyword``: its VR's syntax and length, one value, the enumerated sexes."""
    if "\\" in value or (keyword == "PatientSex" and value not in _SEX.values()):
        return False
    try:
        validate_value(vr, value, config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


def _utf8_prefix(value: str, limit: int) -> str:
    """The longest prefix of ``value`` whose UTF-8 bytes fit ``limit`` (DICOM limits count bytes here)."""
    return value.encode("utf-8")[:limit].decode("utf-8", errors="ignore").rstrip()


def _repaired(keyword: str, vr: str, value: str) -> str | None:
    """A valid value made from an invalid one where that is unambiguous, else ``None``."""
    if keyword == "PatientSex":
        return _SEX.get(value.strip().upper())
    if vr in ("DA", "TM"):  # 1960-01-01 -> 19600101, 10:30:00 -> 103000
        candidate = re.sub(r"[^0-9.]" if vr == "TM" else r"[^0-9]", "", value)
    elif vr == "CS":
        candidate = _utf8_prefix(re.sub(r"[^A-Z0-9 _]", "_", value.strip().upper()), MAX_VALUE_LEN["CS"])
    elif vr == "PN":
        candidate = "=".join(_utf8_prefix(group, 64) for group in value.split("=")[:3])
    elif vr in MAX_VALUE_LEN and vr != "UI":
        candidate = _utf8_prefix(value.replace("\\", " "), MAX_VALUE_LEN[vr])
    else:
        return None
    return candidate if candidate and _fits(keyword, vr, candidate) else None


def valid_tags(tags: Mapping[str, str], source: str) -> dict[str, str]:
    """``tags`` (copied from the MRI) made valid for their VR, warning once per value changed.

    Too long: truncated. Malformed dates, times, codes, sexes: repaired where unambiguous, else left
    empty (Type 2) or out (Type 3). An invalid UID is replaced by a new one (the series then no longer
    joins the MRI's study or frame of reference, which the warning says). ``source`` names the MRI.
    """
    clean: dict[str, str] = {}
    for keyword, raw in tags.items():
        value = str(raw or "")
        vr = dictionary_VR(keyword)
        if not value or _fits(keyword, vr, value):
            clean[keyword] = value
            continue
        problem = f"{source}: the MRI's {keyword} {value!r} is not a valid DICOM {vr} value"
        repaired = _repaired(keyword, vr, value)
        if repaired is not None:
            clean[keyword] = repaired
            warn(f"{problem}; the exported series carry {repaired!r}.")
        elif vr == "UI":
            clean[keyword] = generate_uid()
            warn(f"{problem}; the exported series get a new one, so a PACS files them apart from the MRI.")
        elif _COPIED_TYPE.get(keyword, 2) == 2:
            clean[keyword] = ""
            warn(f"{problem}; the exported series leave it empty.")
        else:
            warn(f"{problem}; the exported series leave it out.")
    return clean


def export_reference(info: Mapping[str, Any] | None, pet: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The reference to stamp on exported series: the MRI's patient, study and frame of reference,
    and the DICOM series the images were made from.

    ``info`` is :attr:`DicomVolume.info` of the MRI; ``None`` (an MRI that was not DICOM) gives fresh
    study and frame-of-reference UIDs. ``pet`` is the PET's :attr:`DicomVolume.info` (``None`` when
    it was not DICOM). The values are made valid for their VR (warning about each change) once; pass
    the same reference to every series of one result so they share study and frame of reference. A
    reference made already is returned as it is.
    """
    if info is not None and info.get("export_tags_valid"):
        return dict(info)
    if info is not None and info.get("export_tags"):
        tags = valid_tags(info["export_tags"], str(info.get("folder") or "the MRI"))
    else:
        tags = dict.fromkeys(EXPORT_KEYWORDS, "")
        today = dt.datetime.now()
        tags.update(StudyDate=today.strftime("%Y%m%d"), StudyTime=today.strftime("%H%M%S"))
    tags["StudyInstanceUID"] = tags.get("StudyInstanceUID") or generate_uid()
    tags["FrameOfReferenceUID"] = tags.get("FrameOfReferenceUID") or generate_uid()
    sources = [s for s in (_source_reference(info, "MRI"), _source_reference(pet, "PET")) if s is not None]
    return {"export_tags": tags, "export_tags_valid": True, "sources": sources}


# ---- pixels -----------------------------------------------------------------------------------------
def _grey_pixels(array: np.ndarray, out_dir: Path) -> tuple[np.ndarray, float, float]:
    """uint16 stored values plus the RescaleSlope/Intercept that map them back to ``array``."""
    if not np.isfinite(array).all():
        raise OutputError(f"{out_dir}: the volume to export holds NaN or infinite values; nothing was written.")
    low, high = float(array.min()), float(array.max())
    slope = float(format_number_as_ds((high - low) / _UINT16_MAX)) if high > low else 1.0
    intercept = float(format_number_as_ds(low))
    stored = np.clip(np.rint((array.astype(np.float64) - intercept) / slope), 0, _UINT16_MAX)
    return stored.astype(np.uint16), slope, intercept


def _rgb_pixels(array: np.ndarray, out_dir: Path) -> np.ndarray:
    """uint8 RGB triplets from an 8-bit or a [0, 1] floating-point colour volume."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1:
        return np.rint(array * 255).astype(np.uint8)
    raise OutputError(
        f"{out_dir}: an RGB series needs 8-bit colours or floats in [0, 1], not {array.dtype} values "
        f"from {array.min()} to {array.max()}; nothing was written."
    )


def _srgb_profile() -> bytes:
    """An sRGB ICC profile (the overlay's colours are sRGB), declared a colour-space profile as DICOM asks."""
    from PIL import ImageCms

    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[12:16] = b"spac"  # device class: PS3.3 C.11.15.1.1 allows 'scnr' or 'spac', littleCMS writes 'mntr'
    profile[84:100] = bytes(16)  # profile ID: "not computed" (the one there covered the old class)
    return bytes(profile)


# ---- references to the source images ---------------------------------------------------------------
def _source_reference(info: Mapping[str, Any] | None, role: str) -> dict[str, Any] | None:
    """What the exported series need to reference a DICOM source series, from its :attr:`DicomVolume.info`.

    ``None`` when the input was not DICOM, or when one of its UIDs is not a valid DICOM UID (a
    reference must name the instance as it is, so it cannot be repaired; a warning says so).
    """
    if not info or not info.get("source_instances"):
        return None
    instances = {str(r["sop_instance_uid"]): str(r["sop_class_uid"]) for r in info["source_instances"]}
    study, series = str(info.get("study_uid") or ""), str(info.get("series_uid") or "")
    uids = [study, series, *instances, *instances.values()]
    bad = next((uid for uid in uids if not uid or not _fits("UID", "UI", uid)), None)
    if bad is not None:
        warn(
            f"{info.get('folder') or 'the ' + role}: the {role}'s UID {bad!r} is not a valid DICOM UID; "
            f"the exported series do not reference the {role} series."
        )
        return None
    return {
        "role": role,
        "study_uid": study,
        "series_uid": series,
        "slices": list(info.get("source_slices") or []),
        "instances": [{"sop_class_uid": c, "sop_instance_uid": i} for i, c in instances.items()],
    }


def _concept(code: Any) -> Dataset:
    """A code sequence item of a pydicom ``Code`` (``pydicom.sr.codedict.codes``)."""
    import highdicom as hd

    return hd.sr.CodedConcept.from_code(code)


def _image_reference(record: Mapping[str, Any], *, preserved: str | None = None) -> Dataset:
    """A Source/Referenced Image item: the instance (and frame) used to make this image."""
    from pydicom.sr.codedict import codes

    item = _item(ReferencedSOPClassUID=record["sop_class_uid"], ReferencedSOPInstanceUID=record["sop_instance_uid"])
    if record.get("frame_number"):
        item.ReferencedFrameNumber = record["frame_number"]
    item.PurposeOfReferenceCodeSequence = DicomSequence([_concept(codes.DCM.SourceImageForImageProcessingOperation)])
    if preserved is not None:
        item.SpatialLocationsPreserved = preserved
    return item


def _derivation(description: str, references: list[Dataset]) -> DicomSequence:
    """A Derivation Image Sequence: how the frame was made (CID 7203 has no code for fusion, so the
    one coded step is the PET's spatial resampling and the text says the rest) and from what."""
    from pydicom.sr.codedict import codes

    return DicomSequence(
        [
            _item(
                DerivationDescription=description,
                DerivationCodeSequence=DicomSequence([_concept(codes.DCM.SpatialResampling)]),
                SourceImageSequence=DicomSequence(references),
            )
        ]
    )


def _evidence(references: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> DicomSequence:
    """Every referenced instance once, by study and series (Hierarchical SOP Instance Reference Macro)."""
    studies: dict[str, dict[str, dict[str, str]]] = {}
    for source, record in references:
        series = studies.setdefault(source["study_uid"], {}).setdefault(source["series_uid"], {})
        series[record["sop_instance_uid"]] = record["sop_class_uid"]
    return DicomSequence(
        [
            _item(
                StudyInstanceUID=study,
                ReferencedSeriesSequence=DicomSequence(
                    [
                        _item(
                            SeriesInstanceUID=series,
                            ReferencedSOPSequence=DicomSequence(
                                [
                                    _item(ReferencedSOPClassUID=sop_class, ReferencedSOPInstanceUID=instance)
                                    for instance, sop_class in instances.items()
                                ]
                            ),
                        )
                        for series, instances in serieses.items()
                    ]
                ),
            )
            for study, serieses in studies.items()
        ]
    )


def _frame_sources(image: sitk.Image, order: list[int], source: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The source slice at the position of every frame (in frame order), or ``None`` when the source's
    slices are not the image's slices (another count, or a frame more than half a voxel from every slice)."""
    slices = source["slices"]
    if len(slices) != image.GetSize()[2] or any(record["position"] is None for record in slices):
        return None
    positions = np.array([record["position"] for record in slices], float)
    tolerance = 0.5 * min(image.GetSpacing())
    matched = []
    for k in order:
        distance = np.linalg.norm(positions - image.TransformIndexToPhysicalPoint((0, 0, k)), axis=1)
        nearest = int(np.argmin(distance))
        if distance[nearest] > tolerance:
            return None
        matched.append(nearest)
    return [slices[j] for j in matched] if len(set(matched)) == len(matched) else None


def _reference_sources(
    dataset: Dataset,
    shared: Dataset,
    image: sitk.Image,
    order: list[int],
    sources: Sequence[Mapping[str, Any]],
    description: str,
) -> None:
    """Reference the DICOM series the frames were made from.

    Each series as a whole in the Related Series Sequence (DCM 121323 "Source series for image
    processing operation"). The MRI slice of every frame in that frame's Derivation Image functional
    group (DCM 121322 "Source image for image processing operation", spatial locations preserved).
    A series referenced as a whole (the PET: registered and resampled, no slice is one frame's) lists
    its instances in the shared Referenced Image functional group, or in a shared Derivation Image
    group when no MRI slice is referenced per frame (a functional group is shared or per-frame, never
    both). The Source/Referenced Image Evidence Sequences list every instance referenced, as the
    Enhanced MR Image module requires once those references exist.
    """
    if not sources:
        return
    from pydicom.sr.codedict import codes

    purpose = codes.DCM.SourceSeriesForImageProcessingOperation
    dataset.RelatedSeriesSequence = DicomSequence(
        [
            _item(
                StudyInstanceUID=s["study_uid"],
                SeriesInstanceUID=s["series_uid"],
                PurposeOfReferenceCodeSequence=DicomSequence([_concept(purpose)]),
            )
            for s in sources
        ]
    )
    text = (
        f"{description}: the MRI fused with the PET, which was registered to the MRI and resampled onto "
        f"its grid (medfuse {__version__})"
    )
    mri = next((s for s in sources if s["role"] == "MRI"), None)
    per_frame = _frame_sources(image, order, mri) if mri is not None else None
    whole = [(s, record) for s in sources if per_frame is None or s is not mri for record in s["instances"]]
    if per_frame is not None and mri is not None:
        for frame, record in zip(dataset.PerFrameFunctionalGroupsSequence, per_frame, strict=True):
            frame.DerivationImageSequence = _derivation(text, [_image_reference(record, preserved="YES")])
        dataset.SourceImageEvidenceSequence = _evidence([(mri, record) for record in per_frame])
        if whole:
            shared.ReferencedImageSequence = DicomSequence([_image_reference(record) for _, record in whole])
            dataset.ReferencedImageEvidenceSequence = _evidence(whole)
    else:
        shared.DerivationImageSequence = _derivation(text, [_image_reference(record) for _, record in whole])
        dataset.SourceImageEvidenceSequence = _evidence(whole)


# ---- the dataset ------------------------------------------------------------------------------------
def _code(value: str, meaning: str) -> Dataset:
    import highdicom as hd

    return hd.sr.CodedConcept(value, "SCT", meaning)


def _item(**attributes: Any) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _frame_anatomy(tags: Mapping[str, str]) -> Dataset:
    code, meaning = _BODY_PARTS.get(str(tags.get("BodyPartExamined", "")).upper(), _UNKNOWN_REGION)
    return _item(AnatomicRegionSequence=DicomSequence([_code(code, meaning)]), FrameLaterality="U")


def _shared_groups(image: sitk.Image, tags: Mapping[str, str], image_type: list[str], colour: bool) -> Dataset:
    """The functional groups every frame shares: pixel measures, orientation, frame type and anatomy."""
    import highdicom as hd

    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    spacing = image.GetSpacing()
    description = {
        "PixelPresentation": "TRUE_COLOR" if colour else "MONOCHROME",
        "VolumetricProperties": "VOLUME",
        "VolumeBasedCalculationTechnique": "NONE",
        "ComplexImageComponent": "MAGNITUDE",
        "AcquisitionContrast": "UNKNOWN",
    }
    return _item(
        PixelMeasuresSequence=hd.PixelMeasuresSequence(
            pixel_spacing=[float(spacing[1]), float(spacing[0])],
            slice_thickness=float(spacing[2]),
            spacing_between_slices=float(spacing[2]),
        ),
        PlaneOrientationSequence=hd.PlaneOrientationSequence("PATIENT", [*direction[:, 0], *direction[:, 1]]),
        MRImageFrameTypeSequence=DicomSequence([_item(FrameType=image_type, **description)]),
        FrameAnatomySequence=DicomSequence([_frame_anatomy(tags)]),
    )


def _frame_order(image: sitk.Image) -> list[int]:
    """Slice indices in the order of their position along the DICOM normal (row × column), as readers stack."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    ascending = direction[:, 2] @ np.cross(direction[:, 0], direction[:, 1]) > 0
    order = list(range(image.GetSize()[2]))
    return order if ascending else order[::-1]


def _per_frame_groups(image: sitk.Image, order: list[int], organisation: str, dataset: Dataset) -> None:
    """Plane position and frame content of every frame, and the one dimension they are indexed by."""
    import highdicom as hd

    dataset.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=organisation)])
    dataset.DimensionOrganizationType = "3D"
    dataset.DimensionIndexSequence = DicomSequence(
        [
            _item(
                DimensionOrganizationUID=organisation,
                DimensionIndexPointer=Tag("ImagePositionPatient"),
                FunctionalGroupPointer=Tag("PlanePositionSequence"),
                DimensionDescriptionLabel="Image Position (Patient)",
            )
        ]
    )
    frames = []
    for number, k in enumerate(order, start=1):
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        content = _item(DimensionIndexValues=[number], StackID="1", InStackPositionNumber=number)
        frames.append(
            _item(
                PlanePositionSequence=hd.PlanePositionSequence("PATIENT", [float(v) for v in position]),
                FrameContentSequence=DicomSequence([content]),
            )
        )
    dataset.PerFrameFunctionalGroupsSequence = DicomSequence(frames)


def _enhanced_mr(
    image: sitk.Image,
    stored: np.ndarray,
    tags: Mapping[str, str],
    series: Mapping[str, Any],
    colour: bool,
    sources: Sequence[Mapping[str, Any]] = (),
) -> Dataset:
    """An Enhanced MR (Color) Image of ``stored`` ((z, y, x[, 3]) pixels) on ``image``'s grid."""
    now = dt.datetime.now()
    sop_uid = generate_uid()
    sop_class = UID(ENHANCED_MR_COLOR if colour else ENHANCED_MR)
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, sop_uid
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    image_type = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    attributes = {
        "Modality": "MR",
        "SeriesInstanceUID": series["uid"],
        "SeriesNumber": series["number"],
        "SeriesDescription": series["description"][:64],
        "ImageComments": f"{series['description']} (medfuse {__version__})",
        "Manufacturer": "medfuse",
        "ManufacturerModelName": "medfuse",
        "DeviceSerialNumber": "none",
        "SoftwareVersions": __version__,
        "InstanceNumber": 1,
        "ContentDate": now.strftime("%Y%m%d"),
        "ContentTime": now.strftime("%H%M%S"),
        "SeriesDate": now.strftime("%Y%m%d"),
        "SeriesTime": now.strftime("%H%M%S"),
        "InstanceCreationDate": now.strftime("%Y%m%d"),
        "InstanceCreationTime": now.strftime("%H%M%S"),
        "ImageType": image_type,
        "PixelPresentation": "TRUE_COLOR" if colour else "MONOCHROME",
        "VolumetricProperties": "VOLUME",
        "VolumeBasedCalculationTechnique": "NONE",
        "ComplexImageComponent": "MAGNITUDE",
        "AcquisitionContrast": "UNKNOWN",
        "ContentQualification": "RESEARCH",
        "ApplicableSafetyStandardAgency": "IEC",  # Type 1 for every MR image; the MRI's scanner followed IEC 60601-2-33
        "PresentationLUTShape": "IDENTITY",
        "BurnedInAnnotation": "NO",
        "LossyImageCompression": "00",
        "PositionReferenceIndicator": "",
        "AcquisitionContextSequence": DicomSequence([]),
        "NumberOfFrames": stored.shape[0],
        "Rows": stored.shape[1],
        "Columns": stored.shape[2],
        "PixelRepresentation": 0,
    }
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    shared = _shared_groups(image, tags, image_type, colour)
    if colour:
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
        dataset.BitsAllocated = dataset.BitsStored = 8
        dataset.HighBit = 7
        dataset.ICCProfile = _srgb_profile()
    else:
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated = dataset.BitsStored = 16
        dataset.HighBit = 15
        slope, intercept = series["rescale"]
        low, high = intercept, intercept + slope * _UINT16_MAX
        transform = _item(RescaleIntercept=format_number_as_ds(intercept), RescaleSlope=format_number_as_ds(slope))
        transform.RescaleType = "US"
        window = _item(WindowCenter=format_number_as_ds((low + high) / 2), WindowWidth=format_number_as_ds(high - low))
        if high - low < 1:  # a window narrower than one unit needs the exact linear function (PS3.3 C.11.2.1.2)
            window.VOILUTFunction = "LINEAR_EXACT"
        shared.PixelValueTransformationSequence = DicomSequence([transform])
        shared.FrameVOILUTSequence = DicomSequence([window])
    order = _frame_order(image)
    _per_frame_groups(image, order, generate_uid(), dataset)
    _reference_sources(dataset, shared, image, order, sources, series["description"])
    dataset.SharedFunctionalGroupsSequence = DicomSequence([shared])
    dataset.PixelData = np.ascontiguousarray(stored[order]).tobytes()
    return dataset


def write_dicom_series(
    image: sitk.Image,
    out_dir: str | Path,
    *,
    reference: Mapping[str, Any] | None,
    description: str,
    rgb: bool,
    series_number: int = 9001,
    transaction: OutputTransaction | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 3-D volume as a new DICOM series folder (one multi-frame file) and return the folder.

    Grey volumes become an Enhanced MR Image, MONOCHROME2 16-bit with a rescale that restores their
    values (to 1/65535 of their range); ``rgb=True`` volumes (3 components, uint8 or floats in
    [0, 1]) an Enhanced MR Color Image, RGB 8-bit. Patient, study and FrameOfReferenceUID come from
    ``reference`` (:func:`export_reference` or the MRI's ``DicomVolume.info``; fresh UIDs when
    ``None``); Series and SOP Instance UIDs are new; every frame carries its position, so the series
    reads back on the image's grid (a left-handed grid comes back with its slice order reversed: the
    frames are stored along the DICOM normal; same voxels in space). A DICOM MRI (and PET, through
    :func:`export_reference`) is referenced as the source: each frame names the MRI slice at its
    position when the image is on the MRI's grid. The folder is written under a
    temporary name and renamed when complete, inside ``transaction`` when given (with the other
    outputs of a run) or in its own.
    """
    out_dir = Path(out_dir)
    if image.GetDimension() != 3:
        raise OutputError(
            f"{out_dir}: a DICOM series needs a 3-D volume, not {image.GetDimension()}-D; nothing was written."
        )
    components = image.GetNumberOfComponentsPerPixel()
    if components != (3 if rgb else 1):
        kind = "an RGB" if rgb else "a grey"
        raise OutputError(f"{out_dir}: {kind} series needs {3 if rgb else 1} component(s) per voxel, not {components}.")
    array = sitk.GetArrayFromImage(image)
    series: dict[str, Any] = {"uid": generate_uid(), "number": series_number, "description": description}
    if rgb:
        stored = _rgb_pixels(array, out_dir)
    else:
        stored, slope, intercept = _grey_pixels(array, out_dir)
        series["rescale"] = (slope, intercept)
    made = export_reference(reference)
    dataset = _enhanced_mr(image, stored, made["export_tags"], series, colour=rgb, sources=made.get("sources", ()))

    def run(tx: OutputTransaction) -> None:
        temp = tx.path_for(out_dir)
        try:
            temp.mkdir()
            dataset.save_as(temp / SERIES_FILE, enforce_file_format=True)
        except OSError as exc:
            raise OutputError(f"{out_dir}: the DICOM series could not be written ({exc.strerror or exc}).") from exc

    if transaction is not None:
        run(transaction)
    else:
        with output_transaction(overwrite=overwrite) as tx:
            run(tx)
    return out_dir


def plan_dicom_outputs(
    output_dir: str | Path, *, inputs: Sequence[str | Path], overlay: bool, overwrite: bool
) -> dict[str, Path]:
    """Check ``-o DIR --format dicom`` before any work; return the series folders by kind.

    The fused series goes to ``DIR/fused`` and the overlay to ``DIR/overlay``; ``DIR`` may exist
    (other files in it are left alone) or be created if its parent exists. Refused: a ``DIR`` named
    like a file (``.nii.gz``, ``.png``...), a ``DIR`` inside an input folder (inputs stay untouched),
    and existing series folders without ``overwrite``.
    """
    output_dir = Path(output_dir)
    suffix = full_suffix(output_dir)
    if suffix in (*VOLUME_EXTENSIONS, *IMAGE_EXTENSIONS, ".dcm", ".json"):
        raise UsageError(
            f"-o {output_dir}: --format dicom writes a folder of DICOM series, not a {suffix} file; "
            f"give -o a folder such as {strip_suffix(output_dir)}."
        )
    for item in inputs:
        source = Path(item)
        if source.is_dir() and output_dir.resolve().is_relative_to(source.resolve()):
            raise OutputError(
                f"{output_dir}: is inside the input folder {source}, which medfuse never writes into; "
                "choose another -o."
            )
    folders = {"fused": FUSED_SERIES_FOLDER, **({"overlay": OVERLAY_SERIES_FOLDER} if overlay else {})}
    return {
        kind: check_output_path(output_dir / name, is_dir=True, inputs=inputs, overwrite=overwrite)
        for kind, name in folders.items()
    }


def write_fused_dicom(
    targets: Mapping[str, Path],
    fused: sitk.Image,
    overlay: sitk.Image | None,
    *,
    reference: Mapping[str, Any] | None,
    pet: Mapping[str, Any] | None = None,
    method: str,
    transaction: OutputTransaction,
) -> list[Path]:
    """Write a fusion result to the folders of :func:`plan_dicom_outputs`: the fused volume as a grey
    series in ``targets["fused"]`` and, when both are given, the overlay as an RGB series in
    ``targets["overlay"]``.

    Both series share the MRI's patient, study and frame of reference (``reference`` is the MRI's
    :attr:`DicomVolume.info`; fresh UIDs when the MRI was not DICOM), reference the MRI and the PET
    (``pet``, the PET's :attr:`DicomVolume.info`) where they were DICOM, and are committed with the
    rest of ``transaction``.
    """
    shared = export_reference(reference, pet)
    written = [
        write_dicom_series(
            fused,
            targets["fused"],
            reference=shared,
            description=f"medfuse fused MRI+PET ({method})",
            rgb=False,
            series_number=9001,
            transaction=transaction,
        )
    ]
    if overlay is not None and "overlay" in targets:
        written.append(
            write_dicom_series(
                overlay,
                targets["overlay"],
                reference=shared,
                description="medfuse MRI+PET colour overlay",
                rgb=True,
                series_number=9002,
                transaction=transaction,
            )
        )
    return written
