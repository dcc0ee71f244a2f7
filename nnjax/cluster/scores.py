"""Clustering quality scores (inertia, silhouette, Dunn) and the shared input checks.

Every score takes points ``x`` of shape ``(n, d)`` (float, any units; distances are
Euclidean in those units) and integer ``labels`` of shape ``(n,)``. The pairwise scores
(silhouette, Dunn) are O(n²) in time but never hold more than a ``chunk × n`` block of
distances in memory, so they run on tens of thousands of points.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from nnjax.errors import NnjaxError

# Upper bound on the number of float elements one chunk of pairwise work may hold.
_BLOCK_ELEMENTS = 1 << 22


def check_points(x, what: str = "x") -> jax.Array:
    """``x`` as a float JAX array of shape ``(n, d)`` with n ≥ 1, or a clear NnjaxError.

    Rejects non-numeric input, anything that is not 2-D, empty data and NaN / inf values.
    """
    try:
        arr = jnp.asarray(x)
    except (TypeError, ValueError):
        raise NnjaxError(
            f"{what} could not be read as a numeric array; "
            "pass a float array of shape (n_points, n_features)."
        ) from None
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise NnjaxError(
            f"{what} has dtype {arr.dtype}, not numbers; pass a float array of shape (n_points, n_features)."
        )
    if arr.ndim != 2:
        raise NnjaxError(
            f"{what} has shape {tuple(arr.shape)}, but clustering needs a 2-D array (n_points, n_features); "
            "reshape it, e.g. x.reshape(-1, 1) for one feature."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise NnjaxError(
            f"{what} is empty (shape {tuple(arr.shape)}); pass at least one point with at least one feature."
        )
    arr = arr.astype(jnp.result_type(float)) if not jnp.issubdtype(arr.dtype, jnp.floating) else arr
    finite = jnp.isfinite(arr).all(axis=1)
    if not bool(finite.all()):
        row = int(jnp.argmin(finite))
        raise NnjaxError(
            f"{what} contains NaN or infinite values (first at row {row}); "
            "drop or impute those rows before clustering."
        )
    return arr


def check_labels(labels, n: int) -> np.ndarray:
    """``labels`` as a NumPy int array of shape ``(n,)``, or a clear NnjaxError."""
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise NnjaxError(
            f"labels have shape {lab.shape} but x has {n} points; pass one integer label per point."
        )
    if not np.issubdtype(lab.dtype, np.integer):
        floating = np.issubdtype(lab.dtype, np.floating)
        if floating and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise NnjaxError(f"labels have dtype {lab.dtype}; pass integer cluster labels.")
    return lab


def _dense_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered 0..k-1 (in sorted order of the original values) and k."""
    uniq, dense = np.unique(labels, return_inverse=True)
    return dense.astype(np.int32), int(uniq.size)


def _chunk_rows(n: int, d: int) -> int:
    """Rows per chunk so that a ``rows × n × d`` block stays under the element budget."""
    return int(max(1, min(n, _BLOCK_ELEMENTS // max(1, n * d))))


def _pair_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    """Euclidean distances ``(m, n)`` between rows of a ``(m, d)`` and b ``(n, d)``.

    Uses direct differences (no ||a||² − 2a·b + ||b||² cancellation), so distances between
    close points keep full relative precision.
    """
    diff = a[:, None, :] - b[None, :, :]
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def inertia(x, labels, centroids=None) -> float:
    """Sum of squared distances of each point to its cluster's centroid (K-means objective J).

    Args:
      x: points ``(n, d)``.
      labels: ``(n,)`` integer labels; with ``centroids`` they index its rows, otherwise
        any integers (each distinct value is one cluster, its centroid the mean).
      centroids: optional ``(k, d)``.

    Returns:
      J = Σ_i ||x_i − μ_{label_i}||², in squared units of x.
    """
    x = check_points(x)
    lab = check_labels(labels, x.shape[0])
    if centroids is None:
        dense, k = _dense_labels(lab)
        return float(_inertia_about_means(x, jnp.asarray(dense), k))
    centroids = check_points(centroids, "centroids")
    if centroids.shape[1] != x.shape[1]:
        raise NnjaxError(
            f"centroids have {centroids.shape[1]} features but x has {x.shape[1]}; pass matching arrays."
        )
    if lab.min() < 0 or lab.max() >= centroids.shape[0]:
        raise NnjaxError(
            f"labels must index the {centroids.shape[0]} centroids (0..{centroids.shape[0] - 1}); "
            f"got values from {lab.min()} to {lab.max()}."
        )
    return float(_inertia_about(x, jnp.asarray(lab, jnp.int32), centroids.astype(x.dtype)))


@jax.jit
def _inertia_about(x: jax.Array, labels: jax.Array, centroids: jax.Array) -> jax.Array:
    diff = x - centroids[labels]
    return jnp.sum(diff * diff)


@partial(jax.jit, static_argnames=("k",))
def _inertia_about_means(x: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    from nnjax.cluster.kmeans import cluster_sums

    sums, counts = cluster_sums(x, labels, k)
    return _inertia_about(x, labels, sums / jnp.maximum(counts, 1.0)[:, None])


def _bucket(n: int) -> int:
    """Padded length: a multiple of 256, so nearby sizes share one compiled program."""
    return 256 * -(-n // 256)


def _prepare(x, labels, noise: int | None) -> tuple[jax.Array, jax.Array, np.ndarray, int, int]:
    """Checked points padded to a bucket, dense labels padded with -1 (also for left-out
    noise), the mask of kept points, the number of clusters and the chunk size."""
    x = check_points(x)
    lab = check_labels(labels, x.shape[0])
    keep = np.ones(lab.shape, bool) if noise is None else lab != noise
    if not keep.any():
        raise NnjaxError(f"Every point has the noise label {noise}; there is no cluster to score.")
    dense = np.full(lab.shape, -1, np.int32)
    dense[keep], k = _dense_labels(lab[keep])
    n, d = x.shape
    size = _bucket(n)
    xp = jnp.concatenate([x, jnp.zeros((size - n, d), x.dtype)])
    lp = jnp.asarray(np.concatenate([dense, np.full(size - n, -1, np.int32)]))
    return xp, lp, keep, k, _chunk_rows(size, d)


@partial(jax.jit, static_argnames=("k", "chunk"))
def _silhouette_samples(x: jax.Array, labels: jax.Array, k: int, chunk: int) -> jax.Array:
    """Per-point silhouette ``(n,)`` for labels 0..k-1 (-1: padding, not counted; 0 for
    points of singleton clusters)."""
    onehot = jax.nn.one_hot(labels, k, dtype=x.dtype)  # (n, k); all-zero rows for label -1
    counts = onehot.sum(axis=0)  # (k,)

    def per_point(args):
        xi, li = args
        dist = _pair_dists(xi[None, :], x)[0]  # (n,)
        # (k,) summed distance to each cluster; full float32 matmul even on GPU / TPU
        sums = jnp.dot(dist, onehot, precision=jax.lax.Precision.HIGHEST)
        own = counts[li]
        a = sums[li] / jnp.maximum(own - 1.0, 1.0)
        mean_other = jnp.where(jnp.arange(k) == li, jnp.inf, sums / jnp.maximum(counts, 1.0))
        b = jnp.min(mean_other)
        s = (b - a) / jnp.maximum(jnp.maximum(a, b), jnp.finfo(x.dtype).tiny)
        return jnp.where(own > 1, s, 0.0)

    return jax.lax.map(per_point, (x, labels), batch_size=chunk)


def silhouette_samples(x, labels, *, noise: int | None = None) -> np.ndarray:
    """Silhouette coefficient of each point, ``(n,)`` in [-1, 1].

    s(i) = (b − a) / max(a, b), where a is the mean distance from i to the other points of
    its cluster and b the smallest mean distance from i to another cluster; 0 for points in
    singleton clusters (Rousseeuw 1987, scikit-learn's convention). Every distinct label is
    a cluster unless ``noise`` names a label to leave out (e.g. -1 for DBSCAN noise; those
    points get NaN).
    """
    xp, lp, keep, k, chunk = _prepare(x, labels, noise)
    kept = int(keep.sum())
    if not 2 <= k <= kept - 1:
        raise NnjaxError(
            f"The silhouette needs between 2 and n_points - 1 = {kept - 1} clusters, got {k}; "
            "use a clustering with more than one cluster and not one point per cluster."
        )
    values = np.asarray(_silhouette_samples(xp, lp, k, chunk))[: keep.size]
    return np.where(keep, values, np.nan)


def silhouette_score(x, labels, *, noise: int | None = None) -> float:
    """Mean silhouette coefficient over all (kept) points (same value as scikit-learn's)."""
    values = silhouette_samples(x, labels, noise=noise)
    return float(np.mean(values[np.isfinite(values)], dtype=np.float64))


@partial(jax.jit, static_argnames=("chunk",))
def _dunn_parts(x: jax.Array, labels: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
    """(largest within-cluster distance, smallest between-cluster distance) over all pairs
    of points with labels ≥ 0."""
    valid = labels >= 0

    def per_point(args):
        xi, li = args
        dist = _pair_dists(xi[None, :], x)[0]
        same = valid & (labels == li)
        other = valid & (labels != li)
        diam = jnp.max(jnp.where(same, dist, 0.0))
        sep = jnp.min(jnp.where(other, dist, jnp.inf))
        return jnp.where(li >= 0, diam, 0.0), jnp.where(li >= 0, sep, jnp.inf)

    diam, sep = jax.lax.map(per_point, (x, labels), batch_size=chunk)
    return jnp.max(diam), jnp.min(sep)


def dunn_index(x, labels, *, noise: int | None = None) -> float:
    """Dunn index: smallest distance between points of different clusters divided by the
    largest distance between points of the same cluster (its diameter).

    D = min_{i≠j} min_{p∈C_i, q∈C_j} ||p − q|| / max_l max_{p,q∈C_l} ||p − q||. Higher is
    better (compact, well-separated clusters). Every distinct label is a cluster unless
    ``noise`` names a label to leave out (e.g. -1 for DBSCAN noise). Returns ``inf`` when
    every cluster is a single point (all diameters 0).
    """
    xp, lp, _, k, chunk = _prepare(x, labels, noise)
    if k < 2:
        raise NnjaxError(f"The Dunn index needs at least 2 clusters, got {k}; use a clustering with more.")
    diam, sep = _dunn_parts(xp, lp, chunk)
    diam, sep = float(diam), float(sep)
    return float("inf") if diam == 0.0 else sep / diam
