"""Figures every experiment shares: confusion matrices, curves, image grids.

Each function returns a matplotlib ``Figure``; save it with ``RunContext.save_figure``.
matplotlib is imported inside the functions (Agg backend), never at ``import nnjax``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(
    cm: np.ndarray, class_names: Sequence[str], *, normalize: bool = False, title: str = ""
) -> Any:
    """A heat map of ``cm[i, j]`` (true i, predicted j); rows sum to 1 when ``normalize``."""
    plt = _pyplot()
    cm = np.asarray(cm, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = max(3.5, 0.55 * len(class_names) + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = shown.max() / 2 if shown.size else 0
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            text = f"{shown[i, j]:.3f}" if normalize else f"{int(cm[i, j])}"
            if normalize and len(class_names) <= 3:
                text += f"\n({int(cm[i, j])})"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > threshold else "black")
    ax.set_title(title or ("normalised confusion matrix" if normalize else "confusion matrix"))
    fig.tight_layout()
    return fig


def curves_figure(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
) -> Any:
    """Line plot of named ``(x, y)`` series on shared axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, linewidth=1.4)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def image_grid_figure(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    title_colors: Sequence[str] | None = None,
    ncols: int = 8,
    cmap: str | None = None,
    suptitle: str = "",
) -> Any:
    """A grid of images ([H, W] or [H, W, 3], any range) with a title (and colour) each."""
    plt = _pyplot()
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.1 * nrows), squeeze=False)
    for index, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if index >= n:
            continue
        ax.imshow(np.asarray(images[index]), cmap=cmap)
        color = title_colors[index] if title_colors is not None else "black"
        ax.set_title(titles[index], fontsize=8, color=color)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
