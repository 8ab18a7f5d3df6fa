"""medfuse: fuse a patient's MRI with their PET.

The public API is imported lazily so that ``import medfuse`` (and ``medfuse --help``) stays fast:
``medfuse.fuse_files`` and ``medfuse.fuse_images`` load SimpleITK and torch only when first used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "fuse_files": "medfuse.pipeline",
    "fuse_images": "medfuse.pipeline",
    "FuseOptions": "medfuse.pipeline",
}

__all__ = ["FuseOptions", "__version__", "fuse_files", "fuse_images"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medfuse' has no attribute {name!r}")
