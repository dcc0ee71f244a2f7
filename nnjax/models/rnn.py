"""Recurrent cells (simple RNN, LSTM, GRU) and a layer that runs one over a sequence.

Thesis section 2.4: a recurrent cell reads the input ``x_t`` and its previous state
``h_{t-1}`` and produces ``h_t``; the simple cell is ``h_t = tanh(W_hx x_t + W_hh h_{t-1} + b)``,
LSTM and GRU add gates that decide what to keep and what to forget.

Design, for speed and for exact agreement with PyTorch:

* Every cell owns two dense maps with the gates fused side by side: ``ih`` (input ->
  ``G * features``, with the bias) and ``hh`` (state -> ``G * features``; it has a bias
  only in the GRU, whose candidate gate needs the recurrent bias *inside* the reset gate).
  The gate order is PyTorch's: LSTM ``i, f, g, o``; GRU ``r, z, n``.
* :class:`Recurrent` applies ``ih`` to all timesteps at once (one ``[B*T, D] x [D, G*H]``
  matmul, outside the loop) and then runs only the recurrent part, ``h @ W_hh`` plus the
  gate nonlinearities, inside one compiled ``nn.scan`` loop (optionally unrolled).
* Padded steps (``mask`` / ``lengths``) leave the state unchanged and output zeros, so the
  last state of a right-padded sequence is the state after its last real step (PyTorch's
  packed-sequence semantics).
* Initialisation follows Keras (the thesis's library): Glorot-uniform input kernel,
  orthogonal recurrent kernel, zero biases except an LSTM forget-gate bias of 1.

:func:`params_from_torch` converts a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` state dict into
the parameters of :class:`Recurrent` (PyTorch's two biases are summed where they commute).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nnjax.errors import NnjaxError

Array = jax.Array
Carry = Any

CELL_NAMES = ("rnn", "lstm", "gru")


def _lstm_bias_init(features: int):
    """Zeros with the forget-gate block (second of ``i, f, g, o``) set to 1 (Keras ``unit_forget_bias``)."""

    def init(key, shape, dtype=jnp.float32):
        del key
        bias = jnp.zeros(shape, dtype)
        return bias.at[features : 2 * features].set(1.0)

    return init


class RecurrentCell(nn.Module):
    """Base class: fused input map ``ih`` and recurrent map ``hh`` with ``gates * features`` outputs.

    Subclasses set ``gates`` and implement :meth:`step`. Call forms:

    * ``cell(carry, x_t) -> (carry, h_t)``: one step from raw inputs ``x_t`` ``[B, D]``;
    * ``cell.project(x)``: the input map for any leading shape, ``[..., D] -> [..., G*H]``;
    * ``cell.step(carry, xp_t)``: one step from already projected inputs ``[B, G*H]``.
    """

    features: int
    gates: ClassVar[int] = 1
    recurrent_bias: ClassVar[bool] = False

    def setup(self) -> None:
        width = self.gates * self.features
        self.ih = nn.Dense(width, kernel_init=nn.initializers.glorot_uniform(), bias_init=self._bias_init())
        self.hh = nn.Dense(
            width,
            use_bias=self.recurrent_bias,
            kernel_init=nn.initializers.orthogonal(),
            bias_init=nn.initializers.zeros,
        )

    def _bias_init(self):
        return nn.initializers.zeros

    def project(self, x: Array) -> Array:
        """Input projection ``x @ W_ih + b``: ``[..., D] -> [..., gates * features]``."""
        return self.ih(x)

    def step(self, carry: Carry, xp: Array) -> tuple[Carry, Array]:
        raise NotImplementedError

    def initialize_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Carry:
        """The zero state for ``batch_size`` sequences."""
        return jnp.zeros((batch_size, self.features), dtype)

    def __call__(self, carry: Carry, x: Array) -> tuple[Carry, Array]:
        """One timestep from raw inputs ``x`` ``[B, D]``; returns ``(new_carry, h [B, features])``."""
        return self.step(carry, self.project(x))


class SimpleRNNCell(RecurrentCell):
    """``h_t = act(x_t W_ih + b + h_{t-1} W_hh)`` (PyTorch ``nn.RNN``; carry is ``h`` ``[B, H]``)."""

    activation: str = "tanh"
    gates: ClassVar[int] = 1

    def step(self, carry: Array, xp: Array) -> tuple[Array, Array]:
        pre = xp + self.hh(carry)
        h = jnp.tanh(pre) if self.activation == "tanh" else jax.nn.relu(pre)
        return h, h


class LSTMCell(RecurrentCell):
    """Long short-term memory, PyTorch gate order ``i, f, g, o``; carry is ``(h, c)``, each ``[B, H]``.

    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)`` with ``i, f, o`` sigmoid and ``g`` tanh.
    """

    gates: ClassVar[int] = 4

    def _bias_init(self):
        return _lstm_bias_init(self.features)

    def initialize_carry(self, batch_size: int, dtype: Any = jnp.float32) -> tuple[Array, Array]:
        zeros = jnp.zeros((batch_size, self.features), dtype)
        return zeros, zeros

    def step(self, carry: tuple[Array, Array], xp: Array) -> tuple[tuple[Array, Array], Array]:
        h, c = carry
        z = xp + self.hh(h)
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h


class GRUCell(RecurrentCell):
    """Gated recurrent unit, PyTorch convention (gate order ``r, z, n``; carry ``h`` ``[B, H]``).

    ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, ``h_t = (1 - z) * n + z * h_{t-1}``.
    """

    gates: ClassVar[int] = 3
    recurrent_bias: ClassVar[bool] = True

    def step(self, carry: Array, xp: Array) -> tuple[Array, Array]:
        hp = self.hh(carry)
        xr, xz, xn = jnp.split(xp, 3, axis=-1)
        hr, hz, hn = jnp.split(hp, 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = (1.0 - z) * n + z * carry
        return h, h


def make_cell(name: str, features: int) -> RecurrentCell:
    """The cell called ``name`` (``"rnn"``, ``"lstm"`` or ``"gru"``) with ``features`` units."""
    cells = {"rnn": SimpleRNNCell, "lstm": LSTMCell, "gru": GRUCell}
    if name not in cells:
        raise NnjaxError(f"Unknown recurrent cell {name!r}; choose one of: {', '.join(CELL_NAMES)}.")
    if int(features) < 1:
        raise NnjaxError(f"A recurrent cell needs at least 1 unit, got {features}; pass a positive size.")
    return cells[name](features=int(features))


def _scan_body(cell: RecurrentCell, carry: Carry, inputs: tuple[Array, Array | None], *, outputs: bool):
    """One timestep inside the scan; masked steps keep the carry and output zeros."""
    xp_t, m_t = inputs
    new_carry, h = cell.step(carry, xp_t)
    if m_t is not None:
        keep = m_t[:, None]
        new_carry = jax.tree_util.tree_map(lambda new, old: jnp.where(keep, new, old), new_carry, carry)
        h = jnp.where(keep, h, jnp.zeros_like(h))
    return new_carry, (h if outputs else None)


class Recurrent(nn.Module):
    """Runs ``cell`` over a batch of sequences in one compiled loop.

    Attributes:
      cell: an unbound :class:`RecurrentCell` (e.g. ``LSTMCell(50)``); its parameters live under
        ``cell/ih`` and ``cell/hh``.
      return_sequences: return every step's output ``[B, T, H]`` instead of the last ``[B, H]``.
      return_carry: also return the final carry (``h`` or ``(h, c)``): ``(outputs, carry)``.
      unroll: timesteps per loop iteration (``lax.scan``'s ``unroll``); larger trades compile
        time for fewer loop iterations.
    """

    cell: RecurrentCell
    return_sequences: bool = False
    return_carry: bool = False
    unroll: int = 1

    @nn.compact
    def __call__(
        self,
        x: Array,
        *,
        mask: Array | None = None,
        lengths: Array | None = None,
        initial_carry: Carry | None = None,
    ):
        """Apply the layer.

        Args:
          x: inputs ``[B, T, D]`` (batch-major).
          mask: optional ``[B, T]``, true/1 on real steps, false/0 on padding.
          lengths: optional ``[B]`` integer lengths (right padding); an alternative to ``mask``.
          initial_carry: optional starting state; zeros by default.

        Returns:
          ``[B, H]`` (the output after the last real step) or ``[B, T, H]`` with
          ``return_sequences``; with ``return_carry``, ``(outputs, final_carry)``.
        """
        if x.ndim != 3:
            raise NnjaxError(
                f"A recurrent layer takes inputs shaped [batch, time, features], got shape {tuple(x.shape)}; "
                "add the missing axis (e.g. x[..., None] for one feature)."
            )
        batch, steps = x.shape[0], x.shape[1]
        if lengths is not None:
            if mask is not None:
                raise NnjaxError("Pass either mask or lengths to the recurrent layer, not both.")
            mask = jnp.arange(steps)[None, :] < jnp.asarray(lengths)[:, None]
        if mask is not None:
            if tuple(mask.shape) != (batch, steps):
                raise NnjaxError(
                    f"The mask has shape {tuple(mask.shape)} but the inputs need [batch, time] = "
                    f"{(batch, steps)}; give one flag per timestep."
                )
            mask = jnp.swapaxes(jnp.asarray(mask).astype(bool), 0, 1)  # [T, B]
        xp = jnp.swapaxes(self.cell.project(x), 0, 1)  # [T, B, G*H], one matmul for all steps
        carry = self.cell.initialize_carry(batch, xp.dtype) if initial_carry is None else initial_carry

        def body(cell, carry, inputs):
            return _scan_body(cell, carry, inputs, outputs=self.return_sequences)

        scan = nn.scan(
            body,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=0,
            out_axes=0,
            unroll=max(1, min(int(self.unroll), steps)),
        )
        carry, ys = scan(self.cell, carry, (xp, mask))
        if self.return_sequences:
            out = jnp.swapaxes(ys, 0, 1)
        else:
            out = carry[0] if isinstance(carry, tuple) else carry
        return (out, carry) if self.return_carry else out


class SequenceRegressor(nn.Module):
    """The thesis's forecaster: a recurrent layer (last state) followed by ``Dense(outputs)``.

    ``[B, T, D] -> [B, outputs]``. ``cell`` is ``"rnn"``, ``"lstm"`` or ``"gru"``.
    """

    cell: str = "lstm"
    features: int = 50
    outputs: int = 1
    unroll: int = 1

    @nn.compact
    def __call__(self, x: Array, *, mask: Array | None = None) -> Array:
        h = Recurrent(make_cell(self.cell, self.features), unroll=self.unroll, name="rnn")(x, mask=mask)
        return nn.Dense(self.outputs, kernel_init=nn.initializers.glorot_uniform(), name="head")(h)


# ----------------------------------------------------------------------------- PyTorch weights


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def params_from_torch(state_dict: Mapping[str, Any], cell: str, layer: int = 0) -> dict:
    """Parameters for :class:`Recurrent` from a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` state dict.

    Args:
      state_dict: ``module.state_dict()`` (tensors or arrays), keys ``weight_ih_l{layer}``,
        ``weight_hh_l{layer}`` and, when the module has biases, ``bias_ih_l{layer}``, ``bias_hh_l{layer}``.
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"`` (must match the PyTorch module).
      layer: which layer of a stacked PyTorch module to convert.

    Returns:
      ``{"cell": {"ih": {"kernel": [D, G*H], "bias": [G*H]}, "hh": {"kernel": [H, G*H], ...}}}``;
      PyTorch's two biases are summed for RNN/LSTM and kept apart for the GRU.
    """
    gates = {"rnn": 1, "lstm": 4, "gru": 3}
    if cell not in gates:
        raise NnjaxError(f"Unknown recurrent cell {cell!r}; choose one of: {', '.join(CELL_NAMES)}.")
    suffix = f"_l{layer}"
    w_ih_key, w_hh_key = f"weight_ih{suffix}", f"weight_hh{suffix}"
    for key in (w_ih_key, w_hh_key):
        if key not in state_dict:
            raise NnjaxError(
                f"The PyTorch state dict has no {key!r} (keys: {', '.join(sorted(state_dict))}); "
                "pass the state dict of an nn.RNN, nn.LSTM or nn.GRU and a layer index it has."
            )
    if f"weight_hr{suffix}" in state_dict:
        raise NnjaxError("LSTMs with proj_size are not supported; convert an nn.LSTM built without proj_size.")
    w_ih, w_hh = _to_numpy(state_dict[w_ih_key]), _to_numpy(state_dict[w_hh_key])
    width, hidden = w_hh.shape
    if width != gates[cell] * hidden or w_ih.shape[0] != width:
        raise NnjaxError(
            f"weight_hh{suffix} has shape {w_hh.shape}, which is not a {cell.upper()} layer "
            f"({gates[cell]} gates x hidden); pass cell= matching the PyTorch module."
        )
    zeros = np.zeros((width,), np.float32)
    b_ih = _to_numpy(state_dict.get(f"bias_ih{suffix}", zeros))
    b_hh = _to_numpy(state_dict.get(f"bias_hh{suffix}", zeros))
    if cell == "gru":
        return {
            "cell": {
                "ih": {"kernel": w_ih.T.copy(), "bias": b_ih},
                "hh": {"kernel": w_hh.T.copy(), "bias": b_hh},
            }
        }
    return {"cell": {"ih": {"kernel": w_ih.T.copy(), "bias": b_ih + b_hh}, "hh": {"kernel": w_hh.T.copy()}}}
