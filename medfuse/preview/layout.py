"""Display order of a volume: its axes matched to the patient's (LPS), and the orientation letters of each view.

Nothing is resampled here: axes are swapped and flipped so that display axes (z, y, x) run toward
superior, posterior and left; the radiological or neurological convention decides which way a
view is mirrored.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from medfuse.errors import InvalidInputError

if TYPE_CHECKING:
    import SimpleITK as sitk

Convention = Literal["radiological", "neurological"]
CONVENTIONS: tuple[str, ...] = ("radiological", "neurological")
# Letters at the (negative, positive) ends of the LPS axes x, y, z.
_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))


@dataclass
class Layout:
    """An image in display order: axes (z, y, x) run toward superior, posterior and left (LPS).

    For a 2-D image ``data`` has one slice and ``vectors`` is None (no patient orientation).
    """

    data: np.ndarray  # (Z, Y, X) float32, or (Z, Y, X, 3) for colour images
    spacing: tuple[float, float, float]  # mm along z, y, x
    vectors: np.ndarray | None  # rows: LPS direction of increasing z, y, x
    perm: tuple[int, int, int]  # image axis shown along LPS x, y, z
    flips: tuple[bool, bool, bool]  # whether that image axis runs toward R, A or I
    size: tuple[int, ...]  # the image's own size (i, j, k)

    @property
    def is_colour(self) -> bool:
        return self.data.ndim == 4

    def file_slice(self, z: int) -> int:
        """The file's own index of display slice ``z`` (the numbers a user passes to ``--slice``)."""
        if self.vectors is None:
            return z
        return self.size[self.perm[2]] - 1 - z if self.flips[2] else z

    def display_slice(self, index: int) -> int:
        """The display slice of the file's own axial index ``index``."""
        return self.file_slice(index)  # the mapping is its own inverse

    def display_index(self, index: tuple[int, int, int]) -> tuple[int, int, int]:
        """Display (z, y, x) of an image index (i, j, k)."""
        canonical = [
            self.size[self.perm[p]] - 1 - index[self.perm[p]] if self.flips[p] else index[self.perm[p]]
            for p in range(3)
        ]
        return canonical[2], canonical[1], canonical[0]


def _axis_assignment(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For each LPS axis, the image axis closest to it (best permutation) and whether it runs backwards."""
    perm = max(
        itertools.permutations(range(3)),
        key=lambda candidate: sum(abs(direction[p, candidate[p]]) for p in range(3)),
    )
    flips = tuple(bool(direction[p, perm[p]] < 0) for p in range(3))
    return perm, flips  # type: ignore[return-value]


def display_axes(image: sitk.Image) -> tuple[tuple[int, int, int], tuple[bool, bool, bool], np.ndarray]:
    """Axis assignment of a 3-D image and the LPS direction vectors of the display axes z, y, x."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    perm, flips = _axis_assignment(direction)
    vectors = np.stack([direction[:, perm[p]] * (-1.0 if flips[p] else 1.0) for p in (2, 1, 0)])
    return perm, flips, vectors


def layout_of(image: sitk.Image, what: str) -> Layout:
    """Reorder ``image``'s voxels into display order (no resampling, only axis swaps and flips)."""
    import SimpleITK as sitk

    dimension = image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    if dimension not in (2, 3):
        raise InvalidInputError(
            f"{what} is {dimension}-D; previews show 2-D images and 3-D volumes, so extract one frame first."
        )
    if components not in (1, 3, 4):
        raise InvalidInputError(
            f"{what} has {components} values per voxel; previews show grey (1) or colour (3 or 4) images."
        )
    array = sitk.GetArrayFromImage(image)
    if components == 4:
        array = array[..., :3]
    if components == 1:
        array = np.nan_to_num(array.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    size = tuple(image.GetSize())
    if dimension == 2:
        spacing_x, spacing_y = image.GetSpacing()
        return Layout(array[None], (1.0, spacing_y, spacing_x), None, (0, 1, 2), (False, False, False), size)
    perm, flips, vectors = display_axes(image)
    # numpy axis of image axis c is 2 - c; display axes are (z, y, x) = LPS (2, 1, 0).
    order = [2 - perm[p] for p in (2, 1, 0)] + ([3] if array.ndim == 4 else [])
    data = np.transpose(array, order)
    for p in range(3):
        if flips[p]:
            data = np.flip(data, axis=2 - p)
    spacing = tuple(float(image.GetSpacing()[perm[p]]) for p in (2, 1, 0))
    return Layout(data, spacing, vectors, perm, flips, size)  # type: ignore[arg-type]


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    )


def onto_grid(image: sitk.Image, reference: sitk.Image, what: str) -> sitk.Image:
    """``image`` (scalar) on ``reference``'s grid, by identity resampling when the grids differ."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidInputError(f"{what} must be a grey (single-value) image to be drawn over the volume.")
    if image.GetDimension() != reference.GetDimension():
        raise InvalidInputError(
            f"{what} is {image.GetDimension()}-D but the volume is {reference.GetDimension()}-D; give both in 2-D "
            "or both in 3-D."
        )
    image = sitk.Cast(image, sitk.sitkFloat32)
    if same_grid(image, reference):
        return image
    identity = sitk.Transform(reference.GetDimension(), sitk.sitkIdentity)
    return sitk.Resample(image, reference, identity, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def _letter(vector: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(vector)))
    return _AXIS_LETTERS[axis][1 if vector[axis] > 0 else 0]


def view_letters(vectors: np.ndarray, view: str, mirror: bool) -> tuple[str, str, str, str]:
    """Orientation letters (top, bottom, left, right) of a view, from the display axes' LPS vectors."""
    vz, vy, vx = vectors
    down, right = {"axial": (vy, vx), "coronal": (-vz, vx), "sagittal": (-vz, vy)}[view]
    right = -right if mirror else right
    return _letter(-down), _letter(down), _letter(-right), _letter(right)


def orientation_letters(
    volume: sitk.Image, view: str = "axial", convention: Convention = "radiological"
) -> tuple[str, str, str, str]:
    """The letters (top, bottom, left, right) a preview writes at the edges of an axial, coronal or sagittal view."""
    if volume.GetDimension() != 3:
        raise InvalidInputError("orientation letters need a 3-D volume; a 2-D image has no patient orientation.")
    return view_letters(display_axes(volume)[2], view, mirrors(view, convention))


def mirrors(view: str, convention: str) -> bool:
    """Whether a view is mirrored left-right from the radiological layout (neurological, except sagittal)."""
    return convention == "neurological" and view != "sagittal"
