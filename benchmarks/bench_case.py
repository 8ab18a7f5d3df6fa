"""A clinical-size case, stage by stage, against a plain SimpleITK rigid registration of the same pair.

By default it builds a large synthetic pair from the bundled example (``examples/``): the MRI resampled
to 460×512×160 voxels of 0.5×0.5×1.0 mm (37.7 M voxels, int16 like a scanner's T1, as NIfTI-gz) and
the PET resampled to 2 mm voxels and moved by a known rigid transform; or it times any pair given::

    python benchmarks/bench_case.py                      # the synthetic clinical-size pair, 3 repeats
    python benchmarks/bench_case.py MRI PET --repeats 5  # files or DICOM folders of your own

Each repeat runs, in fresh processes one after the other (so both see the same machine load):

* the plain SimpleITK reference: read both files, cast to float32 and run the SimpleITK notebooks'
  rigid Mattes-MI registration (see ``bench_pipeline.plain_rigid_registration``);
* ``medfuse`` as ``medfuse fuse MRI PET -o fused.nii.gz`` runs it (defaults: network, overlay), with
  the stage times of its report.

It prints each stage's median, the end-to-end time (``fuse_files``, reading and writing included) and
its ratio to the reference (target: <= 1.5x), each process's peak resident memory (target: <= 2 GB),
and the machine with its load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MRI_SIZE = (460, 512, 160)
MRI_SPACING = (0.5, 0.5, 1.0)
PET_SPACING = 2.0
#: The PET's misalignment: rotations (rad) about x, y, z and a translation (mm).
PET_MOTION = (0.05, -0.03, 0.08, 6.0, -4.0, 3.0)


def machine() -> str:
    """CPU model, usable CPUs, memory and load: what the figures depend on."""
    model = platform.processor() or platform.machine()
    memory = ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), model)
        memory = f", {int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return f"{model}, {cpus} usable CPUs{memory}, load average {load}; Python {platform.python_version()}"


def peak_bytes() -> int:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry the parent's across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_pair(folder: Path) -> tuple[Path, Path]:
    """The example pair scaled up to a clinical-size MRI grid and a 2 mm PET grid, written as NIfTI-gz."""
    import SimpleITK as sitk

    mri = sitk.ReadImage(str(EXAMPLES / "mri.nii.gz"), sitk.sitkFloat32)
    pet = sitk.ReadImage(str(EXAMPLES / "pet.nii.gz"), sitk.sitkFloat32)
    direction = np.array(mri.GetDirection()).reshape(3, 3)
    centre = np.array(mri.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in mri.GetSize()]))
    half_extent = (np.array(MRI_SIZE) - 1) / 2 * np.array(MRI_SPACING)
    origin = centre - direction @ half_extent
    big = sitk.Resample(mri, MRI_SIZE, sitk.Transform(), sitk.sitkBSpline, tuple(origin), MRI_SPACING,
                        mri.GetDirection(), 0.0, sitk.sitkFloat32)  # fmt: skip
    # Fine texture (as a 0.5 mm scan has): multiplicative noise inside the head, then int16 as scanners store it.
    values = sitk.GetArrayViewFromImage(big)
    noise = np.random.default_rng(0).normal(1.0, 0.04, values.shape).astype(np.float32)
    scaled = np.clip(values * noise / max(float(values.max()), 1e-6) * 3000.0, 0, 32767).astype(np.int16)
    big_int = sitk.GetImageFromArray(scaled)
    big_int.CopyInformation(big)
    motion = sitk.Euler3DTransform(tuple(centre), *PET_MOTION[:3], PET_MOTION[3:])
    pet_size = [round(n * s / PET_SPACING) for n, s in zip(pet.GetSize(), pet.GetSpacing(), strict=True)]
    pet_moved = sitk.Resample(pet, pet_size, motion, sitk.sitkLinear, pet.GetOrigin(), (PET_SPACING,) * 3,
                              pet.GetDirection(), 0.0, sitk.sitkFloat32)  # fmt: skip
    mri_path, pet_path = folder / "mri_large.nii.gz", folder / "pet_2mm.nii.gz"
    sitk.WriteImage(big_int, str(mri_path), useCompression=True)
    sitk.WriteImage(pet_moved, str(pet_path), useCompression=True)
    return mri_path, pet_path


# ---- the two children --------------------------------------------------------------------------------
def plain_child(mri: str, pet: str) -> None:
    """Read both images and register them the plain SimpleITK way; print seconds and peak memory."""
    import SimpleITK as sitk

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_pipeline import plain_rigid_registration

    started = time.perf_counter()
    fixed = sitk.ReadImage(mri, sitk.sitkFloat32)
    moving = sitk.ReadImage(pet, sitk.sitkFloat32)
    read = time.perf_counter() - started
    plain_rigid_registration(fixed, moving)
    total = time.perf_counter() - started
    print(json.dumps({"read": read, "register": total - read, "total": total, "peak_bytes": peak_bytes()}))


def medfuse_child(mri: str, pet: str, output: str) -> None:
    """Fuse with the defaults of ``medfuse fuse`` and print the report's stage times and peak memory."""
    from medfuse.console import set_quiet
    from medfuse.options import FuseOptions
    from medfuse.pipeline import fuse_files

    set_quiet(True)
    started = time.perf_counter()
    result = fuse_files(mri, pet, output, FuseOptions(overwrite=True))
    wall = time.perf_counter() - started
    fusion = result.report["fusion"]
    record = {"timings": result.report["timings_s"], "wall": wall, "peak_bytes": peak_bytes()}
    print(json.dumps({**record, "backend": fusion.get("backend"), "slices": fusion["slices_fused"]}))


def run_child(*arguments: str) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{arguments[0]} child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mri", nargs="?", type=Path, help="MRI file or DICOM folder (default: synthetic)")
    parser.add_argument("pet", nargs="?", type=Path, help="PET file or DICOM folder (default: synthetic)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (medians reported)")
    args = parser.parse_args()
    if (args.mri is None) != (args.pet is None):
        parser.error("give both MRI and PET, or neither (the synthetic clinical-size pair)")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="medfuse-case-") as temp:
        folder = Path(temp)
        if args.mri is None:
            started = time.perf_counter()
            mri, pet = make_pair(folder)
            print(f"synthetic pair made in {time.perf_counter() - started:.0f} s: MRI {MRI_SIZE} at {MRI_SPACING} mm "
                  f"int16 ({mri.stat().st_size / 1e6:.0f} MB .nii.gz), PET at {PET_SPACING} mm")  # fmt: skip
        else:
            mri, pet = args.mri, args.pet
        plain, ours = [], []
        for _ in range(args.repeats):
            plain.append(run_child("plain", str(mri), str(pet)))
            ours.append(run_child("medfuse", str(mri), str(pet), str(folder / "fused.nii.gz")))
    stages = sorted({stage for run in ours for stage in run["timings"]}, key=list(ours[0]["timings"]).index)  # type: ignore[union-attr]
    print(f"\nmedfuse fuse (defaults: {ours[0]['backend']} backend, {ours[0]['slices']} slices), "
          f"median of {args.repeats} fresh processes:")  # fmt: skip
    for stage in stages:
        print(f"  {stage:<11} {statistics.median(run['timings'].get(stage, 0.0) for run in ours):7.2f} s")  # type: ignore[union-attr]
    total = statistics.median(float(run["wall"]) for run in ours)  # type: ignore[arg-type]
    reference = statistics.median(float(run["total"]) for run in plain)  # type: ignore[arg-type]
    ratios = [float(o["wall"]) / float(p["total"]) for o, p in zip(ours, plain, strict=True)]  # type: ignore[arg-type]
    print(f"  end to end  {total:7.2f} s   peak memory {max(int(r['peak_bytes']) for r in ours) / 1e9:.2f} GB")  # type: ignore[call-overload]
    print(f"plain SimpleITK rigid registration, reading included: {reference:.2f} s "
          f"(read {statistics.median(float(r['read']) for r in plain):.2f} s), "  # type: ignore[arg-type]
          f"peak memory {max(int(r['peak_bytes']) for r in plain) / 1e9:.2f} GB")  # type: ignore[call-overload]  # fmt: skip
    verdict = "meets" if statistics.median(ratios) <= 1.5 else "misses"
    print(f"ratio medfuse / plain registration: median {statistics.median(ratios):.2f}x "
          f"(per repeat {', '.join(f'{r:.2f}' for r in ratios)}; target <= 1.5x: {verdict})")  # fmt: skip
    print(f"load average after: {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        {"plain": plain_child, "medfuse": medfuse_child}[sys.argv[2]](*sys.argv[3:])
    else:
        main()
