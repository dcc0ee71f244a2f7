"""DBSCAN (thesis appendix E.3): density-based clusters of arbitrary shape, noise as -1.

Definitions (Ester et al. 1996, as the thesis and scikit-learn use them): the
ε-neighbourhood of a point is every point within Euclidean distance ≤ ε, the point itself
included; a point is a *core* point when its neighbourhood holds at least ``min_pts``
points; core points within ε of each other are density-connected and form one cluster; a
non-core point within ε of a core point is a *border* point of that core's cluster; every
other point is noise (label -1).

Algorithm, with nothing quadratic in memory:

1. **Grid bucketing** (jit): points are sorted by the ε-sized cell of their first two
   coordinates, so the neighbours of a point lie in three contiguous runs of the sorted
   array (the 3 cells around its cell in each of 3 adjacent cell columns). Queries go in
   blocks of 32 consecutive sorted points; a block's runs in one column fit one
   contiguous slice, and the longest slice fixes a static window length W (one host
   sync, rounded up to limit recompiles).
2. **Neighbour passes** (jit): each block of queries is compared densely with its three
   window slices (``block × W`` pairs, no per-pair gathers), blocks batched by
   ``lax.map`` so the live memory stays about 2M elements — never ``n × n``. When the
   candidate pairs (n · 3 · W) fit in 128 MB, their neighbour flags are kept as bytes
   after the first (counting) pass, so later passes skip the distances; otherwise every
   pass recomputes them.
3. **Connected components** of the core graph in a ``lax.while_loop``: min-label
   propagation, hooking of the label's own label and pointer jumping (FastSV-style),
   until no label changes; each component ends labelled by its smallest point index.
4. **Borders** take the smallest component label among their core neighbours, and
   clusters are numbered in order of their smallest core index.

Steps 3-4 reproduce scikit-learn's sequential expansion exactly: sklearn grows clusters
in order of their first core point, so a border point reachable from several clusters
goes to the one with the smallest first-core index — the rule applied here — and the
labels come out identical, not merely equal up to renumbering.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnjax.cluster.scores import check_points
from nnjax.errors import NnjaxError

# Most cells per grid axis; beyond it cells grow (still ≥ ε, so results stay exact) to keep
# int32 cell keys. Live elements per chunk of neighbour work.
_MAX_CELLS_PER_AXIS = 30_000
_BLOCK = 32
_BLOCK_ELEMENTS = 1 << 21
# Cache the neighbour flags (1 byte per candidate pair) up to this many pairs (128 MB).
_CACHE_ELEMENTS = 1 << 27
# "No label" in the float neighbour kernel: above every point index (n < 2**24 points).
_NONE = float(1 << 25)
_MAX_POINTS = 1 << 24


class DBSCANResult(NamedTuple):
    """Output of :func:`dbscan`.

    Attributes:
      labels: ``(n,)`` int32 cluster of each point, 0..n_clusters-1, or -1 for noise.
      core: ``(n,)`` bool, True for core points.
      n_clusters: number of clusters found.
      n_iter: connected-component rounds run (for diagnostics).
    """

    labels: jax.Array
    core: jax.Array
    n_clusters: int
    n_iter: int


class _Grid(NamedTuple):
    perm: jax.Array  # (N,) original index of each sorted position (padding sorts last)
    xq: jax.Array  # (d, nb * B) sorted points as queries; padding columns -inf
    xw: jax.Array  # (d, nb * B + W) sorted points as neighbours; padding columns +inf
    slice_start: jax.Array  # (nb, R) first sorted position of each block's slice per cell column


@partial(jax.jit, static_argnames=("block",))
def _grid(x: jax.Array, n_valid, eps, block: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Sort points by grid cell; per block of queries, where its R neighbour slices start.

    ``x`` is ``(N, d)`` of which the first ``n_valid`` rows are points and the rest padding
    (N is bucketed so that nearby sizes share one compiled program). Returns (perm
    ``(N,)``, sorted points ``(N, d)``, slice starts ``(nb, R)``, longest slice). Queries
    are taken in blocks of ``block`` consecutive sorted points; the neighbour runs of a
    block's queries in one cell column (the 3 cells around each query's cell) all lie in
    one contiguous slice of the sorted array, because runs move forward with the sort key.
    The longest such slice fixes the static window length.
    """
    n, d = x.shape
    g = min(d, 2)
    valid = jnp.arange(n) < n_valid
    xg = x[:, :g]
    lo = jnp.min(jnp.where(valid[:, None], xg, jnp.inf), axis=0)
    span = jnp.max(jnp.where(valid[:, None], xg, -jnp.inf), axis=0) - lo
    size = jnp.maximum(eps, span / (_MAX_CELLS_PER_AXIS - 1))  # cell edge per axis, >= eps
    cells = jnp.clip(jnp.floor((xg - lo) / size), 0, _MAX_CELLS_PER_AXIS - 1).astype(jnp.int32)
    if g == 1:
        key = cells[:, 0] + 1
        width = jnp.int32(0)
        rows = jnp.array([0], jnp.int32)
    else:
        width = jnp.max(jnp.where(valid, cells[:, 1], 0)) + 3  # +2: a run never wraps into the next column
        key = cells[:, 0] * width + cells[:, 1] + 1
        rows = jnp.array([-1, 0, 1], jnp.int32)
    # padding sorts after every point and beyond the reach of any point's runs
    key = jnp.where(valid, key, _MAX_CELLS_PER_AXIS * (_MAX_CELLS_PER_AXIS + 3) + 2)
    perm = jnp.argsort(key, stable=True).astype(jnp.int32)
    skey = key[perm]
    first = jnp.arange(0, n, block)
    last = jnp.maximum(jnp.minimum(first + block, n_valid) - 1, first)
    # slice of a block in column r: from its first query's run start to its last query's run end;
    # one search (integer keys: "right of v" is "left of v + 1")
    lo_key = skey[first][:, None] + rows[None, :] * width - 1  # (nb, R)
    hi_key = skey[last][:, None] + rows[None, :] * width + 2
    found = jnp.searchsorted(skey, jnp.concatenate([lo_key, hi_key]), side="left").astype(jnp.int32)
    starts, ends = found[: first.size], found[first.size :]
    longest = jnp.max(jnp.where((first < n_valid)[:, None], ends - starts, 0))
    return perm, x[perm], starts, longest


def _make_grid(perm, xs, starts, n_valid, block: int, window: int) -> _Grid:
    """Pad the sorted points for block queries and window slices (planar layout)."""
    n, d = xs.shape
    valid = jnp.arange(n) < n_valid  # padding sorted last
    xt = xs.T
    xq = jnp.where(valid[None, :], xt, -jnp.inf)
    tail = jnp.full((d, window), jnp.inf, xs.dtype)
    xw = jnp.concatenate([jnp.where(valid[None, :], xt, jnp.inf), tail], axis=1)
    return _Grid(perm, xq, xw, starts)


def _block_near(grid: _Grid, eps2, block: int, window: int, b, st, r: int) -> jax.Array:
    """``(B, W)`` 1.0 where query ``b·B + i`` and slice position ``st[r] + j`` are ε-neighbours.

    Written without compares or selects (``min(sign(ε² − d²) + 1, 1)`` is 1 exactly when
    d² ≤ ε²): XLA:CPU vectorises that arithmetic but not a compare-and-select, a measured
    4-5x difference on this kernel. A slice position already covered by an earlier
    column's slice is masked out, so no pair is counted twice.
    """
    d = grid.xw.shape[0]
    dtype = grid.xw.dtype
    xq = lax.dynamic_slice_in_dim(grid.xq, b * block, block, axis=1)  # (d, B)
    xw = lax.dynamic_slice_in_dim(grid.xw, st[r], window, axis=1)  # (d, W)
    pos = st[r] + jnp.arange(window, dtype=jnp.int32)
    fresh = jnp.ones((window,), dtype)
    for q in range(r):
        fresh = fresh * ((pos < st[q]) | (pos >= st[q] + window)).astype(dtype)
    d2 = sum((xq[j][:, None] - xw[j][None, :]) ** 2 for j in range(d))  # (B, W)
    return jnp.minimum(jnp.sign(eps2 - d2) + 1.0, 1.0) * fresh[None, :]


def _near_mask(grid: _Grid, eps2, block: int, window: int) -> tuple[jax.Array, jax.Array]:
    """Neighbour counts ``(N,)`` (sorted order) and all neighbour flags ``(nb, R, B, W)``
    uint8, computed once and reused by every later pass."""
    runs = grid.slice_start.shape[1]

    def per_block(args):
        b, st = args
        flags = [_block_near(grid, eps2, block, window, b, st, r) for r in range(runs)]
        # counted here, in float: an XLA:CPU sum over the stored uint8 flags is 20x slower
        counts = sum(jnp.sum(f, axis=1) for f in flags)
        return counts, jnp.stack(flags).astype(jnp.uint8)

    batch = max(1, _BLOCK_ELEMENTS // (block * window * runs))
    nb = grid.slice_start.shape[0]
    counts, near = lax.map(per_block, (jnp.arange(nb, dtype=jnp.int32), grid.slice_start), batch_size=batch)
    return counts.reshape(-1), near


def _cached_min(near: jax.Array, grid: _Grid, window: int, values: jax.Array) -> jax.Array:
    """As :func:`_neighbour_reduce` with ``values``, from the cached flags of :func:`_near_mask`."""
    total = grid.xw.shape[1]
    n = values.shape[0]
    dtype = grid.xw.dtype
    vals = jnp.concatenate([values.astype(dtype), jnp.full((total - n,), _NONE, dtype)])
    vw = vals[grid.slice_start[:, :, None] + jnp.arange(window, dtype=jnp.int32)]  # (nb, R, W)
    masked = jnp.maximum(vw[:, :, None, :], (1.0 - near.astype(dtype)) * _NONE)  # (nb, R, B, W)
    return jnp.min(jnp.min(masked, axis=-1), axis=1).reshape(-1)


def _neighbour_reduce(grid: _Grid, eps2, block: int, window: int, values: jax.Array | None) -> jax.Array:
    """Per sorted query: the number of ε-neighbours (``values`` None) or the smallest of
    ``values`` over its ε-neighbours (self included); ``(N,)`` in sorted order.

    ``values`` is ``(N,)`` float in sorted order, ≥ 0, with ``_NONE`` for entries that must
    not count; the minimum is ``_NONE`` or more when no neighbour counts.

    Work goes block by block: ``block`` queries against one ``window``-long contiguous
    slice per cell column — a dense ``block × window`` comparison, no per-pair gathers —
    with the live memory bounded by batching blocks in ``lax.map``.
    """
    total = grid.xw.shape[1]
    n = grid.perm.shape[0]
    nb, runs = grid.slice_start.shape
    dtype = grid.xw.dtype
    if values is not None:
        vals = jnp.concatenate([values.astype(dtype), jnp.full((total - n,), _NONE, dtype)])

    def per_block(args):
        b, st = args  # block index, (R,) slice starts
        acc = None
        for r in range(runs):
            s0 = st[r]
            near = _block_near(grid, eps2, block, window, b, st, r)
            if values is None:
                part = jnp.sum(near, axis=1)
                acc = part if acc is None else acc + part
            else:
                vw = lax.dynamic_slice_in_dim(vals, s0, window)
                part = jnp.min(jnp.maximum(vw[None, :], (1.0 - near) * _NONE), axis=1)
                acc = part if acc is None else jnp.minimum(acc, part)
        return acc

    batch = max(1, _BLOCK_ELEMENTS // (block * window * runs))
    res = lax.map(per_block, (jnp.arange(nb, dtype=jnp.int32), grid.slice_start), batch_size=batch)
    return res.reshape(-1)


@partial(jax.jit, static_argnames=("block", "window", "cache"))
def _dbscan(perm, xs, starts, n_valid, eps2, min_pts, block: int, window: int, cache: bool):
    """Core flags, connected components and borders; labels in original order (-1 noise).

    ``cache``: keep every candidate pair's neighbour flag (1 byte each) so that the passes
    after the first skip the distances; otherwise recompute them in every pass.
    """
    grid = _make_grid(perm, xs, starts, n_valid, block, window)
    n = perm.shape[0]
    if cache:
        # small enough: neighbour flags once (uint8), each later pass a cheap masked min
        counts, near = _near_mask(grid, eps2, block, window)

        def reduce_min(values):
            return _cached_min(near, grid, window, values)
    else:
        # large: recompute the distances in every pass, memory stays O(n + 2M)
        counts = _neighbour_reduce(grid, eps2, block, window, None)

        def reduce_min(values):
            return _neighbour_reduce(grid, eps2, block, window, values)

    core = counts >= min_pts  # sorted order
    big = jnp.int32(n)  # larger than every point index: "no label"
    inv = jnp.zeros(n, jnp.int32).at[perm].set(jnp.arange(n, dtype=jnp.int32))  # original -> sorted

    def min_core_label(lab):
        """Per sorted query: the smallest label among its core neighbours (big if none)."""
        m = reduce_min(jnp.where(core, lab, _NONE))
        return jnp.where(m < n, m, n).astype(jnp.int32)

    def jump(lab):
        """Pointer jumping until every core label is its label's own label."""

        def step(state):
            lab, _ = state
            new = jnp.where(core, lab[inv[jnp.minimum(lab, n - 1)]], big)
            return new, jnp.any(new != lab)

        return lax.while_loop(lambda s: s[1], step, (lab, jnp.asarray(True)))[0]

    def body(state):
        lab, _, _, it = state
        m = min_core_label(lab)  # for every point, core or not
        new = jnp.minimum(lab, jnp.where(core, m, big))  # the smallest label among neighbours
        # hook: the point's current label (a core point) also takes that smallest label
        target = jnp.where(core, inv[jnp.minimum(lab, n - 1)], n)  # n = dropped (out of range)
        new = jump(new.at[target].min(m, mode="drop"))
        return new, m, jnp.any(new != lab), it + 1

    # lab[p] (sorted position p) is the original index of a core point of p's component.
    lab0 = jnp.where(core, perm, big)
    state = (lab0, jnp.full(n, big), jnp.asarray(True), jnp.int32(0))
    lab, m, _, rounds = lax.while_loop(lambda s: s[2], body, state)
    # border points: the smallest component label among their core neighbours, from the last
    # round (which saw the final labels, as it changed nothing)
    lab = jnp.where(core, lab, m)
    # back to original order; number clusters by their smallest core index
    lab_orig = jnp.zeros(n, jnp.int32).at[perm].set(lab)
    core_orig = jnp.zeros(n, bool).at[perm].set(core)
    is_root = core_orig & (lab_orig == jnp.arange(n, dtype=jnp.int32))
    rank = jnp.cumsum(is_root.astype(jnp.int32)) - 1
    labels = jnp.where(lab_orig < n, rank[jnp.minimum(lab_orig, n - 1)], -1)
    return labels, core_orig, jnp.sum(is_root), rounds


def _round_window(w: int) -> int:
    """Window length rounded up to 64·2^j or 96·2^j (at most a third wasted, few distinct sizes)."""
    size = 64
    while size < w:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def _bucket(n: int) -> int:
    """Padded point count: a multiple of 1024 (of 8192 past 65536), so nearby sizes share programs."""
    step = 1024 if n <= 65536 else 8192
    return step * -(-n // step)


def dbscan(x, eps: float, min_pts: int = 5) -> DBSCANResult:
    """DBSCAN clustering of points ``x`` ``(n, d)``.

    Args:
      x: points ``(n, d)``; the grid uses the first two features, distances all of them.
      eps: neighbourhood radius ε > 0, in the units of x (a pair at distance exactly ε is
        neighbours).
      min_pts: MinPts ≥ 1, neighbours (the point itself included) that make a core point;
        scikit-learn's ``min_samples``.

    Returns:
      :class:`DBSCANResult`; labels equal scikit-learn's ``DBSCAN(eps, min_samples=min_pts)``
      (same numbering, same border assignment) up to float rounding of distances at ε.

    Cost: O(n · 3 · W) per neighbour pass, W about the most points in a 3-cell run of the
    ε grid plus a block, times a few component rounds; memory O(n + 2M elements).
    """
    x = check_points(x)
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise NnjaxError(f"eps must be a positive number (the neighbourhood radius), got {eps!r}.")
    if not (math.isfinite(eps) and eps > 0):
        raise NnjaxError(f"eps must be a positive finite radius, got {eps!r}; choose eps > 0.")
    if isinstance(min_pts, bool) or not isinstance(min_pts, (int, np.integer)) or min_pts < 1:
        raise NnjaxError(f"min_pts must be a positive integer (MinPts), got {min_pts!r}.")
    n, d = x.shape
    if n >= _MAX_POINTS:
        raise NnjaxError(
            f"dbscan takes fewer than {_MAX_POINTS} points, got {n}; cluster a subsample or split the data."
        )
    size = _bucket(n)
    xp = jnp.concatenate([x, jnp.zeros((size - n, d), x.dtype)])
    eps_arr = jnp.asarray(eps, x.dtype)
    n_valid = jnp.int32(n)
    perm, xs, starts, longest = _grid(xp, n_valid, eps_arr, _BLOCK)
    window = _round_window(int(longest))
    cache = size * starts.shape[1] * window <= _CACHE_ELEMENTS
    labels, core, n_clusters, rounds = _dbscan(
        perm, xs, starts, n_valid, eps_arr * eps_arr, jnp.int32(min_pts), _BLOCK, window, cache
    )
    return DBSCANResult(labels[:n], core[:n], int(n_clusters), int(rounds))
