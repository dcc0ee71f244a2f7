"""Recurrent cells (simple RNN, LSTM, GRU) and a layer that runs one over a sequence.

Thesis section 2.4: a recurrent cell reads the input ``x_t`` and its previous state
``h_{t-1}`` and produces ``h_t``; the simple cell is ``h_t = tanh(W_hx x_t + W_hh h_{t-1} + b)``,
LSTM and GRU add gates that decide what to keep and what to forget.

Design, for speed and for exact agreement with PyTorch:

* Every cell owns two affine maps with the gates fused side by side: ``ih`` (input ->
  ``G * features``, with the bias) and ``hh`` (state -> ``G * features``; it has a bias
  only in the GRU, whose candidate gate needs the recurrent bias *inside* the reset gate).
  The gate order is PyTorch's: LSTM ``i, f, g, o``; GRU ``r, z, n``.
* :class:`Recurrent` applies ``ih`` to all timesteps at once (one ``[B*T, D] x [D, G*H]``
  matmul, outside the loop) and runs only the recurrent matmul and the gate arithmetic
  inside one compiled ``lax.scan`` loop. For inputs of at most ``SMALL_INPUT`` features
  (the thesis's price series has one) the projection is a few multiply-adds fused into the
  gate arithmetic inside the loop instead: that avoids a ``[T, B, G*H]`` buffer (200 times
  the input for LSTM(50) on one feature) whose page faults dominate long sequences on CPU.
* The default ``impl="fused"`` has a hand-written backward pass (backpropagation through
  time): the forward loop keeps each step's gate activations, the backward loop does one
  matmul per step, and the weight gradient is one matmul over all timesteps afterwards.
  ``impl="autodiff"`` lets JAX transpose the scan instead; both give the same numbers.
* Sigmoids are computed as ``(1 + tanh(x / 2)) / 2``, so the four LSTM gates are one
  ``tanh`` over a contiguous ``[B, 4H]`` block: XLA:CPU runs that several times faster
  than the ``exp`` + divide it emits for ``jax.nn.sigmoid``.
* Padded steps (``mask`` / ``lengths``) leave the state unchanged and output zeros, so the
  last state of a right-padded sequence is the state after its last real step (PyTorch's
  packed-sequence semantics).
* Initialisation follows Keras (the thesis's library): Glorot-uniform input kernel,
  orthogonal recurrent kernel, zero biases except an LSTM forget-gate bias of 1.

:func:`params_from_torch` converts a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` state dict into
the parameters of :class:`Recurrent` (PyTorch's two biases are summed where they commute).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nnjax.errors import NnjaxError

Array = jax.Array
Carry = Any

CELL_NAMES = ("rnn", "lstm", "gru")


def _lstm_bias_init(features: int) -> Callable:
    """Zeros with the forget-gate block (second of ``i, f, g, o``) set to 1 (Keras ``unit_forget_bias``)."""

    def init(key, shape, dtype=jnp.float32):
        del key
        bias = jnp.zeros(shape, dtype)
        return bias.at[features : 2 * features].set(1.0)

    return init


class _Affine(nn.Module):
    """The parameters of one fused affine map: ``kernel [in, features]`` and optional ``bias``."""

    features: int
    use_bias: bool
    kernel_init: Callable
    bias_init: Callable

    @nn.compact
    def __call__(self, in_features: int) -> tuple[Array, Array | None]:
        kernel = self.param("kernel", self.kernel_init, (in_features, self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        return kernel, bias


# ----------------------------------------------------------------------------- cell arithmetic
#
# Each cell is two plain functions of the projected input ``xp = x_t W_ih + b_ih`` and the
# projected state ``hp = h_{t-1} W_hh (+ b_hh)``, both ``[B, G*H]``:
#   forward(xp, hp, carry) -> (new_carry, h, saved)   saved: what the backward step needs
#   backward(saved, carry, d_new) -> (dxp, dhp or None, d_carry)
# ``d_new`` is the cotangent of the new carry (its ``h`` part includes the output's); ``dhp``
# None means "equal to dxp"; ``d_carry`` excludes the path through ``hp`` (the loop adds
# ``dhp W_hh^T`` itself).


class CellMath(NamedTuple):
    """The arithmetic of one cell type (see the comment above)."""

    forward: Callable
    backward: Callable

    def update(self, xp: Array, hp: Array, carry: Carry) -> tuple[Carry, Array]:
        new, h, _ = self.forward(xp, hp, carry)
        return new, h


def _sigmoid(x: Array) -> Array:
    """``sigmoid(x) = (1 + tanh(x / 2)) / 2`` (one fast ``tanh`` on XLA:CPU, no divide)."""
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


def _rnn_forward(xp, hp, carry, activation="tanh"):
    pre = xp + hp
    h = jnp.tanh(pre) if activation == "tanh" else jax.nn.relu(pre)
    return h, h, h


def _rnn_backward(saved, carry, d_new, activation="tanh"):
    h = saved
    dpre = d_new * (1.0 - h * h) if activation == "tanh" else jnp.where(h > 0, d_new, 0.0)
    return dpre, None, jnp.zeros_like(carry)


@functools.cache
def _lstm_gate_affine(features: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column ``scale, shift`` so that ``tanh(z * scale) * scale + shift`` is the sigmoid on
    the ``i, f, o`` blocks and tanh on the ``g`` block: all four gates in one ``tanh``."""
    scale = np.full((4, features), 0.5, np.float32)
    scale[2] = 1.0
    shift = np.full((4, features), 0.5, np.float32)
    shift[2] = 0.0
    return scale.reshape(-1), shift.reshape(-1)


def _blocks(a: Array, count: int) -> list[Array]:
    width = a.shape[-1] // count
    return [a[..., k * width : (k + 1) * width] for k in range(count)]


def _lstm_forward(xp, hp, carry):
    _, c = carry
    scale, shift = _lstm_gate_affine(c.shape[-1])
    gates = jnp.tanh((xp + hp) * scale) * scale + shift
    i, f, g, o = _blocks(gates, 4)
    c_new = f * c + i * g
    tc = jnp.tanh(c_new)
    h = o * tc
    return (h, c_new), h, (gates, tc)


def _lstm_backward(saved, carry, d_new):
    gates, tc = saved
    h_prev, c_prev = carry
    dh, dc = d_new
    i, f, g, o = _blocks(gates, 4)
    dc = dc + dh * o * (1.0 - tc * tc)
    di = dc * g * i * (1.0 - i)
    df = dc * c_prev * f * (1.0 - f)
    dg = dc * i * (1.0 - g * g)
    do = dh * tc * o * (1.0 - o)
    dz = jnp.concatenate([di, df, dg, do], axis=-1)
    return dz, None, (jnp.zeros_like(h_prev), dc * f)


def _gru_forward(xp, hp, carry):
    features = carry.shape[-1]
    rz = _sigmoid(xp[..., : 2 * features] + hp[..., : 2 * features])  # r and z in one tanh
    r, z = rz[..., :features], rz[..., features:]
    hn = hp[..., 2 * features :]
    n = jnp.tanh(xp[..., 2 * features :] + r * hn)
    h = n + z * (carry - n)
    return h, h, (rz, n, hn)


def _gru_backward(saved, carry, d_new):
    rz, n, hn = saved
    features = carry.shape[-1]
    r, z = rz[..., :features], rz[..., features:]
    dh = d_new
    dn = dh * (1.0 - z) * (1.0 - n * n)
    dr = dn * hn * r * (1.0 - r)
    dz = dh * (carry - n) * z * (1.0 - z)
    dxp = jnp.concatenate([dr, dz, dn], axis=-1)
    dhp = jnp.concatenate([dr, dz, dn * r], axis=-1)
    return dxp, dhp, dh * z


def cell_math(name: str, activation: str = "tanh") -> CellMath:
    """The :class:`CellMath` of ``"rnn"``, ``"lstm"`` or ``"gru"``."""
    if name == "rnn":
        return CellMath(
            functools.partial(_rnn_forward, activation=activation),
            functools.partial(_rnn_backward, activation=activation),
        )
    if name == "lstm":
        return CellMath(_lstm_forward, _lstm_backward)
    if name == "gru":
        return CellMath(_gru_forward, _gru_backward)
    raise NnjaxError(f"Unknown recurrent cell {name!r}; choose one of: {', '.join(CELL_NAMES)}.")


def _hidden(carry: Carry) -> Array:
    """The output state ``h`` of a carry (``h`` itself, or the first of ``(h, c)``)."""
    return carry[0] if isinstance(carry, tuple) else carry


def _with_hidden(carry: Carry, h: Array) -> Carry:
    """``carry`` with its ``h`` part replaced."""
    return (h, *carry[1:]) if isinstance(carry, tuple) else h


# ----------------------------------------------------------------------------- cells as modules


class RecurrentCell(nn.Module):
    """Base class: a fused input map ``ih`` and recurrent map ``hh``, each ``gates * features`` wide.

    Call forms:

    * ``cell(carry, x_t) -> (carry, h_t)``: one step from raw inputs ``x_t`` ``[B, D]``;
    * ``cell.weights(D) -> (w_ih [D, G*H], b_ih [G*H], w_hh [H, G*H], b_hh [G*H] or None)``;
    * ``cell.math()``: the cell's elementwise forward/backward arithmetic (:class:`CellMath`).
    """

    features: int
    kind: ClassVar[str] = "rnn"
    gates: ClassVar[int] = 1
    recurrent_bias: ClassVar[bool] = False

    def setup(self) -> None:
        width = self.gates * self.features
        self.ih = _Affine(width, True, nn.initializers.glorot_uniform(), self._bias_init())
        self.hh = _Affine(width, self.recurrent_bias, nn.initializers.orthogonal(), nn.initializers.zeros)

    def _bias_init(self) -> Callable:
        return nn.initializers.zeros

    def weights(self, in_features: int) -> tuple[Array, Array, Array, Array | None]:
        """``(w_ih, b_ih, w_hh, b_hh)``; ``b_hh`` is None except for the GRU."""
        w_ih, b_ih = self.ih(in_features)
        w_hh, b_hh = self.hh(self.features)
        return w_ih, b_ih, w_hh, b_hh

    def math(self) -> CellMath:
        return cell_math(self.kind)

    def initialize_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Carry:
        """The zero state for ``batch_size`` sequences."""
        return jnp.zeros((batch_size, self.features), dtype)

    def __call__(self, carry: Carry, x: Array) -> tuple[Carry, Array]:
        """One timestep from raw inputs ``x`` ``[B, D]``; returns ``(new_carry, h [B, features])``."""
        w_ih, b_ih, w_hh, b_hh = self.weights(x.shape[-1])
        return self.math().update(x @ w_ih + b_ih, _project_state(carry, w_hh, b_hh), carry)


class SimpleRNNCell(RecurrentCell):
    """``h_t = act(x_t W_ih + b + h_{t-1} W_hh)`` (PyTorch ``nn.RNN``; carry is ``h`` ``[B, H]``).

    ``activation`` is ``"tanh"`` (default) or ``"relu"``.
    """

    activation: str = "tanh"
    kind: ClassVar[str] = "rnn"
    gates: ClassVar[int] = 1

    def math(self) -> CellMath:
        if self.activation not in ("tanh", "relu"):
            raise NnjaxError(f"Unknown RNN activation {self.activation!r}; use 'tanh' or 'relu'.")
        return cell_math("rnn", self.activation)


class LSTMCell(RecurrentCell):
    """Long short-term memory, PyTorch gate order ``i, f, g, o``; carry is ``(h, c)``, each ``[B, H]``.

    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)`` with ``i, f, o`` sigmoid and ``g`` tanh.
    """

    kind: ClassVar[str] = "lstm"
    gates: ClassVar[int] = 4

    def _bias_init(self) -> Callable:
        return _lstm_bias_init(self.features)

    def initialize_carry(self, batch_size: int, dtype: Any = jnp.float32) -> tuple[Array, Array]:
        zeros = jnp.zeros((batch_size, self.features), dtype)
        return zeros, zeros


class GRUCell(RecurrentCell):
    """Gated recurrent unit, PyTorch convention (gate order ``r, z, n``; carry ``h`` ``[B, H]``).

    ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, ``h_t = (1 - z) * n + z * h_{t-1}``.
    """

    kind: ClassVar[str] = "gru"
    gates: ClassVar[int] = 3
    recurrent_bias: ClassVar[bool] = True


def make_cell(name: str, features: int) -> RecurrentCell:
    """The cell called ``name`` (``"rnn"``, ``"lstm"`` or ``"gru"``) with ``features`` units.

    The cell is unbound (``parent=None``) even when made inside another module's method, so the
    :class:`Recurrent` layer it is given to owns its parameters (``.../cell/ih``, ``.../cell/hh``).
    """
    cells = {"rnn": SimpleRNNCell, "lstm": LSTMCell, "gru": GRUCell}
    if name not in cells:
        raise NnjaxError(f"Unknown recurrent cell {name!r}; choose one of: {', '.join(CELL_NAMES)}.")
    if int(features) < 1:
        raise NnjaxError(f"A recurrent cell needs at least 1 unit, got {features}; pass a positive size.")
    return cells[name](features=int(features), parent=None)


# ----------------------------------------------------------------------------- the time loop


def _project_state(carry: Carry, w_hh: Array, b_hh: Array | None) -> Array:
    hp = _hidden(carry) @ w_hh
    return hp if b_hh is None else hp + b_hh


def _keep(m: Array, new: Carry, old: Carry) -> Carry:
    """``new`` where the step is real (``m`` ``[B]`` true), ``old`` on padding."""
    keep = m[:, None]
    return jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, old)


SMALL_INPUT = 4  # inputs this narrow are projected inside the loop (see ``Recurrent``)


def _project_inputs(x: Array, w_ih: Array, b_ih: Array) -> Array:
    """``x @ w_ih + b_ih`` for ``x [..., D]``; for a few features as broadcast multiply-adds,
    which XLA fuses into the gate arithmetic instead of running a separate matmul."""
    if x.shape[-1] > SMALL_INPUT:
        return x @ w_ih + b_ih
    out = b_ih
    for k in range(x.shape[-1]):
        out = out + x[..., k : k + 1] * w_ih[k]
    return out


def scan_autodiff(
    math: CellMath,
    xs: Array,
    w_ih: Array | None,
    b_ih: Array | None,
    w_hh: Array,
    b_hh: Array | None,
    carry: Carry,
    mask: Array | None,
    *,
    return_sequences: bool,
    unroll: int = 1,
) -> tuple[Carry, Array | None]:
    """The recurrence as a plain ``lax.scan``; JAX derives the backward pass.

    ``xs`` ``[T, B, ...]`` is time-major: the raw inputs ``[T, B, D]`` (projected with
    ``w_ih, b_ih`` inside the loop), or, when ``w_ih`` is None, the already projected inputs
    ``[T, B, G*H]``. ``mask`` ``[T, B]`` bool or None. Returns ``(final_carry, outputs [T, B, H]
    or None)``.
    """

    def body(carry, inputs):
        x_t, m_t = inputs
        xp_t = x_t if w_ih is None else _project_inputs(x_t, w_ih, b_ih)
        new, h = math.update(xp_t, _project_state(carry, w_hh, b_hh), carry)
        if m_t is not None:
            new, h = _keep(m_t, new, carry), jnp.where(m_t[:, None], h, 0.0)
        return new, (h if return_sequences else None)

    return jax.lax.scan(body, carry, (xs, mask), unroll=unroll)


def scan_fused(
    math: CellMath,
    xs: Array,
    w_ih: Array | None,
    b_ih: Array | None,
    w_hh: Array,
    b_hh: Array | None,
    carry: Carry,
    mask: Array | None,
    *,
    return_sequences: bool,
    unroll: int = 1,
) -> tuple[Carry, Array | None]:
    """Same values and gradients as :func:`scan_autodiff`, with a hand-written backward pass.

    The forward loop keeps each step's previous carry and the cell's saved activations.
    The backward loop runs the cell's ``backward`` and one matmul per step
    (``dh_{t-1} += dhp_t W_hh^T``); the weight gradients ``dW_hh = sum_t h_{t-1}^T dhp_t`` and
    ``dW_ih = sum_t x_t^T dxp_t`` are then one matmul each over all timesteps, instead of an
    accumulation inside the loop.
    """

    def forward(xs, w_ih, b_ih, w_hh, b_hh, carry, mask):
        def body(carry, inputs):
            x_t, m_t = inputs
            xp_t = x_t if w_ih is None else _project_inputs(x_t, w_ih, b_ih)
            new, h, saved = math.forward(xp_t, _project_state(carry, w_hh, b_hh), carry)
            if m_t is not None:
                new, h = _keep(m_t, new, carry), jnp.where(m_t[:, None], h, 0.0)
            return new, (carry, saved, h if return_sequences else None)

        final, (carries, saved, hs) = jax.lax.scan(body, carry, (xs, mask), unroll=unroll)
        return (final, hs), (xs, w_ih, b_ih, w_hh, b_hh, mask, carries, saved)

    def backward(residuals, cotangents):
        xs, w_ih, b_ih, w_hh, b_hh, mask, carries, saved = residuals
        d_final, d_hs = cotangents
        w_hh_t = w_hh.T

        def body(d_carry, inputs):
            m_t, carry_t, saved_t, dy_t = inputs
            d_new = d_carry if dy_t is None else _with_hidden(d_carry, _hidden(d_carry) + dy_t)
            if m_t is not None:
                keep = m_t[:, None]
                d_new = jax.tree_util.tree_map(lambda d: jnp.where(keep, d, 0.0), d_new)
            dxp_t, dhp_t, d_prev = math.backward(saved_t, carry_t, d_new)
            grad_hp = dxp_t if dhp_t is None else dhp_t
            d_prev = _with_hidden(d_prev, _hidden(d_prev) + grad_hp @ w_hh_t)
            if m_t is not None:
                d_prev = jax.tree_util.tree_map(lambda a, b: a + jnp.where(keep, 0.0, b), d_prev, d_carry)
            return d_prev, (dxp_t, dhp_t)

        dy = d_hs if return_sequences else None
        inputs = (mask, carries, saved, dy)
        d_carry0, (dxp, dhp) = jax.lax.scan(body, d_final, inputs, reverse=True, unroll=unroll)
        grad_hp = dxp if dhp is None else dhp
        h_prev = _hidden(carries)
        rows = h_prev.shape[0] * h_prev.shape[1]
        dw_hh = h_prev.reshape(rows, -1).T @ grad_hp.reshape(rows, -1)
        db_hh = None if b_hh is None else grad_hp.sum(axis=(0, 1))
        d_mask = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
        if w_ih is None:
            return dxp, None, None, dw_hh, db_hh, d_carry0, d_mask
        dx = jnp.einsum("tbg,dg->tbd", dxp, w_ih)
        dw_ih = xs.reshape(rows, -1).T @ dxp.reshape(rows, -1)
        return dx, dw_ih, dxp.sum(axis=(0, 1)), dw_hh, db_hh, d_carry0, d_mask

    @jax.custom_vjp
    def run(xs, w_ih, b_ih, w_hh, b_hh, carry, mask):
        return forward(xs, w_ih, b_ih, w_hh, b_hh, carry, mask)[0]

    run.defvjp(forward, backward)
    return run(xs, w_ih, b_ih, w_hh, b_hh, carry, mask)


class Recurrent(nn.Module):
    """Runs ``cell`` over a batch of sequences in one compiled ``lax.scan`` loop.

    The input map is applied to all timesteps at once (one matmul outside the loop), or, for
    at most ``SMALL_INPUT`` input features, fused into the loop's gate arithmetic; the loop
    holds the recurrent matmul and the gate arithmetic.

    Attributes:
      cell: an unbound :class:`RecurrentCell` (e.g. ``LSTMCell(50)``); its parameters live under
        ``cell/ih`` and ``cell/hh``.
      return_sequences: return every step's output ``[B, T, H]`` instead of the last ``[B, H]``.
      return_carry: also return the final carry (``h`` or ``(h, c)``): ``(outputs, carry)``.
      unroll: timesteps per loop iteration (``lax.scan``'s ``unroll``).
      impl: ``"fused"`` (hand-written backward pass, default) or ``"autodiff"`` (JAX transposes
        the scan); both compute the same values and gradients.
    """

    cell: RecurrentCell
    return_sequences: bool = False
    return_carry: bool = False
    unroll: int = 1
    impl: str = "fused"

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
          ``return_sequences`` (zeros on padded steps); with ``return_carry``,
          ``(outputs, final_carry)``.
        """
        if x.ndim != 3:
            raise NnjaxError(
                f"A recurrent layer takes inputs shaped [batch, time, features], got shape {tuple(x.shape)}; "
                "add the missing axis (e.g. x[..., None] for one feature)."
            )
        if self.impl not in ("fused", "autodiff"):
            raise NnjaxError(f"Unknown recurrent impl {self.impl!r}; use 'fused' or 'autodiff'.")
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
        w_ih, b_ih, w_hh, b_hh = self.cell.weights(x.shape[-1])
        if x.shape[-1] <= SMALL_INPUT:  # a few features: project inside the loop, fused with the gates
            xs = jnp.swapaxes(x, 0, 1)
        else:  # all timesteps in one matmul before the loop, time-major
            xs, w_ih, b_ih = jnp.einsum("btd,dg->tbg", x, w_ih) + b_ih, None, None
        carry = self.cell.initialize_carry(batch, x.dtype) if initial_carry is None else initial_carry
        scan = scan_fused if self.impl == "fused" else scan_autodiff
        carry, hs = scan(
            self.cell.math(),
            xs,
            w_ih,
            b_ih,
            w_hh,
            b_hh,
            carry,
            mask,
            return_sequences=self.return_sequences,
            unroll=max(1, min(int(self.unroll), steps)),
        )
        out = jnp.swapaxes(hs, 0, 1) if self.return_sequences else _hidden(carry)
        return (out, carry) if self.return_carry else out


class SequenceRegressor(nn.Module):
    """The thesis's forecaster: a recurrent layer (last state) followed by ``Dense(outputs)``.

    ``[B, T, D] -> [B, outputs]``. ``cell`` is ``"rnn"``, ``"lstm"`` or ``"gru"``.
    """

    cell: str = "lstm"
    features: int = 50
    outputs: int = 1
    unroll: int = 1
    impl: str = "fused"

    @nn.compact
    def __call__(self, x: Array, *, mask: Array | None = None) -> Array:
        layer = Recurrent(make_cell(self.cell, self.features), unroll=self.unroll, impl=self.impl, name="rnn")
        h = layer(x, mask=mask)
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
        raise NnjaxError("LSTMs with proj_size are not supported; convert an nn.LSTM built without it.")
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
