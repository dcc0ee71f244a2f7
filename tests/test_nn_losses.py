"""Losses (thesis 3.2): per-example values [B] against optax, including extreme logits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnjax.errors import NnjaxError
from nnjax.nn import losses as L

RNG = np.random.default_rng(0)


def _normal(*shape):
    return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def test_mse_is_twice_optax_l2_loss_averaged_per_example():
    pred = _normal(6, 3, 2)
    target = _normal(6, 3, 2)

    @jax.jit  # one program (each operation alone would compile on its own)
    def run(pred, target):
        return (L.mse(pred, target), 2 * optax.l2_loss(pred, target).reshape(6, -1).mean(1),
                optax.squared_error(pred, target).reshape(6, -1).mean(1),
                L.mse_mean(pred, target), jnp.mean((pred - target) ** 2))

    per, l2, squared, mean, want_mean = run(pred, target)
    assert per.shape == (6,)
    # optax.l2_loss is 0.5 (p - t)^2 elementwise; the thesis's MSE is mean (y - yhat)^2.
    np.testing.assert_allclose(per, l2, rtol=1e-6)
    np.testing.assert_allclose(per, squared, rtol=1e-6)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-6)


def test_binary_cross_entropy_with_logits_matches_optax_for_extreme_logits():
    logits = jnp.array([[-100.0, 100.0], [100.0, -100.0], [0.0, 3.0], [-2.5, 40.0]])
    labels = jnp.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.3, 1.0]])

    @jax.jit
    def run(logits, labels):
        grads = jax.grad(lambda z: L.binary_cross_entropy_with_logits(z, labels).sum())(logits)
        return (L.binary_cross_entropy_with_logits(logits, labels),
                optax.sigmoid_binary_cross_entropy(logits, labels).mean(1), grads,
                (jax.nn.sigmoid(logits) - labels) / 2)

    per, want, grads, want_grads = run(logits, labels)
    assert per.shape == (4,) and np.all(np.isfinite(per))
    np.testing.assert_allclose(per, want, rtol=1e-6)
    per = np.asarray(per)
    assert float(per[0]) < 1e-30 and abs(float(per[1]) - 100.0) < 1e-4  # right: ~0; wrong: ~|z|
    np.testing.assert_allclose(grads, want_grads, atol=1e-7)


def test_binary_cross_entropy_from_probabilities_is_clipped():
    logits = _normal(8, 1)
    labels = jnp.asarray(RNG.integers(0, 2, (8, 1)), jnp.float32)

    @jax.jit
    def run(logits, labels, worst_probs, worst_labels):
        logits = logits * 3
        return (L.binary_cross_entropy(jax.nn.sigmoid(logits), labels),
                L.binary_cross_entropy_with_logits(logits, labels), L.binary_cross_entropy(worst_probs, worst_labels))

    # p = 0 for a positive example would be -log 0 = inf: clipping gives -log(eps) instead.
    from_probs, from_logits, worst = run(logits, labels, jnp.array([[0.0], [1.0]]), jnp.array([[1.0], [0.0]]))
    np.testing.assert_allclose(from_probs, from_logits, rtol=1e-4, atol=1e-6)
    # (1 - 1e-7 rounds to 1 - 1.19e-7 in float32, hence the 2% tolerance on the second one)
    np.testing.assert_allclose(worst, -np.log(L.EPS), rtol=0.02)


def test_softmax_cross_entropy_one_hot_and_integer_labels_match_optax():
    logits = jnp.array([[100.0, -100.0, 0.0], [-100.0, 100.0, 5.0], [0.1, 0.2, 0.3], [3.0, -1.0, 2.0]])
    labels = jnp.array([0, 0, 2, 1])

    @jax.jit
    def run(logits, labels):
        one_hot = jax.nn.one_hot(labels, 3)
        per_int = L.softmax_cross_entropy_int(logits, labels)
        return (L.softmax_cross_entropy(logits, one_hot), per_int, optax.softmax_cross_entropy(logits, one_hot),
                optax.softmax_cross_entropy_with_integer_labels(logits, labels), per_int.mean(),
                L.softmax_cross_entropy_mean(logits, labels), L.softmax_cross_entropy_mean(logits, one_hot))

    per_one_hot, per_int, want_one_hot, want_int, per_int_mean, mean_int, mean_one_hot = run(logits, labels)
    assert per_int.shape == (4,) and np.all(np.isfinite(per_int))
    np.testing.assert_allclose(per_one_hot, want_one_hot, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(per_int, want_int, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(per_int, per_one_hot, rtol=1e-6)
    assert abs(float(np.asarray(per_int)[1]) - 200.0) < 1e-3  # confidently wrong: logit gap
    np.testing.assert_allclose(mean_int, per_int_mean, rtol=1e-6)
    np.testing.assert_allclose(mean_one_hot, per_int_mean, rtol=1e-6)


def test_categorical_cross_entropy_from_probabilities_equals_the_logit_form():
    logits = _normal(5, 4)

    @jax.jit
    def run(logits):
        one_hot = jax.nn.one_hot(jnp.array([0, 1, 2, 3, 0]), 4)
        return L.categorical_cross_entropy(jax.nn.softmax(logits), one_hot), L.softmax_cross_entropy(logits, one_hot)

    from_probs, from_logits = run(logits)
    np.testing.assert_allclose(from_probs, from_logits, rtol=1e-5)


def test_batch_mean_with_a_padding_mask():
    per = jnp.array([1.0, 2.0, 3.0, 100.0])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    masked, plain, all_masked = jax.jit(
        lambda per, mask: (L.batch_mean(per, mask), L.batch_mean(per), L.batch_mean(per, jnp.zeros(4))))(per, mask)
    assert float(masked) == pytest.approx(2.0)
    assert float(plain) == pytest.approx(26.5)
    assert float(all_masked) == 0.0


def test_bad_shapes_give_one_clear_error():
    with pytest.raises(NnjaxError, match=r"mse: predictions have shape \(4, 2\) but targets have shape \(4,\)"):
        L.mse(jnp.zeros((4, 2)), jnp.zeros(4))
    with pytest.raises(NnjaxError, match="integer class indices"):
        L.softmax_cross_entropy_int(jnp.zeros((2, 3)), jnp.array([0.0, 1.0]))
    with pytest.raises(NnjaxError, match=r"logits \[B, C\] and integer labels \[B\]"):
        L.softmax_cross_entropy_int(jnp.zeros((2, 3)), jnp.array([[0], [1]]))
    with pytest.raises(NnjaxError, match="one mask value per example"):
        L.batch_mean(jnp.zeros(3), jnp.ones(4))
