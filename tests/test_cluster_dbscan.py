"""DBSCAN against scikit-learn: identical labels (numbering, noise, border rule), core points, bad input."""

import importlib

import numpy as np
import pytest

from nnjax.cluster import dbscan
from nnjax.errors import NnjaxError

# the module (the package re-exports the function under the same name)
dbscan_module = importlib.import_module("nnjax.cluster.dbscan")
sklearn_cluster = pytest.importorskip("sklearn.cluster")
datasets = pytest.importorskip("sklearn.datasets")

#: relative change of eps that must leave scikit-learn's labels unchanged. Our float32 distances
#: are within a few 1e-7 (relative) of sklearn's float64 ones, and their rounding depends on the
#: CPU (FMA or not); labels that survive a 1e-5 move of eps depend on no pair that rounding flips.
EPS_MARGIN = 1e-5


def _data(name: str) -> tuple[np.ndarray, float, int]:
    rng = np.random.default_rng(0)
    if name == "blobs":
        x, _ = datasets.make_blobs(1500, centers=4, cluster_std=0.8, random_state=0)
        return x, 0.35, 6
    if name == "moons":
        x, _ = datasets.make_moons(1200, noise=0.07, random_state=1)
        return x, 0.1, 5
    if name == "noise":  # blobs buried in uniform noise: many border and noise points
        x, _ = datasets.make_blobs(900, centers=3, random_state=2)
        return np.concatenate([x, rng.uniform(-12, 12, (600, 2))]), 0.7, 8
    if name == "5-d":
        return rng.normal(size=(700, 5)), 1.1, 6
    if name == "one-cell":  # every point in one grid cell: the window is the whole data set
        return rng.normal(size=(1200, 2)), 20.0, 5
    raise KeyError(name)


def _compare(x: np.ndarray, eps: float, min_pts: int):
    x = x.astype(np.float32)
    ours = dbscan(x, eps, min_pts)
    ref = sklearn_cluster.DBSCAN(eps=eps, min_samples=min_pts).fit(x)
    for nearby in (eps * (1 - EPS_MARGIN), eps * (1 + EPS_MARGIN)):  # exact equality is well-posed here
        np.testing.assert_array_equal(sklearn_cluster.DBSCAN(eps=nearby, min_samples=min_pts).fit(x).labels_,
                                      ref.labels_)
    labels = np.asarray(ours.labels)
    core = np.zeros(len(x), bool)
    core[ref.core_sample_indices_] = True
    np.testing.assert_array_equal(np.asarray(ours.core), core)
    # same clusters with the same numbering, same noise, same border assignment
    np.testing.assert_array_equal(labels, ref.labels_)
    assert ours.n_clusters == len(set(ref.labels_) - {-1})
    return labels


@pytest.mark.parametrize("name", ["blobs", "moons", "noise", "5-d", "one-cell"])
def test_dbscan_equals_sklearn(name):
    x, eps, min_pts = _data(name)
    labels = _compare(x, eps, min_pts)
    if name == "moons":
        assert len(set(labels) - {-1}) == 2
    if name == "noise":
        assert (labels == -1).sum() > 100 and len(set(labels) - {-1}) >= 2


def test_border_point_reachable_from_two_clusters_follows_sklearn_rule():
    # b (x = 0.7) is within eps of a core point of each cluster but is not core itself;
    # sklearn gives it to the cluster whose first core point comes first in the data.
    left = [0.0, 0.05, 0.1, 0.2]
    right = [1.2, 1.3, 1.35, 1.4]
    cases = ((left + [0.7] + right, left), (right + [0.7] + left, right), ([0.7] + right + left, right))
    for order, winner in cases:
        x = np.array(order, np.float32)[:, None]
        labels = _compare(x, 0.55, 4)
        assert labels[order.index(0.7)] == labels[order.index(winner[0])] == 0
    # and for many shuffles of a border-heavy data set
    x, eps, min_pts = _data("noise")
    for seed in range(2):
        _compare(x[np.random.default_rng(seed).permutation(len(x))], eps, min_pts)


@pytest.mark.parametrize("cache", [True, False])
def test_dbscan_20000_points(cache, monkeypatch):
    # with the neighbour flags cached (the default at this size), and recomputed in every
    # pass (the path for data whose flags would not fit in memory)
    if not cache:
        monkeypatch.setattr(dbscan_module, "_CACHE_ELEMENTS", 0)
    x, _ = datasets.make_blobs(20000, centers=5, random_state=0)
    _compare(x, 0.3, 10)


def test_min_pts_one_makes_every_point_core():
    x = np.array([[0.0], [0.1], [5.0]], np.float32)  # 1-D, sharing the border test's program
    res = dbscan(x, 0.5, 1)
    assert np.asarray(res.core).all()
    np.testing.assert_array_equal(np.asarray(res.labels), [0, 0, 1])


@pytest.mark.parametrize(
    "x,eps,min_pts,message",
    [
        (np.zeros((4, 2)), 0.0, 3, "eps must be a positive"),
        (np.zeros((4, 2)), -1.0, 3, "eps must be a positive"),
        (np.zeros((4, 2)), float("nan"), 3, "eps must be a positive"),
        (np.zeros((4, 2)), "0.5", 3, "eps must be a positive number"),
        (np.zeros((4, 2)), 0.5, 0, "min_pts"),
        (np.zeros((0, 2)), 0.5, 3, "empty"),
        (np.array([[0.0, np.nan]]), 0.5, 3, "NaN"),
    ],
)
def test_dbscan_bad_input_is_a_clear_error(x, eps, min_pts, message):
    with pytest.raises(NnjaxError, match=message):
        dbscan(x, eps, min_pts)
