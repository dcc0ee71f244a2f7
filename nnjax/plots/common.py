"""Figures every experiment shares: confusion matrices, curves, image grids.

Each function returns a matplotlib ``Figure``; save it with ``RunContext.save_figure``.
matplotlib is imported inside the functions (Agg backend), never at ``import nnjax``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(
    cm: np.ndarray, class_names: Sequence[str], *, normalize: bool = False, title: str = ""
) -> Any:
    """A heat map of ``cm[i, j]`` (true i, predicted j); rows sum to 1 when ``normalize``."""
    plt = pyplot()
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
    plt = pyplot()
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


def tiled_figure(
    tiles: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    ncols: int = 8,
    tile_inches: tuple[float, float] = (1.9, 2.1),
    title_colors: Sequence[str] | None = None,
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = False,
    fontsize: float = 8,
    suptitle: str = "",
) -> Any:
    """A grid of images ([H, W] or [H, W, 3]) with a title (and colour) above each, drawn as one image.

    Single-channel tiles use ``cmap``: each on its own range, unless ``vmin`` / ``vmax`` give
    one shared scale (then ``colorbar`` adds its bar). RGB tiles are floats in [0, 1] or uint8.
    Tiles of different sizes are centred in cells of the largest. One Axes holds the whole
    grid: 32-64 Axes, one per tile, took 0.5-1 s each figure to lay out and save.
    """
    plt = pyplot()
    if len(tiles) == 0 or len(tiles) != len(titles):
        raise ValueError(f"expected one title per image and at least one image, got {len(tiles)} and {len(titles)}")
    arrays = [np.asarray(t) for t in tiles]
    rgb = arrays[0].ndim == 3
    if any((a.ndim == 3) != rgb or (a.ndim == 3 and a.shape[-1] != 3) or a.ndim not in (2, 3) for a in arrays):
        raise ValueError(f"expected images [H, W] or [H, W, 3] alike, got shapes {sorted({a.shape for a in arrays})}")
    height, width = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
    n = len(arrays)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    gap, title_px = max(1, width // 14), max(2, round(0.3 * height))
    cell_h, cell_w = height + title_px, width + gap
    canvas = np.full((nrows * cell_h, ncols * cell_w - gap) + ((3,) if rgb else ()), 1.0 if rgb else np.nan)
    for index, a in enumerate(arrays):
        a = a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else 1.0)
        if not rgb and vmin is None and vmax is None:  # each tile on its own range
            low, high = float(np.min(a)), float(np.max(a))
            a = (a - low) / (high - low) if high > low else np.zeros_like(a)
        row, col = divmod(index, ncols)
        top = row * cell_h + title_px + (height - a.shape[0]) // 2
        left = col * cell_w + (width - a.shape[1]) // 2
        canvas[top:top + a.shape[0], left:left + a.shape[1]] = np.clip(a, 0, 1) if rgb else a
    fig = plt.figure(figsize=(tile_inches[0] * ncols, tile_inches[1] * nrows))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    colours = plt.get_cmap(cmap).with_extremes(bad="white") if not rgb else None
    shared = vmin is not None or vmax is not None
    image = ax.imshow(canvas, cmap=colours, interpolation="nearest",
                      vmin=vmin if shared else 0.0, vmax=vmax if shared else 1.0)
    for index, title in enumerate(titles):
        row, col = divmod(index, ncols)
        color = title_colors[index] if title_colors is not None else "black"
        ax.text(col * cell_w + width / 2 - 0.5, row * cell_h + title_px - 1, title, ha="center", va="bottom",
                fontsize=fontsize, color=color)
    if colorbar and shared:
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    if suptitle:
        ax.set_title(suptitle, fontsize=12)
    return fig

