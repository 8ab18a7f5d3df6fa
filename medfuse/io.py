"""Reading, validating, describing and writing volumes (NIfTI, NRRD, MetaImage; DICOM via dicom.py).

Every volume leaves :func:`load_volume` as a 3-D scalar float32 :class:`SimpleITK.Image` in LPS
physical space (SimpleITK converts NIfTI's RAS storage on reading), with finite values and a sane
geometry, or the user gets one sentence saying what is wrong with which file. Headers are checked
before any voxel is allocated: an image too large for this machine's memory is refused with its size
named (:mod:`medfuse.memory`), and NIfTI files are checked for zero/negative voxel sizes and truncation
that the NIfTI library would otherwise hide (:mod:`medfuse.nifti`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfuse.atomic import VOLUME_EXTENSIONS, full_suffix
from medfuse.console import warn
from medfuse.errors import InvalidInputError, OutputError, UnreadableInputError, UsageError
from medfuse.memory import check_memory, format_bytes
from medfuse.nifti import check_nifti

if TYPE_CHECKING:
    import SimpleITK as sitk

    from medfuse.dicom import Role

#: File formats read by :func:`load_volume` (a folder is read as a DICOM series).
READ_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Fewest voxels along any axis for an image to count as a volume.
MIN_VOXELS_PER_AXIS = 4
#: Largest deviation of a direction matrix from orthonormal (float32 headers stay far below it).
ORTHONORMAL_TOLERANCE = 1e-4

_FORMAT_NAMES = {
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
}


@dataclass
class Volume:
    """A loaded, validated volume and what is known about where it came from."""

    image: sitk.Image
    path: Path
    info: dict[str, Any] = field(default_factory=dict)


# ---- reading ---------------------------------------------------------------------------------------
def read_volume(
    path: str | Path,
    *,
    role: Role = "MRI",
    frame: str | int | None = None,
    series_uid: str | None = None,
    suv: bool = False,
) -> sitk.Image:
    """Read a volume file or DICOM folder as a validated 3-D scalar float32 image."""
    return load_volume(path, role=role, frame=frame, series_uid=series_uid, suv=suv).image


def load_volume(
    path: str | Path,
    *,
    role: Role = "MRI",
    frame: str | int | None = None,
    series_uid: str | None = None,
    suv: bool = False,
) -> Volume:
    """Read and validate a volume, keeping its provenance (format, pixel type, DICOM series info).

    ``frame`` picks one frame of a 4-D (dynamic) image, or ``"sum"`` adds them up. A folder is read
    as a DICOM series by :func:`medfuse.dicom.read_dicom_series` (``series_uid`` and ``suv`` apply).
    """
    path = Path(path)
    image, info = read_input(path, role, series_uid=series_uid, suv=suv)
    if info.get("nan_read_as_zero"):
        warn(f"{path}: {info['nan_read_as_zero']:,} NaN or infinite voxels in the {role} were set to 0.")
    info["pixel_type"] = info.get("pixel_type") or image.GetPixelIDTypeAsString()
    image = validate_image(image, role=role, source=str(path), frame=frame)
    return Volume(image=image, path=path, info=info)


def read_input(
    path: Path, role: Role | None, *, series_uid: str | None = None, suv: bool = False
) -> tuple[sitk.Image, dict[str, Any]]:
    """Read a volume file or a DICOM folder as stored (any dimension, grey or colour), not validated.

    A folder is read as a DICOM series by :func:`medfuse.dicom.read_dicom_series` (``series_uid`` and
    ``suv`` apply; ``role`` None picks its MR series when it has one, else its PET/SPECT); a file by
    :func:`read_image_file`. Returns the image and what was learnt about it (``format``,
    ``pixel_type``, ``nan_read_as_zero`` for files, the series' info under ``dicom``).
    """
    if not path.exists():
        what = f"the {role} input" if role else "the input"
        raise UnreadableInputError(f"{path}: {what} does not exist; check the path.")
    if path.is_dir():
        from medfuse import dicom

        if role is None:
            role = "MRI" if any(series.modality == "MR" for series in dicom.list_series(path)) else "PET"
        series = dicom.read_dicom_series(path, role=role, series_uid=series_uid, suv=suv)
        return series.image, {"format": "DICOM", "dicom": dict(series.info)}
    if suv:
        raise UsageError(
            f"--suv: SUV conversion needs a DICOM PET folder with its dose and weight tags, "
            f"but {path} is a {_format_name(path)} file; drop --suv or give the DICOM folder."
        )
    if series_uid is not None:
        warn(f"{path}: the series UID {series_uid} was ignored because the input is a file, not a DICOM folder.")
    return read_image_file(path, role or "input")


def _format_name(path: Path) -> str:
    return _FORMAT_NAMES.get(full_suffix(path), full_suffix(path) or "extension-less")


def read_image_file(path: Path, role: str) -> tuple[sitk.Image, dict[str, Any]]:
    """Read a volume file after checking its header (format, memory, NIfTI sanity, geometry); not validated.

    Returns the image as stored (any dimension, pixel type, components) and what was learnt on the way
    (``format``, ``pixel_type``, ``nan_read_as_zero``). :func:`load_volume` validates on top of this;
    previews use it directly because they also show colour and 2-D images.
    """
    import SimpleITK as sitk

    suffix = full_suffix(path)
    if suffix not in READ_EXTENSIONS:
        raise UnreadableInputError(
            f"{path}: the {role} file has an unsupported format {suffix or '(no extension)'!r}; "
            f"give a {', '.join(READ_EXTENSIONS)} file or a DICOM folder."
        )
    reader = _header_reader(path, role)
    check_memory(path, tuple(reader.GetSize()), reader.GetPixelID(), reader.GetNumberOfComponents())
    non_finite = check_nifti(path, role) if suffix in (".nii", ".nii.gz") else 0
    _check_header_geometry(path, reader)
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    native: list[str] = []
    try:
        # MetaImage explains a truncated file only on stderr (its exception carries a stale errno text).
        with _native_stderr_into(native) if suffix in (".mha", ".mhd") else contextlib.nullcontext():
            image = reader.Execute()
    except RuntimeError as exc:
        reason = " ".join(native) or itk_reason(exc)
        raise UnreadableInputError(
            f"{path}: the {role} file could not be decoded as {_format_name(path)} ({reason[:160]}); "
            "the file is truncated or corrupt, so export it again."
        ) from exc
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    info = {"format": _format_name(path), "pixel_type": image.GetPixelIDTypeAsString(), "nan_read_as_zero": non_finite}
    return image, info


def _header_reader(path: Path, role: str) -> sitk.ImageFileReader:
    """An ImageFileReader with the header read (no voxels yet)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        reason = itk_reason(exc)
        if "Unable to determine ImageIO reader" in reason:
            reason = "empty, not an image, or a damaged header"
        raise UnreadableInputError(
            f"{path}: the {role} file is not a readable {_format_name(path)} image ({reason}); "
            "check that it is the right file."
        ) from exc
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    return reader


def itk_reason(exc: Exception) -> str:
    """The last informative line of an ITK exception, shortened for a one-sentence message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    reason = re.sub(r"^(sitk::ERROR:|Reason:|Description:|\[\w+\] \w+:)\s*", "", reason)
    return reason.rstrip(".")[:160]


_NATIVE_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _native_stderr_into(lines: list[str]) -> Iterator[None]:
    """Collect what C++ libraries print on file descriptor 2 into ``lines`` instead of the terminal.

    File descriptors are process-wide, so threads (batch on Dask threads) take turns here.
    """
    with _NATIVE_STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr descriptor (embedded interpreters): nothing to collect
            yield
            return
        with tempfile.TemporaryFile() as sink:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode(errors="replace")
                lines.extend(line.strip() for line in text.splitlines() if line.strip())


def _check_header_geometry(path: Path, reader: sitk.ImageFileReader) -> None:
    spacing = reader.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InvalidInputError(
            f"{path}: the voxel spacing {tuple(spacing)} has a zero, negative or undefined value; "
            "fix the header (voxel sizes must be positive)."
        )


# ---- validation ------------------------------------------------------------------------------------
def check_distinct_inputs(mri: str | Path, pet: str | Path) -> None:
    """Refuse one file given as both the MRI and the PET (one folder may hold both DICOM series)."""
    mri, pet = Path(mri), Path(pet)
    if mri.is_file() and pet.is_file() and os.path.samefile(mri, pet):
        raise UsageError(f"{pet}: the PET is the same file as the MRI {mri}; give the PET image as the second input.")


def validate_image(
    image: sitk.Image,
    *,
    role: Role = "MRI",
    source: str | None = None,
    frame: str | int | None = None,
) -> sitk.Image:
    """Return ``image`` as a checked 3-D scalar float32 image with finite values.

    A 4-D image needs ``frame`` (an index or ``"sum"``); NaN/Inf voxels become 0 with a warning;
    2-D, vector/RGB, complex, too thin, badly oriented, empty or constant images are refused.
    """
    import SimpleITK as sitk

    source = source or f"the {role} image"
    pixel_name = image.GetPixelIDTypeAsString()
    if image.GetNumberOfComponentsPerPixel() > 1 or "complex" in pixel_name:
        raise InvalidInputError(
            f"{source}: the {role} has {pixel_name} voxels; medfuse needs a scalar (grey-level) volume, "
            "so convert it to a single channel first."
        )
    dimension = image.GetDimension()
    if dimension == 4:
        image = _pick_frame(image, role, source, frame)
    elif frame is not None:
        warn(f"{source}: --frame {frame} was ignored because the {role} is not 4-D.")
    if dimension == 2:
        raise InvalidInputError(
            f"{source}: the {role} is a 2-D image ({_shape(image)}); fuse 3-D volumes with 3-D volumes "
            "(or 2-D images with 2-D images)."
        )
    if image.GetDimension() != 3:
        raise InvalidInputError(f"{source}: the {role} has {dimension} dimensions; give a 3-D volume.")
    size = image.GetSize()
    if min(size) == 1:
        raise InvalidInputError(
            f"{source}: the {role} is a single slice ({_shape(image)}), i.e. a 2-D image; "
            "give a 3-D volume (or fuse 2-D images with 2-D images)."
        )
    if min(size) < MIN_VOXELS_PER_AXIS:
        raise InvalidInputError(
            f"{source}: the {role} is too thin to be a volume ({_shape(image)}); "
            f"at least {MIN_VOXELS_PER_AXIS} voxels are needed along each axis."
        )
    _check_geometry(image, role, source)
    image = sitk.Cast(image, sitk.sitkFloat32) if image.GetPixelID() != sitk.sitkFloat32 else image
    array = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        cleaned = np.where(finite, array, np.float32(0.0))
        fixed = sitk.GetImageFromArray(cleaned)
        fixed.CopyInformation(image)
        image = fixed
        warn(f"{source}: {bad:,} NaN or infinite voxels in the {role} were set to 0.")
        array = cleaned
    low, high = float(array.min()), float(array.max())
    if low == high:
        raise InvalidInputError(
            f"{source}: every voxel of the {role} equals {low:g} (an empty or constant image); "
            "check that the right file was given."
        )
    return image


def _shape(image: sitk.Image) -> str:
    return "×".join(str(n) for n in image.GetSize()) + " voxels"


def _check_geometry(image: sitk.Image, role: str, source: str) -> None:
    spacing = np.array(image.GetSpacing())
    origin = np.array(image.GetOrigin())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        raise InvalidInputError(
            f"{source}: the {role}'s voxel spacing {tuple(spacing.tolist())} has a zero, negative or undefined "
            "value; fix the header (voxel sizes must be positive)."
        )
    if not np.all(np.isfinite(origin)):
        raise InvalidInputError(f"{source}: the {role}'s origin {tuple(origin.tolist())} is undefined; fix the header.")
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-3:
        raise InvalidInputError(
            f"{source}: the {role}'s direction cosines are degenerate (the axes are not independent); "
            "fix the orientation in the header."
        )
    if np.abs(direction.T @ direction - np.eye(3)).max() > ORTHONORMAL_TOLERANCE:
        raise InvalidInputError(
            f"{source}: the {role}'s axes are not perpendicular unit vectors (a sheared or scaled grid, which "
            "NIfTI outputs cannot keep); resample it onto an orthogonal grid first."
        )


def _pick_frame(image: sitk.Image, role: str, source: str, frame: str | int | None) -> sitk.Image:
    """One frame (or the sum of all frames) of a 4-D image, as a 3-D image with the 3-D geometry."""
    import SimpleITK as sitk

    frames = image.GetSize()[3]
    size3 = [*image.GetSize()[:3], 0]
    if frames == 1:
        return sitk.Extract(image, size3, [0, 0, 0, 0])
    if frame is None:
        if role == "PET":
            raise InvalidInputError(
                f"{source}: the PET has {frames} frames (a 4-D dynamic image); choose one with --frame N "
                f"(0–{frames - 1}) or add them up with --frame sum."
            )
        raise InvalidInputError(
            f"{source}: the {role} is 4-D ({frames} volumes); medfuse needs a 3-D {role}, so extract one volume first."
        )
    if str(frame).strip().lower() == "sum":
        first = sitk.Extract(image, size3, [0, 0, 0, 0])
        total = np.zeros(sitk.GetArrayViewFromImage(first).shape, dtype=np.float64)
        for index in range(frames):
            total += sitk.GetArrayFromImage(sitk.Extract(image, size3, [0, 0, 0, index]))
        summed = sitk.GetImageFromArray(total.astype(np.float32))
        summed.CopyInformation(first)
        return summed
    try:
        index = int(str(frame).strip())
    except ValueError:
        raise UsageError(f"--frame {frame}: expected a frame number (0–{frames - 1}) or 'sum'.") from None
    if not 0 <= index < frames:
        raise UsageError(f"--frame {frame}: {source} has frames 0–{frames - 1}; choose one of them or 'sum'.")
    return sitk.Extract(image, size3, [0, 0, 0, index])


# ---- writing ---------------------------------------------------------------------------------------
#: gzip level of written ``.nii.gz`` files: the fastest. On fused volumes (float32 with full-precision
#: mantissas, which no level squeezes much) level 1 is within 2 % of level 6's size, and ISA-L's level 1
#: is about 8x faster than zlib's (0.5 s instead of 4 s for a 150 MB volume; benchmarks/bench_case.py).
NIFTI_GZIP_LEVEL = 1
_COPY_CHUNK = 4 << 20


def write_volume(image: sitk.Image, path: str | Path) -> None:
    """Write ``image`` in the format of ``path``'s extension (.nii, .nii.gz, .nrrd, .mha), compressed.

    ``.nii.gz`` is written by SimpleITK as plain NIfTI beside ``path`` and gzip-compressed from there
    by :func:`gzip_file` (ISA-L, level :data:`NIFTI_GZIP_LEVEL`); any gzip reader reads it. Both steps
    release the GIL, so outputs can be written in parallel threads.
    """
    import SimpleITK as sitk

    path = Path(path)
    suffix = full_suffix(path)
    if suffix not in VOLUME_EXTENSIONS:
        raise OutputError(
            f"{path}: cannot write volumes as {suffix or '(none)'!r}; use {', '.join(VOLUME_EXTENSIONS)}."
        )
    if suffix != ".nii.gz":
        sitk.WriteImage(image, str(path), useCompression=suffix in (".nrrd", ".mha"))
        return
    plain = path.with_name(f"{path.name[: -len(suffix)]}.uncompressed.nii")
    try:
        sitk.WriteImage(image, str(plain), useCompression=False)
        gzip_file(plain, path)
    finally:
        plain.unlink(missing_ok=True)


def gzip_file(source: Path, target: Path, level: int = NIFTI_GZIP_LEVEL) -> None:
    """Compress ``source`` into the gzip file ``target`` (ISA-L when installed, else zlib; no name, mtime 0).

    Without a file name and time in the header, the same volume always gives the same bytes.
    """
    try:
        from isal.igzip import IGzipFile as Compressor
    except ImportError:  # a platform without ISA-L wheels: zlib, slower
        from gzip import GzipFile as Compressor  # type: ignore[assignment]
    with (
        source.open("rb") as plain,
        target.open("wb") as raw,
        Compressor(filename="", mode="wb", compresslevel=level, fileobj=raw, mtime=0) as packed,
    ):
        while chunk := plain.read(_COPY_CHUNK):
            packed.write(chunk)


# ---- description -----------------------------------------------------------------------------------
def orientation_code(direction: tuple[float, ...] | np.ndarray) -> str:
    """Three letters naming where each axis points (LPS = identity direction; RAS = NIfTI's usual)."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    letters = (("R", "L"), ("A", "P"), ("I", "S"))
    code = ""
    for axis in range(3):
        column = matrix[:, axis]
        dominant = int(np.argmax(np.abs(column)))
        code += letters[dominant][int(column[dominant] > 0)]
    return code


def is_oblique(direction: tuple[float, ...] | np.ndarray, tolerance: float = 1e-4) -> bool:
    """Whether some axis is tilted away from the patient axes."""
    matrix = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))
    return bool(np.any((matrix > tolerance) & (matrix < 1.0 - tolerance)))


def geometry(image: sitk.Image) -> dict[str, Any]:
    """Size, spacing, origin, direction and orientation of an image, JSON-ready."""
    dimension = image.GetDimension()
    direction = image.GetDirection()
    info: dict[str, Any] = {
        "size": list(image.GetSize()),
        "spacing_mm": [float(s) for s in image.GetSpacing()],
        "origin_mm": [float(o) for o in image.GetOrigin()],
        "direction": [float(d) for d in direction],
    }
    if dimension >= 3:
        direction3 = np.asarray(direction, dtype=float).reshape(dimension, dimension)[:3, :3]
        info["orientation"] = orientation_code(direction3)
        info["oblique"] = is_oblique(direction3)
        info["extent_mm"] = [float(n * s) for n, s in zip(image.GetSize()[:3], image.GetSpacing()[:3], strict=True)]
    return info


def describe(path: str | Path, *, series_uid: str | None = None) -> dict[str, Any]:
    """What ``medfuse info`` shows: format, size, spacing, origin, orientation, pixel type, value range.

    Unlike :func:`load_volume` nothing is refused for being 4-D, colour or constant: the point is to
    see what a file holds. A DICOM folder lists its series and describes the one named by
    ``series_uid`` (or its only series), with modality, description and units.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableInputError(f"{path}: the input does not exist; check the path.")
    if path.is_dir():
        return _describe_dicom(path, series_uid)
    image, info = read_image_file(path, "input")
    described: dict[str, Any] = {"path": str(path), "format": info["format"]}
    described["file_size"] = format_bytes(path.stat().st_size)
    described.update(_image_summary(image))
    described["non_finite_voxels"] += info["nan_read_as_zero"]
    if image.GetDimension() == 4:
        described["frames"] = image.GetSize()[3]
    return described


def _describe_dicom(folder: Path, series_uid: str | None) -> dict[str, Any]:
    from medfuse import dicom

    series = dicom.list_series(folder)
    if not series:
        raise UnreadableInputError(
            f"{folder}: holds no DICOM images; point to the folder of the exported series (or to a volume file)."
        )
    described: dict[str, Any] = {"path": str(folder), "format": "DICOM", "series": [s.label() for s in series]}
    why = "the series given by --series"
    if series_uid is None and len(series) == 1:
        series_uid, why = series[0].uid, "the only series in the folder"
    chosen = next((s for s in series if s.uid == series_uid), None)
    if chosen is None:
        if series_uid is not None:
            raise UsageError(f"--series {series_uid}: {folder} holds no such series; pick one of those listed.")
        described["described"] = f"none of the {len(series)} series; pass --series UID to describe one"
        return described
    described["described"] = f"{chosen.uid}: {why}"
    role: Role = "PET" if chosen.modality in ("PT", "NM") else "MRI"
    volume = dicom.read_dicom_series(folder, role=role, series_uid=chosen.uid, why=why)
    keys = ("series_uid", "modality", "description", "patient_id", "units")
    described["dicom"] = {key: volume.info.get(key) for key in keys if volume.info.get(key) not in (None, "")}
    if role == "PET":  # what SUV needs, and whether --suv will work, before anything is fused
        described["suv"] = dicom.suv_readiness(chosen)
    described.update(_image_summary(volume.image))
    return described


def _image_summary(image: sitk.Image) -> dict[str, Any]:
    import SimpleITK as sitk

    info: dict[str, Any] = {"dimension": image.GetDimension()}
    info.update(geometry(image))
    info["pixel_type"] = image.GetPixelIDTypeAsString()
    info["components"] = image.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayViewFromImage(image)
    if np.iscomplexobj(array):
        array = np.abs(array)
    finite = np.isfinite(array)
    values = array[finite] if not finite.all() else array
    info["value_range"] = [float(values.min()), float(values.max())] if values.size else None
    info["non_finite_voxels"] = int(array.size - np.count_nonzero(finite))
    return info


def format_description(info: dict[str, Any]) -> str:
    """The ``medfuse info`` text: one aligned ``name  value`` line per property."""

    def show(values: list[float], digits: int, separator: str = " × ") -> str:
        return separator.join(f"{round(v, digits):g}" if isinstance(v, float) else str(v) for v in values)

    rows: list[tuple[str, Any]] = [("path", info["path"]), ("format", info["format"])]
    rows += [("file size", info["file_size"])] if "file_size" in info else []
    rows += [("series", label) for label in info.get("series", [])]
    rows += [("described", info["described"])] if "described" in info else []
    if "size" in info:
        orientation = info.get("orientation", "")
        rows += [
            ("size", show(info["size"], 0)),
            ("spacing (mm)", show(info["spacing_mm"], 6)),
            ("origin (mm)", show(info["origin_mm"], 4, ", ")),
            ("orientation", orientation + (" (oblique)" if info.get("oblique") else "")),
        ]
        rows += [("frames", info["frames"])] if "frames" in info else []
        rows += [("pixel type", info["pixel_type"]), ("components", info["components"])]
        if info.get("value_range") is not None:
            rows.append(("value range", f"{info['value_range'][0]:g} to {info['value_range'][1]:g}"))
        if info.get("non_finite_voxels"):
            rows.append(("NaN/Inf voxels", f"{info['non_finite_voxels']:,}"))
    rows += [(key.replace("_", " "), value) for key, value in info.get("dicom", {}).items()]
    if "suv" in info:
        suv = info["suv"]
        rows += [
            ("SUV tag", f"{tag} = {value if value is not None else '(missing)'}") for tag, value in suv["tags"].items()
        ]
        rows.append(("--suv", f"will work: {suv['how']}" if suv["suv_works"] else f"will not work: {suv['problem']}"))
    return "\n".join(f"{name:<14} {value}" for name, value in rows)
