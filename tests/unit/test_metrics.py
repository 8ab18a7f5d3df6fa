"""Tests of the fusion metrics: each formula on tiny images with values derived by hand, plus properties,
the folder evaluation and the ``medfuse evaluate`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medfuse import metrics
from medfuse.cli import app
from medfuse.errors import InvalidInputError, OutputError, UnreadableInputError

# Perfect edge preservation in Qabf: Tg / (1 + e^{-15 (1 - 0.5)}) * Ta / (1 + e^{-22 (1 - 0.8)}).
QABF_PERFECT = 0.9994 / (1 + math.exp(-7.5)) * 0.9879 / (1 + math.exp(-4.4))


def _textured(rng: np.random.Generator, shape: tuple[int, int] = (48, 48)) -> np.ndarray:
    """A smooth random image on 0..255 with structure at several scales."""
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.standard_normal(shape), 2.0) + 0.5 * rng.standard_normal(shape)
    return np.rint(255 * (noise - noise.min()) / (noise.max() - noise.min()))


# ---- EN, SD, SF ---------------------------------------------------------------------------------------------
def test_entropy_by_hand() -> None:
    assert metrics.entropy(np.array([[0, 0], [255, 255]])) == pytest.approx(1.0)
    assert metrics.entropy(np.array([[0, 1], [2, 3]])) == pytest.approx(2.0)
    assert metrics.entropy(np.full((3, 3), 7.0)) == 0.0
    # 0.4 rounds to level 0 and 0.6 to level 1: p = (3/4, 1/4).
    expected = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert metrics.entropy(np.array([[0.4, 0.0], [0.2, 0.6]])) == pytest.approx(expected)


def test_standard_deviation_by_hand() -> None:
    assert metrics.standard_deviation(np.array([[0, 2], [0, 2]])) == pytest.approx(1.0)
    # mean 2, deviations -1, -1, -1, 3: variance 12 / 4 = 3.
    assert metrics.standard_deviation(np.array([[1, 1], [1, 5]])) == pytest.approx(math.sqrt(3))


def test_spatial_frequency_by_hand() -> None:
    assert metrics.spatial_frequency(np.array([[0, 2], [0, 2]])) == pytest.approx(2.0)
    # horizontal differences 1, 2 -> RF^2 = 2.5; vertical differences 2, 3 -> CF^2 = 6.5; SF = 3.
    assert metrics.spatial_frequency(np.array([[0, 1], [2, 4]])) == pytest.approx(3.0)
    assert metrics.spatial_frequency(np.array([[1, 4, 9]])) == pytest.approx(math.sqrt((9 + 25) / 2))


# ---- MI ------------------------------------------------------------------------------------------------------
def test_mutual_information_by_hand() -> None:
    halves = np.array([[0, 0], [255, 255]])
    columns = np.array([[0, 255], [0, 255]])
    assert metrics.mutual_information_pair(halves, halves) == pytest.approx(math.log(2))
    assert metrics.mutual_information_pair(halves, columns) == pytest.approx(0.0, abs=1e-12)
    assert metrics.mutual_information(halves, halves, columns) == pytest.approx(math.log(2))
    four = np.array([[0, 1], [2, 3]])
    assert metrics.mutual_information(four, four, four) == pytest.approx(2 * math.log(4))


# ---- SCD -----------------------------------------------------------------------------------------------------
def test_scd_by_hand() -> None:
    a = np.array([[0, 0], [2, 2]], dtype=float)  # centred: -1, -1, 1, 1
    b = np.array([[0, 2], [0, 2]], dtype=float)  # centred: -1, 1, -1, 1 (orthogonal to a)
    assert metrics.scd(a + b, a, b) == pytest.approx(2.0)
    # F = A: F - B = (0, -2, 2, 0) has correlation 4 / (2 * sqrt 8) = 1/sqrt 2 with A; F - A = 0 counts 0.
    assert metrics.scd(a, a, b) == pytest.approx(1 / math.sqrt(2))


# ---- VIF -----------------------------------------------------------------------------------------------------
def test_vif_identity_offset_and_constant(rng: np.random.Generator) -> None:
    a = _textured(rng)
    assert metrics.vif_pair(a, a) == pytest.approx(1.0)
    assert metrics.vif_pair(a, a + 10) == pytest.approx(1.0)
    assert metrics.vif_pair(a, np.full_like(a, 80.0)) == pytest.approx(0.0)
    assert metrics.vif_pair(a, 2 * a) > 1.0
    blurred = metrics._filter_valid(np.pad(a, 2, mode="reflect"), metrics._gaussian_window_1d(5))
    assert 0.0 < metrics.vif_pair(a, blurred) < 1.0


def test_vif_of_a_scaled_ramp_by_hand() -> None:
    """On a 20x20 ramp only scale 1 fits; the weighted variance of a ramp is the same everywhere.

    With F = 2A the gain is 2 and the noise 0, so VIF = log10(1 + 4 s^2 / 2) / log10(1 + s^2 / 2) with
    s^2 = sum w_k k^2 over the 17 normalised Gaussian weights w_k ~ exp(-k^2 / (2 * 3.4^2)), k = -8..8.
    """
    ramp = np.tile(np.arange(20, dtype=float), (20, 1))
    k = np.arange(-8, 9)
    w = np.exp(-(k**2) / (2 * 3.4**2))
    s2 = float((w * k**2).sum() / w.sum())
    expected = math.log10(1 + 4 * s2 / 2) / math.log10(1 + s2 / 2)
    assert metrics.vif_pair(ramp, 2 * ramp) == pytest.approx(expected, rel=1e-9)
    assert metrics.vif(2 * ramp, ramp, ramp) == pytest.approx(2 * expected, rel=1e-9)


# ---- Qabf ----------------------------------------------------------------------------------------------------
def _square(size: int = 16) -> np.ndarray:
    image = np.zeros((size, size))
    image[4:12, 4:12] = 200.0
    return image


def test_qabf_by_hand() -> None:
    a, black = _square(), np.zeros((16, 16))
    assert metrics.qabf(a, a, black) == pytest.approx(QABF_PERFECT)
    # Half the edge strength everywhere, same orientation: strength term Tg / (1 + e^0) = Tg / 2.
    assert metrics.qabf(a / 2, a, black) == pytest.approx(0.9994 / 2 * 0.9879 / (1 + math.exp(-4.4)))
    assert metrics.qabf(np.full((16, 16), 50.0), a, black) < 1e-3
    assert metrics.qabf(a, black, black) == 0.0


def test_qabf_weights_sources_by_their_edge_strength() -> None:
    vertical = np.zeros((16, 16))
    vertical[:, 8:] = 100.0
    horizontal = np.zeros((16, 16))
    horizontal[8:, :] = 100.0
    only_vertical = metrics.qabf(vertical, vertical, horizontal)
    assert only_vertical == pytest.approx(metrics.qabf(vertical, horizontal, vertical))
    assert 0.3 < only_vertical < 0.7  # keeps one source's edges: about half of the total weight


# ---- SSIM ----------------------------------------------------------------------------------------------------
def test_ssim_of_constant_images_by_hand() -> None:
    """Flat windows: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 255)^2 = 6.5025."""
    ten, zero = np.full((8, 8), 10.0), np.zeros((8, 8))
    assert metrics.ssim_pair(ten, zero) == pytest.approx(6.5025 / (100 + 6.5025))
    # The fusion metric uses CDDFuse's L = 2: C1 = (0.01 * 2)^2 = 0.0004.
    assert metrics.ssim(ten, ten, zero) == pytest.approx(1 + 0.0004 / 100.0004)


def test_ssim_on_one_window_matches_the_global_formula(rng: np.random.Generator) -> None:
    """A 7x7 image has one full window: its means, sample variances and covariance (divisor 48)."""
    x, y = rng.integers(0, 256, (7, 7)).astype(float), rng.integers(0, 256, (7, 7)).astype(float)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    cov = np.cov(x.ravel(), y.ravel(), ddof=1)
    expected = ((2 * x.mean() * y.mean() + c1) * (2 * cov[0, 1] + c2)) / (
        (x.mean() ** 2 + y.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2)
    )
    assert metrics.ssim_pair(x, y) == pytest.approx(expected)
    assert metrics.ssim_pair(x, x) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 7x7"):
        metrics.ssim_pair(x[:6], y[:6])


# ---- all together --------------------------------------------------------------------------------------------
def test_compute_metrics_properties(rng: np.random.Generator) -> None:
    a, b = _textured(rng), _textured(rng)
    values = metrics.compute_metrics(a, a, b)
    assert list(values) == list(metrics.METRIC_NAMES)
    assert values["SSIM"] == pytest.approx(1.0 + metrics.ssim_pair(a, b, 2.0))  # SSIM(F, A) = 1 as F = A
    swapped = metrics.compute_metrics(a, b, a)
    for name in metrics.METRIC_NAMES:  # every two-source metric is symmetric in the sources
        assert swapped[name] == pytest.approx(values[name])
    with pytest.raises(ValueError, match="same shape"):
        metrics.compute_metrics(a, a[:10], b)


def test_luminance_of_colour_images() -> None:
    rgb = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]])
    np.testing.assert_array_equal(metrics.luminance_255(rgb), [[76, 150], [29, 255]])
    np.testing.assert_array_equal(metrics.luminance_255(np.array([[0.5]])), [[128]])  # 127.5 rounds up
    # R = 255, G = 10 (8-bit): Y = 76.245 + 5.87 = 82.115 whether read as float32 or float64.
    pixel = np.array([[[255, 10, 0]]], np.uint8)
    assert metrics.luminance_255(pixel.astype(np.float32) / 255)[0, 0] == 82
    assert metrics.luminance_255(pixel / 255.0)[0, 0] == 82


# ---- folders and the CLI -------------------------------------------------------------------------------------
def _save(folder: Path, name: str, image: np.ndarray) -> None:
    folder.mkdir(exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(folder / name)


@pytest.fixture
def scored_folders(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path, Path]:
    """Fused, MRI and PET folders with two complete triples (PET in colour) and one unpaired MRI."""
    fused, mri, pet = tmp_path / "fused", tmp_path / "mri", tmp_path / "pet"
    for name in ("a.png", "b.png"):
        mri_image, pet_grey = _textured(rng, (24, 24)), _textured(rng, (24, 24))
        _save(mri, name, mri_image)
        _save(pet, name, np.stack([pet_grey, pet_grey / 2, np.zeros_like(pet_grey)], axis=-1))
        _save(fused, name, np.maximum(mri_image, pet_grey))
    _save(mri, "c.png", _textured(rng, (24, 24)))
    return fused, mri, pet


def test_evaluate_folders_averages_pairs_and_names_the_unpaired(scored_folders: tuple[Path, Path, Path]) -> None:
    fused, mri, pet = scored_folders
    with pytest.warns(UserWarning, match=r"1 files have no partner and were skipped: .*c\.png"):
        evaluation = metrics.evaluate_folders(fused, mri, pet)
    assert sorted(evaluation.per_image) == ["a.png", "b.png"]
    pet_y = metrics.luminance_255(np.asarray(Image.open(pet / "a.png"), dtype=float) / 255)
    expected = metrics.compute_metrics(
        np.asarray(Image.open(fused / "a.png"), float), np.asarray(Image.open(mri / "a.png"), float), pet_y
    )
    assert evaluation.per_image["a.png"] == pytest.approx(expected)
    mean_en = (evaluation.per_image["a.png"]["EN"] + evaluation.per_image["b.png"]["EN"]) / 2
    assert evaluation.means["EN"] == pytest.approx(mean_en)


def test_evaluate_folders_pairs_by_name_whatever_the_extension(scored_folders: tuple[Path, Path, Path]) -> None:
    fused, mri, pet = scored_folders
    (fused / "b.png").rename(fused / "b.tif")
    with pytest.warns(UserWarning):
        assert sorted(metrics.evaluate_folders(fused, mri, pet).per_image) == ["a.png", "b.tif"]
    _save(fused, "a.jpg", np.zeros((24, 24)))
    with pytest.raises(InvalidInputError, match=r"a\.jpg and a\.png share a name; keep one image per name"):
        metrics.evaluate_folders(fused, mri, pet)


def test_evaluate_folders_refusals(tmp_path: Path, scored_folders: tuple[Path, Path, Path]) -> None:
    fused, mri, pet = scored_folders
    with pytest.raises(UnreadableInputError, match="the --fused folder does not exist"):
        metrics.evaluate_folders(tmp_path / "nope", mri, pet)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="no image has a partner of the same name"):
        metrics.evaluate_folders(empty, mri, pet)
    _save(fused, "a.png", np.zeros((20, 24)))
    with pytest.raises(InvalidInputError, match=r"a\.png: its size 24x20 differs from a\.png \(24x24\)"):
        with pytest.warns(UserWarning):
            metrics.evaluate_folders(fused, mri, pet)


def test_cli_evaluate_prints_the_table_and_writes_json(tmp_path: Path, scored_folders: tuple[Path, Path, Path]) -> None:
    fused, mri, pet = scored_folders
    report = tmp_path / "scores.json"
    args = ["evaluate", "--fused", str(fused), "--mri", str(mri), "--pet", str(pet), "--json", str(report)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in metrics.METRIC_NAMES:
        assert name in result.output
    assert "2 pairs" in result.output and "c.png" in result.output
    data = json.loads(report.read_text())
    assert data["pairs"] == 2 and set(data["means"]) == set(metrics.METRIC_NAMES)
    assert data["unpaired"] == [str(mri / "c.png")]
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["scores.json"]  # no temporaries left
    again = CliRunner().invoke(app, args)
    assert again.exit_code == OutputError.exit_code and "pass --overwrite" in again.output
    bad = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "scores.txt")])
    assert bad.exit_code == OutputError.exit_code and "use one of .json" in bad.output
