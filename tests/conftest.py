"""Shared test set-up: real data from ../shared/data when it exists, no network, quiet XLA;
and :func:`assert_close_scaled`, the float32 comparison the tests import from here."""

import os
from pathlib import Path

import numpy as np
import pytest

import nnjax  # noqa: F401  (first, so its CPU XLA flag applies before any test imports JAX)

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if "NNJAX_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["NNJAX_DATA_DIR"] = str(_SHARED)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-tfds-dir")
os.environ.setdefault("KERAS_BACKEND", "jax")
# One persistent XLA compilation cache for the CLI subprocesses the tests start (never the user's
# ~/.cache), shared by both xdist workers and later test runs: a kill test runs the same program
# three times and compiles it once. JAX keys every entry by program, flags and jaxlib; the folder is
# per CPU kind. The pytest processes are not set up to use it (tests that call ``nnjax.cli.main``
# in-process turn it on in their worker, as the CLI does): their programs are mostly distinct, writing
# each one cost about 5 % (test_nn_optim + test_cnn: 46.3 s without, 48.5 s with), and caching only
# programs that took over 1 s to compile left a cold suite unchanged (7 min 57 s both ways).
# XLA flags that compile faster were measured and left out, since the tests should run what users run:
# --xla_cpu_use_fusion_emitters=false cut the suite's backend compile 205 -> 177 s (5 min 43 s -> 5 min 27 s)
# but ran MobileNetV2's full fine-tuning step 1.07 -> 2.10 s and the LSTM step 2.95 -> 5.66 ms; LLVM level 0
# cut compiles 66 -> 40 s on five heavy modules with the same wall time (2-core AVX-512 EPYC, 2026-12-03).
if "NNJAX_COMPILATION_CACHE" not in os.environ:
    from nnjax.machine import cpu_tag

    os.environ["NNJAX_COMPILATION_CACHE"] = str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "nnjax-xla"
                                                / cpu_tag())


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


def assert_close_scaled(actual, expected, *, rtol: float = 1e-5, scale_atol: float = 1e-5) -> None:
    """``np.testing.assert_allclose`` whose absolute tolerance is ``scale_atol * max|expected|``.

    The rounding error of a float32 sum (a matrix product, a convolution, a layer) is a few
    ``eps * sum|terms|`` in *every* entry, so it follows the size of the whole array, not of
    each value: an entry that is small because its terms cancel carries the same absolute error
    as the largest one. How large it is depends on the summation order, which differs between
    CPUs (AVX-512 and AVX2 kernels of oneDNN or Eigen block their sums differently), so a fixed
    ``atol`` on values of size 30 fails on one CPU and passes on another. The defaults,
    ``1e-5 ~ 80 eps``, leave room for sums of a few hundred terms in any order and are still
    far below what a wrong formula, layout or missing term produces.
    """
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=scale_atol * scale)


#: ImageNet class indices of cats (tabby, tiger cat, Persian, Siamese, Egyptian cat) and of dogs
#: (Chihuahua ... Mexican hairless): what a pretrained backbone should see in the real photos.
CAT_CLASSES = range(281, 286)
DOG_CLASSES = range(151, 269)
