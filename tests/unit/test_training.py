"""Training: data loading and split, the loss terms, augmentation, and a seconds-long smoke run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medfuse.cli import app
from medfuse.colour import rgb_to_ycbcr
from medfuse.errors import OutputError, UnreadableInputError, UsageError
from medfuse.inference import load_model
from medfuse.training import (
    PairSet,
    TrainConfig,
    fusion_loss,
    load_pairs,
    sample_batch,
    sobel_magnitude,
    split_by_series,
    train,
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


def _config(data: Path, output: Path, **changes: object) -> TrainConfig:
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


def test_load_pairs_reads_grey_mri_and_functional_luminance(harvard_like: Path) -> None:
    pairs = load_pairs(harvard_like, "PET")
    assert pairs.names == ["25001.png", "25002.png", "41001.png", "41002.png"]
    assert pairs.series == ["25", "25", "41", "41"]
    assert pairs.mri.shape == pairs.functional.shape == (4, SIZE, SIZE)
    rgb = np.asarray(Image.open(harvard_like / "PET-MRI" / "PET" / "41002.png"), np.float32) / 255
    np.testing.assert_allclose(pairs.functional[3], np.clip(rgb_to_ycbcr(rgb)[0], 0, 1), atol=1e-6)
    assert load_pairs(harvard_like, "SPECT").series == ["3", "3"]


def test_missing_data_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match=r"PET-MRI/MRI: folder not found; --data must point at the Harvard"):
        load_pairs(tmp_path, "PET")


def test_split_is_by_series(harvard_like: Path) -> None:
    train_pairs, val_pairs = split_by_series(load_pairs(harvard_like, "PET"), "41")
    assert train_pairs.names == ["25001.png", "25002.png"]
    assert val_pairs.names == ["41001.png", "41002.png"]
    with pytest.raises(UsageError, match=r"--val-series 99: no PET-MRI slices of that series; choose one of 25, 41"):
        split_by_series(load_pairs(harvard_like, "PET"), "99")


def test_sobel_magnitude_of_a_vertical_step() -> None:
    image = torch.zeros(1, 1, 5, 6)
    image[..., 3:] = 1.0
    magnitude = sobel_magnitude(image)[0, 0]
    # columns 2 and 3 straddle the step: |Gx| = 1 + 2 + 1 = 4; flat areas give 0
    assert torch.all(magnitude[:, 2:4] == 4.0)
    assert torch.all(magnitude[:, :2] == 0.0) and torch.all(magnitude[:, 4:] == 0.0)


def test_loss_terms_vanish_for_the_ideal_output() -> None:
    config = TrainConfig(data=Path(), output=Path())
    torch.manual_seed(0)
    image = torch.rand(2, 1, 16, 16)
    _, parts = fusion_loss(image.clone(), image, image, config)
    assert parts["intensity"] == pytest.approx(0.0, abs=1e-7)
    assert parts["gradient"] == pytest.approx(0.0, abs=1e-6)
    assert parts["ssim"] == pytest.approx(0.0, abs=1e-5)


def test_intensity_term_pulls_towards_the_brighter_source() -> None:
    config = TrainConfig(data=Path(), output=Path(), gradient_weight=0.0, ssim_weight=0.0, scd_weight=0.0)
    mri = torch.full((1, 1, 8, 8), 0.2)
    pet = torch.full((1, 1, 8, 8), 0.8)
    loss_at_max, _ = fusion_loss(pet.clone(), mri, pet, config)
    loss_at_mean, _ = fusion_loss((mri + pet) / 2, mri, pet, config)
    assert float(loss_at_max) == pytest.approx(0.0, abs=1e-7)
    assert float(loss_at_mean) == pytest.approx(0.3, abs=1e-6)


def test_sample_batch_crops_come_from_the_slices(rng: np.random.Generator) -> None:
    mri = rng.random((3, 20, 20), dtype=np.float32)
    pairs = PairSet(["a", "b", "c"], ["1", "1", "1"], mri, 1 - mri)
    mri_batch, pet_batch = sample_batch(pairs, np.random.default_rng(5), batch_size=6, crop=8)
    assert mri_batch.shape == pet_batch.shape == (6, 1, 8, 8)
    # the PET crop is taken at the same place with the same flips and turns as the MRI crop
    np.testing.assert_allclose(pet_batch, 1 - mri_batch, atol=1e-6)
    values = set(np.round(mri.ravel(), 6))
    assert set(np.round(mri_batch.ravel(), 6)) <= values


def test_smoke_training_writes_loadable_reproducible_weights(harvard_like: Path, tmp_path: Path) -> None:
    first = train(_config(harvard_like, tmp_path / "a.safetensors"), validate=_quick_validate)
    assert first.output.is_file()
    assert len(first.history) == 2 and "MAE" in first.validation
    sidecar = tmp_path / "a.safetensors.sha256"
    assert sidecar.read_text().split() == [first.sha256, "a.safetensors"]
    assert hashlib.sha256(first.output.read_bytes()).hexdigest() == first.sha256
    model, digest = load_model(first.output)  # sidecar checked on load
    assert model.channels == (4, 8, 16) and digest == first.sha256
    second = train(_config(harvard_like, tmp_path / "b.safetensors"), validate=_quick_validate)
    assert second.sha256 == first.sha256, "same seed, same data, same threads: same weights"
    assert not list(tmp_path.glob(".*medfuse-tmp*"))


def test_existing_output_is_refused_before_training(harvard_like: Path, tmp_path: Path) -> None:
    output = tmp_path / "w.safetensors"
    output.write_bytes(b"keep me")
    with pytest.raises(OutputError, match=r"w\.safetensors: the output already exists; pass --overwrite"):
        train(_config(harvard_like, output), validate=_quick_validate)
    assert output.read_bytes() == b"keep me"


def test_wrong_extension_and_bad_crop_are_refused(harvard_like: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"unknown output extension '\.pt' for --output"):
        train(_config(harvard_like, tmp_path / "w.pt"), validate=_quick_validate)
    with pytest.raises(UsageError, match=r"--crop 20: use a multiple of 8"):
        train(_config(harvard_like, tmp_path / "w.safetensors", crop=20), validate=_quick_validate)


def test_train_command(harvard_like: Path, tmp_path: Path) -> None:
    output = tmp_path / "cli.safetensors"
    args = ["train", "--data", str(harvard_like), "-o", str(output), "--epochs", "1", "--steps-per-epoch", "1"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "1", "--crop", "16", "--threads", "1", "--no-spect"])
    assert result.exit_code == 0, result.output
    assert output.is_file() and (tmp_path / "cli.safetensors.sha256").is_file()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 5
    assert "the output already exists; pass --overwrite" in again.output


def test_train_command_bad_data_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "w.safetensors")])
    assert result.exit_code == 3
    assert "folder not found; --data must point at the Harvard data set" in result.output


@pytest.mark.slow
def test_real_data_split_holds_out_series_41(harvard_dir: Path) -> None:
    train_pairs, val_pairs = split_by_series(load_pairs(harvard_dir, "PET"), "41")
    assert set(train_pairs.series) == {"25", "30"} and set(val_pairs.series) == {"41"}
    assert len(train_pairs.names) + len(val_pairs.names) == 269
    assert not set(train_pairs.names) & set(val_pairs.names)
    assert val_pairs.functional.min() >= 0.0 and val_pairs.functional.max() <= 1.0


def test_complementarity_term_prefers_carrying_both_sources() -> None:
    config = TrainConfig(data=Path(), output=Path())
    torch.manual_seed(2)
    mri, pet = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    _, additive = fusion_loss(mri + pet, mri, pet, config)
    _, mri_only = fusion_loss(mri.clone(), mri, pet, config)
    # F = A + B: F - B is A and F - A is B, both correlations are 1
    assert additive["scd"] == pytest.approx(0.0, abs=1e-6)
    assert mri_only["scd"] > 0.4
