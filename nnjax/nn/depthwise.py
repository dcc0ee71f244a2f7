"""Depthwise 2-D convolution as shifted multiply-adds.

XLA on CPU runs ``lax.conv_general_dilated(..., feature_group_count=C)`` through a
generic grouped-convolution path that is 7-35x slower than spelling the depthwise
convolution out as ``kh * kw`` shifted, strided slices of the padded input, each
multiplied by one kernel tap and summed. XLA fuses the taps (and the BatchNorm / ReLU6
that usually follow) into one loop, and the backward pass is pads and slices.

Layout is NHWC; the kernel is ``[kh, kw, 1, C]`` (Flax's ``nn.Conv`` layout for a
grouped convolution with ``feature_group_count=C``) so parameters are interchangeable
with ``nn.Conv(C, (kh, kw), feature_group_count=C)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = str | Sequence[tuple[int, int]]


def _explicit_padding(padding: Padding, size: int, k: int, s: int) -> tuple[int, int]:
    """Pad pair (before, after) for one spatial axis; 'SAME' follows TensorFlow / Keras
    (the extra pixel goes after), 'VALID' pads nothing."""
    if isinstance(padding, str):
        name = padding.upper()
        if name == "VALID":
            return (0, 0)
        if name == "SAME":
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            return (total // 2, total - total // 2)
        raise ValueError(f"padding must be 'SAME', 'VALID' or pairs, got {padding!r}")
    raise TypeError("per-axis padding must be resolved by the caller")


def resolve_padding(
    padding: Padding, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """Explicit ``((top, bottom), (left, right))`` padding for ``padding`` ('SAME',
    'VALID' or explicit pairs) on an input of spatial size ``spatial``."""
    if isinstance(padding, str):
        return tuple(
            _explicit_padding(padding, n, k, s) for n, k, s in zip(spatial, kernel, strides, strict=True)
        )
    pairs = tuple((int(a), int(b)) for a, b in padding)
    if len(pairs) != len(spatial):
        raise ValueError(f"padding needs {len(spatial)} (before, after) pairs, got {padding!r}")
    return pairs


def depthwise_conv2d(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: Padding = "SAME",
) -> jax.Array:
    """Depthwise convolution (depth multiplier 1) as ``kh * kw`` shifted multiply-adds.

    Args:
      x: images ``[B, H, W, C]``.
      kernel: ``[kh, kw, 1, C]`` or ``[kh, kw, C]``.
      strides: ``(sh, sw)``.
      padding: 'SAME' (TensorFlow convention), 'VALID', or ``((top, bottom), (left, right))``.

    Returns:
      ``[B, Ho, Wo, C]`` equal (up to float summation order) to
      ``lax.conv_general_dilated`` with ``feature_group_count=C``.
    """
    if x.ndim != 4:
        raise ValueError(f"depthwise_conv2d expects NHWC input, got shape {x.shape}")
    kh, kw = kernel.shape[:2]
    channels = x.shape[-1]
    taps = kernel.reshape(kh, kw, channels).astype(x.dtype)
    sh, sw = strides
    (pt, pb), (pl, pr) = resolve_padding(padding, x.shape[1:3], (kh, kw), (sh, sw))
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    batch, hp, wp, _ = xp.shape
    ho = (hp - kh) // sh + 1
    wo = (wp - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            patch = lax.slice(
                xp,
                (0, i, j, 0),
                (batch, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, channels),
                (1, sh, sw, 1),
            )
            term = patch * taps[i, j]
            out = term if out is None else out + term
    return out


def depthwise_conv2d_xla(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: Padding = "SAME",
) -> jax.Array:
    """The reference: XLA's grouped convolution (``feature_group_count = C``)."""
    kh, kw = kernel.shape[:2]
    channels = x.shape[-1]
    pads = resolve_padding(padding, x.shape[1:3], (kh, kw), strides)
    return lax.conv_general_dilated(
        x,
        kernel.reshape(kh, kw, 1, channels).astype(x.dtype),
        window_strides=tuple(strides),
        padding=pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
    )


class DepthwiseConv(nn.Module):
    """Flax depthwise convolution (depth multiplier 1, no bias).

    Attributes:
      kernel_size: ``(kh, kw)``.
      strides: ``(sh, sw)``.
      padding: 'SAME', 'VALID' or explicit pairs.
      impl: ``"shifted"`` (fast on CPU) or ``"xla"`` (grouped convolution).

    Parameter ``kernel``: ``[kh, kw, 1, C]``, the layout of ``nn.Conv`` with
    ``feature_group_count=C``.
    """

    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: Padding = "SAME"
    impl: str = "shifted"
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, 1, channels), jnp.float32)
        if self.impl == "shifted":
            return depthwise_conv2d(x, kernel, self.strides, self.padding)
        if self.impl == "xla":
            return depthwise_conv2d_xla(x, kernel, self.strides, self.padding)
        raise ValueError(f"impl must be 'shifted' or 'xla', got {self.impl!r}")
