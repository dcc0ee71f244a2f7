"""The one benchmark harness: compile time apart from steady-state time, tables with provenance.

``measure(fn, *args)`` calls ``fn`` once (compile, timed alone), ``warmup`` more times,
then ``repeats`` timed calls, each waited on (``block_until_ready`` for JAX outputs; PyTorch
on CPU is synchronous, on CUDA wrap the call with :func:`torch_synced`). PyTorch peers run on
:func:`torch_device`: the GPU when JAX computes on one, so both sides use the same card. For a step that consumes
its state (donated buffers), wrap it with :func:`threaded` so each call feeds the previous
call's state back in.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from nnjax.machine import cpu_name, vector_extensions

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _block(value: Any) -> None:
    import jax

    try:
        jax.block_until_ready(value)
    except Exception:  # non-JAX outputs (PyTorch, NumPy) are already computed
        pass


def measure(fn: Callable[..., Any], *args: Any, warmup: int = 3, repeats: int = 20) -> dict[str, float]:
    """Seconds per call: ``compile_s`` (the first call) and the median / p10 / p90 / min of ``repeats``."""
    start = time.perf_counter()
    _block(fn(*args))
    compile_s = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        _block(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(fn(*args))
        times.append(time.perf_counter() - start)
    times.sort()
    return {
        "compile_s": compile_s,
        "median_s": statistics.median(times),
        "min_s": times[0],
        "p10_s": times[int(0.1 * (len(times) - 1))],
        "p90_s": times[int(0.9 * (len(times) - 1))],
        "repeats": repeats,
    }


PEAK_MATMUL_N = 2048  # square fp32 products for the compute peak
PEAK_COPY_BYTES = 256 << 20  # one array this large, read once and written once, for the bandwidth peak


#: Timed repeats of each peak measurement; ``bench_args`` sets 3 under ``--quick``.
peak_repeats = 10


def _fastest_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """The shortest of ``repeats`` timed calls (after one warm-up): the best this machine did."""
    return measure(fn, warmup=1, repeats=repeats)["min_s"]


@functools.cache
def machine_peak(repeats: int | None = None) -> dict[str, float]:
    """This machine's limits, measured now in this process (other work on the cores lowers them).

    ``repeats``: timed calls of each measurement (the fastest counts: on a VM whose speed drifts with its
    neighbours' load, a median peak fell below rows timed in a faster minute, one at 100.1 %); default
    :data:`peak_repeats`.

    ``xla_gflops`` / ``torch_gflops``: fp32 ``PEAK_MATMUL_N``-square matrix products in XLA and
    PyTorch (on the device both use); ``gflops``: the larger. ``copy_gbs``: GB/s of ``x + 1`` on a
    ``PEAK_COPY_BYTES`` array (bytes read + written), the larger of XLA and PyTorch.
    """
    import jax
    import jax.numpy as jnp

    repeats = repeats or peak_repeats
    n = PEAK_MATMUL_N
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda x, y: x @ y)
    xla_gflops = 2 * n**3 / _fastest_seconds(lambda: matmul(a, a), repeats) / 1e9
    big = jnp.zeros(PEAK_COPY_BYTES // 4, jnp.float32)
    add_one = jax.jit(lambda x: x + 1.0)
    xla_gbs = 2 * PEAK_COPY_BYTES / _fastest_seconds(lambda: add_one(big), repeats) / 1e9
    peak = {"xla_gflops": xla_gflops, "xla_copy_gbs": xla_gbs}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        device = torch_device()
        ta = torch.randn(n, n, device=device)
        tbig = torch.zeros(PEAK_COPY_BYTES // 4, device=device)
        peak["torch_gflops"] = 2 * n**3 / _fastest_seconds(torch_synced(lambda: ta @ ta, device), repeats) / 1e9
        peak["torch_copy_gbs"] = 2 * PEAK_COPY_BYTES / _fastest_seconds(torch_synced(lambda: tbig + 1.0, device),
                                                                      repeats) / 1e9
    peak["gflops"] = max(v for k, v in peak.items() if k.endswith("_gflops"))
    peak["copy_gbs"] = max(v for k, v in peak.items() if k.endswith("_copy_gbs"))
    return peak


def xla_cost(jitted: Any, *args: Any) -> dict[str, float]:
    """``flops`` and ``bytes`` (accessed) of one call of ``jitted(*args)``, from XLA's cost analysis of
    the compiled program: the work of a row, the same for peer rows that do the same computation."""
    analysis = jitted.lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jaxlibs: one dict per device program
        analysis = analysis[0]
    return {"flops": float(analysis.get("flops", 0.0)), "bytes": float(analysis.get("bytes accessed", 0.0))}


def pct_of_peak(work: dict[str, float], seconds: float, bound: str = "compute",
                peak: dict[str, float] | None = None) -> float:
    """Percent of this machine's measured peak that ``work`` done in ``seconds`` reaches.

    ``bound="compute"``: flops / s against the matmul peak; ``"memory"``: bytes / s against the
    copy bandwidth (for work with few flops per byte: clustering, a cached head). ``peak``: a
    :func:`machine_peak` measured elsewhere (a worker process pinned to fewer cores); default: this one's.
    """
    peak = peak or machine_peak()
    if bound == "memory":
        return 100.0 * work["bytes"] / seconds / (peak["copy_gbs"] * 1e9)
    return 100.0 * work["flops"] / seconds / (peak["gflops"] * 1e9)


def threaded(step: Callable[[Any, Any], tuple[Any, Any]], state: Any, batch: Any) -> Callable[[], Any]:
    """A no-argument callable running ``state, out = step(state, batch)`` and returning ``out``."""
    holder = {"state": state}

    def call() -> Any:
        holder["state"], out = step(holder["state"], batch)
        return out

    return call


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Device, CPU, core count and library versions: the provenance of a table."""
    import jax

    device = jax.devices()[0]
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "cpu": cpu_name(),
        "vector_extensions": vector_extensions(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "versions": {p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "torch", "keras", "scikit-learn")
                     if _version(p)},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        **({"peak": machine_peak()} if machine_peak.cache_info().currsize else {}),
    }


def _peak_line(peak: dict[str, float]) -> str:
    torch_part = (f", PyTorch {peak['torch_gflops']:.0f} GFLOP/s and {peak['torch_copy_gbs']:.1f} GB/s"
                  if "torch_gflops" in peak else "")
    return (f"Measured peak in this run (`pct_of_peak` is against the larger): fp32 {PEAK_MATMUL_N}-square "
            f"matmul XLA {peak['xla_gflops']:.0f} GFLOP/s, copy {peak['xla_copy_gbs']:.1f} GB/s{torch_part}.")


class BenchTable:
    """Rows of one benchmark, written as Markdown and JSON with their provenance."""

    def __init__(self, title: str, command: str, notes: str = ""):
        self.title = title
        self.command = command
        self.notes = notes
        self.rows: list[dict[str, Any]] = []

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def markdown(self, env: dict[str, Any]) -> str:
        columns: list[str] = []
        for row in self.rows:
            columns += [c for c in row if c not in columns]

        def cell(value: Any) -> str:
            if isinstance(value, float):
                return f"{value:.4g}"
            return "" if value is None else str(value)

        lines = [
            f"## {self.title}",
            "",
            f"Command: `{self.command}` — {env['date']}, {env['device']} ({env['cpu']}, {env['cores']} cores), "
            + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
            "",
            f"CPU vector extensions: {' '.join(env.get('vector_extensions') or ['unknown'])}",
            "",
            *([_peak_line(env["peak"]), ""] if env.get("peak") else []),
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in self.rows]
        if self.notes:
            lines += ["", self.notes.strip()]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path | None = None, name: str | None = None) -> tuple[Path, Path]:
        """Write ``NAME.md`` and ``NAME.json`` (NAME from the title) into ``out_dir``."""
        out = Path(out_dir) if out_dir else RESULTS_DIR
        out.mkdir(parents=True, exist_ok=True)
        name = name or self.title.lower().replace(" ", "_").replace("/", "_")
        env = environment()
        md_path, json_path = out / f"{name}.md", out / f"{name}.json"
        md_path.write_text(self.markdown(env))
        payload = {"title": self.title, "command": self.command, "notes": self.notes, "env": env, "rows": self.rows}
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        return md_path, json_path


def bench_args(argv: list[str] | None = None, description: str = "") -> Any:
    """The options every benchmark takes: ``--out DIR`` and ``--quick``."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=str(RESULTS_DIR), help="folder for the Markdown + JSON table")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    args = parser.parse_args(argv)
    global peak_repeats
    peak_repeats = 3 if args.quick else 10
    return args


def torch_device() -> str:
    """``"cuda"`` when JAX's default backend is a GPU and PyTorch sees one too, else ``"cpu"``.

    On a GPU, TF32 matrix products are allowed in PyTorch as well (JAX's default precision there).
    """
    import jax

    if jax.default_backend() != "gpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    torch.set_float32_matmul_precision("high")
    return "cuda"


def torch_synced(fn: Callable[[], Any], device: str) -> Callable[[], Any]:
    """``fn`` followed by ``torch.cuda.synchronize()`` on CUDA (so a timing covers the kernels); ``fn`` on CPU."""
    if device == "cpu":
        return fn
    import torch

    def call() -> Any:
        out = fn()
        torch.cuda.synchronize()
        return out

    return call


def torch_linear(dense: dict) -> Any:
    """A ``torch.nn.Linear`` holding a Flax ``Dense`` layer's weights (``{"kernel": [in, out], "bias": [out]}``)."""
    import numpy as np
    import torch

    kernel, bias = np.asarray(dense["kernel"], np.float32), np.asarray(dense["bias"], np.float32)
    linear = torch.nn.Linear(*kernel.shape)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
        linear.bias.copy_(torch.from_numpy(bias.copy()))
    return linear


def torch_train_step(model: Any, inputs: Any, labels: Any, lr: float = 1e-3) -> Callable[[], Any]:
    """The PyTorch peer of a classification train step: Adam(lr) on cross-entropy, eager, on :func:`torch_device`.

    ``inputs`` and ``labels`` are tensors in the model's layout (labels int64); model and tensors
    move to the device here. Returns a no-argument callable running one step and returning the loss.
    """
    import torch

    device = torch_device()
    model, inputs, labels = model.to(device), inputs.to(device), labels.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss

    return torch_synced(step, device)
