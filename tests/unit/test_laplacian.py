"""Tests of the Laplacian-pyramid baseline: exact reconstruction, fusion rules, shapes, black background."""

from __future__ import annotations

import numpy as np
import pytest

from medfuse import laplacian
from medfuse.laplacian import LaplacianFuser, laplacian_fuse


@pytest.mark.parametrize("shape", [(256, 256), (37, 61), (8, 9), (3, 5), (2, 40, 33)])
def test_pyramid_reconstructs_exactly(rng: np.random.Generator, shape: tuple[int, ...]) -> None:
    image = rng.random(shape, dtype=np.float32)
    levels = laplacian.level_count(*shape[-2:])
    pyramid = laplacian.laplacian_pyramid(image, levels)
    assert len(pyramid) == levels + 1
    np.testing.assert_allclose(laplacian.reconstruct(pyramid), image, atol=1e-6)


def test_level_count_keeps_the_base_at_least_eight_pixels() -> None:
    assert laplacian.level_count(256, 256) == 4
    assert laplacian.level_count(32, 300) == 2  # 32 -> 16 -> 8
    assert laplacian.level_count(15, 15) == 0


def test_reduce_and_expand_of_a_constant_stay_constant() -> None:
    flat = np.full((9, 12), 0.25, np.float32)
    smaller = laplacian._reduce(flat)
    assert smaller.shape == (5, 6)
    np.testing.assert_allclose(smaller, 0.25, atol=1e-7)
    np.testing.assert_allclose(laplacian._expand(smaller, (9, 12)), 0.25, atol=1e-7)


def test_expand_interpolates_linear_ramps_inside() -> None:
    ramp = np.tile(np.arange(6, dtype=np.float32), (4, 1))  # columns 0..5
    expanded = laplacian._expand(ramp, (8, 12))
    # Odd outputs sit halfway between two samples, even ones on a sample (away from the right edge).
    np.testing.assert_allclose(expanded[2, 1:10], [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5], atol=1e-6)


def test_fusing_an_image_with_itself_or_with_black_returns_it(rng: np.random.Generator) -> None:
    image = 0.05 + 0.95 * rng.random((40, 48), dtype=np.float32)  # no black pixel: none is masked
    np.testing.assert_allclose(laplacian_fuse(image, image), image, atol=1e-6)
    np.testing.assert_allclose(laplacian_fuse(image, np.zeros_like(image)), image, atol=1e-6)
    np.testing.assert_allclose(laplacian_fuse(np.zeros_like(image), image), image, atol=1e-6)


def test_base_rules_on_flat_images() -> None:
    dark, bright = np.full((32, 32), 0.2, np.float32), np.full((32, 32), 0.6, np.float32)
    np.testing.assert_allclose(laplacian_fuse(dark, bright, "max"), 0.6, atol=1e-6)
    np.testing.assert_allclose(laplacian_fuse(dark, bright, "mean"), 0.4, atol=1e-6)


def test_details_of_both_sources_survive() -> None:
    """A vertical edge in one source and a horizontal edge in the other both appear in the result."""
    vertical = np.zeros((64, 64), np.float32)
    vertical[:, 32:] = 0.8
    horizontal = np.zeros((64, 64), np.float32)
    horizontal[32:, :] = 0.8
    fused = laplacian_fuse(vertical, horizontal)
    assert fused[16, 36] - fused[16, 28] > 0.5  # the vertical edge, in the top half
    assert fused[36, 16] - fused[28, 16] > 0.5  # the horizontal edge, in the left half


def test_background_stays_black_and_output_in_range() -> None:
    mri = np.zeros((64, 64), np.float32)
    pet = np.zeros((64, 64), np.float32)
    mri[20:44, 20:44] = 1.0
    pet[28:36, 28:36] = 1.0
    fused = laplacian_fuse(mri, pet)
    assert fused.dtype == np.float32 and fused.min() >= 0.0 and fused.max() <= 1.0
    background = (mri == 0) & (pet == 0)
    assert np.all(fused[background] == 0.0)
    assert fused[30, 30] == pytest.approx(1.0, abs=1e-6)


def test_batches_equal_slice_by_slice(rng: np.random.Generator) -> None:
    mri = rng.random((3, 30, 20), dtype=np.float32)
    pet = rng.random((3, 30, 20), dtype=np.float32)
    batch = laplacian_fuse(mri, pet)
    assert batch.shape == (3, 30, 20)
    for index in range(3):
        np.testing.assert_array_equal(batch[index], laplacian_fuse(mri[index], pet[index]))
    assert laplacian_fuse(mri[:0], pet[:0]).shape == (0, 30, 20)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="equal shape"):
        laplacian_fuse(np.zeros((4, 4)), np.zeros((4, 5)))


def test_fuser_contract() -> None:
    fuser = LaplacianFuser()
    assert (fuser.method, fuser.device, fuser.weights_sha256) == ("laplacian", "cpu", None)
    image = np.linspace(0, 1, 20 * 24, dtype=np.float32).reshape(20, 24)
    np.testing.assert_allclose(fuser.fuse(image, image), image, atol=1e-6)
