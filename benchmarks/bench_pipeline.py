"""Benchmark of the volumetric pipeline on the bundled example (and a 256³ MRI), with the machine stated.

Run from the repository root::

    python benchmarks/bench_pipeline.py                     # network fusion, 3 repeats
    python benchmarks/bench_pipeline.py --method laplacian  # classical fusion instead
    python benchmarks/bench_pipeline.py --weights FILE      # the network with other weights

It prints, for ``examples/mri.nii.gz`` + ``examples/pet.nii.gz``:

* per-stage times of ``medfuse.fuse_files`` (load, register, resample, fuse, write) and peak memory,
  each run in a fresh process (median of ``--repeats``);
* the wall time of the whole ``medfuse fuse`` command (interpreter start and imports included);
* the registration stage against a plain SimpleITK rigid Mattes-MI registration of the same pair
  (the SimpleITK notebooks' recipe: geometry-centred Euler3D, 50 bins, 1 % random samples, gradient
  descent, shrink 4/2/1, smoothing 2/1/0 mm), both timed in one process, with their errors against
  the known misalignment in ``examples/truth.json``;
* time and peak memory for a 256×256×256 (1 mm) MRI made by resampling the example MRI.

Targets (issue 4): end to end under 8 s on 2 CPU cores; registration no slower than the plain
reference; peak memory under 2 GB for the 256³ MRI. Timings on a machine shared with other jobs are
inflated: the load average at the start is printed with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
STAGES = ("load_mri", "load_pet", "load_fuser", "register", "resample", "fuse", "preview", "write", "total")


def machine() -> dict[str, object]:
    """CPU model, cores usable, memory, load, library versions and GPU (if any)."""
    model = platform.processor() or platform.machine()
    meminfo = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            meminfo[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    import SimpleITK as sitk
    import torch

    return {
        "cpu": model,
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(meminfo.get("MemTotal", 0) / 1e9, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "SimpleITK": sitk.Version.VersionString(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# ---- one run in a fresh process --------------------------------------------------------------------
def child(mri: str, pet: str, output: str, method: str, device: str, weights: str) -> None:
    """Fuse once (all outputs) and print stage times and this process's peak memory as JSON."""
    from medfuse.options import FuseOptions
    from medfuse.pipeline import fuse_files

    out = Path(output)
    options = FuseOptions(
        method=method,  # type: ignore[arg-type]
        weights=Path(weights) if weights else None,
        device=device,
        preview=out.with_name("preview.png"),
        report=out.with_name("report.json"),
        save_transform=out.with_name("pet_to_mri.tfm"),
        overwrite=True,
    )
    result = fuse_files(mri, pet, out, options)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(
        json.dumps(
            {"timings": result.report["timings_s"], "peak_bytes": peak, "device": result.report["fusion"]["device"]}
        )
    )


def run_child(mri: Path, pet: Path, output: Path, args: argparse.Namespace) -> dict[str, object]:
    weights = str(args.weights or "")
    command = [sys.executable, __file__, "--child", str(mri), str(pet), str(output), args.method, args.device, weights]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200"})
    if done.returncode != 0:
        raise SystemExit(f"fusion failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_wall(mri: Path, pet: Path, output: Path, args: argparse.Namespace) -> float:
    """Seconds for the whole ``medfuse fuse`` command, as a user runs it."""
    command = [sys.executable, "-m", "medfuse", "--quiet", "fuse", str(mri), str(pet), "-o", str(output),
               "--method", args.method, "--device", args.device, "--overwrite"]  # fmt: skip
    command += ["--weights", str(args.weights)] if args.weights else []
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


# ---- registration against the plain SimpleITK recipe ----------------------------------------------
def plain_rigid_registration(fixed, moving):  # type: ignore[no-untyped-def]
    """The plain SimpleITK rigid Mattes-MI registration (as in the SimpleITK notebooks)."""
    import SimpleITK as sitk

    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.01, 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsGradientDescent(
        learningRate=1.0, numberOfIterations=100, convergenceMinimumValue=1e-6, convergenceWindowSize=10
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def registration_comparison(repeats: int) -> dict[str, object]:
    """Median seconds and mean head TRE (mm) of medfuse's registration and the plain recipe."""
    import SimpleITK as sitk

    from medfuse import io, registration

    mri = io.read_volume(EXAMPLES / "mri.nii.gz")
    pet = io.read_volume(EXAMPLES / "pet.nii.gz", role="PET")
    truth_record = json.loads((EXAMPLES / "truth.json").read_text())["transform"]
    truth = sitk.Euler3DTransform()
    truth.SetFixedParameters(truth_record["itk_fixed_parameters"])
    truth.SetParameters(truth_record["itk_parameters"])
    head = np.argwhere(sitk.GetArrayFromImage(registration.foreground_mask(mri, "MRI")) > 0)[::20, ::-1]
    points = [mri.TransformIndexToPhysicalPoint(tuple(int(i) for i in index)) for index in head]

    def tre(transform: sitk.Transform) -> float:
        return float(
            np.mean([np.linalg.norm(np.subtract(truth.TransformPoint(p), transform.TransformPoint(p))) for p in points])
        )

    ours, plain = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = registration.register(mri, pet)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = plain_rigid_registration(mri, pet)
        plain.append(time.perf_counter() - start)
    return {
        "medfuse_s": statistics.median(ours),
        "plain_simpleitk_s": statistics.median(plain),
        "medfuse_tre_mm": tre(result.transform),
        "plain_simpleitk_tre_mm": tre(reference),
        "head_points": len(points),
    }


def make_256(folder: Path) -> Path:
    """The example MRI resampled to a 256³ grid of 1 mm voxels (same centre and orientation)."""
    import SimpleITK as sitk

    mri = sitk.ReadImage(str(EXAMPLES / "mri.nii.gz"))
    direction = np.array(mri.GetDirection()).reshape(3, 3)
    centre = np.array(mri.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in mri.GetSize()]))
    origin = centre - direction @ np.full(3, 127.5)
    big = sitk.Resample(
        mri, [256] * 3, sitk.Transform(), sitk.sitkLinear, tuple(origin), (1.0,) * 3, mri.GetDirection()
    )
    path = folder / "mri_256.nii.gz"
    sitk.WriteImage(big, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the volumetric pipeline on the example.")
    parser.add_argument("--method", default="net", choices=("net", "laplacian"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", type=Path, help="network weights (default: the bundled ones)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-256", action="store_true", help="skip the 256³ memory run")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    figures: dict[str, object] = {"machine": machine(), "method": args.method}
    print("machine:", json.dumps(figures["machine"]))
    with tempfile.TemporaryDirectory(prefix="medfuse-bench-") as temp:
        folder = Path(temp)
        runs = [
            run_child(EXAMPLES / "mri.nii.gz", EXAMPLES / "pet.nii.gz", folder / "fused.nii.gz", args)
            for _ in range(args.repeats)
        ]
        stages = {stage: statistics.median(run["timings"].get(stage, 0.0) for run in runs) for stage in STAGES}
        peak = max(run["peak_bytes"] for run in runs)
        walls = [
            cli_wall(EXAMPLES / "mri.nii.gz", EXAMPLES / "pet.nii.gz", folder / "cli.nii.gz", args)
            for _ in range(args.repeats)
        ]
        figures["example"] = {
            "device": runs[0]["device"],
            "stage_median_s": stages,
            "peak_memory_mb": round(peak / 1e6),
            "cli_wall_median_s": statistics.median(walls),
        }
        print(f"\nexample (examples/mri.nii.gz + pet.nii.gz), {args.method} on {runs[0]['device']},")
        print(f"median of {args.repeats} fresh processes:")
        for stage, seconds in stages.items():
            print(f"  {stage:<11} {seconds:7.3f} s")
        print(f"  peak memory {peak / 1e6:7.0f} MB")
        print(f"  whole `medfuse fuse` command (imports included): {statistics.median(walls):.2f} s")

        comparison = registration_comparison(args.repeats)
        figures["registration"] = comparison
        print("\nregistration of the example (same process, median of", args.repeats, "runs):")
        print(
            f"  medfuse          {comparison['medfuse_s']:.3f} s, mean head TRE {comparison['medfuse_tre_mm']:.3f} mm"
        )
        print(
            f"  plain SimpleITK  {comparison['plain_simpleitk_s']:.3f} s, "
            f"mean head TRE {comparison['plain_simpleitk_tre_mm']:.3f} mm"
        )

        if not args.skip_256:
            big = make_256(folder)
            run = run_child(big, EXAMPLES / "pet.nii.gz", folder / "fused_256.nii.gz", args)
            figures["mri_256"] = {"timings": run["timings"], "peak_memory_mb": round(run["peak_bytes"] / 1e6)}
            print(f"\n256×256×256 MRI (1 mm): total {run['timings']['total']:.2f} s "
                  f"(fuse {run['timings']['fuse']:.2f} s), peak memory {run['peak_bytes'] / 1e6:.0f} MB")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        main()
