"""bfloat16 compute with float32 master parameters and optimizer state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnjax.data.batching import ArrayLoader
from nnjax.errors import NnjaxError
from nnjax.models.mlp import MLP
from nnjax.train.precision import parse_dtype, with_compute_dtype
from nnjax.train.state import create_train_state
from nnjax.train.step import make_train_step

MODEL = MLP((64, 3))


def loss_fn(params, batch_stats, batch, rng, train):
    logits = MODEL.apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]), {}


def test_bfloat16_computes_in_bf16_and_keeps_float32_state():
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(64, 5)).astype(np.float32), "y": rng.integers(0, 3, 64).astype(np.int32)}
    params = MODEL.init(jax.random.PRNGKey(0), data["x"][:1])["params"]
    batch = next(iter(ArrayLoader(data, 64)))
    bf16 = with_compute_dtype(loss_fn, "bfloat16")
    jaxpr = str(jax.make_jaxpr(lambda p: bf16(p, {}, batch, None, True)[0])(params))
    assert "bf16" in jaxpr and "dot_general" in jaxpr
    full, _ = loss_fn(params, {}, batch, None, True)
    half, _ = bf16(params, {}, batch, None, True)
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(half), np.asarray(full), rtol=0.05, atol=0.02)

    tx = optax.adam(1e-2)
    state = create_train_state(params, tx, rng=jax.random.PRNGKey(1))
    step = make_train_step(bf16, tx)
    losses = []
    for _ in range(30):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(state.params))
    assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in jax.tree_util.tree_leaves(state.opt_state))
    assert losses[-1] < 0.7 * losses[0]


def test_float32_is_the_identity_and_bad_names_are_refused():
    assert with_compute_dtype(loss_fn, "float32") is loss_fn
    with pytest.raises(NnjaxError, match="Unknown --dtype 'half'"):
        parse_dtype("half")
