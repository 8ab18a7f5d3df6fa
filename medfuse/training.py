"""Unsupervised training of :class:`medfuse.model.FusionNet` on the Harvard (AANLIB) slices, and its cross-validation.

There is no ground-truth fused image, so the loss asks the output F to keep what each source has
(A = MRI, B = the functional image):

* **intensity**: L1 distance to the element-wise maximum of A and B, so bright anatomy and bright (hot)
  metabolism both survive at full strength and the black background stays black;
* **gradient**: L1 distance between F's Sobel gradient (Gx, Gy) and, pixel by pixel, the gradient of
  whichever source has the stronger edge there times ``gradient_gain`` (1.05), so the sharper edge of
  either source is kept with its direction and sign (what edge-transfer metrics such as Qabf look for),
  not only its strength; the gain of 5 % makes up for the softening an L1 fit leaves (sharpness, SF);
* **structure**: one minus the mean SSIM of F with each source (the metric's 7x7 window and near-zero
  constants), which keeps local contrast and structure close to both at once;
* **complementarity**: one minus half the sum of corr(F - B, A) and corr(F - A, B) (the SCD idea): what
  F adds to one source should be the other source's content, so neither is merely overwritten;
* **edge transfer** (``qabf_weight``, off in the recipe): one minus a differentiable Qabf, the metric's
  own edge preservation; it buys Qabf, MI and VIF at the cost of SD, complementarity and of the volumes'
  monotonicity (model card, "The gradient gain, and what else was tried");
* **monotonicity**: the same crops are fused again with B raised by a smooth positive bump; wherever
  F rose by less than ``monotone_slope`` times the bump, the shortfall is penalised. So the fused
  brightness rises with uptake at every MRI intensity, also where the MRI is brighter than the PET;
* **ordering** (uptake crops): pixel pairs of one crop 2-16 pixels apart whose MRI differs by less than
  ``ORDER_MRI_TOLERANCE``: where F is not higher at the pixel of higher uptake by ``monotone_slope``
  times the uptake difference, the shortfall is penalised. The bump above asks F to rise with uptake
  at one place; this asks the same between places, which is what "the hottest uptake is the brightest"
  means across a lesion: a uniformly hot lesion drawn with a bright rim (an edge-sharpening weight) breaks it.

The functional input B comes in the two kinds the network must serve: the luminance Y of the atlas's
pseudo-colour image (2-D benchmarks, the field's convention; not monotonic in uptake) and the uptake
itself (volumes), recovered by inverting the atlas colour map. The SPECT slices come with T2-weighted
MRI; recoloured with the PET map they give T2 + PET-colour pairs next to the T1 + PET pairs. Uptake is
randomly rescaled and the MRI contrast randomly bent (gamma and gain), so the network does not learn
one atlas's intensities. ``plateau_share`` paints a uniformly hot lesion into some uptake crops: the
brain slices have few broad plateaus of uptake, and body lesions often are one (model card, "The bright rim").

Validation is by series (neighbouring slices of a series are near copies): :func:`cross_validate`
holds out one PET-MRI series and one group of SPECT-MRI series per fold (:data:`CV_FOLDS`), trains the
recipe on the rest and scores the held-out pairs; the shipped weights are the same recipe trained on
every series (the 2-D file without the ordering loss). Training is deterministic for a given seed and
thread count.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

from medfuse.atomic import check_output_path, output_transaction
from medfuse.colour import apply_colormap, colormap_values, rgb_to_ycbcr
from medfuse.console import info, make_progress, stage
from medfuse.errors import InvalidInputError, UnreadableInputError, UsageError
from medfuse.metrics import QABF_GAMMA_A, QABF_GAMMA_G, QABF_KAPPA_A, QABF_KAPPA_G, QABF_SIGMA_A, QABF_SIGMA_G
from medfuse.model import BLACK_LEVEL, DEFAULT_CHANNELS, FusionNet, parameter_count

if TYPE_CHECKING:
    from rich.table import Table

# Harvard layout: top folder, functional sub-folder and the atlas colour map of that modality.
PAIR_FOLDERS = {"PET": ("PET-MRI", "PET", "aanlib"), "SPECT": ("SPECT-MRI", "SPECT", "aanlib-spect")}
SSIM_WINDOW = 7


@dataclass
class PairSet:
    """Registered slice pairs of one or more series, arrays (N, H, W) float32 in [0, 1].

    ``functional`` is the BT.601 luminance Y of the atlas's pseudo-colour image (what 2-D fusion
    benchmarks feed a network); ``uptake`` is the value the pseudo-colour stands for, recovered by
    inverting the atlas colour map, which rises with the tracer's uptake (what the volume pipeline
    feeds the network). ``groups`` name each pair's series with its modality, e.g. ``PET41``, ``SPECT10``.
    """

    names: list[str]
    groups: list[str]
    mri: np.ndarray
    functional: np.ndarray
    uptake: np.ndarray

    @property
    def series(self) -> list[str]:
        """The series number of each pair (the group without its modality)."""
        return [group.removeprefix("SPECT").removeprefix("PET") for group in self.groups]

    def subset(self, keep: np.ndarray) -> PairSet:
        """The pairs where ``keep`` (a boolean mask) is true."""
        index = np.flatnonzero(keep)
        return PairSet(
            [self.names[i] for i in index],
            [self.groups[i] for i in index],
            self.mri[index],
            self.functional[index],
            self.uptake[index],
        )

    def select(self, groups: Iterable[str]) -> PairSet:
        """The pairs of the named groups."""
        wanted = set(groups)
        return self.subset(np.array([group in wanted for group in self.groups], dtype=bool))

    @staticmethod
    def concatenate(parts: Sequence[PairSet]) -> PairSet:
        """All pairs of ``parts``, in order."""
        return PairSet(
            [name for part in parts for name in part.names],
            [group for part in parts for group in part.groups],
            np.concatenate([part.mri for part in parts]),
            np.concatenate([part.functional for part in parts]),
            np.concatenate([part.uptake for part in parts]),
        )


def _read_png(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise UnreadableInputError(f"{path}: cannot be read as an image; replace or remove the file.") from exc


def load_pairs(data_dir: str | Path, modality: str = "PET") -> PairSet:
    """Read every ``MRI/<name>`` + ``<modality>/<name>`` pair of the Harvard layout.

    MRI is read as grey; the PET/SPECT pseudo-colour RGB gives its BT.601 luminance and its uptake
    (the inverse of the atlas colour map of that modality). The series of a file
    ``<series><3-digit slice>.png`` is its name minus the last three digits.
    """
    top, functional_name, colormap = PAIR_FOLDERS[modality]
    root = Path(data_dir) / top
    mri_dir, functional_dir = root / "MRI", root / functional_name
    for folder in (mri_dir, functional_dir):
        if not folder.is_dir():
            raise UnreadableInputError(
                f"{folder}: folder not found; --data must point at the Harvard data set "
                f"(with PET-MRI/MRI, PET-MRI/PET, SPECT-MRI/MRI, SPECT-MRI/SPECT)."
            )
    names = sorted(p.name for p in mri_dir.glob("*.png") if (functional_dir / p.name).is_file())
    if not names:
        raise InvalidInputError(f"{root}: no MRI/{functional_name} pairs of PNG files with the same name were found.")
    mri = np.stack([_read_png(mri_dir / name, "L") for name in names])
    colour = np.stack([_read_png(functional_dir / name, "RGB") for name in names])
    if mri.shape != colour.shape[:3]:
        raise InvalidInputError(f"{root}: MRI and {functional_name} slices differ in size; the pairs must match.")
    groups = [modality + Path(name).stem[:-3] for name in names]
    functional = np.clip(rgb_to_ycbcr(colour)[0], 0.0, 1.0)
    return PairSet(names, groups, mri, functional, colormap_values(colour, colormap))


def load_harvard(data_dir: str | Path) -> PairSet:
    """All PET-MRI and SPECT-MRI pairs of the Harvard folder."""
    return PairSet.concatenate([load_pairs(data_dir, "PET"), load_pairs(data_dir, "SPECT")])


# Cross-validation folds: each holds out one PET-MRI series (T1 MRI) and a group of SPECT-MRI series
# (T2 MRI), about a third of each modality; the SPECT groups were balanced by slice count (103, 89, 101).
CV_FOLDS: tuple[tuple[str, ...], ...] = (
    ("PET25", "SPECT10", "SPECT11", "SPECT15", "SPECT22", "SPECT28"),
    ("PET30", "SPECT21", "SPECT25", "SPECT35", "SPECT40"),
    ("PET41", "SPECT3", "SPECT4", "SPECT18", "SPECT29"),
)
# Validation sets of a fold: (label, modality of the held-out pairs, functional input kind).
#   colour:   Y of the atlas's own pseudo-colour image (the 2-D benchmark convention)
#   uptake:   the inverted colour map (what the volume pipeline feeds the network)
#   pet-map:  SPECT uptake recoloured with the PET map, Y (T2 MRI + PET-colour pairs)
VALIDATION_SETS = (
    ("PET (T1) colour", "PET", "colour"),
    ("PET (T1) uptake", "PET", "uptake"),
    ("T2 + PET map colour", "SPECT", "pet-map"),
    ("SPECT (T2) colour", "SPECT", "colour"),
)


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults reproduce the bundled volumes' weights (with
    ``order_weight=0`` the 2-D ones)."""

    data: Path
    output: Path | None
    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 8
    crop: int = 128
    learning_rate: float = 2e-3
    seed: int = 0
    holdout: tuple[str, ...] = ()
    intensity_weight: float = 1.0
    gradient_weight: float = 4.0
    gradient_gain: float = 1.05
    ssim_weight: float = 1.0
    ssim_range: float = 0.0078
    scd_weight: float = 0.25
    qabf_weight: float = 0.0
    monotone_weight: float = 1.0
    monotone_slope: float = 0.1
    order_weight: float = 1.0
    uptake_share: float = 0.4
    pet_map_share: float = 0.5
    spect_share: float = 0.5
    uptake_scale: float = 1.25
    mri_gamma: float = 1.4
    plateau_share: float = 0.3
    channels: tuple[int, ...] = DEFAULT_CHANNELS
    threads: int | None = None
    overwrite: bool = False


@dataclass
class TrainResult:
    """What a run produced: the weights file (None for a cross-validation fold), its hash, history, wall time."""

    output: Path | None
    sha256: str | None
    parameters: int
    wall_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    model: FusionNet | None = None


def training_split(pairs: PairSet, holdout: Iterable[str]) -> tuple[PairSet, PairSet]:
    """(training pairs, held-out pairs): whole series go to one side, never single slices."""
    held = set(holdout)
    unknown = held - set(pairs.groups)
    if unknown:
        available = ", ".join(sorted(set(pairs.groups)))
        raise UsageError(f"--holdout {', '.join(sorted(unknown))}: no such series; choose from {available}.")
    is_held = np.array([group in held for group in pairs.groups], dtype=bool)
    return pairs.subset(~is_held), pairs.subset(is_held)


def functional_input(pairs: PairSet, kind: str) -> np.ndarray:
    """The functional input of ``kind`` (see :data:`VALIDATION_SETS`) for every pair."""
    if kind == "colour":
        return pairs.functional
    if kind == "uptake":
        return pairs.uptake
    if kind == "pet-map":
        return colour_luminance(pairs.uptake, "aanlib")
    raise ValueError(f"unknown functional input kind {kind!r}")


def colour_luminance(uptake: np.ndarray, colormap: str) -> np.ndarray:
    """BT.601 luminance of ``uptake`` (in [0, 1]) shown in ``colormap``."""
    return np.clip(rgb_to_ycbcr(apply_colormap(uptake, colormap))[0], 0.0, 1.0).astype(np.float32)


# ---- losses ----------------------------------------------------------------------------------------------------
def sobel_gradients(image: torch.Tensor, padding: str = "replicate") -> torch.Tensor:
    """(Gx, Gy) of the 3x3 Sobel operator: (N, 1, H, W) -> (N, 2, H, W); ``padding`` "replicate" or
    "constant" (zeros, as the Qabf metric pads)."""
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=image.device)
    kernels = torch.stack((kernel_x, kernel_x.t())).unsqueeze(1)
    return F.conv2d(F.pad(image, (1, 1, 1, 1), mode=padding), kernels)


def dominant_gradient(mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
    """At each pixel the Sobel gradient (Gx, Gy) of the source whose gradient is stronger there."""
    mri_gradient, pet_gradient = sobel_gradients(mri), sobel_gradients(pet)
    mri_stronger = mri_gradient.abs().sum(dim=1, keepdim=True) >= pet_gradient.abs().sum(dim=1, keepdim=True)
    return torch.where(mri_stronger, mri_gradient, pet_gradient)


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM map with a 7x7 uniform window (the skimage default the fusion metrics use).

    A small ``data_range`` shrinks the stabilising constants, so flat areas only match flat areas.
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, SSIM_WINDOW, stride=1)

    mu_x, mu_y = mean(x), mean(y)
    var_x = mean(x * x) - mu_x**2
    var_y = mean(y * y) - mu_y**2
    cov = mean(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def _correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each image pair of two (N, 1, H, W) tensors, shape (N,)."""
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    y = y - y.mean(dim=(-2, -1), keepdim=True)
    numerator = (x * y).sum(dim=(1, 2, 3))
    return numerator / torch.sqrt((x * x).sum(dim=(1, 2, 3)) * (y * y).sum(dim=(1, 2, 3)) + 1e-12)


def _edges(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel edge strength and orientation as Qabf measures them (zero padding), kept differentiable.

    The orientation arctan(sy / sx) is taken as arctan(sy sx / (sx^2 + 1e-4)): equal where the edge is
    clear, but with a bounded derivative where F is nearly flat (arctan's own grows as 1 / strength).
    """
    sobel = sobel_gradients(image, padding="constant")
    sx, sy = sobel[:, :1], sobel[:, 1:]
    return torch.sqrt(sx * sx + sy * sy + 1e-12), torch.atan(sy * sx / (sx * sx + 1e-4))


def edge_transfer(fused: torch.Tensor, mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
    """Qabf of each (N, 1, H, W) image triple, as :func:`medfuse.metrics.qabf` scores it, differentiable in F."""
    strength_f, orientation_f = _edges(fused)
    preserved, weights = torch.zeros_like(fused), torch.zeros_like(fused)
    for source in (mri, pet):
        strength_s, orientation_s = _edges(source)
        ratio = torch.minimum(strength_s, strength_f) / torch.maximum(strength_s, strength_f)
        agreement = 1.0 - (orientation_s - orientation_f).abs() / (math.pi / 2)
        strength_term = QABF_GAMMA_G * torch.sigmoid(-QABF_KAPPA_G * (ratio - QABF_SIGMA_G))
        orientation_term = QABF_GAMMA_A * torch.sigmoid(-QABF_KAPPA_A * (agreement - QABF_SIGMA_A))
        preserved = preserved + strength_term * orientation_term * strength_s
        weights = weights + strength_s
    return preserved.sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1e-6)


def fusion_loss(
    fused: torch.Tensor, mri: torch.Tensor, pet: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted unsupervised loss (module docstring, all terms but monotonicity) and its parts."""
    intensity = F.l1_loss(fused, torch.maximum(mri, pet))
    # |Gx| + |Gy| of the difference, like the magnitudes the Sobel-based metrics (Qabf, SF) compare
    gradient = 2.0 * F.l1_loss(sobel_gradients(fused), config.gradient_gain * dominant_gradient(mri, pet))
    similarity = ssim_map(fused, mri, config.ssim_range).mean() + ssim_map(fused, pet, config.ssim_range).mean()
    structure = 1.0 - 0.5 * similarity
    complementarity = 1.0 - 0.5 * (_correlation(fused - pet, mri) + _correlation(fused - mri, pet)).mean()
    edge_loss = 1.0 - edge_transfer(fused, mri, pet).mean() if config.qabf_weight else torch.zeros(())
    total = (
        config.intensity_weight * intensity
        + config.gradient_weight * gradient
        + config.ssim_weight * structure
        + config.scd_weight * complementarity
        + config.qabf_weight * edge_loss
    )
    parts = {
        "intensity": intensity.item(),
        "gradient": gradient.item(),
        "ssim": structure.item(),
        "scd": complementarity.item(),
        **({"qabf": edge_loss.item()} if config.qabf_weight else {}),
    }
    return total, parts


def monotone_shortfall(
    fused: torch.Tensor, raised_fused: torch.Tensor, rise: torch.Tensor, slope: float
) -> torch.Tensor:
    """How far F fell short of rising by ``slope`` times the PET's rise, relative to the total rise (0 = none)."""
    shortfall = F.relu(slope * rise - (raised_fused - fused))
    return shortfall.sum() / rise.sum().clamp_min(1e-6)


# Pixel pairs of the ordering term: one pixel and the pixel this (row, column) shift away, in four directions
# at four distances (either order of a pair is the same pair).
ORDER_SHIFTS = tuple((d * dy, d * dx) for d in (2, 4, 8, 16) for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)))
# Two pixels' MRI "match" (the same tissue, as far as F's ordering goes) within this difference.
ORDER_MRI_TOLERANCE = 0.02


def _shifted_views(image: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The overlapping parts of ``image`` and of ``image`` shifted by (rows, cols): pixel p and pixel p + shift."""
    height, width = image.shape[-2:]
    here = image[..., max(rows, 0) : height + min(rows, 0), max(cols, 0) : width + min(cols, 0)]
    there = image[..., max(-rows, 0) : height + min(-rows, 0), max(-cols, 0) : width + min(-cols, 0)]
    return here, there


def order_shortfall(fused: torch.Tensor, mri: torch.Tensor, pet: torch.Tensor, slope: float) -> torch.Tensor:
    """How far F fails to order pixel pairs of matching MRI by their uptake, relative to their uptake differences.

    For each pair of :data:`ORDER_SHIFTS` whose MRI differs by less than :data:`ORDER_MRI_TOLERANCE`, F at
    the pair's hotter pixel should exceed F at the other by ``slope`` times their uptake difference; the
    shortfalls' sum over the sum of the pairs' uptake differences (0 = every pair ordered).
    """
    shortfall, total = fused.new_zeros(()), fused.new_zeros(())
    for rows, cols in ORDER_SHIFTS:
        fused_here, fused_there = _shifted_views(fused, rows, cols)
        mri_here, mri_there = _shifted_views(mri, rows, cols)
        pet_here, pet_there = _shifted_views(pet, rows, cols)
        uptake_step = pet_here - pet_there
        paired = (((mri_here - mri_there).abs() < ORDER_MRI_TOLERANCE) & (uptake_step.abs() > 1e-3)).to(fused.dtype)
        rise = torch.sign(uptake_step) * (fused_here - fused_there)
        shortfall = shortfall + (F.relu(slope * uptake_step.abs() - rise) * paired).sum()
        total = total + (uptake_step.abs() * paired).sum()
    return shortfall / total.clamp_min(1e-6)


def pet_bumps(pet: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth positive rise for each (B, 1, H, W) functional crop: a Gaussian bump (peak 0.05-0.3, sd 3-20 px)
    where the crop is not black, kept inside [0, 1] once added."""
    batch, _, height, width = pet.shape
    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    rise = np.empty_like(pet)
    for b in range(batch):
        peak, sd = rng.uniform(0.05, 0.3), rng.uniform(3.0, 20.0)
        centre_row, centre_col = rng.uniform(0, height), rng.uniform(0, width)
        bump = peak * np.exp(-((rows - centre_row) ** 2 + (cols - centre_col) ** 2) / (2 * sd * sd))
        rise[b, 0] = np.minimum(bump, 1.0 - pet[b, 0]) * (pet[b, 0] > BLACK_LEVEL)
    return rise.astype(np.float32)


def paint_plateau(uptake: np.ndarray, mri: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``uptake`` (H, W) with a uniformly hot lesion added: an ellipse (semi-axes 5-30 px, any angle) of one
    uptake level (0.4-1.0) inside the anatomy, blurred by a Gaussian of 1-3 px, kept where hotter than before.

    The brain slices hold few broad plateaus of uptake; a sarcoma or a NEMA sphere is one.
    """
    from scipy import ndimage

    height, width = uptake.shape
    tissue = np.flatnonzero(mri > BLACK_LEVEL)
    centre = int(tissue[rng.integers(len(tissue))]) if len(tissue) else int(rng.integers(height * width))
    centre_row, centre_col = divmod(centre, width)
    semi_a, semi_b, angle = rng.uniform(5.0, 30.0), rng.uniform(5.0, 30.0), rng.uniform(0.0, math.pi)
    level, blur = rng.uniform(0.4, 1.0), rng.uniform(1.0, 3.0)
    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    along = (rows - centre_row) * math.cos(angle) + (cols - centre_col) * math.sin(angle)
    across = (cols - centre_col) * math.cos(angle) - (rows - centre_row) * math.sin(angle)
    lesion = np.where((along / semi_a) ** 2 + (across / semi_b) ** 2 <= 1.0, np.float32(level), np.float32(0.0))
    return np.maximum(uptake, ndimage.gaussian_filter(lesion, blur)).astype(np.float32)


# ---- sampling --------------------------------------------------------------------------------------------------
def _log_uniform(rng: np.random.Generator, largest: float) -> float:
    """A factor between 1 / largest and largest, uniform in log."""
    return float(np.exp(rng.uniform(-math.log(largest), math.log(largest)))) if largest > 1 else 1.0


def sample_batch(
    pairs: PairSet, rng: np.random.Generator, batch_size: int, crop: int, config: TrainConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random training crops as two (B, 1, crop, crop) arrays (MRI, functional input) and, per crop, whether
    its functional input is uptake (a (B,) boolean array; the volume pipeline's input kind).

    Each crop: a PET-MRI or SPECT-MRI pair (``spect_share``), a functional input kind (uptake with
    ``uptake_share``, else the pseudo-colour luminance; SPECT shown in the PET map with
    ``pet_map_share``), uptake rescaled by up to ``uptake_scale`` before colouring, a uniformly hot lesion
    painted into ``plateau_share`` of the uptake crops (:func:`paint_plateau`), MRI contrast bent by a gamma
    of up to ``mri_gamma``, and the same random flips and 90-degree turns for both sources.
    """
    config = config or TrainConfig(data=Path(), output=None, uptake_share=0.0, uptake_scale=1.0, mri_gamma=1.0)
    height, width = pairs.mri.shape[1:]
    crop_h, crop_w = min(crop, height), min(crop, width)
    is_spect = np.array([group.startswith("SPECT") for group in pairs.groups], dtype=bool)
    by_modality = [np.flatnonzero(~is_spect), np.flatnonzero(is_spect)]
    mri_batch = np.empty((batch_size, 1, crop_h, crop_w), np.float32)
    pet_batch = np.empty_like(mri_batch)
    uptake_crops = np.zeros(batch_size, dtype=bool)
    for b in range(batch_size):
        pool = by_modality[int(rng.random() < config.spect_share)]
        pool = pool if len(pool) else np.arange(len(pairs.names))
        i = int(pool[rng.integers(len(pool))])
        top = rng.integers(height - crop_h + 1)
        left = rng.integers(width - crop_w + 1)
        window = (i, slice(top, top + crop_h), slice(left, left + crop_w))
        scale = _log_uniform(rng, config.uptake_scale)
        uptake_crops[b] = rng.random() < config.uptake_share
        if uptake_crops[b]:
            functional = np.clip(pairs.uptake[window] * scale, 0.0, 1.0)
            if config.plateau_share and rng.random() < config.plateau_share:
                functional = paint_plateau(functional, pairs.mri[window], rng)
        elif is_spect[i] and rng.random() < config.pet_map_share:
            functional = colour_luminance(np.clip(pairs.uptake[window] * scale, 0.0, 1.0), "aanlib")
        elif scale != 1.0:
            colormap = "aanlib-spect" if is_spect[i] else "aanlib"
            functional = colour_luminance(np.clip(pairs.uptake[window] * scale, 0.0, 1.0), colormap)
        else:
            functional = pairs.functional[window]
        mri = pairs.mri[window]
        gamma = _log_uniform(rng, config.mri_gamma)
        if gamma != 1.0:
            mri = mri**gamma
        flip_rows, flip_cols, turns = rng.integers(2), rng.integers(2), rng.integers(4) if crop_h == crop_w else 0
        for source, target in ((mri, mri_batch), (functional, pet_batch)):
            patch = source
            if flip_rows:
                patch = patch[::-1]
            if flip_cols:
                patch = patch[:, ::-1]
            target[b, 0] = np.rot90(patch, int(turns))
    return mri_batch, pet_batch, uptake_crops


# ---- running and scoring ---------------------------------------------------------------------------------------
def predict(model: FusionNet, mri: np.ndarray, pet: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Fuse (N, H, W) arrays whose H and W are multiples of the model's stride; output clipped to [0, 1]."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(mri), batch_size):
            a = torch.from_numpy(np.ascontiguousarray(mri[start : start + batch_size, None]))
            b = torch.from_numpy(np.ascontiguousarray(pet[start : start + batch_size, None]))
            outputs.append(model(a, b).clamp_(0.0, 1.0)[:, 0].numpy())
    return np.concatenate(outputs)


def validation_metrics(fused: np.ndarray, mri: np.ndarray, pet: np.ndarray) -> dict[str, float]:
    """Mean fusion metrics of :mod:`medfuse.metrics` (Y on 0..255) over (N, H, W) arrays in [0, 1]."""
    from medfuse.metrics import compute_metrics, luminance_255, mean_metrics

    return mean_metrics(
        compute_metrics(luminance_255(f), luminance_255(a), luminance_255(b))
        for f, a, b in zip(fused, mri, pet, strict=True)
    )


def score_held_out(
    model: FusionNet,
    held_out: PairSet,
    validate: Callable[..., dict[str, float]] = validation_metrics,
) -> dict[str, dict[str, float]]:
    """The metrics of each :data:`VALIDATION_SETS` entry that the held-out pairs have (label -> means)."""
    scores = {}
    for label, modality, kind in VALIDATION_SETS:
        chosen = held_out.select(group for group in set(held_out.groups) if group.startswith(modality))
        if chosen.names:
            functional = functional_input(chosen, kind)
            scores[label] = validate(predict(model, chosen.mri, functional), chosen.mri, functional)
    return scores


def _state_for_saving(model: FusionNet) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}


def _check_config(config: TrainConfig) -> None:
    if config.epochs < 1 or config.steps_per_epoch < 1 or config.batch_size < 1:
        raise UsageError("--epochs, --steps-per-epoch and --batch-size must all be at least 1.")
    if config.crop < 16 or config.crop % 16:
        raise UsageError(f"--crop {config.crop}: use a multiple of 16 of at least 16.")
    shares = {
        "--uptake-share": config.uptake_share,
        "--pet-map-share": config.pet_map_share,
        "--spect-share": config.spect_share,
        "--plateau-share": config.plateau_share,
    }
    for option, value in shares.items():
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{option} {value:g}: use a share between 0 and 1.")


def fit(config: TrainConfig, pairs: PairSet, label: str = "training") -> tuple[FusionNet, list[dict[str, float]]]:
    """Train a FusionNet from scratch on ``pairs`` as ``config`` says; returns the model and per-epoch losses."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = FusionNet(config.channels)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    total_steps = config.epochs * config.steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    history: list[dict[str, float]] = []
    with make_progress() as progress:
        task = progress.add_task(label, total=total_steps)
        for epoch in range(1, config.epochs + 1):
            model.train()
            sums: dict[str, float] = {}
            for _ in range(config.steps_per_epoch):
                mri_np, pet_np, uptake_crops = sample_batch(pairs, rng, config.batch_size, config.crop, config)
                mri, pet = torch.from_numpy(mri_np), torch.from_numpy(pet_np)
                fused = model(mri, pet)
                loss, parts = fusion_loss(fused, mri, pet, config)
                if config.monotone_weight > 0:  # on half of the crops: a second pass costs a whole one
                    half = max(1, config.batch_size // 2)
                    rise = torch.from_numpy(pet_bumps(pet_np[:half], rng))
                    raised = model(mri[:half], pet[:half] + rise)
                    shortfall = monotone_shortfall(fused[:half], raised, rise, config.monotone_slope)
                    loss = loss + config.monotone_weight * shortfall
                    parts["monotone"] = shortfall.item()
                if config.order_weight > 0 and uptake_crops.any():
                    chosen = torch.from_numpy(uptake_crops)
                    disorder = order_shortfall(fused[chosen], mri[chosen], pet[chosen], config.monotone_slope)
                    loss = loss + config.order_weight * disorder
                    parts["order"] = disorder.item()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                for key, value in {"loss": loss.item(), **parts}.items():
                    sums[key] = sums.get(key, 0.0) + value
                progress.advance(task)
            record = {"epoch": float(epoch), **{k: v / config.steps_per_epoch for k, v in sums.items()}}
            history.append(record)
            shown = "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch")
            progress.console.print(f"{label}: epoch {epoch}/{config.epochs}  {shown}", markup=False, highlight=False)
    return model.eval(), history


def _recipe(config: TrainConfig) -> dict[str, str]:
    return {k: str(v) for k, v in asdict(config).items() if k not in ("data", "output", "overwrite", "holdout")}


def _training_software() -> dict[str, str]:
    """What a bit-identical retraining needs besides the recipe: torch's version and the CPU kernels it used."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def train(config: TrainConfig) -> TrainResult:
    """Train a FusionNet on every Harvard pair except ``config.holdout`` and write its weights (+ .sha256).

    Bit-identical for a given seed and thread count on one torch version and one kind of CPU: torch picks
    its vector kernels by CPU (AVX2, AVX-512), whose rounding differs in the last bits and grows over
    training. The recipe, torch's version and its CPU capability are stored in the file's metadata.
    """
    import hashlib

    from safetensors.torch import save_file

    if config.output is None:
        raise UsageError("--output: name the weights file to write (.safetensors).")
    output = check_output_path(config.output, allowed=(".safetensors",), overwrite=config.overwrite, option="--output")
    sidecar = output.with_name(output.name + ".sha256")
    check_output_path(sidecar, overwrite=config.overwrite, option="--output")
    _check_config(config)
    started = time.perf_counter()
    train_pairs, _ = training_split(load_harvard(config.data), config.holdout)
    info(f"training on {len(train_pairs.names)} slice pairs of {len(set(train_pairs.groups))} series")
    model, history = fit(config, train_pairs)
    state = _state_for_saving(model)
    # One metadata key: safetensors stores the metadata map in arbitrary order, which would make two
    # identical trainings write files with different hashes.
    metadata = {
        "medfuse": json.dumps(
            {
                "format": "medfuse-fusionnet-v2",
                "channels": list(model.channels),
                "recipe": _recipe(config),
                "held_out": sorted(config.holdout),
                "final_losses": {k: round(v, 5) for k, v in history[-1].items() if k != "epoch"},
                "trained_with": _training_software(),
            },
            sort_keys=True,
        )
    }
    digests: list[str] = []

    def write_weights(path: Path) -> None:
        save_file(state, str(path), metadata=metadata)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())

    with output_transaction(overwrite=config.overwrite) as transaction:
        transaction.write(output, write_weights)
        transaction.write(sidecar, lambda path: path.write_text(f"{digests[0]}  {output.name}\n"))
    wall = time.perf_counter() - started
    info(f"wrote {output} (sha256 {digests[0]}) in {wall / 60:.1f} min")
    return TrainResult(output, digests[0], parameter_count(model), wall, history, model)


# ---- cross-validation ------------------------------------------------------------------------------------------
@dataclass
class CrossValidation:
    """Held-out metrics per fold and validation set, and their mean and spread over the folds."""

    held_out: list[tuple[str, ...]]
    folds: list[dict[str, dict[str, float]]]
    wall_seconds: float

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """label -> metric -> (mean, population standard deviation) over the folds that have the label."""
        labels = [label for label, _, _ in VALIDATION_SETS if any(label in fold for fold in self.folds)]
        table: dict[str, dict[str, tuple[float, float]]] = {}
        for label in labels:
            rows = [fold[label] for fold in self.folds if label in fold]
            table[label] = {
                name: (float(np.mean([row[name] for row in rows])), float(np.std([row[name] for row in rows])))
                for name in rows[0]
            }
        return table

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready record: the folds' held-out series, per-fold metrics and the summary."""
        return {
            "folds": [
                {"held_out": list(groups), "metrics": fold}
                for groups, fold in zip(self.held_out, self.folds, strict=True)
            ],
            "summary": {label: {k: list(v) for k, v in row.items()} for label, row in self.summary().items()},
            "wall_seconds": self.wall_seconds,
        }


def cross_validate(
    config: TrainConfig,
    folds: Sequence[Sequence[str]] = CV_FOLDS,
    validate: Callable[..., dict[str, float]] = validation_metrics,
    json_path: Path | None = None,
) -> CrossValidation:
    """Leave series out: for each fold train the recipe without its series and score them on those.

    No weights are written; with ``json_path`` the folds' metrics and their summary are (checked first).
    """
    _check_config(config)
    if json_path is not None:
        check_output_path(json_path, allowed=(".json",), overwrite=config.overwrite, option="--cv-json")
    started = time.perf_counter()
    pairs = load_harvard(config.data)
    results = []
    for number, held in enumerate(folds, start=1):
        train_pairs, held_out = training_split(pairs, held)
        model, _ = fit(config, train_pairs, label=f"fold {number}/{len(folds)} (without {', '.join(held)})")
        with stage(f"scoring fold {number} on {len(held_out.names)} held-out pairs"):
            results.append(score_held_out(model, held_out, validate))
    result = CrossValidation([tuple(held) for held in folds], results, time.perf_counter() - started)
    if json_path is not None:
        text = json.dumps({**result.to_dict(), "recipe": _recipe(config)}, indent=2) + "\n"
        with output_transaction(overwrite=config.overwrite) as transaction:
            transaction.write(json_path, lambda path: path.write_text(text, encoding="utf-8"))
    return result


def cross_validation_table(result: CrossValidation) -> Table:
    """A rich table: per validation set, each metric's mean and spread (population SD) over the folds."""
    from rich.table import Table

    from medfuse.metrics import METRIC_NAMES

    table = Table(title=f"held-out series, mean ± SD over {len(result.folds)} folds")
    table.add_column("validation set")
    for name in METRIC_NAMES:
        table.add_column(name, justify="right")
    for label, row in result.summary().items():
        table.add_row(label, *(f"{row[name][0]:.3f} ± {row[name][1]:.3f}" for name in METRIC_NAMES))
    return table
