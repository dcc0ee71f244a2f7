"""Depthwise 2-D convolution as shifted multiply-adds.

XLA on CPU runs ``lax.conv_general_dilated(..., feature_group_count=C)`` through a
generic grouped-convolution path that is 30-150x slower (measured at MobileNetV2's
shapes, batch 32) than spelling the depthwise convolution out as ``kh * kw`` shifted,
strided slices of the input, each multiplied by one kernel tap and summed. XLA fuses
the taps (and the BatchNorm / ReLU6 that usually follow) into one loop; the backward
pass (a custom VJP) is one more shifted sum (the input gradient) and, for the kernel gradient,
a loop over the images that accumulates block sums of the tap products (:func:`_tap_gradients`).

Layout is NHWC; the kernel is ``[kh, kw, 1, C]`` (Flax's ``nn.Conv`` layout for a
grouped convolution with ``feature_group_count=C``) so parameters are interchangeable
with ``nn.Conv(C, (kh, kw), feature_group_count=C)``.
"""

from __future__ import annotations

import functools
import operator
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


def _tap_plan(size: int, kernel: int, stride: int, before: int, after: int) -> tuple[int, list]:
    """For one spatial axis: output length and, per kernel tap ``i``, the strided source
    window ``(start, count)`` of the *unpadded* input that lands inside the output, and
    the zero rows ``(lead, trail)`` that surround it in the output."""
    out = (size + before + after - kernel) // stride + 1
    plan = []
    for i in range(kernel):
        first = max(0, -(-(before - i) // stride))  # first output whose source is inside
        last = min(out - 1, (size - 1 - i + before) // stride)
        plan.append((stride * first + i - before, last - first + 1, first, out - 1 - last))
    return out, plan


def _window(x: jax.Array, start: tuple[int, int], count: tuple[int, int], step: tuple[int, int]) -> jax.Array:
    """``x [B, H, W, C]`` at rows ``start[0] + step[0] * k`` (``k < count[0]``) and the same for columns:
    ``[B, count[0], count[1], C]``."""
    (r0, c0), (rn, cn), (sr, sc) = start, count, step
    return lax.slice(x, (0, r0, c0, 0), (x.shape[0], r0 + sr * (rn - 1) + 1, c0 + sc * (cn - 1) + 1, x.shape[3]),
                     (1, sr, sc, 1))


def _taps_forward(
    x: jax.Array, taps: jax.Array, strides: tuple[int, int], pads: tuple[tuple[int, int], tuple[int, int]]
) -> jax.Array:
    """The shifted multiply-add sum; ``taps`` is ``[kh, kw, C]``, ``pads`` explicit."""
    kh, kw = taps.shape[:2]
    batch, height, width, channels = x.shape
    sh, sw = strides
    ho, rows = _tap_plan(height, kh, sh, *pads[0])
    wo, cols = _tap_plan(width, kw, sw, *pads[1])
    out = None
    for i, (r0, rn, rlead, rtrail) in enumerate(rows):
        for j, (c0, cn, clead, ctrail) in enumerate(cols):
            if rn <= 0 or cn <= 0:
                continue  # this tap only ever sees padding
            term = _window(x, (r0, c0), (rn, cn), (sh, sw)) * taps[i, j]
            if rlead or rtrail or clead or ctrail:
                term = jnp.pad(term, ((0, 0), (rlead, rtrail), (clead, ctrail), (0, 0)))
            out = term if out is None else out + term
    if out is None:
        return jnp.zeros((batch, ho, wo, channels), x.dtype)
    return out


_NO_PADS = ((0, 0), (0, 0))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _depthwise(x, taps, scale, strides, pads):
    """The shifted sum times ``scale [C]`` (a folded BatchNorm's multiplier, or ones). Scaling the
    output rather than the taps: taps times a scale inside XLA's fused loop made it 3x slower."""
    return _taps_forward(x, taps, strides, pads) * scale


def _depthwise_fwd(x, taps, scale, strides, pads):
    # Under differentiation the output has several consumers (the next layer, BatchNorm's and the
    # activation's backward). With one zero pad per tap, XLA wrote each tap's padded term to memory
    # and summed the nine again inside every consumer; slices of the input padded once fuse into
    # each consumer's loop (MobileNetV2 step with everything trainable, batch 32: 3.7 -> 2.8 s).
    # The padded input is a buffer then, and the kernel gradient reads it (saving ``x`` instead made
    # XLA write one more copy of it per layer, chunked for the gradient's loop).
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    return _taps_forward(padded, taps, strides, _NO_PADS) * scale, (padded, taps, scale)


def _depthwise_bwd(strides, pads, residuals, g):
    """Input gradient: for stride 1 the same shifted sum over the cotangent with the flipped
    kernel, for larger strides one such sum per input phase (:func:`_strided_input_gradient`).
    Kernel gradient: :func:`_tap_gradients`. (Letting XLA transpose the pads and slices itself
    made a fine-tuning step of blocks 14-16 1.7x slower on CPU.) Everything is per channel, so the
    output's ``scale`` multiplies the input gradient and the tap gradients, and the scale's own
    gradient is the tap gradients' dot with the taps: no pass over the activations for it."""
    padded, taps, scale = residuals
    kh, kw = taps.shape[:2]
    height, width = (n - before - after for n, (before, after) in zip(padded.shape[1:3], pads, strict=True))
    if tuple(strides) == (1, 1):
        grad_pads = []
        for size, out_size, k, (before, _after) in zip((height, width), g.shape[1:3], (kh, kw), pads, strict=True):
            lead = k - 1 - before
            grad_pads.append((lead, size - out_size - lead + k - 1))
        # the cotangent padded once, then plain slices: with a zero pad per tap, the fused loop that
        # also applies the previous activation's gradient (a select per element) ran 3-7x slower than
        # either alone (112 x 112 x 32, batch 32: 31-47 ms against 12-13 with the one pad)
        padded_g = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), *((a, b, 0) for a, b in grad_pads), (0, 0, 0)))
        dx = _taps_forward(padded_g, taps[::-1, ::-1], (1, 1), _NO_PADS)
    else:
        dx = _strided_input_gradient(g, taps, (height, width), strides, pads)
    tap_grads = _tap_gradients(padded, g, (kh, kw), strides)
    dscale = jnp.sum(tap_grads * taps, axis=(0, 1))
    return dx * scale, (tap_grads * scale).astype(taps.dtype), dscale.astype(scale.dtype)


def _strided_input_gradient(g: jax.Array, taps: jax.Array, size: tuple[int, int], strides: tuple[int, int],
                            pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
    """The input gradient of a strided depthwise convolution, one output phase at a time.

    Input row ``p = s*u + a`` receives, from every tap ``i`` with ``i - before = a (mod s)``, the
    cotangent row ``u - (i - before - a) / s`` times that tap: each of the ``s * s`` phases is a
    shifted multiply-add sum at the *output's* resolution, and the phases are interleaved once.
    (The cotangent dilated with zeros and summed at full resolution does s * s times the work.)
    """
    kh, kw = taps.shape[:2]
    height, width = size
    sh, sw = strides
    batch, out_h, out_w, channels = g.shape
    rows_per_phase, cols_per_phase = -(-height // sh), -(-width // sw)
    phases = []
    for a in range(sh):
        row = []
        for b in range(sw):
            total = None
            for i in range(kh):
                di, ri = divmod(i - pads[0][0] - a, sh)
                if ri:
                    continue
                for j in range(kw):
                    dj, rj = divmod(j - pads[1][0] - b, sw)
                    if rj:
                        continue
                    # term[u, v] = g[u - di, v - dj], zero outside g
                    shifted = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (di, rows_per_phase - out_h - di, 0),
                                                                 (dj, cols_per_phase - out_w - dj, 0), (0, 0, 0)))
                    term = shifted * taps[i, j]
                    total = term if total is None else total + term
            if total is None:
                total = jnp.zeros((batch, rows_per_phase, cols_per_phase, channels), g.dtype)
            row.append(total)
        phases.append(jnp.stack(row))
    stacked = jnp.stack(phases)  # [sh, sw, B, rows, cols, C]
    interleaved = stacked.transpose(2, 3, 0, 4, 1, 5).reshape(batch, rows_per_phase * sh, cols_per_phase * sw,
                                                                 channels)
    return interleaved[:, :height, :width]


TAP_BLOCK_MAX = 7  # largest block side of the kernel gradient's in-loop partial sums (see _tap_gradients)


def _block_side(size: int) -> int:
    """The largest divisor of ``size`` up to ``TAP_BLOCK_MAX`` (7 at 7 x 7 ... 112 x 112; 1 for a prime size)."""
    return max(d for d in range(1, min(size, TAP_BLOCK_MAX) + 1) if size % d == 0)


def _tap_gradients(x: jax.Array, g: jax.Array, kernel: tuple[int, int], strides: tuple[int, int]) -> jax.Array:
    """The kernel gradient ``[kh, kw, C]`` of a depthwise convolution of the padded input ``x
    [B, Hp, Wp, C]`` with cotangent ``g [B, Ho, Wo, C]``: per tap, the sum over batch and space of the
    tap's strided input slice times ``g``.

    XLA:CPU runs each of the ``kh * kw`` reductions as its own pass over both tensors, and its
    reduction kernels need their operands as whole buffers (every shifted slice was copied first):
    nine copies and nine reductions per layer, ~26 GB/s of traffic for ~100 MB of data. Here one
    loop over the images keeps ``kh * kw`` accumulators ``[Ho / K, Wo / L, C]`` (``K``, ``L``: the
    blocks of :func:`_block_side`): each image adds, per tap, the sum of its ``K * L`` products per
    block, one elementwise fusion that reads the image from cache; the accumulators (a few hundred KB)
    are summed once at the end. MobileNetV2's 17 kernel gradients at 224 px, batch 32, 2 cores:
    ~420 -> ~110 ms (112 x 112 x 32: 51 -> 16 ms; 56 x 56 x 144: 79 -> 14 ms), equal to a float64
    reference within the same ~2e-7 (relative to the largest entry).
    """
    kh, kw = kernel
    sh, sw = strides
    batch, out_h, out_w, channels = g.shape
    block_h, block_w = _block_side(out_h), _block_side(out_w)
    acc_dtype = jnp.promote_types(g.dtype, jnp.float32)  # bfloat16 products summed in float32
    rows, cols = out_h // block_h, out_w // block_w

    offsets = [(a, b) for a in range(block_h) for b in range(block_w)]  # an output's place in its block

    def add_image(n: jax.Array, accs: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        # slices of the whole buffers, not a scan over them: a scan made XLA write one more copy of x
        xi, gi = lax.dynamic_slice_in_dim(x, n, 1), lax.dynamic_slice_in_dim(g, n, 1)
        cots = [_window(gi, (a, b), (rows, cols), (block_h, block_w)).astype(acc_dtype) for a, b in offsets]

        def block_sums(i: int, j: int) -> jax.Array:
            """``[rows, cols, C]``: tap ``(i, j)``'s products of this image, summed per block."""
            terms = (_window(xi, (sh * a + i, sw * b + j), (rows, cols), (sh * block_h, sw * block_w)).astype(acc_dtype)
                     * cot for (a, b), cot in zip(offsets, cots, strict=True))
            return functools.reduce(operator.add, terms)[0]

        return tuple(acc + block_sums(*divmod(t, kw)) for t, acc in enumerate(accs))

    zeros = (jnp.zeros((rows, cols, channels), acc_dtype),) * (kh * kw)
    accs = lax.fori_loop(0, batch, add_image, zeros)
    return jnp.stack([jnp.sum(acc, axis=(0, 1)) for acc in accs]).reshape(kh, kw, channels)


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def depthwise_conv2d(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: Padding = "SAME",
    out_scale: jax.Array | None = None,
) -> jax.Array:
    """Depthwise convolution (depth multiplier 1) as ``kh * kw`` shifted multiply-adds.

    Each tap multiplies a strided slice of the unpadded input by one kernel row vector
    ``[C]`` and is zero-padded to the output size (instead of padding the input once and
    slicing it: XLA fuses pad-of-slice into the sum much better, 2.5-7x on CPU). The
    backward pass is written out as well (a custom VJP), as two more shifted sums.

    Args:
      x: images ``[B, H, W, C]``.
      kernel: ``[kh, kw, 1, C]`` or ``[kh, kw, C]``.
      strides: ``(sh, sw)``.
      padding: 'SAME' (TensorFlow convention), 'VALID', or ``((top, bottom), (left, right))``.
      out_scale: ``[C]`` multiplying each output channel (a folded BatchNorm), or None.

    Returns:
      ``[B, Ho, Wo, C]`` equal (up to float summation order) to
      ``lax.conv_general_dilated`` with ``feature_group_count=C`` (times ``out_scale``).
    """
    if x.ndim != 4:
        raise ValueError(f"depthwise_conv2d expects NHWC input, got shape {x.shape}")
    kh, kw = kernel.shape[:2]
    channels = x.shape[-1]
    if kernel.size != kh * kw * channels:
        raise ValueError(f"kernel {kernel.shape} does not fit {channels} input channels")
    taps = kernel.reshape(kh, kw, channels).astype(x.dtype)
    sh, sw = (int(s) for s in strides)
    pads = resolve_padding(padding, x.shape[1:3], (kh, kw), (sh, sw))
    scale = jnp.ones((channels,), x.dtype) if out_scale is None else out_scale.astype(x.dtype)
    return _depthwise(x, taps, scale, (sh, sw), pads)


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
    def __call__(self, x: jax.Array, out_scale: jax.Array | None = None) -> jax.Array:
        """``x [B, H, W, C]`` -> ``[B, H', W', C]``; ``out_scale [C]`` multiplies each output channel
        (a folded BatchNorm, :mod:`nnjax.nn.batch_norm`; the output, not the taps, see ``_depthwise``)."""
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, 1, channels), jnp.float32)
        if self.impl == "shifted":
            return depthwise_conv2d(x, kernel, self.strides, self.padding, out_scale)
        if self.impl == "xla":
            y = depthwise_conv2d_xla(x, kernel, self.strides, self.padding)
            return y if out_scale is None else y * out_scale.astype(y.dtype)
        raise ValueError(f"impl must be 'shifted' or 'xla', got {self.impl!r}")
