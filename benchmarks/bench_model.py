"""Speed and memory of the fusion network, measured the way medfuse runs it (through NetFuser).

Prints the parameter count, the median milliseconds per 256x256 slice at batch 1 and batch 16 on the
CPU with 2 threads (and on CUDA when present), and the peak resident memory of a fresh process that
fuses 200 slices. Targets (issue 3): <= 25 ms per slice on a 2-core CPU, < 1.5 GB for 200 slices.

    python benchmarks/bench_model.py [--weights FILE] [--repeats 15]

Timings on a shared machine are inflated by the other processes; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZE = 256
MEMORY_SLICES = 200


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _slices(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Brain-like synthetic slices: a textured disc (MRI) and smooth blobs inside it (PET)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = ((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2) < (0.4 * SIZE) ** 2
    mri = (rng.random((count, SIZE, SIZE), dtype=np.float32) * 0.5 + 0.3) * disc
    blob = np.exp(-((yy - 100) ** 2 + (xx - 140) ** 2) / 800.0).astype(np.float32)
    pet = np.clip(0.3 * disc + 0.7 * blob, 0, 1)[None].repeat(count, axis=0).astype(np.float32)
    return mri.astype(np.float32), pet


def _median_ms_per_slice(fuser: object, batch: int, repeats: int, sync: object = None) -> float:
    mri, pet = _slices(batch)
    fuser.fuse(mri, pet)  # warm-up
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fuser.fuse(mri, pet)
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1000.0 / batch)
    return statistics.median(times)


def _memory_probe(weights: str | None) -> None:
    """Child process: fuse 200 slices on the CPU with 2 threads and print the peak RSS in MiB."""
    from medfuse.inference import get_fuser

    fuser = get_fuser("net", weights=weights, device="cpu", threads=2, batch_size=16)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    mri, pet = _slices(MEMORY_SLICES)
    fused = fuser.fuse(mri, pet)
    assert fused.shape == mri.shape
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"{peak:.1f} {loaded:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights file (default: the bundled ones)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per setting (median reported)")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        _memory_probe(args.weights)
        return

    import torch

    from medfuse.inference import get_fuser, load_model
    from medfuse.model import parameter_count

    model, digest = load_model(args.weights)
    print(f"machine: {_cpu_model()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"weights: sha256 {digest[:16]}…, channels {model.channels}, {parameter_count(model)} parameters")
    print(f"slice size: {SIZE}x{SIZE}; median of {args.repeats} runs")
    for batch in (1, 16):
        fuser = get_fuser("net", weights=args.weights, device="cpu", threads=2, batch_size=batch)
        ms = _median_ms_per_slice(fuser, batch, args.repeats)
        print(f"cpu, 2 threads, batch {batch:2d}: {ms:7.2f} ms per slice")
    if torch.cuda.is_available():
        print(f"cuda device: {torch.cuda.get_device_name(0)}")
        for batch in (1, 16):
            fuser = get_fuser("net", weights=args.weights, device="cuda", batch_size=batch)
            ms = _median_ms_per_slice(fuser, batch, args.repeats, sync=torch.cuda.synchronize)
            print(f"cuda, batch {batch:2d}: {ms:7.2f} ms per slice")
    else:
        print("cuda: not available on this machine")

    command = [sys.executable, __file__, "--memory-probe"] + (["--weights", args.weights] if args.weights else [])
    peak, loaded = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
    print(
        f"peak resident memory fusing {MEMORY_SLICES} slices (cpu, 2 threads, batch 16): {float(peak):.0f} MiB "
        f"(of which {float(loaded):.0f} MiB after importing torch and loading the model)"
    )


if __name__ == "__main__":
    main()
