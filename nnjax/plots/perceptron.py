"""Figures of the perceptron experiment: the decision line over training (figure 4.1.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def decision_line_animation(
    points: np.ndarray,
    labels: np.ndarray,
    lines: list[tuple[float, float]],
    epochs: list[int],
    path: str | Path,
    true_line: tuple[float, float] = (-2.0, 12.0),
    fps: int = 5,
) -> Path:
    """Write a GIF: the labelled points and the learned line ``y = m x + n`` after each listed epoch.

    ``points`` [N, 2] in [0, 10]², ``labels`` [N] in {-1, 1}, ``lines[i]`` the (slope,
    intercept) after ``epochs[i]`` epochs. Returns the GIF path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, ax = plt.subplots(figsize=(5, 5))
    above = labels > 0
    ax.plot(points[above, 0], points[above, 1], "b.", markersize=3, label="A: y > -2x + 12")
    ax.plot(points[~above, 0], points[~above, 1], "r.", markersize=3, label="B")
    xs = np.array([-1.0, 10.0])
    ax.plot(xs, true_line[0] * xs + true_line[1], "g--", linewidth=1, label="true line")
    (learned,) = ax.plot([], [], "k-", linewidth=2, label="perceptron")
    ax.set_xlim(-1, 10)
    ax.set_ylim(-1, 10)
    ax.legend(loc="upper right", fontsize=8)
    title = ax.set_title("")

    def draw(i: int):
        slope, intercept = lines[i]
        learned.set_data(xs, slope * xs + intercept)
        title.set_text(f"{epochs[i]} epochs: y = {slope:.2f} x + {intercept:.2f}")
        return learned, title

    animation = FuncAnimation(fig, draw, frames=len(lines), blit=False)
    path = Path(path)
    animation.save(path, writer=PillowWriter(fps=fps))
    draw(len(lines) - 1)
    fig.savefig(path.with_suffix(".png"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
