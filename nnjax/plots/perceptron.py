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
    from PIL import Image

    from nnjax.plots.common import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 5))
    above = labels > 0
    ax.plot(points[above, 0], points[above, 1], "b.", markersize=3, label="A: y > -2x + 12")
    ax.plot(points[~above, 0], points[~above, 1], "r.", markersize=3, label="B")
    xs = np.array([-1.0, 10.0])
    ax.plot(xs, true_line[0] * xs + true_line[1], "g--", linewidth=1, label="true line")
    (learned,) = ax.plot([], [], "k-", linewidth=2, label="perceptron", animated=True)
    ax.set_xlim(-1, 10)
    ax.set_ylim(-1, 10)
    ax.legend(loc="upper right", fontsize=8)
    title = ax.set_title("", animated=True)

    def draw(i: int) -> None:
        slope, intercept = lines[i]
        learned.set_data(xs, slope * xs + intercept)
        title.set_text(f"{epochs[i]} epochs: y = {slope:.2f} x + {intercept:.2f}")

    # The points, the true line and the legend are drawn once; each frame redraws only the learned
    # line and the title over that background (a full redraw per frame took ~0.2 s of 1,000 points).
    canvas = fig.canvas
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    frames = []
    for i in range(len(lines)):
        draw(i)
        canvas.restore_region(background)
        ax.draw_artist(learned)
        ax.draw_artist(title)
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB"))
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    learned.set_animated(False)
    title.set_animated(False)
    fig.savefig(path.with_suffix(".png"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
