"""Unsupervised training of :class:`medfuse.model.FusionNet` on the Harvard (AANLIB) slices.

There is no ground-truth fused image, so the loss asks the output to keep what each source has:

* **intensity**: L1 distance to the element-wise maximum of MRI and PET luminance, so bright anatomy
  and bright (hot) metabolism both survive at full strength and the black background stays black;
* **gradient**: L1 distance between the output's Sobel gradient magnitude and the larger of the two
  sources' gradient magnitudes, so the sharper edge of either source is kept (MRI anatomy mostly);
* **structure**: one minus the mean SSIM of the output with each source, which keeps local contrast
  and structure close to both at once;
* **complementarity**: one minus half the sum of corr(F - PET, MRI) and corr(F - MRI, PET) (the SCD
  idea): what the output adds to one source should be the other source's content, so neither is
  merely overwritten where the other is brighter.

The split is by series (neighbouring slices of a series are near copies): by default PET-MRI series 41
is held out for validation and everything else (the other PET series and, optionally, the SPECT-MRI
pairs) is used for training. Training is deterministic for a given seed and thread count.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from medfuse.atomic import check_output_path, output_transaction
from medfuse.colour import rgb_to_ycbcr
from medfuse.console import info, make_progress, stage
from medfuse.errors import InvalidInputError, UnreadableInputError, UsageError
from medfuse.model import DEFAULT_CHANNELS, FusionNet, parameter_count

PAIR_FOLDERS = {"PET": ("PET-MRI", "PET"), "SPECT": ("SPECT-MRI", "SPECT")}
SSIM_WINDOW = 7


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults reproduce the bundled weights."""

    data: Path
    output: Path
    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 8
    crop: int = 128
    learning_rate: float = 2e-3
    seed: int = 0
    val_series: str = "41"
    use_spect: bool = True
    intensity_weight: float = 1.0
    gradient_weight: float = 1.0
    ssim_weight: float = 1.0
    ssim_range: float = 0.0078
    scd_weight: float = 0.25
    channels: tuple[int, ...] = DEFAULT_CHANNELS
    val_stride: int = 3
    threads: int | None = None
    overwrite: bool = False


@dataclass
class PairSet:
    """Registered slice pairs: names, MRI grey and functional luminance (N, H, W) float32 in [0, 1]."""

    names: list[str]
    series: list[str]
    mri: np.ndarray
    functional: np.ndarray

    def subset(self, keep: np.ndarray) -> PairSet:
        """The pairs where ``keep`` (a boolean mask) is true."""
        index = np.flatnonzero(keep)
        return PairSet(
            [self.names[i] for i in index], [self.series[i] for i in index], self.mri[index], self.functional[index]
        )


@dataclass
class TrainResult:
    """What a run produced: the weights file, its hash, the history and the wall time."""

    output: Path
    sha256: str
    parameters: int
    wall_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)


def _read_png(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise UnreadableInputError(f"{path}: cannot be read as an image; replace or remove the file.") from exc


def load_pairs(data_dir: str | Path, modality: str = "PET") -> PairSet:
    """Read every ``MRI/<name>`` + ``<modality>/<name>`` pair of the Harvard layout.

    MRI is read as grey; PET/SPECT (pseudo-colour RGB) is reduced to its BT.601 luminance, the channel
    the network fuses. The series of a file ``<series><3-digit slice>.png`` is its name minus the last
    three digits.
    """
    top, functional_name = PAIR_FOLDERS[modality]
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
    functional = np.stack([rgb_to_ycbcr(_read_png(functional_dir / name, "RGB"))[0] for name in names])
    if mri.shape != functional.shape:
        raise InvalidInputError(f"{root}: MRI and {functional_name} slices differ in size; the pairs must match.")
    series = [Path(name).stem[:-3] for name in names]
    return PairSet(names, series, mri, np.clip(functional, 0.0, 1.0))


def split_by_series(pet: PairSet, val_series: str) -> tuple[PairSet, PairSet]:
    """Hold out one PET-MRI series for validation; return (train, validation)."""
    is_val = np.array([s == val_series for s in pet.series])
    if not is_val.any():
        available = ", ".join(sorted(set(pet.series)))
        raise UsageError(f"--val-series {val_series}: no PET-MRI slices of that series; choose one of {available}.")
    return pet.subset(~is_val), pet.subset(is_val)


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of the 3x3 Sobel operator (replicate-padded), for (N, 1, H, W) tensors."""
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=image.device)
    kernels = torch.stack((kernel_x, kernel_x.t())).unsqueeze(1)
    gradients = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernels)
    return gradients.abs().sum(dim=1, keepdim=True)


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


def fusion_loss(
    fused: torch.Tensor, mri: torch.Tensor, pet: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted unsupervised loss (module docstring) and its parts, for (N, 1, H, W) tensors."""
    intensity = F.l1_loss(fused, torch.maximum(mri, pet))
    gradient = F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(mri), sobel_magnitude(pet)))
    similarity = ssim_map(fused, mri, config.ssim_range).mean() + ssim_map(fused, pet, config.ssim_range).mean()
    structure = 1.0 - 0.5 * similarity
    complementarity = 1.0 - 0.5 * (_correlation(fused - pet, mri) + _correlation(fused - mri, pet)).mean()
    total = (
        config.intensity_weight * intensity
        + config.gradient_weight * gradient
        + config.ssim_weight * structure
        + config.scd_weight * complementarity
    )
    parts = {
        "intensity": intensity.item(),
        "gradient": gradient.item(),
        "ssim": structure.item(),
        "scd": complementarity.item(),
    }
    return total, parts


def sample_batch(pairs: PairSet, rng: np.random.Generator, batch_size: int, crop: int) -> tuple[np.ndarray, ...]:
    """Random training crops with random flips and 90-degree turns, as two (B, 1, crop, crop) arrays."""
    height, width = pairs.mri.shape[1:]
    crop_h, crop_w = min(crop, height), min(crop, width)
    mri_batch = np.empty((batch_size, 1, crop_h, crop_w), np.float32)
    pet_batch = np.empty_like(mri_batch)
    for b in range(batch_size):
        i = rng.integers(len(pairs.names))
        top = rng.integers(height - crop_h + 1)
        left = rng.integers(width - crop_w + 1)
        flip_rows, flip_cols, turns = rng.integers(2), rng.integers(2), rng.integers(4) if crop_h == crop_w else 0
        for source, target in ((pairs.mri, mri_batch), (pairs.functional, pet_batch)):
            patch = source[i, top : top + crop_h, left : left + crop_w]
            if flip_rows:
                patch = patch[::-1]
            if flip_cols:
                patch = patch[:, ::-1]
            target[b, 0] = np.rot90(patch, int(turns))
    return mri_batch, pet_batch


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
    from medfuse.metrics import METRIC_NAMES, compute_metrics, luminance_255

    rows = [
        compute_metrics(luminance_255(f), luminance_255(a), luminance_255(b))
        for f, a, b in zip(fused, mri, pet, strict=True)
    ]
    return {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}


def _state_for_saving(model: FusionNet) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}


def train(config: TrainConfig, validate: Callable[..., dict[str, float]] = validation_metrics) -> TrainResult:
    """Train a FusionNet from scratch as ``config`` says and write its weights (and a .sha256 sidecar).

    Deterministic for a given seed and thread count. Prints a progress bar and, after each epoch,
    the loss and the validation metrics on every ``val_stride``-th slice of the held-out series (all
    of its slices once training ends, stored in the result and the weights' metadata).
    """
    import hashlib

    from safetensors.torch import save_file

    output = check_output_path(config.output, allowed=(".safetensors",), overwrite=config.overwrite, option="--output")
    sidecar = output.with_name(output.name + ".sha256")
    check_output_path(sidecar, overwrite=config.overwrite, option="--output")
    if config.epochs < 1 or config.steps_per_epoch < 1 or config.batch_size < 1:
        raise UsageError("--epochs, --steps-per-epoch and --batch-size must all be at least 1.")
    if config.val_stride < 1:
        raise UsageError(f"--val-stride {config.val_stride}: use a positive slice step.")
    if config.crop < 16 or config.crop % 8:
        raise UsageError(f"--crop {config.crop}: use a multiple of 8 of at least 16.")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()

    train_pairs, val_pairs = split_by_series(load_pairs(config.data, "PET"), config.val_series)
    if config.use_spect:
        spect = load_pairs(config.data, "SPECT")
        train_pairs = PairSet(
            train_pairs.names + spect.names,
            train_pairs.series + spect.series,
            np.concatenate((train_pairs.mri, spect.mri)),
            np.concatenate((train_pairs.functional, spect.functional)),
        )
    info(
        f"training on {len(train_pairs.names)} slice pairs, validating on PET-MRI series "
        f"{config.val_series} ({len(val_pairs.names)} pairs)"
    )

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
        task = progress.add_task("training", total=total_steps)
        for epoch in range(1, config.epochs + 1):
            model.train()
            sums: dict[str, float] = {}
            for _ in range(config.steps_per_epoch):
                mri_np, pet_np = sample_batch(train_pairs, rng, config.batch_size, config.crop)
                mri, pet = torch.from_numpy(mri_np), torch.from_numpy(pet_np)
                loss, parts = fusion_loss(model(mri, pet), mri, pet, config)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                for key, value in {"loss": loss.item(), **parts}.items():
                    sums[key] = sums.get(key, 0.0) + value
                progress.advance(task)
            record = {"epoch": float(epoch), **{k: v / config.steps_per_epoch for k, v in sums.items()}}
            every = slice(None, None, config.val_stride)
            fused = predict(model, val_pairs.mri[every], val_pairs.functional[every])
            record.update(validate(fused, val_pairs.mri[every], val_pairs.functional[every]))
            history.append(record)
            shown = "  ".join(f"{k} {v:.3f}" for k, v in record.items() if k != "epoch")
            progress.console.print(f"epoch {epoch}/{config.epochs}  {shown}", markup=False, highlight=False)

    with stage(f"validating on all {len(val_pairs.names)} slices of series {config.val_series}"):
        validation = validate(predict(model, val_pairs.mri, val_pairs.functional), val_pairs.mri, val_pairs.functional)
    info("validation (all slices): " + "  ".join(f"{k} {v:.3f}" for k, v in validation.items()))
    state = _state_for_saving(model)
    # One metadata key: safetensors stores the metadata map in arbitrary order, which would make two
    # identical trainings write files with different hashes.
    recipe = {k: str(v) for k, v in asdict(config).items() if k not in ("data", "output", "overwrite")}
    metadata = {
        "medfuse": json.dumps(
            {
                "format": "medfuse-fusionnet",
                "channels": list(model.channels),
                "recipe": recipe,
                "validation": {k: round(v, 4) for k, v in validation.items()},
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
    digest = digests[0]
    wall = time.perf_counter() - started
    info(f"wrote {output} (sha256 {digest}) in {wall / 60:.1f} min")
    return TrainResult(output, digest, parameter_count(model), wall, history, validation)
