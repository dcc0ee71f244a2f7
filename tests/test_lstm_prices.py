"""The thesis's price data (annex H), CSV input, and the lstm-prices experiment end to end."""

import json

import numpy as np
import pytest

from nnjax.data.prices import (
    Scaler,
    last_window,
    load_prices,
    make_windows,
    moving_average,
    read_csv_column,
    split_csv_spec,
    synthetic_prices,
)
from nnjax.errors import NnjaxError


def test_data_follows_appendix_h():
    np.random.seed(0)  # the thesis's own recipe, with the global generator
    expected = 100 + np.cumsum(np.random.randn(1000))
    np.testing.assert_array_equal(synthetic_prices(1000, 0), expected)
    smooth = moving_average(expected, 10)
    np.testing.assert_allclose(smooth, np.convolve(expected, np.ones(10) / 10, mode="valid"))
    data = load_prices()
    assert len(data.smoothed) == 991
    assert (data.num_train, len(data.y_test)) == (773, 194)  # int(0.8 * 967) windows train
    # windows are consecutive values and the next one, train strictly before test
    np.testing.assert_array_equal(data.x_train[5], data.smoothed[5:29])
    assert data.y_train[5] == data.smoothed[29]
    np.testing.assert_array_equal(data.x_test[0], data.smoothed[773:797])
    assert data.y_test[-1] == data.smoothed[-1]
    # the scaler sees the training part of the series only
    train_part = data.smoothed[: 773 + 24]
    assert data.scaler == Scaler.fit(train_part)
    assert data.scaler.mean == pytest.approx(train_part.mean())
    assert data.scaler.mean != pytest.approx(data.smoothed.mean())
    np.testing.assert_allclose(data.scaler.inverse(data.scaler.transform(data.y_test)), data.y_test)


def test_windows_and_errors():
    x, y = make_windows(np.arange(6.0), 4)
    np.testing.assert_array_equal(x, [[0, 1, 2, 3], [1, 2, 3, 4]])
    np.testing.assert_array_equal(y, [4, 5])
    with pytest.raises(NnjaxError, match="no windows"):
        make_windows(np.arange(4.0), 4)
    with pytest.raises(NnjaxError, match="train_fraction"):
        load_prices(train_fraction=1.5)


def test_csv_reading(tmp_path):
    with_header = tmp_path / "prices.csv"
    with_header.write_text("date,close,volume\n2024-01-01,10.5,3\n2024-01-02,11,4\n2024-01-03,,5\n")
    values, name = read_csv_column(with_header, "close")
    assert name == "close"
    np.testing.assert_array_equal(values[:2], [10.5, 11.0])
    assert np.isnan(values[2])
    assert read_csv_column(with_header, "2")[1] == "volume"  # 0-based index
    with pytest.raises(NnjaxError, match="2 of them are numeric"):
        read_csv_column(with_header)
    with pytest.raises(NnjaxError, match="no column 'open'"):
        read_csv_column(with_header, "open")
    with pytest.raises(NnjaxError, match="line 2, column 'date'"):
        read_csv_column(with_header, "date")
    bare = tmp_path / "bare.csv"
    bare.write_text("1\n2\n3\n")
    np.testing.assert_array_equal(read_csv_column(bare)[0], [1, 2, 3])
    assert split_csv_spec(f"{with_header}:close") == (with_header, "close")
    assert split_csv_spec(str(bare)) == (bare, None)
    with pytest.raises(NnjaxError, match="does not exist"):
        split_csv_spec(str(tmp_path / "missing.csv:close"))
    with pytest.raises(NnjaxError, match="at least 24"):
        last_window(np.arange(10.0), 24)
    with pytest.raises(NnjaxError, match="row 3"):
        last_window(np.array([1.0, 2.0, np.nan, 4.0]), 2)
    np.testing.assert_array_equal(last_window(np.arange(30.0), 24), np.arange(6.0, 30.0))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from experiments.lstm_prices import Config
    from nnjax.experiment import get, run_experiment

    out = tmp_path_factory.mktemp("lstm_prices")
    config = Config(epochs=2, hidden=8, compare=True)
    summary = run_experiment(get("lstm-prices"), config, out, seed=0, progress=False)
    return out, summary


def test_experiment_end_to_end(run_dir):
    out, summary = run_dir
    for key in (
        "test_rmse",
        "test_mae",
        "persistence_rmse",
        "persistence_mae",
        "epochs",
        "rnn_test_rmse",
        "gru_test_rmse",
        "linear_rmse",
        "winner",
    ):
        assert key in summary
    assert summary["epochs"] == 2
    data = load_prices()
    persistence = data.x_test[:, -1]
    assert summary["persistence_rmse"] == pytest.approx(np.sqrt(np.mean((persistence - data.y_test) ** 2)))
    assert summary["persistence_mae"] == pytest.approx(np.mean(np.abs(persistence - data.y_test)))
    assert 0 < summary["test_mae"] <= summary["test_rmse"]
    assert summary["lstm_test_rmse"] == summary["test_rmse"]
    for name in ("prices.png", "forecast.png", "loss.png", "cells.md", "cells.json", "prices.csv"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "cells.json").read_text())
    assert [r["model"] for r in rows[:3]] == ["LSTM", "RNN", "GRU"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {line.get("cell") for line in lines} >= {"rnn", "lstm", "gru"}


def test_evaluate_and_predict_from_checkpoint(run_dir, tmp_path):
    from experiments.lstm_prices import evaluate, predict

    out, summary = run_dir
    scores = evaluate(out / "checkpoint")
    assert scores["test_rmse"] == pytest.approx(summary["test_rmse"], rel=1e-5)
    assert scores["persistence_rmse"] == pytest.approx(summary["persistence_rmse"])

    [result] = predict(out / "checkpoint", [f"{out / 'prices.csv'}:smoothed"])
    data = load_prices()
    assert result["column"] == "smoothed"
    assert result["last_value"] == pytest.approx(data.smoothed[-1], abs=1e-5)
    # the forecast from a CSV equals the model's forecast of the same window in price units
    from experiments.lstm_prices import _load

    forecast, _ = _load(out / "checkpoint")
    np.testing.assert_allclose(result["forecast"], forecast(data.smoothed[None, -24:])[0], atol=1e-3)
    series = tmp_path / "series.csv"
    series.write_text("price\n" + "\n".join(f"{v:.6f}" for v in data.x_test[-1]) + "\n")
    [last_test] = predict(out / "checkpoint", [str(series)])
    preds = forecast(data.x_test)
    assert last_test["forecast"] == pytest.approx(preds[-1], abs=1e-3)
    rmse = np.sqrt(np.mean((preds - data.y_test) ** 2))
    assert rmse == pytest.approx(summary["test_rmse"], rel=1e-5)

    short = tmp_path / "short.csv"
    short.write_text("price\n" + "\n".join(str(v) for v in range(10)) + "\n")
    with pytest.raises(NnjaxError, match="10 values but the model reads the last 24"):
        predict(out / "checkpoint", [str(short)])
    gaps = tmp_path / "gaps.csv"
    gaps.write_text("price\n" + "\n".join("nan" if v == 17 else str(v) for v in range(40)) + "\n")
    with pytest.raises(NnjaxError, match="missing or non-finite value at row 18"):
        predict(out / "checkpoint", [str(gaps)])
    with pytest.raises(NnjaxError, match="holds no exported model"):
        predict(out, [str(short)])


def test_config_is_checked():
    from experiments.lstm_prices import Config

    with pytest.raises(NnjaxError, match="--cell"):
        Config(cell="transformer")
    with pytest.raises(NnjaxError, match="--target"):
        Config(target="returns")
