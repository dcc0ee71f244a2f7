"""Backpropagation written out by hand, as thesis appendix C derives it, for batches.

Works directly on the flax params of :class:`nnjax.models.mlp.MLP` (layers ``dense_0``,
``dense_1``, ...; ``kernel [n_{l-1}, n_l]`` is the thesis's ``(W^l)^T``, so batches are
rows). With ``a^0 = x``::

    forward:   z^l = a^{l-1} W + b          (C.2)      a^l = f(z^l)            (C.3)
    output:    delta^L = dC/dz^L                        (C.7; per loss, below)
    recursion: delta^l = f'(z^l) * (delta^{l+1} W^T)    (C.9, W = kernel of layer l+1)
    weights:   dC/d[W; b] = [a^{l-1}, 1]^T delta^l       (C.6; the bias is a weight whose
                                                          input is always 1)

The batch loss is ``sum_b w_b C_b`` with per-example weights ``w_b`` (default ``1/B``,
the mean), so every row of ``delta`` carries its example's ``w_b`` and ``[a, 1]^T delta``
sums the per-example gradients (thesis 3.3.1, "accumulation of gradients").

Losses and their output deltas (per example ``b``, ``n = n_L`` outputs):

* ``"mse"``: ``C = mean_j (a^L_j - y_j)^2``, ``dC/da^L = 2 (a^L - y) / n``;
  ``delta^L = f'(z^L) * dC/da^L`` for an elementwise output activation, and
  ``J_softmax(z^L)^T dC/da^L`` for ``output_activation="softmax"``.
* ``"cross_entropy"``: softmax cross-entropy of the logits ``z^L`` (output activation
  ``None`` or ``"softmax"`` -- softmax is applied once, by the loss), labels one-hot
  ``[B, C]`` or integer ``[B]``: ``delta^L = softmax(z^L) - y``.
* ``"binary_cross_entropy"``: sigmoid cross-entropy of the logits ``z^L`` (output
  activation ``None`` or ``"sigmoid"``), averaged over outputs: ``delta^L = (sigmoid(z^L) - y) / n``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nnjax.errors import NnjaxError
from nnjax.nn import losses as L
from nnjax.nn.activations import get_activation, sigmoid, softmax, softmax_jacobian

Array = jax.Array
PyTree = Any
LOSSES = ("mse", "cross_entropy", "binary_cross_entropy")
_LAYER = re.compile(r"dense_(\d+)")


def _layers(params: PyTree) -> tuple[list[tuple[Array, Array]], bool]:
    """``[(kernel, bias), ...]`` in layer order, and whether ``params`` had a ``"params"`` level."""
    wrapped = "params" in params
    inner = params["params"] if wrapped else params
    names = sorted(inner, key=lambda k: int(_LAYER.fullmatch(k).group(1)) if _LAYER.fullmatch(k) else -1)
    if not names or any(_LAYER.fullmatch(k) is None for k in names):
        raise NnjaxError(
            f"backprop expects the params of nnjax.models.mlp.MLP (layers dense_0, dense_1, ...), "
            f"got keys {sorted(inner)}."
        )
    return [(inner[k]["kernel"], inner[k]["bias"]) for k in names], wrapped


def _like(params: PyTree, layer_grads: list[tuple[Array, Array]], wrapped: bool) -> PyTree:
    """Gradients in exactly the container structure of ``params``."""
    inner = {f"dense_{i}": {"kernel": gk, "bias": gb} for i, (gk, gb) in enumerate(layer_grads)}
    tree = {"params": inner} if wrapped else inner
    return jax.tree_util.tree_unflatten(jax.tree.structure(params), jax.tree.leaves(tree))


def forward(
    params: PyTree, x: Array, activation: str = "relu", output_activation: str | None = None
) -> tuple[list[Array], list[Array]]:
    """Forward pass keeping every pre-activation and activation.

    Args:
      params: MLP params (with or without the outer ``"params"`` key).
      x: inputs ``[B, n_0]``.

    Returns:
      ``(zs, acts)``: ``zs[l-1] = z^l`` ``[B, n_l]`` for ``l = 1..L`` and ``acts[l] = a^l``
      for ``l = 0..L`` (``acts[0] = x``, ``acts[L]`` the network output, equal to ``MLP.apply``).
    """
    layers, _ = _layers(params)
    hidden = get_activation(activation).fn
    out = get_activation(output_activation).fn
    acts, zs = [jnp.asarray(x)], []
    for i, (kernel, bias) in enumerate(layers):
        z = acts[-1] @ kernel + bias
        zs.append(z)
        acts.append(out(z) if i == len(layers) - 1 else hidden(z))
    return zs, acts


def _one_hot_targets(y: Array, n: int, dtype: Any) -> Array:
    y = jnp.asarray(y)
    if y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer):
        return jax.nn.one_hot(y, n, dtype=dtype)
    return y.astype(dtype)


def per_example_loss(z_out: Array, a_out: Array, y: Array, loss: str) -> Array:
    """The per-example loss ``[B]`` from the last layer's ``z^L`` and ``a^L``."""
    if loss == "mse":
        return L.mse(a_out, jnp.asarray(y, a_out.dtype).reshape(a_out.shape))
    if loss == "cross_entropy":
        return L.softmax_cross_entropy(z_out, _one_hot_targets(y, z_out.shape[-1], z_out.dtype))
    return L.binary_cross_entropy_with_logits(z_out, jnp.asarray(y, z_out.dtype).reshape(z_out.shape))


def output_delta(z_out: Array, a_out: Array, y: Array, loss: str, output_activation: str | None) -> Array:
    """``delta^L = dC_b / dz^L`` per example, ``[B, n_L]`` (unweighted)."""
    n = z_out.shape[-1]
    if loss == "mse":
        dc_da = 2.0 * (a_out - jnp.asarray(y, a_out.dtype).reshape(a_out.shape)) / n
        act = get_activation(output_activation)
        if act.elementwise:
            return act.derivative(z_out) * dc_da
        return jnp.einsum("bij,bi->bj", softmax_jacobian(z_out), dc_da)  # J^T dC/da
    if loss == "cross_entropy":
        return softmax(z_out) - _one_hot_targets(y, n, z_out.dtype)
    return (sigmoid(z_out) - jnp.asarray(y, z_out.dtype).reshape(z_out.shape)) / n


def _check(loss: str, activation: str, output_activation: str | None) -> None:
    if loss not in LOSSES:
        raise NnjaxError(f"Unknown loss {loss!r} for backprop; choose one of: {', '.join(LOSSES)}.")
    if not get_activation(activation).elementwise:
        raise NnjaxError(f"Hidden activation {activation!r} is not elementwise; use relu, sigmoid or tanh.")
    allowed = {"cross_entropy": (None, "softmax"), "binary_cross_entropy": (None, "sigmoid")}
    if loss in allowed and output_activation not in allowed[loss]:
        raise NnjaxError(
            f"Loss {loss!r} applies its own output function to the logits; build the MLP with "
            f"output_activation None or {allowed[loss][1]!r}, not {output_activation!r}."
        )


def backprop(
    params: PyTree,
    x: Array,
    y: Array,
    *,
    activation: str = "relu",
    output_activation: str | None = None,
    loss: str = "mse",
    weights: Array | None = None,
) -> tuple[PyTree, Array]:
    """Gradients of ``sum_b w_b C_b`` w.r.t. every MLP parameter, by the delta recursion.

    Args:
      params: MLP params (the flax dict, with or without the outer ``"params"`` key).
      x: inputs ``[B, n_0]``.
      y: targets ``[B, n_L]`` (mse, binary_cross_entropy), or one-hot ``[B, C]`` /
        integer ``[B]`` labels (cross_entropy).
      activation, output_activation: as in the MLP.
      loss: ``"mse"``, ``"cross_entropy"`` or ``"binary_cross_entropy"``.
      weights: per-example weights ``[B]``; default ``1/B`` (gradient of the batch mean).

    Returns:
      ``(grads, per_example_loss)``: grads with the structure of ``params``; losses ``[B]``.
    """
    _check(loss, activation, output_activation)
    layers, wrapped = _layers(params)
    zs, acts = forward(params, x, activation, output_activation)
    batch = acts[0].shape[0]
    dtype = zs[-1].dtype
    w = jnp.full((batch,), 1.0 / batch, dtype) if weights is None else jnp.asarray(weights, dtype)
    f_prime = get_activation(activation).derivative

    delta = output_delta(zs[-1], acts[-1], y, loss, output_activation) * w[:, None]
    grads: list[tuple[Array, Array]] = [None] * len(layers)  # type: ignore[list-item]
    for l in range(len(layers) - 1, -1, -1):  # noqa: E741 (the thesis's layer index)
        a_prev = acts[l]
        augmented = jnp.concatenate([a_prev, jnp.ones((batch, 1), a_prev.dtype)], axis=1)  # [a, 1]
        g_aug = augmented.T @ delta  # [n_{l-1} + 1, n_l]
        grads[l] = (g_aug[:-1], g_aug[-1])
        if l > 0:
            delta = f_prime(zs[l - 1]) * (delta @ layers[l][0].T)
    return _like(params, grads, wrapped), per_example_loss(zs[-1], acts[-1], y, loss)


def make_backprop_loss(
    activation: str = "relu", output_activation: str | None = None, loss: str = "mse"
) -> Callable[[PyTree, Array, Array], Array]:
    """A per-example loss ``fn(params, x, y) -> [B]`` whose gradient *is* the hand backprop.

    The function is a ``jax.custom_vjp``: its forward pass is :func:`forward`, and its
    backward pass runs :func:`backprop` with the incoming cotangent ``[B]`` as the
    per-example weights. So ``jax.grad(lambda p: mean(fn(p, x, y)))`` -- and therefore any
    optax train step, such as ``nnjax.train.step.make_train_step`` -- trains with the
    hand-written gradients instead of autodiff's.
    """
    _check(loss, activation, output_activation)

    @jax.custom_vjp
    def fn(params: PyTree, x: Array, y: Array) -> Array:
        zs, acts = forward(params, x, activation, output_activation)
        return per_example_loss(zs[-1], acts[-1], y, loss)

    def fwd(params: PyTree, x: Array, y: Array) -> tuple[Array, tuple]:
        return fn(params, x, y), (params, x, y)

    def bwd(res: tuple, cotangent: Array) -> tuple:
        params, x, y = res
        grads, _ = backprop(
            params, x, y, activation=activation, output_activation=output_activation, loss=loss,
            weights=cotangent,
        )
        return grads, None, None

    fn.defvjp(fwd, bwd)
    return fn
