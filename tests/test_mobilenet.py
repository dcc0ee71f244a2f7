"""MobileNetV2 in Flax: depthwise convolution, architecture, freezing as a partition, caching."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_close_scaled

from nnjax.errors import NnjaxError
from nnjax.models.mobilenet_v2 import MobileNetV2, architecture, conv_padding, group_names
from nnjax.nn.depthwise import depthwise_conv2d, depthwise_conv2d_xla
from nnjax.nn.pointwise import pointwise_conv
from nnjax.train.freeze import count_params, partition, path_mask
from nnjax.train.state import create_train_state
from nnjax.train.step import make_train_step
from nnjax.transfer import Classifier, HeadConfig
from nnjax.transfer.backbones import Backbone
from nnjax.transfer.examples import ArrayExamples
from nnjax.transfer.heads import ClassifierHead


@pytest.mark.parametrize(
    "shape,stride,padding",
    [
        ((2, 9, 8, 5), 1, ((1, 1), (1, 1))),
        ((2, 9, 8, 5), 2, ((0, 1), (0, 1))),
        ((2, 10, 11, 4), 2, ((1, 1), (1, 1))),
        ((1, 7, 6, 3), 2, "VALID"),
        ((6, 9, 8, 5), 1, ((1, 1), (1, 1))),  # the kernel gradient's loop over the images
        ((5, 10, 11, 4), 2, ((0, 1), (0, 1))),  # an odd batch
        ((2, 10, 11, 4), 3, ((1, 1), (1, 1))),  # three input phases per axis
        ((3, 14, 16, 6), 1, ((1, 1), (1, 1))),  # kernel-gradient blocks of 7 x 4 outputs
        ((2, 28, 27, 5), 2, ((0, 1), (1, 1))),  # blocks of 7 x 7 outputs of a strided convolution
    ],
)
def test_depthwise_matches_grouped_convolution_and_its_gradients(shape, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    k = rng.normal(size=(3, 3, 1, shape[-1])).astype(np.float32)
    strides = (stride, stride)
    out_shape = jax.eval_shape(lambda a, b: depthwise_conv2d_xla(a, b, strides, padding), x, k).shape
    g = rng.normal(size=out_shape).astype(np.float32)

    @jax.jit  # one program per case (each operation alone would compile on its own)
    def compare(x, k, g):
        ours = depthwise_conv2d(x, k, strides, padding)
        ref = depthwise_conv2d_xla(x, k, strides, padding)
        primal, pullback = jax.vjp(lambda a, b: depthwise_conv2d(a, b, strides, padding), x, k)
        ref_grads = jax.grad(lambda a, b: (depthwise_conv2d_xla(a, b, strides, padding) * g).sum(), (0, 1))(x, k)
        return ours, ref, primal, pullback(g), ref_grads

    ours, ref, primal, grads, ref_grads = compare(x, k, g)
    assert ours.shape == ref.shape
    assert_close_scaled(ours, ref)  # outputs reach ~11, where a fixed atol of 1e-5 is only ~10 float32 ulps
    assert_close_scaled(primal, ref)  # the forward under differentiation pads the input once instead
    for a, b in zip(grads, ref_grads, strict=True):  # the kernel gradient sums every pixel of the batch
        assert_close_scaled(a, b)


def test_depthwise_kernel_gradient_of_bfloat16_inputs_sums_in_float32():
    # 32 images x 56 x 56 products per tap: summed in bfloat16 the gradient is 1.1e-2 off the float32
    # one (measured); in float32 only the inputs' rounding to bfloat16 remains (2.9e-3)
    rng = np.random.default_rng(2)
    x, g = (rng.normal(size=(32, 56, 56, 16)).astype(np.float32) for _ in range(2))
    k = rng.normal(size=(3, 3, 1, 16)).astype(np.float32)

    def kernel_grad(conv, dtype):
        pull = jax.vjp(lambda a, b: conv(a, b, (1, 1), "SAME"), x.astype(dtype), k.astype(dtype))[1]
        return pull(g.astype(dtype))[1]

    ref = jax.jit(lambda: kernel_grad(depthwise_conv2d_xla, jnp.float32))()
    ours = jax.jit(lambda: kernel_grad(depthwise_conv2d, jnp.bfloat16))()
    assert ours.dtype == jnp.bfloat16
    assert float(jnp.abs(ours.astype(jnp.float32) - ref).max() / jnp.abs(ref).max()) < 6e-3


@pytest.mark.parametrize("shape,features", [((2, 5, 4, 6), 3), ((3, 7, 7, 16), 24)])
def test_pointwise_matches_the_1x1_convolution_and_its_gradients(shape, features):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    k = rng.normal(size=(1, 1, shape[-1], features)).astype(np.float32)
    g = rng.normal(size=(*shape[:3], features)).astype(np.float32)

    def reference(a, b):
        return jax.lax.conv_general_dilated(a, b, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    dx, dk = rng.normal(size=x.shape).astype(np.float32), rng.normal(size=k.shape).astype(np.float32)

    @jax.jit
    def compare(x, k, g):
        (out, pullback), (ref_out, ref_pullback) = jax.vjp(pointwise_conv, x, k), jax.vjp(reference, x, k)
        tangents = [jax.jvp(fn, (x, k), (dx, dk))[1] for fn in (pointwise_conv, reference)]
        input_only = [jax.jvp(lambda a, fn=fn: fn(a, k), (x,), (dx,))[1] for fn in (pointwise_conv, reference)]
        return out, ref_out, pullback(g), ref_pullback(g), tangents, input_only

    out, ref_out, grads, ref_grads, tangents, input_only = compare(x, k, g)
    assert_close_scaled(out, ref_out)
    assert grads[1].shape == k.shape
    for a, b in zip(grads, ref_grads, strict=True):  # the kernel gradient sums every pixel of the batch
        assert_close_scaled(a, b)
    assert_close_scaled(*tangents)  # forward mode too (the custom JVP's kernel term is the 2-D product)
    assert_close_scaled(*input_only)  # with the kernel's tangent a symbolic zero


def test_backbone_size_and_head_size_match_the_thesis_summary():
    model = MobileNetV2(alpha=1.0, include_top=False)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
    assert count_params(shapes) == 2_257_984  # params + BatchNorm statistics, as Keras counts them
    head = ClassifierHead(HeadConfig(num_classes=2, hidden=128, output="sigmoid"))  # Dense(128) -> Dense(1)
    assert count_params(jax.eval_shape(lambda: head.init(jax.random.key(0), jnp.zeros((1, 1280))))) == 164_097
    assert len(group_names()) == 19  # stem, 17 blocks, last


def test_width_multiplier_and_origin_rounding():
    stem, blocks, last = architecture(1.0)
    assert (stem, len(blocks), last) == (32, 17, 1280)
    assert [b.filters for b in blocks][::4] == [16, 32, 64, 96, 320]
    stem, blocks, last = architecture(0.35, "keras")
    assert stem == 16 and blocks[0].filters == 8 and last == 1280
    assert architecture(1.4)[2] == 1792
    # Keras truncates c * alpha before rounding, torchvision does not; it matters for the
    # "no more than 10 % below" rule: 24 * 0.745 = 17.88 -> 16 is too small, 17 -> 16 is not.
    assert architecture(0.745, "keras")[1][1].filters == 16
    assert architecture(0.745, "torchvision")[1][1].filters == 24


def test_padding_per_origin():
    assert conv_padding("keras", 224, 3, 2) == (0, 1)  # ZeroPadding2D((0, 1)) + 'valid'
    assert conv_padding("keras", 225, 3, 2) == (1, 1)
    assert conv_padding("keras", 224, 3, 1) == (1, 1)
    assert conv_padding("torchvision", 224, 3, 2) == (1, 1)


SIZE = 32


@pytest.fixture(scope="module")
def small():
    """A narrow torchvision-style classifier on 32 px images, with non-trivial BatchNorm statistics."""
    module = MobileNetV2(alpha=0.35, include_top=False, pooling="avg", origin="torchvision")
    shapes = jax.eval_shape(module.init, jax.random.key(1), jnp.zeros((1, SIZE, SIZE, 3)))
    rng = np.random.default_rng(1)

    def fill(path, leaf):  # random weights without compiling an init
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1])) if leaf.shape[2] > 1 else 9
            return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), leaf.shape), jnp.float32)
        if name in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
        return jnp.asarray(rng.normal(0, 0.1, leaf.shape), jnp.float32)

    backbone = Backbone(name="tiny", kind="image", module=module,
                        variables=jax.tree_util.tree_map_with_path(fill, dict(shapes)),
                        groups=group_names(0.35, "torchvision"), feature_size=1280, spec={}, source={},
                        preprocess=lambda x: x.astype(jnp.float32) / 127.5 - 1, image_size=SIZE)
    classifier = Classifier(backbone, HeadConfig(num_classes=2, hidden=16, output="sigmoid"), ("cat", "dog"))
    return classifier, classifier.init_variables(3)


def test_start_and_stop_groups_compose_to_the_full_forward(small):
    classifier, variables = small
    x = jax.random.normal(jax.random.key(4), (2, SIZE, SIZE, 3))
    model = classifier.model
    full = jax.jit(model.apply)(variables, x)
    backbone = {"params": variables["params"]["backbone"], "batch_stats": variables["batch_stats"]["backbone"]}
    acts = jax.jit(lambda v, x: classifier.backbone.module.apply(v, x, stop=START))(backbone, x)
    assert acts.shape == (2, 1, 1, 56)  # the input of block 14 (160 * 0.35 -> 56 channels)
    top = jax.jit(lambda v, a: model.apply(v, a, start=START))(variables, acts)
    assert_close_scaled(top, full)


def test_top_k_selects_the_top_groups_and_the_head(small):
    classifier, variables = small
    mask = path_mask(variables["params"], classifier.backbone.trainable_patterns("top-k", 3))
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    chosen = {"/".join(str(k.key) for k in path[:2]) for path, m in flat if m}
    assert chosen == {"backbone/block_15", "backbone/block_16", "backbone/last", "head/hidden", "head/classifier"}
    assert classifier.backbone.first_trainable_group(variables["params"], mask) == 16
    with pytest.raises(NnjaxError, match="outside 1..19"):
        classifier.backbone.trainable_patterns("top-k", 20)


def _batch(n=4, size=SIZE, seed=5):
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.integers(0, 256, (n, size, size, 3)), jnp.uint8),
        "label": jnp.asarray(rng.integers(0, 2, n), jnp.int32),
        "mask": jnp.ones(n, jnp.float32),
    }


def _compiled(step, state, batch):
    """The compiled step (run it directly: one compilation) and its XLA FLOP count."""
    compiled = step.lower(state, batch).compile()
    analysis = compiled.cost_analysis()
    return compiled, float((analysis[0] if isinstance(analysis, list) else analysis)["flops"])


START = 15  # group 15 = block_14: tests that train run the top of the network on its cached inputs


def _activations(classifier, variables, seed):
    """A batch holding the (cached) input of group ``START`` and labels."""
    batch = _batch(seed=seed)
    examples = ArrayExamples({"image": np.asarray(batch["image"])}, np.asarray(batch["label"]))
    acts = classifier.backbone_part(variables, examples, 0, START, batch_size=4).arrays["activations"]
    return {**batch, "activations": jnp.asarray(acts)}


def test_partitioned_freezing_equals_masked_updates_with_less_compute_and_state(small):
    """Frozen = ``backbone/.*`` (blocks 14-16 and the last conv here); the naive way
    differentiates them and masks Adam's updates, the partition never differentiates them."""
    classifier, variables = small
    mask = path_mask(variables["params"], r"head/.*")
    frozen = jax.tree_util.tree_map(lambda m: not m, mask)
    loss = classifier.loss_fn(START)
    batch = _activations(classifier, variables, 5)
    copy = lambda: jax.device_put(variables, may_alias=False)  # noqa: E731 (the step donates its state)

    naive_tx = optax.chain(optax.adam(1e-2), optax.masked(optax.set_to_zero(), frozen))
    v = copy()
    naive_state = create_train_state(
        v["params"], naive_tx, rng=jax.random.key(0), batch_stats=v["batch_stats"]
    )
    naive_step = make_train_step(loss, naive_tx)
    tx = optax.adam(1e-2)
    v = copy()
    state = create_train_state(
        v["params"], tx, rng=jax.random.key(0), batch_stats=v["batch_stats"], trainable=mask
    )
    step = make_train_step(loss, tx, trainable=mask)

    naive_step, naive_flops = _compiled(naive_step, naive_state, batch)
    step, part_flops = _compiled(step, state, batch)
    assert part_flops < 0.6 * naive_flops  # no backward pass through the frozen blocks
    assert count_params(state.opt_state) < 0.1 * count_params(naive_state.opt_state)

    for _ in range(3):
        naive_state, _ = naive_step(naive_state, batch)
        state, metrics = step(state, batch)
    # Same head: Adam moves each value by up to 3 * 1e-2 here; the two programs agree to 1e-4
    # (float summation order differs, and Adam's g / sqrt(v) magnifies it where g is tiny).
    for a, b in zip(
        jax.tree_util.tree_leaves(naive_state.params["head"]),
        jax.tree_util.tree_leaves(state.params["head"]),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-4)
    before = jax.tree_util.tree_leaves(variables["params"]["backbone"])
    assert all(
        np.array_equal(a, b)
        for a, b in zip(before, jax.tree_util.tree_leaves(state.params["backbone"]), strict=True)
    )
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree_util.tree_leaves(variables["batch_stats"]),
            jax.tree_util.tree_leaves(state.batch_stats),
            strict=True,
        )
    )
    head_before = jax.tree_util.tree_leaves(variables["params"]["head"])
    moved = max(
        float(np.abs(a - b).max())
        for a, b in zip(head_before, jax.tree_util.tree_leaves(state.params["head"]), strict=True)
    )
    assert moved > 1e-2


def test_cached_features_train_the_same_head_as_the_frozen_network(small):
    classifier, variables = small
    mask = path_mask(variables["params"], r"head/.*")
    batch = _activations(classifier, variables, 6)
    examples = ArrayExamples({"activations": np.asarray(batch["activations"])}, np.asarray(batch["label"]))
    features = classifier.backbone_part(variables, examples, START, None, batch_size=4).arrays["features"]
    tx = optax.adam(1e-2)
    results = []
    for start, data in ((START, batch), (classifier.backbone.depth, {**batch, "features": jnp.asarray(features)})):
        v = jax.device_put(variables, may_alias=False)
        state = create_train_state(
            v["params"], tx, rng=jax.random.key(0), batch_stats=v["batch_stats"], trainable=mask
        )
        step = make_train_step(classifier.loss_fn(start), tx, trainable=mask)
        for _ in range(3):
            state, _ = step(state, data)
        results.append(state.params["head"])
    for a, b in zip(*map(jax.tree_util.tree_leaves, results), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_only_the_partition_has_optimizer_state(small):
    _, variables = small
    mask = path_mask(variables["params"], r"head/.*")
    state = create_train_state(variables["params"], optax.adam(1e-3), rng=jax.random.key(0), trainable=mask)
    head = count_params(partition(variables["params"], mask)[0])
    assert count_params(state.opt_state) == 2 * head + 1  # Adam's m and v, and the step count


def test_augmentation_runs_inside_the_loss_in_training_only(small):
    from nnjax.data.augment import random_augment

    classifier, variables = small
    loss_fn = classifier.loss_fn(0, augment=random_augment)
    batch = _batch(seed=7)
    run = jax.jit(
        lambda rng, train: loss_fn(variables["params"], variables["batch_stats"], batch, rng, train)[0],
        static_argnums=1,
    )
    plain = classifier.loss_fn(0)
    expected = jax.jit(lambda: plain(variables["params"], variables["batch_stats"], batch, jax.random.key(9),
                                     False)[0])()
    np.testing.assert_allclose(run(jax.random.key(0), False), expected, atol=1e-6)
    a, b = run(jax.random.key(0), True), run(jax.random.key(1), True)
    assert not np.allclose(a, expected) and not np.allclose(a, b)
    np.testing.assert_array_equal(a, run(jax.random.key(0), True))
