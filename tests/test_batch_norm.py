"""BatchNorm with running statistics folded into the convolution before it (nnjax.nn.batch_norm)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_scaled

from nnjax.nn.batch_norm import conv_batch_norm
from nnjax.nn.conv import StridedConv
from nnjax.nn.depthwise import DepthwiseConv
from nnjax.nn.pointwise import Pointwise
from nnjax.train.init import run_once

CONVS = {
    "pointwise": (lambda c: Pointwise(c, name="conv"), 6),
    "depthwise": (lambda c: DepthwiseConv((3, 3), (2, 2), "SAME", name="conv"), 5),
    "strided": (lambda c: StridedConv(c, (3, 3), (2, 2), ((0, 1), (0, 1)), name="conv"), 4),
}


class Folded(nn.Module):
    kind: str
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        return conv_batch_norm(CONVS[self.kind][0](self.features), x, features=self.features, train=train,
                               name="bn", epsilon=1e-3)


class Unfolded(nn.Module):
    """The reference: the convolution, then ``nn.BatchNorm`` on its output."""

    kind: str
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = CONVS[self.kind][0](self.features)(x)
        return nn.BatchNorm(use_running_average=not train, epsilon=1e-3, name="bn")(y)


@pytest.mark.parametrize("kind", sorted(CONVS))
def test_folded_batch_norm_equals_the_convolution_then_batch_norm(kind):
    rng = np.random.default_rng(0)
    features = CONVS[kind][1] if kind == "depthwise" else 7
    x = jnp.asarray(rng.normal(size=(3, 9, 8, CONVS[kind][1])), jnp.float32)
    folded, unfolded = Folded(kind, features), Unfolded(kind, features)
    variables = run_once(lambda key: unfolded.init(key, x, False), jax.random.key(0))
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
        jax.eval_shape(lambda key: folded.init(key, x, False), jax.random.key(0)))  # the same variables
    stats = {"mean": jnp.asarray(rng.normal(size=features), jnp.float32),
             "var": jnp.asarray(rng.uniform(0.2, 3.0, size=features), jnp.float32)}
    bn = {"scale": jnp.asarray(rng.normal(size=features), jnp.float32),
          "bias": jnp.asarray(rng.normal(size=features), jnp.float32)}
    params = {**variables["params"], "bn": bn}
    batch_stats = {"bn": stats}

    def loss(model, params):
        y = model.apply({"params": params, "batch_stats": batch_stats}, x, False)
        return jnp.sum(jnp.sin(y)), y

    # jitted: one compile per model instead of one per operation
    (_, ours), ours_grads = jax.jit(jax.value_and_grad(lambda p: loss(folded, p), has_aux=True))(params)
    (_, ref), ref_grads = jax.jit(jax.value_and_grad(lambda p: loss(unfolded, p), has_aux=True))(params)
    assert_close_scaled(ours, ref)
    for a, b in zip(jax.tree_util.tree_leaves(ours_grads), jax.tree_util.tree_leaves(ref_grads), strict=True):
        assert_close_scaled(a, b)
    # with batch statistics it is nn.BatchNorm itself, running averages updated
    def train_mode(model):
        return jax.jit(lambda p: model.apply({"params": p, "batch_stats": batch_stats}, x, True,
                                             mutable=["batch_stats"]))(params)

    (y, updates), (y_ref, updates_ref) = train_mode(folded), train_mode(unfolded)
    np.testing.assert_array_equal(y, y_ref)
    assert not np.allclose(updates["batch_stats"]["bn"]["mean"], stats["mean"])
    np.testing.assert_array_equal(updates["batch_stats"]["bn"]["mean"], updates_ref["batch_stats"]["bn"]["mean"])
