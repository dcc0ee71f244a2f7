"""Metrics writer: one JSON object per line in ``metrics.jsonl``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def to_python(value: Any) -> Any:
    """A JSON-friendly Python number (NaN / inf become strings JSON can hold)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    """Appends ``{"step": ..., name: value, ...}`` lines to a JSONL file, flushed each line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")

    def log(self, **values: Any) -> None:
        """Write one line. Values are scalars (Python, NumPy or 0-d JAX arrays)."""
        record = {k: to_python(v) for k, v in values.items()}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int):
    """Counts ``cm[i, j]`` of examples with true class i predicted as j (int64 [C, C])."""
    import numpy as np

    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def binary_report(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Accuracy, and precision / recall / F1 of the positive class (1), as floats in [0, 1]."""
    cm = confusion_matrix(y_true, y_pred, 2)
    tn, fp, fn, tp = (float(v) for v in cm.ravel())
    total = tn + fp + fn + tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / total if total else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
