"""The unrolled CPU lowering of threefry2x32: the published bits, and no XLA while loop."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnjax.train.step  # noqa: F401  (importing the training step applies the lowering)
from nnjax._threefry import use_unrolled_threefry_on_cpu
from nnjax._xla import opted_out

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
OPTED_OUT = opted_out()
KEY = (0x13198A2E, 0x03707344)  # Random123's known-answer key and counter
COUNT = (0x243F6A88, 0x85A308D3)


def threefry2x32_numpy(key: tuple[int, int], x0: np.ndarray, x1: np.ndarray):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), in uint32 NumPy: the reference."""
    x0, x1 = x0.astype(np.uint32).copy(), x1.astype(np.uint32).copy()
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    schedule = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    with np.errstate(over="ignore"):
        x0 += schedule[0]
        x1 += schedule[1]
        for group in range(5):
            for r in ROTATIONS[group % 2]:
                x0 += x1
                x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
                x1 ^= x0
            x0 += schedule[(group + 1) % 3]
            x1 += schedule[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def test_lowering_is_in_effect_on_this_jaxlib():
    if jax.default_backend() != "cpu" or OPTED_OUT:
        pytest.skip("the lowering only changes CPU programs, and NNJAX_XLA_DEFAULTS=0 turns it off")
    assert use_unrolled_threefry_on_cpu(), "the checked jaxlib should get the unrolled lowering"


def test_random123_known_answer_and_numpy_reference():
    from jax.extend.random import threefry_2x32

    key = jnp.array(KEY, jnp.uint32)
    out = np.asarray(jax.jit(threefry_2x32)(key, jnp.array(COUNT, jnp.uint32)))
    assert out.tolist() == [0xC4923A9C, 0x483DF7A0]  # Random123's published test vector

    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**32, size=2 * 4099, dtype=np.uint64).astype(np.uint32)
    got = np.asarray(jax.jit(threefry_2x32)(key, jnp.asarray(words)))
    half = words.size // 2
    want0, want1 = threefry2x32_numpy(KEY, words[:half], words[half:])
    np.testing.assert_array_equal(got, np.concatenate([want0, want1]))


def test_dropout_mask_program_has_no_while_loop():
    if jax.default_backend() != "cpu" or OPTED_OUT:
        pytest.skip("the lowering only changes CPU programs, and NNJAX_XLA_DEFAULTS=0 turns it off")

    def mask(key):
        return jax.random.bernoulli(key, 0.9, (64, 128))

    hlo = jax.jit(mask).lower(jax.random.key(0)).as_text()
    assert "while" not in hlo
    bits = np.asarray(jax.jit(mask)(jax.random.key(0)))
    assert 0.85 < bits.mean() < 0.95


def test_opting_out_keeps_jax_s_own_lowering():
    """``NNJAX_XLA_DEFAULTS=0``: nnjax leaves JAX's CPU lowering (the while loop) alone."""
    probe = (
        "import jax, nnjax.train.step\n"
        "from nnjax._threefry import use_unrolled_threefry_on_cpu\n"
        "hlo = jax.jit(lambda k: jax.random.bernoulli(k, 0.9, (64, 128))).lower(jax.random.key(0)).as_text()\n"
        "print(use_unrolled_threefry_on_cpu(), 'while' in hlo)\n"
    )
    env = {**os.environ, "NNJAX_XLA_DEFAULTS": "0", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
