"""Colour handling: BT.601 YCbCr, grey detection and the colour maps used for PET.

The network fuses luminance. A pseudo-colour PET is split into Y, Cb, Cr (ITU-R BT.601, full range,
as JPEG uses), Y is fused with the MRI and RGB is rebuilt from the fused Y and the PET's own Cb/Cr,
so the result keeps the PET's colours. All arrays here are float32 in [0, 1], channels last.
"""

from __future__ import annotations

import numpy as np

# BT.601 full-range matrices (Y in [0, 1], Cb/Cr centred on 0.5).
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float64,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split an RGB array (..., 3) in [0, 1] into Y, Cb, Cr arrays (each (...)), Cb/Cr centred at 0.5."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected an RGB array with 3 channels last, got shape {rgb.shape}")
    ycc = rgb @ _RGB_TO_YCBCR.T.astype(np.float32)
    return ycc[..., 0], ycc[..., 1] + 0.5, ycc[..., 2] + 0.5


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Rebuild RGB (..., 3) in [0, 1] from Y, Cb, Cr (Cb/Cr centred at 0.5), clipped to [0, 1]."""
    ycc = np.stack(
        [np.asarray(y, np.float32), np.asarray(cb, np.float32) - 0.5, np.asarray(cr, np.float32) - 0.5],
        axis=-1,
    )
    rgb = ycc @ _YCBCR_TO_RGB.T.astype(np.float32)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def is_grey(image: np.ndarray, tolerance: float = 1.0 / 255.0) -> bool:
    """True for a 2-D array, or an RGB(A) array whose R, G and B agree within ``tolerance``."""
    image = np.asarray(image)
    if image.ndim == 2:
        return True
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3].astype(np.float32)
        scale = 255.0 if image.dtype == np.uint8 else (65535.0 if image.dtype == np.uint16 else 1.0)
        spread = (rgb.max(axis=-1) - rgb.min(axis=-1)) / scale
        return bool(spread.max(initial=0.0) <= tolerance)
    return False
