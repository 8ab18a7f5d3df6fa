"""PNG previews of volumes: one slice, a mosaic of slices, three orthogonal planes, or projections.

A preview is a quick look that must not lie about anatomy, so:

- **Orientation** comes from the direction matrix: each image axis is matched to the closest patient
  axis (LPS, as ITK and DICOM use), and the planes are laid out in the **radiological convention** by
  default (patient's right on the viewer's left, anterior up on axial, superior up on coronal and
  sagittal, anterior on the left of sagittal), as clinical PACS viewers do. ``convention="neurological"``
  puts the patient's right on the right (as nilearn/FSLeyes do). Tri-planar and MIP views print the
  orientation letters derived from the direction vectors at each edge.
- **Aspect**: every panel is resampled to square millimetres, so anisotropic voxels look right.
- **Windowing**: grey images use robust percentiles (1 - 99.5 % of the non-zero voxels); a PET overlay
  is shown from 40 % to 100 % of its robust maximum (99.5th percentile), transparent below.
- **PET overlay**: the PET is drawn where its header places it (resampled onto the volume's grid, no
  registration), so give a registered PET (or preview the fused output) for a true overlay.
- **Colour (RGB) volumes**, such as the fusion overlay, are shown as they are.
- ``--slice N`` counts along the image axis shown as axial, in the file's own index order (the
  numbers printed on the mosaic tiles); ``--at X Y Z`` is a physical point in millimetres in ITK/DICOM
  LPS patient coordinates (negate X and Y to give RAS/MNI coordinates).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from medfuse.atomic import check_output_path, full_suffix, output_transaction
from medfuse.console import warn
from medfuse.errors import InvalidInputError, UnreadableInputError, UsageError

if TYPE_CHECKING:
    import SimpleITK as sitk
    from PIL import ImageDraw, ImageFont

Mode = Literal["mosaic", "slice", "triplanar", "mip"]
Convention = Literal["radiological", "neurological"]
MODES: tuple[str, ...] = ("mosaic", "slice", "triplanar", "mip")
CONVENTIONS: tuple[str, ...] = ("radiological", "neurological")
#: Slices whose smoothed PET peak is below this fraction of the hottest slice's lie outside the PET's extent.
HOT_SLICE_FRACTION = 0.25
MOSAIC_TILES = 16

# Letters at the (negative, positive) ends of the LPS axes x, y, z.
_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
# Longest side in pixels of one panel, (smallest, largest), per mode: tiny volumes are enlarged so
# that the letters stay legible, big ones reduced so that the PNG stays small.
_PANEL_SIDE = {"slice": (256, 768), "triplanar": (192, 384), "mip": (192, 384), "mosaic": (96, 224)}
_GAP = 4
_OVERLAY_ALPHA = 0.6
_GREY_PERCENTILES = (1.0, 99.5)
_PET_HIGH_PERCENTILE = 99.5
_PET_THRESHOLD = 0.4  # overlay shown from this fraction of the window's top
_WINDOW_SAMPLES = 1_000_000
_UNIT_NAMES = {"BQML": "Bq/mL", "GML": "SUV", "SUVBW": "SUV", "SUV": "SUV", "CNTS": "counts"}


@dataclass
class _Layout:
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


@dataclass
class _Panel:
    """One 2-D picture before scaling: RGB in [0, 1], its pixel spacing and what to write on it."""

    rgb: np.ndarray
    spacing: tuple[float, float]  # mm per row, per column
    letters: tuple[str, str, str, str] | None  # top, bottom, left, right
    label: str | None = None


def _axis_assignment(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For each LPS axis, the image axis closest to it (best permutation) and whether it runs backwards."""
    perm = max(
        itertools.permutations(range(3)),
        key=lambda candidate: sum(abs(direction[p, candidate[p]]) for p in range(3)),
    )
    flips = tuple(bool(direction[p, perm[p]] < 0) for p in range(3))
    return perm, flips  # type: ignore[return-value]


def _orientation(image: sitk.Image) -> tuple[tuple[int, int, int], tuple[bool, bool, bool], np.ndarray]:
    """Axis assignment of a 3-D image and the LPS direction vectors of the display axes z, y, x."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    perm, flips = _axis_assignment(direction)
    vectors = np.stack([direction[:, perm[p]] * (-1.0 if flips[p] else 1.0) for p in (2, 1, 0)])
    return perm, flips, vectors


def _layout(image: sitk.Image, what: str) -> _Layout:
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
        return _Layout(array[None], (1.0, spacing_y, spacing_x), None, (0, 1, 2), (False, False, False), size)
    perm, flips, vectors = _orientation(image)
    # numpy axis of image axis c is 2 - c; display axes are (z, y, x) = LPS (2, 1, 0).
    order = [2 - perm[p] for p in (2, 1, 0)] + ([3] if array.ndim == 4 else [])
    data = np.transpose(array, order)
    for p in range(3):
        if flips[p]:
            data = np.flip(data, axis=2 - p)
    spacing = tuple(float(image.GetSpacing()[perm[p]]) for p in (2, 1, 0))
    return _Layout(data, spacing, vectors, perm, flips, size)  # type: ignore[arg-type]


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    )


def _onto_grid(image: sitk.Image, reference: sitk.Image, what: str) -> sitk.Image:
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
    if _same_grid(image, reference):
        return image
    identity = sitk.Transform(reference.GetDimension(), sitk.sitkIdentity)
    return sitk.Resample(image, reference, identity, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def _sample(values: np.ndarray) -> np.ndarray:
    """At most about a million voxels of ``values``, taken with a fixed stride (deterministic)."""
    flat = values.reshape(-1)
    return flat[:: max(1, flat.size // _WINDOW_SAMPLES)]


def robust_window(values: np.ndarray, percentiles: tuple[float, float] = _GREY_PERCENTILES) -> tuple[float, float]:
    """Display window (low, high) from percentiles of the non-zero values (all values if none is non-zero)."""
    sample = _sample(values)
    nonzero = sample[sample != 0]
    sample = nonzero if nonzero.size else sample
    low, high = (float(v) for v in np.percentile(sample, percentiles))
    if high <= low:  # constant image: show it white when positive, black otherwise
        low, high = (0.0, high) if high > 0 else (low, low + 1.0)
    return low, high


def _pet_window(values: np.ndarray) -> tuple[float, float] | None:
    """Overlay window: 40 % to 100 % of the PET's robust maximum (99.5th percentile of positive voxels).

    Below it the overlay is transparent, so background noise and low uptake leave the anatomy visible.
    None when nothing is positive.
    """
    sample = _sample(values)
    positive = sample[sample > 0]
    if positive.size == 0:
        return None
    high = float(np.percentile(positive, _PET_HIGH_PERCENTILE))
    return _PET_THRESHOLD * high, high


def _colour_scale(data: np.ndarray) -> float:
    """The factor that brings a colour image to [0, 1]: 1/255 for 8-bit, 1 for [0, 1] floats, else robust."""
    if data.dtype == np.uint8:
        return 1.0 / 255.0
    sample = _sample(data).astype(np.float64)
    if sample.size and sample.min() >= 0 and sample.max() <= 1.0:
        return 1.0
    if np.issubdtype(data.dtype, np.integer) and sample.size and sample.max() <= 255:
        return 1.0 / 255.0
    high = float(np.percentile(sample[sample > 0], 99.5)) if np.any(sample > 0) else 1.0
    return 1.0 / high


def _normalise(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    return np.clip((values.astype(np.float32) - low) / (high - low), 0.0, 1.0)


def _content_box(layout: _Layout, window: tuple[float, float] | None) -> tuple[tuple[int, int], ...]:
    """Inclusive (first, last) display indices of the voxels above the window along z, y, x."""
    data = layout.data.max(axis=-1) if layout.is_colour else layout.data
    threshold = window[0] if window is not None else 0
    mask = data > threshold
    if not mask.any():
        return tuple((0, n - 1) for n in data.shape)
    box = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((int(hits[0]), int(hits[-1])))
    return tuple(box)


def _smoothed(focus: _Layout) -> np.ndarray:
    """Focus values averaged over 3x3x3 voxels, so that a single noisy voxel is no hotspot."""
    from scipy import ndimage

    return ndimage.uniform_filter(np.ascontiguousarray(focus.data, dtype=np.float32), size=3, mode="constant")


def _mosaic_slices(layout: _Layout, focus: _Layout | None, window: tuple[float, float] | None, count: int) -> list[int]:
    """Display slices for a mosaic: through the focus hotspots when given, else evenly across the content."""
    depth = layout.data.shape[0]
    if depth <= count:
        return list(range(depth))
    if focus is not None:
        scores = _smoothed(focus).max(axis=(1, 2))
        if scores.max() > 0:
            # The PET's extent: slices with real uptake (background noise and spill-over stay below a
            # quarter of the hottest slice), so the tiles are not spread onto empty planes above the head.
            hot = np.flatnonzero(scores >= HOT_SLICE_FRACTION * scores.max())
            # hottest slices first, at least as far apart as an even sampling of the PET's extent would be
            separation = max(1, (int(hot[-1]) - int(hot[0]) + 1) // count)
            peaks = focus.data.max(axis=(1, 2))  # breaks ties between neighbours of one smoothed hotspot
            ranked = [int(z) for z in np.lexsort((-peaks, -scores)) if scores[z] > 0]
            chosen: list[int] = []
            for z in ranked:
                if len(chosen) < count and all(abs(z - c) >= separation for c in chosen):
                    chosen.append(z)
            chosen += [z for z in ranked if z not in chosen][: count - len(chosen)]
            return sorted(chosen)
    first, last = _content_box(layout, window)[0]
    positions = np.linspace(first, last, count + 2)[1:-1]
    return sorted({round(float(p)) for p in positions})


def mosaic_slices(volume: sitk.Image, focus: sitk.Image | None = None, count: int = MOSAIC_TILES) -> list[int]:
    """The file's own axial slice indices a mosaic shows (through ``focus``'s hotspots when given)."""
    layout = _layout(volume, "the volume")
    focus_layout = _layout(_onto_grid(focus, volume, "the focus image"), "the focus image") if focus else None
    window = None if layout.is_colour else robust_window(layout.data)
    return sorted(layout.file_slice(z) for z in _mosaic_slices(layout, focus_layout, window, count))


def _letter(vector: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(vector)))
    return _AXIS_LETTERS[axis][1 if vector[axis] > 0 else 0]


def _view_letters(vectors: np.ndarray, view: str, mirror: bool) -> tuple[str, str, str, str]:
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
    return _view_letters(_orientation(volume)[2], view, _mirrors(view, convention))


def _mirrors(view: str, convention: str) -> bool:
    """Whether a view is mirrored left-right from the radiological layout (neurological, except sagittal)."""
    return convention == "neurological" and view != "sagittal"


class _Renderer:
    """Turns planes of a laid-out volume (and optional PET overlay) into RGB panels."""

    def __init__(
        self,
        layout: _Layout,
        pet: _Layout | None,
        colormap: str,
        convention: str,
    ) -> None:
        self.layout = layout
        self.pet = pet
        self.colormap = colormap
        self.convention = convention
        self.window = None if layout.is_colour else robust_window(layout.data)
        self.scale = _colour_scale(layout.data) if layout.is_colour else 1.0
        self.pet_window = _pet_window(pet.data) if pet is not None else None

    def rgb(self, plane: np.ndarray, pet_plane: np.ndarray | None, window: tuple[float, float] | None) -> np.ndarray:
        """RGB in [0, 1] of a grey or colour plane, with the PET drawn over it above its window."""
        from medfuse.colour import apply_colormap

        if self.layout.is_colour:
            rgb = np.clip(plane.astype(np.float32) * np.float32(self.scale), 0.0, 1.0)
        else:
            rgb = np.repeat(_normalise(plane, window or self.window)[..., None], 3, axis=-1)
        if pet_plane is not None and self.pet_window is not None:
            level = _normalise(pet_plane, self.pet_window)
            # fade in over the lowest third of the window, so the dark start of a map does not hide anatomy
            alpha = np.where(pet_plane > self.pet_window[0], _OVERLAY_ALPHA * np.minimum(1.0, 3.0 * level), 0.0)
            alpha = alpha.astype(np.float32)[..., None]
            rgb = rgb * (1.0 - alpha) + apply_colormap(level, self.colormap) * alpha
        return rgb

    def _orient(self, plane: np.ndarray, flip_rows: bool, mirror: bool) -> np.ndarray:
        if flip_rows:
            plane = plane[::-1]
        if mirror:
            plane = plane[:, ::-1]
        return plane

    def plane(self, view: str, index: int, label: str | None = None) -> _Panel:
        """The axial, coronal or sagittal plane through display index ``index``."""
        return self._panel(view, lambda data: _take(data, view, index), label)

    def projection(self, view: str) -> _Panel:
        """Maximum-intensity projection onto the axial, coronal or sagittal plane."""
        return self._panel(view, lambda data: _project(data, view), f"MIP {view}", self.projection_window)

    @functools.cached_property
    def projection_window(self) -> tuple[float, float] | None:
        """One window for the three projections, from the axial one (all share the same maximum)."""
        return None if self.layout.is_colour else robust_window(_project(self.layout.data, "axial"))

    def _panel(
        self,
        view: str,
        extract: Callable[[np.ndarray], np.ndarray],
        label: str | None,
        window: tuple[float, float] | None = None,
    ) -> _Panel:
        layout = self.layout
        plane = extract(layout.data)
        pet_plane = extract(self.pet.data) if self.pet is not None else None
        sz, sy, sx = layout.spacing
        mirror = _mirrors(view, self.convention)
        if view == "axial":
            spacing, flip_rows = (sy, sx), False
        elif view == "coronal":
            spacing, flip_rows = (sz, sx), True
        else:
            spacing, flip_rows = (sz, sy), True
        rgb = self.rgb(self._orient(plane, flip_rows, mirror), self._orient_opt(pet_plane, flip_rows, mirror), window)
        letters = None if layout.vectors is None else _view_letters(layout.vectors, view, mirror)
        return _Panel(rgb, spacing, letters, label)

    def _orient_opt(self, plane: np.ndarray | None, flip_rows: bool, mirror: bool) -> np.ndarray | None:
        return None if plane is None else self._orient(plane, flip_rows, mirror)


def _take(data: np.ndarray, view: str, index: int) -> np.ndarray:
    return {"axial": lambda: data[index], "coronal": lambda: data[:, index], "sagittal": lambda: data[:, :, index]}[
        view
    ]()


def _project(data: np.ndarray, view: str) -> np.ndarray:
    """Maximum along the view's normal; for colour, the colour of the brightest voxel on each ray."""
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[view]
    if data.ndim == 3:
        return data.max(axis=axis)
    luminance = data.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    brightest = np.expand_dims(luminance.argmax(axis=axis), axis)
    return np.take_along_axis(data, brightest[..., None], axis=axis).squeeze(axis)


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, anchor: str) -> None:
    """Draw white text with a black outline; ``anchor`` is a two-letter PIL anchor (e.g. 'mt')."""
    draw.text(xy, text, fill=(255, 255, 255), font=_font(size), anchor=anchor, stroke_width=1, stroke_fill=(0, 0, 0))


def _finish(panel: _Panel, pixels_per_mm: float) -> np.ndarray:
    """Scale a panel to square millimetres and write its letters and label; uint8 RGB."""
    from PIL import Image, ImageDraw

    rows, cols = panel.rgb.shape[:2]
    height = max(1, round(rows * panel.spacing[0] * pixels_per_mm))
    width = max(1, round(cols * panel.spacing[1] * pixels_per_mm))
    image = Image.fromarray(np.round(panel.rgb * 255).astype(np.uint8), "RGB")
    if (width, height) != (cols, rows):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    size = max(9, min(width, height) // 14)
    if panel.letters is not None:
        top, bottom, left, right = panel.letters
        _draw_text(draw, (width / 2, 2), top, size, "mt")
        _draw_text(draw, (width / 2, height - 2), bottom, size, "mb")
        _draw_text(draw, (2, height / 2), left, size, "lm")
        _draw_text(draw, (width - 2, height / 2), right, size, "rm")
    if panel.label:
        _draw_text(draw, (3, height - 2), panel.label, max(9, size * 3 // 4), "lb")
    return np.asarray(image)


def _pixels_per_mm(panels: list[_Panel], mode: str) -> float:
    """One scale for all panels: native resolution, enlarged or reduced to the mode's panel size."""
    finest = min(min(p.spacing) for p in panels)
    longest_mm = max(max(p.rgb.shape[0] * p.spacing[0], p.rgb.shape[1] * p.spacing[1]) for p in panels)
    smallest, largest = _PANEL_SIDE[mode]
    longest_px = longest_mm / finest
    return min(max(longest_px, smallest), largest) / longest_mm


def _row(images: list[np.ndarray]) -> np.ndarray:
    height = max(image.shape[0] for image in images)
    width = sum(image.shape[1] for image in images) + _GAP * (len(images) - 1)
    canvas = np.zeros((height, width, 3), np.uint8)
    x = 0
    for image in images:
        top = (height - image.shape[0]) // 2
        canvas[top : top + image.shape[0], x : x + image.shape[1]] = image
        x += image.shape[1] + _GAP
    return canvas


def _grid(images: list[np.ndarray]) -> np.ndarray:
    columns = math.ceil(math.sqrt(len(images)))
    rows = [_row(images[i : i + columns]) for i in range(0, len(images), columns)]
    width = max(row.shape[1] for row in rows)
    height = sum(row.shape[0] for row in rows) + _GAP * (len(rows) - 1)
    canvas = np.zeros((height, width, 3), np.uint8)
    y = 0
    for row in rows:
        canvas[y : y + row.shape[0], : row.shape[1]] = row
        y += row.shape[0] + _GAP
    return canvas


def _colorbar(height: int, window: tuple[float, float], colormap: str, units: str | None) -> np.ndarray:
    """A vertical colour bar (high at the top) with its values and units, as tall as the preview."""
    from PIL import Image, ImageDraw

    from medfuse.colour import apply_colormap

    size = max(9, min(14, height // 16))
    margin = size + 6
    bar_height = max(8, height - 2 * margin)
    negligible = 1e-3 * abs(window[1] - window[0])  # print 0, not 1e-08, for a window starting at noise level
    values = (window[1], (window[0] + window[1]) / 2, window[0])
    labels = [f"{0.0 if abs(value) < negligible else value:.3g}" for value in values]
    text_width = max(len(text) for text in [*labels, units or ""]) * size * 0.62
    width = int(16 + 6 + text_width + 8)
    image = Image.new("RGB", (width, max(height, bar_height + 2 * margin)))
    ramp = apply_colormap(np.linspace(1.0, 0.0, bar_height)[:, None].repeat(12, axis=1), colormap)
    image.paste(Image.fromarray(np.round(ramp * 255).astype(np.uint8), "RGB"), (4, margin))
    draw = ImageDraw.Draw(image)
    for text, y in zip(labels, (margin, margin + bar_height / 2, margin + bar_height), strict=True):
        _draw_text(draw, (20, y), text, size, "lm")
    if units:
        _draw_text(draw, (4, margin - 3), units, size, "lb")
    return np.asarray(image)


def render_preview(
    volume: sitk.Image,
    mode: Mode = "mosaic",
    *,
    pet: sitk.Image | None = None,
    focus: sitk.Image | None = None,
    slice_index: int | None = None,
    at: tuple[float, float, float] | None = None,
    colorbar: bool = False,
    units: str | None = None,
    colormap: str = "hot",
    convention: Convention = "radiological",
) -> np.ndarray:
    """Render ``volume`` (2-D or 3-D, grey or RGB) as an (H, W, 3) uint8 picture.

    ``pet`` is drawn in ``colormap`` over a grey volume (resampled onto its grid when the grids
    differ); ``focus`` (e.g. the PET on the MRI grid) picks the mosaic slices and the default slice
    through its hottest region; ``slice_index`` / ``at`` pick the slice (slice mode) or the crossing
    point (triplanar); ``colorbar`` adds a bar of the PET (or grey) window labelled with ``units``.
    """
    from medfuse.colour import colormap_lut

    if mode not in MODES:
        raise UsageError(f"--mode {mode!r} is not a preview mode; use one of {', '.join(MODES)}.")
    if convention not in CONVENTIONS:
        raise UsageError(f"convention {convention!r} is unknown; use one of {', '.join(CONVENTIONS)}.")
    colormap_lut(colormap)
    if slice_index is not None and at is not None:
        raise UsageError("--slice and --at both pick the slice; give only one of them.")
    if mode in ("mosaic", "mip") and (slice_index is not None or at is not None):
        raise UsageError(f"--slice and --at apply to --mode slice or triplanar, not to --mode {mode}.")
    layout = _layout(volume, "the volume")
    if layout.vectors is None and at is not None:
        raise UsageError("--at needs a 3-D volume with a patient position; the image is 2-D.")
    if pet is not None and layout.is_colour:
        raise UsageError("--pet draws a colour overlay on a grey volume, but the volume is already in colour.")
    pet_layout = _overlay_layout(pet, volume, "the PET image")
    focus_layout = _overlay_layout(focus, volume, "the focus image") if focus is not None else None
    renderer = _Renderer(layout, pet_layout, colormap, convention)

    point = _display_point(layout, volume, renderer, focus_layout or pet_layout, slice_index, at)
    if layout.vectors is None or mode == "slice":
        label = f"slice {layout.file_slice(point[0])}" if layout.vectors is not None else None
        panels = [renderer.plane("axial", point[0], label)]
    elif mode == "mosaic":
        slices = _mosaic_slices(layout, focus_layout or pet_layout, renderer.window, MOSAIC_TILES)
        panels = [renderer.plane("axial", z, str(layout.file_slice(z))) for z in slices]
    elif mode == "triplanar":
        panels = [renderer.plane(view, point[i], None) for i, view in enumerate(("axial", "coronal", "sagittal"))]
    else:
        panels = [renderer.projection(view) for view in ("axial", "coronal", "sagittal")]
    scale = _pixels_per_mm(panels, "slice" if layout.vectors is None else mode)
    images = [_finish(panel, scale) for panel in panels]
    picture = _grid(images) if mode == "mosaic" and len(images) > 1 else _row(images)
    if colorbar:
        bar = _bar_for(renderer, layout, colormap, units)
        if bar is not None:
            picture = _row([picture, _pad_to(bar(picture.shape[0]), picture.shape[0])])
    return picture


def _overlay_layout(image: sitk.Image | None, volume: sitk.Image, what: str) -> _Layout | None:
    if image is None:
        return None
    layout = _layout(_onto_grid(image, volume, what), what)
    if not np.any(layout.data > 0):
        warn(f"{what} has no positive values where it overlaps the volume; the preview shows none of it.")
        return None
    return layout


def _bar_for(
    renderer: _Renderer, layout: _Layout, colormap: str, units: str | None
) -> Callable[[int], np.ndarray] | None:
    """The colour bar to draw: of the PET window, else of the grey window; None for colour volumes."""
    if renderer.pet is not None and renderer.pet_window is not None:
        return functools.partial(_colorbar, window=renderer.pet_window, colormap=colormap, units=units)
    if layout.is_colour:
        warn("--colorbar needs a grey volume or a --pet overlay; the colour volume is shown without one.")
        return None
    return functools.partial(_colorbar, window=renderer.window, colormap="grey", units=units)


def _pad_to(image: np.ndarray, height: int) -> np.ndarray:
    if image.shape[0] >= height:
        return image[:height]
    return np.pad(image, ((0, height - image.shape[0]), (0, 0), (0, 0)))


def _display_point(
    layout: _Layout,
    volume: sitk.Image,
    renderer: _Renderer,
    focus: _Layout | None,
    slice_index: int | None,
    at: tuple[float, float, float] | None,
) -> tuple[int, int, int]:
    """The display (z, y, x) the slice and triplanar views go through."""
    depth = layout.data.shape[0]
    box = _content_box(layout, renderer.window)
    centre = tuple((first + last) // 2 for first, last in box)
    if at is not None:
        continuous = volume.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in at))
        index = tuple(round(v) for v in continuous)
        if any(i < 0 or i >= n for i, n in zip(index, layout.size, strict=True)):
            raise UsageError(
                f"--at {' '.join(f'{v:g}' for v in at)} mm lies outside the volume; give a point inside it "
                "(ITK/DICOM LPS coordinates, as `medfuse info` prints)."
            )
        return layout.display_index(index)  # type: ignore[arg-type]
    if slice_index is not None:
        if not 0 <= slice_index < depth:
            raise UsageError(
                f"--slice {slice_index} is outside the volume's {depth} axial slices; choose 0 to {depth - 1}."
            )
        return layout.display_slice(slice_index), centre[1], centre[2]
    if focus is not None and layout.vectors is not None:
        smoothed = _smoothed(focus)
        if smoothed.max() > 0:
            return tuple(int(v) for v in np.unravel_index(int(smoothed.argmax()), smoothed.shape))  # type: ignore[return-value]
    return centre  # type: ignore[return-value]


def write_png(picture: np.ndarray, path: str | Path) -> None:
    """Write an (H, W, 3) uint8 picture as PNG (meant to be called inside an output transaction)."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8), "RGB").save(path, format="PNG")


def unit_label(units: str | None) -> str | None:
    """A readable label for DICOM Units (BQML -> Bq/mL, GML or SUVbw -> SUV); others unchanged."""
    if not units:
        return None
    return _UNIT_NAMES.get(units.upper(), units)


def _read(path: Path, role: str | None, suv: bool) -> tuple[sitk.Image, str | None]:
    """Read a volume file (checked like ``fuse`` does), a 2-D image or a DICOM folder; with its units.

    ``role`` None lets a DICOM folder decide: its MR series when it has one, else its PET/SPECT.
    """
    import SimpleITK as sitk

    from medfuse import io

    if path.is_dir():
        from medfuse.dicom import list_series, read_dicom_series

        if role is None:
            role = "MRI" if any(series.modality == "MR" for series in list_series(path)) else "PET"
        series = read_dicom_series(path, role=role, suv=suv)
        return series.image, ("SUV" if suv else unit_label(series.info.get("units")))
    if not path.exists():
        raise UnreadableInputError(f"{path}: the file does not exist; check the path.")
    if suv:
        raise UsageError(f"--suv needs a DICOM PET folder, but {path} is a file; drop --suv.")
    if full_suffix(path) in io.READ_EXTENSIONS:
        image, info = io.read_image_file(path, role or "input")
        if info["nan_read_as_zero"]:
            warn(f"{path}: {info['nan_read_as_zero']:,} NaN or infinite voxels were shown as 0.")
        if image.GetDimension() not in (2, 3):
            raise InvalidInputError(
                f"{path}: the image is {image.GetDimension()}-D; previews show 2-D images and 3-D volumes, "
                "so extract one frame first."
            )
        return image, None
    try:
        return sitk.ReadImage(str(path)), None
    except RuntimeError as exc:
        raise UnreadableInputError(
            f"{path}: cannot be read as an image ({io.itk_reason(exc)}); "
            "give a NIfTI, NRRD, MHA, PNG file or DICOM folder."
        ) from exc


def preview_file(
    volume: str | Path,
    output: str | Path,
    *,
    mode: Mode = "mosaic",
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
