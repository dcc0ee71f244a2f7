"""Seeded, stratified splits of labelled examples, and the check that every split can be scored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from nnjax.errors import NnjaxError


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, ...] = (0.75, 0.125, 0.125), seed: int = 0
) -> list[np.ndarray]:
    """Index arrays, one per fraction, each class split in the same proportions (seeded, sorted).

    The thesis splits 75 % train and then halves the remaining 25 % into test and validation.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise NnjaxError(f"Split fractions {fractions} do not sum to 1; adjust them.")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    bounds = np.cumsum(fractions)[:-1]
    for cls in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == cls))
        cuts = np.round(bounds * len(index)).astype(int)
        for part, chunk in zip(parts, np.split(index, cuts), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def check_splits(labels: np.ndarray, splits: Mapping[str, np.ndarray] | Sequence[np.ndarray],
                 class_names: Sequence[str], noun: str = "example") -> None:
    """Refuse splits a classifier cannot be trained or scored on: each must hold at least one
    example of every class, or accuracy, precision and recall are 0 or NaN.

    Args:
      labels: int ``[N]`` class indices of the whole data set.
      splits: index arrays into ``labels`` by split name (a sequence of three is named ``train``,
        ``val``, ``test``, as :func:`stratified_split` returns them).
      class_names: names of the classes, index order.
      noun: what an example is, for the message (``"message"``, ``"image"``).

    Raises :class:`NnjaxError` naming the first split that is empty or lacks a class, with how
    many examples of each class the data set has.
    """
    labels = np.asarray(labels)
    if not isinstance(splits, Mapping):
        splits = dict(zip(("train", "val", "test") if len(splits) == 3 else
                          [f"split {i + 1}" for i in range(len(splits))], splits, strict=True))
    total = [int((labels == c).sum()) for c in range(len(class_names))]
    counts_text = " and ".join(f"{n} {name}" for n, name in zip(total, class_names, strict=True))
    for name, index in splits.items():
        counts = [int((labels[np.asarray(index, np.int64)] == c).sum()) for c in range(len(class_names))]
        missing = [str(cls) for cls, n in zip(class_names, counts, strict=True) if n == 0]
        if missing:
            what = "is empty" if not sum(counts) else f"has no {' or '.join(missing[:3])} {noun}"
            raise NnjaxError(
                f"The {name} split {what}, because the data holds only {counts_text} {noun}s; every split "
                f"needs every class, so use more {noun}s of each class."
            )
