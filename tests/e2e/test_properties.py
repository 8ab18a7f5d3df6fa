"""Property tests (Hypothesis): whatever the image, medfuse either succeeds on the MRI grid with finite
values or raises a :class:`MedfuseError`; never any other exception.

Images vary in shape (thin, 2-D, 4-D), spacing (tiny to huge, anisotropic), direction (any rotation,
flips, oblique), origin, pixel type (8- to 64-bit, integer or float, vector) and value range (constant,
1e-30 to 1e30, negative, NaN/Inf). They go through ``io.validate_image``, through ``io.load_volume``
after a round trip through a file (sometimes truncated or with a damaged header), and through
``pipeline.fuse_images`` with the Laplacian fuser (fast) and, for a few examples, the network.
Runs are deterministic (``derandomize=True``) and write no Hypothesis database.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from synthetic import Grid, phantom_mri, phantom_pet, rigid

from medfuse import io, pipeline
from medfuse.errors import MedfuseError
from medfuse.options import FuseOptions

SETTINGS = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow],
}
PIXEL_TYPES = (np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64)
FORMATS = (".nii", ".nii.gz", ".nrrd", ".mha")


def rotation(angles: tuple[float, float, float], flips: tuple[int, int, int]) -> np.ndarray:
    """A direction matrix: a rotation by Euler angles (radians) with some axes flipped."""
    transform = sitk.Euler3DTransform((0.0, 0.0, 0.0), *angles)
    return np.array(transform.GetMatrix()).reshape(3, 3) @ np.diag(flips)


angles = st.tuples(*[st.floats(-math.pi, math.pi)] * 3)
flips = st.tuples(*[st.sampled_from([1, -1])] * 3)
proper_directions = st.one_of(st.just(np.eye(3)), st.builds(rotation, angles, flips))
degenerate_directions = st.sampled_from(
    [
        np.diag([1.0, 1.0, 1e-9]),  # an axis of (almost) zero length
        np.array([[1.0, 0.9999, 0.0], [0.0, 0.01, 0.0], [0.0, 0.0, 1.0]]),  # two axes nearly parallel
        np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),  # sheared
        np.diag([2.0, 1.0, 1.0]),  # scaled: the spacing folded into the direction
    ]
)
directions = st.one_of(proper_directions, proper_directions, proper_directions, degenerate_directions)
spacings = st.tuples(*[st.one_of(st.floats(0.05, 20.0), st.sampled_from([1e-6, 1e3]))] * 3)
#: Metre-sized voxels make registration grids of millions of voxels: slow, so kept out of fusion examples
#: (``test_hardening`` checks that absurd ones are refused before any grid is built).
fusion_spacings = st.tuples(*[st.one_of(st.floats(1.0, 10.0), st.floats(0.05, 20.0), st.just(1e-6))] * 3)


@st.composite
def values(draw: st.DrawFn, shape: tuple[int, ...], dtype: type, varying: bool = False) -> np.ndarray:
    """An array of ``shape``: constant (unless ``varying``), noise or a smooth blob, scaled from 1e-30 to 1e30."""
    kind = draw(
        st.sampled_from(["noise", "blob", "blob"] if varying else ["constant", "noise", "noise", "blob", "blob"])
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "constant":
        base = np.full(shape, draw(st.floats(-2.0, 2.0)))
    elif kind == "noise":
        base = rng.standard_normal(shape)
    else:
        grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
        base = np.exp(-3.0 * sum(g**2 for g in grids))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        scale = draw(st.sampled_from([1.0, 100.0, float(info.max) / 2.0]))
        return np.clip(np.rint(base * scale), info.min, info.max).astype(dtype)
    array = (base * 10.0 ** draw(st.integers(-30, 30)) + draw(st.sampled_from([0.0, -1e3, 1e6]))).astype(dtype)
    if draw(st.booleans()):
        flat = array.reshape(-1)
        flat[rng.integers(0, flat.size, 3)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return array


@st.composite
def images(draw: st.DrawFn, min_size: int = 1, max_size: int = 9, volume: bool = False) -> sitk.Image:
    """A SimpleITK image of any dimension 2-4, pixel type, value range and geometry SimpleITK accepts.

    ``volume`` keeps to 3-D scalar images of at least 4 voxels per axis that are not constant, with
    voxels under 20 mm (the rest is still arbitrary).
    """
    dimension = 3 if volume else draw(st.sampled_from([3, 3, 3, 3, 3, 2, 4]))
    axis = st.integers(4, max_size) if volume else st.one_of(st.integers(4, max_size), st.integers(min_size, max_size))
    shape = tuple(draw(st.lists(axis, min_size=dimension, max_size=dimension)))
    dtype = draw(st.sampled_from(PIXEL_TYPES))
    components = 1 if volume else draw(st.sampled_from([1] * 7 + [3]))
    array = draw(values(shape + ((components,) if components > 1 else ()), dtype, varying=volume))
    image = sitk.GetImageFromArray(array, isVector=components > 1)
    if dimension == 3:
        image.SetSpacing(draw(fusion_spacings if volume else spacings))
        image.SetOrigin(draw(st.tuples(*[st.floats(-50.0, 50.0) if volume else st.floats(-1e4, 1e4)] * 3)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                image.SetDirection(tuple(draw(directions).ravel()))
            except RuntimeError:  # SimpleITK itself refuses singular directions
                assume(False)
    return image


def assert_valid_volume(image: sitk.Image, source: sitk.Image | None) -> None:
    """A 3-D float32 image with finite values and orthonormal axes (every output format keeps such a
    grid), on ``source``'s grid when that was 3-D."""
    assert image.GetDimension() == 3 and image.GetPixelID() == sitk.sitkFloat32
    assert np.isfinite(sitk.GetArrayViewFromImage(image)).all()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-4)
    if source is not None and source.GetDimension() == 3:
        assert image.GetSize() == source.GetSize()
        for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
            np.testing.assert_allclose(getattr(image, getter)(), getattr(source, getter)(), rtol=1e-6, atol=1e-6)


@settings(max_examples=300, **SETTINGS)
@given(image=images(), frame=st.sampled_from([None, "0", "sum"]))
def test_validate_image_accepts_a_clean_volume_or_raises_a_medfuse_error(image: sitk.Image, frame: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            validated = io.validate_image(image, role="PET", frame=frame)
        except MedfuseError as exc:
            event(f"refused: {type(exc).__name__}")
            return
    event("accepted")
    assert_valid_volume(validated, image)


def _damage(path: Path, how: str, fraction: float, seed: int) -> None:
    """Truncate the file, or overwrite bytes of its header with random ones."""
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: int(len(data) * fraction)]))
    elif how == "header":
        rng = np.random.default_rng(seed)
        header = min(len(data), 352)
        for index in rng.integers(0, header, 4):
            data[index] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))


@settings(max_examples=300, **SETTINGS)
@given(
    image=images(min_size=2),
    suffix=st.sampled_from(FORMATS),
    damage=st.sampled_from(["none", "none", "truncate", "header"]),
    fraction=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
@pytest.mark.slow
def test_load_volume_reads_a_clean_volume_or_raises_a_medfuse_error(
    image: sitk.Image, suffix: str, damage: str, fraction: float, seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("file") / f"image{suffix}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sitk.WriteImage(image, str(path))
    except RuntimeError:  # a format that cannot store this image (NIfTI and 64-bit vectors...): not our input
        assume(False)
    _damage(path, damage, fraction, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            volume = io.load_volume(path, role="MRI", frame="0")
        except MedfuseError as exc:
            event(f"refused: {type(exc).__name__}")
            return
    event("accepted")
    assert_valid_volume(volume.image, None)


@st.composite
def head_pairs(draw: st.DrawFn) -> tuple[sitk.Image, sitk.Image]:
    """The synthetic head as an MRI and a PET on random grids, pixel types and intensity scales."""

    def grid(low: int, high: int) -> Grid:
        size = tuple(draw(st.lists(st.integers(low, high), min_size=3, max_size=3)))
        spacing = tuple(draw(st.lists(st.floats(2.5, 16.0), min_size=3, max_size=3)))
        centre = tuple(draw(st.lists(st.floats(-30.0, 30.0), min_size=3, max_size=3)))
        return Grid(size, spacing, draw(proper_directions), centre=centre)

    mri = phantom_mri(grid(4, 40), seed=draw(st.integers(0, 100)))
    pet = phantom_pet(grid(4, 30), rigid(draw(angles.map(lambda a: np.degrees(a) / 20)), (4.0, -3.0, 2.0)))
    converted = []
    for image in (mri, pet):
        dtype = draw(st.sampled_from(PIXEL_TYPES))
        integer = np.issubdtype(dtype, np.integer)
        array = sitk.GetArrayFromImage(image).astype(np.float64) * 10.0 ** draw(st.integers(0 if integer else -6, 6))
        if integer:
            array = np.clip(np.rint(array), np.iinfo(dtype).min, np.iinfo(dtype).max)
        scaled = sitk.GetImageFromArray(array.astype(dtype))
        scaled.CopyInformation(image)
        converted.append(scaled)
    return converted[0], converted[1]


def assert_fused_on_mri_grid(result: pipeline.FusionResult, mri: sitk.Image) -> None:
    for image in (result.fused, result.overlay, result.pet_on_mri):
        assert image.GetSize() == mri.GetSize()
        for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
            np.testing.assert_allclose(getattr(image, getter)(), getattr(mri, getter)(), atol=1e-6)
    fused = sitk.GetArrayViewFromImage(result.fused)
    assert np.isfinite(fused).all() and fused.min() >= 0.0 and fused.max() <= 1.0
    assert result.overlay.GetNumberOfComponentsPerPixel() == 3


def _fuse_or_refuse(mri: sitk.Image, pet: sitk.Image, options: FuseOptions) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = pipeline.fuse_images(mri, pet, options)
        except MedfuseError as exc:
            event(f"refused: {type(exc).__name__}")
            return
    event("fused")
    assert_fused_on_mri_grid(result, mri)


@settings(max_examples=40, **SETTINGS)
@given(pair=head_pairs(), register=st.sampled_from(["rigid", "affine", "none"]))
@pytest.mark.slow
def test_fuse_images_on_random_grids_and_types(pair: tuple[sitk.Image, sitk.Image], register: str) -> None:
    _fuse_or_refuse(*pair, FuseOptions(method="laplacian", register=register))  # type: ignore[arg-type]


@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), mri=images(max_size=14, volume=True), register=st.sampled_from(["rigid", "none"]))
@pytest.mark.slow
def test_fuse_images_on_arbitrary_volumes(data: st.DataObject, mri: sitk.Image, register: str) -> None:
    """Any MRI volume with a PET of its own geometry (half the time: a shared scanner space) or of the MRI's."""
    if data.draw(st.booleans(), label="PET on its own grid"):
        pet = data.draw(images(max_size=14, volume=True), label="PET")
    else:
        dtype = data.draw(st.sampled_from(PIXEL_TYPES), label="PET pixel type")
        pet = sitk.GetImageFromArray(data.draw(values(sitk.GetArrayViewFromImage(mri).shape, dtype, varying=True)))
        pet.CopyInformation(mri)
    _fuse_or_refuse(mri, pet, FuseOptions(method="laplacian", register=register))  # type: ignore[arg-type]


@settings(max_examples=3, **SETTINGS)
@given(pair=head_pairs())
def test_fuse_images_with_the_network(pair: tuple[sitk.Image, sitk.Image]) -> None:
    _fuse_or_refuse(*pair, FuseOptions(method="net", device="cpu", threads=1))
