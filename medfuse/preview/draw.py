"""Drawing: panels scaled to square millimetres with their letters, laid out in rows or a grid, a colour bar, PNG.

PIL does the pixels; every function takes and returns uint8 RGB arrays (or :class:`Panel` in [0, 1]).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import ImageDraw, ImageFont

# Longest side in pixels of one panel, (smallest, largest), per mode: tiny volumes are enlarged so
# that the letters stay legible, big ones reduced so that the PNG stays small.
_PANEL_SIDE = {"slice": (256, 768), "triplanar": (192, 384), "mip": (192, 384), "mosaic": (96, 224)}
_GAP = 4


@dataclass
class Panel:
    """One 2-D picture before scaling: RGB in [0, 1], its pixel spacing and what to write on it."""

    rgb: np.ndarray
    spacing: tuple[float, float]  # mm per row, per column
    letters: tuple[str, str, str, str] | None  # top, bottom, left, right
    label: str | None = None


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, anchor: str) -> None:
    """Draw white text with a black outline; ``anchor`` is a two-letter PIL anchor (e.g. 'mt')."""
    draw.text(xy, text, fill=(255, 255, 255), font=_font(size), anchor=anchor, stroke_width=1, stroke_fill=(0, 0, 0))


def finish_panel(panel: Panel, pixels_per_mm: float) -> np.ndarray:
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
        draw_text(draw, (width / 2, 2), top, size, "mt")
        draw_text(draw, (width / 2, height - 2), bottom, size, "mb")
        draw_text(draw, (2, height / 2), left, size, "lm")
        draw_text(draw, (width - 2, height / 2), right, size, "rm")
    if panel.label:
        draw_text(draw, (3, height - 2), panel.label, max(9, size * 3 // 4), "lb")
    return np.asarray(image)


def pixels_per_mm(panels: list[Panel], mode: str) -> float:
    """One scale for all panels: native resolution, enlarged or reduced to the mode's panel size."""
    finest = min(min(p.spacing) for p in panels)
    longest_mm = max(max(p.rgb.shape[0] * p.spacing[0], p.rgb.shape[1] * p.spacing[1]) for p in panels)
    smallest, largest = _PANEL_SIDE[mode]
    longest_px = longest_mm / finest
    return min(max(longest_px, smallest), largest) / longest_mm


def join_row(images: list[np.ndarray]) -> np.ndarray:
    height = max(image.shape[0] for image in images)
    width = sum(image.shape[1] for image in images) + _GAP * (len(images) - 1)
    canvas = np.zeros((height, width, 3), np.uint8)
    x = 0
    for image in images:
        top = (height - image.shape[0]) // 2
        canvas[top : top + image.shape[0], x : x + image.shape[1]] = image
        x += image.shape[1] + _GAP
    return canvas


def join_grid(images: list[np.ndarray]) -> np.ndarray:
    columns = math.ceil(math.sqrt(len(images)))
    rows = [join_row(images[i : i + columns]) for i in range(0, len(images), columns)]
    width = max(row.shape[1] for row in rows)
    height = sum(row.shape[0] for row in rows) + _GAP * (len(rows) - 1)
    canvas = np.zeros((height, width, 3), np.uint8)
    y = 0
    for row in rows:
        canvas[y : y + row.shape[0], : row.shape[1]] = row
        y += row.shape[0] + _GAP
    return canvas


def draw_colorbar(height: int, window: tuple[float, float], colormap: str, units: str | None) -> np.ndarray:
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
        draw_text(draw, (20, y), text, size, "lm")
    if units:
        draw_text(draw, (4, margin - 3), units, size, "lb")
    return np.asarray(image)


def pad_to(image: np.ndarray, height: int) -> np.ndarray:
    if image.shape[0] >= height:
        return image[:height]
    return np.pad(image, ((0, height - image.shape[0]), (0, 0), (0, 0)))


def write_png(picture: np.ndarray, path: str | Path) -> None:
    """Write an (H, W, 3) uint8 picture as PNG (meant to be called inside an output transaction)."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8), "RGB").save(path, format="PNG")
