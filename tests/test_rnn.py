"""Recurrent cells and the scan layer: equal to PyTorch's nn.RNN / nn.LSTM / nn.GRU, masking,
the hand-written backward pass against autodiff and against PyTorch's autograd."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_scaled

from nnjax.errors import NnjaxError
from nnjax.models.rnn import (
    CELL_NAMES,
    SMALL_INPUT,
    GRUCell,
    LSTMCell,
    Recurrent,
    SequenceRegressor,
    SimpleRNNCell,
    make_cell,
    params_from_torch,
)
from nnjax.train.init import run_once

torch = pytest.importorskip("torch")

B, T, D, H = 3, 7, 4, 5  # D <= SMALL_INPUT: the input projection runs inside the loop
WIDE = SMALL_INPUT + 3  # wider inputs are projected before the loop
TORCH = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _inputs(seed=0, shape=(B, T, D)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _torch_module(cell, *, num_layers=1, bias=True, nonlinearity="tanh", seed=0, d=D):
    torch.manual_seed(seed)
    kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    module = getattr(torch.nn, TORCH[cell])(
        d, H, num_layers=num_layers, bias=bias, batch_first=True, **kwargs
    )
    with torch.no_grad():  # non-zero biases everywhere, so a wrong bias convention shows
        for name, p in module.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-0.5, 0.5)
    return module


def _torch_carry(cell, state, layer=-1):
    if cell == "lstm":
        return state[0][layer].detach().numpy(), state[1][layer].detach().numpy()
    return state[layer].detach().numpy()


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("d", [D, WIDE])
def test_matches_pytorch_outputs_and_state(cell, d):
    x = _inputs(0, (B, T, d))
    module = _torch_module(cell, d=d)
    layer = Recurrent(make_cell(cell, H), return_sequences=True, return_carry=True)
    out, carry = jax.jit(layer.apply)({"params": params_from_torch(module.state_dict(), cell)}, x)
    ref_out, ref_state = module(torch.from_numpy(x))
    np.testing.assert_allclose(np.asarray(out), ref_out.detach().numpy(), atol=1e-5)
    for ours, theirs in zip(
        jax.tree_util.tree_leaves(carry),
        jax.tree_util.tree_leaves(_torch_carry(cell, ref_state)),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5)


def test_matches_pytorch_relu_rnn_without_bias_and_second_layer():
    x = _inputs(1)
    module = _torch_module("rnn", nonlinearity="relu", bias=False)
    layer = Recurrent(SimpleRNNCell(H, activation="relu"), return_sequences=True)
    # a two-layer LSTM: layer 0 then layer 1, each converted by index
    stacked = _torch_module("lstm", num_layers=2, seed=3)
    state = stacked.state_dict()
    first = Recurrent(LSTMCell(H), return_sequences=True)
    second = Recurrent(make_cell("lstm", H), return_sequences=True)

    @jax.jit  # one program for both models (each operation alone would compile on its own)
    def run(rnn_params, first_params, second_params, x):
        hidden = first.apply({"params": first_params}, x)
        return layer.apply({"params": rnn_params}, x), second.apply({"params": second_params}, hidden)

    out, stacked_out = run(params_from_torch(module.state_dict(), "rnn"), params_from_torch(state, "lstm", layer=0),
                           params_from_torch(state, "lstm", layer=1), x)
    np.testing.assert_allclose(np.asarray(out), module(torch.from_numpy(x))[0].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(stacked_out), stacked(torch.from_numpy(x))[0].detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_padding_matches_pytorch_packed_sequences(cell):
    x = _inputs(2)
    lengths = np.array([7, 3, 5])
    module = _torch_module(cell, seed=1)
    params = {"params": params_from_torch(module.state_dict(), cell)}
    layer = Recurrent(make_cell(cell, H), return_sequences=True, return_carry=True)
    mask = np.arange(T)[None, :] < lengths[:, None]

    @jax.jit  # one program: the padded run and the masked run
    def run(params, x, lengths, mask):
        return layer.apply(params, x, lengths=lengths), Recurrent(make_cell(cell, H)).apply(params, x, mask=mask)

    (out, carry), last = run(params, x, lengths, mask)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
    )
    ref_packed, ref_state = module(packed)
    ref_out, _ = torch.nn.utils.rnn.pad_packed_sequence(ref_packed, batch_first=True, total_length=T)
    np.testing.assert_allclose(np.asarray(out), ref_out.detach().numpy(), atol=1e-5)  # zeros on padding
    for ours, theirs in zip(
        jax.tree_util.tree_leaves(carry),
        jax.tree_util.tree_leaves(_torch_carry(cell, ref_state)),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5)
    # the last output of a padded sequence is its state after its last real step, and a mask does the same
    np.testing.assert_allclose(np.asarray(last), np.asarray(jax.tree_util.tree_leaves(carry)[0]), atol=1e-6)


@pytest.mark.parametrize("cell,d", [("rnn", WIDE), ("lstm", D), ("gru", WIDE)])
def test_fused_backward_equals_autodiff(cell, d):
    x = jnp.asarray(_inputs(3, (B, T, d)))
    lengths = jnp.array([7, 2, 5])
    variables = {"params": params_from_torch(_torch_module(cell, seed=4, d=d).state_dict(), cell)}
    losses = {}
    for impl in ("fused", "autodiff"):
        layer = Recurrent(make_cell(cell, H), return_sequences=True, return_carry=True, impl=impl)

        def loss(v, x, layer=layer):
            out, carry = layer.apply(v, x, lengths=lengths)  # gradients flow in through both outputs
            return jnp.sum(jnp.sin(3.0 * out)) + sum(jnp.sum(c**2) for c in jax.tree_util.tree_leaves(carry))

        losses[impl] = loss
    # both gradients in one program (two programs compile slower)
    grads = jax.jit(lambda v, x: {impl: jax.grad(f, argnums=(0, 1))(v, x) for impl, f in losses.items()})(variables, x)
    for a, b in zip(
        jax.tree_util.tree_leaves(grads["fused"]), jax.tree_util.tree_leaves(grads["autodiff"]), strict=True
    ):
        assert_close_scaled(a, b, rtol=1e-4)  # gradients reach ~12, summed over the batch and 7 steps


@pytest.mark.parametrize("cell,d", [("rnn", D), ("lstm", 1), ("lstm", WIDE), ("gru", D), ("gru", WIDE)])
def test_gradients_match_pytorch_autograd(cell, d):
    x = _inputs(4, (B, T, d))
    module = _torch_module(cell, seed=2, d=d)
    xt = torch.from_numpy(x).requires_grad_(True)
    out, _ = module(xt)
    (out[:, -1] ** 2).sum().backward()

    layer = Recurrent(make_cell(cell, H))  # fused backward by default
    params = params_from_torch(module.state_dict(), cell)
    g_params, g_x = jax.jit(jax.grad(lambda p, x: jnp.sum(layer.apply({"params": p}, x) ** 2), argnums=(0, 1)))(
        params, x
    )
    np.testing.assert_allclose(np.asarray(g_x), xt.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(g_params["cell"]["hh"]["kernel"]), module.weight_hh_l0.grad.numpy().T, atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(g_params["cell"]["ih"]["kernel"]), module.weight_ih_l0.grad.numpy().T, atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(g_params["cell"]["ih"]["bias"]), module.bias_ih_l0.grad.numpy(), atol=1e-5
    )
    if cell == "gru":
        np.testing.assert_allclose(
            np.asarray(g_params["cell"]["hh"]["bias"]), module.bias_hh_l0.grad.numpy(), atol=1e-5
        )


@pytest.mark.parametrize("batch,steps", [(1, 1), (4, 9)])
def test_any_batch_and_length_and_single_step_cell(batch, steps):
    x = _inputs(5, (batch, steps, 2))
    layer = Recurrent(GRUCell(3), return_sequences=True, unroll=8)
    variables = run_once(lambda key: layer.init(key, x), jax.random.PRNGKey(1))  # one program, quick to compile
    cell = GRUCell(3)

    @jax.jit  # one program: the layer, the last-output layer and the cell stepped by hand
    def run(variables, x):
        carry, hand = jnp.zeros((batch, 3)), []
        for t in range(steps):
            carry, h = cell.apply({"params": variables["params"]["cell"]}, carry, x[:, t])
            hand.append(h)
        return layer.apply(variables, x), Recurrent(GRUCell(3)).apply(variables, x), hand

    out, last, hand = run(variables, x)
    assert out.shape == (batch, steps, 3)
    assert last.shape == (batch, 3)
    # stepping the cell by hand through the sequence gives the same outputs
    for t in range(steps):
        np.testing.assert_allclose(np.asarray(hand[t]), np.asarray(out[:, t]), atol=1e-6)


def test_keras_style_initialisation():
    x = _inputs(6, (2, 3, 4))
    params = run_once(lambda key: Recurrent(LSTMCell(8)).init(key, x), jax.random.PRNGKey(0))["params"]["cell"]
    bias = np.asarray(params["ih"]["bias"])
    np.testing.assert_array_equal(bias[8:16], 1.0)  # forget gate
    np.testing.assert_array_equal(np.delete(bias, np.s_[8:16]), 0.0)
    w = np.asarray(params["hh"]["kernel"])  # [8, 32], orthogonal rows
    np.testing.assert_allclose(w @ w.T, np.eye(8), atol=1e-5)


def test_regressor_learns_through_shared_train_step():
    import optax

    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 1)).astype(np.float32)
    y = x.sum(axis=1)  # needs memory over the whole sequence
    model = SequenceRegressor("lstm", 16)

    def loss_fn(params, batch_stats, batch, rng_, train):
        pred = model.apply({"params": params}, batch["x"])
        return jnp.mean((pred - batch["y"]) ** 2, axis=-1), {"metrics": {}, "batch_stats": {}}

    tx = optax.adam(3e-2)
    state = create_train_state(
        run_once(lambda key: model.init(key, x[:1]), jax.random.PRNGKey(0))["params"], tx, rng=jax.random.PRNGKey(1)
    )
    step = make_train_step(loss_fn, tx)
    batch = {"x": x, "y": y, "mask": np.ones(64, np.float32)}
    losses = []
    for _ in range(80):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.1 * losses[0]


def test_clear_errors():
    x = _inputs(7)
    layer = Recurrent(LSTMCell(H))
    with pytest.raises(NnjaxError, match="batch, time, features"):
        layer.init(jax.random.PRNGKey(0), x[0])
    with pytest.raises(NnjaxError, match="mask has shape"):
        layer.init(jax.random.PRNGKey(0), x, mask=np.ones((B, T + 1), bool))
    with pytest.raises(NnjaxError, match="Unknown recurrent cell"):
        make_cell("transformer", 4)
    state = _torch_module("gru").state_dict()
    with pytest.raises(NnjaxError, match="not a LSTM layer"):
        params_from_torch(state, "lstm")
    with pytest.raises(NnjaxError, match="no 'weight_ih_l1'"):
        params_from_torch(state, "gru", layer=1)
