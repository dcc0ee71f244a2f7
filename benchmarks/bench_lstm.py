"""LSTM(50) -> Dense(1) train step: nnjax vs PyTorch ``nn.LSTM`` vs Keras 3 ``LSTM`` (JAX backend).

The thesis's forecaster (section 4.3): batches of 32 windows of T steps with one feature,
mean squared error, Adam (lr 1e-3). All three start from the same weights (nnjax's
initialisation copied into the PyTorch and Keras layers; their first-step losses are
printed to show they compute the same thing) and train on the same batches. Sequence
lengths 24 (the thesis's), 96 and 384 show how each grows with T.

Rows, per sequence length, milliseconds per train step (median over interleaved rounds,
so load on the machine hits every contender alike):

* ``nnjax`` — the shared ``make_train_step`` (jitted, donated state) on a device-resident batch,
  with the recurrent layer's hand-written backward pass (``impl="fused"``);
* ``nnjax autodiff`` — the same with JAX transposing the ``lax.scan`` (``impl="autodiff"``);
* ``nnjax fit`` — per step inside the shared ``fit`` loop over an ``ArrayLoader`` (host batches);
* ``pytorch`` — eager ``nn.LSTM`` + ``nn.Linear``, ``zero_grad / backward / step``;
* ``keras fit`` — per step inside ``model.fit`` (KERAS_BACKEND=jax, jit-compiled).

``ratio`` = contender time / nnjax time (above 1: nnjax is faster). Run:
``.venv/bin/python -m benchmarks.bench_lstm`` (``--quick``: fewer rounds, T = 24 and 96).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras

import numpy as np  # noqa: E402

from benchmarks.harness import BenchTable, bench_args, pct_of_peak, torch_device  # noqa: E402

HIDDEN = 50
BATCH = 32
LR = 1e-3


def step_flops(seq_len: int, batch: int = BATCH, hidden: int = HIDDEN, features: int = 1) -> float:
    """FLOPs of one train step, counted from the equations: per time step the gate product
    ``[B, I+H] @ [I+H, 4H]`` (2·B·4H·(I+H)), its backward twice that (inputs and weights), plus
    ~20 element-wise operations per gate value forward and backward. XLA's cost analysis counts a
    ``scan`` body once, not per step, so it is not used here."""
    gates = 4 * hidden
    matmul = 2 * batch * gates * (features + hidden)
    return float(seq_len * (3 * matmul + 20 * batch * gates))


def make_data(seq_len: int, batches: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standardised random-walk windows ``[batches*32, T, 1]`` and their next values ``[N, 1]``."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(batches * BATCH, seq_len + 1)), axis=1)
    walk = (walk - walk.mean()) / walk.std()
    return walk[:, :-1, None].astype(np.float32), walk[:, -1:].astype(np.float32)


# ----------------------------------------------------------------------------- contenders


def nnjax_init(seed: int = 0) -> dict:
    import jax

    from nnjax.models.rnn import SequenceRegressor

    x = np.zeros((1, 4, 1), np.float32)
    params = SequenceRegressor("lstm", HIDDEN).init(jax.random.PRNGKey(seed), x)["params"]
    return jax.tree_util.tree_map(np.asarray, params)


def _nnjax_loss(impl: str, unroll: int):
    import jax.numpy as jnp

    from nnjax.models.rnn import SequenceRegressor

    model = SequenceRegressor("lstm", HIDDEN, impl=impl, unroll=unroll)

    def loss_fn(params, batch_stats, batch, rng, train):
        pred = model.apply({"params": params}, batch["x"])
        return jnp.mean((pred - batch["y"]) ** 2, axis=-1), {"metrics": {}, "batch_stats": {}}

    return loss_fn


def nnjax_steps(params: dict, x: np.ndarray, y: np.ndarray, impl: str = "fused", unroll: int = 1):
    """``(run_k(k) -> loss, first_loss, compile_s)``: k train steps on one device-resident batch."""
    import jax
    import optax

    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step

    tx = optax.adam(LR)
    state = create_train_state(jax.device_put(params, may_alias=False), tx, rng=jax.random.PRNGKey(0))
    step = make_train_step(_nnjax_loss(impl, unroll), tx)
    batch = jax.device_put({"x": x[:BATCH], "y": y[:BATCH], "mask": np.ones(BATCH, np.float32)})
    holder = {}
    start = time.perf_counter()
    holder["state"], metrics = step(state, batch)
    first = float(metrics["loss"])
    compile_s = time.perf_counter() - start

    def run_k(k: int):
        for _ in range(k):
            holder["state"], metrics = step(holder["state"], batch)
        return float(metrics["loss"])

    return run_k, first, compile_s


def nnjax_fit_steps(params: dict, x: np.ndarray, y: np.ndarray):
    """``run_epoch() -> steps``: one epoch of the shared ``fit`` loop over all batches."""
    import jax
    import optax

    from nnjax.data.batching import ArrayLoader
    from nnjax.train.fit import fit
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step

    tx = optax.adam(LR)
    holder = {
        "state": create_train_state(jax.device_put(params, may_alias=False), tx, rng=jax.random.PRNGKey(0))
    }
    step = make_train_step(_nnjax_loss("fused", 1), tx)
    loader = ArrayLoader({"x": x, "y": y}, BATCH, shuffle=True, seed=0)

    def run_epoch() -> int:
        epochs = int(holder["state"].step) // len(loader) + 1
        holder["state"], _ = fit(
            holder["state"], step, loader, epochs=epochs, progress=False, log_every=10**9
        )
        return len(loader)

    return run_epoch


def torch_steps(params: dict, x: np.ndarray, y: np.ndarray, device: str):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(1, HIDDEN, batch_first=True)
            self.head = torch.nn.Linear(HIDDEN, 1)

        def forward(self, inputs):
            _, (h, _) = self.lstm(inputs)
            return self.head(h[-1])

    net = Net()
    cell = params["rnn"]["cell"]
    with torch.no_grad():
        net.lstm.weight_ih_l0.copy_(torch.from_numpy(cell["ih"]["kernel"].T.copy()))
        net.lstm.weight_hh_l0.copy_(torch.from_numpy(cell["hh"]["kernel"].T.copy()))
        net.lstm.bias_ih_l0.copy_(torch.from_numpy(cell["ih"]["bias"]))
        net.lstm.bias_hh_l0.zero_()
        net.head.weight.copy_(torch.from_numpy(params["head"]["kernel"].T.copy()))
        net.head.bias.copy_(torch.from_numpy(params["head"]["bias"]))
    net = net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    xb, yb = torch.from_numpy(x[:BATCH]).to(device), torch.from_numpy(y[:BATCH]).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def one():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    start = time.perf_counter()
    first = float(one())
    compile_s = time.perf_counter() - start

    def run_k(k: int):
        for _ in range(k):
            loss = one()
        sync()
        return float(loss)

    return run_k, first, compile_s


def keras_fit_steps(params: dict, x: np.ndarray, y: np.ndarray):
    """``(run_epoch() -> steps, first_loss, compile_s)`` with Keras 3 ``model.fit`` on the JAX backend."""
    import keras

    cell = params["rnn"]["cell"]
    model = keras.Sequential([keras.Input((x.shape[1], 1)), keras.layers.LSTM(HIDDEN), keras.layers.Dense(1)])
    # Keras gate order i, f, c, o equals PyTorch's / nnjax's i, f, g, o; one bias.
    model.layers[0].set_weights([cell["ih"]["kernel"], cell["hh"]["kernel"], cell["ih"]["bias"]])
    model.layers[1].set_weights([params["head"]["kernel"], params["head"]["bias"]])
    model.compile(optimizer=keras.optimizers.Adam(LR), loss="mse")
    first = float(model.evaluate(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0))
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=True, verbose=0)
    compile_s = time.perf_counter() - start

    def run_epoch() -> int:
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=True, verbose=0)
        return len(x) // BATCH

    return run_epoch, first, compile_s


# ----------------------------------------------------------------------------- timing


def _timed_steps(run_k: Callable[[int], object], k: int) -> float:
    start = time.perf_counter()
    run_k(k)
    return (time.perf_counter() - start) / k


def _timed_epoch(run_epoch: Callable[[], int]) -> float:
    start = time.perf_counter()
    steps = run_epoch()
    return (time.perf_counter() - start) / steps


def bench_length(seq_len: int, rounds: int, device: str, table: BenchTable, with_keras: bool) -> None:
    batches = max(4, 40 * 24 // seq_len)  # epochs of about the same work at each length
    x, y = make_data(seq_len, batches)
    params = nnjax_init()
    k = max(5, 20 * 24 // seq_len)
    contenders: dict[str, dict] = {}
    for name, impl in (("nnjax", "fused"), ("nnjax autodiff", "autodiff")):
        run_k, first, compile_s = nnjax_steps(params, x, y, impl)
        contenders[name] = {
            "timer": lambda r=run_k: _timed_steps(r, k),
            "first": first,
            "compile_s": compile_s,
        }
    fit_epoch = nnjax_fit_steps(params, x, y)
    fit_epoch()  # compile
    contenders["nnjax fit"] = {"timer": lambda: _timed_epoch(fit_epoch), "first": None, "compile_s": None}
    try:
        run_k, first, compile_s = torch_steps(params, x, y, device)
        contenders["pytorch"] = {
            "timer": lambda r=run_k: _timed_steps(r, k),
            "first": first,
            "compile_s": compile_s,
        }
    except ImportError:
        print("PyTorch is not installed: skipping it")
    if with_keras:
        try:
            run_epoch, first, compile_s = keras_fit_steps(params, x, y)
            contenders["keras fit"] = {
                "timer": lambda r=run_epoch: _timed_epoch(r),
                "first": first,
                "compile_s": compile_s,
            }
        except ImportError:
            print("Keras is not installed: skipping it")
    for c in contenders.values():  # warm-up round
        c["timer"]()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, c in contenders.items():
            times[name].append(c["timer"]())
    base = statistics.median(times["nnjax"])
    for name, c in contenders.items():
        median = statistics.median(times[name])
        table.add(
            seq_len=seq_len,
            impl=name,
            ms_per_step=1000 * median,
            best_ms=1000 * min(times[name]),
            ratio=median / base,
            pct_of_peak=pct_of_peak({"flops": step_flops(seq_len)}, median),
            compile_s=c["compile_s"],
            first_loss=c["first"],
        )
        print(
            f"T={seq_len:4d} {name:15s} {1000 * median:8.3f} ms/step (best {1000 * min(times[name]):.3f}) "
            f"ratio {median / base:5.2f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    import jax

    lengths = (24, 96) if args.quick else (24, 96, 384)
    rounds = 5 if args.quick else 15
    on_gpu = jax.default_backend() == "gpu"
    device = "cpu"
    torch_threads = None
    try:
        import torch

        device = torch_device()
        if not on_gpu:
            torch.set_num_threads(
                1
            )  # the train step is latency-bound; on 2 shared cores more threads only spin
        torch_threads = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import keras  # noqa: F401

        with_keras = True
    except ImportError:
        with_keras = False
    table = BenchTable(
        "LSTM train step",
        "python -m benchmarks.bench_lstm" + (" --quick" if args.quick else ""),
        notes=(
            f"LSTM({HIDDEN}) -> Dense(1), batch {BATCH}, MSE, Adam lr {LR}, same initial weights "
            "(first_loss: the loss of the first batch before any update, equal across contenders). "
            f"ms_per_step: median over {rounds} interleaved rounds; best_ms: the fastest round. "
            "ratio = contender / nnjax (above 1: nnjax faster). "
            f"PyTorch threads: {torch_threads}, device {device}. 'fit' rows include each framework's "
            "host-side loop (batching, transfers, callbacks). pct_of_peak: the step's FLOPs (step_flops, "
            "from the equations) / time / the measured matmul peak: a 32 x 51 x 200 product per time step "
            "is far too small to fill the cores, so the step is bound by per-operation latency."
        ),
    )
    for seq_len in lengths:
        bench_length(seq_len, rounds, device, table, with_keras)
    md, _ = table.write(args.out, name="lstm")
    print(md.read_text())


if __name__ == "__main__":
    main()
