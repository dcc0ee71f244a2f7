"""Experiment ``perceptron``: the thesis's linear separation (section 4.1, annex F, figure 4.1.1).

Points uniform in [0, 10]², labelled +1 above the line y = -2x + 12 and -1 below, learned
one point at a time by the perceptron's update rule; the decision line is animated over
training. Summary: ``train_accuracy``, ``test_accuracy`` (fresh points), ``slope``, ``intercept``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import numpy as np

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, RunContext, register
from nnjax.models import perceptron

TRUE_SLOPE, TRUE_INTERCEPT = -2.0, 12.0


@dataclasses.dataclass
class Config:
    points: int = dataclasses.field(default=1000, metadata={"help": "training points"})
    test_points: int = dataclasses.field(default=10000, metadata={"help": "fresh points for test accuracy"})
    epochs: int = dataclasses.field(default=200, metadata={"help": "passes over the points (thesis: 200)"})
    lr: float = dataclasses.field(default=0.001, metadata={"help": "learning rate η (thesis: 0.001)"})
    rule: Literal["step", "linear"] = dataclasses.field(
        default="step", metadata={"help": "ŷ = f(z), the perceptron output (eq. 2.1.1), or z as annex F's code"}
    )
    frames: int = dataclasses.field(default=40, metadata={"help": "frames of the animation"})

    def __post_init__(self) -> None:
        if self.points < 2 or self.test_points < 1:
            raise NnjaxError("--points must be at least 2 and --test-points at least 1.")
        if self.epochs < 1 or self.lr <= 0:
            raise NnjaxError("--epochs must be at least 1 and --lr positive.")
        if self.frames < 1:
            raise NnjaxError("--frames must be at least 1.")


def make_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform in [0, 10]² [n, 2] and labels [n]: +1 above y = -2x + 12, else -1."""
    points = 10 * rng.random((n, 2))
    labels = np.where(points[:, 1] > TRUE_SLOPE * points[:, 0] + TRUE_INTERCEPT, 1.0, -1.0)
    return points.astype(np.float32), labels.astype(np.float32)


def run(config: Config, ctx: RunContext) -> dict:
    rng = np.random.default_rng(ctx.seed)
    x, y = make_points(rng, config.points)
    x_test, y_test = make_points(rng, config.test_points)
    params = perceptron.init(jax.random.PRNGKey(ctx.seed), 2)
    final, per_epoch, errors = perceptron.train(params, x, y, lr=config.lr, epochs=config.epochs, rule=config.rule)
    errors = np.asarray(errors)
    for epoch, error in enumerate(errors, start=1):
        ctx.metrics.log(step=epoch, epoch=epoch, mean_abs_error=float(error))

    if ctx.make_figures:
        from nnjax.plots.perceptron import decision_line_animation

        frames = np.unique(np.linspace(0, config.epochs - 1, config.frames).round().astype(int))
        lines = [perceptron.line_of(jax.tree_util.tree_map(lambda a, i=i: a[i], per_epoch)) for i in frames]
        gif = decision_line_animation(x, y, lines, [int(i) + 1 for i in frames], ctx.path("perceptron.gif"))
        ctx.add_artifact(gif)
        ctx.add_artifact(gif.with_suffix(".png"))

    # The other rule on the same points and init, to show the difference in one summary.
    other = "linear" if config.rule == "step" else "step"
    other_final, _, _ = perceptron.train(params, x, y, lr=config.lr, epochs=config.epochs, rule=other)

    def accuracy(p: perceptron.PerceptronParams, pts: np.ndarray, lab: np.ndarray) -> float:
        return float(np.mean(np.asarray(perceptron.predict(p, pts)) == lab))

    slope, intercept = perceptron.line_of(final)
    return {
        "train_accuracy": accuracy(final, x, y),
        "test_accuracy": accuracy(final, x_test, y_test),
        f"{other}_rule_test_accuracy": accuracy(other_final, x_test, y_test),
        "slope": slope,
        "intercept": intercept,
        "final_mean_abs_error": float(errors[-1]),
        "rule": config.rule,
        "epochs": config.epochs,
    }


register(
    Experiment(
        name="perceptron",
        description="Linear separation by the simple perceptron (thesis 4.1, figure 4.1.1)",
        config=Config,
        run=run,
        quick={"epochs": 100, "frames": 25},
        thesis={"slope": TRUE_SLOPE, "intercept": TRUE_INTERCEPT, "test_accuracy": "≈1 (figure 4.1.1)"},
    )
)
