"""Speed of the fusion network against the Laplacian pyramid, per CPU backend, in one process.

Prints the machine and its load, then for 256x256 slices the median milliseconds per slice of

* the Laplacian pyramid as ``--method laplacian`` runs it (numpy, one thread): the reference;
* the network as ``NetFuser`` runs it on the CPU with 2 threads (each slice single-threaded, slices
  side by side), for each backend (``onnxruntime``, the default, and ``torch``), at batch 16 and 1,
  with the ratio to the Laplacian (target: <= 2x at batch 16) and the largest difference from the
  float32 PyTorch output;
* with ``--extra``, the options that were measured and not kept: OpenVINO (f32 and bf16, when the
  ``openvino`` package is importable), PyTorch bf16 autocast and ``torch.compile`` (compile time shown);

then CUDA timings when a GPU is present, and the peak memory of a fresh process fusing 200 slices.
Settings are timed in interleaved rounds, so the load of other processes hits all of them alike.

    python benchmarks/bench_model.py [--weights FILE] [--rounds 7] [--extra]
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
from collections.abc import Callable
from pathlib import Path

import numpy as np

SIZE = 256
BATCH = 16
MEMORY_SLICES = 200
THREADS = 2


def machine() -> str:
    """CPU model, usable CPUs and load average."""
    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), model)
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return f"{model}, {cpus} usable CPUs, load average {load}"


def slices(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Brain-like synthetic slices: a textured disc (MRI) and smooth blobs inside it (PET)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = ((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2) < (0.4 * SIZE) ** 2
    mri = (rng.random((count, SIZE, SIZE), dtype=np.float32) * 0.5 + 0.3) * disc
    blob = np.exp(-((yy - 100) ** 2 + (xx - 140) ** 2) / 800.0).astype(np.float32)
    pet = np.clip(0.3 * disc + 0.7 * blob, 0, 1)[None].repeat(count, axis=0).astype(np.float32)
    return mri.astype(np.float32), pet


def reference(model: object, mri: np.ndarray, pet: np.ndarray) -> np.ndarray:
    """The float32 PyTorch output (eager, default threads), clamped like the fuser's."""
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(mri[:, None]), torch.from_numpy(pet[:, None]))  # type: ignore[operator]
    return out.clamp(0.0, 1.0)[:, 0].numpy()


def extra_settings(model: object, mri: np.ndarray, pet: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    """Options measured and not kept (see weights/README.md, Inference backend), each fusing ``mri``/``pet``."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    pool = ThreadPoolExecutor(THREADS)
    m, p = torch.from_numpy(mri[:, None]), torch.from_numpy(pet[:, None])
    cl = model.to(memory_format=torch.channels_last)  # type: ignore[attr-defined]

    def per_slice(run: Callable[[int], np.ndarray]) -> Callable[[], np.ndarray]:
        return lambda: np.stack(list(pool.map(run, range(len(mri)))))

    def bf16(index: int) -> np.ndarray:
        torch.set_num_threads(1)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            a = m[index : index + 1].contiguous(memory_format=torch.channels_last)
            b = p[index : index + 1].contiguous(memory_format=torch.channels_last)
            return cl(a, b).float().clamp(0, 1)[0, 0].numpy()

    settings = {"torch bf16 autocast": per_slice(bf16)}
    started = time.perf_counter()
    compiled = torch.compile(cl, dynamic=False)

    def compiled_slice(index: int) -> np.ndarray:
        torch.set_num_threads(1)
        with torch.inference_mode():
            a = m[index : index + 1].contiguous(memory_format=torch.channels_last)
            b = p[index : index + 1].contiguous(memory_format=torch.channels_last)
            return compiled(a, b).clamp(0, 1)[0, 0].numpy()

    compiled_slice(0)
    settings[f"torch.compile (compiling took {time.perf_counter() - started:.0f} s)"] = per_slice(compiled_slice)
    try:
        import openvino
    except ImportError:
        print("openvino: not installed, skipped (pip install openvino to include it)")
        return settings
    converted = openvino.convert_model(model, example_input=(m[:1], p[:1]))
    core = openvino.Core()
    for precision in ("f32", "bf16"):
        config = {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": str(THREADS), "INFERENCE_NUM_THREADS": "2"}
        queue = openvino.AsyncInferQueue(core.compile_model(converted, "CPU", config), THREADS)

        def run_openvino(queue: openvino.AsyncInferQueue = queue) -> np.ndarray:
            out = np.empty_like(mri)

            def store(request: openvino.InferRequest, index: int) -> None:
                out[index] = request.get_output_tensor(0).data[0, 0]

            queue.set_callback(store)
            for index in range(len(mri)):
                queue.start_async({0: mri[index : index + 1, None], 1: pet[index : index + 1, None]}, index)
            queue.wait_all()
            return np.clip(out, 0.0, 1.0)

        settings[f"openvino {precision}, {THREADS} streams"] = run_openvino
    return settings


def timed_rounds(settings: dict[str, Callable[[], np.ndarray]], rounds: int, count: int) -> dict[str, float]:
    """Median ms per slice of each setting, timed in interleaved rounds after one warm-up each."""
    for run in settings.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(rounds):
        for name, run in settings.items():
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) * 1000.0 / count)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_mib() -> float:
    """This process's peak resident memory in MiB (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_probe(weights: str | None) -> None:
    """Child process: fuse 200 slices on the CPU with 2 threads and print the peak RSS in MiB."""
    from medfuse.inference import get_fuser

    fuser = get_fuser("net", weights=weights, device="cpu", threads=THREADS, batch_size=BATCH)
    loaded = peak_mib()
    mri, pet = slices(MEMORY_SLICES)
    assert fuser.fuse(mri, pet).shape == mri.shape
    peak = peak_mib()
    print(f"{peak:.1f} {loaded:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights file (default: the bundled ones)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds (median reported)")
    parser.add_argument("--extra", action="store_true", help="also time OpenVINO, bf16 and torch.compile")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.weights)
        return

    import torch

    from medfuse.inference import NetFuser, load_model
    from medfuse.laplacian import LaplacianFuser
    from medfuse.model import parameter_count
    from medfuse.runtime import CPU_BACKENDS

    model, digest = load_model(args.weights)
    print(f"machine: {machine()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"weights: sha256 {digest[:16]}…, {parameter_count(model)} parameters")
    print(
        f"{SIZE}x{SIZE} slices, median of {args.rounds} interleaved rounds; network on the CPU with {THREADS} threads"
    )
    mri, pet = slices(BATCH)
    expected = reference(model, mri, pet)
    laplacian = LaplacianFuser()
    settings: dict[str, Callable[[], np.ndarray]] = {"laplacian (numpy, 1 thread)": lambda: laplacian.fuse(mri, pet)}
    for backend in CPU_BACKENDS:
        fuser = NetFuser(args.weights, device="cpu", threads=THREADS, batch_size=BATCH, backend=backend)
        settings[f"net {fuser.backend}"] = lambda fuser=fuser: fuser.fuse(mri, pet)
    if args.extra:
        settings.update(extra_settings(model, mri, pet))
    results = timed_rounds(settings, args.rounds, BATCH)
    reference_ms = results.pop("laplacian (numpy, 1 thread)")
    print(f"batch {BATCH}:")
    print(f"  {'laplacian (numpy, 1 thread)':<46} {reference_ms:7.2f} ms/slice")
    for name, ms in results.items():
        difference = float(np.max(np.abs(settings[name]() - expected)))
        verdict = "meets" if ms / reference_ms <= 2.0 else "misses"
        print(
            f"  {name:<46} {ms:7.2f} ms/slice  {ms / reference_ms:5.2f}x Laplacian ({verdict} <= 2x)  "
            f"max |difference| from float32 torch {difference:.1e}"
        )
    singles = {}
    one_mri, one_pet = mri[:1], pet[:1]
    for backend in CPU_BACKENDS:
        fuser = NetFuser(args.weights, device="cpu", threads=THREADS, batch_size=1, backend=backend)
        singles[f"net {fuser.backend}"] = lambda fuser=fuser: fuser.fuse(one_mri, one_pet)
    print("batch 1: " + ", ".join(f"{n} {ms:.2f} ms" for n, ms in timed_rounds(singles, args.rounds, 1).items()))

    if torch.cuda.is_available():
        print(f"cuda device: {torch.cuda.get_device_name(0)}")
        for batch in (1, BATCH):
            fuser = NetFuser(args.weights, device="cuda", batch_size=batch)

            def on_gpu(fuser: NetFuser = fuser, batch: int = batch) -> np.ndarray:
                out = fuser.fuse(mri[:batch], pet[:batch])
                torch.cuda.synchronize()
                return out

            print(
                f"  cuda, batch {batch:2d}: {timed_rounds({'gpu': on_gpu}, args.rounds, batch)['gpu']:.2f} ms per slice"
            )
    else:
        print("cuda: not available on this machine")

    command = [sys.executable, __file__, "--memory-probe"] + (["--weights", args.weights] if args.weights else [])
    peak, loaded = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
    print(
        f"peak resident memory fusing {MEMORY_SLICES} slices (cpu, {THREADS} threads, batch {BATCH}): "
        f"{float(peak):.0f} MiB (of which {float(loaded):.0f} MiB after importing torch and loading the model)"
    )
    print(f"load average after: {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())}")


if __name__ == "__main__":
    main()
