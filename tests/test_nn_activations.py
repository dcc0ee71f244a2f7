"""Activations (thesis 3.1, eq. 2.1.2): closed-form derivatives vs autodiff, stability, figures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnjax.errors import NnjaxError
from nnjax.nn import activations as act

GRID = jnp.concatenate([jnp.linspace(-30.0, 30.0, 601), jnp.array([0.0, -1e-6, 1e-6, -80.0, 80.0])])


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "step", "linear"])
def test_closed_form_derivative_equals_autodiff(name):
    entry = act.get_activation(name)
    closed, autodiff = jax.jit(lambda x: (entry.derivative(x), jax.vmap(jax.grad(entry.fn))(x)))(GRID)
    np.testing.assert_allclose(closed, autodiff, atol=1e-6, rtol=1e-5)


def test_relu_uses_the_thesis_convention_at_zero():
    # Thesis: f'(x) = 1 for x >= 0. jax.nn.relu's autodiff says 0 at 0; ours says 1 both ways.
    assert float(act.relu_derivative(0.0)) == 1.0
    assert float(jax.grad(act.relu)(0.0)) == 1.0
    assert float(act.relu_derivative(-1e-7)) == 0.0
    np.testing.assert_array_equal(act.relu(GRID), jax.nn.relu(GRID))


def test_step_is_the_perceptron_threshold():
    x = jnp.array([-1.0, 0.5, 0.5000001, 2.0])
    np.testing.assert_array_equal(act.step(x, k=0.5), [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(act.step(jnp.array([0.0, 1e-6])), [0.0, 1.0])  # f_0(0) = 0
    np.testing.assert_array_equal(jax.jit(jax.vmap(jax.grad(lambda v: act.step(v, 0.5))))(x), np.zeros(4))


def test_thesis_formulas_match_where_they_do_not_overflow():
    x = np.linspace(-20.0, 20.0, 401)
    e1, e2 = np.exp(-x), np.exp(-2 * x)  # the thesis's formulas, in float64 numpy
    names = ("sigmoid", "sigmoid_derivative", "tanh", "tanh_thesis_form", "tanh_derivative")
    ours = jax.jit(lambda v: [getattr(act, n)(v) for n in names])(jnp.asarray(x, jnp.float32))
    sig, dsig, tanh, tanh_thesis, dtanh = (np.asarray(o, np.float64) for o in ours)
    np.testing.assert_allclose(sig, 1 / (1 + e1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dsig, e1 / (1 + e1) ** 2, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(tanh, 2 / (1 + e2) - 1, atol=1e-6)
    np.testing.assert_allclose(tanh_thesis, 2 / (1 + e2) - 1, atol=1e-6)
    np.testing.assert_allclose(dtanh, 4 * e2 / (1 + e2) ** 2, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(dtanh, 1 - np.tanh(x) ** 2, rtol=1e-5, atol=1e-9)


def test_sigmoid_is_stable_for_huge_inputs():
    x = jnp.array([-1000.0, -100.0, 100.0, 1000.0])

    @jax.jit
    def everything(v):
        naive = jnp.exp(-v) / (1 + jnp.exp(-v)) ** 2  # the thesis's literal formula
        derivatives = (act.sigmoid_derivative(v), act.tanh_derivative(v), jax.vmap(jax.grad(act.sigmoid))(v))
        return act.sigmoid(v), jax.nn.sigmoid(v), derivatives, naive

    s, reference, derivatives, naive = everything(x)
    np.testing.assert_allclose(s, reference, atol=1e-30)
    np.testing.assert_array_equal(s, [0.0, 0.0, 1.0, 1.0])
    for values in derivatives:
        assert np.all(np.isfinite(values)) and np.max(values) < 1e-30
    # e^{-x} / (1 + e^{-x})^2 is inf / inf = nan at x = -1000 in float32; ours gives 0
    assert np.isnan(naive[0]) and float(derivatives[0][0]) == 0.0


def test_softmax_is_stable_and_normalised():
    x = jnp.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0], [-5e3, -5e3, -5e3]])
    s, s_ref, log_s, log_s_ref = jax.jit(
        lambda v: (act.softmax(v), jax.nn.softmax(v), act.log_softmax(v), jax.nn.log_softmax(v))
    )(x)
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s, s_ref, atol=1e-7)
    np.testing.assert_allclose(np.sum(s, -1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(log_s, log_s_ref, atol=1e-5)


def test_softmax_jacobian_against_autodiff_and_thesis_diagonal():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)) * 3, jnp.float32)
    jac, reference, s, diagonal = jax.jit(
        lambda v: (act.softmax_jacobian(v), jax.vmap(jax.jacobian(act.softmax))(v), act.softmax(v),
                   act.softmax_derivative(v))
    )(x)
    jac, s = np.asarray(jac), np.asarray(s)  # [4, 5, 5], [4, 5]
    np.testing.assert_allclose(jac, reference, atol=1e-7)
    np.testing.assert_allclose(jac, np.stack([np.diag(r) for r in s]) - s[:, :, None] * s[:, None, :], atol=1e-7)
    # The thesis's formula (e^{x_j} S - e^{2x_j}) / S^2 is the Jacobian's diagonal ...
    e = np.exp(np.asarray(x, np.float64))
    total = e.sum(-1, keepdims=True)
    thesis = (e * total - e**2) / total**2
    np.testing.assert_allclose(diagonal, thesis, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.diagonal(jac, axis1=-2, axis2=-1), thesis, rtol=1e-5, atol=1e-7)
    # ... and only the diagonal: the off-diagonal entries -s_i s_j are not zero.
    off = jac - np.stack([np.diag(np.diag(m)) for m in jac])
    assert np.abs(off).max() > 1e-3


def test_unknown_activation_is_one_clear_error():
    with pytest.raises(NnjaxError, match="Unknown activation 'swish'.*relu"):
        act.get_activation("swish")


def test_activation_figures(tmp_path):
    from nnjax.plots.activations import FIGURES, activation_figure, activation_figures

    fig = activation_figure("sigmoid")
    lines = fig.axes[0].get_lines()
    x, f = lines[0].get_data()
    _, d = lines[1].get_data()
    np.testing.assert_allclose(f, 1 / (1 + np.exp(-x)), atol=1e-6)
    np.testing.assert_allclose(d, f * (1 - f), atol=1e-6)
    paths = activation_figures(tmp_path)
    assert [p.name for p in paths] == [f"activation_{n}.png" for n in FIGURES]
    assert all(p.stat().st_size > 5000 for p in paths)
    with pytest.raises(NnjaxError, match="No activation figure"):
        activation_figure("gelu")
