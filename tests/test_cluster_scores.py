"""Quality scores: silhouette against scikit-learn, Dunn index against a brute-force formula, inertia."""

import numpy as np
import pytest

from nnjax.cluster import dunn_index, inertia, silhouette_samples, silhouette_score
from nnjax.errors import NnjaxError

metrics = pytest.importorskip("sklearn.metrics")


def _data(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [4.0, 0.5], [1.0, 5.0], [6.0, 6.0]])
    truth = rng.integers(0, 4, n)
    x = (centres[truth] + rng.normal(size=(n, 2))).astype(np.float32)
    return x, truth


def _brute_dunn(x: np.ndarray, labels: np.ndarray) -> float:
    """min over cluster pairs of the closest cross pair / max over clusters of the farthest pair."""
    x = x.astype(np.float64)
    clusters = [x[labels == c] for c in np.unique(labels)]
    diameter = 0.0
    for c in clusters:
        for p in c:
            diameter = max(diameter, float(np.sqrt(((c - p) ** 2).sum(1)).max()))
    separation = np.inf
    for i, a in enumerate(clusters):
        for b in clusters[i + 1 :]:
            for p in a:
                separation = min(separation, float(np.sqrt(((b - p) ** 2).sum(1)).min()))
    return separation / diameter


def test_silhouette_equals_sklearn():
    x, truth = _data()
    # non-contiguous labels, a -1 label (a cluster like any other here) and a singleton cluster
    labels = np.array([-1, 3, 7, 9])[truth]
    labels[17] = 42
    ours = silhouette_score(x, labels)
    ref = metrics.silhouette_score(x.astype(np.float64), labels)
    assert abs(ours - ref) < 1e-5
    per_point = silhouette_samples(x, labels)
    np.testing.assert_allclose(per_point, metrics.silhouette_samples(x.astype(np.float64), labels), atol=1e-5)
    assert per_point[17] == 0.0  # singleton cluster convention
    # a worse clustering scores lower
    shuffled = np.random.default_rng(1).permutation(labels)
    assert silhouette_score(x, shuffled) < ours - 0.3


def test_silhouette_can_leave_noise_out():
    x, truth = _data()
    labels = truth.copy()
    labels[::7] = -1
    kept = labels != -1
    ours = silhouette_score(x, labels, noise=-1)
    ref = metrics.silhouette_score(x[kept].astype(np.float64), labels[kept])
    assert abs(ours - ref) < 1e-5
    assert np.isnan(silhouette_samples(x, labels, noise=-1)[0])


def test_dunn_equals_brute_force():
    x, truth = _data(300, seed=2)
    ours = dunn_index(x, truth)
    np.testing.assert_allclose(ours, _brute_dunn(x, truth), rtol=1e-5)
    # separated blobs have a higher Dunn index than a random split of the same points
    random_split = np.random.default_rng(3).integers(0, 4, len(x))
    assert dunn_index(x, random_split) < ours
    # noise left out
    labels = truth.copy()
    labels[::5] = -1
    kept = labels != -1
    np.testing.assert_allclose(dunn_index(x, labels, noise=-1), _brute_dunn(x[kept], labels[kept]), rtol=1e-5)


def test_dunn_of_singletons_is_infinite():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]], np.float32)
    assert dunn_index(x, [0, 1, 2]) == float("inf")


def test_inertia():
    x, truth = _data(200, seed=4)
    means = np.stack([x[truth == c].mean(0) for c in range(4)])
    expected = sum(((x[truth == c] - means[c]) ** 2).sum() for c in range(4))
    np.testing.assert_allclose(inertia(x, truth), expected, rtol=1e-5)
    np.testing.assert_allclose(inertia(x, truth, means), expected, rtol=1e-5)
    with pytest.raises(NnjaxError, match="index the 4 centroids"):
        inertia(x, truth + 1, means)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda x: silhouette_score(x, np.zeros(len(x), int)), "between 2 and"),
        (lambda x: dunn_index(x, np.zeros(len(x), int)), "at least 2 clusters"),
        (lambda x: silhouette_score(x, np.zeros(len(x) - 1, int)), "one integer label per point"),
        (lambda x: dunn_index(x, np.full(len(x), 0.5)), "integer"),
        (lambda x: dunn_index(x, -np.ones(len(x), int), noise=-1), "noise label"),
        (lambda x: silhouette_score(np.where(x > 1, np.nan, x), np.arange(len(x)) % 2), "NaN"),
    ],
)
def test_scores_bad_input_is_a_clear_error(call, message):
    x, _ = _data(20)
    with pytest.raises(NnjaxError, match=message):
        call(x)
