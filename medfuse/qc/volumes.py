"""The QC grid and the viewer's volumes: the case's images on one coarse, patient-aligned grid.

Every QC picture and the interactive viewer work on one grid built from the MRI's: its axes turned
to the patient axes closest to them (LPS, as :func:`SimpleITK.DICOMOrient` does), isotropic voxels as
fine as the MRI's finest spacing but no more than :data:`MAX_VOXELS` in all (so a 256³ MRI at 1 mm
becomes 144³ at 1.78 mm). Isotropic voxels give every view square pixels; the patient-aligned axes let
the viewer lay out axial, coronal and sagittal planes by slicing alone. The exact voxel-to-LPS matrix
goes to the viewer, so the millimetres it prints are those of the original images.

The viewer gets the volumes as gzip-compressed, base64-encoded byte planes (:func:`encode_array`,
decoded in the browser with ``DecompressionStream``): the base image as uint8 (windowed for display)
and the PET as uint16 on a linear scale (``value = offset + scale * q``), fine enough to print the
PET value under the crosshair to 1/4095 of its range (12 bits: finer steps only add noise bits that
cost compression time and page size).
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

#: Most voxels of the QC grid (144³, 3 M): a 256³ case's page stays near 5 MB and its QC well under 1 s.
MAX_VOXELS = 144**3
#: Most voxels of the grid the PET input is drawn from (its own box and axes).
PET_INPUT_VOXELS = 128**3
_PET_LEVELS = 4095
_GZIP_LEVEL = 1  # level 6 is 4x slower for 5 % less


@dataclass
class QcGrid:
    """The coarse, patient-aligned, isotropic grid and how it relates to the MRI's own grid."""

    reference: sitk.Image  # an image of the grid's geometry (its voxels are not used)
    spacing_mm: float
    downsampled: bool  # coarser than the MRI's finest spacing

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x) of an image on this grid."""
        size = self.reference.GetSize()
        return int(size[2]), int(size[1]), int(size[0])

    def index_to_lps(self) -> np.ndarray:
        """4×4 matrix taking a voxel index (i, j, k, 1) of the grid to its LPS point in mm."""
        return index_to_lps(self.reference)

    def resample(self, image: sitk.Image, transform: sitk.Transform | None = None) -> np.ndarray:
        """``image`` (scalar) on this grid as a float32 (z, y, x) array; linear, 0 outside the image."""
        import SimpleITK as sitk

        transform = transform if transform is not None else sitk.Transform()
        resampled = sitk.Resample(image, self.reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(resampled)

    def resample_planes(
        self, image: sitk.Image, point: tuple[int, int, int], transform: sitk.Transform | None = None
    ) -> np.ndarray:
        """Like :meth:`resample`, but only on the three planes through the voxel ``point`` (z, y, x); 0 elsewhere.

        Three thin resamples instead of a whole volume, for pictures that show those planes only.
        """
        import SimpleITK as sitk

        transform = transform if transform is not None else sitk.Transform()
        nx, ny, nz = self.reference.GetSize()
        z, y, x = point
        result = np.zeros(self.shape, dtype=np.float32)
        planes = (
            ((0, 0, z), (nx, ny, 1), np.s_[z]),
            ((0, y, 0), (nx, 1, nz), np.s_[:, y]),
            ((x, 0, 0), (1, ny, nz), np.s_[:, :, x]),
        )
        for corner, size, where in planes:
            thin = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
            thin.SetSpacing(self.reference.GetSpacing())
            thin.SetDirection(self.reference.GetDirection())
            thin.SetOrigin(self.reference.TransformIndexToPhysicalPoint(corner))
            plane = sitk.Resample(image, thin, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            result[where] = sitk.GetArrayViewFromImage(plane).reshape(result[where].shape)
        return result

    def resample_colour(self, image: sitk.Image) -> np.ndarray:
        """An RGB (uint8) image on this grid as a (z, y, x, 3) uint8 array, nearest neighbour, 0 outside.

        When the image's axes are this grid's up to order and sign (any MRI that is not oblique),
        the nearest voxel along each axis is picked with numpy, many times faster than SimpleITK's
        resampling of a vector image; an oblique image is resampled by SimpleITK.
        """
        import SimpleITK as sitk

        source = sitk.GetArrayViewFromImage(image)
        to_source = np.linalg.inv(index_to_lps(image)) @ self.index_to_lps()  # grid index -> image index
        linear = to_source[:3, :3]
        nonzero = np.abs(linear) > 1e-6
        if not (np.all(nonzero.sum(axis=0) == 1) and np.all(nonzero.sum(axis=1) == 1)):
            resampled = sitk.Resample(image, self.reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
            return sitk.GetArrayFromImage(resampled).astype(np.uint8, copy=False)
        grid_size = self.reference.GetSize()
        picked = source
        valid: list[np.ndarray] = [np.empty(0)] * 3
        grid_axes = [0, 0, 0]
        for axis in (2, 1, 0):  # image axis k, j, i (numpy axis 2 - axis): slowest first, cheapest copies
            grid_axis = int(np.argmax(np.abs(linear[axis])))
            position = np.rint(linear[axis, grid_axis] * np.arange(grid_size[grid_axis]) + to_source[axis, 3])
            valid[axis] = (position >= 0) & (position < image.GetSize()[axis])
            picked = np.take(picked, np.clip(position, 0, image.GetSize()[axis] - 1).astype(np.intp), axis=2 - axis)
            grid_axes[axis] = grid_axis
        # numpy axis 2 - axis of ``picked`` runs along grid axis grid_axes[axis]; the result wants grid axis
        # g at numpy axis 2 - g
        order = [2 - grid_axes.index(2 - position) for position in range(3)]
        result = np.ascontiguousarray(np.transpose(picked, [*order, 3]), dtype=np.uint8)
        mask = np.ones(result.shape[:3], dtype=bool)
        for axis, inside in enumerate(valid):
            shape = [1, 1, 1]
            shape[2 - grid_axes[axis]] = inside.size
            mask &= inside.reshape(shape)
        result[~mask] = 0
        return result

    def image(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image of ``array`` ((z, y, x) or (z, y, x, 3)) with this grid's geometry."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
        image.CopyInformation(self.reference)
        return image


def index_to_lps(image: sitk.Image) -> np.ndarray:
    """4×4 matrix taking an image's voxel index (i, j, k, 1) to its LPS point in mm."""
    matrix = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    matrix[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def patient_aligned_direction(direction: tuple[float, ...]) -> tuple[float, ...]:
    """``direction`` with its axes reordered and flipped to point closest to L, P and S."""
    import SimpleITK as sitk

    probe = sitk.Image([2, 2, 2], sitk.sitkUInt8)
    probe.SetDirection(direction)
    return tuple(sitk.DICOMOrient(probe, "LPS").GetDirection())


def qc_grid(mri: sitk.Image, max_voxels: int = MAX_VOXELS) -> QcGrid:
    """The QC grid of an MRI: patient-aligned axes, isotropic voxels, at most ``max_voxels`` voxels.

    The grid covers the MRI's whole box (all voxel corners) and is centred on it; for a patient-aligned
    MRI of isotropic voxels that needs no downsampling, its voxel centres are the MRI's own.
    """
    import SimpleITK as sitk

    direction = np.asarray(patient_aligned_direction(mri.GetDirection()), dtype=np.float64).reshape(3, 3)
    size = np.asarray(mri.GetSize(), dtype=np.float64)
    corners = np.array(
        [[a, b, c] for a in (-0.5, size[0] - 0.5) for b in (-0.5, size[1] - 0.5) for c in (-0.5, size[2] - 0.5)]
    )
    points = np.array(
        [mri.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in corner)) for corner in corners]
    )
    along = points @ direction  # coordinates along the new axes
    low, high = along.min(axis=0), along.max(axis=0)
    extent = high - low
    finest = float(min(mri.GetSpacing()))
    spacing = max(finest, float(np.prod(extent) / max_voxels) ** (1.0 / 3.0))
    counts = np.maximum(1, np.ceil(extent / spacing - 1e-6)).astype(int)
    centre = (low + high) / 2.0
    first = centre - (counts - 1) * spacing / 2.0
    origin = direction @ first
    reference = sitk.Image([int(n) for n in counts], sitk.sitkUInt8)
    reference.SetSpacing((spacing,) * 3)
    reference.SetDirection(tuple(direction.ravel()))
    reference.SetOrigin(tuple(float(v) for v in origin))
    return QcGrid(reference, spacing, downsampled=spacing > finest * (1 + 1e-6))


def encode_array(array: np.ndarray) -> str:
    """gzip + base64 of an integer array's bytes as byte planes: every voxel's lowest byte, then the next...

    (C order). Byte planes compress better than interleaved bytes (a PET's high bytes are smooth, its
    low bytes noise); for uint8 they are the plain bytes. The viewer puts them back together.
    """
    planes = np.ascontiguousarray(array).reshape(-1).astype(array.dtype.newbyteorder("<"))
    data = planes.view(np.uint8).reshape(-1, array.dtype.itemsize).T.tobytes()
    try:
        from isal.igzip import compress  # 5x faster than zlib at level 1, same size within 1 %
    except ImportError:  # a platform without ISA-L wheels
        from gzip import compress  # type: ignore[assignment]
    return base64.b64encode(compress(data, _GZIP_LEVEL, mtime=0)).decode("ascii")


def decode_array(text: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`encode_array` (for tests and tools that read a page's volumes back)."""
    kind = np.dtype(dtype).newbyteorder("<")
    planes = np.frombuffer(gzip.decompress(base64.b64decode(text)), dtype=np.uint8).reshape(kind.itemsize, -1)
    return np.ascontiguousarray(planes.T).view(kind).reshape(shape)


def to_uint8(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Values windowed to 0..255 (uint8)."""
    low, high = window
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip(np.round((values - low) * scale), 0, 255).astype(np.uint8)


def quantise_pet(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """PET values as 12-bit levels (uint16) and the (offset, scale) giving them back: ``value ≈ offset + scale * q``."""
    low, high = float(values.min()), float(values.max())
    scale = (high - low) / _PET_LEVELS if high > low else 1.0
    quantised = np.clip(np.round((values - low) / scale), 0, _PET_LEVELS).astype(np.uint16)
    return quantised, low, scale


def viewer_payload(
    grid: QcGrid,
    base: np.ndarray,
    base_window: tuple[float, float],
    pet: np.ndarray | None,
    pet_window: tuple[float, float] | None,
    lut: np.ndarray,
    units: str,
    start: tuple[int, int, int],
    base_name: str,
) -> dict[str, Any]:
    """The JSON object the viewer script reads: grid, matrices, encoded volumes, colour map, start point."""
    payload: dict[str, Any] = {
        "shape": list(grid.shape),
        "spacing_mm": round(grid.spacing_mm, 6),
        "index_to_lps": grid.index_to_lps().round(6).tolist(),
        "lps_to_index": np.linalg.inv(grid.index_to_lps()).round(9).tolist(),
        "base": encode_array(to_uint8(base, base_window)),
        "base_name": base_name,
        "pet": None,
        "lut": encode_array(np.round(np.asarray(lut) * 255).astype(np.uint8)),
        "units": units,
        "start": [int(v) for v in start],  # (x, y, z) voxel
    }
    if pet is not None and pet_window is not None:
        quantised, offset, scale = quantise_pet(pet)
        payload.update(pet=encode_array(quantised), pet_offset=offset, pet_scale=scale, pet_window=list(pet_window))
    return payload
