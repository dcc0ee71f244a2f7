"""Max and average pooling written from the formulas of thesis section 2.3.2.

For a window ``(p, q)`` and strides ``(s, r)`` over a (padded) image ``I``::

    MaxPool(I)(i, j) = max_{m < p, n < q} I(i s + m, j r + n)
    AvgPool(I)(i, j) = 1/(p q) sum_{m < p, n < q} I(i s + m, j r + n)

Layout is NHWC (``[N, H, W, C]``; in general ``[N, *spatial, C]`` with one window size per
spatial axis). Each window offset ``(m, n)`` is one strided slice of the padded input,
and the ``p q`` slices are reduced with ``max`` or ``+``, so the code is the formula.

Padding: ``"VALID"`` (no padding, ``out = floor((in - p) / s) + 1``), ``"SAME"``
(``out = ceil(in / s)``, padding split as XLA/TensorFlow do: the extra pixel goes
after), or explicit ``((lo, hi), ...)`` per spatial axis. Max pooling pads with ``-inf``;
average pooling pads with 0 and divides by the full window (``count_include_pad=True``,
flax's default) or by the number of real pixels in each window (``False``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from nnjax.errors import NnjaxError

Array = jax.Array
Padding = str | Sequence[tuple[int, int]]


def _resolve(
    x: Array, window_shape: Sequence[int], strides: Sequence[int] | None, padding: Padding
) -> tuple[tuple[int, ...], tuple[int, ...], list[tuple[int, int]]]:
    """Validate arguments; return (window, strides, per-spatial-axis (lo, hi) padding)."""
    window = tuple(int(w) for w in window_shape)
    stride = tuple(int(s) for s in (strides if strides is not None else (1,) * len(window)))
    if x.ndim != len(window) + 2:
        raise NnjaxError(
            f"pooling expects inputs [N, {', '.join('S' * len(window))}, C] for a {len(window)}-d window, "
            f"got shape {tuple(x.shape)}; add the batch/channel axes or change window_shape."
        )
    if len(stride) != len(window) or min(window + stride) < 1:
        raise NnjaxError(
            f"window_shape {window} and strides {stride} must have the same length and positive sizes."
        )
    spatial = x.shape[1:-1]
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            pads = [(0, 0)] * len(window)
        elif mode == "SAME":
            pads = []
            for size, w, s in zip(spatial, window, stride, strict=True):
                out = math.ceil(size / s)
                total = max((out - 1) * s + w - size, 0)
                pads.append((total // 2, total - total // 2))
        else:
            raise NnjaxError(f"padding must be 'VALID', 'SAME' or ((lo, hi), ...) pairs, got {padding!r}.")
    else:
        pads = [(int(lo), int(hi)) for lo, hi in padding]
        if len(pads) != len(window):
            raise NnjaxError(f"padding needs one (lo, hi) pair per spatial axis, got {padding!r}.")
    for size, w, (lo, hi) in zip(spatial, window, pads, strict=True):
        if size + lo + hi < w:
            raise NnjaxError(
                f"pooling window {window} is larger than the padded input {tuple(spatial)}; "
                "use a smaller window or 'SAME' padding."
            )
    return window, stride, pads


def _windows(x: Array, window: tuple[int, ...], stride: tuple[int, ...]) -> list[Array]:
    """The slices ``x[:, i*s + m, j*r + n, :]`` over all output (i, j), one per offset (m, n)."""
    spatial = x.shape[1:-1]
    outs = [(size - w) // s + 1 for size, w, s in zip(spatial, window, stride, strict=True)]
    slices = []
    for offset in itertools.product(*(range(w) for w in window)):
        index = (slice(None),)
        index += tuple(slice(m, m + (o - 1) * s + 1, s) for m, o, s in zip(offset, outs, stride, strict=True))
        slices.append(x[index + (slice(None),)])
    return slices


def max_pool(
    x: Array, window_shape: Sequence[int], strides: Sequence[int] | None = None, padding: Padding = "VALID"
) -> Array:
    """Max pooling: ``[N, H, W, C] -> [N, H', W', C]`` (``strides`` default to 1, like flax)."""
    x = jnp.asarray(x)
    window, stride, pads = _resolve(x, window_shape, strides, padding)
    lowest = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
    padded = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=lowest)
    out = None
    for part in _windows(padded, window, stride):
        out = part if out is None else jnp.maximum(out, part)
    return out


def avg_pool(
    x: Array,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: Padding = "VALID",
    count_include_pad: bool = True,
) -> Array:
    """Average pooling: ``[N, H, W, C] -> [N, H', W', C]``.

    With ``count_include_pad`` the sum is divided by the window size ``p q``; otherwise by
    the number of un-padded pixels the window covers (same as flax's ``avg_pool``).
    """
    x = jnp.asarray(x)
    window, stride, pads = _resolve(x, window_shape, strides, padding)
    padded = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    total = sum(_windows(padded, window, stride))
    if count_include_pad:
        return total / math.prod(window)
    ones = jnp.pad(jnp.ones((1, *x.shape[1:-1], 1), x.dtype), [(0, 0), *pads, (0, 0)])
    return total / sum(_windows(ones, window, stride))
