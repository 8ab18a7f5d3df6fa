"""How a fuser draws a uniformly hot lesion: its plateau, the rim just inside its edge and the halo outside.

    python benchmarks/hot_disc_profile.py [--weights FILE] [--method net|laplacian]

A 256x256 slice of flat MRI (grey level ``m``) holds a disc 40 pixels across of uniform PET input ``p`` in a
background of 0.2, blurred by a Gaussian of 2 pixels (a PET's resolution at the disc's edge). For each
(m, p) it prints the fused value at the disc's centre (the hottest PET), the brightest fused value in the
ring of pixels just inside the edge (PET lower than the centre's: the rim), and the darkest and the far
fused value outside (the halo). A fuser that draws the hottest uptake brightest has rim <= centre; a
sharpening fuser brightens the rim (issue 11's "hottest class brightest" on a uniform lesion). For the
network it also prints the head's per-pixel source weights there (output = w_mri * MRI + w_pet * PET +
w_max * max(MRI, PET) + offset): how the rim is drawn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import machine

SIZE = 256
RADIUS = 20
BLUR_PX = 2.0
BACKGROUND = 0.2
CASES = [(m, p) for m in (0.1, 0.29, 0.5, 0.7) for p in (0.6, 0.9)]


def disc_pair(mri_level: float, pet_level: float, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The flat MRI, the blurred PET disc, and each pixel's distance from the disc's centre (a size x size slice)."""
    from scipy import ndimage

    rows, cols = np.mgrid[:size, :size]
    distance = np.hypot(rows - size / 2, cols - size / 2)
    pet = ndimage.gaussian_filter(np.where(distance < RADIUS, pet_level, BACKGROUND), BLUR_PX).astype(np.float32)
    return np.full((size, size), mri_level, np.float32), pet, distance


def measure(fuser: Any, mri_level: float, pet_level: float, model: Any = None) -> dict[str, float]:
    """The fused disc's centre, its rim (brightest pixel just inside the edge) and halo, with their PET inputs;
    with the torch ``model`` also its MRI weight, PET weight and offset at the centre and at the rim pixel."""
    mri, pet, distance = disc_pair(mri_level, pet_level)
    fused = fuser.fuse(mri, pet)
    centre = distance < 2
    rim = (distance >= RADIUS - 6) & (distance < RADIUS)
    halo = (distance >= RADIUS) & (distance < RADIUS + 8)
    rim_index = int(np.argmax(np.where(rim, fused, -1.0)))
    row = {
        "centre": float(fused[centre].mean()),
        "centre_pet": float(pet[centre].mean()),
        "rim": float(fused.flat[rim_index]),
        "rim_pet": float(pet.flat[rim_index]),
        "halo_min": float(fused[halo].min()),
        "far": float(fused[distance > 3 * RADIUS].mean()),
    }
    if model is not None:
        import torch

        from medfuse.model import HEAD_MAP_NAMES

        with torch.no_grad():
            maps = model.source_weights(torch.from_numpy(mri)[None, None], torch.from_numpy(pet)[None, None])
        for name, values in zip(HEAD_MAP_NAMES, maps, strict=True):
            at = values[0, 0].numpy()
            row[f"{name}_centre"], row[f"{name}_rim"] = float(at[centre].mean()), float(at.flat[rim_index])
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="network weights (default: the bundled ones)")
    parser.add_argument("--method", default="net", help="net or laplacian")
    args = parser.parse_args(argv)

    from medfuse.inference import get_fuser, load_model
    from medfuse.model import HEAD_MAP_NAMES

    fuser = get_fuser(args.method, weights=args.weights, device="cpu", threads=2)
    model = load_model(args.weights)[0] if args.method == "net" else None
    print(f"method {args.method}, weights sha256 {(fuser.weights_sha256 or '-')[:16]}")
    print(f"machine: {machine()}")
    print(f"disc {2 * RADIUS} px across, PET background {BACKGROUND}, blur {BLUR_PX:g} px")
    weight_names = HEAD_MAP_NAMES[:-1] if model is not None else ()  # the source weights, not the offset
    weights_header = "".join(f" | {name} centre, rim" for name in weight_names)
    print("   MRI   PET | centre (its PET) | rim max (its PET) | halo min   far | rim - centre" + weights_header)
    for mri_level, pet_level in CASES:
        row = measure(fuser, mri_level, pet_level, model)
        weights = "     ".join(f" | {row[f'{name}_centre']:+.2f}, {row[f'{name}_rim']:+.2f}" for name in weight_names)
        print(
            f"  {mri_level:4.2f}  {pet_level:4.2f} | {row['centre']:.3f} ({row['centre_pet']:.2f})  "
            f"| {row['rim']:.3f} ({row['rim_pet']:.2f})     "
            f"| {row['halo_min']:.3f}  {row['far']:.3f} | {row['rim'] - row['centre']:+.3f}" + weights
        )


if __name__ == "__main__":
    main()
