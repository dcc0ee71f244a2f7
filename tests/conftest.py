"""Shared test set-up: real data from ../shared/data when it exists, no network, quiet XLA."""

import os
from pathlib import Path

import pytest

import nnjax  # noqa: F401  (first, so its CPU XLA flag applies before any test imports JAX)

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if "NNJAX_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["NNJAX_DATA_DIR"] = str(_SHARED)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-tfds-dir")
os.environ.setdefault("KERAS_BACKEND", "jax")


def _data_dir() -> Path | None:
    value = os.environ.get("NNJAX_DATA_DIR")
    return Path(value) if value and Path(value).is_dir() else None


@pytest.fixture
def real_data_dir() -> Path:
    """The real data root (../shared/data), or skip when this machine has none."""
    root = _data_dir()
    if root is None:
        pytest.skip("no real data: set NNJAX_DATA_DIR to the shared data folder")
    return root
