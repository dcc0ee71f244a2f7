"""End to end: the ``clustering`` experiment's quick profile, its figures and summary, and bad options."""

import json

import numpy as np
import pytest

from nnjax.errors import NnjaxError
from nnjax.experiment import get, run_experiment


def test_clustering_quick_profile(tmp_path):
    experiment = get("clustering")
    summary = run_experiment(experiment, experiment.make_config("quick"), tmp_path, seed=0, progress=False)
    for key in ("kmeans_inertia", "kmeans_silhouette", "dbscan_clusters", "dbscan_noise", "dunn"):
        assert key in summary
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["dbscan_clusters"] == summary["dbscan_clusters"]
    for name in ("kmeans_blobs.png", "moons_kmeans_vs_dbscan.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    # five well-separated blobs: K-means recovers them exactly
    assert summary["kmeans_blob_ari"] == pytest.approx(1.0)
    assert summary["kmeans_silhouette"] > 0.6 and summary["dunn"] > 0.05
    # inertia of 1000 points around their blob centre with unit variance in 2-D: about 2 per point
    assert 1600 < summary["kmeans_inertia"] < 2400
    # two moons: DBSCAN finds both and flags outliers as noise; K-means cuts across them
    assert summary["dbscan_clusters"] == 2
    assert 0 < summary["dbscan_noise"] <= 30 and summary["dbscan_outliers_caught"] == summary["dbscan_noise"]
    assert summary["moons_dbscan_ari"] > 0.95 > 0.6 > summary["moons_kmeans_ari"]
    assert summary["moons_dunn_dbscan"] > summary["moons_dunn_kmeans"]
    assert set(experiment.thesis) <= set(summary)  # every thesis number has its nnjax number in the report


def test_moons_and_blobs_generators_are_seeded():
    from experiments.clustering import adjusted_rand_index, make_blobs, make_moons

    a = make_moons(np.random.default_rng(3), 100, 0.05, 5)
    b = make_moons(np.random.default_rng(3), 100, 0.05, 5)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == (105, 2) and (a[1] == -1).sum() == 5
    x, truth = make_blobs(np.random.default_rng(0), 50, 5, 1.0)
    assert x.shape == (50, 2) and set(truth) == set(range(5))
    assert adjusted_rand_index(truth, (truth + 1) % 5) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"k": 20, "points": 10}, "larger than --points"),
        ({"eps": 0.0}, "--eps must be a positive"),
        ({"eps": -0.5}, "--eps must be a positive"),
        ({"min_pts": 0}, "--min-pts"),
        ({"k": 0}, "--k must be at least 1"),
    ],
)
def test_bad_options_are_clear_errors(overrides, message):
    with pytest.raises(NnjaxError, match=message):
        get("clustering").make_config("quick", **overrides)


def test_cli_reports_bad_option_without_traceback(tmp_path, capsys):
    from nnjax.cli import main

    code = main(["run", "clustering", "--quick", "--eps", "0", "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--eps must be a positive" in err and "Traceback" not in err
