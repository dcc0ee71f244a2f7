"""A model's first values (Flax ``init``) as one XLA program that compiles quickly.

An initialiser runs once, so its compile time is all it costs. Run op by op, every random draw
of a new shape is its own XLA program; on CPU, with JAX's rolled threefry lowering (a while
loop), each draw took LLVM about 0.6 s at XLA's default optimisation level (2), so the thesis
CNN's eager ``init`` took 6 s on a 2-core machine. As one program compiled at level 1 it took
about 1 s, and the values are the same bits (threefry is integer arithmetic;
tests/test_train_core.py compares with the eager init). nnjax now also lowers threefry unrolled
on CPU (:mod:`nnjax._threefry`: one draw's compile 1.1 s -> 0.15 s), which shortens both.
On other backends the program is compiled with their defaults.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from nnjax._threefry import use_unrolled_threefry_on_cpu

use_unrolled_threefry_on_cpu()  # initialisers' draws: the same bits, compiled without a while loop

#: XLA compile options on CPU for programs that run once: LLVM's optimisation level 1 instead of 2.
RUN_ONCE_OPTIONS = {"xla_backend_optimization_level": 1}


def run_once(fn: Callable[..., Any], *args: Any) -> Any:
    """``jax.jit(fn)(*args)``, compiled with :data:`RUN_ONCE_OPTIONS` on CPU (for initialisers).

    ``args`` are arrays (or pytrees of arrays); bind anything static in ``fn``, e.g.
    ``run_once(lambda key: model.init(key, example, train=False), key)``. Called while JAX
    traces (inside ``jit``), it is plain ``fn(*args)``.
    """
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(args)):
        return fn(*args)  # already inside a traced function: it becomes part of that program
    options = RUN_ONCE_OPTIONS if jax.default_backend() == "cpu" else None
    return jax.jit(fn).lower(*args).compile(compiler_options=options)(*args)


def variable_shapes(model: Any, *example: Any) -> Any:
    """``jax.eval_shape`` of ``model.init(key, *example)``: every variable's ``jax.ShapeDtypeStruct``, no compute.

    ``example``: arrays (or pytrees of arrays) whose shapes and dtypes ``init`` traces with; only
    their shapes and dtypes matter. The result is cached per ``(model, example shapes)`` in this
    process: tracing a MobileNetV2's ``init`` takes 0.5-1.8 s on a 2-core CPU, and every load of
    pretrained weights and of an export needs the same tree. Treat it as read-only.
    """
    leaves, treedef = jax.tree_util.tree_flatten(example)
    signature = (treedef, tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves))
    try:
        hash(model)
    except TypeError:  # a module with an unhashable field: traced every time
        return _trace_shapes(model, signature)
    return _cached_shapes(model, signature)


@functools.lru_cache(maxsize=32)
def _cached_shapes(model: Any, signature: tuple) -> Any:
    return _trace_shapes(model, signature)


def _trace_shapes(model: Any, signature: tuple) -> Any:
    treedef, specs = signature
    example = jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in specs])
    return jax.eval_shape(lambda *args: model.init(jax.random.key(0), *args), *example)
