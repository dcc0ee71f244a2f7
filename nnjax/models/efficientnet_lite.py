"""EfficientNet-Lite (Tan & Le, 2019; the TF-Lite variants of 2020) in Flax linen, NHWC float32.

EfficientNet-B0's stages with the "lite" rules: no squeeze-excitation, ReLU6 instead of swish,
and the stem (32 channels) and head (1280 channels) kept at their size for every variant, as are
the repeats of the first and the last stage. Lite0-4 differ only in the row of :data:`VARIANTS`:

=======  =====  =====  ==========  =======
variant  width  depth  resolution  dropout
=======  =====  =====  ==========  =======
lite0    1.0    1.0    224         0.2
lite1    1.0    1.1    240         0.2
lite2    1.1    1.2    260         0.3
lite3    1.2    1.4    280         0.3
lite4    1.4    1.8    300         0.3
=======  =====  =====  ==========  =======

Every convolution pads as TensorFlow's 'SAME', computed from the input it gets (the extra pixel
after): at 224 px the stride-2 3x3 convolutions pad (0, 1) and the stride-2 5x5 ones (1, 2), the
stride-1 ones (1, 1) and (2, 2). The PyTorch reference (``efficientnet-lite-pytorch``) fixes its
padding once for the variant's resolution, so both agree at that resolution, odd feature-map
sizes included (Lite2 at 260 px: 65, 33, 17, 9); at other input sizes this port pads like
TensorFlow and the reference's dynamic-padding mode. BatchNorm: epsilon 1e-3, momentum 0.99
(TensorFlow's; PyTorch's 0.01).

The backbone contract (shared with the other image backbones): the top-level sub-modules are
the layer *groups* ``stem``, ``block_0`` ... ``block_{n-1}`` (one per MBConv block) and
``last`` (1x1 conv to 1280, BN, ReLU6), in that order (:func:`group_names`), plus
``predictions`` (the ImageNet Dense) with ``include_top=True``. Boundary ``k`` is the input of
group ``k`` (boundary 0: the preprocessed image, boundary ``len(groups)``: the output of
``last``); ``__call__(x, start=k, stop=m)`` runs groups ``[k, m)``. Inputs are RGB
normalised by :data:`PREPROCESSING`.

Drop-connect (stochastic depth, ``drop_connect_rate``, scaled by block index as the reference)
and dropout before the classifier (``dropout_rate``) are training-time only: both default to
0.0 (off); with a rate above 0 and ``train=True`` they need a ``"dropout"`` PRNG key. With
``train=False`` the model is deterministic.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from nnjax.models.mobilenet_v2 import make_divisible, relu6
from nnjax.models.mobilenet_weights import Preprocessing
from nnjax.nn.batch_norm import conv_batch_norm
from nnjax.nn.conv import StridedConv
from nnjax.nn.depthwise import DepthwiseConv, resolve_padding
from nnjax.nn.pointwise import Pointwise

#: The TF-Lite EfficientNet-Lite input normalisation ``(x - 127) / 128`` on RGB in [0, 255]
#: (``MEAN_RGB`` / ``STDDEV_RGB`` of TensorFlow's ``efficientnet_lite_builder``). The PyTorch
#: weights are a conversion of those checkpoints (the reference's README suggests ImageNet mean /
#: std instead): on the 400 real cats-vs-dogs photos the stem's BatchNorm running statistics are
#: matched closer with this (mean off by 0.074 vs 0.180 running stds, rms over channels; median
#: variance ratio 0.54 vs 2.63) and 89.0 % vs 87.3 % of the photos land in the right ImageNet group
#: (cat 281-285 vs dog 151-268 probability mass).
PREPROCESSING = Preprocessing("efficientnet-lite: (x - 127) / 128", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Flax convention: weight of the old running average
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
#: Size of the pooled features ``[B, FEATURES]`` without the top (every variant).
FEATURES = HEAD_CHANNELS


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """Compound-scaling coefficients of one variant: channel and repeat multipliers, the input
    side in pixels it was trained at, and its training dropout rate before the classifier."""

    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS: dict[str, VariantSpec] = {
    "lite0": VariantSpec(1.0, 1.0, 224, 0.2),
    "lite1": VariantSpec(1.0, 1.1, 240, 0.2),
    "lite2": VariantSpec(1.1, 1.2, 260, 0.3),
    "lite3": VariantSpec(1.2, 1.4, 280, 0.3),
    "lite4": VariantSpec(1.4, 1.8, 300, 0.3),
}

#: The reference's training drop-connect rate (all variants); pass it as ``drop_connect_rate``.
TRAIN_DROP_CONNECT_RATE = 0.2

#: EfficientNet-B0's stages: (repeats, kernel, first stride, expansion, output channels).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclasses.dataclass(frozen=True)
class MBConvSpec:
    """One MBConv block: depthwise kernel side, stride, expansion factor, output channels."""

    kernel: int
    stride: int
    expansion: int
    filters: int


def variant_spec(variant: str) -> VariantSpec:
    """The row of :data:`VARIANTS` for ``variant``; ValueError naming the choices otherwise."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}.")
    return VARIANTS[variant]


def blocks(variant: str = "lite0") -> tuple[MBConvSpec, ...]:
    """The MBConv blocks of ``variant`` in order (16 for lite0).

    Channels: ``make_divisible(c * width, 8)``; repeats: ``ceil(r * depth)`` except in the first
    and the last stage, whose repeats stay fixed (the lite rule).
    """
    spec = variant_spec(variant)
    result = []
    for index, (repeats, kernel, stride, expansion, filters) in enumerate(STAGES):
        fixed = index in (0, len(STAGES) - 1)
        count = repeats if fixed else int(math.ceil(spec.depth * repeats))
        width = make_divisible(filters * spec.width, 8)
        result.extend(MBConvSpec(kernel, stride if i == 0 else 1, expansion, width) for i in range(count))
    return tuple(result)


def group_names(variant: str = "lite0") -> tuple[str, ...]:
    """The ordered layer groups ``("stem", "block_0", ..., "block_{n-1}", "last")`` (no
    ``predictions``): group ``k`` is what ``start=k`` skips to and ``stop=k + 1`` stops after."""
    return ("stem", *(f"block_{i}" for i in range(len(blocks(variant)))), "last")


def boundary_channels(variant: str = "lite0") -> tuple[int, ...]:
    """Channels of the activation at each boundary ``0 .. len(group_names(variant))``:
    3 (the image), the stem's 32, each block's output, and the head's 1280."""
    return (3, STEM_CHANNELS, *(b.filters for b in blocks(variant)), HEAD_CHANNELS)


def _conv_bn(conv: nn.Module, x: jax.Array, features: int, train: bool, name: str) -> jax.Array:
    """``conv`` then the BatchNorm ``name`` (folded into the kernel with running statistics)."""
    return conv_batch_norm(conv, x, features=features, train=train, name=name, momentum=BN_MOMENTUM,
                           epsilon=BN_EPSILON)


class Stem(nn.Module):
    """3x3 stride-2 convolution (TF 'SAME', no bias) to 32 channels, BN, ReLU6:
    ``[B, H, W, 3] -> [B, ceil(H/2), ceil(W/2), 32]``."""

    features: int = STEM_CHANNELS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        pad = resolve_padding("SAME", x.shape[1:3], (3, 3), (2, 2))
        conv = StridedConv(self.features, (3, 3), (2, 2), tuple(pad), name="conv")
        return relu6(_conv_bn(conv, x, self.features, train, "bn"))


class MBConv(nn.Module):
    """Expand (1x1, skipped at expansion 1) -> depthwise kxk -> linear project (1x1), each with BN
    (ReLU6 after the first two); residual with optional drop-connect when stride is 1 and the
    channels match. ``[B, H, W, C] -> [B, ceil(H/s), ceil(W/s), filters]``.

    Sub-modules: ``expand``, ``expand_bn``, ``depthwise``, ``depthwise_bn``, ``project``, ``project_bn``.
    """

    spec: MBConvSpec
    drop_connect_rate: float = 0.0
    depthwise_impl: str = "shifted"
    pointwise_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        spec = self.spec
        in_channels = x.shape[-1]
        h = x
        if spec.expansion != 1:
            wide = in_channels * spec.expansion
            h = relu6(_conv_bn(Pointwise(wide, self.pointwise_impl, name="expand"), h, wide, train, "expand_bn"))
        depthwise = DepthwiseConv(
            (spec.kernel, spec.kernel), (spec.stride, spec.stride), "SAME", impl=self.depthwise_impl, name="depthwise"
        )
        h = relu6(_conv_bn(depthwise, h, h.shape[-1], train, "depthwise_bn"))
        h = _conv_bn(Pointwise(spec.filters, self.pointwise_impl, name="project"), h, spec.filters, train,
                     "project_bn")
        if spec.stride == 1 and in_channels == spec.filters:
            # drop the whole residual branch per example (mask [B, 1, 1, 1]), scaled by 1 / keep
            h = nn.Dropout(self.drop_connect_rate, broadcast_dims=(1, 2, 3), deterministic=not train)(h)
            h = h + x
        return h


class Head(nn.Module):
    """1x1 convolution to 1280 channels, BN, ReLU6: ``[B, h, w, C] -> [B, h, w, 1280]``."""

    features: int = HEAD_CHANNELS
    pointwise_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = Pointwise(self.features, self.pointwise_impl, name="conv")
        return relu6(_conv_bn(conv, x, self.features, train, "bn"))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite for NHWC float32 images normalised by :data:`PREPROCESSING`.

    Attributes:
      variant: ``"lite0"`` ... ``"lite4"`` (a row of :data:`VARIANTS`).
      include_top: add the ``predictions`` Dense after global average pooling.
      num_classes: outputs of the top (1000 for ImageNet).
      drop_connect_rate: stochastic-depth rate of the last block (block ``i`` drops its residual
        branch with ``rate * i / n``); the reference trains with 0.2; 0.0 turns it off.
      dropout_rate: dropout before ``predictions`` in training (the variant's ``dropout``; 0.0: off).
      depthwise_impl: ``"shifted"`` (shifted multiply-adds, fast on CPU) or ``"xla"``.
      pointwise_impl: ``"conv"`` or ``"dot"`` (1x1 convolutions as matrix products).

    ``__call__(x, train=False, start=0, stop=None)`` runs the groups ``[start, stop)`` of
    :func:`group_names`. ``x``: the preprocessed image ``[B, H, W, 3]`` when ``start == 0``, else
    the activation at boundary ``start`` ``[B, h, w, boundary_channels()[start]]``. Returns the
    activation at boundary ``stop`` ``[B, h, w, c]``; with ``stop=None`` every group to the end
    and then the global average ``[B, 1280]``, or logits ``[B, num_classes]`` with the top.
    ``train=True`` puts BatchNorm in training mode (``batch_stats`` mutable) and enables
    drop-connect / dropout when their rates are above 0 (then a ``"dropout"`` key is needed).
    """

    variant: str = "lite0"
    include_top: bool = True
    num_classes: int = 1000
    drop_connect_rate: float = 0.0
    dropout_rate: float = 0.0
    depthwise_impl: str = "shifted"
    pointwise_impl: str = "conv"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, start: int = 0, stop: int | None = None) -> jax.Array:
        specs = blocks(self.variant)
        groups = len(specs) + 2
        end = groups if stop is None else stop
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= groups):
            raise ValueError(
                f"EfficientNet-{self.variant.capitalize()} needs 0 <= start <= stop <= {groups} (its {groups} "
                f"groups), got start={start!r}, stop={stop!r}."
            )
        channels = boundary_channels(self.variant)[start]
        if x.ndim != 4 or x.shape[-1] != channels:
            what = "images [B, H, W, 3]" if start == 0 else f"the activation at boundary {start} [B, h, w, {channels}]"
            raise ValueError(f"EfficientNetLite expects {what}, got shape {tuple(x.shape)}.")
        if start == 0 < end:
            x = Stem(name="stem")(x, train)
        for i in range(max(start, 1) - 1, min(end, groups - 1) - 1):
            rate = self.drop_connect_rate * i / len(specs)
            x = MBConv(specs[i], rate, self.depthwise_impl, self.pointwise_impl, name=f"block_{i}")(x, train)
        if start < groups <= end:
            x = Head(pointwise_impl=self.pointwise_impl, name="last")(x, train)
        if stop is not None:
            return x
        x = jnp.mean(x, axis=(1, 2))
        if not self.include_top:
            return x
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="predictions")(x)
