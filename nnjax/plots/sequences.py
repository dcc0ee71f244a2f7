"""Figures for sequence forecasting: the price series and real-vs-predicted test prices.

Each function returns a matplotlib ``Figure``; save it with ``RunContext.save_figure``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nnjax.plots.common import pyplot


def price_series_figure(
    raw: np.ndarray, smoothed: np.ndarray, *, smooth: int, test_start: int | None = None
) -> Any:
    """The raw random walk and its moving average (thesis figure of section 4.3, first plot).

    ``smoothed[k]`` averages ``raw[k : k + smooth]``, so it is drawn at the window's last
    index (what a trader would know at that time). ``test_start`` (an index into
    ``smoothed``) shades the test period.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    t_raw = np.arange(len(raw))
    t_smooth = np.arange(len(smoothed)) + smooth - 1
    ax.plot(t_raw, raw, color="0.65", linewidth=0.9, label="raw prices")
    ax.plot(t_smooth, smoothed, color="C0", linewidth=1.5, label=f"moving average ({smooth})")
    if test_start is not None:
        ax.axvspan(t_smooth[test_start], t_smooth[-1], color="C1", alpha=0.08, label="test period")
    ax.set_xlabel("time step")
    ax.set_ylabel("price")
    ax.set_title("synthetic stock prices: 100 + cumsum(randn), seed 0")
    ax.legend(loc="best", frameon=False)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def forecast_figure(
    y_true: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    *,
    baseline: np.ndarray | None = None,
    title: str = "next-step forecast on the test period",
) -> Any:
    """Real vs predicted test prices (top) and each forecast's absolute error (bottom).

    ``predictions`` maps a label (``"LSTM (RMSE 0.12)"``) to ``[N]`` prices; ``baseline`` is
    the persistence forecast, drawn in the error panel for comparison.
    """
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 5.6), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]}
    )
    t = np.arange(len(y_true))
    top.plot(t, y_true, color="k", linewidth=1.6, label="real")
    colors = ["C3", "C0", "C2", "C4"]
    for (name, pred), color in zip(predictions.items(), colors[: len(predictions)], strict=False):
        top.plot(t, pred, color=color, linewidth=1.1, label=name)
        bottom.plot(t, np.abs(np.asarray(pred) - y_true), color=color, linewidth=1.0, label=name)
    if baseline is not None:
        bottom.plot(
            t,
            np.abs(baseline - y_true),
            color="0.55",
            linewidth=1.0,
            linestyle="--",
            label="persistence (tomorrow = today)",
        )
    top.set_ylabel("price")
    top.set_title(title)
    top.legend(loc="best", frameon=False)
    top.grid(alpha=0.25)
    bottom.set_xlabel("test step")
    bottom.set_ylabel("|error|")
    bottom.legend(loc="upper right", frameon=False, fontsize=8)
    bottom.grid(alpha=0.25)
    fig.tight_layout()
    return fig
