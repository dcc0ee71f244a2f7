"""The experiment registry and the run context every experiment writes through.

An experiment is one file in ``experiments/`` that calls :func:`register` with

* a **config dataclass** whose defaults are the thesis's (``--full``) settings; every
  field becomes a command-line option (``epochs`` -> ``--epochs``),
* a ``quick`` dict of overrides for the quick profile (``nnjax reproduce --quick``),
* a ``run(config, ctx) -> dict`` function returning the headline metrics,
* optionally ``evaluate`` / ``predict`` hooks for ``nnjax eval`` / ``nnjax predict``.

The framework, not the experiment, writes ``summary.json`` (headline metrics plus
``seconds`` and ``device``), ``config.json`` (the resolved config), ``run.json`` (what
defines the run, see :mod:`nnjax.run_folder`) and ``metrics.jsonl`` (through
:attr:`RunContext.metrics`) into the run's ``--out`` folder. Experiments train through
:meth:`RunContext.checkpointer` and cache expensive intermediate arrays through
:meth:`RunContext.cached`, so a killed run rerun with the same command ends with the
results of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
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
      fingerprint: ``fingerprint(config) -> dict[str, str]``: name -> sha256 of each data set
        and weight file the run reads (recorded in ``run.json``; a rerun on other data is
        refused instead of resumed). None for experiments whose data the config generates.
      recipes: named presets of options (``--recipe NAME``; the config has a ``recipe`` field):
        a recipe's values replace the defaults, options given explicitly still win.
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
    fingerprint: Callable[[Any], dict[str, str]] | None = None
    recipes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def make_config(self, profile: str = "full", **overrides: Any) -> Any:
        """The config for a profile (``"quick"`` or ``"full"``) and recipe, with explicit overrides on top."""
        given = {k: v for k, v in overrides.items() if v is not None}
        recipe = given.get("recipe")
        if recipe is None and self.recipes:
            recipe = next(f.default for f in dataclasses.fields(self.config) if f.name == "recipe")
        values = dict(self.recipes.get(recipe, {})) if self.recipes else {}
        values.update(self.quick if profile == "quick" else {})
        values.update(given)
        known = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise NnjaxError(
                f"Experiment {self.name!r} has no option {unknown[0]!r}; "
                f"its options are: {', '.join(sorted(known))}."
            )
        for field in dataclasses.fields(self.config):
            value = values.get(field.name, field.default)
            if isinstance(value, float) and not math.isfinite(value):
                flag = "--" + field.name.replace("_", "-")
                raise NnjaxError(f"{flag} must be a finite number, got {value}; give a real value.")
        return self.config(**values)


def option(default: Any, help: str) -> Any:  # noqa: A002 -- the word argparse uses
    """A config field with its ``--help`` text: ``epochs: int = option(10, "passes over the data")``."""
    return dataclasses.field(default=default, metadata={"help": help})


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
        value = value.item()
    elif hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN / Infinity
    return value


def prepare_out_dir(out: str | Path, option: str = "--out", what: str = "output folder") -> Path:
    """Create ``out`` as a folder; one sentence naming ``option`` when it is a file or cannot be made."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NnjaxError(f"{option} {str(path)!r} is a file; give a folder path instead.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NnjaxError(
            f"Cannot create the {what} {str(path)!r} ({err.strerror}); choose a writable location with {option}."
        ) from None
    return path


class RunContext:
    """What a running experiment writes through.

    Attributes:
      out: the run's output folder (created).
      seed: the run's seed; derive every PRNG key from it.
      metrics: a :class:`MetricsWriter` appending to ``out/metrics.jsonl``.
      progress: whether to show progress bars.
      resumed: whether this process continues an unfinished run of the same definition.
      checkpoint_seconds: epoch-end checkpoints are at least this many seconds apart (0: every epoch).
      make_figures: whether the run draws its figures; experiments skip their figure code when it is
        ``False`` (``nnjax run --no-figures``), and then :meth:`save_figure` writes nothing.
    """

    def __init__(self, out: str | Path, seed: int = 0, progress: bool = True, *, resumed: bool = False,
                 checkpoint_seconds: float = 10.0, make_figures: bool = True):
        self.out = prepare_out_dir(out)
        self.seed = int(seed)
        self.progress = progress
        self.resumed = resumed
        self.checkpoint_seconds = float(checkpoint_seconds)
        self.make_figures = bool(make_figures)
        self.metrics = MetricsWriter(self.out / "metrics.jsonl", resume=resumed)
        self.figures: list[Path] = []

    def path(self, name: str) -> Path:
        """A file path inside the run folder (parents created)."""
        target = self.out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def checkpointer(self, stage: str = "train", *, trainable: Any = None, every_steps: int | None = None):
        """The :class:`~nnjax.train.checkpoint.Checkpointer` of one training stage, in
        ``out/train_state/STAGE``; pass it to ``fit`` so the stage resumes after a kill.

        ``trainable``: the stage's bool mask, so only trainable parameters are written.
        """
        from nnjax.train.checkpoint import Checkpointer

        return Checkpointer(self.out / "train_state" / stage, every_steps=every_steps,
                            every_seconds=self.checkpoint_seconds, trainable=trainable)

    def cached(self, name: str, compute: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        """``compute()``'s arrays (a dict of NumPy arrays), kept in ``out/cache/NAME.npz``.

        The first call computes and saves them (atomically); a resumed run loads the same
        bits instead of recomputing (e.g. a frozen backbone's features). A damaged cache
        file is recomputed with a one-line warning.
        """
        import sys

        import numpy as np

        from nnjax import atomic

        target = self.out / "cache" / f"{name}.npz"
        if target.is_file():
            try:
                with np.load(target, allow_pickle=False) as stored:
                    return {key: stored[key] for key in stored.files}
            except (OSError, ValueError, EOFError) as err:
                print(f"nnjax: warning: the cached {name!r} in {str(target)!r} is damaged ({err}); recomputing it.",
                      file=sys.stderr)
        arrays = {key: np.asarray(value) for key, value in compute().items()}
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic.staged_file(target) as tmp:
            np.savez(tmp, **arrays)
        return arrays

    def save_figure(self, fig: Any, name: str, dpi: int = 120) -> Path | None:
        """Save a matplotlib figure as ``out/NAME`` (PNG unless NAME says otherwise), close it; return its path
        (``None``, nothing written, when the run makes no figures)."""
        import matplotlib.pyplot as plt

        if not self.make_figures:
            plt.close(fig)
            return None
        target = self.path(name if "." in name else f"{name}.png")
        fig.savefig(target, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(target)
        return target

    def add_artifact(self, path: str | Path) -> Path:
        """Record a figure or animation written by other means (GIF, MP4); check :attr:`make_figures` before
        writing one."""
        self.figures.append(Path(path))
        return Path(path)


def run_definition(experiment: Experiment, config: Any, seed: int) -> dict[str, Any]:
    """What defines a run: experiment, seed, resolved config, nnjax code version, data fingerprints."""
    from nnjax.run_folder import code_version

    return {
        "experiment": experiment.name,
        "seed": int(seed),
        "config": _jsonable(dataclasses.asdict(config)),
        "code": code_version(),
        "data": dict(experiment.fingerprint(config)) if experiment.fingerprint else {},
    }


def run_experiment(
    experiment: Experiment,
    config: Any,
    out: str | Path,
    seed: int = 0,
    progress: bool = True,
    *,
    mode: str = "auto",
    checkpoint_seconds: float = 10.0,
    make_figures: bool = True,
) -> dict:
    """Run one experiment in the folder ``out``, which it owns, and return the summary dict.

    Writes ``run.json``, ``config.json``, ``metrics.jsonl`` and ``summary.json`` (headline
    metrics, ``seconds`` and ``compile_s`` of this process, ``device``, ``figures``).
    ``mode`` (see :func:`nnjax.run_folder.claim`): ``"auto"`` starts, resumes the same
    unfinished run or reports the same finished one, and refuses a different run;
    ``"resume"`` insists on a run to continue; ``"overwrite"`` starts afresh.
    ``make_figures=False`` skips the figures (the run's results and checkpoints are the same; it is not part
    of the run's definition, so a finished run is not redrawn: rerun it with ``mode="overwrite"``).
    """
    import sys

    import jax

    from nnjax import atomic
    from nnjax.run_folder import claim

    if jax.process_count() > 1 and jax.process_index() > 0:
        out = Path(out) / f"process-{jax.process_index()}"  # each process owns its own folder
    definition = run_definition(experiment, config, seed)
    folder = claim(out, definition, mode)  # type: ignore[arg-type]
    ctx = None
    try:
        if folder.status == "complete" and (folder.path / "summary.json").is_file():
            print(f"{experiment.name}: {str(folder.path)!r} already holds this finished run; nothing to train "
                  "(pass --overwrite to run it again).", file=sys.stderr)
            return json.loads((folder.path / "summary.json").read_text())
        resumed = folder.status in ("resume", "complete")
        folder.begin()
        if resumed:
            print(f"{experiment.name}: continuing the unfinished run in {str(folder.path)!r} "
                  f"(attempt {folder.attempt}).", file=sys.stderr)
        atomic.write_json(folder.path / "config.json", {"experiment": experiment.name, "seed": int(seed),
                                                        **definition["config"]})
        ctx = RunContext(folder.path, seed=seed, progress=progress, resumed=resumed,
                         checkpoint_seconds=checkpoint_seconds, make_figures=make_figures)
        start = time.perf_counter()
        headline = experiment.run(config, ctx)
        seconds = time.perf_counter() - start
        device = jax.devices()[0]
        compile_s = ctx.metrics.compile_seconds
        summary = {
            **_jsonable(headline),
            **({"compile_s": round(compile_s, 2)} if compile_s else {}),
            "seconds": round(seconds, 2) if "seconds" not in headline else _jsonable(headline["seconds"]),
            "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
            "figures": [str(p.relative_to(ctx.out)) if p.is_relative_to(ctx.out) else str(p) for p in ctx.figures],
            **({"attempts": folder.attempt} if folder.attempt > 1 else {}),
        }
        atomic.write_json(folder.path / "summary.json", summary)
        folder.finish(seconds)
        return summary
    finally:
        if ctx is not None:
            ctx.metrics.close()
        folder.release()
