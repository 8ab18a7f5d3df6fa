"""Volumetric fusion end to end: load → validate → register → resample → fuse → write.

:func:`fuse_images` works on SimpleITK images in memory; :func:`fuse_files` reads files or DICOM
folders, checks every output path before any work and writes all outputs in one atomic transaction.

How the 3-D volumes meet the 2-D network (it was trained on AANLIB slices):

* The PET is registered to the MRI and resampled onto the MRI's grid, so every output has exactly the
  MRI's size, spacing, origin and direction.
* Slices are taken along the MRI grid's third axis, cropped to the bounding box of the body (the
  MRI's foreground: head, trunk or limbs), in batches of ``options.batch_size``; slices without
  foreground voxels are skipped.
* MRI intensities go to [0, 1] from the background level (0.5th percentile of all voxels), with the
  99.5th percentile of the foreground voxels at :data:`MRI_TOP` = 0.8: the headroom above lets uptake
  brighten even the brightest anatomy; and the foreground's median at :data:`MRI_MEDIAN_TOP` = 0.5 at
  most, so that a flat anatomy (one tissue level, as an MRI made from a phantom's outline) is mid-grey
  (there 0.4, :func:`mri_median_top`: it has no contrast of its own to keep, and uptake gets the room).
* The PET reaches the network as a brightness that rises with uptake (:func:`pet_input`), the kind of
  input it was trained on for volumes (the atlas PET turned back into uptake by inverting its colour
  map). The window is ``--pet-window LOW HIGH`` (image units, linear, clipped) or, by default, starts at
  the PET's background level (0.5th percentile of all voxels) and puts the 99.5th percentile of its
  voxels in the MRI's body at :data:`PET_KNEE` = 0.8; uptake above that is compressed smoothly towards 1, never
  clipped, so the hottest spots stay the brightest and moderate uptake never saturates. The window is
  taken from the PET within the MRI's body (the voxels fused), so a regional MRI gets its own region's
  uptake. Where most of those voxels lie low in the window (a body PET windowed by a tumour), the
  windowed value is lifted by a power (:func:`pet_window`) so that the network sees it at the levels it
  was trained on. (Before network v2 the network got the luminance of the aanlib colour image, which
  peaks at half the window: the hottest uptake came out darker than moderate uptake.)
* The fused volume is the network's output blended with ``--pet-blend`` (0.15) of the network's PET input,
  voxel by voxel (:func:`blend_pet`), float32 in [0, 1], 0 outside the body: brighter where the MRI is
  brighter and, at any MRI intensity, brighter where uptake is higher. The network learned the second
  only approximately (how well depends on its training seed); the blend makes every voxel carry its own
  uptake, so the ordering holds on a scan unlike the training data too.
* The overlay is RGB uint8: the fused luminance with the chroma (Cb, Cr) of the windowed PET in the
  ``--colormap`` map, i.e. MRI anatomy with PET hot spots in warm colours. Out-of-gamut colours are
  clipped per channel (the usual YCbCr conversion) so that hot spots stay saturated on bright anatomy;
  the fused volume keeps the exact fused luminance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from medfuse import __version__
from medfuse.atomic import VOLUME_EXTENSIONS, check_output_path, full_suffix, output_transaction, sibling
from medfuse.console import collect_warnings, info, make_progress, stage, warn
from medfuse.errors import ProcessingError, UsageError
from medfuse.intensity import normalise, robust_range, subsample
from medfuse.options import FuseOptions, OutputFormat, check_options

if TYPE_CHECKING:
    import SimpleITK as sitk

    from medfuse.inference import Fuser
    from medfuse.io import Volume
    from medfuse.qc.page import CasePage
    from medfuse.registration import Placement, RegistrationResult

__all__ = ["FuseOptions", "FusionResult", "fuse_files", "fuse_images"]

T = TypeVar("T")

MRI_PERCENTILES = (0.5, 99.5)
PET_PERCENTILES = (0.5, 99.5)
#: The MRI's 99.5th percentile of foreground voxels lands here, not at 1: the headroom above lets uptake brighten
#: even the brightest anatomy (at 1.0 the fused volume saturates on white matter and hot spots there vanish).
MRI_TOP = 0.8
#: The median of the MRI's foreground voxels lands here at most (mid-grey). Heads and bodies have it at
#: 0.30-0.57 from :data:`MRI_TOP` alone; an anatomy of one flat tissue (a phantom's water, a body mask) would
#: have it at MRI_TOP, leaving uptake too little room above the anatomy to stand out.
MRI_MEDIAN_TOP = 0.5
#: ... and at this for an anatomy of one flat level (no contrast of its own to keep, so more of the output's
#: range goes to uptake), rising to MRI_MEDIAN_TOP as its tissue's spread goes from :data:`MRI_FLAT_SPREAD`
#: to :data:`MRI_TEXTURED_SPREAD` (:func:`mri_median_top`).
MRI_FLAT_MEDIAN_TOP = 0.4
#: The spread of the anatomy's tissue (interquartile range over the median, both above the background, of the
#: foreground voxels brighter than halfway to the median) up to which it counts as flat, and from which as
#: textured. Measured: a flat phantom 0.01-0.04, one with 5 % / 10 % / 15 % noise 0.07 / 0.14 / 0.20; heads
#: 0.22 (the example), 0.26 (MNI152), 0.56 (the analytic head); the thigh phantom 1.3.
MRI_FLAT_SPREAD = 0.1
MRI_TEXTURED_SPREAD = 0.2
#: Default PET input: the 99.5th percentile of the PET within the MRI's body lands here (linear below). The atlas
#: PET the network learned from, turned back into uptake, has it at 0.71-0.86 per slice (0.84 over a series).
PET_KNEE = 0.8
#: Above the knee uptake is compressed smoothly towards 1 with this scale (window units), never clipped:
#: 1.5x the knee's uptake gives 0.91, 2x 0.95, 3x 0.99, so the hottest spots stay the brightest.
PET_HEADROOM = 0.48
#: The windowed PET's median over the voxels fused is lifted to this at least (:func:`pet_window`): the 10th
#: percentile of the training slices' foreground medians (the atlas PET turned back into uptake: 0.31-0.46).
PET_MEDIAN_FLOOR = 0.31
#: The lift's power stays at or above this (a square root): stronger lifts flatten the hot spots' contrast.
PET_GAMMA_MIN = 0.5
_FORMAT_EXTENSIONS = {
    OutputFormat.NIFTI: (".nii.gz", ".nii"),
    OutputFormat.NRRD: (".nrrd",),
    OutputFormat.MHA: (".mha",),
}


@dataclass
class FusionResult:
    """Everything one fusion produced, all on the MRI's grid."""

    fused: sitk.Image
    overlay: sitk.Image | None
    pet_on_mri: sitk.Image
    transform: sitk.Transform
    report: dict[str, Any]
    registration: RegistrationResult | None = None
    #: What :func:`medfuse.io.load_volume` knew about the MRI (DICOM series info for export), if read from disk.
    mri_info: dict[str, Any] | None = None
    #: The same for the PET (the exported DICOM series reference a DICOM PET as a source).
    pet_info: dict[str, Any] | None = None


# ---- public API ------------------------------------------------------------------------------------
def fuse_images(
    mri: sitk.Image,
    pet: sitk.Image,
    options: FuseOptions | None = None,
    fuser: Fuser | None = None,
) -> FusionResult:
    """Register, resample and fuse an MRI and a PET given as SimpleITK images; nothing is written.

    ``fuser`` is any :class:`~medfuse.inference.Fuser`; ``None`` loads the one
    ``options.method`` names. The inputs are validated like files (3-D scalar, finite, not constant;
    a 4-D PET needs ``options.frame``) and never modified.
    """
    from medfuse import io

    options = check_options(options or FuseOptions())
    timings: dict[str, float] = {}
    with collect_warnings() as warned:
        with _timed(timings, "validate"):
            mri = io.validate_image(mri, role="MRI", source="the MRI image")
            pet = io.validate_image(pet, role="PET", source="the PET image", frame=options.frame)
        inputs = {"mri": _input_record(mri, None, {}), "pet": _input_record(pet, None, {})}
        result = _fuse(mri, pet, options, fuser, inputs, timings)
    result.report["warnings"] = warned
    return result


def fuse_files(
    mri_path: str | Path,
    pet_path: str | Path,
    output: str | Path,
    options: FuseOptions | None = None,
    fuser: Fuser | None = None,
) -> FusionResult:
    """Fuse an MRI and a PET file (or DICOM folder) and write the outputs ``options`` asks for.

    Every output path is checked before any work; all outputs (fused volume, overlay, preview,
    report, transform, QC page) appear together or not at all. Returns what :func:`fuse_images`
    returns; the report's ``warnings`` lists every warning of the run.
    """
    with collect_warnings() as warned:
        return _fuse_files(mri_path, pet_path, output, options, fuser, warned)


def _fuse_files(
    mri_path: str | Path,
    pet_path: str | Path,
    output: str | Path,
    options: FuseOptions | None,
    fuser: Fuser | None,
    warned: list[str],
) -> FusionResult:
    from medfuse import io

    started = time.perf_counter()
    options = check_options(options or FuseOptions())
    mri_path, pet_path, output = Path(mri_path), Path(pet_path), Path(output)
    io.check_distinct_inputs(mri_path, pet_path)
    targets = _plan_outputs(mri_path, pet_path, output, options)
    loading = _load_in_background(options) if fuser is None else fuser
    try:
        timings: dict[str, float] = {}
        with _timed(timings, "load_mri"), stage("Loading the MRI"):
            mri = io.load_volume(mri_path, role="MRI", series_uid=options.mri_series)
        with _timed(timings, "load_pet"), stage("Loading the PET"):
            pet = io.load_volume(
                pet_path, role="PET", frame=options.frame, series_uid=options.pet_series, suv=options.suv
            )
        _check_patients(mri, pet, options)
        inputs = {
            "mri": _input_record(mri.image, mri_path, mri.info),
            "pet": _input_record(pet.image, pet_path, pet.info, frame=options.frame),
        }
        result = _fuse(mri.image, pet.image, options, loading, inputs, timings)
        result.mri_info, result.pet_info = mri.info, pet.info
        result.report["warnings"] = warned  # the run's list: warnings while writing join it
        _write_outputs(result, targets, options, timings, started, (mri.image, pet.image))
    finally:
        if isinstance(loading, Future):
            _let_loading_end(loading)
    _summarise(result, mri_path, pet_path, targets, time.perf_counter() - started)
    return result


# ---- checks before any work ------------------------------------------------------------------------
def _volume_extension(output: Path, options: FuseOptions) -> tuple[str, ...]:
    """The extensions -o may have under ``--format``."""
    if options.output_format == OutputFormat.AUTO:
        return VOLUME_EXTENSIONS
    allowed = _FORMAT_EXTENSIONS[options.output_format]
    if full_suffix(output) not in allowed:
        raise UsageError(
            f"--format {options.output_format} does not match {output}; name it with {' or '.join(allowed)} "
            "or use --format auto."
        )
    return allowed


def _plan_outputs(mri: Path, pet: Path, output: Path, options: FuseOptions) -> dict[str, Path]:
    """Check every output path (and that no two coincide) and return them by kind."""
    inputs = [mri, pet] + ([options.transform] if options.transform else [])

    def checked(path: Path, allowed: tuple[str, ...], option: str = "-o") -> Path:
        return check_output_path(path, allowed=allowed, inputs=inputs, overwrite=options.overwrite, option=option)

    if options.output_format == OutputFormat.DICOM:  # -o DIR: DIR/fused and DIR/overlay series
        from medfuse.dicom import plan_dicom_outputs

        targets = plan_dicom_outputs(output, inputs=inputs, overlay=options.overlay, overwrite=options.overwrite)
    else:
        targets = {"fused": checked(output, _volume_extension(output, options))}
        if options.overlay:
            targets["overlay"] = checked(sibling(output, "_overlay"), VOLUME_EXTENSIONS)
    if options.preview:
        targets["preview"] = checked(options.preview, (".png",), "--preview")
    if options.report:
        targets["report"] = checked(options.report, (".json",), "--report")
    if options.save_transform:
        targets["transform"] = checked(options.save_transform, (".tfm", ".txt"), "--save-transform")
    if options.save_pet:  # a volume file for measuring, also under --format dicom
        targets["pet"] = checked(options.save_pet, VOLUME_EXTENSIONS, "--save-pet")
    if options.qc:
        targets["qc"] = checked(options.qc, (".html",), "--qc")
    seen: dict[Path, str] = {}
    for kind, path in targets.items():
        key = path.resolve()
        if key in seen:
            raise UsageError(f"{path}: the {seen[key]} and the {kind} outputs would be the same file; name them apart.")
        seen[key] = kind
    return targets


def _check_patients(mri: Volume, pet: Volume, options: FuseOptions) -> None:
    """Refuse DICOM inputs of different patients unless --allow-different-patients."""
    if "dicom" in mri.info or "dicom" in pet.info:
        from medfuse.dicom import check_same_patient

        check_same_patient(mri.info.get("dicom"), pet.info.get("dicom"), options.allow_different_patients)


# ---- the work --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - start, 4)


@contextlib.contextmanager
def _sitk_threads(threads: int | None) -> Iterator[None]:
    """Run SimpleITK filters on ``threads`` threads (``--threads``), restoring the default afterwards."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _load_in_background(options: FuseOptions) -> Future[Fuser]:
    """Start loading the fuser (imports, weights, backend export) on a helper thread.

    It then loads while the inputs are read and registered; :func:`_fuse` waits for it (a weights
    error surfaces there) and the report's ``load_fuser`` time is that wait. A run that stops early
    (an error, Ctrl-C) lets it end first (:func:`_let_loading_end`). The thread is a daemon all the
    same, so that a loader stuck for good (see ``console.note_interrupt``) never keeps the process alive.
    """
    from medfuse.inference import load_fuser

    loaded: Future[Fuser] = Future()

    def load() -> None:
        loaded.set_running_or_notify_cancel()
        try:
            loaded.set_result(load_fuser(options))
        except BaseException as exc:  # handed to the waiting run, which raises it
            loaded.set_exception(exc)

    threading.Thread(target=load, name="medfuse-model", daemon=True).start()
    return loaded


#: How long a run that stops early waits for its fuser to finish loading (ordinarily a fraction of a second).
LOADING_GRACE_S = 10.0


def _let_loading_end(loading: Future[Fuser]) -> None:
    """Wait (at most :data:`LOADING_GRACE_S`) for a fuser still loading when the run ends early.

    The process must not exit while the loader is inside ONNX Runtime building its session: the
    runtime's clean-up at exit then aborts the process ("terminate called without an active
    exception", exit -6 instead of 130 after a Ctrl-C).
    """
    import concurrent.futures

    concurrent.futures.wait([loading], timeout=LOADING_GRACE_S)


def _wait_for(work: Future[T]) -> T:
    """The result of work on a helper thread (the fuser loading, the hotspot readout), waited for in short
    steps so that a Ctrl-C whose KeyboardInterrupt Python lost (see :func:`medfuse.console.note_interrupt`)
    still ends the wait."""
    import concurrent.futures

    from medfuse.console import raise_if_interrupted

    while True:
        try:
            return work.result(timeout=0.1)
        except concurrent.futures.TimeoutError:
            raise_if_interrupted()


def _fuse(
    mri: sitk.Image,
    pet: sitk.Image,
    options: FuseOptions,
    fuser: Fuser | Future[Fuser] | None,
    inputs: dict[str, Any],
    timings: dict[str, float],
) -> FusionResult:
    from medfuse import registration

    mri_name, pet_name = inputs["mri"]["path"] or "the MRI image", inputs["pet"]["path"] or "the PET image"
    registration.check_work_grid(mri, mri_name)
    registration.check_work_grid(pet, pet_name)
    with _sitk_threads(options.threads), registration.shared_grids():
        if fuser is None:
            with _timed(timings, "load_fuser"), stage("Loading the fusion model"):
                from medfuse.inference import load_fuser

                fuser = load_fuser(options)
        transform: Future[sitk.Transform] = Future()
        readout = _hotspots_aside(pet, mri, transform, _pet_units(inputs), pet_name)
        with _timed(timings, "register"), stage("Registering the PET to the MRI"):
            try:
                placement = _transform(mri, pet, options, inputs, pet_name)
            except BaseException as exc:  # the readout stops waiting for the transform too
                transform.set_exception(exc)
                raise
            transform.set_result(placement.transform)
        with _timed(timings, "resample"), stage("Resampling the PET onto the MRI grid"):
            pet_on_mri = registration.resample_to(pet, mri, placement.transform)
        if isinstance(fuser, Future):
            with _timed(timings, "load_fuser"), stage("Loading the fusion model"):
                fuser = _wait_for(fuser)
        with _timed(timings, "fuse"):
            fused, overlay, details = _fuse_volume(mri, pet_on_mri, options, fuser)
        with _timed(timings, "hotspots"), stage("Reading out the PET hotspots"):
            hotspots, skipped = _wait_for(readout)
    report = _report(inputs, mri, options, fuser, placement.record, details, timings)
    report["hotspots"] = hotspots
    if skipped:
        report["hotspots_skipped"] = skipped
    return FusionResult(fused, overlay, pet_on_mri, placement.transform, report, placement.registered)


def _hotspots_aside(
    pet: sitk.Image, mri: sitk.Image, transform: Future[sitk.Transform], units: str | None, pet_name: str
) -> Future[tuple[dict[str, Any] | None, str | None]]:
    """Start :func:`_hotspots` on a helper thread, beside the registration, whose cores it leaves partly idle.

    The readout needs the PET on its own grid only, and the registration's ``transform`` only at its
    end, to place its points on the MRI. Its warnings reach the run's lists (the thread runs in a copy
    of this context). Not a daemon: a run that fails meanwhile lets it end (a fraction of a second).
    The modules it needs are imported here, on the calling thread: the helper must never wait for the
    import lock, which a Ctrl-C lost in an import's clean-up could leave held (see
    ``console.interrupt_outside_imports``).
    """
    import contextvars
    import importlib

    for module in ("medfuse.hotspots", "medfuse.memory"):
        importlib.import_module(module)

    result: Future[tuple[dict[str, Any] | None, str | None]] = Future()
    context = contextvars.copy_context()

    def read_out() -> None:
        result.set_running_or_notify_cancel()
        try:
            result.set_result(context.run(_hotspots, pet, mri, transform, units, pet_name))
        except BaseException as exc:  # handed to the run, which raises it when it asks for the readout
            result.set_exception(exc)

    threading.Thread(target=read_out, name="medfuse-hotspots").start()
    return result


def _hotspots(
    pet: sitk.Image, mri: sitk.Image, transform: Future[sitk.Transform], units: str | None, pet_name: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The hotspot readout of the PET on its own grid (:mod:`medfuse.hotspots`), placed on the MRI too.

    ``transform`` (MRI points to PET points) is waited for when the first point is placed on the MRI.
    A readout that does not fit in memory is skipped with a warning: ``(None, reason)``; the fusion
    does not depend on it.
    """
    import SimpleITK as sitk

    from medfuse.hotspots import Grid, hotspot_report, readout_bytes
    from medfuse.memory import available_memory, format_bytes

    needed = readout_bytes(pet.GetSize()[::-1], pet.GetSpacing())
    available = available_memory()
    reason = None
    if available is not None and needed > available:
        reason = f"it needs up to {format_bytes(needed)} of memory, more than the {format_bytes(available)} available"
    else:

        @functools.cache
        def pet_to_mri() -> sitk.Transform | None:
            try:  # the registration maps MRI points to PET points; its inverse places PET points on the MRI
                return transform.result().GetInverse()
            except RuntimeError:  # not invertible (a displacement field): positions stay in PET space only
                return None

        def mri_voxel(point: Sequence[float]) -> list[int] | None:
            into_mri = pet_to_mri()
            if into_mri is None:
                return None
            index = mri.TransformPhysicalPointToIndex(into_mri.TransformPoint(tuple(float(v) for v in point)))
            return list(index) if all(0 <= i < n for i, n in zip(index, mri.GetSize(), strict=True)) else None

        grid = Grid(pet.GetOrigin(), pet.GetSpacing(), pet.GetDirection())
        is_suv = units in ("SUVbw", "GML")
        values = sitk.GetArrayViewFromImage(pet)
        try:
            return hotspot_report(values, grid, units=units, is_suv=is_suv, to_mri=mri_voxel), None
        except MemoryError:
            reason = "this machine ran out of memory during it"
    warn(
        f"{pet_name}: the PET hotspot readout was skipped ({reason}); the fused outputs are complete, "
        'and report.json has "hotspots": null.'
    )
    return None, f"skipped: {reason}"


def _transform(
    mri: sitk.Image, pet: sitk.Image, options: FuseOptions, inputs: dict[str, Any], pet_name: str
) -> Placement:
    """How the PET goes on the MRI (:func:`medfuse.registration.place_pet`): ``--transform``, or
    ``--register`` (``auto``: none when both DICOM inputs share a FrameOfReferenceUID, else rigid).

    ``pet_name`` (the PET's path as given) names the culprit when registration fails or the bodies
    do not overlap unregistered (with ``--transform`` the transform file is named).
    """
    from medfuse.registration import place_pet

    frames = (_frame_of_reference(inputs["mri"]), _frame_of_reference(inputs["pet"]))
    return place_pet(mri, pet, options.register, options.transform, frames, pet_name)


def _frame_of_reference(record: dict[str, Any]) -> str | None:
    return record.get("dicom", {}).get("frame_of_reference_uid") or None


@dataclass(frozen=True)
class PetWindow:
    """How PET values become the network's input: the window (image units) and how it was chosen, the knee
    above which uptake is compressed (None: clipped, an explicit ``--pet-window``) and the lift (a power
    ``gamma`` <= 1 applied to the windowed value, see :func:`pet_window`)."""

    low: float
    high: float
    source: str
    knee: float | None = PET_KNEE
    gamma: float = 1.0


def pet_window(pet_values: np.ndarray, region: np.ndarray, window: tuple[float, float] | None = None) -> PetWindow:
    """The PET window in image units, how it was chosen, and the lift of the network's input.

    ``pet_values`` is the PET on the MRI's grid and ``region`` the voxels that are fused (the MRI's
    body, :func:`fused_region`): the window is set by the uptake the fused volume shows (a thigh MRI
    in a whole-body PET gets the thigh's uptake, not the bladder's). Its voxels count where the PET lies
    above its background (0.5th percentile of all voxels; outside the PET's field of view the
    resampled PET is 0). ``--pet-window LOW HIGH`` maps LOW..HIGH linearly to 0..1 (clipped). By
    default LOW is that background and HIGH is where the line through LOW and the 99.5th percentile of
    the counted voxels (placed at :data:`PET_KNEE`) reaches 1; uptake above the knee is compressed
    towards 1 instead of clipped (:func:`pet_display`).

    The lift: where the median of the counted voxels, windowed, lies under :data:`PET_MEDIAN_FLOOR` (a
    body PET whose window is set by a tumour, a phantom's warm background), the network's input is the
    windowed value to the power ``gamma`` that brings that median up to the floor, never below
    :data:`PET_GAMMA_MIN`: most of the body then reaches the network at the levels it was trained on
    instead of near 0, where its output barely follows uptake. Monotonic, so the order of uptake and
    the hottest spots' place at the top are kept (the bundled example's head: 0.88, a phantom's warm
    background at 8:1: 0.54). Percentiles come from a regular subsample (:func:`medfuse.intensity.subsample`).
    """
    values = subsample(pet_values)
    low = float(np.percentile(values, PET_PERCENTILES[0]))
    counted = values[subsample(region) & (values > max(low, 0.0))]
    if window is not None:
        chosen = PetWindow(float(window[0]), float(window[1]), "--pet-window", knee=None)
    else:
        top = float(np.percentile(counted, PET_PERCENTILES[1])) if counted.size else low
        if top <= low:  # no uptake above the background where the MRI's body is: the whole range
            low, top = float(values.min()), max(float(values.max()), float(values.min()) + 1.0)
        how = (
            f"percentiles: {PET_PERCENTILES[0]}th of all voxels to the {PET_PERCENTILES[1]}th of the voxels "
            f"fused (the MRI's body) placed at {PET_KNEE} of the window, higher uptake compressed towards 1"
        )
        chosen = PetWindow(low, low + (top - low) / PET_KNEE, how)
    if not counted.size:
        return chosen
    median = float(np.median(pet_display(counted, chosen)))
    return dataclasses.replace(chosen, gamma=lift_gamma(median))


def lift_gamma(median: float) -> float:
    """The power that takes ``median`` (a windowed PET value) up to :data:`PET_MEDIAN_FLOOR`, within
    [:data:`PET_GAMMA_MIN`, 1]."""
    if median >= PET_MEDIAN_FLOOR:
        return 1.0
    if median <= 0.0:
        return PET_GAMMA_MIN
    return max(PET_GAMMA_MIN, math.log(PET_MEDIAN_FLOOR) / math.log(median))


def pet_display(values: np.ndarray, window: PetWindow) -> np.ndarray:
    """PET values windowed to [0, 1], float32, rising with uptake (the overlay's colours; not lifted).

    Linear from the window's low (0) to the knee; above it ``1 - (1 - knee) exp(-(v - knee) / PET_HEADROOM)``
    (v the linear value), so very high uptake is compressed but still ordered. No knee: linear and
    clipped at 1 (an explicit ``--pet-window``).
    """
    linear = (np.asarray(values, dtype=np.float32) - np.float32(window.low)) / np.float32(window.high - window.low)
    linear = np.maximum(linear, np.float32(0.0))
    if window.knee is None:
        return np.minimum(linear, np.float32(1.0))
    knee = window.knee
    excess = np.maximum(linear - np.float32(knee), np.float32(0.0))
    compressed = np.float32(1.0) - np.float32(1.0 - knee) * np.exp(-excess / np.float32(PET_HEADROOM))
    return np.where(linear <= knee, linear, compressed).astype(np.float32)


def lift(display: np.ndarray, window: PetWindow) -> np.ndarray:
    """The network's PET input from :func:`pet_display`'s values: raised to ``window.gamma``."""
    if window.gamma == 1.0:
        return display
    return np.power(display, np.float32(window.gamma)).astype(np.float32)


def pet_input(values: np.ndarray, window: PetWindow) -> np.ndarray:
    """PET values as the network's input, float32 in [0, 1], rising with uptake everywhere."""
    return lift(pet_display(values, window), window)


def blend_pet(fused: np.ndarray, pet: np.ndarray, share: float) -> np.ndarray:
    """``(1 - share) * fused + share * pet``, float32: the fused volume with ``share`` of the PET input carried
    through voxel by voxel (``--pet-blend``), so it rises with uptake at every voxel; both in [0, 1], so is it."""
    if share == 0.0:
        return fused
    return (np.float32(1.0 - share) * fused + np.float32(share) * pet).astype(np.float32)


def fused_region(mri: sitk.Image) -> np.ndarray:
    """The voxels that are fused and scored (``medfuse evaluate``): the MRI's foreground dilated by 3 mm, (z, y, x)."""
    import SimpleITK as sitk

    from medfuse.registration import foreground_mask

    mask_image = foreground_mask(mri, "MRI", dilate_mm=3.0)
    return sitk.GetArrayViewFromImage(mask_image).astype(bool)  # one copy (the view needs mask_image alive)


def mri_window(mri_values: np.ndarray, body: np.ndarray) -> tuple[float, float]:
    """The MRI window (low, high) the network sees, in image units.

    LOW is the background level (0.5th percentile of all voxels); the 99.5th percentile of the ``body``
    voxels lands at :data:`MRI_TOP` of the window, so HIGH lies above it, or higher still where that
    would put the body's median above :func:`mri_median_top` (a flat anatomy shows mid-grey, not white).
    """
    low, top = robust_range(mri_values, body, MRI_PERCENTILES)
    body_sample = subsample(mri_values)[subsample(body)]  # a regular stride, not a copy of every body voxel
    median = float(np.median(body_sample)) if body_sample.size else low
    if median <= low:  # no body above the background: the 99.5th percentile alone
        return low, low + (top - low) / MRI_TOP
    tissue = body_sample[body_sample > (low + median) / 2]  # not the air, lung or rim round the body
    lower, middle, upper = (float(q) for q in np.percentile(tissue, [25, 50, 75]))
    spread = (upper - lower) / (middle - low)
    return low, low + max((top - low) / MRI_TOP, (median - low) / mri_median_top(spread))


def mri_median_top(spread: float) -> float:
    """Where the body's median may lie at most in the MRI window, given its tissue's ``spread`` (see
    :data:`MRI_FLAT_SPREAD`): :data:`MRI_FLAT_MEDIAN_TOP` for a flat anatomy, :data:`MRI_MEDIAN_TOP` for a
    textured one, linear in between."""
    share = (spread - MRI_FLAT_SPREAD) / (MRI_TEXTURED_SPREAD - MRI_FLAT_SPREAD)
    return MRI_FLAT_MEDIAN_TOP + (MRI_MEDIAN_TOP - MRI_FLAT_MEDIAN_TOP) * min(max(share, 0.0), 1.0)


def network_inputs(
    mri_values: np.ndarray, pet_values: np.ndarray, mri_window: tuple[float, float], pet_window: PetWindow
) -> tuple[np.ndarray, np.ndarray]:
    """MRI and PET values (arrays of one shape) as the network gets them, float32 in [0, 1].

    The MRI is windowed linearly. The PET stays a brightness that rises with uptake (:func:`pet_input`):
    the network was trained on this kind of input (the atlas PET turned back into uptake), so the fused
    volume rises with uptake too and the hottest spots are the brightest.
    """
    return normalise(mri_values, mri_window), pet_input(pet_values, pet_window)


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The (z, y, x) slices of the smallest box holding every True voxel."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return box[0], box[1], box[2]


@dataclass
class _Batch:
    """One batch of slices cut to the body's box, ready for the fuser: network inputs and the overlay's
    colour offsets (``colour.colormap_rgb_offsets`` of the windowed PET, not lifted; the overlay adds the
    fused luminance)."""

    slices: list[int]
    inside: np.ndarray
    mri: np.ndarray
    pet: np.ndarray
    colour_offsets: np.ndarray | None


def _fuse_volume(
    mri: sitk.Image, pet_on_mri: sitk.Image, options: FuseOptions, fuser: Fuser
) -> tuple[sitk.Image, sitk.Image | None, dict[str, Any]]:
    """Fuse slice by slice along the MRI grid's third axis inside the body's bounding box.

    A helper thread prepares the next batch (windows, colour) and stores the last one (mask, overlay)
    while the fuser works on the current one; every batch is computed the same way whatever the timing.
    """
    import SimpleITK as sitk

    from medfuse.colour import colormap_rgb_offsets

    mask = fused_region(mri)
    mri_values = sitk.GetArrayViewFromImage(mri)
    mri_low, mri_high = mri_window(mri_values, mask)
    pet_values = sitk.GetArrayViewFromImage(pet_on_mri)
    pet_transfer = pet_window(pet_values, mask, options.pet_window)

    box = _bounding_box(mask)
    slices = [k for k in range(box[0].start, box[0].stop) if mask[k, box[1], box[2]].any()]
    # The output volumes, filled batch by batch; popped when turned into images so that each numpy copy
    # is freed as soon as its image exists (on a clinical-size MRI they are 150 and 110 MB).
    volumes = {"fused": np.zeros(mri_values.shape, dtype=np.float32)}
    if options.overlay or options.preview is not None or options.qc is not None:
        volumes["overlay"] = np.zeros((*mri_values.shape, 3), dtype=np.uint8)

    def prepare(batch: list[int]) -> _Batch:
        mri_in = normalise(mri_values[batch, box[1], box[2]], (mri_low, mri_high))
        display = pet_display(pet_values[batch, box[1], box[2]], pet_transfer)
        offsets = colormap_rgb_offsets(display, options.colormap) if "overlay" in volumes else None
        return _Batch(batch, mask[batch, box[1], box[2]], mri_in, lift(display, pet_transfer), offsets)

    def store(prepared: _Batch, out: np.ndarray) -> None:
        out = np.where(prepared.inside, blend_pet(out, prepared.pet, options.pet_blend), np.float32(0.0))
        volumes["fused"][prepared.slices, box[1], box[2]] = out
        if prepared.colour_offsets is not None:  # the fused luminance with the PET's chroma, clipped per channel
            rgb = prepared.colour_offsets
            rgb += out[..., None]
            np.clip(rgb, np.float32(0.0), np.float32(1.0), out=rgb)
            rgb *= np.float32(255.0)
            colour = np.rint(rgb).astype(np.uint8)
            volumes["overlay"][prepared.slices, box[1], box[2]] = np.where(prepared.inside[..., None], colour, 0)

    batches = [slices[start : start + options.batch_size] for start in range(0, len(slices), options.batch_size)]
    with (
        ThreadPoolExecutor(1, thread_name_prefix="medfuse-slices") as helper,
        make_progress(transient=True) as progress,
    ):
        task = progress.add_task(f"Fusing slices on {fuser.device} ({fuser.method})", total=len(slices))
        upcoming = helper.submit(prepare, batches[0]) if batches else None
        stored = []
        for index in range(len(batches)):
            assert upcoming is not None
            prepared = upcoming.result()
            if index + 1 < len(batches):
                upcoming = helper.submit(prepare, batches[index + 1])
            out = _checked(fuser.fuse(prepared.mri, prepared.pet), prepared.mri.shape, fuser)
            stored.append(helper.submit(store, prepared, out))
            progress.update(task, advance=len(prepared.slices))
        for done in stored:
            done.result()
    fused_image = sitk.GetImageFromArray(volumes.pop("fused"))
    fused_image.CopyInformation(mri)
    overlay_image = None
    if "overlay" in volumes:
        overlay_image = sitk.GetImageFromArray(volumes.pop("overlay"), isVector=True)
        overlay_image.CopyInformation(mri)
    details = {
        "slices_fused": len(slices),
        "slices_total": int(mri_values.shape[0]),
        "crop_zyx": [[s.start, s.stop] for s in box],
        "mri_window": [mri_low, mri_high],
        "pet_window": {
            "low": pet_transfer.low,
            "high": pet_transfer.high,
            "source": pet_transfer.source,
            "gamma": pet_transfer.gamma,
        },
    }
    return fused_image, overlay_image, details


def _checked(out: np.ndarray, shape: tuple[int, ...], fuser: Fuser) -> np.ndarray:
    """The fuser's output as float32 in [0, 1], or a ProcessingError if it broke the fuser contract."""
    out = np.asarray(out, dtype=np.float32)
    if out.shape != shape or not np.all(np.isfinite(out)):
        raise ProcessingError(
            f"the {fuser.method} fusion returned {'non-finite values' if out.shape == shape else out.shape} "
            f"for slices of shape {shape}; rerun with --method laplacian or report the problem."
        )
    return np.clip(out, 0.0, 1.0)


# ---- report ----------------------------------------------------------------------------------------
def _input_record(
    image: sitk.Image, path: Path | None, source_info: dict[str, Any], frame: str | None = None
) -> dict[str, Any]:
    import SimpleITK as sitk

    from medfuse.io import geometry

    values = sitk.GetArrayViewFromImage(image)
    record: dict[str, Any] = {"path": str(path) if path is not None else None}
    record.update({key: value for key, value in source_info.items() if key in ("format", "pixel_type")})
    record.update(geometry(image))
    record["value_range"] = [float(values.min()), float(values.max())]
    if frame is not None:
        record["frame"] = frame
    if "dicom" in source_info:
        dicom_info = source_info["dicom"]
        keys = (
            "series_uid",
            "modality",
            "description",
            "patient_id",
            "frame_of_reference_uid",
            "units",
            "reason",
            "suv",
            "resampled_slices",
        )
        record["dicom"] = {key: dicom_info.get(key) for key in keys if dicom_info.get(key) is not None}
    return record


def _versions() -> dict[str, str]:
    import SimpleITK as sitk

    versions = {
        "medfuse": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "SimpleITK": sitk.Version.VersionString(),
        "platform": platform.platform(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = torch.__version__
    return versions


def _report(
    inputs: dict[str, Any],
    mri: sitk.Image,
    options: FuseOptions,
    fuser: Fuser,
    registration_record: dict[str, Any],
    details: dict[str, Any],
    timings: dict[str, float],
) -> dict[str, Any]:
    from medfuse.io import geometry

    return {
        "medfuse_version": __version__,
        "working_directory": str(Path.cwd()),  # where the inputs' paths, as typed, are relative to
        "inputs": inputs,
        "output_grid": geometry(mri),
        "registration": registration_record,
        "pet_window": {**details["pet_window"], "units": _pet_units(inputs)},
        "mri_window": details["mri_window"],
        "fusion": {
            "method": fuser.method,
            "device": fuser.device,
            "weights_sha256": fuser.weights_sha256,
            "backend": getattr(fuser, "backend", None),
            "batch_size": options.batch_size,
            "slice_axis": "third axis of the MRI grid",
            "slices_fused": details["slices_fused"],
            "slices_total": details["slices_total"],
            "crop_zyx": details["crop_zyx"],
            "network_pet_input": (
                f"PET windowed to [0, 1], rising with uptake, to the power {details['pet_window']['gamma']:.3g}"
            ),
            "pet_blend": options.pet_blend,
            "overlay_colormap": options.colormap,
        },
        "timings_s": timings,
        "versions": _versions(),
    }


def _pet_units(inputs: dict[str, Any]) -> str | None:
    dicom_info = inputs["pet"].get("dicom", {})
    return dicom_info.get("units")


# ---- writing ---------------------------------------------------------------------------------------
def _write_outputs(
    result: FusionResult,
    targets: dict[str, Path],
    options: FuseOptions,
    timings: dict[str, float],
    started: float,
    inputs: tuple[sitk.Image, sitk.Image],
) -> None:
    """Write every requested output in one transaction (all appear, or none); ``inputs``: the MRI and PET read."""
    from medfuse import io
    from medfuse.registration import write_transform

    picture = None
    if "preview" in targets:
        from medfuse.preview import render_preview, write_png

        with _timed(timings, "preview"), stage("Rendering the preview"):
            shown = result.overlay if result.overlay is not None else result.fused
            picture = render_preview(shown, mode="mosaic", focus=result.pet_on_mri)
    qc_page = _qc_page(result, targets, inputs, picture, timings) if "qc" in targets else None
    result.report["outputs"] = {kind: str(path) for kind, path in targets.items()}
    write_started = time.perf_counter()
    jobs: list[tuple[Path, Callable[[Path], object]]] = []
    with stage("Writing the outputs"), output_transaction(overwrite=options.overwrite) as transaction:
        if options.output_format == OutputFormat.DICOM:
            from medfuse.dicom import write_fused_dicom

            reference = (result.mri_info or {}).get("dicom")
            write_fused_dicom(
                targets,
                result.fused,
                result.overlay,
                reference=reference,
                pet=(result.pet_info or {}).get("dicom"),
                method=options.method,
                transaction=transaction,
            )
        else:
            jobs.append((targets["fused"], lambda path: io.write_volume(result.fused, path)))
            if "overlay" in targets and result.overlay is not None:
                overlay = result.overlay
                jobs.append((targets["overlay"], lambda path: io.write_volume(overlay, path)))
        if picture is not None:
            jobs.append((targets["preview"], lambda path: write_png(picture, path)))
        if "transform" in targets:
            jobs.append((targets["transform"], lambda path: write_transform(result.transform, path)))
        if "pet" in targets:
            jobs.append((targets["pet"], lambda path: io.write_volume(result.pet_on_mri, path)))
        transaction.write_parallel(jobs)  # the volumes' compression dominates: one thread each
        timings["write"] = round(time.perf_counter() - write_started, 4)
        timings["total"] = round(time.perf_counter() - started, 4)
        if qc_page is not None:  # last but the report: it shows the timings
            html = qc_page.html(result.report)
            transaction.write(targets["qc"], lambda path: path.write_text(html, encoding="utf-8"))
        if "report" in targets:
            text = json.dumps(result.report, indent=2, default=str) + "\n"
            transaction.write(targets["report"], lambda path: path.write_text(text, encoding="utf-8"))


def _qc_page(
    result: FusionResult,
    targets: dict[str, Path],
    inputs: tuple[sitk.Image, sitk.Image],
    mosaic: np.ndarray | None,
    timings: dict[str, float],
) -> CasePage:
    """The QC page's pictures and viewer volumes (its HTML is made last, when the timings are known)."""
    from medfuse.qc import CaseVolumes, case_title, prepare_case_page

    with _timed(timings, "qc"), stage("Drawing the QC report"):
        volumes = CaseVolumes(
            inputs[0], inputs[1], result.pet_on_mri, result.fused, result.overlay, result.transform, mosaic=mosaic
        )
        return prepare_case_page(volumes, result.report, case_title(targets["fused"]))


def _summarise(result: FusionResult, mri: Path, pet: Path, targets: dict[str, Path], seconds: float) -> None:
    """The summary line at the end of a run, and the line of the PET hotspot readout."""
    from medfuse.hotspots import summary_line

    fusion = result.report["fusion"]
    registration = result.report["registration"]
    how = registration["source"]
    if registration.get("metric_value") is not None:
        how += (
            f" (the PET moved {registration['moved_mm']:.1f} mm from its header pose, "
            f"confidence {registration['confidence']['level']})"
        )
    extras = [kind for kind in ("overlay", "preview", "report", "transform", "pet", "qc") if kind in targets]
    info(
        f"Fused {mri} + {pet} -> {targets['fused']}{' (+ ' + ', '.join(extras) + ')' if extras else ''} "
        f"in {seconds:.1f} s: {fusion['slices_fused']} slices by {fusion['method']} on {fusion['device']}; "
        f"registration: {how}."
    )
    if result.report["hotspots"] is not None:
        info(summary_line(result.report["hotspots"]))
