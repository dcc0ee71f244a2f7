"""End to end: the ``mlp-backprop`` experiment through the registry and the shared train core."""

import json

import numpy as np
import pytest

from nnjax.errors import NnjaxError
from nnjax.experiment import get, run_experiment


def test_mlp_backprop_quick_run(tmp_path):
    experiment = get("mlp-backprop")
    config = experiment.make_config("quick", epochs=20, n_train=256, n_test=256)
    summary = run_experiment(experiment, config, tmp_path, seed=3, progress=False)

    saved = json.loads((tmp_path / "summary.json").read_text())
    for key in ("max_grad_diff", "accuracy_backprop", "accuracy_autograd", "linear_accuracy", "max_param_diff"):
        assert key in saved and saved[key] == pytest.approx(summary[key])
    # Hand-written and autodiff gradients agree (float32), so the two runs stay together ...
    assert 0 <= saved["max_grad_diff"] < 1e-5
    assert saved["max_param_diff"] < 1e-4
    # ... and both solve XOR, which a single layer cannot.
    assert saved["accuracy_backprop"] >= 0.98 and saved["accuracy_autograd"] >= 0.98
    assert saved["linear_accuracy"] < 0.85
    assert abs(saved["loss_backprop"] - saved["loss_autograd"]) < 1e-4
    assert 0 < saved["adam_k_median_abs_final"] < np.inf

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = {m: [r for r in lines if r.get("model") == m and "train_loss" in r] for m in ("backprop", "linear")}
    assert len(epochs["backprop"]) == len(epochs["linear"]) == 20
    assert epochs["backprop"][-1]["train_loss"] < 0.5 * epochs["backprop"][0]["train_loss"]
    assert any("k_median_abs" in r for r in lines if r.get("model") == "backprop")
    for name in ("decision_boundaries.png", "loss_curves.png", "adam_effective_step.png", "activation_relu.png"):
        assert name in saved["figures"] and (tmp_path / name).stat().st_size > 5000


def test_bad_option_is_one_clear_error():
    with pytest.raises(NnjaxError, match="--dataset must be one of xor, moons"):
        get("mlp-backprop").make_config("quick", dataset="spirals")
