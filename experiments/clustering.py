"""Experiment ``clustering``: K-means and DBSCAN (thesis section 1.2, appendix E, figure 1.2.1).

1. Five Gaussian blobs in 2-D clustered by K-means with k = 5 (k-means++ seeds, restarts):
   the figure of the 5 groups with their centroids (figure 1.2.1), scored by inertia,
   silhouette and Dunn index.
2. Two interleaved moons (plus a few uniform outliers): K-means with k = 2 cuts each moon
   in half, because it only knows distances to a centre; DBSCAN follows the density and
   recovers both moons, marking the outliers as noise — the thesis's point that distance
   alone has limits. Both shown side by side and scored against the true moons (adjusted
   Rand index).

Data come from NumPy's generator seeded by ``--seed``. Summary: ``kmeans_inertia``,
``kmeans_silhouette``, ``dunn`` (blobs, K-means), ``dbscan_clusters``, ``dbscan_noise``
(moons), plus the moons' ARI and Dunn index for both methods.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, RunContext, register


@dataclasses.dataclass
class Config:
    points: int = dataclasses.field(default=2000, metadata={"help": "points in the five blobs"})
    k: int = dataclasses.field(default=5, metadata={"help": "K-means clusters (and blobs generated)"})
    blob_std: float = dataclasses.field(default=1.0, metadata={"help": "standard deviation of each blob"})
    n_init: int = dataclasses.field(default=8, metadata={"help": "K-means restarts (best inertia kept)"})
    moon_points: int = dataclasses.field(default=1000, metadata={"help": "points on the two moons"})
    moon_noise: float = dataclasses.field(default=0.06, metadata={"help": "Gaussian jitter of the moons"})
    outliers: int = dataclasses.field(default=30, metadata={"help": "uniform outliers added to the moons"})
    eps: float = dataclasses.field(default=0.12, metadata={"help": "DBSCAN radius ε (moons' units)"})
    min_pts: int = dataclasses.field(default=5, metadata={"help": "DBSCAN MinPts (point itself included)"})

    def __post_init__(self) -> None:
        if self.k < 1:
            raise NnjaxError(f"--k must be at least 1, got {self.k}.")
        if self.points < self.k:
            raise NnjaxError(
                f"--k {self.k} is larger than --points {self.points}; K-means needs at least k points."
            )
        if self.n_init < 1:
            raise NnjaxError(f"--n-init must be at least 1, got {self.n_init}.")
        if self.moon_points < 2 or self.outliers < 0:
            raise NnjaxError("--moon-points must be at least 2 and --outliers at least 0.")
        if not self.eps > 0:
            raise NnjaxError(f"--eps must be a positive radius, got {self.eps}.")
        if self.min_pts < 1:
            raise NnjaxError(f"--min-pts must be at least 1, got {self.min_pts}.")
        if not (self.blob_std > 0 and self.moon_noise >= 0):
            raise NnjaxError("--blob-std must be positive and --moon-noise non-negative.")


def make_blobs(rng: np.random.Generator, n: int, k: int, std: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points [n, 2] in ``k`` isotropic Gaussian blobs and their blob index [n].

    Centres are uniform in a square sized to the number of blobs, redrawn until every pair
    is at least 6 standard deviations apart, so the groups are visibly distinct.
    """
    half = 5.0 * std * max(1.0, np.sqrt(k))
    for _ in range(1000):
        centres = rng.uniform(-half, half, size=(k, 2))
        gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(k) * 1e9
        if gaps.min() >= 6.0 * std:
            break
    truth = rng.permutation(np.arange(n) % k)
    x = centres[truth] + std * rng.normal(size=(n, 2))
    return x.astype(np.float32), truth.astype(np.int32)


def make_moons(
    rng: np.random.Generator, n: int, noise: float, outliers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles of radius 1 (``n`` points, Gaussian jitter ``noise``) plus
    ``outliers`` uniform points in their bounding box; truth [n + outliers] is 0 / 1 / -1."""
    upper = n // 2
    t = np.pi * rng.random(n)
    x = np.where(
        (np.arange(n) < upper)[:, None],
        np.stack([np.cos(t), np.sin(t)], axis=1),
        np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1),
    )
    x = x + noise * rng.normal(size=x.shape)
    truth = (np.arange(n) >= upper).astype(np.int32)
    box = rng.uniform([-1.5, -1.0], [2.5, 1.5], size=(outliers, 2))
    return np.concatenate([x, box]).astype(np.float32), np.concatenate([truth, -np.ones(outliers, np.int32)])


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings [n] (1 = same partition, about 0 = chance)."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), np.int64)
    np.add.at(table, (ai, bi), 1)

    def pairs(v: np.ndarray) -> float:
        return float(np.sum(v * (v - 1) / 2.0))

    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    total = len(a) * (len(a) - 1) / 2.0
    expected = rows * cols / total if total else 0.0
    maximum = (rows + cols) / 2.0
    return 1.0 if maximum == expected else (index - expected) / (maximum - expected)


def run(config: Config, ctx: RunContext) -> dict:
    from nnjax.cluster import dbscan, dunn_index, kmeans, silhouette_score
    from nnjax.plots.cluster import clusters_figure, comparison_figure

    rng = np.random.default_rng(ctx.seed)
    key_blobs, key_moons = jax.random.split(jax.random.PRNGKey(ctx.seed))

    # 1. Five blobs, K-means with k = 5 (figure 1.2.1).
    x, truth = make_blobs(rng, config.points, config.k, config.blob_std)
    km = kmeans(key_blobs, x, config.k, n_init=config.n_init)
    labels = np.asarray(km.labels)
    inertia = float(km.inertia)
    silhouette = silhouette_score(x, labels) if 2 <= config.k < config.points else float("nan")
    dunn = dunn_index(x, labels) if config.k >= 2 else float("nan")
    ctx.metrics.log(step=1, kmeans_inertia=inertia, kmeans_silhouette=silhouette, dunn=dunn,
                    kmeans_iterations=int(km.n_iter))
    if ctx.make_figures:
        ctx.save_figure(
            clusters_figure(x, labels, np.asarray(km.centroids),
                            title=f"K-means, k = {config.k}: inertia {inertia:.0f}, silhouette {silhouette:.3f}"),
            "kmeans_blobs.png",
        )

    # 2. Two moons: K-means (k = 2) against DBSCAN.
    xm, moon_truth = make_moons(rng, config.moon_points, config.moon_noise, config.outliers)
    km2 = kmeans(key_moons, xm, 2, n_init=config.n_init)
    db = dbscan(xm, config.eps, config.min_pts)
    km2_labels, db_labels = np.asarray(km2.labels), np.asarray(db.labels)
    on_moon = moon_truth >= 0
    ari_km = adjusted_rand_index(moon_truth[on_moon], km2_labels[on_moon])
    ari_db = adjusted_rand_index(moon_truth[on_moon], db_labels[on_moon])
    clustered = db_labels >= 0
    dunn_db = dunn_index(xm, db_labels, noise=-1) if db.n_clusters >= 2 else float("nan")
    dunn_km = dunn_index(xm, km2_labels)
    noise = int(np.sum(~clustered))
    outliers_caught = int(np.sum(~clustered & ~on_moon))
    ctx.metrics.log(step=2, moons_kmeans_ari=ari_km, moons_dbscan_ari=ari_db, dbscan_clusters=db.n_clusters,
                    dbscan_noise=noise)
    km_title = f"K-means, k = 2 (ARI {ari_km:.2f}, Dunn {dunn_km:.3f})"
    db_title = f"DBSCAN, ε = {config.eps:g}, MinPts = {config.min_pts} (ARI {ari_db:.2f}, Dunn {dunn_db:.3f})"
    if ctx.make_figures:
        ctx.save_figure(
            comparison_figure(
                xm,
                {km_title: (km2_labels, np.asarray(km2.centroids)), db_title: (db_labels, None)},
                title="Two moons: distance to a centre (K-means) vs density (DBSCAN)",
            ),
            "moons_kmeans_vs_dbscan.png",
        )
    return {
        "kmeans_inertia": inertia,
        "kmeans_silhouette": silhouette,
        "dunn": dunn,
        "kmeans_blob_ari": adjusted_rand_index(truth, labels),
        "dbscan_clusters": db.n_clusters,
        "dbscan_noise": noise,
        "dbscan_outliers_caught": outliers_caught,
        "moons_kmeans_ari": ari_km,
        "moons_dbscan_ari": ari_db,
        "moons_dunn_kmeans": dunn_km,
        "moons_dunn_dbscan": dunn_db,
    }


register(
    Experiment(
        name="clustering",
        description="K-means on five blobs (figure 1.2.1) and K-means vs DBSCAN on two moons (appendix E)",
        config=Config,
        run=run,
        quick={"points": 1000, "n_init": 4, "moon_points": 600},
        thesis={"kmeans_blob_ari": "5 groups found (figure 1.2.1; no score)",
                "kmeans_silhouette": "named as a quality measure (E.4; no value)",
                "moons_dbscan_ari": "finds arbitrary shapes and handles noise (E.3; no score)",
                "dbscan_clusters": "arbitrary shapes + noise (E.3)"},
    )
)
