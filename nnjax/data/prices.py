"""The thesis's synthetic price series (section 4.3, appendix H) and its windowing.

Appendix H, step by step:

1. ``np.random.seed(0)``; ``prices = 100 + cumsum(randn(1000))`` — a Gaussian random walk;
2. a moving average of window 10 in ``np.convolve(..., mode="valid")`` form (991 values);
3. windows of the 24 previous values, target the next value (967 windows);
4. the first ``int(0.8 * 967) = 773`` windows train, the remaining 194 test, in time order.

The thesis fed raw prices to the LSTM; here a :class:`Scaler` (mean / standard deviation)
is fitted on the training part of the series only — the values the training windows and
targets cover — and applied to everything, so no test information leaks into training.

Also here: reading one numeric column of a CSV file for ``nnjax predict``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np

from nnjax.errors import NnjaxError

NUM_PRICES = 1000
SMOOTH_WINDOW = 10
WINDOW = 24
TRAIN_FRACTION = 0.8


def synthetic_prices(n: int = NUM_PRICES, seed: int = 0) -> np.ndarray:
    """``100 + cumsum(randn(n))`` drawn as ``np.random.seed(seed); np.random.randn(n)`` does.

    Returns float64 ``[n]`` prices (arbitrary currency units).
    """
    if n < 2:
        raise NnjaxError(f"The price series needs at least 2 values, got {n}; pass a larger count.")
    return 100.0 + np.cumsum(np.random.RandomState(seed).randn(n))


def moving_average(values: np.ndarray, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """Mean of each run of ``window`` consecutive values (``mode="valid"``): ``[n - window + 1]``."""
    values = np.asarray(values, dtype=np.float64)
    if not 1 <= window <= len(values):
        raise NnjaxError(f"The smoothing window must be between 1 and {len(values)}, got {window}.")
    return np.convolve(values, np.ones(window) / window, mode="valid")


def make_windows(series: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """All windows of ``window`` consecutive values and the value after each.

    Returns ``x [N, window]`` and ``y [N]`` with ``N = len(series) - window``;
    ``x[i] = series[i : i + window]``, ``y[i] = series[i + window]``.
    """
    series = np.asarray(series, dtype=np.float64)
    if window < 1 or len(series) <= window:
        raise NnjaxError(
            f"A series of {len(series)} values gives no windows of {window} plus a target; "
            "use a longer series or a shorter window."
        )
    x = np.lib.stride_tricks.sliding_window_view(series, window)[:-1].copy()
    return x, series[window:].copy()


@dataclasses.dataclass(frozen=True)
class Scaler:
    """``(value - mean) / std``, fitted on training values only."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        values = np.asarray(values, dtype=np.float64)
        std = float(values.std())
        return cls(float(values.mean()), std if std > 0 else 1.0)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * self.std + self.mean

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, values: dict) -> Scaler:
        return cls(float(values["mean"]), float(values["std"]))


@dataclasses.dataclass(frozen=True)
class PriceData:
    """The thesis's data, split in time order. Prices (``raw``, ``smoothed``, ``y_*``, ``x_*``) are
    in price units; ``num_train`` windows train, the rest test."""

    raw: np.ndarray  # [n]
    smoothed: np.ndarray  # [n - smooth + 1]
    x_train: np.ndarray  # [num_train, window]
    y_train: np.ndarray  # [num_train]
    x_test: np.ndarray  # [num_test, window]
    y_test: np.ndarray  # [num_test]
    scaler: Scaler
    window: int

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def test_start(self) -> int:
        """Index in ``smoothed`` of the first test target."""
        return self.num_train + self.window


def load_prices(
    n: int = NUM_PRICES,
    seed: int = 0,
    smooth: int = SMOOTH_WINDOW,
    window: int = WINDOW,
    train_fraction: float = TRAIN_FRACTION,
) -> PriceData:
    """Generate, smooth, window and split the series as appendix H does; fit the scaler on training."""
    if not 0.0 < train_fraction < 1.0:
        raise NnjaxError(f"train_fraction must be between 0 and 1, got {train_fraction}.")
    raw = synthetic_prices(n, seed)
    smoothed = moving_average(raw, smooth)
    x, y = make_windows(smoothed, window)
    num_train = int(train_fraction * len(y))
    if num_train < 1 or num_train >= len(y):
        raise NnjaxError(
            f"{len(y)} windows split at {train_fraction} leave an empty train or test part; "
            "use more prices or another train_fraction."
        )
    scaler = Scaler.fit(smoothed[: num_train + window])  # every value the training windows and targets see
    train, test = slice(None, num_train), slice(num_train, None)
    return PriceData(raw, smoothed, x[train], y[train], x[test], y[test], scaler, window)


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2)))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - np.asarray(target, np.float64))))


def linear_forecast(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Least-squares linear autoregression on the window (with intercept): a second honest baseline."""
    design = np.hstack([x_train, np.ones((len(x_train), 1))])
    coef, *_ = np.linalg.lstsq(design, y_train, rcond=None)
    return np.hstack([x_test, np.ones((len(x_test), 1))]) @ coef


# ----------------------------------------------------------------------------- CSV input


def split_csv_spec(spec: str) -> tuple[Path, str | None]:
    """``"file.csv"`` or ``"file.csv:column"`` -> ``(path, column or None)``.

    The column is a header name or a 0-based index. A path that exists as given wins over
    the ``:`` split, so names with colons still work.
    """
    path = Path(spec)
    if path.is_file():
        return path, None
    if ":" in spec:
        head, column = spec.rsplit(":", 1)
        if Path(head).is_file():
            return Path(head), column or None
        path = Path(head)
    raise NnjaxError(f"CSV file {str(path)!r} does not exist; pass an existing file (or FILE:COLUMN).")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv_column(path: str | Path, column: str | None = None) -> tuple[np.ndarray, str]:
    """One numeric column of a CSV file as float64 ``[rows]`` and its name.

    A first row that is not all numbers is a header. ``column`` is a header name or a 0-based
    index; without it the file must have exactly one column that is numeric throughout.
    Empty cells and ``nan`` become NaN (the caller decides whether that is an error);
    other text in the chosen column is an error naming the line.
    """
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise NnjaxError(f"Cannot read {str(path)!r} as CSV ({err}); pass a text CSV file.") from None
    if not rows:
        raise NnjaxError(f"{str(path)!r} holds no rows; pass a CSV file with a column of values.")
    has_header = not all(_is_number(cell) or not cell.strip() for cell in rows[0])
    header = [cell.strip() for cell in rows[0]] if has_header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if has_header else rows
    first_line = 2 if has_header else 1

    def cell(row: list[str], index: int) -> str:
        return row[index].strip() if index < len(row) else ""

    def numeric(index: int) -> bool:
        return all(
            _is_number(cell(row, index)) or cell(row, index).lower() in ("", "nan", "na") for row in body
        )

    if column is None:
        candidates = [i for i in range(len(header)) if numeric(i)]
        if len(candidates) != 1:
            names = ", ".join(header)
            raise NnjaxError(
                f"{str(path)!r} has columns {names} and {len(candidates)} of them are numeric; "
                f"choose one as {path.name}:COLUMN."
            )
        index = candidates[0]
    elif column in header:
        index = header.index(column)
    elif column.isdigit() and int(column) < len(header):
        index = int(column)
    else:
        raise NnjaxError(
            f"{str(path)!r} has no column {column!r}; its columns are: {', '.join(header)} "
            "(or a 0-based index)."
        )
    values = np.empty(len(body), np.float64)
    for row_number, row in enumerate(body):
        text = cell(row, index)
        if text.lower() in ("", "nan", "na"):
            values[row_number] = math.nan
        elif _is_number(text):
            values[row_number] = float(text)
        else:
            raise NnjaxError(
                f"{str(path)!r} line {row_number + first_line}, column {header[index]!r} holds {text!r}, "
                "which is not a number; fix or remove that row."
            )
    return values, header[index]


def last_window(values: np.ndarray, window: int, *, source: str = "the series") -> np.ndarray:
    """The last ``window`` values, after checking the series is long enough and has no NaN/inf."""
    values = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise NnjaxError(
            f"{source} has a missing or non-finite value at row {int(bad[0]) + 1} (of {len(values)}); "
            "fill or drop the gaps before forecasting."
        )
    if len(values) < window:
        raise NnjaxError(
            f"{source} has {len(values)} values but the model reads the last {window}; "
            f"give at least {window} values."
        )
    return values[-window:]
