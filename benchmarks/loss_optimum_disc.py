"""What the training loss itself asks for on a uniformly hot lesion: its optimum, pixel by pixel, with no network.

    python benchmarks/loss_optimum_disc.py [--ssim-range L ...] [--steps N]

The disc of ``hot_disc_profile.py`` (PET 40 pixels across, blurred by 2 pixels, over flat MRI), on a
128x128 slice. The fused image F is a free tensor started at max(MRI, PET) and moved by Adam to the minimum
of :func:`medfuse.training.fusion_loss` (the recipe's weights; each ``--ssim-range`` in turn, and the loss
without its SSIM term). It prints the optimum's centre and rim as ``hot_disc_profile.py`` reads a network's:
if the rim stands above the centre here, the loss itself asks for it, whatever network is trained on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

SIZE = 128
RADIUS = 20
BLUR_PX = 2.0
BACKGROUND = 0.2
CASES = [(0.29, 0.9), (0.1, 0.6), (0.5, 0.6)]


def loss_optimum(mri_level: float, pet_level: float, steps: int, **loss_knobs: float) -> tuple[float, float]:
    """Centre and rim (brightest pixel within 6 pixels inside the edge) of the loss's optimum for one disc."""
    import torch
    from scipy import ndimage

    from medfuse.training import TrainConfig, fusion_loss

    rows, cols = np.mgrid[:SIZE, :SIZE]
    distance = np.hypot(rows - SIZE / 2, cols - SIZE / 2)
    pet_np = ndimage.gaussian_filter(np.where(distance < RADIUS, pet_level, BACKGROUND), BLUR_PX)
    pet = torch.from_numpy(pet_np.astype(np.float32))[None, None]
    mri = torch.full_like(pet, mri_level)
    config = TrainConfig(data=Path(), output=None, **loss_knobs)  # type: ignore[arg-type]
    fused = torch.maximum(mri, pet).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([fused], lr=0.01)
    for _ in range(steps):
        loss, _ = fusion_loss(fused, mri, pet, config)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    optimum = fused.detach().numpy()[0, 0]
    rim = (distance >= RADIUS - 6) & (distance < RADIUS)
    return float(optimum[distance < 2].mean()), float(optimum[rim].max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssim-range", type=float, nargs="+", default=[0.0078, 0.1], help="SSIM data ranges to try")
    parser.add_argument("--steps", type=int, default=1500, help="Adam steps (learning rate 0.01)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    processor = platform.processor() or platform.machine()
    print(f"machine: {processor}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, torch {torch.__version__}")
    print(f"disc {2 * RADIUS} px across on {SIZE}x{SIZE}, PET background {BACKGROUND}, blur {BLUR_PX:g} px")
    print("loss                      MRI   PET | centre   rim | rim - centre")
    variants = [(f"SSIM range {value:g}", {"ssim_range": value}) for value in args.ssim_range]
    variants.append(("no SSIM term", {"ssim_weight": 0.0}))
    for label, knobs in variants:
        for mri_level, pet_level in CASES:
            centre, rim = loss_optimum(mri_level, pet_level, args.steps, **knobs)
            print(f"{label:24s} {mri_level:4.2f}  {pet_level:4.2f} | {centre:.3f} {rim:.3f} | {rim - centre:+.3f}")


if __name__ == "__main__":
    main()
