"""Colour handling: BT.601 YCbCr, grey detection and the colour maps used for PET.

The network fuses luminance. A pseudo-colour PET is split into Y, Cb, Cr (ITU-R BT.601, full range,
as JPEG uses), Y is fused with the MRI and RGB is rebuilt from the fused Y and the PET's own Cb/Cr,
so the result keeps the PET's colours. All arrays here are float32 in [0, 1], channels last.

Colour maps (``COLORMAPS``, ``apply_colormap``) turn windowed PET values into RGB; ``aanlib`` is the
map of the training PET, fitted from those images by ``fit_colormap_from_folder``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfuse.errors import UnreadableInputError, UsageError

# BT.601 full-range matrices (Y in [0, 1], Cb/Cr centred on 0.5).
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float64,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split an RGB array (..., 3) in [0, 1] into Y, Cb, Cr arrays (each (...)), Cb/Cr centred at 0.5."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected an RGB array with 3 channels last, got shape {rgb.shape}")
    ycc = rgb @ _RGB_TO_YCBCR.T.astype(np.float32)
    return ycc[..., 0], ycc[..., 1] + 0.5, ycc[..., 2] + 0.5


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, keep_luminance: bool = True) -> np.ndarray:
    """Rebuild RGB (..., 3) in [0, 1] from Y, Cb, Cr (Cb/Cr centred at 0.5).

    A fused luminance with the PET's chroma can fall outside the RGB cube (a bright MRI edge under a
    saturated red hot spot). With ``keep_luminance`` (the fused 2-D images, whose luminance is what the
    fusion metrics measure) the chroma of such a pixel is scaled towards grey just enough for the
    colour to fit, so its hue stays the PET's and its luminance stays exactly the fused one. Without it
    (the 3-D overlay, meant for the eye) each channel is clipped as the usual conversion does, which
    keeps hot spots saturated at the cost of some luminance. In-gamut colours are identical either way.
    """
    luma = np.clip(np.asarray(y, np.float32), 0.0, 1.0)[..., None]
    chroma = np.stack([np.asarray(cb, np.float32) - 0.5, np.asarray(cr, np.float32) - 0.5], axis=-1)
    offsets = chroma @ _YCBCR_TO_RGB[:, 1:].T.astype(np.float32)  # each channel's departure from grey
    if not keep_luminance:
        return np.clip(luma + offsets, 0.0, 1.0).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(offsets > 0, (1.0 - luma) / offsets, np.where(offsets < 0, luma / -offsets, np.inf))
    scale = np.clip(np.min(room, axis=-1, keepdims=True), 0.0, 1.0)
    return np.clip(luma + scale * offsets, 0.0, 1.0).astype(np.float32)


def is_grey(image: np.ndarray, tolerance: float = 1.0 / 255.0) -> bool:
    """True for a 2-D array, or an RGB(A) array whose R, G and B agree within ``tolerance``."""
    image = np.asarray(image)
    if image.ndim == 2:
        return True
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3].astype(np.float32)
        scale = 255.0 if image.dtype == np.uint8 else (65535.0 if image.dtype == np.uint16 else 1.0)
        spread = (rgb.max(axis=-1) - rgb.min(axis=-1)) / scale
        return bool(spread.max(initial=0.0) <= tolerance)
    return False


# ---- colour maps ---------------------------------------------------------------------------------------
# A map is a list of control points (value, R, G, B) with values rising from 0 to 1; the 256-entry
# lookup table interpolates linearly between them.
ControlPoints = tuple[tuple[float, float, float, float], ...]

# The pseudo-colour map of the Harvard Whole Brain Atlas (AANLIB) FDG-PET slices the network is trained
# on, as returned by ``fit_colormap_from_folder("../shared/data/harvard/PET-MRI/PET")`` (rounded).
# The atlas uses a 128-entry table; these six points reproduce all 128 colours within 2/255.
AANLIB_POINTS: ControlPoints = (
    (0.0, 0.0, 0.0, 0.0),
    (0.1181, 0.0, 0.0, 0.4824),
    (0.2441, 0.0, 0.3333, 1.0),
    (0.4961, 1.0, 1.0, 0.0),
    (0.748, 1.0, 0.0, 0.0),
    (1.0, 1.0, 0.0, 1.0),
)
# The pseudo-colour map of the atlas's perfusion SPECT slices (black -> slate -> purple -> orange -> white),
# as returned by ``fit_colormap_from_folder("../shared/data/harvard/SPECT-MRI/SPECT", tolerance=6 / 255)``
# (rounded): the 156 distinct colours of those slices lie within 6/255 of these points.
AANLIB_SPECT_POINTS: ControlPoints = (
    (0.0, 0.0, 0.0, 0.0),
    (0.1484, 0.1608, 0.2784, 0.2863),
    (0.3484, 0.3255, 0.0, 0.5647),
    (0.5548, 0.7451, 0.3529, 0.4745),
    (0.8, 1.0, 0.4471, 0.0),
    (0.9355, 1.0, 0.7216, 0.651),
    (0.9419, 1.0, 0.7451, 0.7098),
    (0.9484, 1.0, 0.749, 0.7137),
    (0.9548, 1.0, 0.7725, 0.7686),
    (0.9935, 1.0, 0.8431, 0.9412),
    (1.0, 1.0, 0.8706, 1.0),
)
# Classic "hot": black -> red -> yellow -> white.
_HOT_POINTS: ControlPoints = (
    (0.0, 0.0, 0.0, 0.0),
    (0.4, 1.0, 0.0, 0.0),
    (0.8, 1.0, 1.0, 0.0),
    (1.0, 1.0, 1.0, 1.0),
)
# "fire": black -> deep violet -> crimson -> orange -> pale yellow; darker lows than "hot".
_FIRE_POINTS: ControlPoints = (
    (0.0, 0.0, 0.0, 0.0),
    (0.25, 0.3, 0.0, 0.45),
    (0.5, 0.85, 0.1, 0.25),
    (0.75, 1.0, 0.55, 0.0),
    (1.0, 1.0, 1.0, 0.75),
)
_GREY_POINTS: ControlPoints = ((0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 1.0, 1.0))

LUT_SIZE = 256


def lut_from_points(points: ControlPoints, size: int = LUT_SIZE) -> np.ndarray:
    """Sample a piecewise-linear map given by control points (value, R, G, B) at ``size`` even steps."""
    table = np.asarray(points, dtype=np.float64)
    values = np.linspace(0.0, 1.0, size)
    rgb = [np.interp(values, table[:, 0], table[:, channel]) for channel in (1, 2, 3)]
    return np.clip(np.stack(rgb, axis=-1), 0.0, 1.0).astype(np.float32)


COLORMAPS: dict[str, np.ndarray] = {
    "aanlib": lut_from_points(AANLIB_POINTS),
    "aanlib-spect": lut_from_points(AANLIB_SPECT_POINTS),
    "hot": lut_from_points(_HOT_POINTS),
    "fire": lut_from_points(_FIRE_POINTS),
    "grey": lut_from_points(_GREY_POINTS),
}
"""Colour-map name -> (256, 3) float32 lookup table in [0, 1], index 0 for value 0, 255 for value 1.

``aanlib`` is the map of the training PET (black -> blue -> cyan-green -> yellow -> red -> magenta for
rising uptake). The volume pipeline feeds the network ``Y = 0.299 R + 0.587 G + 0.114 B`` of this map,
which is *not* monotonic in uptake: Y(0) = 0, Y(0.12) = 0.06 (dark blue), Y(0.24) = 0.31, Y(0.37) = 0.60,
Y(0.50) = 0.88 (yellow, the brightest), then falls to Y(0.75) = 0.30 (red) and Y(1) = 0.41 (magenta).
Hence the network sees the hottest spots darker than the warm rim, exactly as in its training slices.
"""


def colormap_lut(name: str) -> np.ndarray:
    """The lookup table of colour map ``name``; an unknown name is a :class:`UsageError` for --colormap."""
    try:
        return COLORMAPS[name]
    except KeyError:
        raise UsageError(
            f"--colormap {name!r} is not a known colour map; use one of {', '.join(sorted(COLORMAPS))}."
        ) from None


def colormap_values(rgb: np.ndarray, name: str, samples: int = 1024) -> np.ndarray:
    """Invert colour map ``name``: the value in [0, 1] whose colour is nearest each RGB pixel (..., 3).

    Turns an atlas pseudo-colour PET back into (windowed) uptake. The map is sampled at ``samples``
    even steps; each distinct colour is looked up once, so 8-bit images with a few hundred colours
    are fast. Black gives 0.
    """
    table = apply_colormap(np.linspace(0.0, 1.0, samples), name)
    pixels = np.asarray(rgb, dtype=np.float32)
    if pixels.shape[-1] != 3:
        raise ValueError(f"expected an RGB array with 3 channels last, got shape {pixels.shape}")
    levels = np.clip(np.round(pixels.reshape(-1, 3) * 255.0), 0, 255).astype(np.int32)
    codes = (levels[:, 0] << 16) | (levels[:, 1] << 8) | levels[:, 2]
    present = np.zeros(1 << 24, dtype=bool)  # a table over all 8-bit colours: no sort of the pixels needed
    present[codes] = True
    distinct = np.flatnonzero(present)
    colours = np.stack([(distinct >> 16) & 255, (distinct >> 8) & 255, distinct & 255], axis=1) / 255.0
    distances = ((colours[:, None, :] - table[None, :, :]) ** 2).sum(axis=-1)
    lookup = np.zeros(1 << 24, dtype=np.float32)
    lookup[distinct] = np.argmin(distances, axis=1).astype(np.float32) / np.float32(samples - 1)
    return lookup[codes].reshape(pixels.shape[:-1])


def apply_colormap(values: np.ndarray, name: str) -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN counts as 0) to float32 RGB (..., 3) by linear interpolation."""
    return _interpolate(values, colormap_lut(name))


def colormap_rgb_offsets(values: np.ndarray, name: str) -> np.ndarray:
    """How far each colour of map ``name`` at ``values`` lies from grey in R, G and B, (..., 3) float32.

    These are the offsets :func:`ycbcr_to_rgb` adds to a luminance for the colour's chroma (Cb, Cr), so
    ``clip(y + offsets)`` is ``ycbcr_to_rgb(y, Cb, Cr, keep_luminance=False)`` of the map's chroma. The
    conversion is linear, so interpolating a table of the map's offsets gives the same values (to
    float32 rounding, below 1e-6) without a chroma image and a matrix product per voxel.
    """
    table = _OFFSET_TABLES.get(name)
    if table is None:
        _y, cb, cr = rgb_to_ycbcr(colormap_lut(name))
        chroma = np.stack([cb - 0.5, cr - 0.5], axis=-1)
        table = _OFFSET_TABLES[name] = (chroma @ _YCBCR_TO_RGB[:, 1:].T).astype(np.float32)
    return _interpolate(values, table)


_OFFSET_TABLES: dict[str, np.ndarray] = {}


def _interpolate(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Linear interpolation in a (LUT_SIZE, k) table at values in [0, 1] (clipped; NaN counts as 0).

    float32 throughout and one table column at a time: a clinical-size volume's colours take a
    fraction of the time that broadcasting the (…, k) gathers in float64 did (same values to 1e-7).
    """
    position = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    np.clip(position, 0.0, 1.0, out=position)
    position *= np.float32(LUT_SIZE - 1)
    lower = position.astype(np.intp)
    np.minimum(lower, LUT_SIZE - 2, out=lower)
    fraction = position - lower.astype(np.float32)
    rest = np.float32(1.0) - fraction
    result = np.empty((*position.shape, table.shape[1]), dtype=np.float32)
    for channel in range(table.shape[1]):
        column = np.ascontiguousarray(table[:, channel], dtype=np.float32)
        below, above = column.take(lower), column.take(lower + 1)
        below *= rest
        above *= fraction
        np.add(below, above, out=result[..., channel])
    return result


# ---- fitting a pseudo-colour map from images -------------------------------------------------------------
def _cheapest_insertion(path: np.ndarray, point: np.ndarray) -> tuple[int, float]:
    """Where inserting ``point`` into ``path`` (after its fixed first point) adds least length, and how much."""
    to_point = np.linalg.norm(path - point, axis=1)
    detours = to_point[:-1] + to_point[1:] - np.linalg.norm(np.diff(path, axis=0), axis=1)
    best = int(np.argmin(detours)) if len(detours) else 0
    if not len(detours) or to_point[-1] <= detours[best]:
        return len(path), float(to_point[-1])
    return best + 1, float(detours[best])


def order_colours_along_curve(colours: np.ndarray, max_step: float = 0.1) -> np.ndarray:
    """Order distinct colours (n, 3) in [0, 1] along the 1-D curve they lie on, starting at the darkest.

    A pseudo-colour table is a curve through RGB space whose neighbouring entries are a few levels
    apart. Chain each next colour as the closest unvisited one while it is within ``max_step``, insert
    the colours left over where they lengthen the path least, then move single colours to cheaper places
    until the path stops shrinking (this repairs the zig-zags greedy chaining makes at sharp corners).
    A step longer than ``max_step`` in the final order means the colours do not form one curve.
    """
    points = np.asarray(colours, dtype=np.float64)
    order = [int(np.argmin(points.sum(axis=1)))]
    unvisited = set(range(len(points))) - set(order)
    while unvisited:
        candidates = np.array(sorted(unvisited))
        distances = np.linalg.norm(points[candidates] - points[order[-1]], axis=1)
        if distances.min() > max_step:
            break
        order.append(int(candidates[np.argmin(distances)]))
        unvisited.discard(order[-1])
    for leftover in sorted(unvisited):
        order.insert(_cheapest_insertion(points[order], points[leftover])[0], leftover)
    improved = True
    while improved:
        improved = False
        for position in range(1, len(order)):
            moved = order.pop(position)
            path = points[order]
            saved = np.linalg.norm(points[moved] - path[position - 1])
            if position < len(order):
                saved += np.linalg.norm(points[moved] - path[position]) - np.linalg.norm(
                    path[position] - path[position - 1]
                )
            target, cost = _cheapest_insertion(path, points[moved])
            if cost < saved - 1e-9:
                order.insert(target, moved)
                improved = True
            else:
                order.insert(position, moved)
    steps = np.linalg.norm(np.diff(points[order], axis=0), axis=1)
    if len(steps) and steps.max() > max_step:
        worst = int(np.argmax(steps))
        raise ValueError(
            f"the colours do not lie on one curve: a step of {steps[worst]:.3f} follows "
            f"{np.round(points[order[worst]] * 255).astype(int).tolist()}"
        )
    return points[order]


def simplify_curve(curve: np.ndarray, tolerance: float) -> list[int]:
    """Indices of the fewest points whose linear interpolation keeps every colour within ``tolerance``.

    Ramer-Douglas-Peucker on a curve sampled at even steps of the value: the error of an interior point is
    its distance from the straight line between the kept neighbours, evaluated at the same value.
    """
    keep = {0, len(curve) - 1}
    spans = [(0, len(curve) - 1)]
    while spans:
        first, last = spans.pop()
        if last - first < 2:
            continue
        fractions = (np.arange(first + 1, last) - first) / (last - first)
        line = curve[first] + fractions[:, None] * (curve[last] - curve[first])
        errors = np.linalg.norm(curve[first + 1 : last] - line, axis=1)
        worst = int(np.argmax(errors))
        if errors[worst] > tolerance:
            split = first + 1 + worst
            keep.add(split)
            spans += [(first, split), (split, last)]
    return sorted(keep)


def distinct_colours(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct RGB colours (n, 3) uint8 of 8-bit ``images`` and how many pixels have each."""
    pixels = np.concatenate([np.asarray(image, dtype=np.uint8)[..., :3].reshape(-1, 3) for image in images])
    packed = (pixels[:, 0].astype(np.uint32) << 16) | (pixels[:, 1].astype(np.uint32) << 8) | pixels[:, 2]
    codes, counts = np.unique(packed, return_counts=True)
    colours = np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], axis=1).astype(np.uint8)
    return colours, counts


def fit_colormap_control_points(images: list[np.ndarray], tolerance: float = 2.0 / 255.0) -> ControlPoints:
    """Fit control points (value, R, G, B) of the pseudo-colour map used by 8-bit RGB ``images``.

    The distinct colours are ordered along their curve (:func:`order_colours_along_curve`); the k-th of
    n colours stands for value k / (n - 1), since the table of a pseudo-colour map is even in value; the
    curve is then reduced to the control points needed to stay within ``tolerance``.
    """
    colours, _counts = distinct_colours(images)
    curve = order_colours_along_curve(colours / 255.0)
    values = np.linspace(0.0, 1.0, len(curve))
    kept = simplify_curve(curve, tolerance)
    return tuple(
        (round(float(values[i]), 4), *(round(float(c), 4) for c in curve[i]))  # type: ignore[misc]
        for i in kept
    )


def fit_colormap_from_folder(folder: str | Path, tolerance: float = 2.0 / 255.0) -> ControlPoints:
    """Fit the pseudo-colour map of every PNG in ``folder``; this produced ``AANLIB_POINTS``.

    Rerun: ``python -c "from medfuse.colour import fit_colormap_from_folder as f;
    print(f('../shared/data/harvard/PET-MRI/PET'))"`` (and ``SPECT-MRI/SPECT`` with ``tolerance=6 / 255``
    for ``AANLIB_SPECT_POINTS``).
    """
    from PIL import Image

    paths = sorted(Path(folder).glob("*.png"))
    if not paths:
        raise UnreadableInputError(f"{folder}: no PNG images to fit a colour map from; give a folder of PET PNGs.")
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB")))
    return fit_colormap_control_points(images, tolerance)
