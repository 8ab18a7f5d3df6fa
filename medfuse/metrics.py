"""Fusion quality metrics: EN, SD, SF, MI, SCD, VIF, Qabf and SSIM, as CDDFuse (CVPR 2023) reports them.

Every metric works on grey images on the 0..255 scale (float64 here); colour images are scored on their
BT.601 luminance Y = 0.299 R + 0.587 G + 0.114 B, rounded to whole levels like the evaluation code of the
fusion literature. ``F`` is the fused image, ``A`` the MRI and ``B`` the PET. The two-source metrics
(MI, SCD, VIF, Qabf, SSIM) add up the contributions of both sources, so e.g. SSIM reaches 2 at most.
Higher is better for all eight. MI, VIF and the SSIM formula match scikit-learn's ``mutual_info_score``,
sewar's ``vifp`` and scikit-image's ``structural_similarity``; SSIM uses CDDFuse's dynamic range (see
:func:`ssim`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from medfuse.errors import InvalidInputError, UnreadableInputError

if TYPE_CHECKING:
    from rich.table import Table

METRIC_NAMES = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")

# The MRI-PET row of CDDFuse (Zhao et al., CVPR 2023), Table 5: the reference the issue sets as target.
CDDFUSE_MRI_PET = {
    "EN": 4.23,
    "SD": 70.73,
    "SF": 29.57,
    "MI": 2.03,
    "SCD": 1.69,
    "VIF": 0.71,
    "Qabf": 0.71,
    "SSIM": 1.49,
}

# Xydeas-Petrovic constants of the sigmoids that turn strength and orientation agreement into preservation.
QABF_GAMMA_G, QABF_KAPPA_G, QABF_SIGMA_G = 0.9994, -15.0, 0.5
QABF_GAMMA_A, QABF_KAPPA_A, QABF_SIGMA_A = 0.9879, -22.0, 0.8
# Sheikh-Bovik pixel-domain VIF: variance of the visual noise and the number of scales.
_VIF_NOISE_VARIANCE = 2.0
_VIF_SCALES = 4
_VIF_EPS = 1e-10
# SSIM as in scikit-image: 7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03.
_SSIM_WINDOW = 7
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
SSIM_DATA_RANGE = 255.0
# The dynamic range L that CDDFuse's published SSIM figures used: its evaluation passes float 0..255 images to
# scikit-image 0.19 without data_range, which then takes L = 2 from the float dtype's nominal range [-1, 1].
CDDFUSE_SSIM_DATA_RANGE = 2.0


def _as_float(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {array.shape}")
    return array


def _levels(image: np.ndarray) -> np.ndarray:
    """Whole grey levels 0..255 (rounded, clipped) for the histogram-based metrics."""
    return np.clip(np.rint(_as_float(image)), 0, 255).astype(np.intp)


# ---- single-image metrics ----------------------------------------------------------------------------------
def entropy(fused: np.ndarray) -> float:
    """EN = -sum_k p_k log2 p_k over the 256-bin histogram of F (bits; 0 for a constant image, 8 at most)."""
    counts = np.bincount(_levels(fused).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def standard_deviation(fused: np.ndarray) -> float:
    """SD = sqrt(mean((F - mean F)^2)), the population standard deviation (contrast)."""
    return float(np.std(_as_float(fused)))


def spatial_frequency(fused: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2): RF^2 is the mean squared difference of horizontal neighbours, CF^2 of vertical.

    Each mean runs over the differences that exist: H x (W-1) for RF, (H-1) x W for CF.
    """
    f = _as_float(fused)
    row_frequency = np.mean(np.diff(f, axis=1) ** 2) if f.shape[1] > 1 else 0.0
    column_frequency = np.mean(np.diff(f, axis=0) ** 2) if f.shape[0] > 1 else 0.0
    return float(math.sqrt(row_frequency + column_frequency))


# ---- two-source metrics -------------------------------------------------------------------------------------
def mutual_information_pair(x: np.ndarray, y: np.ndarray) -> float:
    """MI(X, Y) = sum p(x, y) ln(p(x, y) / (p(x) p(y))) over the 256x256 joint histogram of grey levels (nats)."""
    joint = np.bincount((_levels(x) * 256 + _levels(y)).ravel(), minlength=256 * 256).reshape(256, 256)
    p_xy = joint / joint.sum()
    p_x = p_xy.sum(axis=1, keepdims=True)
    p_y = p_xy.sum(axis=0, keepdims=True)
    mask = p_xy > 0
    return float((p_xy[mask] * np.log(p_xy[mask] / (p_x @ p_y)[mask])).sum())


def mutual_information(fused: np.ndarray, mri: np.ndarray, pet: np.ndarray) -> float:
    """MI = MI(F, A) + MI(F, B) in nats from 256-bin histograms: the information F carries about each source."""
    return mutual_information_pair(fused, mri) + mutual_information_pair(fused, pet)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 where either input is constant (no linear relation to measure)."""
    x = x - x.mean()
    y = y - y.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def scd(fused: np.ndarray, mri: np.ndarray, pet: np.ndarray) -> float:
    """SCD = corr(F - B, A) + corr(F - A, B), the sum of the correlations of differences (Aslantas, 2015).

    F - B is what the fusion took from A (and vice versa), so each term says how much of that source's
    content survived; at most 2. A constant difference counts as correlation 0.
    """
    f, a, b = _as_float(fused), _as_float(mri), _as_float(pet)
    return _correlation(f - b, a) + _correlation(f - a, b)


def _gaussian_window_1d(size: int) -> np.ndarray:
    """The normalised 1-D factor of VIF's size x size Gaussian window, standard deviation size / 5."""
    offsets = np.arange(size) - (size - 1) / 2.0
    weights = np.exp(-(offsets**2) / (2.0 * (size / 5.0) ** 2))
    return weights / weights.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 2-D filtering with ``window`` on both axes, keeping only fully covered pixels ('valid')."""
    from scipy.ndimage import correlate1d

    margin = len(window) // 2
    filtered = correlate1d(correlate1d(image, window, axis=0), window, axis=1)
    return filtered[margin : image.shape[0] - margin, margin : image.shape[1] - margin]


def vif_pair(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Pixel-domain, multi-scale visual information fidelity VIF(reference, distorted) (Sheikh & Bovik, 2006).

    At scales s = 1..4 the images are low-passed with a Gaussian of size N = 2^(5-s) + 1 (sd N/5) and,
    from scale 2, halved. With local means/variances from that window, the distorted image is modelled
    as g * reference + v (gain g = s_rd / s_r^2, noise variance s_v^2 = s_d^2 - g s_rd); with visual
    noise variance 2, VIF = sum log10(1 + g^2 s_r^2 / (s_v^2 + 2)) / sum log10(1 + s_r^2 / 2) over all
    pixels and scales: the share of the reference's information that the distorted image keeps. It is 1
    for an identical image, 0 for a constant one, and above 1 where contrast was enhanced. Scales too
    small for the window are skipped; a reference without any texture gives 1.
    """
    ref, dist = _as_float(reference), _as_float(distorted)
    numerator = denominator = 0.0
    for scale in range(1, _VIF_SCALES + 1):
        window = _gaussian_window_1d(2 ** (_VIF_SCALES - scale + 1) + 1)
        if scale > 1:
            if min(ref.shape) < len(window):
                break
            ref = _filter_valid(ref, window)[::2, ::2]
            dist = _filter_valid(dist, window)[::2, ::2]
        if min(ref.shape) < len(window):
            break
        mu_r, mu_d = _filter_valid(ref, window), _filter_valid(dist, window)
        var_r = np.maximum(_filter_valid(ref * ref, window) - mu_r * mu_r, 0.0)
        var_d = np.maximum(_filter_valid(dist * dist, window) - mu_d * mu_d, 0.0)
        cov = _filter_valid(ref * dist, window) - mu_r * mu_d
        gain = cov / (var_r + _VIF_EPS)
        noise = var_d - gain * cov
        flat_ref, flat_dist = var_r < _VIF_EPS, var_d < _VIF_EPS
        gain[flat_ref] = 0.0
        noise[flat_ref] = var_d[flat_ref]
        var_r[flat_ref] = 0.0
        gain[flat_dist] = 0.0
        noise[flat_dist] = 0.0
        negative = gain < 0
        noise[negative] = var_d[negative]
        gain[negative] = 0.0
        noise = np.maximum(noise, _VIF_EPS)
        numerator += float(np.log10(1.0 + gain * gain * var_r / (noise + _VIF_NOISE_VARIANCE)).sum())
        denominator += float(np.log10(1.0 + var_r / _VIF_NOISE_VARIANCE).sum())
    return numerator / denominator if denominator > 0 else 1.0


def vif(fused: np.ndarray, mri: np.ndarray, pet: np.ndarray) -> float:
    """VIF = VIF(A, F) + VIF(B, F): how much of each source's visual information the fused image keeps."""
    return vif_pair(mri, fused) + vif_pair(pet, fused)


def _sobel(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength g = sqrt(sx^2 + sy^2) and orientation alpha = arctan(sy / sx) (pi/2 where sx = 0).

    Sobel responses with zero padding outside the image, as MATLAB's conv2(..., 'same').
    """
    from scipy.signal import convolve2d

    horizontal = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    sx = convolve2d(image, horizontal, mode="same")
    sy = convolve2d(image, horizontal.T, mode="same")
    strength = np.hypot(sx, sy)
    orientation = np.full(image.shape, math.pi / 2)
    nonzero = sx != 0
    orientation[nonzero] = np.arctan(sy[nonzero] / sx[nonzero])
    return strength, orientation


def _edge_preservation(source: tuple[np.ndarray, np.ndarray], fused: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Q^{SF} per pixel: sigmoid(strength ratio) * sigmoid(orientation agreement), Xydeas & Petrovic (2000).

    Strength ratio G = min(g_S, g_F) / max(g_S, g_F) (1 where both are equal); orientation agreement
    A = 1 - |alpha_S - alpha_F| / (pi / 2); Q = Gamma_g / (1 + e^{k_g (G - s_g)}) * Gamma_a / (1 + e^{k_a (A - s_a)}).
    """
    (g_s, a_s), (g_f, a_f) = source, fused
    larger = np.maximum(g_s, g_f)
    ratio = np.divide(np.minimum(g_s, g_f), larger, out=np.ones_like(larger), where=larger > 0)
    agreement = 1.0 - np.abs(a_s - a_f) / (math.pi / 2)
    strength_term = QABF_GAMMA_G / (1.0 + np.exp(QABF_KAPPA_G * (ratio - QABF_SIGMA_G)))
    orientation_term = QABF_GAMMA_A / (1.0 + np.exp(QABF_KAPPA_A * (agreement - QABF_SIGMA_A)))
    return strength_term * orientation_term


def qabf(fused: np.ndarray, mri: np.ndarray, pet: np.ndarray) -> float:
    """Qabf = sum(Q^{AF} g_A + Q^{BF} g_B) / sum(g_A + g_B): edge information carried into F (Xydeas-Petrovic).

    Edge preservation Q^{SF} (see :func:`_edge_preservation`) is weighted by each source's Sobel edge
    strength, so strong source edges count most; constants Gamma_g = 0.9994, k_g = -15, s_g = 0.5,
    Gamma_a = 0.9879, k_a = -22, s_a = 0.8, weight exponent L = 1. Perfect preservation gives 0.9748.
    Sources without any edge give 0.
    """
    edges_f = _sobel(_as_float(fused))
    edges_a, edges_b = _sobel(_as_float(mri)), _sobel(_as_float(pet))
    weights = edges_a[0].sum() + edges_b[0].sum()
    if weights == 0:
        return 0.0
    preserved = _edge_preservation(edges_a, edges_f) * edges_a[0] + _edge_preservation(edges_b, edges_f) * edges_b[0]
    return float(preserved.sum() / weights)


def ssim_pair(x: np.ndarray, y: np.ndarray, data_range: float = SSIM_DATA_RANGE) -> float:
    """Mean structural similarity (Wang et al., 2004) with scikit-image's default settings.

    SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)) in every 7x7
    window (uniform weights, sample covariances with divisor 48, mirror-reflected edges), C1 = (0.01 L)^2,
    C2 = (0.03 L)^2 with L = ``data_range``; the mean skips a 3-pixel border. Images need 7x7 pixels.
    """
    from scipy.ndimage import uniform_filter

    a, b = _as_float(x), _as_float(y)
    if min(a.shape) < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels, got {a.shape}")
    count = _SSIM_WINDOW**2
    unbiased = count / (count - 1)

    def local_mean(image: np.ndarray) -> np.ndarray:
        return uniform_filter(image, size=_SSIM_WINDOW, mode="reflect")

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = unbiased * (local_mean(a * a) - mu_a * mu_a)
    var_b = unbiased * (local_mean(b * b) - mu_b * mu_b)
    cov = unbiased * (local_mean(a * b) - mu_a * mu_b)
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    border = (_SSIM_WINDOW - 1) // 2
    return float(index[border:-border, border:-border].mean())


def ssim(fused: np.ndarray, mri: np.ndarray, pet: np.ndarray) -> float:
    """SSIM = SSIM(F, A) + SSIM(F, B): structural similarity of the fused image to each source (2 at most).

    Computed with L = 2 (:data:`CDDFUSE_SSIM_DATA_RANGE`) so that figures compare with CDDFuse's table; the
    nearly vanishing constants make it stricter than textbook SSIM (L = 255), which on the Harvard PET
    validation series scores the Laplacian baseline 1.47 instead of 1.40.
    """
    return ssim_pair(fused, mri, CDDFUSE_SSIM_DATA_RANGE) + ssim_pair(fused, pet, CDDFUSE_SSIM_DATA_RANGE)


METRICS: dict[str, Callable[..., float]] = {
    "EN": entropy,
    "SD": standard_deviation,
    "SF": spatial_frequency,
    "MI": mutual_information,
    "SCD": scd,
    "VIF": vif,
    "Qabf": qabf,
    "SSIM": ssim,
}
_SINGLE_IMAGE = {"EN", "SD", "SF"}


def compute_metrics(fused: np.ndarray, mri: np.ndarray, pet: np.ndarray) -> dict[str, float]:
    """All eight metrics of one fused image against its MRI and PET (grey, 0..255, same shape)."""
    shapes = {np.shape(fused), np.shape(mri), np.shape(pet)}
    if len(shapes) != 1:
        raise ValueError(f"fused, MRI and PET must have the same shape, got {sorted(shapes)}")
    return {
        name: metric(fused) if name in _SINGLE_IMAGE else metric(fused, mri, pet) for name, metric in METRICS.items()
    }


# ---- folders ------------------------------------------------------------------------------------------------
def mean_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Each metric's mean over ``rows`` (one dict of the eight metrics per image or slice)."""
    rows = list(rows)
    return {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}


@dataclass
class Evaluation:
    """Per-image metrics of a fused folder and their means, plus the files that had no partner."""

    fused_dir: Path
    mri_dir: Path
    pet_dir: Path
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    unpaired: list[Path] = field(default_factory=list)

    @property
    def means(self) -> dict[str, float]:
        """Mean of each metric over the evaluated pairs."""
        return mean_metrics(self.per_image.values())

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary: folders, pair count, means, per-image values and unpaired files."""
        return {
            "fused": str(self.fused_dir),
            "mri": str(self.mri_dir),
            "pet": str(self.pet_dir),
            "pairs": len(self.per_image),
            "means": self.means,
            "images": self.per_image,
            "unpaired": [str(path) for path in self.unpaired],
        }


def luminance_255(image: np.ndarray) -> np.ndarray:
    """Grey 0..255 levels of a [0, 1] grey or RGB image: RGB becomes Y = 0.299 R + 0.587 G + 0.114 B.

    Levels are rounded half up after dropping float noise below 1e-6, so float32 and float64 copies of the
    same 8-bit image give the same levels.
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3:
        array = array[..., :3] @ np.array([0.299, 0.587, 0.114])
    return np.floor(np.round(np.clip(array, 0.0, 1.0) * 255.0, 6) + 0.5)


def _images_by_stem(folder: Path, option: str) -> dict[str, Path]:
    from medfuse.fusion2d import list_image_files

    if not folder.is_dir():
        raise UnreadableInputError(f"{folder}: the {option} folder does not exist; give a folder of images.")
    by_stem: dict[str, Path] = {}
    for path in list_image_files(folder):
        if path.stem in by_stem:
            raise InvalidInputError(
                f"{folder}: {by_stem[path.stem].name} and {path.name} share a name; keep one image per name."
            )
        by_stem[path.stem] = path
    return by_stem


def _name_list(paths: list[Path], limit: int = 5) -> str:
    names = ", ".join(str(path) for path in paths[:limit])
    return names + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def evaluate_folders(fused_dir: str | Path, mri_dir: str | Path, pet_dir: str | Path) -> Evaluation:
    """Score every fused image against the MRI and PET with the same name (extension may differ).

    Colour images are scored on their luminance. Files present in only some of the folders are named in a
    warning and skipped; no pair at all, or a pair whose sizes differ, is an :class:`InvalidInputError`.
    """
    from medfuse.console import track, warn
    from medfuse.fusion2d import read_image

    fused_dir, mri_dir, pet_dir = Path(fused_dir), Path(mri_dir), Path(pet_dir)
    fused = _images_by_stem(fused_dir, "--fused")
    mri = _images_by_stem(mri_dir, "--mri")
    pet = _images_by_stem(pet_dir, "--pet")
    paired = sorted(set(fused) & set(mri) & set(pet))
    evaluation = Evaluation(fused_dir, mri_dir, pet_dir)
    evaluation.unpaired = sorted(
        path for files in (fused, mri, pet) for stem, path in files.items() if stem not in paired
    )
    if not paired:
        raise InvalidInputError(
            f"{fused_dir}: no image has a partner of the same name in both {mri_dir} and {pet_dir}; "
            "check the three folders."
        )
    if evaluation.unpaired:
        warn(f"{len(evaluation.unpaired)} files have no partner and were skipped: {_name_list(evaluation.unpaired)}.")
    for stem in track(paired, "Scoring"):
        images = [luminance_255(read_image(folder[stem])) for folder in (fused, mri, pet)]
        if len({image.shape for image in images}) != 1:
            raise InvalidInputError(
                f"{fused[stem]}: its size {images[0].shape[1]}x{images[0].shape[0]} differs from "
                f"{mri[stem].name} ({images[1].shape[1]}x{images[1].shape[0]}) or {pet[stem].name} "
                f"({images[2].shape[1]}x{images[2].shape[0]}); fuse images of equal size."
            )
        if min(images[0].shape) < _SSIM_WINDOW:
            raise InvalidInputError(
                f"{fused[stem]}: the image is smaller than {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels; SSIM cannot score it."
            )
        evaluation.per_image[fused[stem].name] = compute_metrics(*images)
    return evaluation


def run_evaluation(
    fused_dir: str | Path,
    mri_dir: str | Path,
    pet_dir: str | Path,
    json_path: str | Path | None = None,
    overwrite: bool = False,
) -> Evaluation:
    """``medfuse evaluate``: check the JSON path first, score the folders, then write the JSON if asked."""
    from medfuse.atomic import check_output_path

    if json_path is not None:
        check_output_path(
            json_path, allowed=(".json",), inputs=[fused_dir, mri_dir, pet_dir], overwrite=overwrite, option="--json"
        )
    evaluation = evaluate_folders(fused_dir, mri_dir, pet_dir)
    if json_path is not None:
        write_json(evaluation, json_path, overwrite=overwrite)
    return evaluation


class Scores(Protocol):
    """Anything ``evaluate`` scored: 2-D folders (:class:`Evaluation`) or volumes (``VolumeEvaluation``)."""

    def to_dict(self) -> dict[str, Any]: ...


def write_json(evaluation: Scores, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``evaluation.to_dict()`` as indented JSON, atomically."""
    from medfuse.atomic import output_transaction

    text = json.dumps(evaluation.to_dict(), indent=2) + "\n"
    with output_transaction(overwrite=overwrite) as transaction:
        transaction.write(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))
    return Path(path)


def metrics_table(rows: dict[str, dict[str, float]], title: str | None = None) -> Table:
    """A rich table with one row per method (its metric means) and one column per metric."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("method")
    for name in METRIC_NAMES:
        table.add_column(name, justify="right")
    for label, values in rows.items():
        table.add_row(label, *(f"{values[name]:.2f}" if name in values else "-" for name in METRIC_NAMES))
    return table
