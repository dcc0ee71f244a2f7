"""The simple perceptron of thesis section 2.1 / 4.1, trained one point at a time.

The model is ``z = w · x + w0`` with the sign activation ``f(z) = 1 if z > 0 else -1``
(thesis eq. 4.1.1). Two update rules, both ``w <- w + η (y - ŷ) x``, ``w0 <- w0 + η (y - ŷ)``:

* ``"step"`` — ŷ is the perceptron's output ``f(z)`` (eq. 2.1.1: Rosenblatt's rule, which
  stops changing once every point is on the right side of the line);
* ``"linear"`` — ŷ is the linear output ``z``, as the thesis's annex F code computes it
  (the Widrow–Hoff / LMS rule: it regresses the ±1 labels, so its line is the
  least-squares fit, biased when the classes are unbalanced).

Training is one ``lax.scan`` over the points of an epoch inside one over epochs, so a
whole run is a single compiled call.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

Rule = Literal["step", "linear"]


class PerceptronParams(NamedTuple):
    """``w``: weights [D]; ``w0``: bias []."""

    w: jax.Array
    w0: jax.Array


def init(key: jax.Array, n_inputs: int) -> PerceptronParams:
    """Standard-normal weights and bias, as the thesis's ``np.random.randn``."""
    k_w, k_b = jax.random.split(key)
    return PerceptronParams(jax.random.normal(k_w, (n_inputs,)), jax.random.normal(k_b, ()))


def linear(params: PerceptronParams, x: jax.Array) -> jax.Array:
    """``z = x · w + w0`` for points ``x`` [N, D] -> [N] (or one point [D] -> [])."""
    return x @ params.w + params.w0


def predict(params: PerceptronParams, x: jax.Array) -> jax.Array:
    """The sign activation of eq. 4.1.1: +1 where ``z > 0``, else -1."""
    return jnp.where(linear(params, x) > 0, 1.0, -1.0)


def update(params: PerceptronParams, x: jax.Array, y: jax.Array, lr: float, rule: Rule) -> PerceptronParams:
    """One point's update ``w += lr (y - ŷ) x``, ``w0 += lr (y - ŷ)``; ``x`` [D], ``y`` in {-1, 1}."""
    y_hat = linear(params, x) if rule == "linear" else predict(params, x)
    error = y - y_hat
    return PerceptronParams(params.w + lr * error * x, params.w0 + lr * error)


def train(
    params: PerceptronParams, x: jax.Array, y: jax.Array, *, lr: float, epochs: int, rule: Rule = "step"
) -> tuple[PerceptronParams, PerceptronParams, jax.Array]:
    """Run ``epochs`` passes over the points in order.

    Returns ``(final, per_epoch, errors)``: the final params, the params after each epoch
    (fields stacked over a leading [epochs] axis, for the animation) and the mean absolute
    error ``|y - z|`` of each epoch [epochs], the thesis's logged loss.
    """

    def one_point(p, xy):
        xi, yi = xy
        return update(p, xi, yi, lr, rule), jnp.abs(yi - linear(p, xi))

    def one_epoch(p, _):
        p, errors = jax.lax.scan(one_point, p, (x, y))
        return p, (p, errors.mean())

    run = jax.jit(lambda p: jax.lax.scan(one_epoch, p, None, length=epochs))
    final, (per_epoch, errors) = run(params)
    return final, per_epoch, errors


def line_of(params: PerceptronParams) -> tuple[float, float]:
    """Slope and intercept of the decision line ``w1 x + w2 y + w0 = 0`` solved for y."""
    w1, w2 = (float(v) for v in params.w)
    w0 = float(params.w0)
    if w2 == 0:
        return float("inf"), float("nan")
    return -w1 / w2, -w0 / w2
