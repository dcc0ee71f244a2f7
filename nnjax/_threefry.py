"""Threefry random bits on CPU without an XLA while loop: the same bits, about 10x faster.

JAX lowers its threefry2x32 hash (every ``jax.random`` draw: dropout masks, initialisers,
augmentation) in two ways: unrolled (20 rounds written out, on GPU and TPU) and, on CPU only,
as a ``fori_loop`` of 5 iterations to keep programs small. XLA:CPU runs that loop as a while
loop whose every iteration reads and writes the whole state arrays, and compiles it slowly:
one dropout mask of ``[64, 12, 64, 64]`` (MiniLM's attention probabilities at 64 x 64 tokens)
took 24-31 ms with the loop and 2.2-2.6 ms unrolled, its compile 1.1 s against 0.15 s
(2-core AMD EPYC, AVX-512; both lowerings give bit-identical values, the same arithmetic in the
same order). :func:`use_unrolled_threefry_on_cpu` registers JAX's own unrolled lowering for the
CPU platform; nnjax's training modules call it when they are imported.

It touches a private JAX name, so it is applied only where it was checked: a jaxlib of
:data:`nnjax._xla._CHECKED_JAXLIB` with those names present, and ``NNJAX_XLA_DEFAULTS`` not
``0`` (the same opt-out as the XLA flags). Programs lowered before the call keep the loop.
"""

from __future__ import annotations

from nnjax._xla import _jaxlib_checked, opted_out

_applied: bool | None = None


def use_unrolled_threefry_on_cpu() -> bool:
    """Lower threefry2x32 unrolled on CPU from now on (idempotent); True when it is in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if opted_out() or not _jaxlib_checked():
        return False
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
    except ImportError:
        return False
    rule = getattr(threefry2x32, "_threefry2x32_lowering_rule", None)
    primitive = getattr(threefry2x32, "threefry2x32_p", None)
    if rule is None or primitive is None:
        return False
    mlir.register_lowering(primitive, rule, platform="cpu")
    _applied = True
    return True
