"""Experiment ``mnist``: the thesis's CNN on MNIST (section 4.2, appendix G), reproduced and beaten.

Recipes:

* ``--recipe thesis``: the thesis's training — softmax output + mean squared error against
  one-hot labels, Adam at a constant learning rate 1e-3, batch 128 (thesis: 96.54 %).
* ``--recipe default``: cross-entropy from logits and a warm-up + cosine learning-rate
  schedule over ``--epochs``.

Models: ``--model thesis`` (:class:`~nnjax.models.cnn.ThesisCNN`, 17,837 parameters) or
``--model strong`` (:class:`~nnjax.models.cnn.StrongCNN`, with random +-2 px shifts when
``--augment``).

Figures: the 32 first-layer filters (4.2.1), a test digit (4.2.2) and its 32 feature maps
after the first layer on two colour scales (4.2.3, 4.2.4), the training loss with Adam's
effective step K (appendix G), the test confusion matrix and the misclassified digits.
Summary: ``test_accuracy``, ``test_loss`` (the recipe's loss), ``epochs``, ``model``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, RunContext, register

THESIS_ACCURACY = 0.9654
#: epochs when ``--epochs 0``: per (recipe, model)
DEFAULT_EPOCHS = {("thesis", "thesis"): 10, ("default", "thesis"): 20, ("thesis", "strong"): 10,
                  ("default", "strong"): 10}
MODEL_NAME = "mnist"


@dataclasses.dataclass
class Config:
    recipe: Literal["default", "thesis"] = dataclasses.field(
        default="default",
        metadata={"help": "'thesis': softmax + MSE, Adam 1e-3 constant; 'default': cross-entropy, cosine schedule"},
    )
    model: Literal["thesis", "strong"] = dataclasses.field(
        default="thesis", metadata={"help": "'thesis': the thesis's CNN; 'strong': pooling + dropout CNN"}
    )
    epochs: int = dataclasses.field(
        default=0, metadata={"help": "passes over the training set; 0: the recipe's own (thesis 10, default "
                                     "20, strong model 10)"}
    )
    batch_size: int = dataclasses.field(default=128, metadata={"help": "examples per step (thesis: 128)"})
    learning_rate: float = dataclasses.field(
        default=1e-3, metadata={"help": "Adam's learning rate (the peak of the schedule for --recipe default)"}
    )
    augment: bool = dataclasses.field(
        default=True, metadata={"help": "random +-2 px shifts of the training digits (strong model only)"}
    )
    shuffle: bool = dataclasses.field(default=True, metadata={"help": "reshuffle the training set every epoch"})
    train_size: int = dataclasses.field(default=0, metadata={"help": "training digits used (0: all 60,000)"})
    test_size: int = dataclasses.field(default=0, metadata={"help": "test digits used (0: all 10,000)"})
    source: Literal["idx", "tfds"] = dataclasses.field(
        default="idx",
        metadata={"help": "'idx': the four IDX files in $NNJAX_DATA_DIR/mnist; 'tfds': tensorflow-datasets"},
    )
    log_every: int = dataclasses.field(default=10, metadata={"help": "steps per point of the loss / K curves"})
    dtype: Literal["float32", "bfloat16"] = dataclasses.field(
        default="float32", metadata={"help": "compute dtype; parameters and Adam's state stay float32"}
    )

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise NnjaxError("--epochs must be >= 0, --batch-size >= 1 and --learning-rate positive.")
        if self.train_size < 0 or self.test_size < 0 or self.log_every < 1:
            raise NnjaxError("--train-size and --test-size must be >= 0 and --log-every >= 1.")

    def resolved_epochs(self) -> int:
        return self.epochs or DEFAULT_EPOCHS[(self.recipe, self.model)]


def random_shift(images: jax.Array, rng: jax.Array, pixels: int = 2) -> jax.Array:
    """Shift each image ``[B, H, W, C]`` by a random integer offset in ``[-pixels, pixels]`` (zero fill)."""
    size = images.shape[1:3]
    padded = jnp.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)))
    offsets = jax.random.randint(rng, (images.shape[0], 2), 0, 2 * pixels + 1)

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (*size, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def make_loss_fn(model, recipe: str, augment: bool):
    """The shared-signature loss ``(params, batch_stats, batch, rng, train) -> (loss [B], aux)``.

    ``recipe == "thesis"``: ``mean_k (softmax(z)_k - onehot_k)^2`` (PyTorch's ``MSELoss`` on
    the softmax output); otherwise cross-entropy from logits. Metrics: ``accuracy`` and
    ``cross_entropy`` per example.
    """

    def loss_fn(params, batch_stats, batch, rng, train):
        images, labels = batch["image"], batch["label"]
        shift_rng, dropout_rng = jax.random.split(rng)
        if train and augment:
            images = random_shift(images, shift_rng)
        variables = {"params": params, "batch_stats": batch_stats}
        if train:
            logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                          rngs={"dropout": dropout_rng})
            new_stats = updates["batch_stats"]
        else:
            logits, new_stats = model.apply(variables, images, train=False), {}
        logits = logits.astype(jnp.float32)  # the loss in float32 also under --dtype bfloat16
        cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        if recipe == "thesis":
            onehot = jax.nn.one_hot(labels, logits.shape[-1])
            loss = jnp.mean((jax.nn.softmax(logits) - onehot) ** 2, axis=-1)
        else:
            loss = cross_entropy
        accuracy = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return loss, {"metrics": {"accuracy": accuracy, "cross_entropy": cross_entropy}, "batch_stats": new_stats}

    return loss_fn


def make_schedule(config: Config, total_steps: int, steps_per_epoch: int):
    """Constant for the thesis recipe; linear warm-up (half an epoch) then cosine to 1 % otherwise."""
    if config.recipe == "thesis":
        return config.learning_rate
    warmup = min(max(steps_per_epoch // 2, 1), max(total_steps // 10, 1))
    return optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, max(total_steps, warmup + 1), end_value=config.learning_rate * 0.01
    )


def load_data(config: Config, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)`` (uint8 [N, 28, 28], int32 [N])."""
    from nnjax.data.mnist import load_split, subset

    x_train, y_train = load_split("train", config.source)
    x_test, y_test = load_split("test", config.source)
    x_train, y_train = subset(x_train, y_train, config.train_size, seed)
    x_test, y_test = subset(x_test, y_test, config.test_size, seed)
    return x_train, y_train, x_test, y_test


def _predict_fn(model, dtype: str):
    from nnjax.train.precision import parse_dtype, to_compute_dtype

    compute = parse_dtype(dtype)

    @jax.jit
    def predict(variables, images):
        params, batch = to_compute_dtype(variables["params"], {"image": images}, compute)  # stats stay float32
        logits = model.apply({**variables, "params": params}, batch["image"], train=False)
        return jax.nn.softmax(logits.astype(jnp.float32))

    return predict


def predict_probabilities(model, variables: dict, images: np.ndarray, batch_size: int = 500,
                          dtype: str = "float32") -> np.ndarray:
    """Class probabilities ``[N, 10]`` of uint8 digits ``[N, 28, 28]`` (fixed-size, padded batches),
    computed in ``dtype`` (the training's ``--dtype``)."""
    from nnjax.data.batching import map_batches
    from nnjax.data.mnist import to_model_input

    predict = _predict_fn(model, dtype)
    inputs = to_model_input(images)
    return map_batches(lambda chunk: predict(variables, chunk), inputs, min(batch_size, max(len(inputs), 1)))


def first_layer_maps(params: dict, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel [3, 3, 1, C], maps [28, 28, C])``: the first convolution and its output for one digit."""
    from nnjax.data.mnist import to_model_input
    from nnjax.nn.conv import conv_xla

    name = "conv0" if "conv0" in params else "conv1"  # StrongCNN / ThesisCNN
    kernel = np.asarray(params[name]["kernel"])
    maps = conv_xla(jnp.asarray(to_model_input(image[None])), jnp.asarray(kernel))[0]
    if "bias" in params[name]:
        maps = maps + params[name]["bias"]
    return kernel, np.asarray(maps)


def run(config: Config, ctx: RunContext) -> dict:
    from nnjax.data.batching import ArrayLoader
    from nnjax.data.mnist import mnist_arrays
    from nnjax.models.cnn import build_model, init_variables
    from nnjax.nn.optim import adam, effective_step_from_state
    from nnjax.train.checkpoint import save_model
    from nnjax.train.fit import fit
    from nnjax.train.freeze import count_params
    from nnjax.train.precision import with_compute_dtype
    from nnjax.train.state import create_train_state
    from nnjax.train.step import evaluate, make_eval_step, make_train_step

    epochs = config.resolved_epochs()
    x_train, y_train, x_test, y_test = load_data(config, ctx.seed)
    if len(x_train) < config.batch_size:
        raise NnjaxError(f"--batch-size {config.batch_size} exceeds the {len(x_train)} training digits; lower it.")
    train_loader = ArrayLoader(mnist_arrays(x_train, y_train), config.batch_size, shuffle=config.shuffle,
                               seed=ctx.seed, drop_remainder=True)
    test_loader = ArrayLoader(mnist_arrays(x_test, y_test), 500, shuffle=False)

    model = build_model(config.model)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(ctx.seed))
    variables = init_variables(model, init_rng)
    n_params = count_params(variables["params"])
    print(f"mnist: {type(model).__name__} with {n_params:,} trainable parameters "
          f"(+{count_params(variables['batch_stats']):,} BatchNorm statistics)")

    total_steps = epochs * len(train_loader)
    tx = adam(make_schedule(config, total_steps, len(train_loader)), track_effective_step=True)
    state = create_train_state(variables["params"], tx, rng=state_rng, batch_stats=variables["batch_stats"])
    augment = config.augment and config.model == "strong"
    loss_fn = with_compute_dtype(make_loss_fn(model, config.recipe, augment), config.dtype)
    base_step = make_train_step(loss_fn, tx)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state, batch):
        state, metrics = base_step(state, batch)
        return state, {**metrics, **effective_step_from_state(state.opt_state)}

    eval_step = make_eval_step(loss_fn)

    def eval_fn(state) -> dict:
        result = evaluate(state, eval_step, test_loader.epoch(0))
        return {f"test_{k}": v for k, v in result.items()}

    checkpointer = ctx.checkpointer("train")
    state, history = fit(state, train_step, train_loader, epochs=epochs, eval_fn=eval_fn, metrics=ctx.metrics,
                         checkpointer=checkpointer, log_every=config.log_every, progress=ctx.progress,
                         desc=f"mnist {config.recipe}/{config.model}")
    checkpointer.close()
    final_vars = {"params": state.params, "batch_stats": state.batch_stats}
    meta = {"model": MODEL_NAME, "architecture": config.model, "recipe": config.recipe, "epochs": epochs,
            "dtype": config.dtype,
            "input": "float32 [B, 28, 28, 1], pixels / 255, white ink on black"}
    final = history[-1] if history else eval_fn(state)
    meta["test_accuracy"] = final.get("test_accuracy")
    save_model(ctx.out / "checkpoint", final_vars, meta)

    probabilities = predict_probabilities(model, final_vars, x_test, dtype=config.dtype)
    predictions = probabilities.argmax(-1)
    if ctx.make_figures:
        _figures(ctx, config, state.params, x_test, y_test, predictions)

    epoch_records = history  # every epoch, those before a resume included (saved with the checkpoints)
    accuracies = [r.get("test_accuracy", math.nan) for r in epoch_records]
    best = int(np.nanargmax(accuracies)) if accuracies else 0
    step_ms = [h["step_ms"] for h in history if "step_ms" in h]
    return {
        "test_accuracy": float(np.mean(predictions == y_test)),
        "test_loss": final.get("test_loss"),
        "test_cross_entropy": final.get("test_cross_entropy"),
        "epochs": epochs,
        "model": config.model,
        "recipe": config.recipe,
        "parameters": n_params,
        "best_test_accuracy": accuracies[best] if accuracies else None,
        "best_epoch": best + 1,
        "test_accuracy_by_epoch": [round(a, 4) for a in accuracies],
        "train_accuracy_last_epoch": epoch_records[-1].get("train_accuracy") if epoch_records else None,
        "train_examples": len(x_train),
        "test_examples": len(x_test),
        "step_ms": float(np.median(step_ms)) if step_ms else None,
    }


def training_curve(metrics_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, loss, median |K|)`` from the per-block lines of a run's ``metrics.jsonl`` (resumed runs too)."""
    from nnjax.train.metrics import read_metrics

    rows = {int(r["step"]): (float(r["loss"]), float(r["k_median_abs"])) for r in read_metrics(metrics_path)
            if "loss" in r and "k_median_abs" in r and "step" in r}
    steps = np.asarray(sorted(rows), dtype=np.int64)
    values = np.asarray([rows[s] for s in steps], dtype=np.float64).reshape(-1, 2)
    return steps, values[:, 0], values[:, 1]


def _figures(ctx: RunContext, config: Config, params: dict, x_test: np.ndarray, y_test: np.ndarray,
             predictions: np.ndarray) -> None:
    from nnjax.plots import mnist as plots
    from nnjax.plots.common import confusion_matrix_figure
    from nnjax.train.metrics import confusion_matrix

    kernel, maps = first_layer_maps(params, x_test[0])
    ctx.save_figure(plots.filters_figure(kernel), "filters_first_layer.png")
    ctx.save_figure(plots.digit_figure(x_test[0], f"test digit 0 (label {int(y_test[0])})"), "example_digit.png")
    ctx.save_figure(plots.feature_maps_figure(maps, scale="own"), "feature_maps.png")
    ctx.save_figure(plots.feature_maps_figure(maps, scale="shared"), "feature_maps_v2.png")
    steps, loss, k_median = training_curve(ctx.out / "metrics.jsonl")
    if len(steps):
        loss_name = "softmax + MSE" if config.recipe == "thesis" else "cross-entropy"
        figure = plots.training_figure((steps, loss), {"median |K| over all parameters": (steps, k_median)},
                                       title=f"training loss ({loss_name})")
        ctx.save_figure(figure, "training_loss_and_K.png")
    cm = confusion_matrix(y_test, predictions, 10)
    ctx.save_figure(confusion_matrix_figure(cm, [str(d) for d in range(10)],
                                            title=f"MNIST test confusion ({np.mean(predictions == y_test):.2%})"),
                    "confusion_matrix.png")
    ctx.save_figure(plots.errors_figure(x_test, y_test, predictions), "misclassified.png")


def _load(checkpoint_dir: Path):
    from nnjax.models.cnn import build_model, init_variables
    from nnjax.train.checkpoint import load_model

    def template(meta: dict) -> dict:
        model = build_model(meta.get("architecture", "thesis"))
        return jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0)))

    variables, meta = load_model(checkpoint_dir, expected_model=MODEL_NAME, template=template)
    model = build_model(meta.get("architecture", "thesis"))
    return model, {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}, meta


def evaluate_checkpoint(checkpoint_dir: Path) -> dict:
    """Test accuracy and cross-entropy of a saved model on the full 10,000-digit test set."""
    from nnjax.data.mnist import load_mnist

    model, variables, meta = _load(Path(checkpoint_dir))
    images, labels = load_mnist("test")
    probabilities = predict_probabilities(model, variables, images, dtype=meta.get("dtype", "float32"))
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "test_accuracy": float(np.mean(probabilities.argmax(-1) == labels)),
        "test_cross_entropy": float(-np.mean(np.log(np.maximum(picked, 1e-12)))),
        "examples": int(len(labels)),
        "model": meta.get("architecture"),
        "recipe": meta.get("recipe"),
    }


def predict_images(checkpoint_dir: Path, inputs: list[str]) -> list[dict]:
    """The digit and its probability for each image path (28x28 or larger, any background); an
    unreadable input gets a row with its ``error`` (see :mod:`nnjax.data.inputs`)."""
    from nnjax.data.inputs import read_each
    from nnjax.data.mnist import load_digit_image

    model, variables, meta = _load(Path(checkpoint_dir))
    images, positions, results = read_each(inputs, load_digit_image)
    probabilities = predict_probabilities(model, variables, images, dtype=meta.get("dtype", "float32"))
    for i, probs in zip(positions, probabilities, strict=True):
        order = np.argsort(probs)[::-1][:3]
        results[i] = {
            "input": str(inputs[i]),
            "digit": int(order[0]),
            "probability": round(float(probs[order[0]]), 4),
            "top3": [{"digit": int(d), "probability": round(float(probs[d]), 4)} for d in order],
        }
    return results


def fingerprint(config: Config) -> dict[str, str]:
    """The data the run reads: the IDX files are checked against fixed sha256 digests when read,
    so their digests are the fingerprint; tfds names its data set."""
    import hashlib

    from nnjax.data.mnist import FILES

    if config.source == "tfds":
        return {"mnist": "tfds:mnist"}
    return {"mnist": hashlib.sha256("".join(sorted(FILES.values())).encode()).hexdigest()}


def requires() -> str | None:
    """None when the MNIST IDX files are present (or could be downloaded); else what to do."""
    from nnjax.data.mnist import FILES, _network_reachable
    from nnjax.data.paths import dataset_dir

    try:
        folder = dataset_dir("mnist")
    except NnjaxError as err:
        return str(err)
    if all((folder / name).is_file() for name in FILES) or _network_reachable(timeout=3.0):
        return None
    return (f"MNIST's IDX files are not in {str(folder)!r} and the network is unreachable; copy the four "
            "*-ubyte.gz files there or set NNJAX_DATA_DIR to a folder holding mnist/.")


register(
    Experiment(
        name="mnist",
        description="The thesis's CNN on MNIST, reproduced (softmax + MSE) and beaten (thesis 4.2, annex G)",
        config=Config,
        run=run,
        quick={"train_size": 6000, "test_size": 2000, "epochs": 3},
        thesis={"test_accuracy": THESIS_ACCURACY},
        evaluate=evaluate_checkpoint,
        predict=predict_images,
        requires=requires,
        fingerprint=fingerprint,
    )
)
