"""2-D fusion of image files (PNG, JPEG, TIFF) and of folders of them, the layout fusion benchmarks use.

``medfuse fuse mri.png pet.png -o fused.png`` and ``medfuse fuse MRI_DIR PET_DIR -o OUT_DIR`` land here.
The MRI must be grey (an RGB file with R = G = B counts as grey); the PET/SPECT may be grey or a
pseudo-colour RGB. A colour PET goes through YCbCr: its luminance Y is fused with the MRI and RGB is
rebuilt with the PET's own Cb/Cr, so the output keeps the PET's colours; a grey PET gives a grey output.
The bundled network for each (:data:`medfuse.inference.BUNDLED`): a colour PET's luminance goes to the one
trained on pseudo-colour luminance, a grey PET (brightness rising with uptake) to the volumes' one.
Outputs are 8-bit, of the input size, in the format their extension names, written atomically.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from medfuse import colour
from medfuse.atomic import IMAGE_EXTENSIONS, check_output_path, output_transaction
from medfuse.console import make_progress, warn
from medfuse.dicom.files import looks_like_dicom, read_head
from medfuse.errors import InvalidInputError, UnreadableInputError, UsageError
from medfuse.options import FuseOptions

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from medfuse.inference import Fuser, InputKind

FileKind = Literal["image", "dicom"]


_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"II+\x00",  # BigTIFF, little-endian
    b"MM\x00+",  # BigTIFF, big-endian
)
_JPEG_QUALITY = 95
# Options that steer the volume pipeline only, with the flag that sets each.
_VOLUME_ONLY_FLAGS = {
    "register": "--register",
    "transform": "--transform",
    "save_transform": "--save-transform",
    "save_pet": "--save-pet",
    "frame": "--frame",
    "pet_window": "--pet-window",
    "pet_blend": "--pet-blend",
    "colormap": "--colormap",
    "overlay": "--no-overlay",
    "preview": "--preview",
    "report": "--report",
    "qc": "--qc",
    "output_format": "--format",
    "suv": "--suv",
    "mri_series": "--mri-series",
    "pet_series": "--pet-series",
    "allow_different_patients": "--allow-different-patients",
}


# ---- recognising 2-D inputs ---------------------------------------------------------------------------------
def sniff(path: Path) -> FileKind | None:
    """``"image"`` (PNG/JPEG/TIFF) or ``"dicom"`` (:func:`medfuse.dicom.looks_like_dicom`) from the first bytes
    of ``path``; ``None`` for anything else."""
    try:
        head = read_head(path)
    except OSError:
        return None
    if head.startswith(_IMAGE_MAGIC):
        return "image"
    return "dicom" if looks_like_dicom(path, head) else None


def _folder_files(folder: Path) -> dict[FileKind, list[Path]]:
    """The visible files directly in ``folder``, sorted into images and DICOM by content.

    A file named like an image that is none (empty, truncated to nothing, text) is skipped with a warning.
    """
    kinds: dict[FileKind, list[Path]] = {"image": [], "dicom": []}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            kind = sniff(path)
            if kind is not None:
                kinds[kind].append(path)
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                warn(f"{path}: is named like an image but is not a PNG, JPEG or TIFF file; it was skipped.")
    return kinds


def list_image_files(folder: str | Path) -> list[Path]:
    """The PNG/JPEG/TIFF files directly in ``folder`` (by content), sorted; a mix with DICOM is refused."""
    folder = Path(folder)
    kinds = _folder_files(folder)
    if kinds["image"] and kinds["dicom"]:
        raise InvalidInputError(
            f"{folder}: holds both 2-D images ({kinds['image'][0].name}) and DICOM files "
            f"({kinds['dicom'][0].name}); keep one kind per folder."
        )
    return kinds["image"]


def is_2d_input(path: str | Path) -> bool:
    """True for a PNG/JPEG/TIFF file (by content, or by extension when unreadable) or a folder of them."""
    path = Path(path)
    if path.is_dir():
        return bool(list_image_files(path))
    return sniff(path) == "image" or path.suffix.lower() in IMAGE_EXTENSIONS


# ---- reading and writing ------------------------------------------------------------------------------------
def read_image(path: str | Path) -> np.ndarray:
    """Read a 2-D image as float32 in [0, 1]: (H, W) for grey, (H, W, 3) for colour; alpha is dropped.

    8-bit images are divided by 255. Images with more bits (16-bit PNG/TIFF, float TIFF) are divided by
    their own maximum, so that 12-bit data stored in 16 bits spans the full range; negatives become 0.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UnreadableInputError(f"{path}: the image does not exist; check the path.")
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise InvalidInputError(
                    f"{path}: holds {image.n_frames} pages; save one 2-D slice per file (or fuse a volume)."
                )
            array = _pixels(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableInputError(f"{path}: cannot be decoded as an image ({reason}); check the file.") from exc
    if array.ndim not in (2, 3):
        raise InvalidInputError(f"{path}: is not a 2-D image (shape {array.shape}); give a grey or RGB image.")
    return array


def _pixels(image: PILImage) -> np.ndarray:
    """Pixel values of an open PIL image as float32 [0, 1], grey (H, W) or RGB (H, W, 3)."""
    if image.mode in ("RGB", "L"):
        return np.asarray(image, dtype=np.float32) / 255.0
    if image.mode in ("1", "LA", "La") or (image.mode == "P" and _palette_is_grey(image)):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if image.mode in ("RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    values = np.asarray(image).astype(np.float32)
    if values.ndim == 3:
        values = values[..., :3]
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    values = np.maximum(values, 0.0)
    peak = float(values.max(initial=0.0))
    return values / peak if peak > 0 else values


def _palette_is_grey(image: PILImage) -> bool:
    """Whether a palette image uses grey colours only (then it is read as grey)."""
    return colour.is_grey(np.asarray(image.convert("RGB")))


def write_image(path: Path, image: np.ndarray) -> None:
    """Write a float [0, 1] grey (H, W) or RGB (H, W, 3) array as 8 bits, in the format of ``path``'s extension."""
    from PIL import Image

    pixels = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    picture = Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        picture.save(path, quality=_JPEG_QUALITY)
    else:
        picture.save(path)


# ---- fusion of one pair -------------------------------------------------------------------------------------
@dataclass
class _Pair:
    """An MRI/PET pair ready for the fuser: MRI grey, PET split into Y (and Cb/Cr when it is colour)."""

    mri: np.ndarray
    pet_y: np.ndarray
    pet_chroma: tuple[np.ndarray, np.ndarray] | None

    @classmethod
    def split(cls, mri: np.ndarray, pet: np.ndarray) -> _Pair:
        """Grey MRI (H, W) and grey or RGB PET of the same size, float [0, 1]."""
        mri = np.asarray(mri, dtype=np.float32)
        pet = np.asarray(pet, dtype=np.float32)
        if pet.ndim == 2 or colour.is_grey(pet):
            return cls(mri, pet if pet.ndim == 2 else pet.mean(axis=-1), None)
        y, cb, cr = colour.rgb_to_ycbcr(pet)
        return cls(mri, np.clip(y, 0.0, 1.0), (cb, cr))

    @property
    def kind(self) -> InputKind:
        """The PET input this pair gives the network: a pseudo-colour luminance, or grey (uptake)."""
        return "uptake" if self.pet_chroma is None else "colour"

    def compose(self, fused_y: np.ndarray) -> np.ndarray:
        """The output image: fused Y as grey, or RGB rebuilt from fused Y and the PET's Cb/Cr."""
        return fused_y if self.pet_chroma is None else colour.ycbcr_to_rgb(fused_y, *self.pet_chroma)


def _load_pair(mri_path: Path, pet_path: Path) -> _Pair:
    """Read and check one pair: a grey MRI and a PET of its size."""
    mri = read_image(mri_path)
    pet = read_image(pet_path)
    if mri.ndim == 3:
        if not colour.is_grey(mri):
            raise InvalidInputError(
                f"{mri_path}: the MRI is a colour image (R, G and B differ); give a grey MRI "
                "(were the MRI and PET swapped?)."
            )
        mri = mri.mean(axis=-1)
    if mri.shape != pet.shape[:2]:
        raise InvalidInputError(
            f"{pet_path}: its size {pet.shape[1]}x{pet.shape[0]} differs from the MRI {mri_path.name} "
            f"({mri.shape[1]}x{mri.shape[0]}); resample the PET to the MRI first."
        )
    # A blank slice is common in slice data sets (above the head, empty PET planes): fused, not refused.
    for path, image, role, other in ((mri_path, mri, "MRI", "PET"), (pet_path, pet, "PET", "MRI")):
        if image.min() == image.max():
            warn(
                f"{path}: the {role} image is blank (all its pixels are equal); the fused image shows the {other} only."
            )
    return _Pair.split(mri, pet)


def fuse_arrays(mri: np.ndarray, pet: np.ndarray, fuser: Fuser) -> np.ndarray:
    """Fuse a grey MRI (H, W) with a grey (H, W) or RGB (H, W, 3) PET, float [0, 1], as the CLI does."""
    if np.shape(mri) != np.shape(pet)[:2] or np.ndim(mri) != 2:
        raise ValueError(f"expected a grey MRI (H, W) and a PET of its size, got {np.shape(mri)} and {np.shape(pet)}")
    pair = _Pair.split(mri, pet)
    return pair.compose(fuser.fuse(pair.mri, pair.pet_y))


def _fusers(options: FuseOptions, fuser: Fuser | None) -> Callable[[InputKind], Fuser]:
    """The fuser for each kind of PET input: ``fuser`` for every kind when given, else the one ``options``
    name for that kind, loaded once on first use (a ``--weights`` file once for every kind)."""
    if fuser is not None:
        given = fuser
        return lambda kind: given
    from medfuse.inference import load_fuser

    loaded: dict[InputKind | None, Fuser] = {}

    def for_kind(kind: InputKind) -> Fuser:
        key = kind if options.weights is None else None
        if key not in loaded:
            loaded[key] = load_fuser(options, kind)
        return loaded[key]

    return for_kind


def _warn_ignored_options(options: FuseOptions) -> None:
    defaults = FuseOptions()
    ignored = [flag for name, flag in _VOLUME_ONLY_FLAGS.items() if getattr(options, name) != getattr(defaults, name)]
    if ignored:
        verbs = "applies to volumes only and was" if len(ignored) == 1 else "apply to volumes only and were"
        warn(f"{', '.join(ignored)} {verbs} ignored for 2-D images.")


def fuse_image_files(
    mri: str | Path, pet: str | Path, output: str | Path, options: FuseOptions, fuser: Fuser | None = None
) -> Path:
    """Fuse one MRI image with one PET image into ``output`` (format from its extension); returns the path."""
    from medfuse.io import check_distinct_inputs

    mri, pet = Path(mri), Path(pet)
    output = check_output_path(output, allowed=IMAGE_EXTENSIONS, inputs=[mri, pet], overwrite=options.overwrite)
    check_distinct_inputs(mri, pet)
    pair = _load_pair(mri, pet)
    fused = pair.compose(_fusers(options, fuser)(pair.kind).fuse(pair.mri, pair.pet_y))
    with output_transaction(overwrite=options.overwrite) as transaction:
        transaction.write(output, lambda temp: write_image(temp, fused))
    return output


# ---- fusion of two folders ----------------------------------------------------------------------------------
def pair_folders(mri_dir: Path, pet_dir: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Pairs of image files with the same name in both folders, and the files without a partner."""
    mri_files = {path.name: path for path in list_image_files(mri_dir)}
    pet_files = {path.name: path for path in list_image_files(pet_dir)}
    names = sorted(mri_files.keys() & pet_files.keys())
    unpaired = [path for files in (mri_files, pet_files) for name, path in files.items() if name not in names]
    return [(mri_files[name], pet_files[name]) for name in names], unpaired


def _chunks(pairs: list[tuple[Path, Path]], size: int) -> Iterator[list[tuple[Path, Path]]]:
    for start in range(0, len(pairs), max(size, 1)):
        yield pairs[start : start + size]


def _fuse_batch(loaded: list[_Pair], fusers: Callable[[InputKind], Fuser]) -> list[np.ndarray]:
    """Fuse pairs, stacking those of equal size and PET kind into one (N, H, W) call; results in input order."""
    results: dict[int, np.ndarray] = {}
    groups: dict[tuple[InputKind, tuple[int, ...]], list[int]] = {}
    for index, pair in enumerate(loaded):
        groups.setdefault((pair.kind, pair.mri.shape), []).append(index)
    for (kind, _shape), indices in groups.items():
        mri = np.stack([loaded[i].mri for i in indices])
        pet = np.stack([loaded[i].pet_y for i in indices])
        for i, fused_y in zip(indices, fusers(kind).fuse(mri, pet), strict=True):
            results[i] = loaded[i].compose(fused_y)
    return [results[i] for i in range(len(loaded))]


def fuse_image_folders(
    mri_dir: str | Path, pet_dir: str | Path, out_dir: str | Path, options: FuseOptions, fuser: Fuser | None = None
) -> list[Path]:
    """Fuse every MRI/PET pair of same-named images into ``out_dir`` under that name; returns the outputs.

    The fuser (``fuser``, else the one ``options`` names for each PET kind) is loaded once and fed
    ``options.batch_size`` pairs at a time. Files without a partner are named in a warning. All outputs
    appear together when every pair is done, or none on failure.
    """
    mri_dir, pet_dir = Path(mri_dir), Path(pet_dir)
    out_dir = check_output_path(out_dir, inputs=[mri_dir, pet_dir], overwrite=options.overwrite, is_dir=True)
    pairs, unpaired = pair_folders(mri_dir, pet_dir)
    if not pairs:
        raise InvalidInputError(
            f"{mri_dir}: no image has a partner of the same name in {pet_dir}; name each MRI and PET pair alike."
        )
    if unpaired:
        shown = ", ".join(str(path) for path in unpaired[:5]) + (
            f" and {len(unpaired) - 5} more" if len(unpaired) > 5 else ""
        )
        warn(f"{len(unpaired)} images have no partner of the same name and were skipped: {shown}.")
    fusers = _fusers(options, fuser)
    outputs = []
    with output_transaction(overwrite=options.overwrite) as transaction, make_progress() as progress:
        task = progress.add_task("Fusing images", total=len(pairs))
        for chunk in _chunks(pairs, options.batch_size):
            loaded = [_load_pair(mri, pet) for mri, pet in chunk]
            for (mri, _pet), fused in zip(chunk, _fuse_batch(loaded, fusers), strict=True):
                outputs.append(transaction.write(out_dir / mri.name, functools.partial(write_image, image=fused)))
            progress.advance(task, len(chunk))
    return outputs


def fuse_2d(mri: str | Path, pet: str | Path, output: str | Path, options: FuseOptions) -> list[Path]:
    """The CLI's 2-D entry: two image files, or two folders of images; returns the written paths."""
    mri, pet = Path(mri), Path(pet)
    if not (is_2d_input(mri) and is_2d_input(pet)):
        volume, image = (mri, pet) if is_2d_input(pet) else (pet, mri)
        raise UsageError(
            f"{image} is a 2-D image (or folder of them) but {volume} is not; give two 2-D inputs or two volumes."
        )
    _warn_ignored_options(options)
    if mri.is_dir() and pet.is_dir():
        return fuse_image_folders(mri, pet, output, options)
    if mri.is_dir() or pet.is_dir():
        folder, single = (mri, pet) if mri.is_dir() else (pet, mri)
        raise UsageError(f"{folder} is a folder but {single} is a file; give two image files or two folders.")
    return [fuse_image_files(mri, pet, output, options)]
