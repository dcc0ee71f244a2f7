"""Labelled examples at a backbone boundary: arrays (images, activations, features) or text buckets.

Both kinds give the stage driver the same four things: a training loader of static-shape
batches, a padded forward pass over every example (:meth:`map`), concatenation and
splitting (one forward pass serves every split), and a flat dict of arrays for the run
folder's cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nnjax.data.batching import ArrayLoader, map_batches
from nnjax.data.text import (
    Bucket,
    BucketLoader,
    apply_buckets,
    bucket_bounds,
    inference_bounds,
    rebucket,
    subset_buckets,
    unbucket,
)

#: coarse lengths of text training batches (each shape compiles a forward and a backward pass)
TRAIN_LADDER = (32, 64, 128, 256, 512)


class ArrayExamples:
    """Examples as equally long arrays ``{name: [N, ...]}`` plus integer ``labels`` ``[N]``."""

    def __init__(self, arrays: dict[str, np.ndarray], labels: np.ndarray):
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.labels = np.asarray(labels, np.int32)

    def __len__(self) -> int:
        return len(self.labels)

    def loader(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> ArrayLoader:
        """Batches of ``batch_size`` rows with ``label`` and ``mask`` (the last one padded)."""
        return ArrayLoader({**self.arrays, "label": self.labels}, batch_size, shuffle=shuffle, seed=seed)

    def map(self, fn: Callable[[dict], Any], batch_size: int = 64) -> Any:
        """``fn(batch)`` over every example in padded batches; outputs ``[N, ...]`` (or a dict of them)."""
        return map_batches(fn, self.arrays, batch_size)

    def replaced(self, arrays: dict[str, np.ndarray]) -> ArrayExamples:
        """The same examples and labels with other arrays (e.g. their features)."""
        return ArrayExamples(arrays, self.labels)

    def to_cache(self) -> dict[str, np.ndarray]:
        """The arrays, for the run folder's cache (see :func:`from_cache`)."""
        return dict(self.arrays)


class BucketExamples:
    """Text examples grouped in length buckets (token ids, or hidden states at a boundary).

    ``buckets[b].index`` are positions ``0..N-1`` in ``labels``' order.
    """

    def __init__(self, buckets: Sequence[Bucket], labels: np.ndarray):
        self.buckets = list(buckets)
        self.labels = np.asarray(labels, np.int32)

    def __len__(self) -> int:
        return len(self.labels)

    def loader(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> BucketLoader:
        """Training batches in a few coarse length buckets: a compile costs more than the padding."""
        longest = max(b.length for b in self.buckets)
        coarse = rebucket(self._labelled(), bucket_bounds(longest, TRAIN_LADDER))
        return BucketLoader(coarse, batch_size, shuffle=shuffle, seed=seed)

    def _labelled(self) -> list[Bucket]:
        return [Bucket(b.length, b.index, {**b.arrays, "label": self.labels[b.index]}) for b in self.buckets]

    @property
    def keys(self) -> tuple[str, ...]:
        return ("hidden", "attention_mask") if "hidden" in self.buckets[0].arrays else ("input_ids", "attention_mask")

    def map(self, fn: Callable[[dict], Any], token_budget: int = 8192) -> Any:
        """``fn(batch)`` over every bucket (about ``token_budget`` tokens per batch), back in the examples'
        order: an array ``[N, ...]`` or a dict of them; hidden states (``{"hidden", ...}``) stay in their
        buckets as new :class:`BucketExamples`, merged as this pass merged them.

        Buckets are first merged where a compile would cost more than the padding
        (:func:`~nnjax.data.text.inference_bounds`): a few hundred texts over eight lengths run in two or
        three shapes.
        """
        nonempty = [b for b in self.buckets if len(b)]
        buckets = rebucket(nonempty, inference_bounds(nonempty, token_budget))
        outputs = apply_buckets(fn, buckets, token_budget=token_budget, keys=self.keys)
        if isinstance(outputs[0], dict) and "hidden" in outputs[0]:
            return BucketExamples([Bucket(b.length, b.index, {"hidden": out["hidden"],
                                                              "attention_mask": b.arrays["attention_mask"]})
                                   for b, out in zip(buckets, outputs, strict=True)], self.labels)
        if isinstance(outputs[0], dict):
            return {k: unbucket([out[k] for out in outputs], buckets, len(self)) for k in outputs[0]}
        return unbucket(outputs, buckets, len(self))

    def to_cache(self) -> dict[str, np.ndarray]:
        """Every bucket's arrays, positions and length, as flat ``"<bucket>/<name>"`` arrays."""
        stored = {}
        for i, b in enumerate(self.buckets):
            stored.update({f"{i}/{k}": v for k, v in b.arrays.items()})
            stored[f"{i}/index"], stored[f"{i}/length"] = b.index, np.asarray(b.length)
        return stored


Examples = ArrayExamples | BucketExamples


def from_cache(stored: dict[str, np.ndarray], labels: np.ndarray) -> Examples:
    """Examples written by ``to_cache`` (of either kind), with their ``labels``."""
    if not any(k.endswith("/length") for k in stored):
        return ArrayExamples(stored, labels)
    count = 1 + max(int(k.split("/", 1)[0]) for k in stored)
    buckets = []
    for i in range(count):
        arrays = {k.split("/", 1)[1]: v for k, v in stored.items() if k.startswith(f"{i}/")}
        length, index = int(arrays.pop("length")), arrays.pop("index")
        buckets.append(Bucket(length, index, arrays))
    return BucketExamples(buckets, labels)


def concat(parts: Sequence[Examples]) -> Examples:
    """One set of examples holding ``parts`` in order (arrays concatenated; buckets of one length merged)."""
    labels = np.concatenate([p.labels for p in parts])
    if isinstance(parts[0], ArrayExamples):
        return ArrayExamples({k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}, labels)
    offset, by_length = 0, {}
    for part in parts:
        for b in part.buckets:
            by_length.setdefault(b.length, []).append(Bucket(b.length, b.index + offset, b.arrays))
        offset += len(part)
    merged = []
    for length in sorted(by_length):
        pieces = by_length[length]
        arrays = {k: np.concatenate([p.arrays[k] for p in pieces]) for k in pieces[0].arrays}
        merged.append(Bucket(length, np.concatenate([p.index for p in pieces]), arrays))
    return BucketExamples(merged, labels)


def split(whole: Examples, sizes: Sequence[int]) -> list[Examples]:
    """The inverse of :func:`concat`: consecutive parts of ``sizes`` examples."""
    bounds = np.cumsum([0, *sizes])
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        labels = whole.labels[lo:hi]
        if isinstance(whole, ArrayExamples):
            parts.append(ArrayExamples({k: v[lo:hi] for k, v in whole.arrays.items()}, labels))
        else:
            parts.append(BucketExamples(subset_buckets(whole.buckets, np.arange(lo, hi)), labels))
    return parts
