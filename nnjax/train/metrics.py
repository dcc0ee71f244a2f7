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
    """Appends ``{"step": ..., name: value, ...}`` lines to a JSONL file, flushed each line.

    The file is the run's record and stays consistent with its checkpoints: a checkpoint
    stores :meth:`offset`, and a resumed run calls :meth:`restore_to` with it, which cuts
    the lines a killed process wrote after that checkpoint. With ``resume=True`` (a run
    continuing in its folder) the file's existing lines are trusted only up to the last
    :meth:`restore_to`: the first :meth:`log` of this process cuts an untrusted tail, so
    a stage that restarts from scratch does not keep the lines of its killed attempt.

    Attributes:
      compile_seconds: sum of the ``compile_s`` values logged with ``event="compile"`` by
        this process (a resumed run's own compile time, not its predecessors').
    """

    def __init__(self, path: str | Path, resume: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            self.path.write_text("")
        self._trusted: int | None = 0 if resume else None
        self._file = self.path.open("a")
        self.compile_seconds = 0.0

    def offset(self) -> int:
        """Bytes written so far (everything logged is flushed): a position to restore to."""
        self._file.flush()
        return self.path.stat().st_size

    def restore_to(self, offset: int) -> None:
        """Cut the file back to ``offset`` (bytes), dropping every line written after it."""
        self._file.flush()
        with self.path.open("r+") as handle:
            handle.truncate(min(int(offset), self.path.stat().st_size))
        self._trusted = None

    def log(self, **values: Any) -> None:
        """Write one line. Values are scalars (Python, NumPy or 0-d JAX arrays)."""
        if self._trusted is not None:
            self.restore_to(self._trusted)
        record = {k: to_python(v) for k, v in values.items()}
        if record.get("event") == "compile":
            self.compile_seconds += float(record.get("compile_s", 0.0))
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as err:
            from nnjax.errors import NnjaxError

            raise NnjaxError(
                f"Cannot append to {str(self.path)!r} ({err.strerror}); free disk space or make the folder "
                "writable, then rerun the same command to resume from the last checkpoint."
            ) from None

    def tagged(self, **tags: Any) -> TaggedMetrics:
        """A view that adds ``tags`` (e.g. ``stage="head"``) to every line it logs."""
        return TaggedMetrics(self, tags)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TaggedMetrics:
    """A :class:`MetricsWriter` view adding fixed fields (a stage, a model) to each line."""

    def __init__(self, writer: MetricsWriter, tags: dict[str, Any]):
        self.writer, self.tags = writer, dict(tags)

    def log(self, **values: Any) -> None:
        self.writer.log(**self.tags, **values)

    def offset(self) -> int:
        return self.writer.offset()

    def restore_to(self, offset: int) -> None:
        self.writer.restore_to(offset)

    def tagged(self, **tags: Any) -> TaggedMetrics:
        return TaggedMetrics(self.writer, {**self.tags, **tags})


def read_metrics(path: str | Path, **match: Any) -> list[dict[str, Any]]:
    """The lines of a ``metrics.jsonl`` whose fields equal ``match`` (all lines when empty), in order."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [line for line in lines if all(line.get(k) == v for k, v in match.items())]


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
