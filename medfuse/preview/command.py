"""The preview command: files in (a volume and optionally a PET), PNG out, written atomically.

Files are read through :mod:`medfuse.io` (checked like ``fuse`` checks them, but not refused for
being 2-D, colour or constant: a preview shows what is there); PNG/JPEG pictures are read as 2-D images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medfuse.atomic import check_output_path, full_suffix, output_transaction
from medfuse.console import warn
from medfuse.errors import InvalidInputError, UnreadableInputError, UsageError
from medfuse.preview.draw import write_png
from medfuse.preview.layout import Convention
from medfuse.preview.render import render_preview

if TYPE_CHECKING:
    import SimpleITK as sitk

    from medfuse.dicom import Role

_UNIT_NAMES = {"BQML": "Bq/mL", "GML": "SUV", "SUVBW": "SUV", "SUV": "SUV", "CNTS": "counts"}


def unit_label(units: str | None) -> str | None:
    """A readable label for DICOM Units (BQML -> Bq/mL, GML or SUVbw -> SUV); others unchanged."""
    if not units:
        return None
    return _UNIT_NAMES.get(units.upper(), units)


def _read(path: Path, role: Role | None, suv: bool) -> tuple[sitk.Image, str | None]:
    """Read a volume file or DICOM folder through :func:`medfuse.io.read_input`, or a 2-D picture; with its units.

    ``role`` None lets a DICOM folder decide: its MR series when it has one, else its PET/SPECT.
    """
    import SimpleITK as sitk

    from medfuse import io

    if suv and path.is_file():
        raise UsageError(f"--suv needs a DICOM PET folder, but {path} is a file; drop --suv.")
    if path.is_file() and full_suffix(path) not in io.READ_EXTENSIONS:  # PNG, JPEG...
        try:
            return sitk.ReadImage(str(path)), None
        except RuntimeError as exc:
            raise UnreadableInputError(
                f"{path}: cannot be read as an image ({io.itk_reason(exc)}); "
                "give a NIfTI, NRRD, MHA, PNG file or DICOM folder."
            ) from exc
    image, info = io.read_input(path, role, suv=suv)
    if info.get("nan_read_as_zero"):
        warn(f"{path}: {info['nan_read_as_zero']:,} NaN or infinite voxels were shown as 0.")
    if image.GetDimension() not in (2, 3):
        raise InvalidInputError(
            f"{path}: the image is {image.GetDimension()}-D; previews show 2-D images and 3-D volumes, "
            "so extract one frame first."
        )
    if "dicom" not in info:
        return image, None
    return image, ("SUV" if suv else unit_label(info["dicom"].get("units")))


def preview_file(
    volume: str | Path,
    output: str | Path,
    *,
    mode: str = "mosaic",
    pet: str | Path | None = None,
    slice_index: int | None = None,
    at: tuple[float, float, float] | None = None,
    colorbar: bool = False,
    units: str | None = None,
    colormap: str = "hot",
    suv: bool = False,
    convention: Convention = "radiological",
    overwrite: bool = False,
) -> Path:
    """Read ``volume`` (and ``pet``), render the preview and write it atomically as PNG; return the path.

    ``suv`` reads a DICOM PET in SUV: the ``pet`` folder, or ``volume`` itself when no ``pet`` is given.
    ``units`` overrides the colour-bar units found in DICOM (SUV, Bq/mL).
    """
    volume, output = Path(volume), Path(output)
    pet = Path(pet) if pet is not None else None
    output = check_output_path(
        output, allowed=(".png",), inputs=[p for p in (volume, pet) if p], overwrite=overwrite, option="-o"
    )
    image, found_units = _read(volume, "PET" if suv and pet is None else None, suv and pet is None)
    pet_image, pet_units = _read(pet, "PET", suv) if pet is not None else (None, None)
    picture = render_preview(
        image,
        mode,
        pet=pet_image,
        focus=pet_image,
        slice_index=slice_index,
        at=at,
        colorbar=colorbar,
        units=units or (pet_units if pet is not None else found_units),
        colormap=colormap,
        convention=convention,
    )
    with output_transaction(overwrite=overwrite) as transaction:
        transaction.write(output, lambda path: write_png(picture, path))
    return output
