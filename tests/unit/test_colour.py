"""Tests of the colour maps: lookup tables, interpolation, errors and the fit of the AANLIB PET map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfuse import colour
from medfuse.errors import UnreadableInputError, UsageError


def test_every_map_is_a_256_entry_table_in_unit_range() -> None:
    assert {"aanlib", "hot", "fire", "grey"} <= set(colour.COLORMAPS)
    for lut in colour.COLORMAPS.values():
        assert lut.shape == (256, 3) and lut.dtype == np.float32
        assert lut.min() >= 0.0 and lut.max() <= 1.0
        np.testing.assert_array_equal(lut[0], [0.0, 0.0, 0.0])  # background stays black


def test_apply_colormap_hits_table_entries_and_interpolates() -> None:
    grey = colour.apply_colormap(np.array([0.0, 0.25, 1.0], np.float32), "grey")
    np.testing.assert_allclose(grey, [[0, 0, 0], [0.25, 0.25, 0.25], [1, 1, 1]], atol=1e-6)
    hot = colour.apply_colormap(np.array([0.4, 0.6, 0.8, 0.9]), "hot")
    np.testing.assert_allclose(hot, [[1, 0, 0], [1, 0.5, 0], [1, 1, 0], [1, 1, 0.5]], atol=1e-2)
    aanlib = colour.apply_colormap(np.array([0.4961, 0.748, 1.0]), "aanlib")
    np.testing.assert_allclose(aanlib, [[1, 1, 0], [1, 0, 0], [1, 0, 1]], atol=1e-2)


def test_apply_colormap_clips_handles_nan_and_keeps_shape() -> None:
    values = np.array([[-3.0, np.nan], [2.0, 0.5]], np.float32)
    rgb = colour.apply_colormap(values, "hot")
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb[0, 0], rgb[0, 1])
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])
    np.testing.assert_allclose(rgb[1, 0], [1, 1, 1])


def test_unknown_colormap_names_the_option_and_lists_the_maps() -> None:
    with pytest.raises(
        UsageError, match=r"--colormap 'jet' is not a known colour map; use one of aanlib, aanlib-spect, fire"
    ):
        colour.apply_colormap(np.zeros(3), "jet")
    assert UsageError("x").exit_code == 2


def test_aanlib_luminance_rises_to_yellow_then_falls() -> None:
    values = np.array([0.0, 0.1181, 0.2441, 0.4961, 0.748, 1.0])
    y, _cb, _cr = colour.rgb_to_ycbcr(colour.apply_colormap(values, "aanlib"))
    np.testing.assert_allclose(y, [0.0, 0.0550, 0.3098, 0.886, 0.299, 0.413], atol=1e-2)


def _synthetic_pseudocolour_images() -> list[np.ndarray]:
    """Two images that use every entry of a 64-entry table running black -> blue -> white -> red."""
    table = colour.lut_from_points(((0, 0, 0, 0), (1 / 3, 0, 0, 1), (2 / 3, 1, 1, 1), (1, 1, 0, 0)), size=64)
    codes = (table * 255).round().astype(np.uint8)
    indices = np.arange(64).reshape(8, 8)
    return [codes[indices], codes[indices.T]]


def test_fit_recovers_known_control_points() -> None:
    points = colour.fit_colormap_control_points(_synthetic_pseudocolour_images())
    assert len(points) == 4
    expected = [(0, 0, 0, 0), (1 / 3, 0, 0, 1), (2 / 3, 1, 1, 1), (1, 1, 0, 0)]
    np.testing.assert_allclose(np.array(points), expected, atol=1e-4)


def test_distinct_colours_counts_pixels() -> None:
    image = np.array([[[1, 2, 3], [1, 2, 3]], [[0, 0, 0], [255, 0, 9]]], np.uint8)
    colours, counts = colour.distinct_colours([image, image[:1]])
    np.testing.assert_array_equal(colours, [[0, 0, 0], [1, 2, 3], [255, 0, 9]])
    np.testing.assert_array_equal(counts, [1, 4, 1])


def test_ordering_survives_shuffling_and_refuses_scattered_colours(rng: np.random.Generator) -> None:
    line = np.linspace(0, 1, 30)[:, None] * np.array([[1.0, 0.5, 0.0]])
    ordered = colour.order_colours_along_curve(line[rng.permutation(30)])
    np.testing.assert_allclose(ordered, line)
    with pytest.raises(ValueError, match="do not lie on one curve"):
        colour.order_colours_along_curve(np.array([[0, 0, 0], [0.02, 0, 0], [1, 1, 1]]))


def test_fit_from_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match="no PNG images to fit a colour map from"):
        colour.fit_colormap_from_folder(tmp_path)


def test_fit_from_folder_reads_pngs(tmp_path: Path) -> None:
    for index, image in enumerate(_synthetic_pseudocolour_images()):
        Image.fromarray(image).save(tmp_path / f"{index}.png")
    assert len(colour.fit_colormap_from_folder(tmp_path)) == 4


@pytest.mark.slow
def test_aanlib_map_reproduces_the_training_pet(harvard_dir: Path) -> None:
    """Every real PET colour lies within 2/255 of the map; refitting gives the committed points."""
    folder = harvard_dir / "PET-MRI" / "PET"
    colours, counts = colour.distinct_colours(
        [np.asarray(Image.open(path).convert("RGB")) for path in sorted(folder.glob("*.png"))]
    )
    lut = colour.lut_from_points(colour.AANLIB_POINTS, size=4096)
    nearest = np.linalg.norm(colours[:, None, :] / 255.0 - lut[None], axis=-1).min(axis=1) * 255
    assert nearest.max() < 2.0
    assert np.average(nearest, weights=counts) < 0.5
    assert colour.fit_colormap_from_folder(folder) == colour.AANLIB_POINTS


@pytest.mark.parametrize("name", ["aanlib", "aanlib-spect", "hot"])
def test_colormap_values_invert_the_map(name: str) -> None:
    values = np.linspace(0.0, 1.0, 101, dtype=np.float32).reshape(1, 101)
    rgb = np.round(colour.apply_colormap(values, name) * 255) / 255  # as an 8-bit image stores it
    recovered = colour.colormap_values(rgb, name)
    assert recovered.shape == values.shape and recovered.dtype == np.float32
    np.testing.assert_allclose(recovered, values, atol=0.01)
    assert colour.colormap_values(np.zeros((2, 2, 3)), name).max() == 0.0  # black is no uptake


def test_colormap_values_gives_uptake_rising_where_aanlib_luminance_falls() -> None:
    values = np.array([0.5, 0.75, 1.0], np.float32)  # yellow, red, magenta: Y falls, uptake rises
    rgb = colour.apply_colormap(values, "aanlib")
    assert np.all(np.diff(colour.rgb_to_ycbcr(rgb)[0][:2]) < 0)
    np.testing.assert_allclose(colour.colormap_values(rgb, "aanlib"), values, atol=2e-3)


def test_colormap_values_needs_rgb() -> None:
    with pytest.raises(ValueError, match="3 channels last"):
        colour.colormap_values(np.zeros((4, 4)), "aanlib")


@pytest.mark.slow
def test_aanlib_spect_map_reproduces_the_training_spect(harvard_dir: Path) -> None:
    """Every real SPECT colour lies within 6/255 of the fitted SPECT map; refitting gives the committed points."""
    folder = harvard_dir / "SPECT-MRI" / "SPECT"
    colours, _counts = colour.distinct_colours(
        [np.asarray(Image.open(path).convert("RGB")) for path in sorted(folder.glob("*.png"))]
    )
    lut = colour.lut_from_points(colour.AANLIB_SPECT_POINTS, size=4096)
    nearest = np.linalg.norm(colours[:, None, :] / 255.0 - lut[None], axis=-1).min(axis=1) * 255
    assert nearest.max() < 6.0
    assert colour.fit_colormap_from_folder(folder, tolerance=6 / 255) == colour.AANLIB_SPECT_POINTS
