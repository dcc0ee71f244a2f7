"""Experiment ``lstm-prices``: next-step price forecasting with a recurrent network (thesis 4.3, annex H).

Data exactly as appendix H builds it (``nnjax.data.prices``): 1,000 prices
``100 + cumsum(randn)`` with seed 0, a moving average of window 10, windows of 24 values
predicting the next, the first 80 % of windows for training and the rest for testing, in
time order. Unlike the thesis, inputs and targets are standardised with statistics of the
training part only.

Model as in the thesis: LSTM(50) -> Dense(1), Adam (lr 1e-3), mean squared error, 100
epochs of batches of 32 (``--cell rnn|gru`` swaps the cell; ``--compare`` trains all three
on the same data and writes ``cells.md`` / ``cells.json``). ``--target change`` makes the
network predict the step from the last value instead of the level (not in the thesis).

The honest baseline for a random walk is persistence (tomorrow = today); a least-squares
linear autoregression on the same 24 values is a second one. Summary: ``test_rmse``,
``test_mae`` (price units), ``persistence_rmse``, ``persistence_mae``, ``linear_rmse``,
``linear_mae``, ``winner`` and ``epochs``. Figures: ``prices.png`` (raw vs smoothed),
``forecast.png`` (real vs predicted test prices), ``loss.png``. The trained model goes to
``checkpoint/`` for ``nnjax eval`` / ``nnjax predict lstm-prices --csv FILE[:COLUMN]``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, RunContext, register

NAME = "lstm-prices"
CELLS = ("rnn", "lstm", "gru")
TARGETS = ("level", "change")


@dataclasses.dataclass
class Config:
    cell: str = dataclasses.field(default="lstm", metadata={"help": "recurrent cell: rnn, lstm or gru"})
    compare: bool = dataclasses.field(
        default=False, metadata={"help": "also train the other two cells on the same data (cells.md)"}
    )
    hidden: int = dataclasses.field(default=50, metadata={"help": "units of the recurrent layer"})
    epochs: int = dataclasses.field(default=100, metadata={"help": "passes over the training windows"})
    batch_size: int = dataclasses.field(default=32, metadata={"help": "windows per batch"})
    learning_rate: float = dataclasses.field(default=1e-3, metadata={"help": "Adam learning rate"})
    window: int = dataclasses.field(default=24, metadata={"help": "past values the model reads"})
    smooth: int = dataclasses.field(default=10, metadata={"help": "moving-average window of the series"})
    num_prices: int = dataclasses.field(default=1000, metadata={"help": "length of the random walk"})
    data_seed: int = dataclasses.field(default=0, metadata={"help": "seed of the random walk (thesis: 0)"})
    train_fraction: float = dataclasses.field(default=0.8, metadata={"help": "share of windows that train"})
    target: str = dataclasses.field(
        default="level", metadata={"help": "level (thesis: the next price) or change (next minus last)"}
    )
    unroll: int = dataclasses.field(default=1, metadata={"help": "timesteps per compiled loop iteration"})

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise NnjaxError(f"--cell must be one of {', '.join(CELLS)}, got {self.cell!r}.")
        if self.target not in TARGETS:
            raise NnjaxError(f"--target must be level or change, got {self.target!r}.")
        if min(self.hidden, self.epochs, self.batch_size, self.window, self.smooth, self.unroll) < 1:
            raise NnjaxError("--hidden, --epochs, --batch-size, --window, --smooth, --unroll must be >= 1.")
        if self.learning_rate <= 0:
            raise NnjaxError(f"--learning-rate must be positive, got {self.learning_rate}.")


# ----------------------------------------------------------------------------- model helpers


def _model(cell: str, hidden: int, unroll: int = 1):
    from nnjax.models.rnn import SequenceRegressor

    return SequenceRegressor(cell=cell, features=hidden, outputs=1, unroll=unroll)


def _inputs(windows: np.ndarray, scaler: Any) -> np.ndarray:
    """Price windows ``[N, T]`` -> scaled network inputs ``[N, T, 1]`` (float32)."""
    return scaler.transform(windows)[..., None].astype(np.float32)


def _targets(windows: np.ndarray, y: np.ndarray, scaler: Any, target: str) -> np.ndarray:
    """Scaled training targets ``[N, 1]``: the next value, or its step from the last value."""
    scaled = scaler.transform(y)
    if target == "change":
        scaled = scaled - scaler.transform(windows[:, -1])
    return scaled[:, None].astype(np.float32)


def _to_prices(out: np.ndarray, windows: np.ndarray, scaler: Any, target: str) -> np.ndarray:
    """Network outputs ``[N, 1]`` -> predicted prices ``[N]``."""
    scaled = np.asarray(out, np.float64)[:, 0]
    if target == "change":
        scaled = scaled + scaler.transform(windows[:, -1])
    return scaler.inverse(scaled)


def _jit_apply(model: Any):
    """``apply(params, x [N, T, 1]) -> [N, 1]``, jitted once per model."""
    import jax

    return jax.jit(lambda p, x: model.apply({"params": p}, x))


def _forecaster(apply: Any, params: Any, scaler: Any, target: str):
    """``windows [N, T] (prices) -> predicted next prices [N]`` with one forward pass."""

    def forecast(windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, np.float64)
        return _to_prices(np.asarray(apply(params, _inputs(windows, scaler))), windows, scaler, target)

    return forecast


def _train_cell(cell: str, config: Config, data: Any, ctx: RunContext) -> dict:
    """Train one cell with the shared train core; returns params, history, test predictions, timings."""
    import jax
    import jax.numpy as jnp
    import optax

    from nnjax.data.batching import ArrayLoader
    from nnjax.data.prices import mae, rmse
    from nnjax.train.fit import fit
    from nnjax.train.init import run_once
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step

    model = _model(cell, config.hidden, config.unroll)
    x_train = _inputs(data.x_train, data.scaler)
    y_train = _targets(data.x_train, data.y_train, data.scaler, config.target)
    params = run_once(model.init, jax.random.PRNGKey(ctx.seed), x_train[:1])["params"]

    def loss_fn(params, batch_stats, batch, rng, train):
        del batch_stats, rng, train
        pred = model.apply({"params": params}, batch["x"])
        return jnp.mean((pred - batch["y"]) ** 2, axis=-1), {"metrics": {}, "batch_stats": {}}

    tx = optax.adam(config.learning_rate)
    state = create_train_state(params, tx, rng=jax.random.PRNGKey(ctx.seed + 1))
    loader = ArrayLoader({"x": x_train, "y": y_train}, config.batch_size, shuffle=True, seed=ctx.seed)
    apply = _jit_apply(model)
    x_test = _inputs(data.x_test, data.scaler)

    def eval_fn(state) -> dict:
        pred = _to_prices(np.asarray(apply(state.params, x_test)), data.x_test, data.scaler, config.target)
        return {"test_rmse": rmse(pred, data.y_test), "test_mae": mae(pred, data.y_test)}

    start = time.perf_counter()
    state, history = fit(
        state,
        make_train_step(loss_fn, tx),
        loader,
        epochs=config.epochs,
        eval_fn=eval_fn,
        metrics=ctx.metrics.tagged(cell=cell),  # the cells share metrics.jsonl when comparing
        checkpointer=ctx.checkpointer(cell),
        progress=ctx.progress,
        desc=cell,
    )
    seconds = time.perf_counter() - start
    pred = _forecaster(apply, state.params, data.scaler, config.target)(data.x_test)
    step_ms = [h["step_ms"] for h in history if "step_ms" in h]
    return {
        "cell": cell,
        "params": state.params,
        "history": history,
        "pred": pred,
        "test_rmse": rmse(pred, data.y_test),
        "test_mae": mae(pred, data.y_test),
        "train_seconds": seconds,
        "step_ms": float(np.median(step_ms)) if step_ms else None,
        "compile_s": history[0].get("compile_s") if history else None,
        "num_params": int(sum(np.size(p) for p in jax.tree_util.tree_leaves(state.params))),
    }


def _meta(config: Config, data: Any, result: dict) -> dict:
    return {
        "model": NAME,
        "cell": result["cell"],
        "hidden": config.hidden,
        "window": config.window,
        "target": config.target,
        "unroll": config.unroll,
        "scaler": data.scaler.to_dict(),
        "data": {
            "num_prices": config.num_prices,
            "data_seed": config.data_seed,
            "smooth": config.smooth,
            "train_fraction": config.train_fraction,
        },
        "test_rmse": result["test_rmse"],
        "test_mae": result["test_mae"],
    }


def _write_series_csv(path: Path, data: Any, smooth: int) -> None:
    """``step, raw, smoothed`` for every step where the moving average exists (a ``predict`` demo input)."""
    steps = np.arange(len(data.smoothed)) + smooth - 1
    table = np.column_stack([steps, data.raw[steps], data.smoothed])
    header = "step,raw,smoothed"
    np.savetxt(path, table, delimiter=",", header=header, comments="", fmt=["%d", "%.6f", "%.6f"])


# ----------------------------------------------------------------------------- run


def run(config: Config, ctx: RunContext) -> dict:
    from nnjax.data.prices import linear_forecast, load_prices, mae, rmse
    from nnjax.train.checkpoint import save_model

    data = load_prices(
        config.num_prices, config.data_seed, config.smooth, config.window, config.train_fraction
    )
    persistence = data.x_test[:, -1]
    linear = linear_forecast(data.x_train, data.y_train, data.x_test)
    cells = [config.cell] + ([c for c in CELLS if c != config.cell] if config.compare else [])
    results = {cell: _train_cell(cell, config, data, ctx) for cell in cells}
    main = results[config.cell]

    save_model(ctx.out / "checkpoint", {"params": main["params"]}, _meta(config, data, main))
    _write_series_csv(ctx.path("prices.csv"), data, config.smooth)

    baselines = {
        "persistence": (rmse(persistence, data.y_test), mae(persistence, data.y_test)),
        "linear AR(24)": (rmse(linear, data.y_test), mae(linear, data.y_test)),
    }
    scores = {r["cell"].upper(): (r["test_rmse"], r["test_mae"]) for r in results.values()}
    winner = min({**scores, **baselines}.items(), key=lambda kv: kv[1][0])[0]

    if ctx.make_figures:
        _figures(ctx, config, data, results, persistence, baselines)
    if config.compare:
        _write_cell_table(ctx, config, results, baselines)

    summary: dict[str, Any] = {
        "test_rmse": main["test_rmse"],
        "test_mae": main["test_mae"],
        "persistence_rmse": baselines["persistence"][0],
        "persistence_mae": baselines["persistence"][1],
        "linear_rmse": baselines["linear AR(24)"][0],
        "linear_mae": baselines["linear AR(24)"][1],
        "winner": winner,
        "beats_persistence": bool(main["test_rmse"] < baselines["persistence"][0]),
        "epochs": config.epochs,
        "cell": config.cell,
        "target": config.target,
        "num_train": data.num_train,
        "num_test": len(data.y_test),
        "train_seconds": round(main["train_seconds"], 2),
        "step_ms": main["step_ms"],
    }
    if config.compare:
        for r in results.values():
            summary[f"{r['cell']}_test_rmse"] = r["test_rmse"]
            summary[f"{r['cell']}_test_mae"] = r["test_mae"]
    return summary


def _figures(ctx: RunContext, config: Config, data: Any, results: dict, persistence: np.ndarray,
             baselines: dict) -> None:
    """The price series, the test-period forecasts against persistence, and the training losses."""
    from nnjax.plots.common import curves_figure
    from nnjax.plots.sequences import forecast_figure, price_series_figure

    ctx.save_figure(price_series_figure(data.raw, data.smoothed, smooth=config.smooth, test_start=data.test_start),
                    "prices.png")
    predictions = {f"{r['cell'].upper()} (RMSE {r['test_rmse']:.3f})": r["pred"] for r in results.values()}
    ctx.save_figure(
        forecast_figure(
            data.y_test,
            predictions,
            baseline=persistence,
            title=f"test period: persistence RMSE {baselines['persistence'][0]:.3f}, "
            f"linear AR RMSE {baselines['linear AR(24)'][0]:.3f}",
        ),
        "forecast.png",
    )
    series = {}
    for r in results.values():
        epochs = [h["epoch"] for h in r["history"]]
        series[f"{r['cell'].upper()} train MSE (scaled)"] = (epochs, [h["train_loss"] for h in r["history"]])
    ctx.save_figure(curves_figure(series, xlabel="epoch", ylabel="loss", logy=True, title="training loss"),
                    "loss.png")


def _write_cell_table(ctx: RunContext, config: Config, results: dict, baselines: dict) -> None:
    rows = [
        {
            "model": r["cell"].upper(),
            "params": r["num_params"],
            "test_rmse": r["test_rmse"],
            "test_mae": r["test_mae"],
            "train_s": r["train_seconds"],
            "step_ms": r["step_ms"],
        }
        for r in results.values()
    ]
    rows += [
        {"model": name, "params": None, "test_rmse": s[0], "test_mae": s[1]} for name, s in baselines.items()
    ]
    lines = [
        f"## lstm-prices: cells compared ({config.epochs} epochs, hidden {config.hidden}, "
        f"target {config.target})",
        "",
        "| model | params | test RMSE | test MAE | train s | step ms |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(value: Any, spec: str) -> str:
        return "" if value is None else format(value, spec)

    for row in rows:
        lines.append(
            f"| {row['model']} | {fmt(row['params'], 'd')} | {row['test_rmse']:.4f} | "
            f"{row['test_mae']:.4f} | "
            f"{fmt(row.get('train_s'), '.1f')} | {fmt(row.get('step_ms'), '.2f')} |"
        )
    ctx.path("cells.md").write_text("\n".join(lines) + "\n\nErrors in price units on the test period.\n")
    ctx.path("cells.json").write_text(json.dumps(rows, indent=2) + "\n")


# ----------------------------------------------------------------------------- eval / predict


def _load(checkpoint_dir: Path):
    from nnjax.data.prices import Scaler
    from nnjax.train.checkpoint import load_model

    def template(meta: dict) -> dict:
        import jax

        model = _model(meta["cell"], int(meta["hidden"]), int(meta.get("unroll", 1)))
        inputs = np.zeros((1, int(meta["window"]), 1), np.float32)
        return {"params": jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs))["params"]}

    variables, meta = load_model(checkpoint_dir, expected_model=NAME, template=template)
    model = _model(meta["cell"], int(meta["hidden"]), int(meta.get("unroll", 1)))
    scaler = Scaler.from_dict(meta["scaler"])
    return _forecaster(_jit_apply(model), variables["params"], scaler, meta["target"]), meta


def evaluate(checkpoint_dir: Path) -> dict:
    """Test RMSE / MAE of a saved model on the series its meta describes, next to persistence."""
    from nnjax.data.prices import load_prices, mae, rmse

    forecast, meta = _load(checkpoint_dir)
    d = meta["data"]
    data = load_prices(
        int(d["num_prices"]),
        int(d["data_seed"]),
        int(d["smooth"]),
        int(meta["window"]),
        float(d["train_fraction"]),
    )
    pred = forecast(data.x_test)
    persistence = data.x_test[:, -1]
    return {
        "cell": meta["cell"],
        "test_rmse": rmse(pred, data.y_test),
        "test_mae": mae(pred, data.y_test),
        "persistence_rmse": rmse(persistence, data.y_test),
        "persistence_mae": mae(persistence, data.y_test),
        "num_test": len(data.y_test),
    }


def predict(checkpoint_dir: Path, inputs: list[str]) -> list[dict]:
    """Forecast the value after the last ``window`` values of each ``FILE.csv[:COLUMN]`` input."""
    from nnjax.data.prices import last_window, read_csv_column, split_csv_spec

    forecast, meta = _load(checkpoint_dir)
    window = int(meta["window"])
    results = []
    for spec in inputs:
        path, column = split_csv_spec(spec)
        values, name = read_csv_column(path, column)
        recent = last_window(values, window, source=f"Column {name!r} of {str(path)!r}")
        value = float(forecast(recent[None, :])[0])
        results.append(
            {
                "input": str(path),
                "column": name,
                "values_read": window,
                "last_value": float(recent[-1]),
                "forecast": value,
                "change": value - float(recent[-1]),
                "model": f"{meta['cell'].upper()}({meta['hidden']})",
            }
        )
    return results


register(
    Experiment(
        name=NAME,
        description="LSTM forecast of a smoothed random-walk price, vs persistence (thesis 4.3, annex H)",
        config=Config,
        run=run,
        quick={"epochs": 30},
        thesis={"test_rmse": "not reported: the thesis shows only the real-vs-predicted plot (4.3)"},
        evaluate=evaluate,
        predict=predict,
    )
)
