"""MobileNetV2 (Sandler et al., 2018) in Flax linen, faithful to two weight origins.

The same architecture was published twice with ImageNet weights, and the two differ in
details that change the outputs:

============  ==============================  ===============================
origin        ``"keras"``                     ``"torchvision"``
============  ==============================  ===============================
padding       stride 2: asymmetric,           symmetric, 1 pixel each side
              (0, 1) on even sizes            for every 3x3 convolution
              (ZeroPadding2D + 'valid')
BN epsilon    1e-3 (momentum 0.999)           1e-5 (momentum 0.9)
block width   ``make_divisible(int(c*alpha))``  ``make_divisible(c*alpha)``
input         RGB scaled to [-1, 1]           RGB, ImageNet mean / std
============  ==============================  ===============================

The model is NHWC, float32, and returns logits (``include_top=True``, ``[B, classes]``),
the final feature map (``[B, H/32, W/32, 1280]``) or pooled features (``[B, 1280]``).
Parameter paths: ``stem/conv``, ``stem/bn``, ``block_0`` ... ``block_16`` (each with
``expand``, ``expand_bn`` (not in block 0), ``depthwise``, ``depthwise_bn``, ``project``,
``project_bn``), ``last/conv``, ``last/bn`` and ``predictions``. With alpha 1.0 and no top
the backbone holds 2,257,984 values (params plus BatchNorm statistics), as Keras' summary.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from nnjax.nn.depthwise import DepthwiseConv

ORIGINS = ("keras", "torchvision")

#: (expansion t, channels c, repeats n, first stride s) of the paper's table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@dataclasses.dataclass(frozen=True)
class OriginSpec:
    """What a weight origin fixes about the architecture."""

    bn_epsilon: float
    bn_momentum: float  # Flax convention: weight of the old running average
    symmetric_padding: bool
    truncate_width: bool  # Keras applies int() to c * alpha before rounding to 8


ORIGIN_SPECS = {
    "keras": OriginSpec(bn_epsilon=1e-3, bn_momentum=0.999, symmetric_padding=False, truncate_width=True),
    "torchvision": OriginSpec(bn_epsilon=1e-5, bn_momentum=0.9, symmetric_padding=True, truncate_width=False),
}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below 90% of it."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One inverted residual block: expansion, output channels, stride."""

    expansion: int
    filters: int
    stride: int


def architecture(alpha: float = 1.0, origin: str = "keras") -> tuple[int, tuple[BlockSpec, ...], int]:
    """``(stem_channels, blocks, last_channels)`` for a width multiplier and origin."""
    spec = _origin_spec(origin)
    stem = make_divisible(32 * alpha, 8)
    blocks = []
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        width = int(c * alpha) if spec.truncate_width else c * alpha
        filters = make_divisible(width, 8)
        for i in range(n):
            blocks.append(BlockSpec(t, filters, s if i == 0 else 1))
    last = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    return stem, tuple(blocks), last


def _origin_spec(origin: str) -> OriginSpec:
    if origin not in ORIGIN_SPECS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    return ORIGIN_SPECS[origin]


def conv_padding(origin: str, size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Padding (before, after) of one spatial axis for a ``kernel`` x ``kernel`` conv.

    Keras: stride 1 is 'same'; stride 2 pads ``(k//2 - 1, k//2)`` on even sizes and
    ``(k//2, k//2)`` on odd ones (``imagenet_utils.correct_pad``, identical to
    TensorFlow's 'SAME'). torchvision: ``(k//2, k//2)`` always.
    """
    half = kernel // 2
    if _origin_spec(origin).symmetric_padding or stride == 1:
        return (half, half)
    adjust = 1 - size % 2
    return (half - adjust, half)


def relu6(x: jax.Array) -> jax.Array:
    """min(max(x, 0), 6)."""
    return jnp.clip(x, 0.0, 6.0)


class Pointwise(nn.Module):
    """A 1x1 convolution without bias, as XLA's ``conv`` (default) or as a ``dot`` over channels.

    Parameter ``kernel``: ``[1, 1, C_in, C_out]`` (the layout of ``nn.Conv``). Measured on a
    2-core CPU (batch 32, 224 px, whole backbone): ``conv`` 1.5-1.9x faster than ``dot``
    in the forward pass, with or without ``--xla_cpu_experimental_ynn_fusion_type``.
    """

    features: int
    impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (1, 1, x.shape[-1], self.features), jnp.float32
        )
        if self.impl == "conv":
            return jax.lax.conv_general_dilated(
                x, kernel.astype(x.dtype), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        if self.impl == "dot":
            return jnp.einsum("bhwc,cd->bhwd", x, kernel[0, 0].astype(x.dtype))
        raise ValueError(f"pointwise impl must be 'conv' or 'dot', got {self.impl!r}")


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm, optional ReLU6 (a 'ConvBNReLU' unit)."""

    features: int
    kernel: int = 1
    stride: int = 1
    activation: bool = True
    origin: str = "keras"
    pointwise_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        spec = _origin_spec(self.origin)
        if self.kernel == 1 and self.stride == 1:
            x = Pointwise(self.features, self.pointwise_impl, name="conv")(x)
        else:
            pad = [conv_padding(self.origin, n, self.kernel, self.stride) for n in x.shape[1:3]]
            x = nn.Conv(
                self.features,
                (self.kernel, self.kernel),
                strides=self.stride,
                padding=pad,
                use_bias=False,
                name="conv",
            )(x)
        x = nn.BatchNorm(
            use_running_average=not train, momentum=spec.bn_momentum, epsilon=spec.bn_epsilon, name="bn"
        )(x)
        return relu6(x) if self.activation else x


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), residual when shapes match."""

    expansion: int
    filters: int
    stride: int
    origin: str = "keras"
    depthwise_impl: str = "shifted"
    pointwise_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        spec = _origin_spec(self.origin)

        def bn(name: str):
            return nn.BatchNorm(
                use_running_average=not train, momentum=spec.bn_momentum, epsilon=spec.bn_epsilon, name=name
            )

        in_channels = x.shape[-1]
        h = x
        if self.expansion != 1:
            h = Pointwise(in_channels * self.expansion, self.pointwise_impl, name="expand")(h)
            h = relu6(bn("expand_bn")(h))
        pad = [conv_padding(self.origin, n, 3, self.stride) for n in h.shape[1:3]]
        h = DepthwiseConv(
            (3, 3), (self.stride, self.stride), pad, impl=self.depthwise_impl, name="depthwise"
        )(h)
        h = relu6(bn("depthwise_bn")(h))
        h = Pointwise(self.filters, self.pointwise_impl, name="project")(h)
        h = bn("project_bn")(h)
        if self.stride == 1 and in_channels == self.filters:
            h = h + x
        return h


class MobileNetV2(nn.Module):
    """MobileNetV2 for NHWC float32 images that are already preprocessed for the weights.

    Attributes:
      alpha: width multiplier (0.35, 0.5, 0.75, 1.0, 1.3, 1.4 have Keras ImageNet weights).
      include_top: add global average pooling and the ``predictions`` Dense layer.
      num_classes: outputs of the top (1000 for ImageNet).
      pooling: without the top, ``None`` returns the feature map ``[B, h, w, C]``,
        ``"avg"`` / ``"max"`` the pooled ``[B, C]``.
      origin: ``"keras"`` or ``"torchvision"`` (padding, BN epsilon, width rounding).
      depthwise_impl: ``"shifted"`` (nine multiply-adds, fast on CPU) or ``"xla"``.
      pointwise_impl: ``"conv"`` or ``"dot"`` (1x1 convolutions as matrix products).

    ``__call__(x, train=False, start_block=0, stop_block=None)``: ``x`` is ``[B, H, W, 3]``;
    ``train`` puts BatchNorm in training mode (batch statistics, ``batch_stats`` mutable).
    Returns logits / features. With ``stop_block=k`` it returns the input of block ``k``
    (the activation to cache below a frozen prefix); with ``start_block=k`` ``x`` is that
    activation and the stem and blocks ``0..k-1`` are skipped.
    """

    alpha: float = 1.0
    include_top: bool = True
    num_classes: int = 1000
    pooling: str | None = None
    origin: str = "keras"
    depthwise_impl: str = "shifted"
    pointwise_impl: str = "conv"

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, start_block: int = 0, stop_block: int | None = None
    ) -> jax.Array:
        stem, blocks, last = architecture(self.alpha, self.origin)
        stop = len(blocks) if stop_block is None else stop_block
        if not 0 <= start_block <= stop <= len(blocks):
            raise ValueError(
                f"need 0 <= start_block <= stop_block <= {len(blocks)}, got {start_block}, {stop_block}"
            )
        if x.ndim != 4 or (start_block == 0 and x.shape[-1] != 3):
            raise ValueError(f"MobileNetV2 expects images [B, H, W, 3], got shape {x.shape}")
        if start_block == 0:
            x = ConvBN(stem, kernel=3, stride=2, origin=self.origin, name="stem")(x, train)
        for i in range(start_block, stop):
            block = blocks[i]
            x = InvertedResidual(
                block.expansion,
                block.filters,
                block.stride,
                origin=self.origin,
                depthwise_impl=self.depthwise_impl,
                pointwise_impl=self.pointwise_impl,
                name=f"block_{i}",
            )(x, train)
        if stop_block is not None:
            return x
        x = ConvBN(last, kernel=1, origin=self.origin, pointwise_impl=self.pointwise_impl, name="last")(
            x, train
        )
        if self.include_top:
            x = jnp.mean(x, axis=(1, 2))
            return nn.Dense(self.num_classes, name="predictions")(x)
        if self.pooling == "avg":
            return jnp.mean(x, axis=(1, 2))
        if self.pooling == "max":
            return jnp.max(x, axis=(1, 2))
        if self.pooling is not None:
            raise ValueError(f"pooling must be None, 'avg' or 'max', got {self.pooling!r}")
        return x


class BinaryHead(nn.Module):
    """The thesis's head on pooled features: Dense(hidden, ReLU) -> Dense(1).

    ``[B, C] -> [B]`` logits (the sigmoid lives in the loss, for numerical stability).
    """

    hidden: int = 128

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        h = nn.relu(nn.Dense(self.hidden)(features))
        return nn.Dense(1)(h)[:, 0]


class TransferClassifier(nn.Module):
    """A MobileNetV2 backbone (no top, average pooled) followed by :class:`BinaryHead`.

    Parameter paths are ``backbone/...`` and ``head/...`` so freezing is a regex.
    The backbone's BatchNorm always runs in inference mode (running statistics), also
    when its top blocks are fine-tuned, as the Keras transfer-learning guide does.

    ``__call__(x, train=False, start_block=0) -> [B]`` logits of class 1 ("dog");
    ``x`` is a preprocessed image batch, or the cached input of block ``start_block``.
    """

    alpha: float = 1.0
    origin: str = "torchvision"
    hidden: int = 128
    depthwise_impl: str = "shifted"
    pointwise_impl: str = "conv"

    def setup(self):
        self.backbone = MobileNetV2(
            alpha=self.alpha,
            include_top=False,
            pooling="avg",
            origin=self.origin,
            depthwise_impl=self.depthwise_impl,
            pointwise_impl=self.pointwise_impl,
        )
        self.head = BinaryHead(self.hidden)

    def features(self, x: jax.Array, start_block: int = 0) -> jax.Array:
        """Pooled backbone features ``[B, C]`` (BatchNorm in inference mode)."""
        return self.backbone(x, train=False, start_block=start_block)

    def activations(self, x: jax.Array, stop_block: int) -> jax.Array:
        """The input of block ``stop_block`` ``[B, h, w, c]``: what a frozen prefix caches."""
        return self.backbone(x, train=False, stop_block=stop_block)

    def classify(self, features: jax.Array) -> jax.Array:
        """The head alone on pooled features ``[B, C] -> [B]``."""
        return self.head(features)

    def __call__(self, x: jax.Array, train: bool = False, start_block: int = 0) -> jax.Array:
        del train  # the head has no train-time behaviour; the backbone's BN stays frozen
        return self.head(self.features(x, start_block))


# --------------------------------------------------------------------------- transfer learning

#: Every backbone parameter (the thesis freezes all of them).
BACKBONE_PATTERN = r"backbone/.*"
#: The head (what trains when the backbone is frozen).
HEAD_PATTERN = r"head/.*"


def num_blocks(alpha: float = 1.0, origin: str = "keras") -> int:
    """Inverted residual blocks in the backbone (17)."""
    return len(architecture(alpha, origin)[1])


def fine_tune_pattern(top_blocks: int, total_blocks: int = 17) -> str:
    """Regex of the trainable paths when the top ``top_blocks`` blocks, the last 1x1
    convolution and the head train (``top_blocks=0``: the last convolution and the head)."""
    if not 0 <= top_blocks <= total_blocks:
        raise ValueError(f"top_blocks must be in 0..{total_blocks}, got {top_blocks}")
    ids = "|".join(str(i) for i in range(total_blocks - top_blocks, total_blocks))
    blocks = f"block_({ids})/.*|" if ids else ""
    return f"backbone/({blocks}last/.*)|{HEAD_PATTERN}"


def init_transfer_variables(
    model: TransferClassifier, backbone: dict, rng: jax.Array, image_size: int = 224
) -> dict:
    """``{"params": {"backbone", "head"}, "batch_stats": {"backbone"}}``: pretrained
    ``backbone`` variables (``PretrainedWeights.backbone_variables()``) and a fresh head.

    The backbone's structure and shapes are checked against ``model`` (a clear error when
    the weights belong to another width or origin). ``image_size`` only sizes the check.
    """
    from nnjax.errors import NnjaxError

    shapes = jax.eval_shape(lambda: model.init(rng, jnp.zeros((1, image_size, image_size, 3), jnp.float32)))
    expected = jax.tree_util.tree_map(
        lambda s: s.shape,
        {"params": shapes["params"]["backbone"], "batch_stats": shapes["batch_stats"]["backbone"]},
    )
    given = jax.tree_util.tree_map(
        lambda a: tuple(a.shape), {"params": backbone["params"], "batch_stats": backbone["batch_stats"]}
    )
    if expected != given:
        raise NnjaxError(
            f"The backbone weights do not fit a MobileNetV2 with alpha={model.alpha} and origin="
            f"{model.origin!r}; build the classifier from the weights' own alpha and origin."
        )
    features = shapes["params"]["head"]["Dense_0"]["kernel"].shape[0]
    head = BinaryHead(model.hidden).init(rng, jnp.zeros((1, features), jnp.float32))
    params = {"backbone": backbone["params"], "head": head["params"]}
    return {"params": params, "batch_stats": {"backbone": backbone["batch_stats"]}}


def transfer_loss_fn(
    model: TransferClassifier, inputs: str = "images", start_block: int = 0, preprocess=None, augment=None
):
    """A loss for ``nnjax.train.step.make_train_step``: binary cross-entropy on logits.

    Args:
      model: the classifier.
      inputs: what ``batch`` holds -- ``"images"`` (``batch["image"]`` uint8 / float RGB in
        [0, 255]), ``"features"`` (cached pooled ``batch["features"]``) or ``"activations"``
        (cached input of block ``start_block`` in ``batch["activations"]``).
      preprocess: the weights' preprocessing, applied to images.
      augment: ``augment(rng, images) -> images``, applied in training only.

    Returns ``loss_fn(params, batch_stats, batch, rng, train) -> (bce [B], aux)`` with
    ``aux["metrics"]["accuracy"]``; BatchNorm statistics never change (``aux["batch_stats"] = {}``).
    """
    if inputs not in ("images", "features", "activations"):
        raise ValueError(f"inputs must be 'images', 'features' or 'activations', got {inputs!r}")

    def loss_fn(params, batch_stats, batch, rng, train):
        variables = {"params": params, "batch_stats": batch_stats}
        if inputs == "features":
            logits = model.apply(variables, batch["features"], method="classify")
        elif inputs == "activations":
            logits = model.apply(variables, batch["activations"], start_block=start_block)
        else:
            images = batch["image"]
            if train and augment is not None:
                images = augment(rng, images)
            images = images.astype(jnp.float32) if preprocess is None else preprocess(images)
            logits = model.apply(variables, images)
        labels = batch["label"].astype(jnp.float32)
        loss = optax.sigmoid_binary_cross_entropy(logits, labels)
        correct = ((logits > 0).astype(jnp.float32) == labels).astype(jnp.float32)
        return loss, {"metrics": {"accuracy": correct}, "batch_stats": {}}

    return loss_fn


def batched(fn, arrays, batch_size: int = 32):
    """``fn`` over ``arrays [N, ...]`` in fixed-size chunks (the last one padded, so one
    compilation), concatenated to NumPy ``[N, ...]``."""
    import numpy as np

    total = len(arrays)
    outputs = []
    for start in range(0, total, batch_size):
        chunk = np.asarray(arrays[start : start + batch_size])
        real = len(chunk)
        if real < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
        outputs.append(np.asarray(fn(chunk))[:real])
    return np.concatenate(outputs) if outputs else np.zeros((0,))
