"""One case's QC page: its pictures and viewer volumes, from what the case has (anything may be missing).

:func:`prepare_case_page` does the work (resampling, rendering, encoding) once the fusion is done;
:meth:`CasePage.html` then fills in the report's figures, so a pipeline can build the page before
its last timings are known. :func:`rebuild_case_page` does both from a finished case's files
(``medfuse report CASE_DIR``).

Cost: every picture but the fused ones, and the viewer's volumes, are drawn from the QC grid (at most
144³ voxels, :mod:`medfuse.qc.volumes`), so a case's QC takes about the same time whatever the MRI's
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
from medfuse.qc import images
from medfuse.qc.page import CasePage, as_dict, pet_units, report_window

if TYPE_CHECKING:
    import SimpleITK as sitk

    from medfuse.qc.volumes import QcGrid

__all__ = ["CaseVolumes", "case_title", "load_case_volumes", "prepare_case_page", "rebuild_case_page"]

REPORT_NAME = "report.json"
QC_NAME = "qc.html"
#: The outputs a case page is rebuilt from, by their kind in the report's ``outputs``.
_REBUILT_FROM = ("fused", "overlay", "pet", "transform")


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
        # the hottest 2×2×2 block (a mean, so that one noisy voxel is no hot spot), cheaper than a filter
        halves = [n // 2 for n in pet.shape]
        if all(halves):
            blocks = np.zeros(halves, dtype=np.float32)
            for a, b, c in np.ndindex(2, 2, 2):  # block sums from eight strided views: no copy of the volume
                blocks += pet[a : 2 * halves[0] : 2, b : 2 * halves[1] : 2, c : 2 * halves[2] : 2]
            k, j, i = (2 * int(v) + 1 for v in np.unravel_index(int(np.argmax(blocks)), blocks.shape))
            return i, j, k
    return fallback[2], fallback[1], fallback[0]


def prepare_case_page(
    volumes: CaseVolumes, report: dict[str, Any], title: str, max_voxels: int | None = None
) -> CasePage:
    """Draw a case's pictures and encode its viewer volumes (the slow part of a page).

    ``max_voxels`` caps the QC grid (default :data:`medfuse.qc.volumes.MAX_VOXELS`).
    """
    from medfuse.qc.volumes import MAX_VOXELS, qc_grid

    page = CasePage(title, {}, {}, None, list(volumes.notes))
    units = pet_units(report)
    if volumes.pet is not None:
        page.pictures["inputs_pet"] = _pet_input_picture(volumes.pet, units)
    anatomy, anatomy_name = (volumes.mri, "MRI") if volumes.mri is not None else (volumes.fused, "fused luminance")
    if anatomy is None:
        page.notes.append("Neither the MRI nor the fused volume is available: no registration check and no viewer.")
        return page
    if anatomy_name != "MRI":
        page.notes.append("The MRI is not available: the registration check and the viewer use the fused luminance.")
    coarse = _coarse_case(volumes, anatomy, report, qc_grid(anatomy, max_voxels or MAX_VOXELS), page.notes)
    if volumes.mri is not None:
        page.pictures["inputs_mri"] = images.data_uri(images.input_picture(coarse.grid.image(coarse.base)))
    _draw_registration(page, coarse, anatomy_name, units)
    start = _start_point(report, coarse.grid, anatomy, coarse.pet, coarse.centre)
    _draw_fused(page, volumes, coarse, start, report, units)
    page.viewer = _viewer(coarse, anatomy, anatomy_name, start, report, units)
    return page


@dataclass
class _Coarse:
    """A case's volumes on the QC grid ((z, y, x) float32 arrays)."""

    grid: QcGrid
    base: np.ndarray  # the MRI (or the fused luminance when the MRI is gone)
    base_window: tuple[float, float]
    pet: np.ndarray | None  # the registered PET
    header: np.ndarray | None  # the native PET where the headers place it (no registration), centre planes only
    pet_window: tuple[float, float] | None
    centre: tuple[int, int, int]  # (z, y, x) centre of the head

    def point_mm(self, voxel: tuple[int, int, int]) -> tuple[float, float, float]:
        """The LPS point of a grid voxel (x, y, z)."""
        x, y, z = self.grid.reference.TransformIndexToPhysicalPoint(voxel)
        return float(x), float(y), float(z)


def _coarse_case(
    volumes: CaseVolumes, anatomy: sitk.Image, report: dict[str, Any], grid: QcGrid, notes: list[str]
) -> _Coarse:
    """Resample what the case has onto the QC grid: one resample per volume, nothing registered again."""
    from medfuse.intensity import robust_window

    base = grid.resample(anatomy)
    base_window = robust_window(base[::2, ::2, ::2])  # every 8th voxel is plenty for a display window
    # The registered PET: the native PET through the transform (one resample of the smaller image, and
    # no second interpolation), else the PET already on the MRI grid.
    pet = None
    if volumes.pet is not None and volumes.transform is not None:
        pet = grid.resample(volumes.pet, volumes.transform)
    elif volumes.pet_on_mri is not None:
        pet = grid.resample(volumes.pet_on_mri)
    centre = images.head_centre(base, base_window)
    # where the headers place the PET: shown on three planes only, so only those are resampled
    header = grid.resample_planes(volumes.pet, centre) if volumes.pet is not None else None
    pet_window = report_window(report)
    source = pet if pet is not None else header
    if pet_window is None and source is not None:
        pet_window = robust_window(source, (0.5, 99.5))
    return _Coarse(grid, base, base_window, pet, header, pet_window, centre)


def _pet_input_picture(pet: sitk.Image, units: str) -> str:
    """The native PET's three planes, on its own (coarse) grid: its own field of view and voxels."""
    from medfuse.qc.volumes import PET_INPUT_VOXELS, qc_grid

    grid = qc_grid(pet, PET_INPUT_VOXELS)
    return images.data_uri(images.input_picture(grid.image(grid.resample(pet)), units))


def _draw_registration(page: CasePage, coarse: _Coarse, anatomy_name: str, units: str) -> None:
    """The MRI's edges over the PET at the header pose and after registration."""
    if coarse.pet_window is None:
        return
    edges = images.edge_planes(coarse.base, coarse.base_window, coarse.centre, coarse.grid.spacing_mm)
    for name, pet in (("registration_header", coarse.header), ("registration_result", coarse.pet)):
        if pet is not None:
            picture = images.registration_picture(coarse.grid, pet, coarse.pet_window, edges, coarse.centre)
            page.pictures[name] = images.data_uri(picture)
    low, high = coarse.pet_window
    page.captions["registration"] = (
        f"PET (hot map, {low:.4g} to {high:.4g} {units}) with the {anatomy_name}'s edges in cyan, "
        f"on the QC grid of {coarse.grid.spacing_mm:.2f} mm voxels."
    )


def _draw_fused(
    page: CasePage,
    volumes: CaseVolumes,
    coarse: _Coarse,
    start: tuple[int, int, int],
    report: dict[str, Any],
    units: str,
) -> None:
    """The fused overlay (or luminance) on the QC grid: three planes through the hot spot, the mosaic, the bar."""
    grid = coarse.grid
    if volumes.overlay is not None:
        shown = grid.image(grid.resample_colour(volumes.overlay))
    elif volumes.fused is not None:
        shown = grid.image(grid.resample(volumes.fused))
    else:
        return
    planes = images.fused_planes(shown, coarse.point_mm(start))
    if volumes.mosaic is not None:
        mosaic = volumes.mosaic
    else:
        mosaic = images.fused_mosaic(shown, grid.image(coarse.pet) if coarse.pet is not None else None)
    page.pictures["fused_planes"] = images.data_uri(planes)
    page.pictures["fused_mosaic"] = images.data_uri(mosaic, "jpeg")
    window = report_window(report)
    if volumes.overlay is not None and window is not None:
        colormap = _overlay_colormap(report)
        bar = images.overlay_colour_bar(planes.shape[0], window, colormap, units)
        page.pictures["colour_bar"] = images.data_uri(bar)
        page.captions["colour_bar"] = f"Colour bar of the overlay: PET window in {units}, {colormap} map."


def _overlay_colormap(report: dict[str, Any]) -> str:
    """The overlay's colour map as the report names it (aanlib if it names none medfuse knows)."""
    from medfuse.colour import COLORMAPS

    name = str(as_dict(report.get("fusion")).get("overlay_colormap") or "aanlib")
    return name if name in COLORMAPS else "aanlib"


def _viewer(
    coarse: _Coarse,
    anatomy: sitk.Image,
    anatomy_name: str,
    start: tuple[int, int, int],
    report: dict[str, Any],
    units: str,
) -> dict[str, Any]:
    """The viewer's payload (:func:`medfuse.qc.volumes.viewer_payload`) with the MRI's voxel matrices."""
    from medfuse.colour import COLORMAPS
    from medfuse.qc.volumes import index_to_lps, viewer_payload

    grid = coarse.grid
    lut = COLORMAPS[_overlay_colormap(report)]
    viewer = viewer_payload(
        grid, coarse.base, coarse.base_window, coarse.pet, coarse.pet_window, lut, units, start, anatomy_name
    )
    viewer["mri_index_to_lps"] = index_to_lps(anatomy).round(9).tolist()
    viewer["mri_lps_to_index"] = np.linalg.inv(index_to_lps(anatomy)).round(9).tolist()
    if grid.downsampled:
        size = "×".join(str(n) for n in anatomy.GetSize())
        viewer["note"] = (
            f"The viewer shows the volumes resampled from the {anatomy_name}'s {size} voxels to "
            f"{'×'.join(str(n) for n in grid.reference.GetSize())} voxels of {grid.spacing_mm:.2f} mm "
            "(linear interpolation) to keep this page small; positions are exact, values are those "
            "of the resampled grid."
        )
    return viewer


# ---- rebuilding a page from a finished case -------------------------------------------------------
def _read_report(case: Path) -> tuple[Path, dict[str, Any]]:
    """The case folder and its run report, from the folder or the report file itself."""
    path = case if case.is_file() else case / REPORT_NAME
    if not case.exists():
        raise UnreadableInputError(f"{case}: does not exist; give the folder of a finished case or its report.json.")
    if not path.is_file():
        raise UnreadableInputError(
            f"{case}: has no {REPORT_NAME}; give the folder of a finished case (medfuse batch writes one "
            "per case, medfuse fuse with --report) or the report file."
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: is not a readable JSON run report ({exc}).") from exc
    if not isinstance(report, dict):
        raise InvalidInputError(f"{path}: is not a medfuse run report (a JSON object is expected).")
    return path.parent, report


def recorded_places(recorded: str, report: dict[str, Any], case_dir: Path) -> list[Path]:
    """Where a path the report recorded may be now: itself when absolute; a relative one (as typed on the
    command line) against the run's ``working_directory``, then the case folder, then the current folder."""
    path = Path(recorded)
    if path.is_absolute():
        return [path]
    run_dir = report.get("working_directory")
    places = [Path(run_dir) / path] if isinstance(run_dir, str) and Path(run_dir).is_absolute() else []
    return [*places, case_dir / path, path]


def find_output(case_dir: Path, report: dict[str, Any], kind: str) -> Path | None:
    """A case's output of ``kind`` where the report's ``outputs`` says (:func:`recorded_places`), else
    under that name in ``case_dir``.

    The last place finds the outputs of a case folder that was moved or copied since the run.
    """
    recorded = as_dict(report.get("outputs")).get(kind)
    if not isinstance(recorded, str):
        return None
    for candidate in (*recorded_places(recorded, report, case_dir), case_dir / Path(recorded).name):
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


def _read_input(report: dict[str, Any], role: str, case_dir: Path, notes: list[str]) -> sitk.Image | None:
    """An input named in the report (found by :func:`recorded_places`), read as ``fuse`` read it; None
    (with a note) when it is gone."""
    from medfuse import io

    record = as_dict(as_dict(report.get("inputs")).get(role.lower()))
    recorded = record.get("path")
    if not recorded or not isinstance(recorded, str):
        notes.append(f"The report names no {role} input file: its pictures are left out.")
        return None
    places = recorded_places(recorded, report, case_dir)
    path = next((place for place in places if place.exists()), None)
    if path is None:
        where = ", ".join(str(place) for place in places)
        looked = f" (looked for {where})" if len(places) > 1 else ""
        notes.append(f"The {role} input {recorded} no longer exists{looked}: its pictures are left out.")
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
    found = {kind: find_output(case_dir, report, kind) for kind in _REBUILT_FROM}
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
            notes.append(f"The {what} the report names is not found (nor in {case_dir}): its pictures are left out.")
    mri = _read_input(report, "MRI", case_dir, notes)
    pet = _read_input(report, "PET", case_dir, notes)
    if pet_on_mri is None and (pet is None or transform is None):
        notes.append("The registered PET (pet_on_mri.nii.gz, --save-pet) is not there: the viewer shows no PET.")
    return CaseVolumes(mri, pet, pet_on_mri, fused, overlay, transform, notes=notes)


def rebuild_case_page(case: str | Path, output: str | Path | None = None, overwrite: bool = False) -> Path:
    """Rebuild a case's QC page from its folder (or its report.json): outputs, and inputs that still exist.

    The page goes to ``output``, by default ``qc.html`` beside the report.
    """
    case_dir, report = _read_report(Path(case))
    target = check_output_path(
        Path(output) if output is not None else case_dir / QC_NAME, allowed=(".html",), overwrite=overwrite
    )
    volumes = load_case_volumes(case_dir, report)
    for note in volumes.notes:
        warn(f"{case_dir}: {note}")
    fused = find_output(case_dir, report, "fused")
    page = prepare_case_page(volumes, report, case_title(fused) if fused else case_dir.absolute().name)
    text = page.html(report)
    with output_transaction(overwrite=overwrite) as transaction:
        transaction.write(target, lambda path: path.write_text(text, encoding="utf-8"))
    return target
