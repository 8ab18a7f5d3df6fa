"""Training: data loading and split, the loss terms, augmentation, and a seconds-long smoke run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from scipy import ndimage
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.colour import colormap_values, rgb_to_ycbcr
from medfuse.errors import OutputError, UnreadableInputError, UsageError
from medfuse.inference import InputKind, bundled_weights_path, load_model
from medfuse.training import (
    CV_FOLDS,
    PairSet,
    TrainConfig,
    colour_luminance,
    cross_validate,
    dominant_gradient,
    edge_transfer,
    fusion_loss,
    load_harvard,
    load_pairs,
    monotone_shortfall,
    order_shortfall,
    paint_plateau,
    pet_bumps,
    sample_batch,
    sobel_gradients,
    train,
    training_split,
)

SIZE = 32


def _write_pairs(root: Path, functional: str, names: list[str], rng: np.random.Generator) -> None:
    (root / "MRI").mkdir(parents=True)
    (root / functional).mkdir()
    for name in names:
        mri = np.zeros((SIZE, SIZE), np.uint8)
        mri[4:-4, 4:-4] = rng.integers(0, 256, (SIZE - 8, SIZE - 8))
        pet = np.zeros((SIZE, SIZE, 3), np.uint8)
        pet[8:-8, 8:-8] = rng.integers(0, 256, (SIZE - 16, SIZE - 16, 3))
        Image.fromarray(mri).save(root / "MRI" / name)
        Image.fromarray(pet).save(root / functional / name)


@pytest.fixture
def harvard_like(tmp_path: Path, rng: np.random.Generator) -> Path:
    """A miniature copy of the Harvard layout: PET series 25 and 41, one SPECT series, 32x32 slices."""
    data = tmp_path / "harvard"
    _write_pairs(data / "PET-MRI", "PET", ["25001.png", "25002.png", "41001.png", "41002.png"], rng)
    _write_pairs(data / "SPECT-MRI", "SPECT", ["3001.png", "3002.png"], rng)
    return data


def _quick_validate(fused: np.ndarray, mri: np.ndarray, pet: np.ndarray) -> dict[str, float]:
    return {"MAE": float(np.abs(fused - np.maximum(mri, pet)).mean())}


def _config(data: Path, output: Path | None, **changes: object) -> TrainConfig:
    settings: dict[str, object] = {
        "epochs": 2,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "crop": 16,
        "channels": (4, 8, 16),
        "threads": 1,
    }
    settings.update(changes)
    return TrainConfig(data=data, output=output, **settings)  # type: ignore[arg-type]


def test_load_pairs_reads_mri_functional_luminance_and_uptake(harvard_like: Path) -> None:
    pairs = load_pairs(harvard_like, "PET")
    assert pairs.names == ["25001.png", "25002.png", "41001.png", "41002.png"]
    assert pairs.groups == ["PET25", "PET25", "PET41", "PET41"]
    assert pairs.series == ["25", "25", "41", "41"]
    assert pairs.mri.shape == pairs.functional.shape == pairs.uptake.shape == (4, SIZE, SIZE)
    rgb = np.asarray(Image.open(harvard_like / "PET-MRI" / "PET" / "41002.png"), np.float32) / 255
    np.testing.assert_allclose(pairs.functional[3], np.clip(rgb_to_ycbcr(rgb)[0], 0, 1), atol=1e-6)
    np.testing.assert_array_equal(pairs.uptake[3], colormap_values(rgb, "aanlib"))
    spect = load_pairs(harvard_like, "SPECT")
    assert spect.groups == ["SPECT3", "SPECT3"] and spect.series == ["3", "3"]
    rgb = np.asarray(Image.open(harvard_like / "SPECT-MRI" / "SPECT" / "3001.png"), np.float32) / 255
    np.testing.assert_array_equal(spect.uptake[0], colormap_values(rgb, "aanlib-spect"))


def test_missing_data_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match=r"PET-MRI/MRI: folder not found; --data must point at the Harvard"):
        load_pairs(tmp_path, "PET")


def test_split_keeps_whole_series_apart(harvard_like: Path) -> None:
    train_pairs, held_out = training_split(load_harvard(harvard_like), ["PET41", "SPECT3"])
    assert train_pairs.names == ["25001.png", "25002.png"]
    assert held_out.groups == ["PET41", "PET41", "SPECT3", "SPECT3"]
    with pytest.raises(UsageError, match=r"--holdout PET99: no such series; choose from PET25, PET41, SPECT3"):
        training_split(load_harvard(harvard_like), ["PET99"])


def test_cross_validation_folds_hold_out_every_series_once() -> None:
    pet = {"PET25", "PET30", "PET41"}
    spect = {f"SPECT{n}" for n in (3, 4, 10, 11, 15, 18, 21, 22, 25, 28, 29, 35, 40)}
    held = [group for fold in CV_FOLDS for group in fold]
    assert len(held) == len(set(held)), "no series is held out twice"
    assert set(held) == pet | spect, "every series is held out once"
    for fold in CV_FOLDS:  # one PET-MRI (T1) series and some SPECT-MRI (T2) series in each fold
        assert len(set(fold) & pet) == 1 and set(fold) & spect


def test_sobel_gradients_of_a_vertical_step() -> None:
    image = torch.zeros(1, 1, 5, 6)
    image[..., 3:] = 1.0
    gx, gy = sobel_gradients(image)[0]
    # columns 2 and 3 straddle the step: Gx = 1 + 2 + 1 = 4; no vertical change; flat areas give 0
    assert torch.all(gx[:, 2:4] == 4.0) and torch.all(gy == 0.0)
    assert torch.all(gx[:, :2] == 0.0) and torch.all(gx[:, 4:] == 0.0)


def test_gradient_target_is_the_stronger_edge_with_its_sign() -> None:
    mri = torch.zeros(1, 1, 6, 6)
    mri[..., 3:] = 0.2  # weak edge rising to the right
    pet = torch.zeros(1, 1, 6, 6)
    pet[..., :3, :] = 0.9  # strong edge falling downwards, on the top half
    target = dominant_gradient(mri, pet)[0]
    assert target[1, 2, 0] == pytest.approx(-3.6)  # PET's edge wins where it exists (rows 2-3)
    assert target[0, 2, 0] == 0.0
    assert target[0, 0, 2] == pytest.approx(0.8) and target[1, 0, 2] == 0.0  # elsewhere the MRI's edge


def test_loss_terms_vanish_for_the_ideal_output() -> None:
    config = TrainConfig(data=Path(), output=None, gradient_gain=1.0)
    torch.manual_seed(0)
    image = torch.rand(2, 1, 16, 16)
    _, parts = fusion_loss(image.clone(), image, image, config)
    assert parts["intensity"] == pytest.approx(0.0, abs=1e-7)
    assert parts["gradient"] == pytest.approx(0.0, abs=1e-6)
    assert parts["ssim"] == pytest.approx(0.0, abs=1e-5)


def test_gradient_gain_asks_for_edges_that_much_sharper_than_the_sources() -> None:
    torch.manual_seed(1)
    image = torch.rand(2, 1, 16, 16)
    config = TrainConfig(data=Path(), output=None, gradient_gain=1.05)
    _, as_is = fusion_loss(image.clone(), image, image, config)
    _, sharpened = fusion_loss(1.05 * image, image, image, config)
    assert sharpened["gradient"] == pytest.approx(0.0, abs=1e-6)
    assert as_is["gradient"] == pytest.approx(0.05 * 2.0 * float(sobel_gradients(image).abs().mean()), rel=1e-4)


def test_intensity_term_pulls_towards_the_brighter_source() -> None:
    config = TrainConfig(data=Path(), output=None, gradient_weight=0.0, ssim_weight=0.0, scd_weight=0.0)
    mri = torch.full((1, 1, 8, 8), 0.2)
    pet = torch.full((1, 1, 8, 8), 0.8)
    loss_at_max, _ = fusion_loss(pet.clone(), mri, pet, config)
    loss_at_mean, _ = fusion_loss((mri + pet) / 2, mri, pet, config)
    assert float(loss_at_max) == pytest.approx(0.0, abs=1e-7)
    assert float(loss_at_mean) == pytest.approx(0.3, abs=1e-6)


def test_monotone_shortfall_penalises_only_an_output_that_does_not_rise_with_the_pet() -> None:
    fused = torch.full((1, 1, 4, 4), 0.5)
    rise = torch.full((1, 1, 4, 4), 0.2)
    assert float(monotone_shortfall(fused, fused + 0.1 * rise, rise, slope=0.1)) == pytest.approx(0.0, abs=1e-6)
    assert float(monotone_shortfall(fused, fused + 0.5 * rise, rise, slope=0.1)) == 0.0
    # flat: short by 0.1 of the rise everywhere; falling by half the rise: short by 0.6 of it
    assert float(monotone_shortfall(fused, fused, rise, slope=0.1)) == pytest.approx(0.1)
    assert float(monotone_shortfall(fused, fused - 0.5 * rise, rise, slope=0.1)) == pytest.approx(0.6)


def _lesion(radius: float, rim: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat MRI, a blurred uniform PET disc, and a fused image that follows the PET, plus ``rim`` inside its edge."""
    rows, cols = np.mgrid[:48, :48]
    distance = np.hypot(rows - 24, cols - 24)
    pet = ndimage.gaussian_filter(np.where(distance < radius, 0.9, 0.2), 2.0).astype(np.float32)
    fused = 0.2 + pet + rim * ((distance > radius - 5) & (distance < radius))
    as_tensor = [torch.from_numpy(np.asarray(a, np.float32))[None, None] for a in (np.full_like(pet, 0.3), pet, fused)]
    return as_tensor[0], as_tensor[1], as_tensor[2]


def test_order_shortfall_penalises_a_hotter_pixel_drawn_darker_than_a_cooler_one_of_the_same_mri() -> None:
    mri, pet, fused = _lesion(radius=14, rim=0.0)
    assert float(order_shortfall(fused, mri, pet, slope=0.1)) == pytest.approx(0.0, abs=1e-7)  # rises with uptake
    # flat output: every pair short by 0.1 of its uptake difference
    assert float(order_shortfall(torch.full_like(fused, 0.5), mri, pet, slope=0.1)) == pytest.approx(0.1)
    _, _, rimmed = _lesion(radius=14, rim=0.1)  # a bright rim: the pixels just inside the edge outshine the centre
    assert float(order_shortfall(rimmed, mri, pet, slope=0.1)) > 0.005
    # falling with uptake: short by the whole difference plus the slope's share; the same output where no two
    # pixels of a pair share their MRI (a ramp steeper than the tolerance in every direction): nothing is compared
    assert float(order_shortfall(1.0 - pet, mri, pet, slope=0.1)) == pytest.approx(1.1)
    rows, cols = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    ramp = (0.05 * rows + 0.03 * cols)[None, None]
    assert float(order_shortfall(1.0 - pet, ramp, pet, slope=0.1)) == 0.0


def test_pet_bumps_are_positive_smooth_and_keep_the_pet_in_range(rng: np.random.Generator) -> None:
    pet = rng.random((3, 1, 32, 32), dtype=np.float32)
    pet[:, :, :, :8] = 0.0  # black: no bump there (the network keeps black pixels black)
    rise = pet_bumps(pet, np.random.default_rng(0))
    assert rise.shape == pet.shape and rise.dtype == np.float32
    assert rise.min() >= 0.0 and (pet + rise).max() <= 1.0 + 1e-6
    assert np.all(rise[:, :, :, :8] == 0.0) and rise.max() > 0.0


def test_paint_plateau_adds_one_uniform_hot_lesion_inside_the_anatomy() -> None:
    uptake = np.full((96, 96), 0.2, np.float32)
    mri = np.zeros((96, 96), np.float32)
    mri[30:70, 40:80] = 0.5  # the only anatomy: the lesion is centred in it
    flat_tops = []
    for seed in range(8):
        painted = paint_plateau(uptake, mri, np.random.default_rng(seed))
        assert painted.dtype == np.float32 and np.all(painted >= uptake)
        assert 0.4 - 1e-6 <= painted.max() <= 1.0
        plateau = painted >= painted.max() - 0.01  # the lesion's top, flat unless the lesion is small
        flat_tops.append(int(plateau.sum()))
        count = ndimage.label(painted > 0.2 + 1e-3)[1]
        assert count == 1  # one lesion, blurred at its edge
        centre = ndimage.center_of_mass(plateau)
        assert 30 <= centre[0] < 70 and 40 <= centre[1] < 80
    assert max(flat_tops) >= 200  # broad plateaus among them


def test_sample_batch_paints_plateaus_only_into_uptake_crops_when_asked() -> None:
    uptake = np.full((2, 32, 32), 0.1, np.float32)
    mri = np.full((2, 32, 32), 0.5, np.float32)
    colour = colour_luminance(uptake, "aanlib")
    pairs = PairSet(["p", "q"], ["PET1", "PET2"], mri, colour, uptake)

    def crops(uptake_share: float, plateau_share: float) -> np.ndarray:
        config = TrainConfig(data=Path(), output=None, uptake_share=uptake_share, plateau_share=plateau_share)
        config.uptake_scale, config.mri_gamma = 1.0, 1.0
        return sample_batch(pairs, np.random.default_rng(1), 16, 32, config)[1][:, 0]

    assert np.all(crops(1.0, 0.0) == 0.1)  # uptake as it is
    assert all(crop.max() >= 0.4 for crop in crops(1.0, 1.0))  # a lesion of 0.4-1.0 in every uptake crop
    assert np.all(crops(0.0, 1.0) == colour[0, 0, 0])  # colour crops are never painted


def test_sample_batch_crops_come_from_the_slices(rng: np.random.Generator) -> None:
    mri = rng.random((3, 20, 20), dtype=np.float32)
    pairs = PairSet(["a", "b", "c"], ["PET1", "PET1", "PET1"], mri, 1 - mri, mri.copy())
    mri_batch, pet_batch, uptake_crops = sample_batch(pairs, np.random.default_rng(5), batch_size=6, crop=8)
    assert not uptake_crops.any()  # no uptake crops without the recipe's config
    assert mri_batch.shape == pet_batch.shape == (6, 1, 8, 8)
    # without augmentation the PET crop is taken at the same place with the same flips and turns
    np.testing.assert_allclose(pet_batch, 1 - mri_batch, atol=1e-6)
    values = set(np.round(mri.ravel(), 6))
    assert set(np.round(mri_batch.ravel(), 6)) <= values


def test_sample_batch_mixes_the_input_kinds(rng: np.random.Generator) -> None:
    uptake = np.tile(np.linspace(0.0, 1.0, 16, dtype=np.float32), (2, 16, 1))
    mri = np.full((2, 16, 16), 0.5, np.float32)
    spect_y = colour_luminance(uptake, "aanlib-spect")
    pairs = PairSet(["p", "s"], ["PET1", "SPECT1"], mri, spect_y, uptake)
    config = TrainConfig(data=Path(), output=None, uptake_share=0.5, pet_map_share=0.5, uptake_scale=1.0)
    config.spect_share, config.mri_gamma = 1.0, 1.0  # SPECT only, MRI untouched
    _, pet_batch, uptake_crops = sample_batch(pairs, np.random.default_rng(3), batch_size=40, crop=16, config=config)
    kinds = {"uptake": uptake[1], "pet-map": colour_luminance(uptake[1], "aanlib"), "colour": spect_y[1]}
    seen = set()
    for crop, flagged in zip(pet_batch[:, 0], uptake_crops, strict=True):
        for kind, image in kinds.items():
            if any(np.allclose(crop, np.rot90(flipped, k)) for flipped in _flips(image) for k in range(4)):
                seen.add(kind)
                assert flagged == (kind == "uptake"), "the uptake flag names the uptake crops"
    assert seen == {"uptake", "pet-map", "colour"}


def _flips(image: np.ndarray) -> list[np.ndarray]:
    return [image, image[::-1], image[:, ::-1], image[::-1, ::-1]]


def test_smoke_training_writes_loadable_reproducible_weights(harvard_like: Path, tmp_path: Path) -> None:
    first = train(_config(harvard_like, tmp_path / "a.safetensors"))
    assert first.output is not None and first.output.is_file()
    assert len(first.history) == 2 and "monotone" in first.history[0]
    sidecar = tmp_path / "a.safetensors.sha256"
    assert sidecar.read_text().split() == [first.sha256, "a.safetensors"]
    assert hashlib.sha256(first.output.read_bytes()).hexdigest() == first.sha256
    model, digest = load_model(first.output)  # sidecar checked on load
    assert model.channels == (4, 8, 16) and digest == first.sha256
    with safe_open(str(first.output), "pt") as weights:
        stored = json.loads(weights.metadata()["medfuse"])
    capability = torch.backends.cpu.get_cpu_capability()
    assert stored["trained_with"] == {"torch": torch.__version__, "cpu_capability": capability}
    assert stored["recipe"]["seed"] == "0" and set(stored["final_losses"]) >= {"loss", "monotone"}
    second = train(_config(harvard_like, tmp_path / "b.safetensors"))
    assert second.sha256 == first.sha256, "same seed, same data, same threads: same weights"
    assert not list(tmp_path.glob(".*medfuse-tmp*"))


def test_cross_validation_scores_each_held_out_series(harvard_like: Path, tmp_path: Path) -> None:
    folds = [("PET25",), ("PET41", "SPECT3")]
    result = cross_validate(
        _config(harvard_like, None), folds, validate=_quick_validate, json_path=tmp_path / "cv.json"
    )
    assert list(result.folds[0]) == ["PET (T1) colour", "PET (T1) uptake"]
    assert list(result.folds[1]) == ["PET (T1) colour", "PET (T1) uptake", "T2 + PET map colour", "SPECT (T2) colour"]
    summary = result.summary()
    mean, spread = summary["PET (T1) colour"]["MAE"]
    values = [fold["PET (T1) colour"]["MAE"] for fold in result.folds]
    assert mean == pytest.approx(np.mean(values)) and spread == pytest.approx(np.std(values))
    assert summary["SPECT (T2) colour"]["MAE"][1] == 0.0, "one fold only: no spread"
    written = json.loads((tmp_path / "cv.json").read_text())
    assert written["folds"][1]["held_out"] == ["PET41", "SPECT3"] and "recipe" in written


def test_existing_output_is_refused_before_training(harvard_like: Path, tmp_path: Path) -> None:
    output = tmp_path / "w.safetensors"
    output.write_bytes(b"keep me")
    with pytest.raises(OutputError, match=r"w\.safetensors: the output already exists; pass --overwrite"):
        train(_config(harvard_like, output))
    assert output.read_bytes() == b"keep me"


def test_wrong_extension_and_bad_crop_are_refused(harvard_like: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"unknown output extension '\.pt' for --output"):
        train(_config(harvard_like, tmp_path / "w.pt"))
    with pytest.raises(UsageError, match=r"--crop 24: use a multiple of 16"):
        train(_config(harvard_like, tmp_path / "w.safetensors", crop=24))


def test_train_command(harvard_like: Path, tmp_path: Path) -> None:
    output = tmp_path / "cli.safetensors"
    args = ["train", "--data", str(harvard_like), "-o", str(output), "--epochs", "1", "--steps-per-epoch", "1"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "2", "--crop", "16", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert output.is_file() and (tmp_path / "cli.safetensors.sha256").is_file()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 5
    assert "the output already exists; pass --overwrite" in again.output


def test_train_command_needs_output_or_cv(harvard_like: Path, tmp_path: Path) -> None:
    neither = CliRunner().invoke(app, ["train", "--data", str(harvard_like)])
    both = CliRunner().invoke(
        app, ["train", "--data", str(harvard_like), "--cv", "-o", str(tmp_path / "w.safetensors")]
    )
    for result in (neither, both):
        assert result.exit_code == 2
        assert "give either --output FILE (train and write weights) or --cv" in result.output


@pytest.mark.parametrize("option", ["--uptake-share", "--spect-share", "--pet-map-share", "--plateau-share"])
def test_train_command_refuses_a_share_outside_0_to_1(harvard_like: Path, option: str) -> None:
    result = CliRunner().invoke(app, ["train", "--data", str(harvard_like), "--cv", option, "1.5"])
    assert result.exit_code == 2
    assert f"{option} 1.5: use a share between 0 and 1." in result.output


def test_train_command_bad_data_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "w.safetensors")])
    assert result.exit_code == 3
    assert "folder not found; --data must point at the Harvard data set" in result.output


@pytest.mark.slow
def test_real_data_cross_validation_split(harvard_dir: Path) -> None:
    pairs = load_harvard(harvard_dir)
    assert len(pairs.names) == 269 + 293
    for fold in CV_FOLDS:
        train_pairs, held_out = training_split(pairs, fold)
        assert set(held_out.groups) == set(fold) and not set(train_pairs.groups) & set(fold)
        assert len(train_pairs.names) + len(held_out.names) == len(pairs.names)
    assert pairs.uptake.min() >= 0.0 and pairs.uptake.max() <= 1.0
    assert pairs.functional.min() >= 0.0 and pairs.functional.max() <= 1.0


def test_complementarity_term_prefers_carrying_both_sources() -> None:
    config = TrainConfig(data=Path(), output=None)
    torch.manual_seed(2)
    mri, pet = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    _, additive = fusion_loss(mri + pet, mri, pet, config)
    _, mri_only = fusion_loss(mri.clone(), mri, pet, config)
    # F = A + B: F - B is A and F - A is B, both correlations are 1
    assert additive["scd"] == pytest.approx(0.0, abs=1e-6)
    assert mri_only["scd"] > 0.4


def test_edge_transfer_loss_matches_the_qabf_metric_and_its_descent_raises_the_metric() -> None:
    from medfuse.metrics import qabf

    rng = np.random.default_rng(4)
    rows, cols = np.mgrid[:64, :64]
    mri = (0.2 + 0.6 * (cols > 30) + 0.05 * rng.random((64, 64))).astype(np.float32)
    pet = (0.7 * np.exp(-((rows - 20) ** 2 + (cols - 40) ** 2) / 60.0)).astype(np.float32)
    candidates = {"max": np.maximum(mri, pet), "blurred mean": (mri + pet) / 2, "mri": mri.copy()}
    for name, fused in candidates.items():
        tensors = [torch.from_numpy(x[None, None]) for x in (fused, mri, pet)]
        expected = qabf(fused * 255, mri * 255, pet * 255)
        assert float(edge_transfer(*tensors)[0]) == pytest.approx(expected, abs=0.01), name
    sources = torch.from_numpy(mri[None, None]), torch.from_numpy(pet[None, None])
    flat = torch.full((1, 1, 64, 64), 0.5, requires_grad=True)
    (1.0 - edge_transfer(flat, *sources).mean()).backward()
    assert flat.grad is not None and torch.isfinite(flat.grad).all()
    # a few steps down the loss carry more of the sources' edges into F, as the metric measures it
    fused = torch.from_numpy(candidates["blurred mean"][None, None]).clone().requires_grad_(True)
    optimiser = torch.optim.SGD([fused], lr=0.5)
    for _ in range(5):
        optimiser.zero_grad()
        (1.0 - edge_transfer(fused, *sources).mean()).backward()
        optimiser.step()
    improved = fused.detach()[0, 0].clamp(0, 1).numpy()
    assert (
        qabf(improved * 255, mri * 255, pet * 255) > qabf(candidates["blurred mean"] * 255, mri * 255, pet * 255) + 0.01
    )
    config = TrainConfig(data=Path(), output=None, qabf_weight=1.0)
    _, parts = fusion_loss(
        torch.from_numpy(mri[None, None]).clone(),
        torch.from_numpy(mri[None, None]),
        torch.from_numpy(pet[None, None]),
        config,
    )
    assert 0.0 < parts["qabf"] < 1.0


@pytest.mark.parametrize(("kind", "changes"), [("uptake", {}), ("colour", {"order_weight": 0.0})])
def test_bundled_weights_store_the_documented_training_command(kind: InputKind, changes: dict[str, float]) -> None:
    """Each bundled file was trained on every series with `medfuse train`'s defaults and ``--threads 1``, the
    2-D one with ``--order-weight 0`` (the model card's commands), as its stored recipe says."""
    from medfuse import training

    with safe_open(str(bundled_weights_path(kind)), "pt") as weights:
        stored = json.loads(weights.metadata()["medfuse"])
    documented = TrainConfig(data=Path(), output=None, threads=1, **changes)
    assert stored["recipe"] == training._recipe(documented) and stored["held_out"] == []


def test_train_command_defaults_are_the_recipe() -> None:
    """`medfuse train`'s option defaults are TrainConfig's (the recipe of the bundled weights), knob by knob."""
    import inspect

    from medfuse import cli

    fields = {name: value.default for name, value in TrainConfig.__dataclass_fields__.items()}
    options = inspect.signature(cli.train).parameters
    not_recipe = ("data", "output", "holdout", "threads", "overwrite")
    shared = [name for name in options if name in fields and name not in not_recipe]
    assert len(shared) == 20  # every knob the command exposes
    for name in shared:
        assert options[name].default == fields[name], name
