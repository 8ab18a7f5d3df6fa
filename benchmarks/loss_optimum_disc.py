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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import machine
from hot_disc_profile import BACKGROUND, BLUR_PX, RADIUS, disc_pair

SIZE = 128  # a quarter of hot_disc_profile's slice: the same disc, four times fewer pixels to optimise
CASES = [(0.29, 0.9), (0.1, 0.6), (0.5, 0.6)]


def loss_optimum(mri_level: float, pet_level: float, steps: int, **loss_knobs: float) -> tuple[float, float]:
    """Centre and rim (brightest pixel within 6 pixels inside the edge) of the loss's optimum for one disc."""
    import torch

    from medfuse.training import TrainConfig, fusion_loss

    mri_np, pet_np, distance = disc_pair(mri_level, pet_level, SIZE)
    mri, pet = torch.from_numpy(mri_np)[None, None], torch.from_numpy(pet_np)[None, None]
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
    print(f"machine: {machine()}, torch {torch.__version__}")
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
