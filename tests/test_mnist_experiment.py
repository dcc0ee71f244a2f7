"""The ``mnist`` experiment end to end on a real subset: it learns, saves, evaluates and predicts."""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnjax.errors import NnjaxError


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A short real run: 2,560 training digits, 2 epochs, 1,000 test digits (well under a minute)."""
    data = os.environ.get("NNJAX_DATA_DIR")
    if not data or not (Path(data) / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("no real data: set NNJAX_DATA_DIR to the shared data folder")
    from nnjax.experiment import get, run_experiment

    out = tmp_path_factory.mktemp("mnist_run")
    experiment = get("mnist")
    config = experiment.make_config("full", epochs=2, train_size=2560, test_size=1000, learning_rate=3e-3)
    summary = run_experiment(experiment, config, out, seed=0, progress=False)
    return out, summary


def test_short_training_learns_and_writes_everything(trained_run):
    out, summary = trained_run
    assert summary["test_accuracy"] > 0.75  # chance is 0.10
    assert summary["epochs"] == 2 and summary["model"] == "thesis" and summary["parameters"] == 17837
    assert 0 < summary["test_loss"] < 2.3
    for name in ("filters_first_layer.png", "example_digit.png", "feature_maps.png", "feature_maps_v2.png",
                 "training_loss_and_K.png", "confusion_matrix.png", "misclassified.png"):
        assert (out / name).stat().st_size > 1000, name
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("k_median_abs" in line for line in lines)  # Adam's effective step is logged
    assert json.loads((out / "summary.json").read_text())["test_accuracy"] == summary["test_accuracy"]


def test_bfloat16_run_matches_float32_and_saves_its_dtype(trained_run, tmp_path):
    """The same short run with ``--dtype bfloat16`` lands within 3 points of float32 on 1,000 test digits
    (with BatchNorm statistics rounded to bf16 every step it lost about 10), and evaluates in bf16."""
    import experiments.mnist as mnist_exp
    from nnjax.experiment import get, run_experiment
    from nnjax.train.checkpoint import load_model

    _, full = trained_run
    config = get("mnist").make_config("full", epochs=2, train_size=2560, test_size=1000, learning_rate=3e-3,
                                      dtype="bfloat16")
    half = run_experiment(get("mnist"), config, tmp_path, seed=0, progress=False, make_figures=False)
    assert half["figures"] == [] and not list(tmp_path.glob("*.png"))
    assert abs(half["test_accuracy"] - full["test_accuracy"]) < 0.03, (half["test_accuracy"], full["test_accuracy"])
    variables, meta = load_model(tmp_path / "checkpoint", expected_model="mnist")
    assert meta["dtype"] == "bfloat16"
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {np.dtype(np.float32)}
    assert mnist_exp.evaluate_checkpoint(tmp_path / "checkpoint")["test_accuracy"] > 0.75


def test_checkpoint_round_trip_and_evaluate(trained_run):
    import experiments.mnist as mnist_exp
    from nnjax.data.mnist import load_mnist, subset
    from nnjax.models.cnn import ThesisCNN
    from nnjax.train.checkpoint import load_model

    out, summary = trained_run
    variables, meta = load_model(out / "checkpoint", expected_model="mnist")
    assert meta["architecture"] == "thesis" and meta["recipe"] == "default"
    images, labels = subset(*load_mnist("test"), 1000, 0)
    probabilities = mnist_exp.predict_probabilities(ThesisCNN(), variables, images)
    assert np.isclose(np.mean(probabilities.argmax(-1) == labels), summary["test_accuracy"])
    result = mnist_exp.evaluate_checkpoint(out / "checkpoint")
    assert result["examples"] == 10000 and result["test_accuracy"] > 0.75


def test_predict_png_matches_the_model(trained_run, tmp_path):
    from PIL import Image

    import experiments.mnist as mnist_exp
    from nnjax.data.mnist import load_mnist
    from nnjax.models.cnn import ThesisCNN
    from nnjax.train.checkpoint import load_model

    out, _ = trained_run
    images, _ = load_mnist("test")
    digit = tmp_path / "digit.png"
    Image.fromarray(255 - images[0]).save(digit)  # dark ink on white paper, 28x28
    [result] = mnist_exp.predict_images(out / "checkpoint", [str(digit)])
    variables, _ = load_model(out / "checkpoint")
    expected = mnist_exp.predict_probabilities(ThesisCNN(), variables, images[:1])[0]
    assert result["digit"] == int(expected.argmax())
    assert result["probability"] == pytest.approx(float(expected.max()), abs=1e-4)
    assert 0 <= result["digit"] <= 9 and len(result["top3"]) == 3


def test_predict_bad_inputs_are_clear(trained_run, tmp_path):
    import experiments.mnist as mnist_exp

    out, _ = trained_run
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(NnjaxError, match="not an image"):
        mnist_exp.predict_images(out / "checkpoint", [str(text)])
    with pytest.raises(NnjaxError, match="does not exist"):
        mnist_exp.predict_images(out / "checkpoint", [str(tmp_path / "missing.png")])
    with pytest.raises(NnjaxError, match="does not exist"):
        mnist_exp.evaluate_checkpoint(tmp_path / "no-checkpoint")


def test_thesis_loss_is_pytorch_mse_of_softmax():
    import torch

    import experiments.mnist as mnist_exp
    from nnjax.models.cnn import ThesisCNN, init_variables

    model = ThesisCNN()
    variables = init_variables(model, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.random((4, 28, 28, 1), dtype=np.float32)),
             "label": jnp.asarray([3, 1, 4, 1])}
    loss_fn = mnist_exp.make_loss_fn(model, "thesis", augment=False)

    @jax.jit  # one program for the loss and the logits (each operation alone would compile on its own)
    def run(variables, batch):
        per_example, aux = loss_fn(variables["params"], variables["batch_stats"], batch, jax.random.PRNGKey(0), False)
        return per_example.mean(), aux, model.apply(variables, batch["image"])

    mean_loss, aux, logits = run(variables, batch)
    onehot = torch.nn.functional.one_hot(torch.tensor([3, 1, 4, 1]), 10).float()
    expected = torch.nn.MSELoss()(torch.softmax(torch.from_numpy(np.array(logits)), 1), onehot)
    assert float(mean_loss) == pytest.approx(float(expected), rel=1e-5)
    assert set(aux["metrics"]) == {"accuracy", "cross_entropy"}


def test_random_shift_moves_digits_by_at_most_two_pixels():
    import experiments.mnist as mnist_exp

    image = np.zeros((6, 28, 28, 1), np.float32)
    image[:, 14, 14, 0] = 1.0
    shifted = jax.jit(lambda image: mnist_exp.random_shift(image, jax.random.PRNGKey(1)))(image)  # one program
    rows, cols = np.nonzero(np.asarray(shifted)[..., 0].reshape(6, 28, 28).sum(0))
    assert shifted.shape == image.shape and float(np.asarray(shifted).sum()) == 6.0
    assert rows.min() >= 12 and rows.max() <= 16 and cols.min() >= 12 and cols.max() <= 16


def test_bad_config_is_one_sentence():
    from nnjax.experiment import get

    with pytest.raises(NnjaxError, match="--epochs"):
        get("mnist").make_config("full", epochs=-1)
