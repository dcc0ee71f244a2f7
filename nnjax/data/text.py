"""Text batching: tokenise without padding, then group messages into length buckets.

Every bucket has one padded length ``L`` (a fixed ladder, 16, 24, 32, 40, 48, 64, 96, 128, 256, ... up to the
model's maximum), so a jitted function compiles once per bucket rather than once per batch,
and short messages do not pay for the longest one. Batches are dicts of NumPy arrays with a
float32 ``mask`` ``[B]`` (0 on padding rows), the same contract as
:class:`nnjax.data.batching.ArrayLoader`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from nnjax.data.batching import map_batches, pad_rows
from nnjax.errors import NnjaxError

LENGTH_LADDER = (16, 24, 32, 40, 48, 64, 96, 128, 256, 512)


def check_utf8_texts(texts: Sequence[str], what: str = "Input") -> list[str]:
    """The texts unchanged, once each is known to be valid UTF-8 text.

    Python decodes command-line bytes that are not UTF-8 into lone surrogates (``b"\\xff"`` ->
    ``"\\udcff"``), which a tokenizer would silently turn into unknown tokens. Raises
    :class:`NnjaxError` naming the first bad text by its 1-based position (``what`` 1, 2, ...).
    """
    result = []
    for number, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise NnjaxError(f"{what} {number} is a {type(text).__name__}, not text; pass UTF-8 strings.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            code = ord(text[err.start])
            byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"code point U+{code:04X}"
            raise NnjaxError(
                f"{what} {number} is not valid UTF-8 ({byte} at character {err.start + 1}); pass it encoded "
                "as UTF-8."
            ) from None
        result.append(text)
    return result


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Token ids (with [CLS]/[SEP]) per text, truncated to ``max_length``, unpadded: list of int32 ``[len]``."""
    if max_length < 2:
        raise NnjaxError(f"max_length {max_length} leaves no room for the special tokens; use at least 2.")
    texts = ["" if t is None else str(t) for t in texts]
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=False,
                    return_attention_mask=False, return_token_type_ids=False)
    return [np.asarray(ids, np.int32) for ids in enc["input_ids"]]


def bucket_bounds(max_length: int, ladder: Sequence[int] = LENGTH_LADDER) -> tuple[int, ...]:
    """The padded lengths in use: the ladder's steps below ``max_length``, then ``max_length``."""
    return tuple(sorted({b for b in ladder if b < max_length} | {int(max_length)}))


@dataclasses.dataclass
class Bucket:
    """Examples padded to one length.

    Attributes:
      length: padded token length ``L``.
      index: int64 ``[n]``, the examples' positions in the original sequence.
      arrays: per-example arrays with leading dimension ``n`` (``input_ids`` and
        ``attention_mask`` ``[n, L]`` int32, plus any extras such as ``label`` ``[n]``).
    """

    length: int
    index: np.ndarray
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.index)


def make_buckets(
    token_ids: Sequence[np.ndarray],
    bounds: Sequence[int],
    *,
    pad_id: int = 0,
    extras: dict[str, np.ndarray] | None = None,
) -> list[Bucket]:
    """Group sequences by the smallest bound that holds them and pad them to it (empty buckets dropped)."""
    lengths = np.asarray([len(t) for t in token_ids])
    bounds = np.asarray(sorted(bounds))
    if lengths.size and lengths.max() > bounds[-1]:
        raise NnjaxError(f"A sequence of {lengths.max()} tokens exceeds the largest bucket {bounds[-1]}; "
                         "tokenise with truncation at the model's maximum.")
    which = np.searchsorted(bounds, lengths)
    buckets = []
    for b, length in enumerate(bounds):
        index = np.flatnonzero(which == b)
        if not index.size:
            continue
        ids = np.full((index.size, length), pad_id, np.int32)
        mask = np.zeros((index.size, length), np.int32)
        for row, i in enumerate(index):
            ids[row, : lengths[i]] = token_ids[i]
            mask[row, : lengths[i]] = 1
        arrays = {"input_ids": ids, "attention_mask": mask}
        for name, values in (extras or {}).items():
            arrays[name] = np.asarray(values)[index]
        buckets.append(Bucket(int(length), index, arrays))
    return buckets


class BucketLoader:
    """Mini-batches from length buckets, with :class:`ArrayLoader`'s interface.

    ``len(loader)`` is the number of batches per epoch; ``loader.epoch(i)`` yields dicts of
    static shape per bucket (``batch_size`` rows, padded rows have ``mask`` 0). With ``shuffle``
    the examples inside each bucket and the order of all batches change per epoch, seeded by
    ``(seed, epoch)``.
    """

    def __init__(self, buckets: Sequence[Bucket] | Sequence[dict[str, np.ndarray]], batch_size: int, *,
                 shuffle: bool = False, seed: int = 0, drop_remainder: bool = False):
        if batch_size < 1:
            raise NnjaxError(f"batch_size {batch_size} must be at least 1.")
        self.arrays = [b.arrays if isinstance(b, Bucket) else b for b in buckets]
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = drop_remainder

    def _counts(self) -> list[int]:
        return [len(next(iter(a.values()))) for a in self.arrays]

    def __len__(self) -> int:
        per = [n // self.batch_size if self.drop_remainder else -(-n // self.batch_size) for n in self._counts()]
        return int(sum(per))

    def epoch(self, i: int = 0, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The batches of epoch ``i``, beginning at batch number ``start`` (for resumed runs)."""
        rng = np.random.default_rng((self.seed, i))
        plan = []
        for b, n in enumerate(self._counts()):
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            stop = n - n % self.batch_size if self.drop_remainder else n
            plan += [(b, order[s: s + self.batch_size]) for s in range(0, stop, self.batch_size)]
        if self.shuffle:
            plan = [plan[j] for j in rng.permutation(len(plan))]
        for b, rows in plan[start:]:
            yield pad_rows({k: v[rows] for k, v in self.arrays[b].items()}, self.batch_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self.epoch(0)


def rows_for_length(length: int, token_budget: int, max_rows: int = 512) -> int:
    """Rows per inference batch so that rows x length stays near ``token_budget`` (at least 1)."""
    return int(np.clip(token_budget // length, 1, max_rows))


#: What one compile costs, in tokens of forward pass: all-MiniLM-L6-v2's inference forward compiled in
#: about 1.1 s per batch shape and ran at 0.175 ms per padded token on a 2-core CPU (6,300 tokens).
COMPILE_COST_TOKENS = 6000


def batch_rows(length: int, count: int, token_budget: int) -> int:
    """Rows per inference batch of a bucket of ``count`` examples at ``length`` tokens: about
    ``token_budget`` tokens, but a small bucket gets only the next power of two of ``count`` rows (few
    inputs, few shapes) and a large one is cut into equal batches (rows a multiple of 8) so that the
    last is not mostly padding."""
    rows = min(rows_for_length(length, token_budget), 1 << max(count - 1, 0).bit_length())
    batches = -(-count // rows)
    if batches > 1:
        rows = min(rows, (-(-count // batches) + 7) // 8 * 8)
    return rows


def inference_bounds(buckets: Sequence[Bucket], token_budget: int,
                     compile_tokens: int = COMPILE_COST_TOKENS) -> tuple[int, ...]:
    """The bucket lengths to merge ``buckets`` into (:func:`rebucket`) for one inference pass: the
    choice with the least padded tokens plus ``compile_tokens`` per batch shape, found exactly
    (dynamic programming over the sorted lengths, each merged group padded to its longest).

    Few examples spread over many lengths then share a few shapes (a compile costs more than the
    padding); many examples keep their own buckets. Empty buckets are ignored (none: no bounds).
    """
    by_length: dict[int, int] = {}
    for bucket in buckets:
        if len(bucket):
            by_length[bucket.length] = by_length.get(bucket.length, 0) + len(bucket)
    lengths = sorted(by_length)

    def cost(first: int, last: int) -> int:  # lengths[first..last] padded to lengths[last]
        length, count = lengths[last], sum(by_length[n] for n in lengths[first : last + 1])
        rows = batch_rows(length, count, token_budget)
        return -(-count // rows) * rows * length + compile_tokens

    best = [0] + [None] * len(lengths)  # best[i]: least cost of the first i lengths
    cut = [0] * (len(lengths) + 1)
    for end in range(1, len(lengths) + 1):
        best[end], cut[end] = min((best[start] + cost(start, end - 1), start) for start in range(end))
    bounds, end = [], len(lengths)
    while end:
        bounds.append(lengths[end - 1])
        end = cut[end]
    return tuple(sorted(bounds))


def apply_buckets(
    fn: Callable[[dict[str, np.ndarray]], Any],
    buckets: Sequence[Bucket],
    *,
    token_budget: int = 4096,
    keys: Sequence[str] = ("input_ids", "attention_mask"),
) -> list[np.ndarray]:
    """Run ``fn(batch) -> array [rows, ...]`` over every bucket in padded batches of about
    ``token_budget`` tokens (one shape, hence one compile, per bucket: :func:`batch_rows`); returns one array
    ``[n_b, ...]`` per bucket with the padding rows removed."""
    outputs = []
    for bucket in buckets:
        rows = batch_rows(bucket.length, len(bucket), token_budget)
        outputs.append(map_batches(fn, {k: bucket.arrays[k] for k in keys}, rows))
    return outputs


def unbucket(outputs: Sequence[np.ndarray], buckets: Sequence[Bucket], total: int) -> np.ndarray:
    """Put per-bucket outputs ``[n_b, ...]`` (same trailing shape) back into the original order ``[total, ...]``."""
    result = np.zeros((total, *outputs[0].shape[1:]), outputs[0].dtype)
    for out, bucket in zip(outputs, buckets, strict=True):
        result[bucket.index] = out
    return result


def subset_buckets(buckets: Sequence[Bucket], keep: np.ndarray) -> list[Bucket]:
    """The buckets restricted to the examples whose original index is in ``keep`` (sorted int array).

    Indices are renumbered to positions in ``keep``, so :func:`unbucket` of the subset gives
    ``[len(keep), ...]``. Lets one encoding pass over all examples serve several splits.
    """
    keep = np.asarray(keep)
    result = []
    for bucket in buckets:
        pos = np.searchsorted(keep, bucket.index)
        inside = (pos < len(keep)) & (keep[np.minimum(pos, len(keep) - 1)] == bucket.index)
        if inside.any():
            result.append(Bucket(bucket.length, pos[inside], {k: v[inside] for k, v in bucket.arrays.items()}))
    return result


def rebucket(buckets: Sequence[Bucket], bounds: Sequence[int]) -> list[Bucket]:
    """Merge buckets into coarser ones: each bucket moves to the smallest bound holding its length, and
    its per-token arrays (``ndim >= 2`` with axis 1 of the bucket's length) are zero-padded on axis 1.

    Fewer shapes mean fewer compiles where a compile costs more than the padding (training steps).
    """
    bounds = sorted(bounds)
    groups: dict[int, list[Bucket]] = {}
    for bucket in buckets:
        target = next((b for b in bounds if b >= bucket.length), None)
        if target is None:
            raise NnjaxError(f"A bucket of length {bucket.length} exceeds the largest bound {bounds[-1]}.")
        groups.setdefault(target, []).append(bucket)
    merged = []
    for length in sorted(groups):
        parts = groups[length]
        arrays = {}
        for name in parts[0].arrays:
            padded = []
            for bucket in parts:
                value = bucket.arrays[name]
                if value.ndim >= 2 and value.shape[1] == bucket.length and length > bucket.length:
                    width = [(0, 0)] * value.ndim
                    width[1] = (0, length - bucket.length)
                    value = np.pad(value, width)
                padded.append(value)
            arrays[name] = np.concatenate(padded)
        merged.append(Bucket(length, np.concatenate([b.index for b in parts]), arrays))
    return merged
