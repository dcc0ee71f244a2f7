"""Figures of the clustering experiment: groups and centroids (figure 1.2.1), and side-by-side
panels comparing clusterings of the same points (K-means vs DBSCAN on two moons)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nnjax.plots.common import pyplot

_NOISE_COLOR = "#9a9a9a"


def _colors(n: int) -> list:
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _draw(ax: Any, x: np.ndarray, labels: np.ndarray, centroids: np.ndarray | None, title: str) -> None:
    """Scatter ``x`` [n, 2] coloured by ``labels`` [n] (-1 = noise, grey crosses) and centroids."""
    x = np.asarray(x)
    labels = np.asarray(labels)
    clusters = [c for c in np.unique(labels) if c >= 0]
    for color, c in zip(_colors(len(clusters)), clusters, strict=True):
        member = labels == c
        ax.scatter(x[member, 0], x[member, 1], s=9, color=color, alpha=0.75, linewidths=0,
                   label=f"cluster {c} ({int(member.sum())})")
    noise = labels < 0
    if noise.any():
        ax.scatter(x[noise, 0], x[noise, 1], s=14, color=_NOISE_COLOR, marker="x", linewidths=0.8,
                   label=f"noise ({int(noise.sum())})")
    if centroids is not None:
        c = np.asarray(centroids)
        ax.scatter(c[:, 0], c[:, 1], s=180, marker="X", color="black", edgecolors="white", linewidths=1.5,
                   zorder=5, label="centroids")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="best", markerscale=1.2, framealpha=0.85)


def clusters_figure(
    x: np.ndarray, labels: np.ndarray, centroids: np.ndarray | None = None, *, title: str = ""
) -> Any:
    """One panel: 2-D points ``x`` [n, 2] coloured by cluster ``labels`` [n] (noise -1 in grey),
    with ``centroids`` [k, 2] as black crosses when given (the thesis's figure 1.2.1)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    _draw(ax, x, labels, centroids, title)
    fig.tight_layout()
    return fig


def comparison_figure(
    x: np.ndarray,
    panels: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    title: str = "",
) -> Any:
    """Side-by-side panels of the same points ``x`` [n, 2]: ``{panel title: (labels [n],
    centroids [k, 2] or None)}``, e.g. K-means next to DBSCAN on two moons."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8), squeeze=False)
    for ax, (name, (labels, centroids)) in zip(axes[0], panels.items(), strict=True):
        _draw(ax, x, labels, centroids, name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
