"""bfloat16 compute with float32 master parameters and optimizer state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnjax.data.batching import ArrayLoader
from nnjax.errors import NnjaxError
from nnjax.models.mlp import MLP
from nnjax.train.init import run_once
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
    params = run_once(lambda key: MODEL.init(key, data["x"][:1]), jax.random.PRNGKey(0))["params"]  # one program
    batch = next(iter(ArrayLoader(data, 64)))
    bf16 = with_compute_dtype(loss_fn, "bfloat16")
    jaxpr = str(jax.make_jaxpr(lambda p: bf16(p, {}, batch, None, True)[0])(params))
    assert "bf16" in jaxpr and "dot_general" in jaxpr
    full, half = jax.jit(lambda p, b: (loss_fn(p, {}, b, None, True)[0], bf16(p, {}, b, None, True)[0]))(
        params, batch
    )
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


def test_batchnorm_statistics_and_loss_stay_float32_while_the_network_computes_in_bf16():
    """ThesisCNN under bfloat16: convolutions run in bf16, BatchNorm's running averages go in and come out
    float32 (rounding them to bf16 every step cost 10 points of MNIST accuracy), and so does the loss."""
    from nnjax.models.cnn import ThesisCNN, init_variables

    model = ThesisCNN(channels=4)
    variables = init_variables(model, jax.random.PRNGKey(0))
    seen = {}

    def cnn_loss(params, batch_stats, batch, rng, train):
        seen["stats"] = {leaf.dtype for leaf in jax.tree_util.tree_leaves(batch_stats)}
        seen["params"] = {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)}
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"])
        seen["logits"] = logits.dtype
        loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["label"])
        return loss, {"batch_stats": updates["batch_stats"]}

    images = np.random.default_rng(0).uniform(size=(16, 28, 28, 1)).astype(np.float32)
    batch = {"image": jnp.asarray(images), "label": jnp.arange(16) % 10}
    args = (variables["params"], variables["batch_stats"], batch, None, True)
    full_loss, full_aux = jax.jit(cnn_loss, static_argnums=(3, 4))(*args)  # one compile, not one per op
    bf16 = with_compute_dtype(cnn_loss, "bfloat16")
    half_loss, half_aux = jax.jit(bf16, static_argnums=(3, 4))(*args)
    assert seen == {"stats": {jnp.dtype(jnp.float32)}, "params": {jnp.dtype(jnp.bfloat16)},
                    "logits": jnp.dtype(jnp.bfloat16)}
    jaxpr = str(jax.make_jaxpr(lambda p: bf16(p, *args[1:])[0])(args[0])).splitlines()
    assert any("bf16[16,28,28,4] = " in line and ("conv" in line or "custom_vjp_call" in line) for line in jaxpr)
    assert half_loss.dtype == jnp.float32
    for full, half in zip(jax.tree_util.tree_leaves(full_aux["batch_stats"]),
                          jax.tree_util.tree_leaves(half_aux["batch_stats"]), strict=True):
        assert half.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(half), np.asarray(full), rtol=0.03, atol=0.01)
    np.testing.assert_allclose(np.asarray(half_loss), np.asarray(full_loss), rtol=0.05, atol=0.05)
