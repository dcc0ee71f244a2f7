"""Max / average pooling from the formulas (thesis 2.3.2) against flax.linen's pooling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnjax.errors import NnjaxError
from nnjax.nn.pooling import avg_pool, max_pool

X_NUMPY = np.random.default_rng(0).normal(size=(2, 7, 9, 3)).astype(np.float32)
X = jnp.asarray(X_NUMPY)

CASES = [  # (window, strides, padding)
    ((2, 2), (2, 2), "VALID"),
    ((2, 2), (2, 2), "SAME"),
    ((3, 3), (1, 1), "SAME"),
    ((3, 2), (2, 3), "VALID"),
    ((3, 2), (2, 3), "SAME"),
    ((2, 3), None, "VALID"),
    ((3, 3), (2, 2), ((1, 0), (2, 1))),
]


@pytest.mark.parametrize("window,strides,padding", CASES)
def test_matches_flax(window, strides, padding):
    def three(x, mx, avg):  # max, average (padding counted), average (padding not counted)
        kw = {"strides": strides, "padding": padding}
        return mx(x, window, **kw), avg(x, window, **kw), avg(x, window, count_include_pad=False, **kw)

    # one program: ours and flax's
    got, want = jax.jit(lambda x: (three(x, max_pool, avg_pool), three(x, nn.max_pool, nn.avg_pool)))(X)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-6, rtol=1e-6)


def test_the_formula_on_a_small_image():
    image = np.arange(16.0, dtype=np.float32).reshape(1, 4, 4, 1)  # rows 0..3, 4..7, 8..11, 12..15

    @jax.jit  # one program
    def pools(image):
        return (max_pool(image, (2, 2), (2, 2))[0, :, :, 0], avg_pool(image, (2, 2), (2, 2))[0, :, :, 0],
                max_pool(image, (3, 3), (2, 2), "SAME")[0, :, :, 0])

    mx, avg, same = pools(image)
    np.testing.assert_array_equal(mx, [[5, 7], [13, 15]])
    np.testing.assert_array_equal(avg, [[2.5, 4.5], [10.5, 12.5]])
    # SAME with stride 2 on 4x4 and a 3x3 window: pad 0 before, 1 after; out 2x2
    np.testing.assert_array_equal(same, [[10, 11], [14, 15]])


def test_one_dimensional_pooling():
    seq = np.random.default_rng(1).normal(size=(3, 11, 2)).astype(np.float32)
    got, want = jax.jit(lambda s: (max_pool(s, (3,), (2,), "SAME"), nn.max_pool(s, (3,), (2,), "SAME")))(seq)
    np.testing.assert_allclose(got, want)


def test_gradient_flows_to_the_window_maximum():
    image = np.array([[1.0, 5.0], [2.0, 3.0]], np.float32).reshape(1, 2, 2, 1)
    grad = jax.jit(jax.grad(lambda x: max_pool(x, (2, 2)).sum()))(image)
    np.testing.assert_array_equal(np.asarray(grad)[0, :, :, 0], [[0, 1], [0, 0]])


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(NnjaxError, match="larger than the padded input"):
        max_pool(X, (8, 2))
    with pytest.raises(NnjaxError, match=r"pooling expects inputs \[N, S, S, C\]"):
        avg_pool(jnp.asarray(X_NUMPY[0]), (2, 2))
    with pytest.raises(NnjaxError, match="padding must be"):
        max_pool(X, (2, 2), padding="FULL")
