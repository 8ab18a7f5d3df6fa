"""Intensity windows: robust ranges from subsampled percentiles, and values mapped to [0, 1].

Used by the pipeline (the MRI and PET windows the network sees) and by previews (display windows).
Percentiles are taken on a regular subsample of at most :data:`PERCENTILE_SAMPLES` values: fast on
clinical volumes and deterministic (no random sampling).
"""

from __future__ import annotations

import math

import numpy as np

#: Values drawn for a percentile at most; a regular stride keeps every part of the volume represented.
PERCENTILE_SAMPLES = 2_000_000


def subsample(values: np.ndarray) -> np.ndarray:
    """A regular subsample (fixed stride, flattened) of at most :data:`PERCENTILE_SAMPLES` values."""
    step = max(1, math.ceil(values.size / PERCENTILE_SAMPLES))
    return values.ravel()[::step]


def robust_range(values: np.ndarray, inside: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """(background, top): a low percentile of all ``values`` and a high one of those ``inside`` a mask.

    Falls back to the minimum and maximum when the top does not rise above the background (an
    almost empty image, or an empty mask).
    """
    low = float(np.percentile(subsample(values), percentiles[0]))
    top = float(np.percentile(subsample(values[inside]), percentiles[1])) if inside.any() else low
    if top <= low:
        low, top = float(values.min()), float(values.max())
    return low, top


def robust_window(values: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.5)) -> tuple[float, float]:
    """Display window (low, high) from percentiles of the non-zero values (all values if none is non-zero)."""
    sample = subsample(values)
    nonzero = sample[sample != 0]
    sample = nonzero if nonzero.size else sample
    low, high = (float(v) for v in np.percentile(sample, percentiles))
    if high <= low:  # constant image: show it white when positive, black otherwise
        low, high = (0.0, high) if high > 0 else (low, low + 1.0)
    return low, high


def normalise(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``values`` from ``window`` (low, high) to [0, 1], clipped, as float32."""
    low, high = window
    return np.clip((values.astype(np.float32, copy=False) - low) / (high - low), 0.0, 1.0)
