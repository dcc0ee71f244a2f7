"""Hand-written backprop (thesis annex C) against jax.grad, on the flax MLP's params.

The exact comparisons run in float64 (``jax.enable_x64``), where hand and autodiff
gradients agree to ~1e-12; one case checks float32 with a relative tolerance.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_scaled

from nnjax.errors import NnjaxError
from nnjax.models.mlp import MLP
from nnjax.nn import losses as L
from nnjax.nn.backprop import backprop, forward, make_backprop_loss
from nnjax.train.init import run_once

CASES = [  # (features, hidden activation, output activation, loss, integer labels?)
    ((1,), "relu", "tanh", "mse", False),
    ((8, 1), "sigmoid", "sigmoid", "mse", False),
    ((5, 7, 3), "tanh", "softmax", "mse", False),
    ((6, 6, 6, 4), "relu", None, "cross_entropy", True),
    ((4, 3), "tanh", "softmax", "cross_entropy", False),
    ((10, 5, 2), "sigmoid", None, "binary_cross_entropy", False),
]


def _reference_loss(out, y, loss, output_activation):
    """Per-example loss from the MLP's output by nnjax.nn.losses, for autodiff."""
    if loss == "mse":
        return L.mse(out, y)
    logits = jnp.log(out) if output_activation == "softmax" else out  # log softmax(z) = z + const
    if loss == "cross_entropy":
        return L.softmax_cross_entropy_int(logits, y) if y.ndim == 1 else L.softmax_cross_entropy(logits, y)
    return L.binary_cross_entropy_with_logits(logits, y)


def _problem(features, loss, integer_labels, dtype, batch=9, n_in=4, seed=0):
    """Inputs [B, n_in], targets for ``loss``, and MLP params (numpy RNG: no PRNG compiles).

    Biases are non-zero (flax initialises them to 0), so their gradient path is exercised.
    """
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, n_in)), dtype)
    n_out = features[-1]
    if loss == "cross_entropy":
        labels = rng.integers(0, n_out, batch)
        y = jnp.asarray(labels, jnp.int32) if integer_labels else jnp.asarray(np.eye(n_out)[labels], dtype)
    elif loss == "binary_cross_entropy":
        y = jnp.asarray(rng.integers(0, 2, (batch, n_out)), dtype)
    else:
        y = jnp.asarray(rng.uniform(size=(batch, n_out)), dtype)
    widths = (n_in, *features)
    params = {"params": {
        f"dense_{i}": {
            "kernel": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), dtype),
            "bias": jnp.asarray(0.3 * rng.normal(size=(b,)), dtype),
        }
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    }}
    return x, y, params


@pytest.mark.parametrize("features,activation,output_activation,loss,integer_labels", CASES)
def test_backprop_equals_jax_grad_in_float64(features, activation, output_activation, loss, integer_labels):
    with jax.enable_x64(True):
        x, y, params = _problem(features, loss, integer_labels, jnp.float64)
        model = MLP(features, activation=activation, output_activation=output_activation)
        weights = np.linspace(0.5, 1.5, x.shape[0]) / x.shape[0]  # float64 NumPy: no small program

        def reference(p):
            return jnp.sum(weights * _reference_loss(model.apply(p, x), y, loss, output_activation))

        def hand(p):
            return backprop(p, x, y, activation=activation, output_activation=output_activation, loss=loss,
                            weights=weights)

        def both(p):
            per_example_reference = _reference_loss(model.apply(p, x), y, loss, output_activation)
            return hand(p), jax.grad(reference)(p), per_example_reference

        (grads, per_example), want, per_example_reference = jax.jit(both)(params)
        assert jax.tree.structure(grads) == jax.tree.structure(params)
        assert per_example.shape == (x.shape[0],)
        np.testing.assert_allclose(per_example, per_example_reference, rtol=1e-12)
        for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(g, w, atol=1e-10, rtol=1e-9)
        assert max(np.abs(np.asarray(w)).max() for w in jax.tree.leaves(want)) > 1e-3  # not trivially 0


def test_float32_agrees_to_relative_precision_and_default_is_the_batch_mean():
    features, activation = (16, 16, 3), "tanh"
    x, y, variables = _problem(features, "mse", False, jnp.float32, batch=32)
    model = MLP(features, activation=activation)

    @jax.jit
    def both(p):  # the inner params (without the "params" level) work too
        grads, _ = backprop(p, x, y, activation=activation, loss="mse")
        return grads, jax.grad(lambda q: L.mse_mean(model.apply({"params": q}, x), y))(p)

    grads, want = both(variables["params"])
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g), np.asarray(w)
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6 * np.abs(w).max())


def test_forward_keeps_z_and_a_and_matches_apply():
    model = MLP((5, 4, 2), activation="sigmoid", output_activation="softmax")
    x, _, params = _problem((5, 4, 2), "mse", False, jnp.float32, batch=6, n_in=3)
    (zs, acts), applied = jax.jit(lambda p: (forward(p, x, "sigmoid", "softmax"), model.apply(p, x)))(params)
    assert [z.shape for z in zs] == [(6, 5), (6, 4), (6, 2)]
    assert [a.shape for a in acts] == [(6, 3), (6, 5), (6, 4), (6, 2)]
    zs, acts = [np.asarray(z) for z in zs], [np.asarray(a) for a in acts]
    np.testing.assert_allclose(acts[1], 1 / (1 + np.exp(-zs[0])), rtol=1e-6)
    np.testing.assert_allclose(acts[-1], applied, rtol=1e-6)
    inner = jax.tree.map(np.asarray, params["params"])
    # a matrix product: rtol alone fails wherever its terms cancel to near 0
    assert_close_scaled(zs[1], acts[1] @ inner["dense_1"]["kernel"] + inner["dense_1"]["bias"])


def test_custom_vjp_loss_makes_jax_grad_use_the_hand_backprop():
    with jax.enable_x64(True):
        x, y, variables = _problem((6, 2), "cross_entropy", True, jnp.float64)
        model = MLP((6, 2), activation="relu")
        params = variables["params"]
        mask = jnp.array([1.0] * 7 + [0.0] * 2)
        fn = make_backprop_loss("relu", None, "cross_entropy")

        def masked_mean(loss):
            return lambda p: jnp.sum(loss(p) * mask) / mask.sum()

        def reference_loss(p):
            return L.softmax_cross_entropy_int(model.apply({"params": p}, x), y)

        @jax.jit  # one program: both losses and both gradients
        def run(p):
            return (fn(p, x, y), reference_loss(p), jax.grad(masked_mean(lambda q: fn(q, x, y)))(p),
                    jax.grad(masked_mean(reference_loss))(p))

        loss, reference, got, want = run(params)
        np.testing.assert_allclose(loss, reference, rtol=1e-12)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, w, atol=1e-12)


def test_mlp_layout():
    model = MLP((3, 2))
    # one program compiled at -O1 like nnjax's initialisers (about half of jit's compile time):
    # the init, then the model on another batch size
    variables, out = run_once(lambda key, x, y: (v := model.init(key, x), model.apply(v, y)),
                              jax.random.PRNGKey(0), np.zeros((1, 5), np.float32), np.ones((7, 5), np.float32))
    shapes = jax.tree.map(jnp.shape, variables)
    assert shapes == {"params": {"dense_0": {"kernel": (5, 3), "bias": (3,)},
                                 "dense_1": {"kernel": (3, 2), "bias": (2,)}}}
    assert out.shape == (7, 2)


def test_bad_configurations_are_one_clear_error():
    x, _, params = _problem((3, 2), "mse", False, jnp.float32, batch=4, n_in=5)
    with pytest.raises(NnjaxError, match="Unknown loss 'hinge'"):
        backprop(params, x, jnp.zeros((4, 2)), loss="hinge")
    with pytest.raises(NnjaxError, match="output_activation None or 'softmax'"):
        backprop(params, x, jnp.zeros(4, jnp.int32), loss="cross_entropy", output_activation="sigmoid")
    with pytest.raises(NnjaxError, match="not elementwise"):
        backprop(params, x, jnp.zeros((4, 2)), activation="softmax")
    with pytest.raises(NnjaxError, match="layers dense_0, dense_1"):
        backprop({"params": {"conv": {}}}, x, jnp.zeros((4, 2)))
    with pytest.raises(NnjaxError, match="Unknown activation"):
        MLP((3,), activation="swish").apply(params, x)
