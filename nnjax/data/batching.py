"""Static-shape mini-batches from in-memory arrays, with seeded shuffling and a mask."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from nnjax.errors import NnjaxError


class ArrayLoader:
    """Mini-batches of a dict of equally long arrays.

    Every batch has exactly ``batch_size`` rows, so a jitted step compiles once: the last
    partial batch is filled with rows from the start of the epoch's order and carries
    ``mask`` 0 there (``mask`` is float32 [batch_size], 1 for real rows). Epoch ``i``'s
    order depends only on ``(seed, i)``, so a resumed run sees the same batches.

    Args:
      arrays: name -> array with a leading example axis, all the same length.
      batch_size: rows per batch.
      shuffle: permute the examples each epoch.
      seed: seed for the permutation.
      drop_remainder: drop the last partial batch instead of padding it.
      shard: ``(index, count)`` for multi-process training: every process walks the same
        global order and yields only its ``index``-th contiguous slice of each global batch
        (``batch_size // count`` rows), so the processes together see exactly the global batch.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_remainder: bool = False,
        shard: tuple[int, int] | None = None,
    ):
        if not arrays:
            raise NnjaxError("The data has no arrays; pass at least one named array.")
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise NnjaxError(f"The arrays have different lengths {lengths}; give each one row per example.")
        self.size = next(iter(lengths.values()))
        if self.size == 0:
            raise NnjaxError("The data set is empty; check the data path or the subset size.")
        if batch_size < 1:
            raise NnjaxError(f"batch size must be at least 1, got {batch_size}.")
        if drop_remainder and batch_size > self.size:
            raise NnjaxError(
                f"batch size {batch_size} exceeds the {self.size} examples with drop_remainder; use a smaller batch."
            )
        self.arrays = {name: np.asarray(a) for name, a in arrays.items()}
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_remainder = drop_remainder
        index, count = shard or (0, 1)
        if count < 1 or not 0 <= index < count or batch_size % count:
            raise NnjaxError(
                f"Cannot split batches of {batch_size} into shard {index} of {count}; "
                "use a batch size that is a multiple of the process count."
            )
        self.shard = (index, count)

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full if (self.drop_remainder or rest == 0) else full + 1

    def order(self, epoch: int) -> np.ndarray:
        """The example order of one epoch (a permutation when shuffling)."""
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def epoch(self, index: int = 0, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The batches of epoch ``index``, beginning at batch number ``start``."""
        order = self.order(index)
        for b in range(start, len(self)):
            rows = order[b * self.batch_size : (b + 1) * self.batch_size]
            real = len(rows)
            if real < self.batch_size:
                rows = np.concatenate([rows, np.resize(order, self.batch_size - real)])
            batch = {name: a[rows] for name, a in self.arrays.items()}
            mask = np.zeros(self.batch_size, np.float32)
            mask[:real] = 1.0
            batch["mask"] = mask
            index, count = self.shard
            if count > 1:
                part = self.batch_size // count
                batch = {name: a[index * part : (index + 1) * part] for name, a in batch.items()}
            yield batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self.epoch(0)


def pad_rows(arrays: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Zero-pad every array to ``rows`` along axis 0 and add the float32 row ``mask`` ``[rows]``
    (1 for real rows): the one static-shape padding rule of every batched forward pass."""
    n = len(next(iter(arrays.values())))
    batch = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        if n < rows:
            value = np.concatenate([value, np.zeros((rows - n, *value.shape[1:]), value.dtype)])
        batch[name] = value
    mask = np.zeros(rows, np.float32)
    mask[:n] = 1.0
    batch["mask"] = mask
    return batch


def map_batches(fn, arrays, batch_size: int):
    """``fn`` over ``arrays`` in batches of exactly ``batch_size`` rows, outputs concatenated.

    ``arrays`` is one array ``[N, ...]`` (``fn`` gets the padded array) or a dict of arrays
    with a common first axis (``fn`` gets the padded dict plus its ``mask``). The last batch is
    zero-padded, so a jitted ``fn`` compiles once; padding rows are dropped from the result.
    Every batch is dispatched before any result is read back, so the device never waits for
    the host. ``fn`` returns an array ``[batch_size, ...]`` or a dict of them; the result is
    NumPy ``[N, ...]`` (or a dict), empty when ``N`` is 0.
    """
    single = not isinstance(arrays, Mapping)
    named = {"x": arrays} if single else dict(arrays)
    total = len(next(iter(named.values())))
    if batch_size < 1:
        raise NnjaxError(f"batch size must be at least 1, got {batch_size}.")
    pending = []
    for start in range(0, total, batch_size):
        batch = pad_rows({k: v[start : start + batch_size] for k, v in named.items()}, batch_size)
        real = int(batch["mask"].sum())
        pending.append((fn(batch["x"]) if single else fn(batch), real))
    if not pending:
        return np.zeros((0,), np.float32)
    first = pending[0][0]
    if isinstance(first, Mapping):
        return {k: np.concatenate([np.asarray(out[k])[:n] for out, n in pending]) for k in first}
    return np.concatenate([np.asarray(out)[:n] for out, n in pending])
