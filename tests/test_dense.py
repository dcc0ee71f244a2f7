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
