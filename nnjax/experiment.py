"""The experiment registry and the run context every experiment writes through.

An experiment is one file in ``experiments/`` that calls :func:`register` with

* a **config dataclass** whose defaults are the thesis's (``--full``) settings; every
  field becomes a command-line option (``epochs`` -> ``--epochs``),
* a ``quick`` dict of overrides for the quick profile (``nnjax reproduce --quick``),
* a ``run(config, ctx) -> dict`` function returning the headline metrics,
* optionally ``evaluate`` / ``predict`` hooks for ``nnjax eval`` / ``nnjax predict``.

The framework, not the experiment, writes ``summary.json`` (headline metrics plus
``seconds`` and ``device``), ``config.json`` (the resolved config) and
``metrics.jsonl`` (through :attr:`RunContext.metrics`) into the run's ``--out`` folder.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nnjax.errors import NnjaxError
from nnjax.train.metrics import MetricsWriter


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One registered experiment.

    Attributes:
      name: command-line name, e.g. ``"mnist"``.
      description: one line shown by ``nnjax list``.
      config: a dataclass type; its defaults are the full (thesis) settings.
      run: ``run(config, ctx) -> dict`` of headline metrics (JSON-serialisable numbers).
      quick: field overrides applied by the quick profile.
      thesis: headline metric name -> the thesis's reported value, for the report.
      evaluate: ``evaluate(checkpoint_dir: Path) -> dict`` for ``nnjax eval``.
      predict: ``predict(checkpoint_dir: Path, inputs: list[str]) -> list[dict]`` for
        ``nnjax predict``; each dict is one input's result (printed, or JSON with --json).
      requires: ``requires() -> str | None``; a sentence saying what is missing (data,
        weights) and how to get it, or None when the experiment can run. ``nnjax
        reproduce`` skips experiments that return a reason.
    """

    name: str
    description: str
    config: type
    run: Callable[[Any, RunContext], dict]
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    thesis: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    evaluate: Callable[[Path], dict] | None = None
    predict: Callable[[Path, list[str]], list[dict]] | None = None
    requires: Callable[[], str | None] | None = None

    def make_config(self, profile: str = "full", **overrides: Any) -> Any:
        """The config for a profile (``"quick"`` or ``"full"``) with explicit overrides."""
        values = dict(self.quick) if profile == "quick" else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise NnjaxError(
                f"Experiment {self.name!r} has no option {unknown[0]!r}; "
                f"its options are: {', '.join(sorted(known))}."
            )
        return self.config(**values)


_REGISTRY: dict[str, Experiment] = {}
_DISCOVERED = False


def register(experiment: Experiment) -> Experiment:
    """Add an experiment to the registry (called at import time by its module)."""
    if not dataclasses.is_dataclass(experiment.config):
        raise TypeError(f"{experiment.name}: config must be a dataclass type")
    _REGISTRY[experiment.name] = experiment
    return experiment


def _discover() -> None:
    """Import every module of the ``experiments`` package so each registers itself."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import experiments

    for info in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"experiments.{info.name}")


def all_experiments() -> list[Experiment]:
    """Every registered experiment, in registration order of their module names."""
    _discover()
    return list(_REGISTRY.values())


def get(name: str) -> Experiment:
    """The experiment called ``name``, or a clear error listing the known names."""
    _discover()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise NnjaxError(f"Unknown experiment {name!r}; choose one of: {known}.")
    return _REGISTRY[name]


def _jsonable(value: Any) -> Any:
    """Numbers from NumPy / JAX as plain Python, paths as strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def prepare_out_dir(out: str | Path) -> Path:
    """Create ``out`` as a folder; a clear error when it is a file or cannot be made."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NnjaxError(f"--out {str(path)!r} is a file; give a folder path instead.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NnjaxError(
            f"Cannot create the output folder {str(path)!r} ({err.strerror}); "
            "choose a writable location with --out."
        ) from None
    return path


class RunContext:
    """What a running experiment writes through.

    Attributes:
      out: the run's output folder (created).
      seed: the run's seed; derive every PRNG key from it.
      metrics: a :class:`MetricsWriter` appending to ``out/metrics.jsonl``.
      progress: whether to show progress bars.
    """

    def __init__(self, out: str | Path, seed: int = 0, progress: bool = True):
        self.out = prepare_out_dir(out)
        self.seed = int(seed)
        self.progress = progress
        self.metrics = MetricsWriter(self.out / "metrics.jsonl")
        self.figures: list[Path] = []

    def path(self, name: str) -> Path:
        """A file path inside the run folder (parents created)."""
        target = self.out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def save_figure(self, fig: Any, name: str, dpi: int = 120) -> Path:
        """Save a matplotlib figure as ``out/NAME`` (PNG unless NAME says otherwise), close it."""
        import matplotlib.pyplot as plt

        target = self.path(name if "." in name else f"{name}.png")
        fig.savefig(target, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(target)
        return target

    def add_artifact(self, path: str | Path) -> Path:
        """Record a figure or animation written by other means (GIF, MP4)."""
        self.figures.append(Path(path))
        return Path(path)


def _compile_seconds(metrics_path: Path) -> float:
    """Total first-step (compile) seconds that ``fit`` logged as ``{"event": "compile"}`` lines."""
    total = 0.0
    if metrics_path.is_file():
        for line in metrics_path.read_text().splitlines():
            if '"compile"' in line:
                record = json.loads(line)
                if record.get("event") == "compile":
                    total += float(record.get("compile_s", 0.0))
    return total


def run_experiment(
    experiment: Experiment,
    config: Any,
    out: str | Path,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run one experiment and write ``config.json``, ``metrics.jsonl``, ``summary.json``.

    Returns the summary dict (headline metrics, ``seconds``, ``device``, ``figures``).
    """
    import jax

    ctx = RunContext(out, seed=seed, progress=progress)
    resolved = {"experiment": experiment.name, "seed": ctx.seed, **dataclasses.asdict(config)}
    (ctx.out / "config.json").write_text(json.dumps(_jsonable(resolved), indent=2) + "\n")
    start = time.perf_counter()
    try:
        headline = experiment.run(config, ctx)
    finally:
        ctx.metrics.close()
    seconds = time.perf_counter() - start
    device = jax.devices()[0]
    compile_s = _compile_seconds(ctx.out / "metrics.jsonl")
    summary = {
        **_jsonable(headline),
        **({"compile_s": round(compile_s, 2)} if compile_s else {}),
        "seconds": round(seconds, 2) if "seconds" not in headline else _jsonable(headline["seconds"]),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "figures": [str(p.relative_to(ctx.out)) if p.is_relative_to(ctx.out) else str(p) for p in ctx.figures],
    }
    (ctx.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
