"""Activation functions of thesis section 3.1 (and the perceptron step, eq. 2.1.1-2.1.2).

Each function comes with the thesis's closed-form derivative, written out by hand:

======================  ====================================  ============================================
name                    f(x)                                  f'(x) (thesis form)
======================  ====================================  ============================================
``relu``                0 if x < 0, x if x >= 0               0 if x < 0, 1 if x >= 0  (so f'(0) = 1)
``sigmoid``             1 / (1 + e^{-x})                      e^{-x} / (1 + e^{-x})^2
``tanh``                2 / (1 + e^{-2x}) - 1                 4 e^{-2x} / (1 + e^{-2x})^2
``softmax``             e^{x_j} / sum_k e^{x_k}               (e^{x_j} S - e^{2 x_j}) / S^2 = s_j (1 - s_j)
``step`` (f_k)          0 if x <= k, 1 if x > k               0 (everywhere except x = k, where undefined)
======================  ====================================  ============================================

The thesis's softmax "derivative" is only the diagonal of the softmax Jacobian;
:func:`softmax_jacobian` gives the full matrix ``diag(s) - s s^T``.

Numerics: every function accepts any shape (softmax works over the last axis) and keeps
the input's dtype. ``sigmoid`` evaluates ``e^{-|x|}`` only, so it never overflows;
the sigmoid and tanh derivatives are even functions, so the thesis's formula is
evaluated at ``|x|`` (same value, no ``inf / inf``). ``softmax`` subtracts the maximum.
All functions are written with ``jnp.where`` on safe branches, so ``jax.grad`` of each
function equals its closed-form derivative (including ``relu'(0) = 1``, the thesis's
convention; note ``jax.nn.relu`` uses 0 there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nnjax.errors import NnjaxError

Array = jax.Array


def relu(x: Array) -> Array:
    """ReLU: ``0`` for ``x < 0`` and ``x`` for ``x >= 0`` (elementwise, any shape)."""
    x = jnp.asarray(x)
    return jnp.where(x >= 0, x, jnp.zeros_like(x))


def relu_derivative(x: Array) -> Array:
    """ReLU': ``0`` for ``x < 0`` and ``1`` for ``x >= 0`` (the thesis sets f'(0) = 1)."""
    x = jnp.asarray(x)
    return jnp.where(x >= 0, jnp.ones_like(x), jnp.zeros_like(x))


def _neg_abs(x: Array) -> Array:
    """``-|x|`` written with a branch so that its derivative at 0 is -1 (not ``sign(0) = 0``)."""
    return jnp.where(x >= 0, -x, x)


def sigmoid(x: Array) -> Array:
    """Logistic sigmoid ``1 / (1 + e^{-x})``, stable for any ``x`` (elementwise, any shape).

    With ``e = e^{-|x|} <= 1``: ``x >= 0`` gives ``1 / (1 + e)`` and ``x < 0`` gives
    ``e / (1 + e)`` (the same function multiplied through by ``e^{x}``).
    """
    x = jnp.asarray(x)
    e = jnp.exp(_neg_abs(x))
    return jnp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def log_sigmoid(x: Array) -> Array:
    """``log sigmoid(x)``, finite for any ``x``: ``-log(1 + e^{-x})`` for ``x >= 0`` and
    ``x - log(1 + e^{x})`` for ``x < 0`` (so its autodiff is ``sigmoid(-x)`` everywhere, 0 included)."""
    x = jnp.asarray(x)
    e = jnp.exp(_neg_abs(x))
    return jnp.where(x >= 0, -jnp.log1p(e), x - jnp.log1p(e))


def sigmoid_derivative(x: Array) -> Array:
    """Thesis form ``e^{-x} / (1 + e^{-x})^2`` (= sigma(x)(1 - sigma(x))), evaluated at ``|x|``.

    The derivative is even, so using ``|x|`` changes nothing but avoids ``inf / inf``.
    """
    x = jnp.asarray(x)
    e = jnp.exp(_neg_abs(x))
    return e / (1.0 + e) ** 2


def tanh(x: Array) -> Array:
    """Hyperbolic tangent, the thesis's ``2 / (1 + e^{-2x}) - 1`` (elementwise, any shape).

    Evaluated with ``jnp.tanh``: the same function, but accurate near 0 where the thesis's
    form loses digits to the cancellation ``2/(1+e^{-2x}) - 1``.
    """
    return jnp.tanh(jnp.asarray(x))


def tanh_thesis_form(x: Array) -> Array:
    """The thesis's literal ``2 / (1 + e^{-2x}) - 1`` = ``2 sigmoid(2x) - 1`` (for comparison)."""
    return 2.0 * sigmoid(2.0 * jnp.asarray(x)) - 1.0


def tanh_derivative(x: Array) -> Array:
    """Thesis form ``4 e^{-2x} / (1 + e^{-2x})^2`` (= 1 - tanh^2 x), evaluated at ``|x|``."""
    x = jnp.asarray(x)
    e = jnp.exp(2.0 * _neg_abs(x))
    return 4.0 * e / (1.0 + e) ** 2


def softmax(x: Array, axis: int = -1) -> Array:
    """Softmax ``e^{x_j} / sum_k e^{x_k}`` over ``axis``; shape ``[..., n] -> [..., n]``.

    The maximum is subtracted first (the result is unchanged, ``e^{x}`` never overflows).
    """
    x = jnp.asarray(x)
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    e = jnp.exp(shifted)
    return e / jnp.sum(e, axis=axis, keepdims=True)


def log_softmax(x: Array, axis: int = -1) -> Array:
    """``log softmax(x)`` over ``axis`` as ``(x - max) - log sum e^{x - max}``; shape kept."""
    x = jnp.asarray(x)
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def softmax_derivative(x: Array) -> Array:
    """The thesis's softmax derivative ``(e^{x_j} S - e^{2x_j}) / S^2 = s_j (1 - s_j)``.

    Shape ``[..., n] -> [..., n]``: the diagonal ``d s_j / d x_j`` of :func:`softmax_jacobian`
    (the thesis's formula ignores the off-diagonal terms ``-s_i s_j``).
    """
    s = softmax(x)
    return s * (1.0 - s)


def softmax_jacobian(x: Array) -> Array:
    """Full softmax Jacobian ``J[..., i, j] = d s_i / d x_j = s_i (delta_ij - s_j)``.

    Shape ``[..., n] -> [..., n, n]``; equals ``diag(s) - s s^T`` for each leading index.
    """
    s = softmax(x)
    return jnp.einsum("...i,ij->...ij", s, jnp.eye(s.shape[-1], dtype=s.dtype)) - (
        s[..., :, None] * s[..., None, :]
    )


def step(x: Array, k: float = 0.0) -> Array:
    """The perceptron's step ``f_k`` (eq. 2.1.2): ``0`` if ``x <= k``, ``1`` if ``x > k``."""
    x = jnp.asarray(x)
    return jnp.where(x > k, jnp.ones_like(x), jnp.zeros_like(x))


def step_derivative(x: Array, k: float = 0.0) -> Array:
    """Derivative of ``f_k``: 0 everywhere (at ``x = k`` it does not exist; 0 is returned)."""
    return jnp.zeros_like(jnp.asarray(x))


def identity(x: Array) -> Array:
    """``f(x) = x`` (a linear output layer)."""
    return jnp.asarray(x)


def identity_derivative(x: Array) -> Array:
    """``f'(x) = 1``."""
    return jnp.ones_like(jnp.asarray(x))


class Activation(NamedTuple):
    """An activation and its closed-form derivative.

    ``elementwise`` is False for softmax, whose derivative is a Jacobian (use
    :func:`softmax_jacobian`; ``derivative`` then holds the thesis's diagonal).
    """

    fn: Callable[[Array], Array]
    derivative: Callable[[Array], Array]
    elementwise: bool = True


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(relu, relu_derivative),
    "sigmoid": Activation(sigmoid, sigmoid_derivative),
    "tanh": Activation(tanh, tanh_derivative),
    "softmax": Activation(softmax, softmax_derivative, elementwise=False),
    "step": Activation(step, step_derivative),
    "linear": Activation(identity, identity_derivative),
}


def get_activation(name: str | None) -> Activation:
    """The :class:`Activation` called ``name`` (``None`` means ``"linear"``)."""
    key = "linear" if name is None else str(name).lower()
    if key not in ACTIVATIONS:
        raise NnjaxError(
            f"Unknown activation {name!r}; choose one of: {', '.join(sorted(ACTIVATIONS))}."
        )
    return ACTIVATIONS[key]
