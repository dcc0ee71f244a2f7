"""2-D convolution (NHWC, stride 1, 'SAME' padding, odd kernels) with a faster derivative on CPU.

``conv2d(x, kernel, impl=...)`` computes ``lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
dimension_numbers=('NHWC', 'HWIO', 'NHWC'))``; the implementations differ only in how XLA is
asked to do it, not in the function (they agree to float32 rounding; tests check values and
both gradients against ``lax``):

* ``"xla"``: ``lax.conv_general_dilated`` and JAX's own derivative.
* ``"fast"``: a ``custom_vjp`` that avoids XLA:CPU's slow paths (measured in
  ``benchmarks/bench_mnist.py``):

  - a convolution with few output channels (the thesis's 32 -> 1) runs forward as one
    matrix product with ``kh * kw`` outputs per pixel, ``z = x @ W`` (``[N, H, W, kh*kw]``),
    and a sum of the ``kh * kw`` shifted planes of ``z`` (Eigen's convolution with
    ``Cout = 1`` is a matrix-vector product and 3-6x slower). Its gradients start from the
    adjoint of that sum, ``dz`` (shifted planes of ``g``): ``dx = dz @ W^T`` and
    ``dW = dz^T x``, two matrix products over the ``N*H*W`` rows. JAX's own weight gradient
    is a convolution contracting over the batch, for which XLA transposes ``x`` to
    ``[Cin, H, W, N]``;
  - a convolution of a narrow input (a grayscale image: ``kh*kw*Cin = 9``) runs forward as
    ``kh*kw*Cin`` shifted multiply-adds in one element-wise loop (Eigen's convolution
    contracts over only 9 values per output there);
  - the saved input passes through :func:`materialize` (an exact identity XLA will not
    recompute), so the transposes of the weight gradient read a buffer;
  - everything else (forward and input gradient of wide convolutions, the weight gradient
    of wide ones) is ``lax.conv_general_dilated`` as before.

* ``"auto"``: ``"fast"`` on CPU, ``"xla"`` elsewhere (GPU/TPU convolutions are cuDNN's).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from nnjax.nn.batch_norm import scaled_kernel

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
IMPLS = ("xla", "fast", "auto")
#: a convolution with at most this many output channels uses the matrix-product forward and
#: gradients in ``impl="fast"``.
NARROW_OUTPUT = 4
#: a convolution with at most this many input taps (kh * kw * Cin, 9 for a 3x3 kernel on a
#: grayscale image) runs forward as shifted multiply-adds in ``impl="fast"``.
NARROW_INPUT_TAPS = 27


def conv_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x [B, H, W, Cin]`` * ``kernel [kh, kw, Cin, Cout]`` -> ``[B, H, W, Cout]`` (stride 1, SAME)."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DIMENSION_NUMBERS)


def _shift_sum(z: jax.Array, kh: int, kw: int, cout: int) -> jax.Array:
    """``y[n, h, w, o] = sum_{i, j} z[n, h + i - kh//2, w + j - kw//2, (i*kw + j)*cout + o]`` (zero outside).

    ``z [N, H, W, kh*kw*cout]`` -> ``[N, H, W, cout]``: the spatial half of a convolution whose
    channel half, ``z = x @ W``, is already done.
    """
    n, height, width, _ = z.shape
    ph, pw = kh // 2, kw // 2
    zp = jnp.pad(z, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    total = None
    for i in range(kh):
        for j in range(kw):
            t = (i * kw + j) * cout
            part = zp[:, i : i + height, j : j + width, t : t + cout]
            total = part if total is None else total + part
    return total


def _narrow_forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
    kh, kw, cin, cout = kernel.shape
    flat = kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)  # [Cin, (i, j, o)]
    z = lax.dot_general(x, flat, (((3,), (0,)), ((), ())))
    return _shift_sum(z, kh, kw, cout)


def _narrow_input_forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``sum_{i, j, c} shift_{i, j}(x[..., c]) * kernel[i, j, c, :]``: one element-wise loop of
    ``kh*kw*Cin`` multiply-adds per output, for inputs with very few channels."""
    kh, kw, cin, _ = kernel.shape
    height, width = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    total = None
    for i in range(kh):
        for j in range(kw):
            for c in range(cin):
                part = xp[:, i : i + height, j : j + width, c : c + 1] * kernel[i, j, c]
                total = part if total is None else total + part
    return total


def _narrow_grads(x: jax.Array, g: jax.Array, kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Both gradients of :func:`_narrow_forward`: ``dz`` = the shifted planes of ``g`` (the
    adjoint of the shift-sum), then ``dx = dz @ W^T`` and ``dW = dz^T x`` (two matrix products
    over the ``N*H*W`` rows; no transpose of ``x``)."""
    kh, kw, cin, cout = kernel.shape
    shape = (*g.shape[:3], kh * kw * cout)
    (dz,) = jax.linear_transpose(lambda z: _shift_sum(z, kh, kw, cout), jax.ShapeDtypeStruct(shape, g.dtype))(g)
    flat = kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)
    dx = lax.dot_general(dz, flat, (((3,), (1,)), ((), ())))
    dflat = lax.dot_general(dz.reshape(-1, shape[-1]), x.reshape(-1, cin), (((0,), (0,)), ((), ())))  # [(i,j,o), c]
    return dx, dflat.reshape(kh, kw, cout, cin).transpose(0, 1, 3, 2)


def _weight_grad_xla(x: jax.Array, g: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.vjp(lambda k: conv_xla(x, k), kernel)[1](g)[0]


def _input_grad_xla(g: jax.Array, kernel: jax.Array) -> jax.Array:
    flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)  # [kh, kw, Cout, Cin]
    return lax.conv_general_dilated(g, flipped, (1, 1), "SAME", dimension_numbers=DIMENSION_NUMBERS)


def _is_narrow(kernel: jax.Array) -> bool:
    return kernel.shape[3] <= NARROW_OUTPUT


def _is_narrow_input(kernel: jax.Array) -> bool:
    kh, kw, cin, _ = kernel.shape
    return kh * kw * cin <= NARROW_INPUT_TAPS


@jax.custom_vjp
def conv_fast(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The same function as :func:`conv_xla`, with the derivative described in the module docstring."""
    if _is_narrow(kernel):
        return _narrow_forward(x, kernel)
    if _is_narrow_input(kernel):
        return _narrow_input_forward(x, kernel)
    return conv_xla(x, kernel)


def materialize(x: jax.Array) -> jax.Array:
    """``x`` itself, computed so that XLA keeps it as one buffer instead of recomputing it.

    ``x / (1 + 0 * x)`` equals ``x`` exactly for finite values (infinities become NaN, which
    a diverged run has anyway); the element-wise division is on XLA's list of "expensive"
    operations, which its fusion pass does not duplicate into consumers. Without it, XLA
    recomputes the producer of ``x`` (BatchNorm + ReLU) inside the transposes of the weight
    gradient, and XLA:CPU runs such a fused transpose several times slower than a plain one.
    """
    return x / (1 + 0 * x)


def _conv_fast_fwd(x: jax.Array, kernel: jax.Array):
    if x.shape[-1] > 1:
        x = materialize(x)
    return conv_fast(x, kernel), (x, kernel)


def _conv_fast_bwd(residuals, g: jax.Array):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    if _is_narrow(kernel):
        return _narrow_grads(x, g, kernel)
    return _input_grad_xla(g, kernel), _weight_grad_xla(x, g, kernel)


conv_fast.defvjp(_conv_fast_fwd, _conv_fast_bwd)


def _supported(x: jax.Array, kernel: jax.Array) -> bool:
    kh, kw = kernel.shape[:2]
    return x.ndim == 4 and kernel.ndim == 4 and kh % 2 == 1 and kw % 2 == 1


def resolve_impl(impl: str) -> str:
    """``"auto"`` -> ``"fast"`` when JAX's default backend is the CPU, else ``"xla"``."""
    if impl not in IMPLS:
        raise ValueError(f"conv impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        return "fast" if jax.default_backend() == "cpu" else "xla"
    return impl


def conv2d(x: jax.Array, kernel: jax.Array, impl: str = "auto") -> jax.Array:
    """Stride-1 'SAME' convolution, ``x [N, H, W, Cin]`` * ``kernel [kh, kw, Cin, Cout]`` -> ``[N, H, W, Cout]``.

    ``impl``: ``"xla"``, ``"fast"`` or ``"auto"`` (see the module docstring). Even kernel sizes
    always use ``"xla"``.
    """
    if resolve_impl(impl) == "fast" and _supported(x, kernel):
        return conv_fast(x, kernel)
    return conv_xla(x, kernel)


class Conv2D(nn.Module):
    """A stride-1, 'SAME'-padded convolution with the parameter layout of ``flax.linen.Conv``.

    Parameters: ``kernel [kh, kw, Cin, features]`` and (``use_bias``) ``bias [features]``,
    so checkpoints are interchangeable with ``nn.Conv(features, kernel_size, padding='SAME')``.
    Input ``[B, H, W, Cin]`` -> output ``[B, H, W, features]``.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    use_bias: bool = True
    impl: str = "auto"
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
        y = conv2d(x, kernel.astype(x.dtype), self.impl)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(x.dtype)
        return y


class StridedConv(nn.Module):
    """``lax.conv_general_dilated`` with strides and explicit padding, no bias, the parameter layout
    of ``flax.linen.Conv`` (``kernel [kh, kw, Cin, features]``, lecun-normal): the image stems of
    MobileNetV2 and EfficientNet-Lite. ``__call__(x [B, H, W, Cin], out_scale=None)``; ``out_scale
    [features]`` multiplies the kernel's output channels (a folded BatchNorm,
    :mod:`nnjax.nn.batch_norm`).
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]

    @nn.compact
    def __call__(self, x: jax.Array, out_scale: jax.Array | None = None) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        return lax.conv_general_dilated(x, scaled_kernel(kernel, out_scale, x.dtype), self.strides,
                                        tuple(self.padding), dimension_numbers=DIMENSION_NUMBERS)
