"""Hotspot readout speed: :func:`medfuse.hotspots.find_hotspots` on a 200 × 200 × 300 whole-body PET
(target: under 0.5 s) and on the bundled example PET, with the machine stated.

    python benchmarks/bench_hotspots.py              # best and median of 5 runs each
    python benchmarks/bench_hotspots.py --repeats 9

The whole-body phantom is ``tests/pet_phantoms.py``'s (bladder, brain, organs, three lesions, 6 mm
FWHM, noise). It also prints the stages (search volume, the rest) and the regions found, so a
change in speed can be told from a change in what is found.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the phantom builders

from bench_batch import machine  # noqa: E402
from pet_phantoms import whole_body  # noqa: E402

from medfuse import hotspots  # noqa: E402


def timed(function, repeats: int) -> tuple[float, float, object]:  # type: ignore[no-untyped-def]
    """Best and median seconds of ``repeats`` calls, and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return min(seconds), statistics.median(seconds), result


def report(name: str, values: np.ndarray, spacing: tuple[float, float, float], repeats: int) -> None:
    best, median, readout = timed(lambda: hotspots.find_hotspots(values, spacing), repeats)
    mask_best, mask_median, _mask = timed(lambda: hotspots.body_mask(values, spacing), repeats)
    print(f"\n{name}: {values.shape[::-1]} voxels (x, y, z) of {spacing} mm, {values.size / 1e6:.1f} M voxels")
    print(f"  find_hotspots  best {best:.3f} s, median {median:.3f} s ({repeats} runs)")
    print(f"  of which body_mask  best {mask_best:.3f} s, median {mask_median:.3f} s")
    assert readout is not None
    print(f"  seeds grown: {readout.seeds}; max {readout.max:.4g}, peak {readout.peak:.4g}")  # type: ignore[attr-defined]
    for rank, region in enumerate(readout.regions, start=1):  # type: ignore[attr-defined]
        print(
            f"  {rank}. {region.volume_ml:9.2f} mL  mean {region.mean:9.4g}  max {region.max:9.4g}  "
            f"peak {region.peak:9.4g}  (threshold {region.threshold:.4g}, background {region.background:.4g})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    spacing = (3.5, 3.5, 3.0)
    report("whole-body phantom", whole_body((300, 200, 200), spacing), spacing, args.repeats)
    import SimpleITK as sitk

    pet = sitk.ReadImage(str(ROOT / "examples" / "pet.nii.gz"), sitk.sitkFloat32)
    report("examples/pet.nii.gz", sitk.GetArrayFromImage(pet), pet.GetSpacing(), args.repeats)


if __name__ == "__main__":
    main()
