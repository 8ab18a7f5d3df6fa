"""Memory limits: refuse an image before its voxels are allocated when it cannot fit in this machine's memory.

Used by :mod:`medfuse.io` (volume files), :mod:`medfuse.dicom` (series) and :mod:`medfuse.registration`
(its resampling grids). Standard library only, so any module may import it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from medfuse.errors import InvalidInputError

#: Bytes per voxel the pipeline needs on an image's grid beyond its own pixels (float32 copy, work arrays).
WORKING_BYTES_PER_VOXEL = 16


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable, else physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(count: float) -> str:
    """A human size: ``1.5 GB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000.0
    return f"{count:.1f} TB"


def bytes_per_voxel(pixel_id: int, components: int = 1) -> int:
    """Bytes one voxel of a SimpleITK pixel type takes (``components`` values per voxel)."""
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(pixel_id)
    bits = re.search(r"(\d+)-bit", name)
    per_component = int(bits.group(1)) // 8 if bits else 8
    return per_component * (2 if "complex" in name else 1) * max(components, 1)


def check_memory(path: Path, size: tuple[int, ...], pixel_id: int, components: int = 1) -> None:
    """Refuse an image whose voxels (plus the pipeline's working copies) exceed available memory."""
    voxels = math.prod(size)
    needed = voxels * (bytes_per_voxel(pixel_id, components) + WORKING_BYTES_PER_VOXEL)
    available = available_memory()
    if available is not None and needed > available:
        shape = "×".join(str(n) for n in size)
        raise InvalidInputError(
            f"{path}: the image is {shape} voxels and needs about {format_bytes(needed)} of memory to process, "
            f"more than the {format_bytes(available)} available; crop or downsample it first."
        )
