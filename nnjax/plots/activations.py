"""Figures 3.1.1-3.1.4 of the thesis: each activation drawn with its derivative.

``activation_figure(name)`` returns one matplotlib Figure; ``activation_figures(out_dir)``
writes all of them as PNGs. The derivative curves are the hand-written closed forms of
:mod:`nnjax.nn.activations`, so the figures show exactly what the library computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nnjax.errors import NnjaxError

#: name -> (thesis figure number, title)
FIGURES: dict[str, tuple[str, str]] = {
    "relu": ("3.1.1", "ReLU"),
    "softmax": ("3.1.2", "Softmax"),
    "sigmoid": ("3.1.3", "Sigmoid"),
    "tanh": ("3.1.4", "Hyperbolic tangent"),
    "step": ("2.1.2", "Perceptron step f_0"),
}


def _curves(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(f(x), f'(x), f label, f' label) on the grid ``x`` [n] (one jitted call per figure)."""
    import jax
    import jax.numpy as jnp

    from nnjax.nn import activations as act

    if name == "softmax":
        # Softmax needs a vector: vary the first of three logits (x, 0, 1) and show s_0.
        def both(x):
            logits = jnp.stack([x, jnp.zeros_like(x), jnp.ones_like(x)], axis=-1)
            return act.softmax(logits)[:, 0], act.softmax_derivative(logits)[:, 0]

        labels = r"$s_0(x, 0, 1)$", r"$\partial s_0/\partial x_0 = s_0(1-s_0)$"
    else:
        entry = act.get_activation(name)

        def both(x):
            return entry.fn(x), entry.derivative(x)

        labels = "f(x)", "f'(x)"
    f, d = jax.jit(both)(x)
    return np.asarray(f), np.asarray(d), *labels


def activation_figure(name: str, x_range: tuple[float, float] = (-6.0, 6.0), points: int = 601) -> Any:
    """One activation and its derivative on ``[x_range]``; returns a matplotlib Figure."""
    if name not in FIGURES:
        raise NnjaxError(f"No activation figure for {name!r}; choose one of: {', '.join(FIGURES)}.")
    from nnjax.plots.common import pyplot

    plt = pyplot()

    x = np.linspace(*x_range, points, dtype=np.float32)
    f, d, f_label, d_label = _curves(name, x)
    number, title = FIGURES[name]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.plot(x, f, color="tab:blue", linewidth=2, label=f_label)
    ax.plot(x, d, color="tab:orange", linewidth=1.6, linestyle="--", label=d_label)
    ax.axhline(0, color="0.6", linewidth=0.6)
    ax.axvline(0, color="0.6", linewidth=0.6)
    ax.set_xlabel("x")
    ax.set_title(f"Figure {number}: {title}")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def activation_figures(out_dir: str | Path, dpi: int = 110) -> list[Path]:
    """Write ``activation_<name>.png`` for every activation into ``out_dir``; return the paths."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in FIGURES:
        fig = activation_figure(name)
        path = out / f"activation_{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
