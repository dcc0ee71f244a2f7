"""MLP train step: nnjax (jitted step factory, nnjax's Adam) vs the same MLP and Adam in PyTorch.

Same architecture (784-256-256-10, ReLU), same initial weights, same batch, cross-entropy,
Adam lr 1e-3; median time per step after warm-up, one process. Run:
``.venv/bin/python -m benchmarks.bench_mlp``.
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import (
    BenchTable,
    bench_args,
    measure,
    pct_of_peak,
    threaded,
    torch_linear,
    torch_train_step,
    xla_cost,
)

WIDTHS = (256, 256, 10)
N_IN = 784


def nnjax_step(batch_size: int, params_np: dict, x: np.ndarray, y: np.ndarray, optimizer: str):
    import jax
    import jax.numpy as jnp
    import optax

    from nnjax.models.mlp import MLP
    from nnjax.nn.losses import softmax_cross_entropy_int
    from nnjax.nn.optim import adam
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step

    model = MLP(WIDTHS)

    def loss_fn(params, batch_stats, batch, rng, train):
        logits = model.apply({"params": params}, batch["x"])
        return softmax_cross_entropy_int(logits, batch["y"]), {}

    tx = adam(1e-3) if optimizer == "nnjax" else optax.adam(1e-3)
    params = jax.device_put(params_np)
    state = create_train_state(params, tx, rng=jax.random.PRNGKey(0))
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "mask": jnp.ones(batch_size, jnp.float32)}
    step = make_train_step(loss_fn, tx)
    return step, state, batch


def torch_step(params_np: dict, x: np.ndarray, y: np.ndarray):
    import torch

    layers = []
    for i in range(len(WIDTHS)):
        linear = torch_linear(params_np[f"dense_{i}"])
        layers += [linear, torch.nn.ReLU()] if i < len(WIDTHS) - 1 else [linear]
    model = torch.nn.Sequential(*layers)
    return torch_train_step(model, torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    import jax

    from nnjax.models.mlp import MLP
    from nnjax.train.init import run_once

    repeats = 20 if args.quick else 100
    table = BenchTable("MLP train step", "python -m benchmarks.bench_mlp" + (" --quick" if args.quick else ""),
                       notes="ratio = PyTorch eager time / nnjax time (above 1: nnjax faster).")

    def init(key, x1):
        return MLP(WIDTHS).init(key, x1)

    for batch_size in (32, 128, 512):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(batch_size, N_IN)).astype(np.float32)
        y = rng.integers(0, 10, batch_size).astype(np.int32)
        variables = run_once(init, jax.random.PRNGKey(0), x[:1])  # one program, not one per operation
        params_np = jax.tree_util.tree_map(np.asarray, variables["params"])
        ours = {name: nnjax_step(batch_size, params_np, x, y, optimizer)
                for name, optimizer in (("nnjax (nnjax.nn.optim.adam)", "nnjax"), ("nnjax (optax.adam)", "optax"))}
        work = xla_cost(*next(iter(ours.values())))  # the step's FLOPs; PyTorch does the same work
        results = {name: measure(threaded(*parts), repeats=repeats) for name, parts in ours.items()}
        results["PyTorch eager"] = measure(torch_step(params_np, x, y), repeats=repeats)
        torch_ms = results["PyTorch eager"]["median_s"] * 1e3
        for name, r in results.items():
            table.add(batch=batch_size, implementation=name, compile_s=r["compile_s"],
                      median_ms=r["median_s"] * 1e3, p90_ms=r["p90_s"] * 1e3,
                      ratio_vs_torch=torch_ms / (r["median_s"] * 1e3), mflops=work["flops"] / 1e6,
                      pct_of_peak=pct_of_peak(work, r["median_s"]))
    md, _ = table.write(args.out, "mlp")
    print(md.read_text())


if __name__ == "__main__":
    main()
