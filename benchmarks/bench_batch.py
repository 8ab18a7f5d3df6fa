"""Batch throughput: the defaults (``--workers auto``) against ``--workers 1``, and how busy the CPUs were.

Copies the example pair (examples/mri.nii.gz, examples/pet.nii.gz) into N case folders, runs
:func:`medfuse.batch.run_batch` once per setting into a fresh output folder (model loading, worker
start-up and writing all five outputs per case included) and prints wall-clock times, cases per
minute, the speed-up over ``--workers 1`` (target: >= 1.4x for the defaults) and the CPU use over the
run as a share of all usable CPUs (target: >= 85 %), with the machine and its load.

    python benchmarks/bench_batch.py                         # 8 cases, the network: auto and 1
    python benchmarks/bench_batch.py --workers auto 1 2      # more settings
    python benchmarks/bench_batch.py --repeats 3             # interleaved repeats, medians, on a shared machine

Settings are run in interleaved rounds so the load of other processes hits all of them alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def machine() -> str:
    """CPU model, usable CPUs, memory and load: what the figures depend on."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        model = names[0] if names else model
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split()[1])
        memory = f", {total_kb / 2**20:.0f} GiB RAM"
    load = ", load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return f"{model}, {cpus} usable CPUs{memory}{load}; Python {platform.python_version()}, {platform.system()}"


def make_cases(folder: Path, count: int) -> Path:
    """``count`` case folders, each holding a copy of the example MRI and PET."""
    studies = folder / "studies"
    for index in range(count):
        case = studies / f"case{index:03d}"
        case.mkdir(parents=True)
        shutil.copy(EXAMPLES / "mri.nii.gz", case / "mri.nii.gz")
        shutil.copy(EXAMPLES / "pet.nii.gz", case / "pet.nii.gz")
    return studies


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished worker processes."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def run(studies: Path, output: Path, workers: str, args: argparse.Namespace) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds of one batch run, and the number of cases that succeeded."""
    from medfuse.batch import run_batch
    from medfuse.options import FuseOptions

    options = FuseOptions(method=args.method, weights=args.weights, threads=args.threads)
    output.mkdir()
    cpu_started, started = cpu_seconds(), time.perf_counter()
    result = run_batch(studies, output, options, workers=workers)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    failed = result.failed
    if failed:
        print(f"  {len(failed)} case(s) failed, e.g. {failed[0].case}: {failed[0].error}", file=sys.stderr)
    return seconds, cpu, result.count("ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8, help="number of case folders (default 8)")
    parser.add_argument("--method", default="net", choices=("net", "laplacian"), help="fusion method (default net)")
    parser.add_argument("--workers", nargs="+", default=["auto", "1"], help="settings to compare (auto or N)")
    parser.add_argument("--threads", type=int, default=None, help="threads per case (default: medfuse's choice)")
    parser.add_argument("--weights", type=Path, default=None, help="network weights (default: the bundled ones)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds (medians reported)")
    args = parser.parse_args()
    if not (EXAMPLES / "mri.nii.gz").exists():
        sys.exit(f"{EXAMPLES}: the example pair is missing; run examples/make_example.py first.")

    from medfuse.console import set_quiet
    from medfuse.device import usable_cpus

    set_quiet(True)
    cpus = usable_cpus()
    print(f"machine: {machine()}")
    print(f"cases: {args.cases} copies of examples/ (MRI 131x155x126 at 1.5 mm, PET 120x120x55), method {args.method}")
    rates: dict[str, list[float]] = {w: [] for w in args.workers}
    busy: dict[str, list[float]] = {w: [] for w in args.workers}
    with tempfile.TemporaryDirectory(prefix="medfuse-bench-") as temp:
        studies = make_cases(Path(temp), args.cases)
        for repeat in range(args.repeats):
            for workers in args.workers:
                output = Path(temp) / f"out-{workers}-{repeat}"
                seconds, cpu, ok = run(studies, output, workers, args)
                shutil.rmtree(output)
                rates[workers].append(ok / seconds * 60.0)
                busy[workers].append(cpu / seconds / cpus * 100.0)
                print(
                    f"--workers {workers}: {ok}/{args.cases} cases ok in {seconds:.1f} s -> {ok / seconds * 60.0:.1f} "
                    f"cases/min; CPU {cpu:.1f} s = {cpu / seconds:.2f} of {cpus} CPUs busy ({busy[workers][-1]:.0f} %)"
                )
    medians = {w: statistics.median(r) for w, r in rates.items()}
    print(f"median of {args.repeats} round(s): " + ", ".join(
        f"--workers {w}: {r:.1f} cases/min, CPU use {statistics.median(busy[w]):.0f} %" for w, r in medians.items()
    ))  # fmt: skip
    baseline = medians.get("1")
    if baseline:
        for workers, rate in medians.items():
            if workers != "1":
                target = " (target for the defaults >= 1.4x and >= 85 % CPU)" if workers == "auto" else ""
                print(f"speed-up of --workers {workers} over --workers 1: {rate / baseline:.2f}x{target}")
    print(f"load average after: {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())}")


if __name__ == "__main__":
    from medfuse.errors import MedfuseError

    try:
        main()
    except MedfuseError as error:  # e.g. no bundled weights yet: say so, pass --weights or --method laplacian
        sys.exit(f"bench_batch: {error.message}")
