"""Shared fixtures: tiny synthetic volumes and images, built in memory, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HARVARD = REPO_ROOT.parent / "shared" / "data" / "harvard"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator so every test sees the same random data."""
    return np.random.default_rng(1234)


@pytest.fixture
def harvard_dir() -> Path:
    """The shared Harvard slices; tests that need them skip where they are absent."""
    if not (HARVARD / "PET-MRI").is_dir():
        pytest.skip("../shared/data/harvard is not available")
    return HARVARD
