"""Figures of a transfer recipe: accuracy per epoch over its stages, and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def accuracy_figure(history: Sequence[dict], title: str) -> Any:
    """Training and validation accuracy per epoch, the stages one after the other (``history``: the
    recipe's epoch records, each with ``stage``)."""
    from nnjax.plots.common import curves_figure

    epochs = list(range(1, len(history) + 1))
    stages = " -> ".join(dict.fromkeys(h.get("stage", "") for h in history))
    series = {
        "train accuracy": (epochs, [h.get("train_accuracy", np.nan) for h in history]),
        "validation accuracy": (epochs, [h.get("val_accuracy", np.nan) for h in history]),
    }
    return curves_figure(series, xlabel=f"epoch ({stages})", ylabel="accuracy", title=title)


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> Any:
    """The row-normalised confusion matrix (true class per row)."""
    from nnjax.plots.common import confusion_matrix_figure

    return confusion_matrix_figure(np.asarray(matrix), list(classes), normalize=True, title=title)
