"""Freezing as a partition of the parameter tree, selected by regex over parameter paths.

A parameter's path is its keys joined by ``/`` (``"backbone/block_3/conv/kernel"``).
:func:`path_mask` marks the leaves whose path matches; :func:`partition` splits a tree
into the selected leaves and the rest, with ``None`` holes, so that ``jax.grad`` and the
optimizer see only the trainable part; :func:`combine` puts the two back together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_path(path: Sequence[Any]) -> str:
    """The ``/``-joined string of a ``jax.tree_util`` key path."""
    return "/".join(_key_name(k) for k in path)


def leaf_paths(tree: PyTree) -> list[str]:
    """Every leaf's path string, in ``jax.tree_util`` leaf order."""
    return [leaf_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def path_mask(tree: PyTree, pattern: str | Sequence[str]) -> PyTree:
    """A tree of bools, True where the leaf's path fully matches ``pattern`` (or any of several).

    Example: ``path_mask(params, r"head/.*")`` selects every parameter under ``head``.
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    compiled = [re.compile(p) for p in patterns]
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(c.fullmatch(leaf_path(path)) for c in compiled), tree
    )


def partition(tree: PyTree, mask: PyTree) -> tuple[PyTree, PyTree]:
    """Split ``tree`` into ``(selected, rest)`` by a bool ``mask`` of the same structure.

    Unselected positions hold ``None`` (an empty subtree for JAX), so each part can be
    differentiated or given to an optimizer on its own.
    """
    selected = jax.tree_util.tree_map(lambda x, m: x if m else None, tree, mask)
    rest = jax.tree_util.tree_map(lambda x, m: None if m else x, tree, mask)
    return selected, rest


def combine(*trees: PyTree) -> PyTree:
    """Merge partitions back into one tree: each position takes the first non-None leaf."""

    def pick(*leaves: Any) -> Any:
        return next((leaf for leaf in leaves if leaf is not None), None)

    return jax.tree_util.tree_map(pick, *trees, is_leaf=lambda x: x is None)


def count_params(tree: PyTree) -> int:
    """The number of scalar values in a tree (None holes count zero)."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def param_summary(params: PyTree, mask: PyTree | None) -> dict[str, int]:
    """``{"total", "trainable", "frozen"}`` value counts, the Keras-summary view."""
    total = count_params(params)
    if mask is None:
        return {"total": total, "trainable": total, "frozen": 0}
    trainable = count_params(partition(params, mask)[0])
    return {"total": total, "trainable": trainable, "frozen": total - trainable}
