"""Where the network runs: ``--device`` (auto, cpu, cuda, cuda:N) checked against this machine.

torch is imported only when a CUDA device is named or may exist, so checking ``auto`` or ``cpu`` costs
nothing, and on a machine without an NVIDIA driver ``auto`` means the CPU without importing torch
(a second of start-up, and almost half a second more at exit).
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

from medfuse.console import warn
from medfuse.errors import UsageError

if TYPE_CHECKING:
    import torch


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the system tells it, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cuda_driver_visible() -> bool:
    """Whether this machine may have a CUDA device, judged without importing torch.

    On Linux the NVIDIA driver shows itself in /proc/driver/nvidia or /dev/nvidiactl (in containers
    given a GPU too) and under WSL 2 as /dev/dxg; macOS has no CUDA. Elsewhere only torch can tell.
    """
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return any(os.path.exists(path) for path in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg"))
    return True


def uses_cuda(spec: str) -> bool:
    """Whether ``--device`` resolves to a CUDA device here; ``auto`` and ``cpu`` are answered without torch
    where no NVIDIA driver is visible. An unknown or unavailable device is refused as by :func:`resolve_device`."""
    text = spec.strip().lower()
    if text == "cpu" or (text == "auto" and not cuda_driver_visible()):
        return False
    return resolve_device(spec).type == "cuda"


def resolve_device(spec: str) -> torch.device:
    """Turn ``--device`` (auto, cpu, cuda, cuda:N) into a torch device that exists on this machine."""
    import torch

    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise UsageError(f"--device {spec}: unknown device; use auto, cpu, cuda or cuda:N.")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto.")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(
            f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s); "
            f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}, cpu or auto."
        )
    return torch.device("cuda", index)


def check_device(method: str, device: str) -> None:
    """Refuse an unknown or unavailable ``--device`` (whatever the method) before any work.

    ``auto`` and ``cpu`` need no check (nor torch); anything else goes through :func:`resolve_device`.
    The Laplacian method runs on the CPU only, so a GPU named for it is not used, with a warning.
    """
    if device.strip().lower() in ("auto", "cpu"):
        return
    if resolve_device(device).type != "cpu" and method == "laplacian":
        warn(f"--device {device}: the laplacian method runs on the CPU only, so {device} was not used.")
