"""nnjax's allocator settings (``nnjax._malloc``): an XLA program run again reuses its buffers'
pages instead of faulting in fresh ones."""

import os
import platform
import subprocess
import sys

import pytest

CODE = """
import resource
import nnjax
import jax, jax.numpy as jnp, numpy as np

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

x = jnp.asarray(np.random.default_rng(0).random((4096, 4096), dtype=np.float32))  # 64 MB
v = jnp.linspace(-1.0, 1.0, 4096)
f = jax.jit(lambda x, v: jnp.sin(x).T @ v)  # the transposed sine: a 64 MB temporary buffer
expected = np.sin(np.asarray(x, np.float64)).T @ np.asarray(v, np.float64)
for _ in range(5):  # the heap grows to its working size
    y = jax.block_until_ready(f(x, v))
before = faults()
for _ in range(10):
    y = jax.block_until_ready(f(x, v))
np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
print(faults() - before)
"""

needs_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                 reason="the settings apply to glibc on Linux")


def _faults_of_ten_reruns(**env_extra: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "NNJAX_MALLOC_DEFAULTS"}
    env.update(env_extra)
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return float(result.stdout.strip().splitlines()[-1])


@needs_glibc
def test_an_xla_program_run_again_reuses_its_pages():
    one_buffer = 64 * 2**20 // 4096  # pages of one 64 MB buffer
    # Without the settings glibc maps every block over 32 MB afresh, so each rerun faults in a whole
    # buffer again (~10 buffers' pages in all). With them most reruns fault in nothing; a rerun that
    # starts before XLA has freed the previous run's buffer (under load) still gets a fresh one.
    assert _faults_of_ten_reruns() < 6 * one_buffer


@needs_glibc
def test_the_settings_are_applied_unless_the_user_opts_out(monkeypatch):
    from nnjax._malloc import configure_allocator

    monkeypatch.setenv("NNJAX_MALLOC_DEFAULTS", "0")
    assert configure_allocator() is False
    monkeypatch.delenv("NNJAX_MALLOC_DEFAULTS")
    assert configure_allocator() is True  # the same settings again: glibc accepts them
