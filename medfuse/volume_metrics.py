"""Scoring fused volumes: the eight fusion metrics over head slices, and how faithfully the fused
brightness follows the PET's uptake.

``medfuse evaluate --fused fused.nii.gz --mri mri.nii.gz --pet pet_on_mri.nii.gz`` lands here. The three
volumes must share one grid (the fused volume and ``fuse --save-pet`` are written on the MRI's grid).

* **Fusion metrics**: the MRI and the PET are brought to [0, 1] as the pipeline brings them for the
  network (:func:`medfuse.pipeline.network_inputs`, with the windows taken from these volumes), the
  fused volume is taken as it is (medfuse writes it in [0, 1]); each axial slice of the MRI grid whose
  head covers at least :data:`MIN_HEAD_SHARE` of the largest head section is scored with
  :func:`medfuse.metrics.compute_metrics` on 0..255, and the slice scores are averaged.
* **Uptake fidelity** (:func:`uptake_fidelity`), over the head voxels: within each MRI-intensity
  decile (voxels of similar anatomy), the Spearman rank correlation between PET and fused values and
  whether the fused mean rises from each PET decile to the next; the fused mean of PET percentile
  classes (is the hottest class the brightest?) and the contrast of the hottest 1 % against the
  50th-90th percentile. A fused volume that shows uptake faithfully has rank correlations near 1,
  rising steps everywhere and a hot contrast well above 1. Each decile is also reported on its own
  (:class:`StratumFidelity`): where the MRI has a few flat tissue levels (a phantom), a decile can span
  two tissues, and then its PET deciles sort tissues rather than uptake; its MRI range shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfuse.errors import InvalidInputError

if TYPE_CHECKING:
    import SimpleITK as sitk
    from rich.table import Table

#: MRI-intensity strata (deciles of the head voxels) within which PET and fused are compared.
STRATA = 10
#: PET percentile classes whose fused means are reported (the last is the hottest).
PET_CLASSES = ((0.0, 50.0), (50.0, 90.0), (90.0, 99.0), (99.0, 99.9), (99.9, 100.0))
#: Head voxels drawn for the fidelity statistics at most (a regular stride: deterministic).
FIDELITY_SAMPLES = 2_000_000
#: A slice is scored when its head section is at least this share of the largest one.
MIN_HEAD_SHARE = 0.1
#: Grids agree when size matches and spacing, origin and direction agree to this (relative to spacing).
GRID_TOLERANCE = 1e-4


@dataclass
class StratumFidelity:
    """One MRI-intensity decile: its MRI range (network input, 0-1), size, rank correlation and rising steps."""

    mri_low: float
    mri_high: float
    voxels: int
    rank_correlation: float
    rising: int
    steps: int


@dataclass
class UptakeFidelity:
    """How the fused brightness follows uptake (see the module docstring); all over head voxels."""

    rank_correlation: float
    rank_correlation_min: float
    rising_steps: float
    steps: int
    class_means: dict[str, float]
    hottest_is_brightest: bool
    hot_contrast: float
    strata: list[StratumFidelity] = field(default_factory=list)


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return np.asarray(rankdata(values), dtype=np.float64)


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either side is constant."""
    if x.size < 3:
        return 0.0
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else 0.0


def _class_index(values: np.ndarray, count: int) -> np.ndarray:
    """Quantile class (0..k-1) of each value, with tied quantile edges merged (so a class is never split
    between equal values)."""
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, count + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


def _regular_sample(mask: np.ndarray) -> np.ndarray:
    """Flat indices of at most :data:`FIDELITY_SAMPLES` mask voxels, a regular stride through them."""
    index = np.flatnonzero(mask)
    step = max(1, int(np.ceil(index.size / FIDELITY_SAMPLES)))
    return index[::step]


def uptake_fidelity(fused: np.ndarray, mri: np.ndarray, pet: np.ndarray, mask: np.ndarray) -> UptakeFidelity:
    """Uptake fidelity of a fused volume (arrays of one shape; ``mask`` marks the head voxels)."""
    if not (fused.shape == mri.shape == pet.shape == mask.shape):
        raise ValueError(f"fused, MRI, PET and mask must have one shape, got {fused.shape}, {mri.shape}, {pet.shape}")
    chosen = _regular_sample(mask)
    if chosen.size < STRATA * 10:
        raise InvalidInputError(f"only {chosen.size} head voxels: too few to measure the uptake fidelity.")
    f = np.asarray(fused, dtype=np.float64).ravel()[chosen]
    a = np.asarray(mri, dtype=np.float64).ravel()[chosen]
    b = np.asarray(pet, dtype=np.float64).ravel()[chosen]
    strata: list[StratumFidelity] = []
    stratum_index = _class_index(a, STRATA)
    for stratum in range(int(stratum_index.max()) + 1):
        inside = stratum_index == stratum
        voxels = int(inside.sum())
        if voxels < 10:
            continue
        f_in, a_in, b_in = f[inside], a[inside], b[inside]
        classes = _class_index(b_in, STRATA)
        means = [f_in[classes == c].mean() for c in np.unique(classes)]
        strata.append(
            StratumFidelity(
                mri_low=float(a_in.min()),
                mri_high=float(a_in.max()),
                voxels=voxels,
                rank_correlation=_rank_correlation(b_in, f_in),
                rising=int(np.sum(np.diff(means) > 0)),
                steps=len(means) - 1,
            )
        )
    correlations = [s.rank_correlation for s in strata]
    rising, steps = sum(s.rising for s in strata), sum(s.steps for s in strata)
    edges = np.percentile(b, [edge for edge, _ in PET_CLASSES] + [100.0])
    class_means: dict[str, float] = {}
    for (low, high), low_value, high_value in zip(PET_CLASSES, edges[:-1], edges[1:], strict=True):
        members = (b >= low_value) & ((b <= high_value) if high == 100.0 else (b < high_value))
        if members.any():
            class_means[f"{low:g}-{high:g}"] = float(f[members].mean())
    hottest = list(class_means.values())[-1]
    hot = f[b >= np.percentile(b, 99.0)]
    warm = f[(b >= np.percentile(b, 50.0)) & (b < np.percentile(b, 90.0))]
    warm_mean = float(warm.mean()) if warm.size else 0.0
    return UptakeFidelity(
        rank_correlation=float(np.average(correlations, weights=[s.voxels for s in strata])),
        rank_correlation_min=float(np.min(correlations)),
        rising_steps=rising / steps if steps else 0.0,
        steps=steps,
        class_means=class_means,
        hottest_is_brightest=all(hottest > value for value in list(class_means.values())[:-1]),
        hot_contrast=float(hot.mean()) / warm_mean if warm_mean > 0 else float("inf"),
        strata=strata,
    )


# ---- volumes -----------------------------------------------------------------------------------------------
@dataclass
class VolumeEvaluation:
    """Fusion metrics over the head slices of a fused volume and its uptake fidelity."""

    fused: Path
    mri: Path
    pet: Path
    per_slice: dict[int, dict[str, float]]
    fidelity: UptakeFidelity
    windows: dict[str, list[float]]

    @property
    def means(self) -> dict[str, float]:
        """Mean of each metric over the scored slices."""
        from medfuse.metrics import mean_metrics

        return mean_metrics(self.per_slice.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: inputs, slices scored, metric means and per slice, fidelity, windows."""
        return {
            "fused": str(self.fused),
            "mri": str(self.mri),
            "pet": str(self.pet),
            "slices": len(self.per_slice),
            "means": self.means,
            "uptake_fidelity": asdict(self.fidelity),
            "windows": self.windows,
            "per_slice": {str(k): v for k, v in self.per_slice.items()},
        }


def check_same_grid(images: dict[str, sitk.Image]) -> None:
    """Refuse volumes that are not on one grid, naming the first that differs from the first one."""
    (first_name, first), *others = images.items()
    for name, image in others:
        spacing = np.asarray(first.GetSpacing())
        differs = (
            image.GetSize() != first.GetSize()
            or not np.allclose(image.GetSpacing(), spacing, rtol=GRID_TOLERANCE, atol=0.0)
            or not np.allclose(image.GetOrigin(), first.GetOrigin(), atol=GRID_TOLERANCE * spacing.min())
            or not np.allclose(image.GetDirection(), first.GetDirection(), atol=GRID_TOLERANCE)
        )
        if differs:
            raise InvalidInputError(
                f"{name}: not on the grid of {first_name} (size {image.GetSize()} vs {first.GetSize()}, or spacing, "
                "origin or direction differ); give volumes on one grid, e.g. the MRI, the fused volume and the "
                "PET that `medfuse fuse --save-pet` writes."
            )


def evaluate_volume_images(
    fused: sitk.Image, mri: sitk.Image, pet: sitk.Image
) -> tuple[dict[int, dict[str, float]], UptakeFidelity, dict[str, list[float]]]:
    """Per-slice metrics, uptake fidelity and the windows used, for three volumes on one grid."""
    import SimpleITK as sitk

    from medfuse.metrics import compute_metrics, luminance_255
    from medfuse.pipeline import fused_region, mri_window, network_inputs, pet_window

    check_same_grid({"the fused volume": fused, "the MRI": mri, "the PET": pet})
    mask = fused_region(mri)
    if mask.sum() < STRATA * 10:
        raise InvalidInputError("the MRI shows no head or body (too few voxels above its background).")
    mri_values = sitk.GetArrayViewFromImage(mri)
    pet_values = sitk.GetArrayViewFromImage(pet)
    pet_transfer = pet_window(pet_values, mask)
    windows = {"mri": mri_window(mri_values, mask), "pet": (pet_transfer.low, pet_transfer.high)}
    mri_in, pet_in = network_inputs(mri_values, pet_values, windows["mri"], pet_transfer)
    fused_values = sitk.GetArrayFromImage(fused).astype(np.float32)
    fused_values = np.nan_to_num(fused_values)
    if fused_values.min() < 0.0 or fused_values.max() > 1.0:  # not medfuse's [0, 1]: take its own range
        fused_values = (fused_values - fused_values.min()) / max(float(np.ptp(fused_values)), 1e-12)
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    per_slice = {}
    for k in np.flatnonzero(areas >= MIN_HEAD_SHARE * areas.max()):
        if min(mri_in.shape[1:]) < 7:
            break
        per_slice[int(k)] = compute_metrics(
            luminance_255(fused_values[k]), luminance_255(mri_in[k]), luminance_255(pet_in[k])
        )
    fidelity = uptake_fidelity(fused_values, mri_in, pet_in, mask)
    return per_slice, fidelity, {name: [float(v) for v in window] for name, window in windows.items()}


def evaluate_volumes(fused: str | Path, mri: str | Path, pet: str | Path) -> VolumeEvaluation:
    """Read three volumes (files or DICOM folders) on one grid and score them (module docstring)."""
    from medfuse import io

    images = {
        "fused": io.load_volume(Path(fused), role="MRI").image,  # a grey volume, read like the MRI
        "mri": io.load_volume(Path(mri), role="MRI").image,
        "pet": io.load_volume(Path(pet), role="PET").image,
    }
    check_same_grid({str(fused): images["fused"], str(mri): images["mri"], str(pet): images["pet"]})
    try:
        per_slice, fidelity, windows = evaluate_volume_images(images["fused"], images["mri"], images["pet"])
    except InvalidInputError as exc:
        raise InvalidInputError(f"{mri}: {exc.message}") from exc
    if not per_slice:
        raise InvalidInputError(f"{mri}: no axial slice shows enough of the head to be scored.")
    return VolumeEvaluation(Path(fused), Path(mri), Path(pet), per_slice, fidelity, windows)


def run_volume_evaluation(
    fused: str | Path,
    mri: str | Path,
    pet: str | Path,
    json_path: str | Path | None = None,
    overwrite: bool = False,
) -> VolumeEvaluation:
    """``medfuse evaluate`` for volumes: check the JSON path first, score, then write the JSON if asked."""
    from medfuse.atomic import check_output_path
    from medfuse.errors import UnreadableInputError, UsageError
    from medfuse.fusion2d import is_2d_input

    for option, path in (("--fused", fused), ("--mri", mri), ("--pet", pet)):
        if not Path(path).exists():
            raise UnreadableInputError(f"{path}: the {option} input does not exist; check the path.")
    for option, path in (("--mri", mri), ("--pet", pet)):
        if is_2d_input(path):
            raise UsageError(
                f"{option} {path} is a 2-D image (or folder of them) but --fused {fused} is a volume; "
                "give three volumes or three folders of 2-D images."
            )
    if json_path is not None:
        check_output_path(json_path, allowed=(".json",), inputs=[fused, mri, pet], overwrite=overwrite, option="--json")
    evaluation = evaluate_volumes(fused, mri, pet)
    if json_path is not None:
        from medfuse.metrics import write_json

        write_json(evaluation, json_path, overwrite=overwrite)
    return evaluation


def fidelity_table(fidelity: UptakeFidelity, title: str | None = None) -> Table:
    """A rich table of the uptake-fidelity figures."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("uptake fidelity")
    table.add_column("value", justify="right")
    table.add_row("rank correlation PET-fused within MRI deciles (mean)", f"{fidelity.rank_correlation:.3f}")
    table.add_row("  lowest decile", f"{fidelity.rank_correlation_min:.3f}")
    table.add_row(
        "fused mean rises with PET decile (share of steps)", f"{fidelity.rising_steps:.1%} of {fidelity.steps}"
    )
    table.add_row("  rising steps by MRI decile", " ".join(f"{s.rising}/{s.steps}" for s in fidelity.strata))
    for name, value in fidelity.class_means.items():
        table.add_row(f"fused mean, PET percentile {name}", f"{value:.3f}")
    table.add_row("hottest class is the brightest", "yes" if fidelity.hottest_is_brightest else "no")
    table.add_row("hot contrast (top 1 % / 50th-90th percentile)", f"{fidelity.hot_contrast:.2f}")
    return table
