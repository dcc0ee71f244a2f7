"""The training core: freezing partitions, the step factory, fit, checkpoints, resume, NaN guard."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnjax.data.batching import ArrayLoader
from nnjax.errors import NnjaxError, TrainingDivergedError
from nnjax.train.checkpoint import Checkpointer, load_model, save_model
from nnjax.train.fit import fit
from nnjax.train.freeze import combine, count_params, param_summary, partition, path_mask
from nnjax.train.metrics import MetricsWriter, binary_report, confusion_matrix
from nnjax.train.state import create_train_state
from nnjax.train.step import evaluate, make_eval_step, make_train_step


class TwoLayer(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(8, name="body")(x))
        x = nn.BatchNorm(use_running_average=not train, name="norm")(x)
        return nn.Dense(3, name="head")(x)


MODEL = TwoLayer()


def loss_fn(params, batch_stats, batch, rng, train):
    logits, updates = MODEL.apply(
        {"params": params, "batch_stats": batch_stats}, batch["x"], train=train, mutable=["batch_stats"]
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
    correct = (logits.argmax(-1) == batch["y"]).astype(jnp.float32)
    return loss, {"metrics": {"accuracy": correct}, "batch_stats": updates["batch_stats"]}


def make_data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
    return {"x": x, "y": y}


_INIT = jax.jit(MODEL.init)  # one program, compiled once for all tests (eagerly, every operation compiles)


def new_state(tx, trainable=None, seed=0):
    variables = _INIT(jax.random.PRNGKey(seed), np.zeros((1, 4), np.float32))
    mask = None if trainable is None else path_mask(variables["params"], trainable)
    state = create_train_state(
        variables["params"], tx, rng=jax.random.PRNGKey(seed + 1),
        batch_stats=variables["batch_stats"], trainable=mask,
    )
    return state, mask


def test_path_mask_partition_combine_round_trip():
    params = {
        "backbone": {"conv": {"kernel": jnp.ones((3, 3))}},
        "head": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
    }
    mask = path_mask(params, r"head/.*")
    assert mask == {"backbone": {"conv": {"kernel": False}}, "head": {"kernel": True, "bias": True}}
    selected, rest = partition(params, mask)
    assert count_params(selected) == 8 and count_params(rest) == 9
    merged = combine(selected, rest)
    assert jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(params)
    assert param_summary(params, mask) == {"total": 17, "trainable": 8, "frozen": 9}


def test_frozen_partition_has_no_optimizer_state_and_does_not_move():
    tx = optax.adam(1e-2)
    state, mask = new_state(tx, trainable=r"head/.*")
    mu = state.opt_state[0].mu
    assert count_params(mu) == count_params(state.params["head"])
    frozen_before = jax.device_get(state.params["body"])
    step = make_train_step(loss_fn, tx, trainable=mask)
    loader = ArrayLoader(make_data(), 16, shuffle=True, seed=0)
    for batch in loader.epoch(0):
        state, metrics = step(state, batch)
    np.testing.assert_array_equal(jax.device_get(state.params["body"])["kernel"], frozen_before["kernel"])
    assert float(np.abs(np.asarray(state.params["head"]["kernel"])).sum()) > 0
    assert np.isfinite(float(metrics["loss"]))


def test_loader_pads_last_batch_with_mask_and_step_compiles_once():
    loader = ArrayLoader(make_data(50), 16, shuffle=True, seed=3)
    batches = list(loader.epoch(1))
    assert len(batches) == len(loader) == 4
    assert all(b["x"].shape == (16, 4) for b in batches)
    assert batches[-1]["mask"].sum() == 50 - 48
    seen = np.concatenate([b["x"][b["mask"] > 0] for b in batches])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, make_data(50)["x"].tolist()))
    tx = optax.sgd(0.1)
    state, _ = new_state(tx)
    step = make_train_step(loss_fn, tx)
    for batch in batches:
        state, _ = step(state, batch)
    assert step._cache_size() == 1


def test_masked_mean_ignores_padding():
    tx = optax.sgd(0.0)
    state, _ = new_state(tx)
    data = make_data(20)
    eval_step = make_eval_step(loss_fn)
    full = evaluate(state, eval_step, ArrayLoader(data, 20).epoch(0))
    padded = evaluate(state, eval_step, ArrayLoader(data, 7).epoch(0))
    assert full["loss"] == pytest.approx(padded["loss"], rel=1e-5)
    assert full["accuracy"] == pytest.approx(padded["accuracy"], rel=1e-6)


TX = optax.adam(1e-2)  # stateless: runs can share it, and so a compiled step


def _train(tmp_path, name, epochs, checkpointer=None, on_step=None, log_every=2, step=None):
    state, _ = new_state(TX)
    step = make_train_step(loss_fn, TX) if step is None else step
    loader = ArrayLoader(make_data(), 8, shuffle=True, seed=0)
    with MetricsWriter(tmp_path / f"{name}.jsonl") as writer:
        return fit(state, step, loader, epochs=epochs, metrics=writer, checkpointer=checkpointer,
                   progress=False, log_every=log_every, on_step=on_step)


def test_fit_logs_metrics_and_learns(tmp_path):
    state, history = _train(tmp_path, "run", epochs=4)
    assert len(history) == 4 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert "compile_s" in history[0] and "step_ms" in history[0]
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert any("loss" in line and "step" in line for line in lines)
    assert int(state.step) == 4 * 7


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    step = make_train_step(loss_fn, TX)  # one step for the three runs: compiled once for the fresh states
    reference, _ = _train(tmp_path, "ref", epochs=3, step=step)

    class Interrupt(Exception):
        pass

    def stop_at_step_12(state, _):
        if int(state.step) >= 12:
            raise Interrupt

    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=5, keep=2)
    with pytest.raises(Interrupt):
        _train(tmp_path, "a", epochs=3, checkpointer=ckpt, on_step=stop_at_step_12, step=step)
    assert ckpt.latest_step() == 10
    resumed, _ = _train(tmp_path, "b", epochs=3, checkpointer=Checkpointer(tmp_path / "ckpt", every_steps=5, keep=2),
                        step=step)
    assert int(resumed.step) == int(reference.step) == 21
    pairs = zip(jax.tree_util.tree_leaves(reference.params), jax.tree_util.tree_leaves(resumed.params), strict=True)
    for a, b in pairs:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    data = make_data(40)
    data["x"][30:] = np.nan  # the 4th batch (steps 4 of epoch 1) is poisoned
    tx = optax.sgd(0.1)
    state, _ = new_state(tx)
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=2)
    loader = ArrayLoader(data, 10)
    with pytest.raises(TrainingDivergedError, match="step 4"):
        fit(state, make_train_step(loss_fn, tx), loader, epochs=2, checkpointer=ckpt, progress=False, log_every=1)
    assert ckpt.latest_step() == 2
    template, _ = new_state(tx)
    restored = ckpt.restore(template)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(restored.params))


def test_save_and_load_model_round_trip_and_errors(tmp_path):
    variables = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "batch_stats": {"m": np.ones(3)}}
    save_model(tmp_path / "m", variables, {"model": "toy", "classes": ["a", "b"]})
    loaded, meta = load_model(tmp_path / "m", expected_model="toy")
    np.testing.assert_array_equal(loaded["params"]["w"], variables["params"]["w"])
    assert meta["classes"] == ["a", "b"]
    with pytest.raises(NnjaxError, match="not 'other'"):
        load_model(tmp_path / "m", expected_model="other")
    with pytest.raises(NnjaxError, match="does not exist"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NnjaxError, match="no exported model"):
        load_model(tmp_path / "empty")


def test_confusion_matrix_and_binary_report():
    cm = confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 2)
    assert cm.tolist() == [[1, 1], [1, 2]]
    report = binary_report([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["precision"] == pytest.approx(2 / 3) and report["recall"] == pytest.approx(2 / 3)


def test_loader_rejects_bad_input():
    with pytest.raises(NnjaxError, match="different lengths"):
        ArrayLoader({"x": np.zeros(3), "y": np.zeros(4)}, 2)
    with pytest.raises(NnjaxError, match="empty"):
        ArrayLoader({"x": np.zeros((0, 2))}, 2)
    with pytest.raises(NnjaxError, match="at least 1"):
        ArrayLoader({"x": np.zeros(3)}, 0)


def test_run_once_init_is_the_eager_init_bit_for_bit():
    """Initialisers compiled at XLA's optimisation level 1 give the same bits as op-by-op init."""
    from nnjax.models.cnn import torch_bias_init, torch_kernel_init
    from nnjax.train.init import run_once

    class ConvDense(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(6, (3, 3), kernel_init=torch_kernel_init, bias_init=torch_bias_init(9), name="conv")(x)
            return nn.Dense(3, name="dense")(x.reshape(len(x), -1))

    model, x = ConvDense(), jnp.zeros((1, 5, 5, 1))
    key = jax.random.PRNGKey(11)
    once = run_once(lambda k: model.init(k, x), key)
    eager = model.init(key, x)
    for a, b in zip(jax.tree_util.tree_leaves(once), jax.tree_util.tree_leaves(eager), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert not np.array_equal(once["params"]["conv"]["kernel"], model.init(jax.random.PRNGKey(12), x)["params"]
                              ["conv"]["kernel"])
    traced = jax.jit(lambda k: run_once(lambda k2: model.init(k2, x), k))(key)  # inside jit: part of that program
    assert np.array_equal(traced["params"]["dense"]["kernel"], eager["params"]["dense"]["kernel"])


def test_variable_shapes_are_init_s_shapes_traced_once_per_model_and_input_shape():
    from nnjax.train.init import variable_shapes

    class Pair(nn.Module):
        width: int

        @nn.compact
        def __call__(self, x, extra):
            return nn.Dense(self.width)(x) + nn.Dense(self.width, name="side")(extra["y"])

    x, extra = jnp.zeros((2, 3)), {"y": np.zeros((2, 5), np.float32)}
    shapes = variable_shapes(Pair(4), x, extra)
    direct = jax.eval_shape(lambda: Pair(4).init(jax.random.key(0), x, extra))
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(direct)
    assert [(s.shape, s.dtype) for s in jax.tree_util.tree_leaves(shapes)] == \
           [(s.shape, s.dtype) for s in jax.tree_util.tree_leaves(direct)]
    assert variable_shapes(Pair(4), jnp.ones((2, 3)), extra) is shapes  # an equal model and input shapes: cached
    assert variable_shapes(Pair(6), x, extra)["params"]["side"]["kernel"].shape == (5, 6)  # another model
    assert variable_shapes(Pair(4), jnp.zeros((2, 7)), extra)["params"]["Dense_0"]["kernel"].shape == (7, 4)
