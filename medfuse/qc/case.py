"""One case's QC page: its pictures and viewer volumes, from what the case has (anything may be missing).

:func:`prepare_case_page` does the work (resampling, rendering, encoding) once the fusion is done;
:meth:`CasePage.html` then fills in the report's figures, so a pipeline can build the page before
its last timings are known. :func:`rebuild_case_page` does both from a finished case's files
(``medfuse report CASE_DIR``).

Cost: every picture but the fused ones, and the viewer's volumes, are drawn from the QC grid (at most
160³ voxels, :mod:`medfuse.qc.volumes`), so a case's QC takes about the same time whatever the MRI's
size; nothing is registered again (the header pose is one resample of the native PET).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfuse.atomic import check_output_path, output_transaction, strip_suffix
from medfuse.console import warn
from medfuse.errors import InvalidInputError, MedfuseError, UnreadableInputError
from medfuse.qc.page import CasePage, as_dict, pet_units, report_window

if TYPE_CHECKING:
    import SimpleITK as sitk

    from medfuse.qc.volumes import QcGrid

__all__ = ["CaseVolumes", "case_title", "load_case_volumes", "prepare_case_page", "rebuild_case_page"]

REPORT_NAME = "report.json"
QC_NAME = "qc.html"
#: Files of a batch case folder, by output kind (the names ``medfuse batch`` writes).
CASE_FILES = {
    "fused": "fused.nii.gz",
    "overlay": "fused_overlay.nii.gz",
    "pet": "pet_on_mri.nii.gz",
    "transform": "pet_to_mri.tfm",
    "preview": "preview.png",
}


@dataclass
class CaseVolumes:
    """What a case page is drawn from; any of it may be missing, and the page then says so."""

    mri: sitk.Image | None = None
    pet: sitk.Image | None = None  # the PET as read (its own grid)
    pet_on_mri: sitk.Image | None = None  # the registered PET on the MRI grid
    fused: sitk.Image | None = None
    overlay: sitk.Image | None = None
    transform: sitk.Transform | None = None  # MRI -> PET points; places the PET when pet_on_mri is missing
    mosaic: np.ndarray | None = None  # the overlay mosaic, when the pipeline has already drawn it
    notes: list[str] = field(default_factory=list)  # what is missing and why


def case_title(fused_output: str | Path) -> str:
    """A case's name: the fused output's name without extension, or its folder's for a plain ``fused.*``."""
    path = Path(fused_output)
    stem = strip_suffix(path).name
    return path.absolute().parent.name if stem == "fused" and path.absolute().parent.name else stem


def _start_point(
    report: dict[str, Any], grid: QcGrid, anatomy: sitk.Image, pet: np.ndarray | None, fallback: tuple[int, int, int]
) -> tuple[int, int, int]:
    """The viewer's first crosshair (x, y, z): the report's PET maximum, else the QC grid's smoothed PET maximum.

    The report gives the maximum's MRI voxel (its position is in the PET's own coordinates, which
    registration may have moved away from the MRI's).
    """
    try:
        voxel = [int(v) for v in as_dict(as_dict(report.get("hotspots")).get("max"))["mri_voxel"]]
        point = anatomy.TransformIndexToPhysicalPoint(voxel)
        x, y, z = (round(float(v)) for v in np.linalg.solve(grid.index_to_lps(), np.array([*point, 1.0]))[:3])
        if all(0 <= p < n for p, n in zip((x, y, z), grid.reference.GetSize(), strict=True)):
            return x, y, z
    except (TypeError, KeyError, ValueError, np.linalg.LinAlgError):
        pass
    if pet is not None and float(pet.max()) > float(pet.min()):
        from scipy import ndimage

        smoothed = ndimage.uniform_filter(pet, size=3, mode="constant")
        k, j, i = (int(v) for v in np.unravel_index(int(smoothed.argmax()), smoothed.shape))
        return i, j, k
    return fallback[2], fallback[1], fallback[0]


def prepare_case_page(
    volumes: CaseVolumes, report: dict[str, Any], title: str, max_voxels: int | None = None
) -> CasePage:
    """Draw a case's pictures and encode its viewer volumes (the slow part of a page).

    ``max_voxels`` caps the QC grid (default :data:`medfuse.qc.volumes.MAX_VOXELS`).
    """
    from medfuse.colour import colormap_lut
    from medfuse.preview import robust_window
    from medfuse.qc import images
    from medfuse.qc.volumes import MAX_VOXELS, qc_grid, viewer_payload

    notes = list(volumes.notes)
    pictures: dict[str, str] = {}
    captions: dict[str, str] = {}
    units = pet_units(report)
    colormap = str(as_dict(report.get("fusion")).get("overlay_colormap") or "aanlib")
    try:
        lut = colormap_lut(colormap)
    except MedfuseError:
        colormap, lut = "aanlib", colormap_lut("aanlib")

    if volumes.mri is not None:
        pictures["inputs_mri"] = images.data_uri(images.input_picture(volumes.mri))
    if volumes.pet is not None:
        pictures["inputs_pet"] = images.data_uri(images.input_picture(volumes.pet, units=units))

    anatomy, anatomy_name = (volumes.mri, "MRI") if volumes.mri is not None else (volumes.fused, "fused luminance")
    if anatomy is None:
        notes.append("Neither the MRI nor the fused volume is available: no registration check and no viewer.")
        grid = None
    else:
        grid = qc_grid(anatomy, max_voxels or MAX_VOXELS)
        if anatomy_name != "MRI":
            notes.append("The MRI is not available: the registration check and the viewer use the fused luminance.")
    pet_grid: np.ndarray | None = None
    viewer = None
    if grid is not None and anatomy is not None:
        base = grid.resample(anatomy)
        base_window = robust_window(base)
        pet_window = report_window(report)
        if volumes.pet_on_mri is not None:
            pet_grid = grid.resample(volumes.pet_on_mri)
        elif volumes.pet is not None and volumes.transform is not None:
            pet_grid = grid.resample(volumes.pet, volumes.transform)
            notes.append("The registered PET was placed on the MRI from the native PET and the saved transform.")
        header = grid.resample(volumes.pet) if volumes.pet is not None else None
        if pet_window is None:
            source = pet_grid if pet_grid is not None else header
            pet_window = robust_window(source, (0.5, 99.5)) if source is not None else None
        point = images.head_centre(base, base_window)
        edges = images.edge_planes(base, base_window, point, grid.spacing_mm)
        for name, pet in (("registration_header", header), ("registration_result", pet_grid)):
            if pet is not None and pet_window is not None:
                pictures[name] = images.data_uri(images.registration_picture(grid, pet, pet_window, edges, point))
        captions["registration"] = (
            f"PET (hot map, {pet_window[0]:.4g} to {pet_window[1]:.4g} {units}) with the {anatomy_name}'s edges "
            f"in cyan, on the QC grid of {grid.spacing_mm:.2f} mm voxels."
            if pet_window is not None
            else ""
        )
        start = _start_point(report, grid, anatomy, pet_grid, point)
        viewer = viewer_payload(grid, base, base_window, pet_grid, pet_window, lut, units, start, anatomy_name)
        viewer["mri_index_to_lps"] = _index_to_lps(anatomy).round(9).tolist()
        viewer["mri_lps_to_index"] = np.linalg.inv(_index_to_lps(anatomy)).round(9).tolist()
        if grid.downsampled:
            size = "×".join(str(n) for n in anatomy.GetSize())
            viewer["note"] = (
                f"The viewer shows the volumes resampled from the {anatomy_name}'s {size} voxels to "
                f"{'×'.join(str(n) for n in grid.reference.GetSize())} voxels of {grid.spacing_mm:.2f} mm "
                "(linear interpolation) to keep this page small; positions are exact, values are those "
                "of the resampled grid."
            )

    shown = volumes.overlay if volumes.overlay is not None else volumes.fused
    if shown is not None:
        focus = volumes.pet_on_mri
        mosaic = volumes.mosaic if volumes.mosaic is not None else images.fused_mosaic(shown, focus)
        planes = images.fused_planes(shown, focus)
        pictures["fused_mosaic"] = images.data_uri(mosaic, "jpeg")
        pictures["fused_planes"] = images.data_uri(planes)
        window = report_window(report)
        if volumes.overlay is not None and window is not None:
            bar = images.overlay_colour_bar(planes.shape[0], window, colormap, units)
            pictures["colour_bar"] = images.data_uri(bar)
            captions["colour_bar"] = f"Colour bar of the overlay: PET window in {units}, {colormap} map."
    return CasePage(title, pictures, captions, viewer, notes)


def _index_to_lps(image: sitk.Image) -> np.ndarray:
    """4×4 matrix taking an image's voxel index (i, j, k, 1) to its LPS point in mm."""
    matrix = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    matrix[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    matrix[:3, 3] = image.GetOrigin()
    return matrix


# ---- rebuilding a page from a finished case -------------------------------------------------------
def _read_report(case_dir: Path) -> dict[str, Any]:
    path = case_dir / REPORT_NAME
    if not case_dir.is_dir():
        raise UnreadableInputError(f"{case_dir}: is not a folder; give the folder of a finished case.")
    if not path.is_file():
        raise UnreadableInputError(
            f"{case_dir}: has no {REPORT_NAME}; give the folder of a finished case (medfuse batch writes one "
            "per case, medfuse fuse with --report)."
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: is not a readable JSON run report ({exc}).") from exc
    if not isinstance(report, dict):
        raise InvalidInputError(f"{path}: is not a medfuse run report (a JSON object is expected).")
    return report


def _find_output(case_dir: Path, report: dict[str, Any], kind: str) -> Path | None:
    """A case's output of ``kind``: the standard name in the folder, else the path the report gives."""
    standard = case_dir / CASE_FILES[kind]
    if standard.is_file():
        return standard
    recorded = as_dict(report.get("outputs")).get(kind)
    if isinstance(recorded, str):
        for candidate in (Path(recorded), case_dir / Path(recorded).name):
            if candidate.is_file():
                return candidate
    return None


def _read_image(path: Path, what: str, notes: list[str], colour: bool = False) -> sitk.Image | None:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        notes.append(f"The {what} ({path}) could not be read; it is left out.")
        return None
    if colour:
        return image if image.GetNumberOfComponentsPerPixel() == 3 else None
    return sitk.Cast(image, sitk.sitkFloat32) if image.GetNumberOfComponentsPerPixel() == 1 else None


def _read_input(report: dict[str, Any], role: str, notes: list[str]) -> sitk.Image | None:
    """An input named in the report, read as ``fuse`` read it; None (with a note) when it is gone."""
    from medfuse import io

    record = as_dict(as_dict(report.get("inputs")).get(role.lower()))
    path = record.get("path")
    if not path:
        notes.append(f"The report names no {role} input file: its pictures are left out.")
        return None
    if not Path(path).exists():
        notes.append(
            f"The {role} input {path} no longer exists (or is relative to another folder): its pictures are left out."
        )
        return None
    dicom = as_dict(record.get("dicom"))
    try:
        volume = io.load_volume(
            path,
            role="PET" if role == "PET" else "MRI",
            frame=record.get("frame"),
            series_uid=dicom.get("series_uid"),
            suv=bool(dicom.get("suv")) if role == "PET" else False,
        )
    except MedfuseError as exc:
        notes.append(f"The {role} input could not be read again ({exc.message}); its pictures are left out.")
        return None
    return volume.image


def load_case_volumes(case_dir: Path, report: dict[str, Any]) -> CaseVolumes:
    """Everything a finished case folder still has, with a note for each thing that is gone."""
    import SimpleITK as sitk

    notes: list[str] = []
    found = {kind: _find_output(case_dir, report, kind) for kind in CASE_FILES}
    fused = _read_image(found["fused"], "fused volume", notes) if found["fused"] else None
    overlay = _read_image(found["overlay"], "overlay", notes, colour=True) if found["overlay"] else None
    pet_on_mri = _read_image(found["pet"], "registered PET", notes) if found["pet"] else None
    transform = None
    if found["transform"] is not None:
        try:
            transform = sitk.ReadTransform(str(found["transform"]))
        except RuntimeError:
            notes.append(f"The transform {found['transform']} could not be read; it is left out.")
    for kind, what in (("fused", "fused volume"), ("overlay", "colour overlay")):
        if found[kind] is None:
            notes.append(f"The {what} is not in {case_dir}: its pictures are left out.")
    mri = _read_input(report, "MRI", notes)
    pet = _read_input(report, "PET", notes)
    if pet_on_mri is None and (pet is None or transform is None):
        notes.append("The registered PET (pet_on_mri.nii.gz) is not in the case folder: the viewer shows no PET.")
    return CaseVolumes(mri, pet, pet_on_mri, fused, overlay, transform, notes=notes)


def rebuild_case_page(case_dir: str | Path, output: str | Path | None = None, overwrite: bool = False) -> Path:
    """Rebuild a case's QC page from its folder (report.json, outputs, inputs when they still exist)."""
    case_dir = Path(case_dir)
    report = _read_report(case_dir)
    target = check_output_path(
        Path(output) if output is not None else case_dir / QC_NAME, allowed=(".html",), overwrite=overwrite
    )
    volumes = load_case_volumes(case_dir, report)
    for note in volumes.notes:
        warn(f"{case_dir}: {note}")
    page = prepare_case_page(volumes, report, case_dir.absolute().name)
    text = page.html(report)
    with output_transaction(overwrite=overwrite) as transaction:
        transaction.write(target, lambda path: path.write_text(text, encoding="utf-8"))
    return target
