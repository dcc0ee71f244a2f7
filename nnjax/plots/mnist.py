"""Figures of the MNIST CNN (thesis 4.2.1-4.2.4 and appendix G's training plot).

Every function returns a matplotlib ``Figure`` (Agg backend, imported inside); save it with
``RunContext.save_figure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nnjax.plots.common import pyplot, tiled_figure


def filters_figure(kernel: np.ndarray, *, ncols: int = 8, title: str = "") -> Any:
    """The first layer's filters (figure 4.2.1): ``kernel [kh, kw, 1, C]`` (HWIO) as C small images.

    Each filter is drawn in gray on its own scale (black = most negative weight, white = most
    positive), the way the thesis shows them.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[2] != 1:
        raise ValueError(f"expected a first-layer kernel [kh, kw, 1, C], got shape {kernel.shape}")
    count = kernel.shape[-1]
    title = title or f"{count} learned {kernel.shape[0]}x{kernel.shape[1]} filters of the first layer"
    return tiled_figure([kernel[:, :, 0, i] for i in range(count)], [str(i) for i in range(count)],
                        ncols=ncols, tile_inches=(1.3, 1.45), cmap="gray", fontsize=7, suptitle=title)


def digit_figure(image: np.ndarray, title: str = "") -> Any:
    """One digit ``[28, 28]`` (figure 4.2.2), gray, ink white on black as MNIST stores it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(np.asarray(image).squeeze(), cmap="gray", interpolation="nearest")
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def feature_maps_figure(maps: np.ndarray, *, scale: str = "own", ncols: int = 8, title: str = "") -> Any:
    """The C feature maps ``[H, W, C]`` of one image after the first layer (figures 4.2.3 / 4.2.4).

    Args:
      maps: the first convolution's output for one image.
      scale: ``"own"``: each map gray on its own range (figure 4.2.3); ``"shared"``: all maps
        on one diverging scale symmetric around 0, with a colour bar (figure 4.2.4), so the
        sign and the relative strength of the responses can be compared across filters.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"expected feature maps [H, W, C], got shape {maps.shape}")
    if scale not in ("own", "shared"):
        raise ValueError(f"scale must be 'own' or 'shared', got {scale!r}")
    count = maps.shape[-1]
    limit = float(np.abs(maps).max()) or 1.0
    shared = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit, "colorbar": True} if scale == "shared" else {}
    title = title or ("feature maps after the first layer (each on its own scale)" if scale == "own"
                      else "feature maps after the first layer (one shared scale)")
    return tiled_figure([maps[:, :, i] for i in range(count)], [str(i) for i in range(count)], ncols=ncols,
                        tile_inches=(1.5, 1.6), fontsize=7, suptitle=title, **({"cmap": "gray"} | shared))


def training_figure(
    loss: tuple[Sequence[float], Sequence[float]],
    effective_step: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
) -> Any:
    """Appendix G's plot: the training loss (top) and Adam's effective step ``K`` (bottom).

    Args:
      loss: ``(steps, loss)`` of the training loss.
      effective_step: name -> ``(steps, |K|)`` (e.g. median and mean of ``|K|`` over all
        parameters), drawn on a log scale.
    """
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    top.plot(np.asarray(loss[0]), np.asarray(loss[1]), linewidth=1.2)
    top.set_ylabel("loss")
    top.set_title(title or "training loss")
    top.grid(alpha=0.3)
    for name, (x, y) in effective_step.items():
        bottom.plot(np.asarray(x), np.asarray(y), linewidth=1.2, label=name)
    bottom.set_yscale("log")
    bottom.set_xlabel("step")
    bottom.set_ylabel("|K|")
    bottom.set_title("Adam's effective step K = eta m_hat / ((sqrt(v_hat) + eps) g)")
    bottom.grid(alpha=0.3)
    if effective_step:
        bottom.legend()
    fig.tight_layout()
    return fig


def errors_figure(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, *, limit: int = 32) -> Any:
    """Up to ``limit`` misclassified digits, titled ``true -> predicted``."""
    wrong = np.flatnonzero(np.asarray(labels) != np.asarray(predictions))[:limit]
    if len(wrong) == 0:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(3, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified digits", ha="center", va="center")
        return fig
    return tiled_figure(
        [np.asarray(images[i]).squeeze() for i in wrong],
        [f"{int(labels[i])} -> {int(predictions[i])}" for i in wrong],
        title_colors=["crimson"] * len(wrong),
        ncols=8,
        cmap="gray",
        suptitle=f"misclassified test digits (first {len(wrong)})",
    )
