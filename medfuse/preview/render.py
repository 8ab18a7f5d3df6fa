"""Rendering a volume (2-D or 3-D, grey or RGB, with an optional PET overlay) as an RGB picture: arrays in, image out.

- **Windowing**: grey images use robust percentiles (1 - 99.5 % of the non-zero voxels); a PET overlay
  is shown from 40 % to 100 % of its robust maximum (99.5th percentile), transparent below.
- **PET overlay**: the PET is drawn where its header places it (resampled onto the volume's grid, no
  registration), so give a registered PET (or preview the fused output) for a true overlay.
- **Colour (RGB) volumes**, such as the fusion overlay, are shown as they are.
- **Mosaics** show the slices through the focus image's (the PET's) hot spots, spread over its extent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from medfuse.console import warn
from medfuse.errors import UsageError
from medfuse.intensity import normalise, robust_window, subsample
from medfuse.preview.draw import Panel, draw_colorbar, finish_panel, join_grid, join_row, pad_to, pixels_per_mm
from medfuse.preview.layout import CONVENTIONS, Convention, Layout, layout_of, mirrors, onto_grid, view_letters

if TYPE_CHECKING:
    import SimpleITK as sitk

MODES: tuple[str, ...] = ("mosaic", "slice", "triplanar", "mip")
#: Slices whose smoothed PET peak is below this fraction of the hottest slice's lie outside the PET's extent.
HOT_SLICE_FRACTION = 0.25
MOSAIC_TILES = 16
_OVERLAY_ALPHA = 0.6
_PET_HIGH_PERCENTILE = 99.5
_PET_THRESHOLD = 0.4  # overlay shown from this fraction of the window's top


def _pet_window(values: np.ndarray) -> tuple[float, float] | None:
    """Overlay window: 40 % to 100 % of the PET's robust maximum (99.5th percentile of positive voxels).

    Below it the overlay is transparent, so background noise and low uptake leave the anatomy visible.
    None when nothing is positive.
    """
    sample = subsample(values)
    positive = sample[sample > 0]
    if positive.size == 0:
        return None
    high = float(np.percentile(positive, _PET_HIGH_PERCENTILE))
    return _PET_THRESHOLD * high, high


def _colour_scale(data: np.ndarray) -> float:
    """The factor that brings a colour image to [0, 1]: 1/255 for 8-bit, 1 for [0, 1] floats, else robust."""
    if data.dtype == np.uint8:
        return 1.0 / 255.0
    sample = subsample(data).astype(np.float64)
    if sample.size and sample.min() >= 0 and sample.max() <= 1.0:
        return 1.0
    if np.issubdtype(data.dtype, np.integer) and sample.size and sample.max() <= 255:
        return 1.0 / 255.0
    high = float(np.percentile(sample[sample > 0], 99.5)) if np.any(sample > 0) else 1.0
    return 1.0 / high


def _content_box(layout: Layout, window: tuple[float, float] | None) -> tuple[tuple[int, int], ...]:
    """Inclusive (first, last) display indices of the voxels above the window along z, y, x."""
    # channel by channel: numpy reduces a colour volume's 3-long last axis ten times slower
    data = (
        np.maximum(np.maximum(layout.data[..., 0], layout.data[..., 1]), layout.data[..., 2])
        if layout.is_colour
        else layout.data
    )
    threshold = window[0] if window is not None else 0
    mask = data > threshold
    if not mask.any():
        return tuple((0, n - 1) for n in data.shape)
    box = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((int(hits[0]), int(hits[-1])))
    return tuple(box)


def _smoothed(focus: Layout) -> np.ndarray:
    """Focus values averaged over 3x3x3 voxels, so that a single noisy voxel is no hotspot."""
    from scipy import ndimage

    return ndimage.uniform_filter(np.ascontiguousarray(focus.data, dtype=np.float32), size=3, mode="constant")


def _mosaic_slices(layout: Layout, focus: Layout | None, window: tuple[float, float] | None, count: int) -> list[int]:
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
    layout = layout_of(volume, "the volume")
    focus_layout = layout_of(onto_grid(focus, volume, "the focus image"), "the focus image") if focus else None
    window = None if layout.is_colour else robust_window(layout.data)
    return sorted(layout.file_slice(z) for z in _mosaic_slices(layout, focus_layout, window, count))


class _Renderer:
    """Turns planes of a laid-out volume (and optional PET overlay) into RGB panels."""

    def __init__(
        self,
        layout: Layout,
        pet: Layout | None,
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
            shown = window or self.window
            assert shown is not None  # a grey volume always has a window
            rgb = np.repeat(normalise(plane, shown)[..., None], 3, axis=-1)
        if pet_plane is not None and self.pet_window is not None:
            level = normalise(pet_plane, self.pet_window)
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

    def plane(self, view: str, index: int, label: str | None = None) -> Panel:
        """The axial, coronal or sagittal plane through display index ``index``."""
        return self._panel(view, lambda data: _take(data, view, index), label)

    def projection(self, view: str) -> Panel:
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
    ) -> Panel:
        layout = self.layout
        plane = extract(layout.data)
        pet_plane = extract(self.pet.data) if self.pet is not None else None
        sz, sy, sx = layout.spacing
        mirror = mirrors(view, self.convention)
        if view == "axial":
            spacing, flip_rows = (sy, sx), False
        elif view == "coronal":
            spacing, flip_rows = (sz, sx), True
        else:
            spacing, flip_rows = (sz, sy), True
        rgb = self.rgb(self._orient(plane, flip_rows, mirror), self._orient_opt(pet_plane, flip_rows, mirror), window)
        letters = None if layout.vectors is None else view_letters(layout.vectors, view, mirror)
        return Panel(rgb, spacing, letters, label)

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


def render_preview(
    volume: sitk.Image,
    mode: str = "mosaic",
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
    """Render ``volume`` (2-D or 3-D, grey or RGB) as an (H, W, 3) uint8 picture in ``mode`` (one of :data:`MODES`).

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
    layout = layout_of(volume, "the volume")
    if layout.vectors is None and at is not None:
        raise UsageError("--at needs a 3-D volume with a patient position; the image is 2-D.")
    if pet is not None and layout.is_colour:
        raise UsageError("--pet draws a colour overlay on a grey volume, but the volume is already in colour.")
    pet_layout = _overlay_layout(pet, volume, "the PET image")
    focus_layout = _overlay_layout(focus, volume, "the focus image") if focus is not None else None
    renderer = _Renderer(layout, pet_layout, colormap, convention)

    if layout.vectors is None or mode in ("slice", "triplanar"):
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
    scale = pixels_per_mm(panels, "slice" if layout.vectors is None else mode)
    images = [finish_panel(panel, scale) for panel in panels]
    picture = join_grid(images) if mode == "mosaic" and len(images) > 1 else join_row(images)
    if colorbar:
        bar = _bar_for(renderer, layout, colormap, units)
        if bar is not None:
            picture = join_row([picture, pad_to(bar(picture.shape[0]), picture.shape[0])])
    return picture


def _overlay_layout(image: sitk.Image | None, volume: sitk.Image, what: str) -> Layout | None:
    if image is None:
        return None
    layout = layout_of(onto_grid(image, volume, what), what)
    if not np.any(layout.data > 0):
        warn(f"{what} has no positive values where it overlaps the volume; the preview shows none of it.")
        return None
    return layout


def _bar_for(
    renderer: _Renderer, layout: Layout, colormap: str, units: str | None
) -> Callable[[int], np.ndarray] | None:
    """The colour bar to draw: of the PET window, else of the grey window; None for colour volumes."""
    if renderer.pet is not None and renderer.pet_window is not None:
        return functools.partial(draw_colorbar, window=renderer.pet_window, colormap=colormap, units=units)
    if layout.is_colour or renderer.window is None:
        warn("--colorbar needs a grey volume or a --pet overlay; the colour volume is shown without one.")
        return None
    return functools.partial(draw_colorbar, window=renderer.window, colormap="grey", units=units)


def _display_point(
    layout: Layout,
    volume: sitk.Image,
    renderer: _Renderer,
    focus: Layout | None,
    slice_index: int | None,
    at: tuple[float, float, float] | None,
) -> tuple[int, int, int]:
    """The display (z, y, x) the slice and triplanar views go through."""
    depth = layout.data.shape[0]
    if at is not None:
        continuous = volume.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in at))
        index = tuple(round(v) for v in continuous)
        if any(i < 0 or i >= n for i, n in zip(index, layout.size, strict=True)):
            raise UsageError(
                f"--at {' '.join(f'{v:g}' for v in at)} mm lies outside the volume; give a point inside it "
                "(ITK/DICOM LPS coordinates, as `medfuse info` prints)."
            )
        return layout.display_index(index)
    if slice_index is not None:
        if not 0 <= slice_index < depth:
            raise UsageError(
                f"--slice {slice_index} is outside the volume's {depth} axial slices; choose 0 to {depth - 1}."
            )
        centre = _content_centre(layout, renderer)
        return layout.display_slice(slice_index), centre[1], centre[2]
    if focus is not None and layout.vectors is not None:
        smoothed = _smoothed(focus)
        if smoothed.max() > 0:
            return tuple(int(v) for v in np.unravel_index(int(smoothed.argmax()), smoothed.shape))  # type: ignore[return-value]
    return _content_centre(layout, renderer)


def _content_centre(layout: Layout, renderer: _Renderer) -> tuple[int, int, int]:
    """The display (z, y, x) centre of the voxels above the window."""
    (z0, z1), (y0, y1), (x0, x1) = _content_box(layout, renderer.window)
    return (z0 + z1) // 2, (y0 + y1) // 2, (x0 + x1) // 2
