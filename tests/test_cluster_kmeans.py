"""K-means: Lloyd iterations against scikit-learn, k-means++ seeding, restarts, empty clusters, bad input."""

import jax
import numpy as np
import pytest

from nnjax.cluster import kmeans, kmeans_plusplus, lloyd
from nnjax.errors import NnjaxError

sklearn_cluster = pytest.importorskip("sklearn.cluster")


def blobs(n: int, k: int, seed: int, spread: float = 10.0, std: float = 1.5, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-spread, spread, (k, 2))
    truth = rng.integers(0, k, n)
    x = centres[truth] + std * rng.normal(size=(n, 2)) + offset
    return x.astype(np.float32), truth


@pytest.mark.parametrize("seed,k,offset", [(0, 5, 0.0), (1, 8, 100.0)])
def test_lloyd_from_same_centroids_matches_sklearn(seed, k, offset):
    # Overlapping blobs (several iterations needed), once far from the origin.
    x, _ = blobs(700, k, seed, offset=offset)
    init = x[np.random.default_rng(seed + 10).choice(len(x), k, replace=False)]
    ours = lloyd(x, init)
    ref = sklearn_cluster.KMeans(n_clusters=k, init=init, n_init=1).fit(x)
    assert ref.n_iter_ > 2  # the comparison covers several Lloyd steps, not just one assignment
    np.testing.assert_array_equal(np.asarray(ours.labels), ref.labels_)
    np.testing.assert_allclose(float(ours.inertia), ref.inertia_, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ours.centroids), ref.cluster_centers_, rtol=1e-5, atol=1e-4)
    assert int(ours.n_iter) == ref.n_iter_


def test_kmeans_with_restarts_finds_the_blobs_and_best_inertia():
    x, truth = blobs(600, 5, seed=3, spread=30.0, std=1.0)
    res = kmeans(jax.random.PRNGKey(0), x, 5, n_init=4)
    labels = np.asarray(res.labels)
    # every true blob maps to exactly one cluster
    pairs = {(t, p) for t, p in zip(truth, labels, strict=True)}
    assert len(pairs) == 5 and len({p for _, p in pairs}) == 5
    ref = sklearn_cluster.KMeans(5, n_init=10, random_state=0).fit(x)
    np.testing.assert_allclose(float(res.inertia), ref.inertia_, rtol=1e-5)
    # a pure function of the key
    again = kmeans(jax.random.PRNGKey(0), x, 5, n_init=4)
    np.testing.assert_array_equal(np.asarray(again.centroids), np.asarray(res.centroids))


def test_kmeans_plusplus_seeds_one_point_per_separated_blob():
    x, truth = blobs(500, 6, seed=4, spread=200.0, std=0.5)
    seeds = np.asarray(kmeans_plusplus(jax.random.PRNGKey(1), x, 6))
    rows = [np.flatnonzero((x == s).all(axis=1)) for s in seeds]
    assert all(len(r) >= 1 for r in rows)  # seeds are data points
    assert len({int(truth[r[0]]) for r in rows}) == 6  # one per blob (D² sampling)


def test_empty_cluster_is_reseeded_not_nan():
    x = np.array([[0, 0], [0, 0.2], [5, 5], [5, 5.2], [10, 0], [10, 0.2]], np.float32)
    init = np.array([[0, 0], [100, 100], [7, 3]], np.float32)  # centroid 1 gets no point
    res = lloyd(x, init)
    centroids = np.asarray(res.centroids)
    assert np.isfinite(centroids).all()
    assert len(np.unique(np.asarray(res.labels))) == 3  # the far centroid was moved onto the data
    np.testing.assert_allclose(float(res.inertia), 3 * 2 * 0.1**2, rtol=1e-4)
    # identical points: fewer distinct points than k still gives finite centroids
    # (same shapes as the test above: no new compilation)
    dup = kmeans(jax.random.PRNGKey(0), np.ones((600, 2), np.float32), 5, n_init=4)
    assert np.isfinite(np.asarray(dup.centroids)).all() and float(dup.inertia) == 0.0
    dup = lloyd(np.ones((6, 2), np.float32), init)
    np.testing.assert_array_equal(np.asarray(dup.centroids), np.ones((3, 2)))


def test_negative_tolerance_runs_fixed_iterations():
    x, _ = blobs(300, 3, seed=5)
    res = lloyd(x, x[:3], max_iter=17, tol=-1.0)
    assert int(res.n_iter) == 17


@pytest.mark.parametrize(
    "x,k,message",
    [
        (np.zeros((3, 2)), 4, "more than the 3 points"),
        (np.zeros((3, 2)), 0, "positive integer"),
        (np.zeros((0, 2)), 1, "empty"),
        (np.array([[0.0, 1.0], [np.nan, 2.0]]), 1, "NaN"),
        (np.array([[0.0, 1.0], [np.inf, 2.0]]), 1, "row 1"),
        (np.zeros(5), 1, "2-D"),
        ([["a", "b"]], 1, "numeric"),
    ],
)
def test_kmeans_bad_input_is_a_clear_error(x, k, message):
    with pytest.raises(NnjaxError, match=message):
        kmeans(jax.random.PRNGKey(0), x, k)


def test_lloyd_bad_centroids():
    with pytest.raises(NnjaxError, match="features"):
        lloyd(np.zeros((5, 2)), np.zeros((2, 3)))
    with pytest.raises(NnjaxError, match="more than the 5 points"):
        lloyd(np.zeros((5, 2)), np.zeros((6, 2)))
