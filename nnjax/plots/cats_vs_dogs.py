"""Figures of the cats-vs-dogs experiment (thesis figure 6.1.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def pick_grid(labels: np.ndarray, predicted: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices for a grid of ``count`` photos: every mistake first (up to half the grid),
    then randomly chosen correct ones, in a seeded order."""
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero(labels != predicted)
    right = np.flatnonzero(labels == predicted)
    n_wrong = min(len(wrong), max(count // 2, 1) if len(wrong) else 0, count)
    chosen = list(rng.permutation(wrong)[:n_wrong]) + list(rng.permutation(right)[: count - n_wrong])
    return np.asarray(rng.permutation(chosen), dtype=np.int64)


def predictions_figure(
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    dog_probability: Sequence[float],
    class_names: Sequence[str] = ("cat", "dog"),
    *,
    ncols: int = 6,
    title: str = "",
) -> Any:
    """A grid of photos titled ``"<predicted> <probability>"``; wrong ones in red with the
    true label (``"✗ dog 0.91 (cat)"``), right ones in green."""
    from nnjax.plots.common import tiled_figure

    titles, colors = [], []
    for label, p in zip(labels, dog_probability, strict=True):
        predicted = int(p >= 0.5)
        confidence = p if predicted else 1.0 - p
        if predicted == int(label):
            titles.append(f"{class_names[predicted]} {confidence:.2f}")
            colors.append("green")
        else:
            titles.append(f"✗ {class_names[predicted]} {confidence:.2f} ({class_names[int(label)]})")
            colors.append("red")
    return tiled_figure(list(images), titles, title_colors=colors, ncols=ncols, suptitle=title)
