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

from nnjax.nn.batch_norm import conv_batch_norm
from nnjax.nn.conv import StridedConv
from nnjax.nn.depthwise import DepthwiseConv
from nnjax.nn.pointwise import Pointwise

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
            conv = Pointwise(self.features, self.pointwise_impl, name="conv")
        else:
            pad = tuple(conv_padding(self.origin, n, self.kernel, self.stride) for n in x.shape[1:3])
            conv = StridedConv(self.features, (self.kernel, self.kernel), (self.stride, self.stride), pad, name="conv")
        x = conv_batch_norm(conv, x, features=self.features, train=train, name="bn", momentum=spec.bn_momentum,
                            epsilon=spec.bn_epsilon)
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

        def bn(conv: nn.Module, h: jax.Array, features: int, name: str) -> jax.Array:
            return conv_batch_norm(conv, h, features=features, train=train, name=name, momentum=spec.bn_momentum,
                                   epsilon=spec.bn_epsilon)

        in_channels = x.shape[-1]
        h = x
        if self.expansion != 1:
            wide = in_channels * self.expansion
            h = relu6(bn(Pointwise(wide, self.pointwise_impl, name="expand"), h, wide, "expand_bn"))
        pad = [conv_padding(self.origin, n, 3, self.stride) for n in h.shape[1:3]]
        depthwise = DepthwiseConv((3, 3), (self.stride, self.stride), pad, impl=self.depthwise_impl, name="depthwise")
        h = relu6(bn(depthwise, h, h.shape[-1], "depthwise_bn"))
        h = bn(Pointwise(self.filters, self.pointwise_impl, name="project"), h, self.filters, "project_bn")
        if self.stride == 1 and in_channels == self.filters:
            h = h + x
        return h


def group_names(alpha: float = 1.0, origin: str = "keras") -> tuple[str, ...]:
    """The layer groups in order: ``stem``, ``block_0`` ... ``block_16``, ``last`` (the 1x1 conv to 1280).

    Boundary ``i`` is the input of group ``i``; a group's parameters all live under its name.
    """
    return ("stem", *(f"block_{i}" for i in range(len(architecture(alpha, origin)[1]))), "last")


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

    ``__call__(x, train=False, start=0, stop=None)`` runs the layer groups ``[start, stop)`` of
    :func:`group_names` (the backbone contract of :mod:`nnjax.transfer`): ``x`` is the image
    batch ``[B, H, W, 3]`` when ``start`` is 0, else the activation at boundary ``start`` (the
    input of group ``start``); ``stop=k`` returns the activation at boundary ``k``
    (``[B, h, w, c]``, what a frozen prefix caches); ``stop=None`` runs every group and then the
    top (logits) or the pooling. ``train`` puts BatchNorm in training mode.
    """

    alpha: float = 1.0
    include_top: bool = True
    num_classes: int = 1000
    pooling: str | None = None
    origin: str = "keras"
    depthwise_impl: str = "shifted"
    pointwise_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, start: int = 0, stop: int | None = None) -> jax.Array:
        stem, blocks, last = architecture(self.alpha, self.origin)
        groups = len(blocks) + 2
        end = groups if stop is None else stop
        if not 0 <= start <= end <= groups:
            raise ValueError(f"need 0 <= start <= stop <= {groups} (the layer groups), got {start}, {stop}")
        if x.ndim != 4 or (start == 0 and x.shape[-1] != 3):
            raise ValueError(f"MobileNetV2 expects images [B, H, W, 3], got shape {x.shape}")
        for group in range(start, end):
            if group == 0:
                x = ConvBN(stem, kernel=3, stride=2, origin=self.origin, name="stem")(x, train)
            elif group <= len(blocks):
                block = blocks[group - 1]
                x = InvertedResidual(
                    block.expansion,
                    block.filters,
                    block.stride,
                    origin=self.origin,
                    depthwise_impl=self.depthwise_impl,
                    pointwise_impl=self.pointwise_impl,
                    name=f"block_{group - 1}",
                )(x, train)
            else:
                x = ConvBN(last, kernel=1, origin=self.origin, pointwise_impl=self.pointwise_impl, name="last")(
                    x, train
                )
        if stop is not None:
            return x
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


