"""SGD and Adam from the thesis's equations (3.3) against optax, and Adam's effective step K."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnjax.errors import NnjaxError
from nnjax.nn import optim

STEPS = 100


def _params():
    rng = np.random.default_rng(0)
    return {
        "dense": [jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), jnp.asarray(rng.normal(size=4), jnp.float32)],
        "conv": {"kernel": jnp.asarray(rng.normal(size=(2, 2, 1, 3)), jnp.float32)},
        "scale": jnp.asarray(rng.normal(), jnp.float32),
    }


def _noise():
    """Per-step gradient noise [STEPS, ...] for every leaf, varying in scale over time."""
    rng = np.random.default_rng(1)
    scale = 1 + 0.5 * np.sin(np.arange(STEPS) / 7.0)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=(STEPS, *p.shape)) * scale.reshape(-1, *[1] * p.ndim), jnp.float32),
        _params(),
    )


def _trajectory(tx):
    """Params after each of STEPS updates, stacked: one jitted scan per optimizer.

    The gradient at step t is ``0.3 * params + noise[t]``: it changes every step and depends
    on the parameters, so any difference between two optimizers would compound.
    """

    @jax.jit
    def run(params, noise):
        def body(carry, n):
            p, s = carry
            updates, s = tx.update(jax.tree.map(lambda x, e: 0.3 * x + e, p, n), s, p)
            p = optax.apply_updates(p, updates)
            return (p, s), p

        return jax.lax.scan(body, (params, tx.init(params)), noise)[1]

    return run(_params(), _noise())


SCHEDULE = optax.exponential_decay(0.05, transition_steps=10, decay_rate=0.7)
CASES = {
    "sgd": (lambda: optim.sgd(0.05), lambda: optax.sgd(0.05)),
    "sgd-momentum-schedule": (
        lambda: optim.sgd(SCHEDULE, momentum=0.9), lambda: optax.sgd(SCHEDULE, momentum=0.9)
    ),
    "adam": (lambda: optim.adam(0.01), lambda: optax.adam(0.01)),
    "adam-schedule-custom": (
        lambda: optim.adam(SCHEDULE, b1=0.8, b2=0.99, eps=1e-6),
        lambda: optax.adam(SCHEDULE, b1=0.8, b2=0.99, eps=1e-6),
    ),
    "adamw": (lambda: optim.adamw(0.01, weight_decay=0.1), lambda: optax.adamw(0.01, weight_decay=0.1)),
    "adamw-schedule-masked": (
        lambda: optim.adamw(SCHEDULE, b2=0.99, weight_decay=0.3, mask=optim.decay_mask),
        lambda: optax.adamw(SCHEDULE, b2=0.99, weight_decay=0.3, mask=optim.decay_mask),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_equal_to_optax_over_100_steps_on_a_nested_pytree(case):
    ours, theirs = CASES[case]
    a, b = _trajectory(ours()), _trajectory(theirs())
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape[0] == STEPS
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-6)
    moved = max(float(np.max(np.abs(x[-1] - x[0]))) for x in map(np.asarray, jax.tree.leaves(a)))
    assert moved > 1e-2  # the parameters really travelled


def test_first_adam_step_is_the_thesis_update_by_hand():
    params = {"w": np.array([1.0, -2.0, 0.5], np.float32)}
    g = {"w": np.array([0.1, -3.0, 0.0], np.float32)}  # the expected values below: float32 NumPy
    tx = optim.adam(0.1)
    updates, state = jax.jit(lambda g, params: tx.update(g, tx.init(params)))(g, params)
    # t = 1: m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2 -> update = -eta g / (|g| + eps)
    np.testing.assert_allclose(state.mu["w"], 0.1 * g["w"], rtol=1e-6)
    np.testing.assert_allclose(state.nu["w"], 0.001 * g["w"] ** 2, rtol=1e-6)
    # (rtol 1e-5: 1 - 0.999 is 0.00099998713 in float32)
    np.testing.assert_allclose(updates["w"], -0.1 * g["w"] / (np.abs(g["w"]) + 1e-8), rtol=1e-5)
    assert int(state.count) == 1


def test_effective_step_k():
    params = {"w": np.zeros((4,), np.float32), "b": np.zeros((2, 2), np.float32)}
    # float32 NumPy: the expected values below are NumPy float32 arithmetic, no small XLA programs
    g1 = {"w": np.array([0.5, -2.0, 0.0, 1e-3], np.float32), "b": np.full((2, 2), 0.25, np.float32)}
    g2 = {"w": np.array([-0.25, 1.5, 0.1, 0.1], np.float32), "b": np.array([[0.1, -0.075], [0.3, 0.0]], np.float32)}
    tx = optim.adam(0.01)

    @jax.jit  # one program: both steps, both K and the statistics
    def run(params, g1, g2):
        _, state = tx.update(g1, tx.init(params))
        k = optim.adam_effective_step(state, g1, 0.01)
        updates, state = tx.update(g2, state)
        k2 = optim.adam_effective_step(state, g2, 0.01)
        return k, updates, k2, optim.effective_step_stats(k2, g2)

    k, updates, k2, stats = jax.tree.map(np.asarray, run(params, g1, g2))
    # step 1: K = eta / (|g| + eps); zero gradients give K = 0 (K is undefined there)
    expected = 0.01 / (np.abs(g1["w"]) + 1e-8)
    np.testing.assert_allclose(k["w"], np.where(g1["w"] == 0, 0.0, expected), rtol=1e-5)
    np.testing.assert_allclose(k["b"], 0.01 / 0.25, rtol=1e-5)
    # a later step: K * g is exactly minus the update
    for kk, gg, uu in zip(jax.tree.leaves(k2), jax.tree.leaves(g2), jax.tree.leaves(updates), strict=True):
        nonzero = np.asarray(gg) != 0  # where g = 0 the update (momentum) is not K g: K is 0 there
        np.testing.assert_allclose((kk * gg)[nonzero], -uu[nonzero], rtol=1e-5, atol=1e-9)
        assert np.all(np.asarray(kk)[~nonzero] == 0)
    k_flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(k2)])
    g_flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g2)])
    flat = np.abs(k_flat[g_flat != 0])  # the statistics skip parameters whose gradient is 0
    assert flat.size == 7
    assert float(stats["k_median_abs"]) == pytest.approx(float(np.median(flat)), rel=1e-6)
    assert float(stats["k_max_abs"]) == pytest.approx(float(flat.max()), rel=1e-6)


def test_median_without_a_sort_is_numpy_s_nanmedian_exactly():
    """The statistics' median counts instead of sorting; on odd and even counts, values spanning 20 orders
    of magnitude, ties, zeros, infinities and gradients of 0 (NaN here) it is NumPy's value, bit for bit."""
    rng = np.random.default_rng(0)
    spread = (np.abs(rng.normal(size=1001)) * 10.0 ** rng.uniform(-10, 10, 1001)).astype(np.float32)
    cases = [spread, spread[:1000], np.array([3.0, 1.0, 2.0, 2.0], np.float32), np.zeros(6, np.float32),
             np.array([np.inf, 1.0, np.inf], np.float32), np.array([1.0, np.inf], np.float32),
             np.array([5.0], np.float32)]
    with_nan = spread.copy()
    with_nan[::3] = np.nan
    median = jax.jit(optim._nanmedian_of_nonnegative)
    for values in [*cases, with_nan]:
        assert float(median(values)) == float(np.nanmedian(values)), values[:5]
    assert np.isnan(float(median(np.full(4, np.nan, np.float32))))


def test_tracked_k_stats_live_in_the_optimizer_state():
    params = _params()
    tx = optax.chain(optax.clip_by_global_norm(1e6), optim.adam(0.01, track_effective_step=True))

    @jax.jit  # one program: the init, three steps (gradients noise[0], noise[1], noise[2]) and K of the last
    def run(params, noise):
        initial = tx.init(params)
        state = jax.lax.scan(lambda s, g: (tx.update(g, s, params)[1], None), initial,
                             jax.tree.map(lambda n: n[:3], noise))[0]
        g = jax.tree.map(lambda n: n[2], noise)
        return initial, state, optim.effective_step_stats(optim.adam_effective_step(state, g, 0.01), g)

    initial, state, direct = run(params, _noise())
    assert optim.find_adam_state(initial) is not None
    stored = optim.effective_step_from_state(state)
    assert set(stored) == {"k_median_abs", "k_mean_abs", "k_max_abs"}
    for name in stored:
        assert float(stored[name]) == pytest.approx(float(direct[name]), rel=1e-5)
    sgd_state = optim.sgd(0.1).init(params)
    assert optim.effective_step_from_state(sgd_state) == {}


def test_bad_hyper_parameters_are_one_clear_error():
    with pytest.raises(NnjaxError, match="learning_rate must be a positive number"):
        optim.sgd(-0.1)
    with pytest.raises(NnjaxError, match="momentum must be in"):
        optim.sgd(0.1, momentum=1.5)
    with pytest.raises(NnjaxError, match="b2 must be in"):
        optim.adam(0.1, b2=1.0)
