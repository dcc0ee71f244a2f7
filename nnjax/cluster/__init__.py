"""Clustering (thesis appendix E): K-means and DBSCAN as jit-compiled pure functions,
with their quality scores (inertia, silhouette coefficient, Dunn index)."""

from nnjax.cluster.dbscan import DBSCANResult, dbscan
from nnjax.cluster.kmeans import KMeansResult, kmeans, kmeans_plusplus, lloyd, squared_distances
from nnjax.cluster.scores import dunn_index, inertia, silhouette_samples, silhouette_score

__all__ = [
    "DBSCANResult",
    "KMeansResult",
    "dbscan",
    "dunn_index",
    "inertia",
    "kmeans",
    "kmeans_plusplus",
    "lloyd",
    "silhouette_samples",
    "silhouette_score",
    "squared_distances",
]
