"""Volumetric fusion end to end: outputs on the MRI grid, fusion details, transforms, all-or-nothing writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import ORIENTATIONS, FakeFuser, Grid, oblique_direction, phantom_mri, phantom_pet, rigid

from medfuse import pipeline
from medfuse.console import MedfuseWarning
from medfuse.errors import InvalidInputError, OutputError, UsageError
from medfuse.options import FuseOptions

MRI_GRID = Grid((56, 70, 62), (3.2, 3.0, 3.1), ORIENTATIONS["RAS"], centre=(2.0, -3.0, 5.0))
PET_GRID = Grid((44, 44, 40), (4.0, 4.0, 4.4), centre=(-4.0, 6.0, 2.0))
TRUTH = rigid((5.0, -4.0, 6.0), (8.0, -6.0, 10.0))


@pytest.fixture(scope="module")
def mri() -> sitk.Image:
    return phantom_mri(MRI_GRID, dtype=np.int16)


@pytest.fixture(scope="module")
def pet() -> sitk.Image:
    return phantom_pet(PET_GRID, TRUTH)


@pytest.fixture
def files(tmp_path: Path, mri: sitk.Image, pet: sitk.Image) -> tuple[Path, Path]:
    mri_path, pet_path = tmp_path / "mri.nii.gz", tmp_path / "pet.nrrd"
    sitk.WriteImage(mri, str(mri_path))
    sitk.WriteImage(pet, str(pet_path))
    return mri_path, pet_path


def assert_on_grid(image: sitk.Image, reference: sitk.Image) -> None:
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)


def test_fuse_images_outputs_live_on_the_mri_grid(mri: sitk.Image, pet: sitk.Image) -> None:
    fuser = FakeFuser()
    result = pipeline.fuse_images(mri, pet, FuseOptions(batch_size=8), fuser=fuser)
    for image in (result.fused, result.overlay, result.pet_on_mri):
        assert_on_grid(image, mri)
    assert result.fused.GetPixelID() == sitk.sitkFloat32
    assert result.overlay.GetPixelID() == sitk.sitkVectorUInt8 and result.overlay.GetNumberOfComponentsPerPixel() == 3
    fused = sitk.GetArrayFromImage(result.fused)
    assert np.isfinite(fused).all() and fused.min() == 0.0 and 0.3 < fused.max() <= 1.0
    corners = fused[[0, 0, -1, -1], [0, -1, 0, -1], [0, -1, -1, 0]]
    assert np.all(corners == 0.0), "background must stay black"


def test_slices_are_cropped_batched_and_empty_ones_skipped(mri: sitk.Image, pet: sitk.Image) -> None:
    fuser = FakeFuser()
    result = pipeline.fuse_images(mri, pet, FuseOptions(batch_size=8), fuser=fuser)
    details = result.report["fusion"]
    size_x, size_y, size_z = mri.GetSize()
    assert all(n <= 8 for n, _h, _w in fuser.calls)
    assert sum(n for n, _h, _w in fuser.calls) == details["slices_fused"] < size_z
    _n, height, width = fuser.calls[0]
    assert height < size_y and width < size_x
    (z0, z1), (y0, y1), (x0, x1) = details["crop_zyx"]
    assert (y1 - y0, x1 - x0) == (height, width)
    fused = sitk.GetArrayFromImage(result.fused)
    assert not fused[:z0].any() and not fused[z1:].any()


def test_fuse_images_is_deterministic(mri: sitk.Image, pet: sitk.Image) -> None:
    first = pipeline.fuse_images(mri, pet, fuser=FakeFuser())
    second = pipeline.fuse_images(mri, pet, fuser=FakeFuser())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(first.fused), sitk.GetArrayFromImage(second.fused))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(first.overlay), sitk.GetArrayFromImage(second.overlay))


def _recorded_pet_inputs(mri: sitk.Image, pet: sitk.Image, options: FuseOptions) -> tuple[list[np.ndarray], Any]:
    seen: list[np.ndarray] = []

    class Recorder(FakeFuser):
        def fuse(self, mri_slices: np.ndarray, pet_slices: np.ndarray) -> np.ndarray:
            seen.append(pet_slices)
            return super().fuse(mri_slices, pet_slices)

    return seen, pipeline.fuse_images(mri, pet, options, fuser=Recorder())


def test_network_sees_the_windowed_uptake_and_overlay_keeps_pet_colour(mri: sitk.Image, pet: sitk.Image) -> None:
    seen, result = _recorded_pet_inputs(mri, pet, FuseOptions(pet_window=(0.0, 10.0), colormap="hot"))
    pet_values = sitk.GetArrayFromImage(result.pet_on_mri)
    (z0, _z1), (y0, y1), (x0, x1) = result.report["fusion"]["crop_zyx"]
    first = pet_values[z0 : z0 + seen[0].shape[0], y0:y1, x0:x1]
    # an explicit window: linear from LOW to HIGH, clipped (no colour map: brightness rises with uptake), then
    # lifted by the power the report gives
    gamma = result.report["pet_window"].pop("gamma")
    np.testing.assert_allclose(seen[0], np.clip(first / 10.0, 0, 1) ** gamma, atol=1e-6)
    assert result.report["pet_window"] == {"low": 0.0, "high": 10.0, "source": "--pet-window", "units": None}
    assert result.report["fusion"]["network_pet_input"].startswith("PET windowed")
    overlay = sitk.GetArrayFromImage(result.overlay).astype(float)
    hot = pet_values > 6.0
    assert (overlay[hot][:, 0] - overlay[hot][:, 2]).mean() > 40, "hot PET shows in warm colours"


def test_default_pet_input_rises_with_uptake_without_clipping(mri: sitk.Image, pet: sitk.Image) -> None:
    seen, result = _recorded_pet_inputs(mri, pet, FuseOptions())
    pet_values = sitk.GetArrayFromImage(result.pet_on_mri)
    (z0, _z1), (y0, y1), (x0, x1) = result.report["fusion"]["crop_zyx"]
    uptake = np.concatenate([v.ravel() for v in seen])
    original = pet_values[z0 : z0 + sum(len(v) for v in seen), y0:y1, x0:x1].ravel()
    order = np.argsort(original, kind="stable")
    assert np.all(np.diff(uptake[order]) >= -1e-6), "the network input never falls as uptake rises"
    assert uptake.max() < 1.0, "the hottest voxels are compressed, not clipped to one value"


@pytest.mark.parametrize("share", [0.0, FuseOptions().pet_blend, 0.5])
def test_the_fused_volume_carries_its_share_of_the_pet_input_voxel_by_voxel(
    mri: sitk.Image, pet: sitk.Image, share: float
) -> None:
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    class AnatomyOnly(FakeFuser):  # a fusion that ignores the PET altogether
        def fuse(self, mri_slices: np.ndarray, pet_slices: np.ndarray) -> np.ndarray:
            seen.append((mri_slices, pet_slices))
            return mri_slices.copy()

    result = pipeline.fuse_images(mri, pet, FuseOptions(pet_blend=share), fuser=AnatomyOnly())
    fused = sitk.GetArrayFromImage(result.fused)
    (z0, _z1), (y0, y1), (x0, x1) = result.report["fusion"]["crop_zyx"]
    mri_in = np.concatenate([m for m, _ in seen])
    pet_in = np.concatenate([p for _, p in seen])
    inside = pipeline.fused_region(mri)[z0 : z0 + len(mri_in), y0:y1, x0:x1]
    expected = np.where(inside, (1 - share) * mri_in + share * pet_in, 0.0)
    np.testing.assert_allclose(fused[z0 : z0 + len(mri_in), y0:y1, x0:x1], expected, atol=1e-6)
    assert result.report["fusion"]["pet_blend"] == share


def test_pet_display_is_linear_to_the_knee_then_compressed_and_the_lift_a_power() -> None:
    values = np.array([0.0, 4.5, 9.0, 10.0, 15.0, 30.0, 1e6])
    window = pipeline.PetWindow(0.0, 10.0, "test", knee=0.9)
    mapped = pipeline.pet_display(values, window)
    np.testing.assert_allclose(mapped[:3], [0.0, 0.45, 0.9], atol=1e-6)
    assert np.all(np.diff(mapped[:-1]) > 0)
    assert 0.9 < mapped[3] < mapped[4] < mapped[5] < 1.0 and mapped[-1] == pytest.approx(1.0)
    clipped = pipeline.PetWindow(0.0, 10.0, "--pet-window", knee=None)
    np.testing.assert_allclose(pipeline.pet_display(values, clipped), [0, 0.45, 0.9, 1, 1, 1, 1])
    lifted = pipeline.PetWindow(0.0, 10.0, "test", knee=0.9, gamma=0.5)
    np.testing.assert_allclose(pipeline.pet_input(values, lifted), np.sqrt(mapped), rtol=1e-6)


@pytest.mark.parametrize(
    ("median", "gamma"),
    [
        (0.5, 1.0),
        (0.31, 1.0),
        (0.2, np.log(0.31) / np.log(0.2)),
        (0.1, np.log(0.31) / np.log(0.1)),
        (0.01, 0.5),
        (0.0, 0.5),
    ],
)
def test_lift_takes_a_low_median_up_to_the_floor_within_bounds(median: float, gamma: float) -> None:
    assert pipeline.PET_MEDIAN_FLOOR == 0.31 and pipeline.PET_GAMMA_MIN == 0.5
    assert pipeline.lift_gamma(median) == pytest.approx(gamma, rel=1e-9)


def test_default_pet_window_puts_the_hot_head_at_the_knee(pet: sitk.Image) -> None:
    values = sitk.GetArrayFromImage(pet)
    window = pipeline.pet_window(values, values > 0.5)
    assert window.low == pytest.approx(np.percentile(values, 0.5), abs=1e-3)
    assert 8.0 / window.high == pytest.approx(pipeline.PET_KNEE, abs=0.1)  # grey matter uptake is 8
    assert "percentiles" in window.source and window.knee == pipeline.PET_KNEE


def _warm_body_with_a_hot_spot() -> tuple[np.ndarray, np.ndarray]:
    """A whole-body-like PET on the MRI's grid: warm body (4), a hot spot (20) of 0.9 % of the body."""
    values = np.zeros((30, 40, 40), np.float32)
    values[2:28, 5:35, 5:35] = 4.0 + 0.2 * np.random.default_rng(0).standard_normal((26, 30, 30))
    values[12:18, 17:23, 17:23] = 20.0
    region = np.zeros(values.shape, bool)
    region[2:28, 5:35, 5:35] = True
    return values, region


def test_a_pet_whose_body_sits_low_in_its_window_is_lifted_to_the_floor() -> None:
    """The hot spot sets the window; the lift brings the body's windowed median up to the floor, and the
    order of uptake and the hot spot's place at the top stay."""
    values, region = _warm_body_with_a_hot_spot()
    window = pipeline.pet_window(values, region)
    body = values[region]
    assert np.median(pipeline.pet_display(body, window)) == pytest.approx(0.8 * 4.0 / 20.0, abs=0.01)
    assert window.gamma == pytest.approx(np.log(0.31) / np.log(0.16), abs=0.02)
    assert np.median(pipeline.pet_input(body, window)) == pytest.approx(pipeline.PET_MEDIAN_FLOOR, abs=0.02)
    order = np.argsort(values, axis=None)
    assert np.all(np.diff(pipeline.pet_input(values, window).ravel()[order]) >= 0)
    assert pipeline.pet_input(np.float32(20.0), window) > 0.8


def test_the_pet_window_is_set_by_the_uptake_where_the_mri_body_is() -> None:
    """A regional MRI (its body: the lower half) inside a PET whose hot spot lies outside it: the window
    comes from the region's own uptake; region voxels outside the PET's field of view (0) do not count."""
    values, _ = _warm_body_with_a_hot_spot()
    region = np.zeros(values.shape, bool)
    region[2:28, 20:40, 5:35] = True  # rows 35-39 lie outside the PET's body and field (0)
    values[2:28, 20:35, 5:35] = 4.0  # no hot spot in the region, flat uptake
    window = pipeline.pet_window(values, region)
    assert 4.0 / window.high == pytest.approx(pipeline.PET_KNEE, abs=1e-6)
    assert window.gamma == 1.0  # the region's median sits at the knee
    explicit = pipeline.pet_window(values, region, (0.0, 40.0))
    assert (explicit.low, explicit.high, explicit.knee, explicit.source) == (0.0, 40.0, None, "--pet-window")
    assert explicit.gamma == pytest.approx(np.log(0.31) / np.log(0.1), abs=1e-6)
    assert pipeline.pet_window(np.zeros((4, 8, 8), np.float32), np.ones((4, 8, 8), bool)).gamma == 1.0


def test_a_flat_mri_anatomy_is_mid_grey_and_a_head_keeps_its_top_at_mri_top(mri: sitk.Image) -> None:
    flat = np.zeros((20, 30, 30), np.float32)
    flat[2:18, 5:25, 5:25] = 500.0 + np.random.default_rng(0).normal(0.0, 5.0, (16, 20, 20))
    body = flat > 0
    low, high = pipeline.mri_window(flat, body)
    assert (np.median(flat[body]) - low) / (high - low) == pytest.approx(pipeline.MRI_FLAT_MEDIAN_TOP, abs=1e-6)
    two_tissues = flat.copy()  # 60 % at 400, 40 % at 600: the 99.5th percentile alone puts the median at 0.53
    two_tissues[2:18, 5:25, 5:13] = 600.0
    two_tissues[2:18, 5:25, 13:25] = 400.0
    low, high = pipeline.mri_window(two_tissues, body)
    assert (np.median(two_tissues[body]) - low) / (high - low) == pytest.approx(pipeline.MRI_MEDIAN_TOP, abs=1e-6)
    values = sitk.GetArrayFromImage(mri)
    head = pipeline.fused_region(mri)
    low, high = pipeline.mri_window(values, head)
    assert (np.percentile(values[head], 99.5) - low) / (high - low) == pytest.approx(pipeline.MRI_TOP, abs=1e-3)


@pytest.mark.slow
def test_same_anatomy_stored_ras_lps_or_oblique_fuses_to_the_same_physical_result(pet: sitk.Image) -> None:
    results = []
    for direction in (ORIENTATIONS["LPS"], ORIENTATIONS["RAS"], oblique_direction((4.0, -3.0, 6.0))):
        grid = Grid((48, 56, 50), (3.0, 3.0, 3.0), direction)
        mri = phantom_mri(grid, noise=0.0)
        result = pipeline.fuse_images(mri, pet, FuseOptions(pet_window=(0.0, 12.0)), fuser=FakeFuser())
        assert_on_grid(result.fused, mri)
        results.append(result)
    reference = results[0].fused
    centre = np.zeros(3)
    for result in results[1:]:
        on_reference = sitk.Resample(result.fused, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
        a, b = sitk.GetArrayFromImage(reference), sitk.GetArrayFromImage(on_reference)
        inner = np.linalg.norm(Grid((48, 56, 50), (3.0, 3.0, 3.0)).points() - centre, axis=-1) < 55.0
        assert np.corrcoef(a[inner], b[inner])[0, 1] > 0.95
        np.testing.assert_allclose(
            result.transform.TransformPoint((10.0, 20.0, 30.0)),
            results[0].transform.TransformPoint((10.0, 20.0, 30.0)),
            atol=0.8,
        )


def test_register_none_refuses_pet_that_does_not_overlap(mri: sitk.Image) -> None:
    far_pet = phantom_pet(
        Grid((30, 30, 30), (4.0, 4.0, 4.0), centre=(0.0, 0.0, 500.0)), rigid(translation_mm=(0, 0, 500))
    )
    with pytest.raises(
        InvalidInputError, match=r"under --register none the PET and MRI barely overlap \(0% of the smaller body\)"
    ):
        pipeline.fuse_images(mri, far_pet, FuseOptions(register="none"), fuser=FakeFuser())


def test_register_none_uses_scanner_coordinates(mri: sitk.Image) -> None:
    aligned_pet = phantom_pet(PET_GRID)
    result = pipeline.fuse_images(mri, aligned_pet, FuseOptions(register="none"), fuser=FakeFuser())
    record = result.report["registration"]
    assert result.registration is None and record["source"] == "none (scanner coordinates)"
    assert record["requested"] == "none" and record["decision"] == "--register none keeps the scanners' coordinates"
    assert record["moved_mm"] == 0.0 and record["overlap"] > 0.9 and record["confidence"]["level"] == "medium"
    assert result.transform.GetParameters() == (0.0,) * 6


def test_fuse_files_writes_everything_and_the_transform_round_trips(files: tuple[Path, Path], tmp_path: Path) -> None:
    mri_path, pet_path = files
    out = tmp_path / "out" / "fused.nii.gz"
    options = FuseOptions(
        report=tmp_path / "out" / "report.json",
        save_transform=tmp_path / "out" / "pet_to_mri.tfm",
        preview=tmp_path / "out" / "preview.png",
    )
    with pytest.warns(MedfuseWarning, match="did not exist and was created"):
        result = pipeline.fuse_files(mri_path, pet_path, out, options, fuser=FakeFuser())
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == ["fused.nii.gz", "fused_overlay.nii.gz", "pet_to_mri.tfm", "preview.png", "report.json"]
    mri = sitk.ReadImage(str(mri_path))
    assert_on_grid(sitk.ReadImage(str(out)), mri)
    overlay = sitk.ReadImage(str(tmp_path / "out" / "fused_overlay.nii.gz"))
    assert_on_grid(overlay, mri)
    assert overlay.GetNumberOfComponentsPerPixel() == 3 and overlay.GetPixelID() == sitk.sitkVectorUInt8
    saved = sitk.ReadTransform(str(options.save_transform))
    for point in ((0.0, 0.0, 0.0), (40.0, -30.0, 20.0)):
        np.testing.assert_allclose(saved.TransformPoint(point), result.transform.TransformPoint(point), atol=1e-9)
        np.testing.assert_allclose(saved.TransformPoint(point), TRUTH.TransformPoint(point), atol=1.0)
    report = json.loads(options.report.read_text())
    assert report["inputs"]["mri"]["path"] == str(mri_path) and report["inputs"]["pet"]["format"] == "NRRD"
    assert report["inputs"]["mri"]["orientation"] == "RAS" and report["inputs"]["pet"]["orientation"] == "LPS"
    record = report["registration"]
    assert record["requested"] == "auto" and record["source"] == "rigid" and record["metric_value"] < -0.5
    assert record["decision"].startswith("no frame of reference is known for the MRI and PET (not DICOM)")
    assert record["metric_value"] < record["metric_header"] and record["transform"]["type"] == "Euler3DTransform"
    assert record["moved_mm"] > 5.0 and record["overlap"] > 0.9 and record["confidence"]["level"] in ("high", "medium")
    assert set(report["timings_s"]) >= {"load_mri", "load_pet", "register", "resample", "fuse", "write", "total"}
    assert report["fusion"]["method"] == "fake-mean" and report["fusion"]["device"] == "cpu"
    assert report["versions"]["SimpleITK"] and report["outputs"]["fused"] == str(out)


def test_saved_transform_is_reused_without_registering(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfuse import registration

    mri_path, pet_path = files
    first = pipeline.fuse_files(
        mri_path, pet_path, tmp_path / "a.nii", FuseOptions(save_transform=tmp_path / "t.tfm"), fuser=FakeFuser()
    )

    def no_registration(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("--transform must skip registration")

    monkeypatch.setattr(registration.placement, "register", no_registration)
    second = pipeline.fuse_files(
        mri_path, pet_path, tmp_path / "b.nii", FuseOptions(transform=tmp_path / "t.tfm"), fuser=FakeFuser()
    )
    assert second.report["registration"]["source"] == f"file {tmp_path / 't.tfm'}"
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(second.fused), sitk.GetArrayFromImage(first.fused), rtol=0, atol=1e-6
    )


def test_transform_that_misses_the_body_is_refused(files: tuple[Path, Path], tmp_path: Path) -> None:
    sitk.WriteTransform(rigid(translation_mm=(0.0, 400.0, 0.0)), str(tmp_path / "off.tfm"))
    with pytest.raises(InvalidInputError, match=r"off\.tfm: with this transform the PET and MRI barely overlap"):
        pipeline.fuse_files(
            *files, tmp_path / "f.nii.gz", FuseOptions(transform=tmp_path / "off.tfm"), fuser=FakeFuser()
        )


def test_four_d_pet_and_nan_voxels(mri: sitk.Image, pet: sitk.Image, tmp_path: Path) -> None:
    frames = np.stack([sitk.GetArrayFromImage(pet) * (i + 1) for i in range(3)]).astype(np.float32)
    frames[1, 0, 0, :5] = np.nan
    dynamic = sitk.GetImageFromArray(frames, isVector=False)
    dynamic.SetSpacing((*pet.GetSpacing(), 300.0))
    dynamic.SetOrigin((*pet.GetOrigin(), 0.0))
    sitk.WriteImage(mri, str(tmp_path / "mri.nii.gz"))
    sitk.WriteImage(dynamic, str(tmp_path / "dynamic.nii.gz"))
    with pytest.raises(InvalidInputError, match="has 3 frames"), pytest.warns(MedfuseWarning, match="NaN"):
        pipeline.fuse_files(
            tmp_path / "mri.nii.gz", tmp_path / "dynamic.nii.gz", tmp_path / "f.nii.gz", fuser=FakeFuser()
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamic.nii.gz", "mri.nii.gz"]
    with pytest.warns(MedfuseWarning, match="5 NaN or infinite voxels in the PET were set to 0"):
        result = pipeline.fuse_files(
            tmp_path / "mri.nii.gz",
            tmp_path / "dynamic.nii.gz",
            tmp_path / "f.nii.gz",
            FuseOptions(frame="1"),
            FakeFuser(),
        )
    assert np.isfinite(sitk.GetArrayFromImage(result.fused)).all()
    assert result.report["inputs"]["pet"]["frame"] == "1"


def test_outputs_are_checked_before_any_work(files: tuple[Path, Path], tmp_path: Path) -> None:
    mri_path, pet_path = files
    existing = tmp_path / "fused.nii.gz"
    existing.write_bytes(b"keep me")
    fuser = FakeFuser()
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        pipeline.fuse_files(mri_path, pet_path, existing, fuser=fuser)
    assert existing.read_bytes() == b"keep me" and fuser.calls == []
    with pytest.raises(OutputError, match=r"unknown output extension '\.png'"):
        pipeline.fuse_files(mri_path, pet_path, tmp_path / "fused.png", fuser=fuser)
    with pytest.raises(OutputError, match="the output path is one of the inputs"):
        pipeline.fuse_files(mri_path, pet_path, mri_path, FuseOptions(overwrite=True), fuser=fuser)
    with pytest.raises(UsageError, match="--format nrrd does not match"):
        pipeline.fuse_files(mri_path, pet_path, tmp_path / "f.nii.gz", FuseOptions(output_format="nrrd"), fuser=fuser)
    with pytest.raises(UsageError, match="--pet-window 5 1: LOW must be a number below HIGH"):
        pipeline.fuse_files(mri_path, pet_path, tmp_path / "f.nii.gz", FuseOptions(pet_window=(5, 1)), fuser=fuser)
    with pytest.raises(UsageError, match="--pet-blend 1: use a share from 0"):
        pipeline.fuse_files(mri_path, pet_path, tmp_path / "f.nii.gz", FuseOptions(pet_blend=1.0), fuser=fuser)
    with pytest.raises(UsageError, match="--register bspline: unknown mode"):
        pipeline.fuse_files(mri_path, pet_path, tmp_path / "f.nii.gz", FuseOptions(register="bspline"), fuser=fuser)
    with pytest.raises(UsageError, match="--colormap 'rainbow' is not a known colour map"):
        pipeline.fuse_files(mri_path, pet_path, tmp_path / "f.nii.gz", FuseOptions(colormap="rainbow"), fuser=fuser)
    assert fuser.calls == []


def test_a_failed_write_leaves_nothing_behind(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfuse import io

    real_write = io.write_volume

    def disk_full_on_overlay(image: sitk.Image, path: Path) -> None:
        if image.GetNumberOfComponentsPerPixel() == 3:
            raise OSError(28, "No space left on device")
        real_write(image, path)

    monkeypatch.setattr(io, "write_volume", disk_full_on_overlay)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    options = FuseOptions(report=out_dir / "r.json", save_transform=out_dir / "t.tfm")
    with pytest.raises(OutputError, match="No space left on device"):
        pipeline.fuse_files(*files, out_dir / "fused.nii.gz", options, fuser=FakeFuser())
    assert list(out_dir.iterdir()) == []


def test_inputs_are_never_modified(files: tuple[Path, Path], tmp_path: Path) -> None:
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    pipeline.fuse_files(*files, tmp_path / "fused.mha", FuseOptions(register="none"), fuser=FakeFuser())
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in files] == before


def test_default_fuser_comes_from_the_method(mri: sitk.Image, pet: sitk.Image) -> None:
    result = pipeline.fuse_images(mri, pet, FuseOptions(method="laplacian", register="none"))
    assert result.report["fusion"]["method"] == "laplacian"
    fused = sitk.GetArrayFromImage(result.fused)
    assert np.isfinite(fused).all() and fused.max() > 0.2


def test_dicom_folders_keep_their_series_info_and_patients_are_checked(
    mri: sitk.Image, pet: sitk.Image, tmp_path: Path
) -> None:
    from dicom_factory import make_series

    make_series(tmp_path / "mri", mri, modality="MR", patient_id="PAT-A", description="T1")
    make_series(tmp_path / "pet", pet, modality="PT", patient_id="PAT-B", rescale="slice", description="FDG")
    with pytest.raises(InvalidInputError, match="PatientID 'PAT-B' but the MRI to 'PAT-A'"):
        pipeline.fuse_files(tmp_path / "mri", tmp_path / "pet", tmp_path / "f.nii.gz", fuser=FakeFuser())
    assert not (tmp_path / "f.nii.gz").exists()
    options = FuseOptions(allow_different_patients=True, register="none")
    with pytest.warns(MedfuseWarning, match="allow-different-patients"):
        result = pipeline.fuse_files(tmp_path / "mri", tmp_path / "pet", tmp_path / "f.nii.gz", options, FakeFuser())
    assert_on_grid(result.fused, mri)
    assert result.mri_info["dicom"]["patient_id"] == "PAT-A"
    assert result.report["inputs"]["pet"]["dicom"]["modality"] == "PT"
    assert result.report["inputs"]["mri"]["format"] == "DICOM"


# ---- the registered PET (--save-pet) and the hotspot readout ------------------------------------------
def test_save_pet_writes_the_registered_pet_and_the_report_reads_out_the_lesion(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    from synthetic import LESION_CENTRE, LESION_RADIUS

    mri_path, pet_path = files
    out = tmp_path / "out"
    options = FuseOptions(report=out / "report.json", save_pet=out / "pet_on_mri.nrrd")
    with pytest.warns(MedfuseWarning, match="did not exist and was created"):
        result = pipeline.fuse_files(mri_path, pet_path, out / "fused.nii.gz", options, fuser=FakeFuser())
    saved = sitk.ReadImage(str(out / "pet_on_mri.nrrd"))
    mri = sitk.ReadImage(str(mri_path))
    assert_on_grid(saved, mri)
    assert saved.GetPixelID() == sitk.sitkFloat32  # the PET's own values, for measuring
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), sitk.GetArrayFromImage(result.pet_on_mri))
    report = json.loads((out / "report.json").read_text())
    assert report["outputs"]["pet"] == str(out / "pet_on_mri.nrrd")
    hotspots = report["hotspots"]
    assert hotspots["units"] == "image units" and hotspots["is_suv"] is False
    assert hotspots["grid"] == "PET (native, not resampled)"
    native = sitk.ReadImage(str(pet_path))
    assert hotspots["max"]["value"] == pytest.approx(float(sitk.GetArrayFromImage(native).max()))
    lesion = hotspots["regions"][0]  # the lesion (20 against grey matter's 8) is the hottest, in PET space...
    np.testing.assert_allclose(lesion["centre_mm"], TRUTH.TransformPoint(LESION_CENTRE), atol=2.0)
    assert lesion["volume_ml"] == pytest.approx(4 / 3 * np.pi * LESION_RADIUS**3 / 1000, rel=0.35)
    # ... and falls in the MRI voxel of the lesion, through the registration
    expected = mri.TransformPhysicalPointToIndex(LESION_CENTRE)
    assert np.abs(np.subtract(lesion["mri_voxel"], expected)).max() <= 1
    assert "hotspots" in report["timings_s"]


@pytest.mark.parametrize("shortage", ["estimate", "allocation"])
def test_a_hotspot_readout_that_does_not_fit_in_memory_is_skipped_with_a_warning(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shortage: str
) -> None:
    from medfuse import hotspots

    if shortage == "estimate":  # more than the machine has: not even tried
        monkeypatch.setattr(hotspots, "readout_bytes", lambda shape, spacing: 10**18)
        reason = r"it needs up to 1000000\.0 TB of memory, more than the .* available"
    else:  # tried, and an allocation failed

        def out_of_memory(*args: object, **kwargs: object) -> None:
            raise MemoryError

        monkeypatch.setattr(hotspots, "find_hotspots", out_of_memory)
        reason = "this machine ran out of memory during it"
    mri_path, pet_path = files
    out = tmp_path / "fused.nii.gz"
    with pytest.warns(MedfuseWarning, match=rf"pet\.nrrd: the PET hotspot readout was skipped \({reason}\); the fused "
                      "outputs are complete"):  # fmt: skip
        result = pipeline.fuse_files(
            mri_path, pet_path, out, FuseOptions(report=tmp_path / "r.json"), fuser=FakeFuser()
        )
    assert out.is_file() and result.report["hotspots"] is None
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["hotspots"] is None and report["hotspots_skipped"].startswith("skipped: ")
    assert any("hotspot readout was skipped" in text for text in report["warnings"])


def test_save_pet_is_checked_with_the_other_outputs(files: tuple[Path, Path], tmp_path: Path) -> None:
    mri_path, pet_path = files
    wrong = FuseOptions(save_pet=tmp_path / "pet.png")
    with pytest.raises(OutputError, match=r"pet\.png: unknown output extension '\.png' for --save-pet"):
        pipeline.fuse_files(mri_path, pet_path, tmp_path / "f.nii.gz", wrong)
    same = FuseOptions(save_pet=tmp_path / "f.nii.gz")
    with pytest.raises(UsageError, match="the fused and the pet outputs would be the same file"):
        pipeline.fuse_files(mri_path, pet_path, tmp_path / "f.nii.gz", same)
    assert sorted(tmp_path.iterdir()) == sorted([mri_path, pet_path])


def test_dicom_pet_in_suv_with_a_dicom_export(mri: sitk.Image, pet: sitk.Image, tmp_path: Path) -> None:
    """--suv --format dicom --save-pet: DICOM series out, the registered PET in SUV as a volume file."""
    from dicom_factory import make_series, pet_suv_tags

    make_series(tmp_path / "in" / "mri", mri, modality="MR", description="T1")
    built = make_series(tmp_path / "in" / "pet", pet, modality="PT", rescale="slice", description="FDG",
                        extra=pet_suv_tags())  # fmt: skip
    options = FuseOptions(suv=True, output_format="dicom", save_pet=tmp_path / "pet_suv.nii.gz", register="none")
    with pytest.warns(MedfuseWarning, match="was created"):
        result = pipeline.fuse_files(tmp_path / "in" / "mri", tmp_path / "in" / "pet", tmp_path / "out", options,
                                     FakeFuser())  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fused", "overlay"]
    saved = sitk.ReadImage(str(tmp_path / "pet_suv.nii.gz"))
    assert_on_grid(saved, result.fused)
    factor = 2.960750161260463e-4  # 75 kg, 370 MBq, 1 h of F-18 decay (tests/unit/test_suv.py)
    suv_max = float(built.values.max()) * factor
    assert 0.5 * suv_max < float(sitk.GetArrayFromImage(saved).max()) <= suv_max * (1 + 1e-5)
    hotspots = result.report["hotspots"]
    assert hotspots["units"] == "SUVbw (g/mL)" and hotspots["is_suv"] is True
    assert hotspots["max"]["value"] == pytest.approx(suv_max, rel=1e-5)


def test_the_mri_median_top_rises_from_flat_to_textured_anatomies() -> None:
    spreads = [0.0, pipeline.MRI_FLAT_SPREAD, 0.15, pipeline.MRI_TEXTURED_SPREAD, 1.3]
    tops = [pipeline.mri_median_top(spread) for spread in spreads]
    assert tops[0] == tops[1] == pipeline.MRI_FLAT_MEDIAN_TOP and tops[3] == tops[4] == pipeline.MRI_MEDIAN_TOP
    assert tops[2] == pytest.approx((pipeline.MRI_FLAT_MEDIAN_TOP + pipeline.MRI_MEDIAN_TOP) / 2, abs=1e-9)
