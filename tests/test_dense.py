"""nnjax.nn.dense: flax's Dense with a 2-D kernel gradient (values, gradients, parameters)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_scaled

from nnjax.nn.dense import Dense


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 7), (2, 3, 4, 7)])
def test_dense_equals_flax_dense_and_its_gradients(shape):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    ours, ref = Dense(6), nn.Dense(6)
    assert jax.tree_util.tree_structure(jax.eval_shape(ours.init, jax.random.key(0), x)) == \
        jax.tree_util.tree_structure(jax.eval_shape(ref.init, jax.random.key(0), x))
    params = {"kernel": jnp.asarray(rng.normal(size=(7, 6)), jnp.float32),
              "bias": jnp.asarray(rng.normal(size=6), jnp.float32)}

    def loss(model, p, a):
        return jnp.sum(jnp.sin(model.apply({"params": p}, a)))

    @jax.jit  # one program (each operation alone would compile on its own)
    def compare(params, x):
        outputs = ours.apply({"params": params}, x), ref.apply({"params": params}, x)
        grads = [jax.grad(lambda p, a, m=m: loss(m, p, a), (0, 1))(params, x) for m in (ours, ref)]
        return outputs, grads

    (out, ref_out), (grads, ref_grads) = compare(params, x)
    assert_close_scaled(out, ref_out)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads), strict=True):
        assert a.shape == b.shape
        assert_close_scaled(a, b)


def test_dense_has_forward_mode_derivatives_too():
    """No custom rule: ``jax.jvp`` works and equals the reverse-mode product (a custom VJP raised here)."""
    rng = np.random.default_rng(1)
    x, dx = (rng.normal(size=(2, 3, 7)).astype(np.float32) for _ in range(2))
    params = {"kernel": rng.normal(size=(7, 6)).astype(np.float32), "bias": rng.normal(size=6).astype(np.float32)}
    model = Dense(6)

    @jax.jit
    def both(x, dx):
        forward = jax.jvp(lambda a: model.apply({"params": params}, a), (x,), (dx,))[1]
        g = np.ones((2, 3, 6), np.float32)
        pullback = jax.vjp(lambda a: model.apply({"params": params}, a), x)[1]
        return forward, jnp.sum(pullback(g)[0] * dx), jnp.sum(forward * g)

    tangent, reverse, forward_dot = both(x, dx)
    assert_close_scaled(tangent, dx @ params["kernel"])
    assert_close_scaled(reverse, forward_dot)  # <J^T g, dx> = <g, J dx>
