"""Inputs named on a command line (``nnjax predict``), read one by one with one rule for every experiment.

Each input is read on its own: a readable one goes on to the model, an unreadable one
(missing, not an image, a FIFO, too large) gets a result row holding ``error`` (one
sentence), and when no input at all can be read the command fails with one sentence.
The CLI exits 1 when some rows hold an error, 0 when none do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nnjax.errors import NnjaxError


def read_each(inputs: Sequence[str], read: Callable[[str], np.ndarray], what: str = "image"
              ) -> tuple[np.ndarray, list[int], list[dict[str, Any]]]:
    """``(stacked [K, ...], positions [K], rows)``: the readable inputs, their positions, one row per input.

    ``rows[i]`` is ``{"input": path, "error": sentence}`` for an unreadable input and ``{}``
    (to be filled by the caller) for a readable one. Raises :class:`NnjaxError` when none of
    the inputs can be read.
    """
    arrays, positions = [], []
    rows: list[dict[str, Any]] = [{} for _ in inputs]
    for i, path in enumerate(inputs):
        try:
            arrays.append(read(path))
            positions.append(i)
        except NnjaxError as err:
            rows[i] = {"input": str(path), "error": str(err)}
    if not arrays:
        first = rows[0]["error"] if rows else "no input was given"
        raise NnjaxError(f"None of the {len(inputs)} {what} inputs could be read; the first: {first}")
    return np.stack(arrays), positions, rows
