"""The multilayer perceptron of thesis section 2.2 as a pure ``flax.linen`` module."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from nnjax.nn.activations import get_activation


class MLP(nn.Module):
    """Fully connected layers ``z^{l+1} = a^l W^l + b^l``, ``a^{l+1} = f(z^{l+1})``.

    Attributes:
      features: widths of every layer after the input, the last one being the output
        (e.g. ``(16, 16, 1)``: two hidden layers of 16 and one output). ``(n_out,)``
        alone is a single-layer (perceptron-style, linear) model.
      activation: hidden activation name (``relu``, ``sigmoid``, ``tanh``, ``linear``, ...).
      output_activation: activation of the last layer, or ``None`` for raw outputs
        (logits); ``"softmax"`` works over the last axis.

    Parameters are ``{"params": {"dense_0": {"kernel": [n_in, n_1], "bias": [n_1]}, ...}}``
    (flax's row-vector convention: ``kernel`` is the thesis's ``(W^l)^T``).
    Input ``[B, n_in]`` -> output ``[B, features[-1]]``.
    """

    features: Sequence[int]
    activation: str = "relu"
    output_activation: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = get_activation(self.activation).fn
        for i, width in enumerate(self.features):
            x = nn.Dense(int(width), name=f"dense_{i}")(x)
            if i < len(self.features) - 1:
                x = hidden(x)
        if self.output_activation is not None:
            x = get_activation(self.output_activation).fn(x)
        return x
