"""The QC report's pictures, drawn by :mod:`medfuse.preview` and embedded as data URIs.

* **Inputs**: each input's three planes on its own grid (the PET with a colour bar in its units).
* **Registration check**: the PET in the ``hot`` map with the MRI's edges drawn over it in cyan, in
  three planes through the centre of the MRI's head, once where the headers place the PET (one
  resample of the native PET onto the QC grid, no registration) and once after registration.
  Edges are 2-D Canny edges of the MRI in each plane, so they are thin lines that show at a glance
  whether the PET's outline follows the MRI's.
* **Fused result**: the mosaic and three planes of the overlay, and the colour bar of its PET window.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

    from medfuse.qc.volumes import QcGrid

EDGE_COLOUR = np.array([0.0, 0.9, 1.0], dtype=np.float32)  # cyan: absent from the hot map under it
REGISTRATION_COLORMAP = "hot"
#: Canny thresholds on the MRI plane windowed to [0, 1], and its smoothing (variance in mm²).
_CANNY_THRESHOLDS = (0.06, 0.15)
_CANNY_VARIANCE_MM2 = 2.0


def data_uri(picture: np.ndarray, image_format: str = "png") -> str:
    """An (H, W, 3) uint8 picture as a PNG (lossless; text stays sharp) or JPEG ``data:`` URI."""
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8), "RGB")
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG", compress_level=3)
    return f"data:image/{image_format};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def head_centre(values: np.ndarray, window: tuple[float, float]) -> tuple[int, int, int]:
    """The (z, y, x) index of the centre of mass of the voxels above a tenth of the window."""
    mask = values > window[0] + 0.1 * (window[1] - window[0])
    if not mask.any():
        return values.shape[0] // 2, values.shape[1] // 2, values.shape[2] // 2
    centre = []
    for axis in range(3):
        profile = mask.sum(axis=tuple(a for a in range(3) if a != axis), dtype=np.float64)
        centre.append(round(float(np.dot(profile, np.arange(profile.size)) / profile.sum())))
    return centre[0], centre[1], centre[2]


def _plane_edges(plane: np.ndarray, window: tuple[float, float], spacing: float) -> np.ndarray:
    """Canny edges (bool) of a 2-D plane windowed to [0, 1]."""
    import SimpleITK as sitk

    low, high = window
    scaled = np.clip((plane - low) / (high - low), 0.0, 1.0).astype(np.float32) if high > low else plane * 0
    image = sitk.GetImageFromArray(np.ascontiguousarray(scaled))
    image.SetSpacing((spacing, spacing))
    edges = sitk.CannyEdgeDetection(image, *_CANNY_THRESHOLDS, variance=[_CANNY_VARIANCE_MM2] * 2)
    return sitk.GetArrayViewFromImage(edges) > 0


def edge_planes(
    mri: np.ndarray, window: tuple[float, float], point: tuple[int, int, int], spacing: float
) -> np.ndarray:
    """A bool (z, y, x) volume holding the MRI's edges on the three planes through ``point`` only."""
    edges = np.zeros(mri.shape, dtype=bool)
    z, y, x = point
    edges[z] = _plane_edges(mri[z], window, spacing)
    edges[:, y] = _plane_edges(mri[:, y], window, spacing)
    edges[:, :, x] = _plane_edges(mri[:, :, x], window, spacing)
    return edges


def registration_picture(
    grid: QcGrid, pet: np.ndarray, pet_window: tuple[float, float], edges: np.ndarray, point: tuple[int, int, int]
) -> np.ndarray:
    """Three planes through ``point`` of the PET (hot map, on the QC grid) with the MRI's edges in cyan.

    Only the three planes are coloured (the rest of the volume stays black): that is all the picture shows.
    """
    from medfuse.colour import apply_colormap
    from medfuse.preview import render_preview

    low, high = pet_window
    rgb = np.zeros((*pet.shape, 3), dtype=np.uint8)
    z, y, x = point
    for plane in (np.s_[z], np.s_[:, y], np.s_[:, :, x]):
        colour = apply_colormap(np.clip((pet[plane] - low) / (high - low), 0.0, 1.0), REGISTRATION_COLORMAP)
        colour[edges[plane]] = EDGE_COLOUR
        rgb[plane] = np.round(colour * 255).astype(np.uint8)
    image = grid.image(rgb)
    at = image.TransformIndexToPhysicalPoint((x, y, z))
    return render_preview(image, "triplanar", at=(float(at[0]), float(at[1]), float(at[2])))


def input_picture(image: sitk.Image, units: str | None = None) -> np.ndarray:
    """An input's three planes on its own grid; with ``units``, a grey colour bar in those units."""
    from medfuse.preview import render_preview

    return render_preview(image, "triplanar", colorbar=units is not None, units=units)


def fused_mosaic(shown: sitk.Image, focus: sitk.Image | None) -> np.ndarray:
    """The mosaic of the fused overlay (or luminance) through ``focus``'s hot spots, as ``--preview`` draws it."""
    from medfuse.preview import render_preview

    return render_preview(shown, "mosaic", focus=focus)


def fused_planes(shown: sitk.Image, at: tuple[float, float, float]) -> np.ndarray:
    """The three planes of the fused overlay (or luminance) through the LPS point ``at`` (the hot spot)."""
    from medfuse.preview import render_preview

    return render_preview(shown, "triplanar", at=at)


def overlay_colour_bar(height: int, window: tuple[float, float], colormap: str, units: str | None) -> np.ndarray:
    """The colour bar of the overlay: its PET window in its colour map, labelled in the PET's units."""
    from medfuse.preview.draw import draw_colorbar

    return draw_colorbar(height, window, colormap, units)


def thumbnail(picture: np.ndarray, longest: int = 160) -> np.ndarray:
    """``picture`` reduced so that its longer side is at most ``longest`` pixels."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8), "RGB")
    image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    return np.asarray(image)
