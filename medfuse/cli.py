"""The ``medfuse`` command: a thin Typer layer over the Python API.

Each command parses its options, calls one API function and turns a :class:`MedfuseError` into one
sentence on stderr and its exit code (README, "Exit codes"). Heavy modules (torch, SimpleITK) are
imported inside the commands so that ``medfuse --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import signal
import sys
import traceback
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.text import Text

from medfuse import __version__
from medfuse.console import console, set_quiet, show_warning
from medfuse.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_PROCESSING, MedfuseError
from medfuse.options import DEFAULT_PET_BLEND, FuseOptions, Method, OutputFormat, RegisterMode

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="medfuse",
    help="Fuse a patient's MRI with their PET (or SPECT): register, resample, fuse, write.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_options = {"debug": False}


def _warning_printer() -> Callable[..., None]:
    """A ``warnings.showwarning`` hook that prints each message once per command: a folder listed for
    both roles (or by ``info`` and then read) must not repeat its warnings."""
    shown: set[str] = set()

    def print_warning(message: Any, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
        text = str(message)
        if text not in shown:
            shown.add(text)
            show_warning(text)

    return print_warning


def _fail(message: str, code: int) -> NoReturn:
    # A Text is printed as it is: brackets or backslashes in a path are no markup.
    console.print(Text.assemble(("medfuse: error:", "bold red"), " ", message), highlight=False)
    raise typer.Exit(code)


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Run a command body; expected errors become one sentence and their exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_printer()
            try:
                return command(*args, **kwargs)
            except MedfuseError as exc:
                if _options["debug"]:
                    traceback.print_exc(file=sys.stderr)
                _fail(exc.message, exc.exit_code)
            except KeyboardInterrupt:
                _fail("interrupted; no partial output was left behind.", EXIT_INTERRUPTED)
            except BrokenPipeError:  # the reader of stdout went away (`medfuse info ... | head`)
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(EXIT_BROKEN_PIPE) from None
            except typer.Exit:
                raise
            except Exception as exc:  # an unexpected failure still ends in one sentence
                if _options["debug"]:
                    traceback.print_exc(file=sys.stderr)
                detail = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
                _fail(f"unexpected internal error ({detail}); rerun with --debug for details.", EXIT_PROCESSING)

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medfuse {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, only warnings and errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """medfuse: MRI/PET fusion from the command line."""
    _options["debug"] = debug
    set_quiet(quiet)


OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for torch and SimpleITK.")]


def _fusion_options(
    *,
    method: Annotated[
        str, typer.Option("--method", help=f"{Method.choices()}: the trained network, or the classical baseline.")
    ] = Method.NET,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            help="Network weights file for every input (default: the bundled ones, one for volumes and grey PET "
            "images, one for pseudo-colour PET images).",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda or cuda:N (auto = CUDA when present).")
    ] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", min=1, help="CPU threads for torch and SimpleITK (batch: per case, default CPUs / workers)."
        ),
    ] = None,
    register: Annotated[
        str,
        typer.Option(
            "--register",
            help=f"PET to MRI registration: {RegisterMode.choices()}; auto = none when both are DICOM series with "
            "one FrameOfReferenceUID (already in one space), else rigid.",
        ),
    ] = RegisterMode.AUTO,
    frame: Annotated[str | None, typer.Option("--frame", help="For 4-D PET: frame index N or 'sum'.")] = None,
    pet_window: Annotated[
        tuple[float, float] | None,
        typer.Option("--pet-window", help="PET display window LOW HIGH in image units (default: percentiles)."),
    ] = None,
    pet_blend: Annotated[
        float,
        typer.Option(
            "--pet-blend",
            help="Share of the PET blended into the fused volume voxel by voxel, so every voxel brightens with its "
            "uptake (0: the network's output alone; 2-D images are never blended).",
        ),
    ] = DEFAULT_PET_BLEND,
    colormap: Annotated[str, typer.Option("--colormap", help="Colour map of the overlay.")] = "aanlib",
    no_overlay: Annotated[bool, typer.Option("--no-overlay", help="Do not write the colour overlay.")] = False,
    suv: Annotated[
        bool, typer.Option("--suv", help="Convert a DICOM PET to SUVbw (QIBA); --pet-window then takes SUV.")
    ] = False,
    allow_different_patients: Annotated[
        bool, typer.Option("--allow-different-patients", help="Fuse even if PatientID differs.")
    ] = False,
    overwrite: OverwriteOpt = False,
) -> FuseOptions:
    """The options ``fuse`` and ``batch`` share, declared once, as :class:`FuseOptions` (choices parsed)."""
    return FuseOptions(
        method=Method.parse(method),
        weights=weights,
        device=device,
        threads=threads,
        register=RegisterMode.parse(register),
        frame=frame,
        pet_window=pet_window,
        pet_blend=pet_blend,
        colormap=colormap,
        overlay=not no_overlay,
        overwrite=overwrite,
        suv=suv,
        allow_different_patients=allow_different_patients,
    )


def with_fusion_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the options of :func:`_fusion_options`; it receives them as one ``options`` argument.

    Typer reads a command's options from its signature and type hints, so the wrapper shows the
    command's own parameters followed by those of :func:`_fusion_options`. A new option both
    ``fuse`` and ``batch`` take is one parameter there (and its :class:`FuseOptions` field).
    """
    shared = inspect.signature(_fusion_options).parameters
    hints = typing.get_type_hints(_fusion_options, include_extras=True) | typing.get_type_hints(
        command, include_extras=True
    )
    own = [parameter for name, parameter in inspect.signature(command).parameters.items() if name != "options"]
    parameters = [parameter.replace(annotation=hints[parameter.name]) for parameter in [*own, *shared.values()]]

    @functools.wraps(command)
    def wrapper(**values: Any) -> None:
        # Typer parsed every value against the declarations of _fusion_options: forward them as given.
        options = _fusion_options(**{name: values.pop(name) for name in shared})
        command(options=options, **values)

    wrapper.__dict__["__signature__"] = inspect.Signature(parameters, return_annotation=None)
    wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters} | {"return": None}
    return wrapper


# ---- fuse: 2-D branch owned by fusion2d.py, 3-D branch by pipeline.py -------------------------------
@app.command()
@handle_errors
@with_fusion_options
def fuse(
    mri: Annotated[Path, typer.Argument(help="MRI: NIfTI/NRRD/MHA file, DICOM folder, 2-D image or image folder.")],
    pet: Annotated[Path, typer.Argument(help="PET or SPECT, same kinds as MRI.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file (or folder).")],
    options: FuseOptions,
    transform: Annotated[
        Path | None, typer.Option("--transform", help="Reuse this ITK transform (.tfm); skips registration.")
    ] = None,
    save_transform: Annotated[
        Path | None, typer.Option("--save-transform", help="Write the PET-to-MRI transform (.tfm).")
    ] = None,
    save_pet: Annotated[
        Path | None,
        typer.Option(
            "--save-pet",
            help="Write the registered PET on the MRI grid, float32 in its units (SUV with --suv), to this "
            "volume file (.nii.gz, .nrrd, .mha; also with --format dicom).",
        ),
    ] = None,
    preview: Annotated[Path | None, typer.Option("--preview", help="Write a PNG mosaic of axial slices.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write a JSON run report.")] = None,
    qc: Annotated[
        Path | None,
        typer.Option("--qc", help="Write a QC report: one self-contained HTML page with pictures and a viewer."),
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            help=f"{OutputFormat.choices()}: auto takes the extension of -o; dicom makes -o a folder of DICOM "
            "series on the MRI grid, DIR/fused and DIR/overlay.",
        ),
    ] = OutputFormat.AUTO,
    mri_series: Annotated[
        str | None,
        typer.Option("--mri-series", help="SeriesInstanceUID of the MRI in a DICOM folder (default: by modality)."),
    ] = None,
    pet_series: Annotated[
        str | None,
        typer.Option("--pet-series", help="SeriesInstanceUID of the PET in a DICOM folder (default: by modality)."),
    ] = None,
) -> None:
    """Fuse an MRI with a PET: volumes (with registration) or 2-D images / folders of them."""
    from medfuse import fusion2d

    options = dataclasses.replace(
        options,
        transform=transform,
        save_transform=save_transform,
        save_pet=save_pet,
        preview=preview,
        report=report,
        qc=qc,
        output_format=OutputFormat.parse(output_format),
        mri_series=mri_series,
        pet_series=pet_series,
    )
    if fusion2d.is_2d_input(mri) or fusion2d.is_2d_input(pet):
        from medfuse.console import info

        written = fusion2d.fuse_2d(mri, pet, output, options)
        info(
            f"Fused image written to {written[0]}" if len(written) == 1 else f"{len(written)} fused images in {output}"
        )
    else:
        from medfuse.pipeline import fuse_files

        fuse_files(mri, pet, output, options)


# ---- preview: owned by preview.py ----------------------------------------------------------------------
@app.command()
@handle_errors
def preview(
    volume: Annotated[Path, typer.Argument(help="Volume or 2-D image (NIfTI/NRRD/MHA/PNG file or DICOM folder).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")],
    mode: Annotated[str, typer.Option("--mode", help="mosaic, slice, triplanar or mip.")] = "mosaic",
    slice_index: Annotated[
        int | None, typer.Option("--slice", help="Axial slice index (the file's own index; slice/triplanar).")
    ] = None,
    at: Annotated[
        tuple[float, float, float] | None,
        typer.Option("--at", help="Point X Y Z in mm, LPS patient coordinates (slice/triplanar)."),
    ] = None,
    pet: Annotated[
        Path | None, typer.Option("--pet", help="PET drawn in colour over a grey volume (as placed, not registered).")
    ] = None,
    colorbar: Annotated[bool, typer.Option("--colorbar", help="Add a colour bar with values and units.")] = False,
    units: Annotated[str | None, typer.Option("--units", help="Colour-bar units (default: from DICOM).")] = None,
    colormap: Annotated[str, typer.Option("--colormap", help="Colour map of the PET overlay.")] = "hot",
    suv: Annotated[
        bool, typer.Option("--suv", help="Show a DICOM PET in SUV (the --pet folder, else VOLUME).")
    ] = False,
    neurological: Annotated[
        bool, typer.Option("--neurological", help="Patient's right on the right (default: radiological).")
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a PNG preview: a mosaic, one slice, three planes or projections, with an optional PET overlay."""
    from medfuse.console import info
    from medfuse.preview import preview_file

    written = preview_file(
        volume,
        output,
        mode=mode,
        pet=pet,
        slice_index=slice_index,
        at=at,
        colorbar=colorbar,
        units=units,
        colormap=colormap,
        suv=suv,
        convention="neurological" if neurological else "radiological",
        overwrite=overwrite,
    )
    info(f"Preview written to {written}")


# ---- batch: owned by batch.py --------------------------------------------------------------------------
@app.command()
@handle_errors
@with_fusion_options
def batch(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (one subfolder per case).")],
    options: FuseOptions,
    input_dir: Annotated[
        Path | None, typer.Argument(help="Folder with one subfolder per case (one MRI and one PET each).")
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option("--pairs", help="CSV with columns case, mri, pet (instead of INPUT_DIR).")
    ] = None,
    mri_glob: Annotated[
        list[str] | None, typer.Option("--mri-glob", help="MRI file/folder name pattern (repeatable; mri*, t1*).")
    ] = None,
    pet_glob: Annotated[
        list[str] | None, typer.Option("--pet-glob", help="PET file/folder name pattern (repeatable; pet*).")
    ] = None,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Skip cases whose outputs are all there (resume).")
    ] = False,
    workers: Annotated[
        str,
        typer.Option(
            "--workers",
            help="Cases fused in parallel processes: a number, or auto (from the CPUs, free memory and case size).",
        ),
    ] = "auto",
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Run on a Dask cluster: tcp://HOST:PORT of its scheduler.")
    ] = None,
    qc: Annotated[
        bool, typer.Option("--qc/--no-qc", help="Write each case's QC page (<case>/qc.html) and OUTPUT/index.html.")
    ] = True,
) -> None:
    """Fuse every case of a folder of studies (or of a pairs CSV); writes OUTPUT/<case>/ and OUTPUT/summary.csv."""
    from medfuse.batch import DEFAULT_MRI_GLOBS, DEFAULT_PET_GLOBS, print_summary, run_batch
    from medfuse.errors import ProcessingError

    result = run_batch(
        input_dir,
        output,
        options,
        pairs=pairs,
        mri_globs=mri_glob or DEFAULT_MRI_GLOBS,
        pet_globs=pet_glob or DEFAULT_PET_GLOBS,
        skip_existing=skip_existing,
        workers=workers,
        scheduler=scheduler,
        qc=qc,
    )
    print_summary(result)
    if result.failed:
        raise ProcessingError(f"{len(result.failed)} of {len(result.cases)} cases failed; see {result.summary}.")


# ---- report: owned by qc/ ----------------------------------------------------------------------------------
@app.command()
@handle_errors
def report(
    case: Annotated[Path, typer.Argument(help="A finished case: its folder (with report.json) or its report.json.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="HTML page to write (default: qc.html beside report.json).")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Rebuild a case's QC page from its outputs (and its inputs, when they still exist)."""
    from medfuse.console import info
    from medfuse.qc import rebuild_case_page

    info(f"QC page written to {rebuild_case_page(case, output, overwrite=overwrite)}")


# ---- train: owned by training.py -----------------------------------------------------------------------
@app.command()
@handle_errors
def train(
    data: Annotated[Path, typer.Option("--data", help="The Harvard data set (with PET-MRI/ and SPECT-MRI/).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Weights file to write (.safetensors); not with --cv.")
    ] = None,
    cv: Annotated[
        bool, typer.Option("--cv", help="Cross-validate the recipe (leave series out, 3 folds) instead of training.")
    ] = False,
    cv_json: Annotated[
        Path | None, typer.Option("--cv-json", help="With --cv: also write the folds' metrics to this JSON file.")
    ] = None,
    holdout: Annotated[
        list[str] | None, typer.Option("--holdout", help="Series never trained on, e.g. PET41 (repeatable).")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs (losses printed after each).")] = 20,
    steps_per_epoch: Annotated[int, typer.Option("--steps-per-epoch", min=1, help="Optimiser steps per epoch.")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Crops per optimiser step.")] = 8,
    crop: Annotated[int, typer.Option("--crop", min=16, help="Training crop size in pixels (multiple of 16).")] = 128,
    learning_rate: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate (cosine decay).")] = 2e-3,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (weights init, crops, augmentation).")] = 0,
    intensity_weight: Annotated[float, typer.Option("--intensity-weight", help="Weight of the intensity loss.")] = 1.0,
    gradient_weight: Annotated[float, typer.Option("--gradient-weight", help="Weight of the gradient loss.")] = 4.0,
    gradient_gain: Annotated[
        float, typer.Option("--gradient-gain", min=0.0, help="Factor on the gradient loss's target edges (1: as is).")
    ] = 1.05,
    ssim_weight: Annotated[float, typer.Option("--ssim-weight", help="Weight of the SSIM loss.")] = 1.0,
    ssim_range: Annotated[
        float, typer.Option("--ssim-range", min=1e-6, help="Data range L of the SSIM loss's constants.")
    ] = 0.0078,
    scd_weight: Annotated[float, typer.Option("--scd-weight", help="Weight of the complementarity (SCD) loss.")] = 0.25,
    qabf_weight: Annotated[
        float, typer.Option("--qabf-weight", min=0.0, help="Weight of the edge-transfer (Qabf) loss (0: off).")
    ] = 0.0,
    monotone_weight: Annotated[
        float, typer.Option("--monotone-weight", min=0.0, help="Weight of the monotonicity loss (0: off).")
    ] = 1.0,
    monotone_slope: Annotated[
        float,
        typer.Option(
            "--monotone-slope", min=0.0, help="Least rise of the output per rise of the PET (monotony, ordering)."
        ),
    ] = 0.1,
    order_weight: Annotated[
        float,
        typer.Option(
            "--order-weight", min=0.0, help="Weight of the ordering loss: hotter uptake brighter, same MRI (0: off)."
        ),
    ] = 1.0,
    uptake_share: Annotated[
        float, typer.Option("--uptake-share", help="Share of crops whose PET input is uptake (the volume input).")
    ] = 0.4,
    spect_share: Annotated[
        float, typer.Option("--spect-share", help="Share of crops taken from the SPECT-MRI pairs (the rest PET-MRI).")
    ] = 0.5,
    pet_map_share: Annotated[
        float,
        typer.Option("--pet-map-share", help="Share of colour SPECT crops recoloured with the PET map (T2 + PET map)."),
    ] = 0.5,
    plateau_share: Annotated[
        float, typer.Option("--plateau-share", help="Share of uptake crops given a uniformly hot lesion (a plateau).")
    ] = 0.3,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train the fusion network on the Harvard MRI/PET and MRI/SPECT slices (or cross-validate its recipe)."""
    from medfuse.console import info
    from medfuse.errors import UsageError
    from medfuse.training import TrainConfig, cross_validate, cross_validation_table
    from medfuse.training import train as run_training

    if cv == (output is not None):
        raise UsageError("give either --output FILE (train and write weights) or --cv (cross-validate), not both.")
    if cv_json is not None and not cv:
        raise UsageError("--cv-json needs --cv.")
    config = TrainConfig(
        data=data,
        output=output,
        holdout=tuple(holdout or ()),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        crop=crop,
        learning_rate=learning_rate,
        seed=seed,
        intensity_weight=intensity_weight,
        gradient_weight=gradient_weight,
        gradient_gain=gradient_gain,
        ssim_weight=ssim_weight,
        ssim_range=ssim_range,
        scd_weight=scd_weight,
        qabf_weight=qabf_weight,
        monotone_weight=monotone_weight,
        monotone_slope=monotone_slope,
        order_weight=order_weight,
        uptake_share=uptake_share,
        spect_share=spect_share,
        pet_map_share=pet_map_share,
        plateau_share=plateau_share,
        threads=threads,
        overwrite=overwrite,
    )
    if cv:
        from rich.console import Console

        result = cross_validate(config, json_path=cv_json)
        Console().print(cross_validation_table(result))
        info(f"cross-validation: {len(result.folds)} folds in {result.wall_seconds / 60:.1f} min")
        return
    trained = run_training(config)
    info(f"{trained.parameters} parameters, {trained.wall_seconds / 60:.1f} min; weights in {trained.output}")


# ---- evaluate: 2-D folders owned by metrics.py, volumes by volume_metrics.py ----------------------------
@app.command()
@handle_errors
def evaluate(
    fused: Annotated[Path, typer.Option("--fused", help="Folder of fused images, or a fused volume.")],
    mri: Annotated[Path, typer.Option("--mri", help="Folder of the MRI images (same file names), or the MRI volume.")],
    pet: Annotated[
        Path,
        typer.Option(
            "--pet", help="Folder of the PET/SPECT images, or the PET volume on the MRI grid (fuse --save-pet)."
        ),
    ],
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write per-image (per-slice) and mean metrics to this JSON file.")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Score fused images or a fused volume: EN, SD, SF, MI, SCD, VIF, Qabf, SSIM (CDDFuse conventions).

    Folders of 2-D images are scored image by image; volumes (NIfTI, NRRD, MHA or DICOM folders, all on
    one grid) slice by slice over the head, plus the uptake fidelity of the fused volume.
    """
    from rich.console import Console

    from medfuse.fusion2d import is_2d_input
    from medfuse.metrics import metrics_table

    console = Console()
    # 2-D images when the fused input is, or when the MRI is and the fused input is no volume file (an
    # empty or missing folder: the 2-D evaluation names it); the volume evaluation refuses 2-D sources.
    if is_2d_input(fused) or (is_2d_input(mri) and not fused.is_file()):
        from medfuse.metrics import run_evaluation

        evaluation = run_evaluation(fused, mri, pet, json_path=json_path, overwrite=overwrite)
        title = f"{len(evaluation.per_image)} pairs (colour images scored on their luminance)"
        console.print(metrics_table({fused.name or str(fused): evaluation.means}, title=title))
        return
    from medfuse.volume_metrics import fidelity_table, run_volume_evaluation

    result = run_volume_evaluation(fused, mri, pet, json_path=json_path, overwrite=overwrite)
    title = f"{len(result.per_slice)} axial slices of the head"
    console.print(metrics_table({fused.name or str(fused): result.means}, title=title))
    console.print(fidelity_table(result.fidelity))


# ---- info: owned by io.py ------------------------------------------------------------------------------
@app.command()
@handle_errors
def info(
    path: Annotated[Path, typer.Argument(help="A NIfTI/NRRD/MHA volume or a DICOM folder.")],
    series: Annotated[str | None, typer.Option("--series", help="SeriesInstanceUID to describe in a folder.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the description as JSON.")] = False,
) -> None:
    """Show a volume's size, spacing, origin, orientation, pixel type and value range (and DICOM series)."""
    import json

    from medfuse.io import describe, format_description

    described = describe(path, series_uid=series)
    typer.echo(json.dumps(described, indent=2) if as_json else format_description(described))


def main() -> None:
    """Console-script entry point.

    SIGTERM (a cluster's time limit, ``kill``) is handled like Ctrl-C: the outputs in progress are
    removed and the exit code is 130. Both are remembered (``console.note_interrupt``), so an
    interruption Python swallows still stops the run.
    """
    from medfuse.console import note_interrupt

    signal.signal(signal.SIGINT, note_interrupt)
    signal.signal(signal.SIGTERM, note_interrupt)
    sys.unraisablehook = _unraisable_but_interrupt
    app()


def _unraisable_but_interrupt(unraisable: Any) -> None:
    """Python's report of an exception it could not raise, except a lost Ctrl-C: that one is remembered
    and raised again by the run (``console.raise_if_interrupted``), so its traceback would only alarm."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


if __name__ == "__main__":  # pragma: no cover
    main()
