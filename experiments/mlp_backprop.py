"""Experiment ``mlp-backprop``: hand-written backpropagation vs ``jax.grad`` (thesis 2.2, 3, annex C).

An MLP learns a problem no single layer can (XOR-like blobs or two moons, drawn from the
seed) twice, from the same initial weights, the same batches and the same optimizer
(``nnjax.nn.optim``): once with the gradients of the hand-written delta recursion
(``nnjax.nn.backprop``, plugged in as the loss's custom VJP) and once with autodiff. A
single-layer (linear, perceptron-style) model trained the same way shows the limit
Minsky and Papert pointed out.

Summary: ``accuracy_backprop``, ``accuracy_autograd``, ``linear_accuracy`` (held-out points),
``max_grad_diff`` (largest |hand - autodiff| over all parameters, measured on the full
training set at the start and after every epoch), ``max_param_diff`` (the two trained
models), the final losses, and Adam's median effective step ``|K|``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, RunContext, register

DATASETS = ("xor", "moons")


@dataclasses.dataclass
class Config:
    dataset: str = dataclasses.field(default="xor", metadata={"help": "xor (four blobs) or moons"})
    n_train: int = dataclasses.field(default=512, metadata={"help": "training points"})
    n_test: int = dataclasses.field(default=1024, metadata={"help": "held-out points for accuracy"})
    noise: float = dataclasses.field(default=0.15, metadata={"help": "std of the Gaussian noise"})
    hidden: int = dataclasses.field(default=16, metadata={"help": "width of each hidden layer"})
    depth: int = dataclasses.field(default=2, metadata={"help": "number of hidden layers"})
    activation: str = dataclasses.field(default="tanh", metadata={"help": "relu, sigmoid or tanh"})
    loss: str = dataclasses.field(
        default="binary_cross_entropy", metadata={"help": "binary_cross_entropy, cross_entropy or mse"}
    )
    optimizer: str = dataclasses.field(default="adam", metadata={"help": "adam or sgd (nnjax.nn.optim)"})
    learning_rate: float = dataclasses.field(default=0.01, metadata={"help": "learning rate"})
    momentum: float = dataclasses.field(default=0.9, metadata={"help": "SGD momentum (0 = none)"})
    epochs: int = dataclasses.field(default=60, metadata={"help": "passes over the training points"})
    batch_size: int = dataclasses.field(default=32, metadata={"help": "mini-batch size"})

    def __post_init__(self) -> None:
        from nnjax.nn.backprop import LOSSES

        if self.dataset not in DATASETS:
            raise NnjaxError(f"--dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}.")
        if self.loss not in LOSSES:
            raise NnjaxError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}.")
        if self.activation not in ("relu", "sigmoid", "tanh"):
            raise NnjaxError(f"--activation must be relu, sigmoid or tanh, got {self.activation!r}.")
        if self.optimizer not in ("adam", "sgd"):
            raise NnjaxError(f"--optimizer must be adam or sgd, got {self.optimizer!r}.")
        if min(self.n_train, self.n_test, self.hidden, self.depth, self.epochs, self.batch_size) < 1:
            raise NnjaxError("--n-train, --n-test, --hidden, --depth, --epochs, --batch-size must be >= 1.")
        if self.learning_rate <= 0 or self.noise < 0:
            raise NnjaxError("--learning-rate must be positive and --noise non-negative.")


def make_data(dataset: str, n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points ``[n, 2]`` (float32) and 0/1 labels ``[n]`` (int32).

    ``xor``: Gaussian blobs around the corners (±1, ±1), label 1 where the signs differ.
    ``moons``: two interleaved half circles (radius 1, centres (0, 0) and (1, 0.5)), centred.
    """
    labels = rng.integers(0, 2, n)
    if dataset == "xor":
        signs = rng.choice([-1.0, 1.0], size=n)
        centres = np.stack([signs, np.where(labels == 1, -signs, signs)], axis=1)
    else:
        angle = rng.uniform(0, np.pi, n)
        upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
        lower = np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
        centres = np.where(labels[:, None] == 0, upper, lower) - np.array([0.5, 0.25])
    points = centres + noise * rng.normal(size=(n, 2))
    return points.astype(np.float32), labels.astype(np.int32)


def _targets(labels: np.ndarray, loss: str) -> np.ndarray:
    """Labels as the loss wants them: int ``[n]`` (cross_entropy) or float ``[n, 1]``."""
    return labels if loss == "cross_entropy" else labels[:, None].astype(np.float32)


def _outputs(loss: str) -> tuple[int, str | None]:
    """(output width, output activation): logits for the cross-entropies, sigmoid for mse."""
    return (2, None) if loss == "cross_entropy" else (1, "sigmoid" if loss == "mse" else None)


def _predict(out: jax.Array, loss: str) -> jax.Array:
    """0/1 predictions ``[B]`` from the network output."""
    if loss == "cross_entropy":
        return jnp.argmax(out, axis=-1)
    threshold = 0.5 if loss == "mse" else 0.0
    return (out[:, 0] > threshold).astype(jnp.int32)


def _per_example(out: jax.Array, y: jax.Array, loss: str) -> jax.Array:
    """Per-example loss ``[B]`` from the network output, by nnjax.nn.losses (autodiff's path)."""
    from nnjax.nn import losses

    if loss == "mse":
        return losses.mse(out, y)
    if loss == "cross_entropy":
        return losses.softmax_cross_entropy_int(out, y)
    return losses.binary_cross_entropy_with_logits(out, y)


def _loss_fn(model: Any, config: Config, hand: bool) -> Callable:
    """A loss function for the shared train step; ``hand`` routes gradients through backprop."""
    from nnjax.nn.backprop import make_backprop_loss

    hand_loss = make_backprop_loss(config.activation, model.output_activation, config.loss)

    def loss_fn(params, batch_stats, batch, rng, train):
        del batch_stats, rng, train
        out = model.apply({"params": params}, batch["x"])
        if hand:
            per_example = hand_loss(params, batch["x"], batch["y"])
        else:
            per_example = _per_example(out, batch["y"], config.loss)
        correct = (_predict(out, config.loss) == batch["label"]).astype(jnp.float32)
        return per_example, {"metrics": {"accuracy": correct}, "batch_stats": {}}

    return loss_fn


def _make_tx(config: Config, track: bool):
    from nnjax.nn import optim

    if config.optimizer == "adam":
        return optim.adam(config.learning_rate, track_effective_step=track)
    return optim.sgd(config.learning_rate, momentum=config.momentum or None)


@jax.jit
def _max_abs_diff(a: Any, b: Any) -> jax.Array:
    """``max |a - b|`` over all leaves of two trees of the same structure."""
    diffs = jax.tree.map(lambda u, v: jnp.max(jnp.abs(u - v)), a, b)
    return jnp.max(jnp.stack(jax.tree.leaves(diffs)))


def run(config: Config, ctx: RunContext) -> dict:
    from nnjax.data.batching import ArrayLoader
    from nnjax.models.mlp import MLP
    from nnjax.nn.backprop import backprop
    from nnjax.nn.optim import effective_step_from_state
    from nnjax.train.fit import fit
    from nnjax.train.init import run_once
    from nnjax.train.metrics import read_metrics
    from nnjax.train.state import create_train_state
    from nnjax.train.step import evaluate, make_eval_step, make_train_step

    rng = np.random.default_rng(ctx.seed)
    x, labels = make_data(config.dataset, config.n_train, config.noise, rng)
    x_test, labels_test = make_data(config.dataset, config.n_test, config.noise, rng)
    arrays = {"x": x, "y": _targets(labels, config.loss), "label": labels}
    test_arrays = {"x": x_test, "y": _targets(labels_test, config.loss), "label": labels_test}
    n_out, out_act = _outputs(config.loss)
    mlp = MLP(features=(config.hidden,) * config.depth + (n_out,), activation=config.activation,
              output_activation=out_act)
    linear = MLP(features=(n_out,), activation=config.activation, output_activation=out_act)
    init_key = jax.random.PRNGKey(ctx.seed)
    mlp_params = run_once(mlp.init, init_key, x[:1])["params"]

    @jax.jit
    def grad_diff(params: Any) -> jax.Array:
        """max |hand - autodiff| over all parameters, on the whole training set."""
        hand, _ = backprop(params, arrays["x"], arrays["y"], activation=config.activation,
                           output_activation=out_act, loss=config.loss)
        auto = jax.grad(lambda p: jnp.mean(_loss_fn(mlp, config, hand=False)(
            p, {}, {**arrays, "mask": np.ones(len(x), np.float32)}, None, True)[0]))(params)
        return _max_abs_diff(hand, auto)

    initial_diff = float(grad_diff(mlp_params))
    results = {}
    eval_steps: dict = {}
    for name, model, hand in (("backprop", mlp, True), ("autograd", mlp, False), ("linear", linear, False)):
        params = mlp_params if model is mlp else run_once(model.init, init_key, x[:1])["params"]
        tx = _make_tx(config, track=name == "backprop")
        state = create_train_state(jax.device_put(params, may_alias=False), tx, rng=jax.random.PRNGKey(ctx.seed + 1))
        loss_fn = _loss_fn(model, config, hand)
        if model not in eval_steps:  # evaluation is forward-only: backprop and autograd share it
            eval_steps[model] = make_eval_step(_loss_fn(model, config, hand=False))
        eval_step = eval_steps[model]
        test_loader = ArrayLoader(test_arrays, 256)

        def eval_fn(state, name=name, eval_step=eval_step, test_loader=test_loader):
            # Without the optimizer state, both MLP runs hit one compiled eval step.
            scores = evaluate(state.replace(opt_state=None), eval_step, test_loader.epoch(0))
            out = {f"test_{k}": v for k, v in scores.items()}
            if name == "backprop":
                out["grad_diff"] = float(grad_diff(state.params))
            return out

        def on_step(state, means, name=name):
            stats = effective_step_from_state(state.opt_state) if name == "backprop" else {}
            if "k_median_abs" in stats:  # Adam's effective step, per step (thesis annex G)
                ctx.metrics.log(step=int(state.step), model=name, **{k: float(v) for k, v in stats.items()})

        loader = ArrayLoader(arrays, config.batch_size, shuffle=True, seed=ctx.seed)
        state, history = fit(
            state, make_train_step(loss_fn, tx), loader, epochs=config.epochs, eval_fn=eval_fn,
            metrics=ctx.metrics.tagged(model=name), checkpointer=ctx.checkpointer(name),
            log_every=1 if name == "backprop" else 50, progress=ctx.progress, desc=name, on_step=on_step,
        )
        results[name] = (model, state.params, history)

    # The K trace is read back from metrics.jsonl, which holds every step of a resumed run too.
    k_trace = [(int(line["step"]), float(line["k_median_abs"]))
               for line in read_metrics(ctx.out / "metrics.jsonl", model="backprop") if "k_median_abs" in line]
    if ctx.make_figures:
        _figures(ctx, config, results, x_test, labels_test, k_trace)
    (_, p_hand, h_hand), (_, p_auto, h_auto), (_, _, h_lin) = results.values()
    diffs = [initial_diff] + [h["val_grad_diff"] for h in h_hand]  # fit prefixes eval results with val_
    param_diff = float(_max_abs_diff(p_hand, p_auto))
    summary = {
        "accuracy_backprop": h_hand[-1]["test_accuracy"],
        "accuracy_autograd": h_auto[-1]["test_accuracy"],
        "linear_accuracy": h_lin[-1]["test_accuracy"],
        "max_grad_diff": max(diffs),
        "max_param_diff": param_diff,
        "loss_backprop": h_hand[-1]["test_loss"],
        "loss_autograd": h_auto[-1]["test_loss"],
        "loss_linear": h_lin[-1]["test_loss"],
        "dataset": config.dataset,
        "epochs": config.epochs,
    }
    if k_trace:
        summary["adam_k_median_abs_final"] = k_trace[-1][1]
    return summary


def _figures(ctx: RunContext, config: Config, results: dict, x_test: np.ndarray, labels_test: np.ndarray,
             k_trace: list[tuple[int, float]]) -> None:
    from nnjax.plots.activations import activation_figure
    from nnjax.plots.common import curves_figure

    panels = {}
    for name, (model, params, history) in results.items():
        title = f"{name} (test acc {history[-1]['test_accuracy']:.3f})"
        panels[title] = _probability_fn(model, params, config.loss)
    ctx.save_figure(decision_boundary_figure(panels, x_test, labels_test), "decision_boundaries.png")
    series = {name: ([h["epoch"] for h in hist], [h["train_loss"] for h in hist])
              for name, (_, _, hist) in results.items()}
    fig = curves_figure(series, xlabel="epoch", ylabel="training loss",
                        title=f"{config.dataset}: {config.loss}, {config.optimizer}", logy=True)
    backprop_line, autograd_line = fig.axes[0].get_lines()[:2]  # they coincide: draw one wide, one dashed
    backprop_line.set(linewidth=4, alpha=0.45)
    autograd_line.set(linestyle="--")
    fig.axes[0].legend()
    ctx.save_figure(fig, "loss_curves.png")
    if k_trace:
        steps, ks = [s for s, _ in k_trace], [k for _, k in k_trace]
        ctx.save_figure(curves_figure({"median |K|": (steps, ks)}, xlabel="step", ylabel="|K|", logy=True,
                                      title="Adam's effective step K = η m̂ / ((√v̂ + ε) g)"),
                        "adam_effective_step.png")
    for name in ("relu", "sigmoid", "tanh", "softmax"):
        ctx.save_figure(activation_figure(name), f"activation_{name}.png")


def _probability_fn(model: Any, params: Any, loss: str) -> Callable[[np.ndarray], np.ndarray]:
    """``points [n, 2] -> P(label 1) [n]`` for the decision-boundary plot."""

    @jax.jit
    def prob(points):
        out = model.apply({"params": params}, points)
        if loss == "cross_entropy":
            return jax.nn.softmax(out)[:, 1]
        return out[:, 0] if loss == "mse" else jax.nn.sigmoid(out[:, 0])

    return lambda points: np.asarray(prob(jnp.asarray(points, jnp.float32)))


def decision_boundary_figure(panels: dict[str, Callable], points: np.ndarray, labels: np.ndarray) -> Any:
    """One panel per model: ``P(label 1)`` over the plane, the 0.5 contour and the points."""
    from nnjax.plots.common import pyplot

    plt = pyplot()

    lo, hi = points.min(0) - 0.5, points.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (title, prob) in zip(axes[0], panels.items(), strict=True):
        p = prob(grid).reshape(gx.shape)
        ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
        ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)
        ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="RdBu_r", s=6, edgecolors="none")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


register(
    Experiment(
        name="mlp-backprop",
        description="MLP on XOR / two moons: hand-written backprop (annex C) vs jax.grad, and a linear model",
        config=Config,
        run=run,
        quick={"epochs": 25, "n_train": 256, "n_test": 512},
        thesis={"linear_accuracy": "< 1: a single layer cannot separate XOR (Minsky & Papert, section 1.3)"},
    )
)
