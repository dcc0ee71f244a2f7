"""MNIST CNN (the thesis's ThesisCNN) train step and inference: nnjax vs PyTorch, in one process.

The same architecture (Conv 1->32 . BN . ReLU . Conv 32->32 . BN . ReLU . Conv 32->1 . BN .
ReLU . Dense 784->10), the same initial weights and batch (128), cross-entropy and Adam lr
1e-3 in

* nnjax: the shared jitted step (``make_train_step``), ``ThesisCNN(conv_impl="xla")`` (plain
  ``lax.conv_general_dilated``, what a plain Flax model does) and ``conv_impl="fast"``
  (``nnjax.nn.conv``'s custom VJP);
* PyTorch eager (as the thesis ran it) and ``torch.compile`` (model compiled, Adam eager).

XLA flags are read once per process, so each setting runs in its own worker process; inside
a worker the candidates are timed *interleaved* (rounds of a few steps each) so that load
from other processes on a shared machine hits them alike. Ratios are PyTorch eager time /
candidate time (above 1: faster than PyTorch eager) within the same worker. Run:
``.venv/bin/python -m benchmarks.bench_mnist`` (``--quick`` for fewer rounds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    BenchTable,
    bench_args,
    machine_peak,
    pct_of_peak,
    threaded,
    torch_device,
    torch_synced,
    torch_train_step,
    xla_cost,
)

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
BATCH = 128
INFER_BATCH = 1000

NOTES = """\
NOTES — where the time goes and what was tried (ThesisCNN train step, batch 128, XLA:CPU,
2-core AMD EPYC VM shared with other users; numbers are medians of interleaved runs):

1. Profile (`jax.profiler.trace` of the jitted step, per-op times): the backward pass
   dominates. JAX's weight gradient of a convolution is a convolution contracting over the
   batch, so XLA transposes the layer input to `[Cin, H, W, N]` and fuses the BatchNorm +
   ReLU that produced it into that transpose; XLA:CPU's loop emitter runs such a fused
   transpose 3-8x slower than a plain one (plain `[128, 28, 28, 32]` transpose 2.6 ms CPU,
   with a fused ReLU 8.5 ms; in the step two of them took ~26 ms of ~100 ms CPU). The
   32 -> 1 convolution (a matrix-vector product for Eigen) took 5-9 ms forward and 5-7 ms
   for its weight gradient; the 1 -> 32 one contracts over only 9 values.
2. `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` (Eigen
   instead of YNNPACK for convolutions): faster for both implementations (rows with and
   without it). Without it, plain `lax` also loses accuracy here: its conv2 kernel gradient
   differs from a float64 reference by 1.9e-3 (relative), against 4.5e-6 for
   `conv_impl="fast"` and 1.1e-6 for both with the flag.
3. `lax.optimization_barrier` on the saved input, to keep the recompute out of the
   transpose: no effect (XLA:CPU expands the barrier away before fusion).
4. im2col (9 shifted slices concatenated, one matrix product) and nine shifted matrix
   products with the flat-index trick, forward and weight gradient: 5-10x slower (XLA
   materialises the 9x patch matrix, 115 MB per step, and its long-contraction products
   with K = 100,352 are slow). A `lax.scan` over chunks of 4-16 images with in-cache im2col:
   1.3-2.4x slower than the lax weight gradient.
5. Materialising the conv input through an exact identity matrix product: transposes
   drop to ~2 ms but the product costs as much (dropped). Through `x / (1 + 0*x)` (exact
   for finite x; XLA does not duplicate a division into consumers): kept, ~5 % of the step.
6. The weight gradient of the 32 -> 1 conv as a convolution with the transposed output
   gradient as its left side (`[1, H, W, N]`, tiny) and the input as kernel `[H, W, N, 32]`:
   7.6 -> 2.1 ms in isolation; replaced by two matrix products over N*H*W rows (below),
   equally fast and without transposes.
7. Kept in `conv_impl="fast"` (a `custom_vjp` in `nnjax/nn/conv.py`; forward and both
   gradients equal `lax.conv_general_dilated` to float32 rounding, tested):
   - Cout <= 4 (the 32 -> 1 conv): forward `z = x @ W[32, 9]` + sum of 9 shifted planes;
     backward `dz` = shifted planes of g, `dx = dz @ W^T`, `dW = dz^T x`;
   - kh*kw*Cin <= 27 (the 1 -> 32 conv on the image): forward as 9 shifted multiply-adds
     in one loop (im2col + one product was no faster than Eigen; the multiply-adds save
     ~10 % of the step);
   - the input saved through the division trick of 5; everything else is `lax`.
   Ablation on one pinned core, same process: fast 97 ms, without the narrow-input path
   107, without the division trick 102, plain `lax` 128.
8. PyTorch eager on an oversubscribed machine suffers more than XLA (its OpenMP threads
   wait on each other), so compare rows measured at a low load average (`load_avg`); the
   1-thread rows (pinned to one core) are the steadiest.
9. XLA's oneDNN paths (2026-12-01, jaxlib 0.10.2, 2-core Intel Xeon with AVX-512/AMX): the
   wheel carries oneDNN (its AVX-512 and depthwise kernels are in libjax_common.so), but
   `--xla_cpu_use_onednn=true`, with or without `--xla_cpu_experimental_onednn_custom_call=true`,
   leaves every convolution an XLA `convolution` (no oneDNN rewrite in this build), and
   `--xla_cpu_experimental_onednn_fusion_type` offers only dot, eltwise and reduce. So the
   convolutions run in Eigen, compiled ahead of time into the wheel, while PyTorch's oneDNN
   picks its kernels (AVX-512 here) at run time: the likeliest reason the gap to torch.compile
   depends on the CPU (not proven; the table's provenance now lists the CPU's vector extensions).
10. Per operation, in isolation (2026-12-01, the same Intel, 2 threads, the 32 -> 32 conv at
   batch 128, medians of 15-20 calls): XLA (Eigen) forward 17.4 ms, input gradient 13.8-14.3,
   weight gradient 28-33 (the transpose of x to `[C, H, W, N]` ~5.6 of it, the 28 x 28-window
   convolution ~20-24); PyTorch's oneDNN NCHW 14.4 / 14.5 / 14.5, channels_last 10.0 / 10.3 /
   9.6. So this conv's three convolutions take ~60 ms of nnjax's ~105 ms step and ~30 ms of
   torch.compile's ~71. Tried, none faster than the lax weight gradient:
   - YNNPACK convolutions forced (`--xla_cpu_experimental_ynn_fusion_type=individual_convolution,
     individual_dot`; by default this jaxlib leaves every convolution to Eigen): 30.5 / 23.9 /
     87.1 ms;
   - the weight gradient as one product of W-shifted x and H-shifted g (`[N*30*28, 96]^T
     [N*30*28, 96]` holds all nine taps, equal to lax within 8e-7): 75-80 ms, of which the
     product alone is 21 ms and the concatenations the rest (XLA:CPU's loop emitter writes
     them at ~2 GB/s); the same in a `lax.scan` over chunks of 2-32 images, operands in cache:
     28-36 ms; Eigen's own weight gradient in such a scan: 1.1-3.5 s;
   - small products in cache are no cure either: `[3360, 96]^T [3360, 96]` 0.79 ms (78 GFLOP/s),
     `[3136, 32] @ [32, 288]` 0.94 ms (61 GFLOP/s), against ~200 for large ones;
   - other logical layouts of the same convolution: NCHW / OIHW forward 16.4, input gradient
     21.8, weight gradient 35.3 ms; HWNC forward 18.9, weight gradient 28.2 (XLA lays them out
     for Eigen again).
   One pinned core (same worker, 6 rounds): torch.compile 135.5 ms, nnjax fast 212.3, PyTorch
   eager 220.8. What separates nnjax from torch.compile on this CPU is the convolution kernels
   (oneDNN's cache-blocked AVX-512 ones against Eigen's), not the program around them.
11. Page faults (2026-12-02, same Intel): each step's temporary buffer (the activations the
   backward pass reads) is a fresh glibc ``mmap`` over 32 MB, freed with ``munmap`` at the end, so
   every step faulted in ~19,900 pages (~80 MB) again. ``nnjax/_malloc.py`` (at import: one
   malloc arena, no ``mmap``, a 2 GiB trim threshold) keeps that memory for the next step:
   ~1,300 faults per step, the step 112-126 -> 82-100 ms (medians of 30 steps, three processes
   each way, alternating). The PyTorch peers run in the same workers and get the same allocator.
   The full run after it: 2 threads nnjax 65.8 ms, eager 80.7, torch.compile 58.7 (0.89x); one
   pinned core 113 / 128 / 101 (0.89x). Some of the gaps in 10 (the ~2 GB/s concatenations, the
   ~5 GB/s copy bandwidth of earlier tables) were this first-touch cost, not the kernels.
   ``NNJAX_MALLOC_DEFAULTS=0 python -m benchmarks.bench_mnist --quick`` right after: 2 threads
   nnjax 125.1 ms, eager 197.1; one core 223.6 / 289.1; copy 4.9 GB/s (20 with the settings).
12. Per CPU (2026-12-02, the full run on a 2-core AMD EPYC with AVX-512, no AMX): 2 threads nnjax
   71.1 ms, eager 81.2, torch.compile 63.1 (0.89x, as on the Intel); one pinned core 106 / 135 / 112
   (1.05x: ahead on one core here, 0.89x on the Intel). This table's one-core worker reports a
   "largest relative gradient difference" fast vs xla of 1.9e-3 (8.2e-7 on 2 threads). Traced
   against a float64 reference (scratch script, same flags, one pinned core): every forward
   activation of both implementations is within 7.6e-7 of float64, but one of bn2's 3.2 million
   outputs, 3.1e-7 in float64, rounds to exactly 0 in "fast"'s float32 forward, where ReLU's
   derivative is 0: that one element's cotangent (7 % of the largest) flows back into conv2's kernel
   gradient (1.9e-3), bn1 and conv1 (2.5e-4 to 4e-4). Only conv1 (1 -> 32) as "fast" reproduces
   it (a different rounding of the same values); conv2 or conv3 alone "fast": 1e-6. So it is a ReLU
   kink met by float32 rounding, not an inaccurate kernel; the check compares two float32 programs
   and can show such a flip on any machine.
13. (2026-12-02, same AMD EPYC, 2 threads, scratch scripts; this VM's noise between processes is
   +-10 %, so each candidate ran interleaved with a reference in one process.) Data parallelism over
   two host devices (``--xla_force_host_platform_device_count=2``, the batch split 64 + 64 through
   ``nnjax.train.parallel``, BatchNorm over the global batch): 52.2 ms against 50.7 for one device
   (with ``--xla_cpu_multi_thread_eigen=false`` 56.9 / 55.2), no gain. XLA flags, each in its own
   process with ``torch.compile`` interleaved as the yardstick (torch.compile time / nnjax time, two
   processes each): default 0.965 / 0.932, ``--xla_cpu_prefer_vector_width=512`` 0.81 / 0.954,
   ``--xla_cpu_enable_concurrency_optimized_scheduler=false`` 0.881 / 0.89: none better than default.
   XNNPACK (``--xla_cpu_experimental_xnn_fusion_type=individual_convolution`` or
   ``--xla_cpu_use_xnnpack=true``) leaves the 32 -> 32 convolution an XLA ``convolution`` (Eigen) in
   this jaxlib: no XNNPACK kernel to try (alone: forward 15.9 / 21.5 / 16.8 ms, all noise).
14. Thread scaling of the 32 -> 32 convolution alone (same AMD EPYC, medians of 24 calls interleaved;
   one core by ``taskset``): forward 14.2 -> 7.6-8.4 ms on 2 threads, input gradient 14.1 -> 7.3-8.4,
   but the weight gradient 18.6 -> 15.2-20.6 ms. Its output is only 3 x 3 x 32 x 32 values contracted
   over 128 x 28 x 28, so Eigen has little to split between the threads. Tried: the two halves of the
   batch as two weight gradients summed, 16.4-21.8 ms (no better); the halves as one grouped
   convolution (``feature_group_count`` 2-8, the groups' outputs summed; equal within 3e-6) 62-65 ms;
   as ``batch_group_count`` 2 / 4: 641 / 1,072 ms (XLA:CPU expands grouped convolutions). So the weight
   gradient is where a second core helps nnjax least; XLA offers no kernel here that divides it better.
   A profile cannot split the step further: XLA:CPU runs Eigen's convolutions asynchronously, so the
   trace charges them to whatever thunk waits on them (the conv2 input transpose shows 15 ms).
15. The same benchmark on a 2-core AMD EPYC with AVX2 and no AVX-512 (``nnjax bench --only mnist
   --out DIR``, 2026-12-02; results/mnist_epyc_avx2.md): nnjax 128.8 ms, torch.compile 149.3 ms,
   PyTorch eager 156.0 ms on 2 threads (1.16x / 1.21x); one pinned core 195.0 / 237.5 / 253.2 ms
   (1.22x / 1.30x). So the gap to torch.compile in the tables above is AVX-512's: on AVX2 oneDNN's
   convolution kernels lose their lead over Eigen's, and nnjax is ahead on both thread counts.
16. The 32 -> 32 convolution as matrix products, tried again after the allocator change of 11 (2026-12-03,
   the AVX-512 EPYC, 2 threads, 15 interleaved calls each, scratch script): the input with its three
   W-shifts side by side (``[N, H+2, W, 96]``), one product with the kernel as ``[(j, c), (i, o)]``
   (``[107520, 96] x [96, 96]``, 1.98 GFLOP) and the sum of three H-shifted planes; the input gradient
   the same on the flipped kernel; the weight gradient as one ``[96, 96]`` product of the W-shifted input
   and the H-shifted output gradient (also in 16 or 128 batched chunks). All equal ``lax`` within 7.5e-7.
   Forward 32.4 ms against lax's 18.6, input gradient 32.5 / 18.7, weight gradient 47.6 (41.8-42.4
   chunked) / 29.3. The product alone takes 15.1 ms (132 GFLOP/s, against ~100 for Eigen's convolution)
   and the W-shifted copy alone 5.7 ms, so Eigen's convolution is within a quarter of XLA's best product
   here and no rewrite into products can make up the rest.
"""


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def _interleaved(candidates: dict, rounds: int, block: int) -> dict[str, dict[str, float]]:
    """Median / p10 / p90 seconds per call of each zero-argument candidate, timed in turns."""
    import jax

    stats: dict[str, dict[str, float]] = {}
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for name, fn in candidates.items():  # first call: compile (JAX) or warm-up (PyTorch)
        start = time.perf_counter()
        jax.block_until_ready(fn())
        stats[name] = {"compile_s": time.perf_counter() - start}
        for _ in range(2):
            jax.block_until_ready(fn())
    for _ in range(rounds):
        for name, fn in candidates.items():
            for _ in range(block):
                start = time.perf_counter()
                jax.block_until_ready(fn())
                samples[name].append(time.perf_counter() - start)
    for name, times in samples.items():
        times.sort()
        stats[name].update(median_s=float(np.median(times)), p10_s=times[int(0.1 * (len(times) - 1))],
                           p90_s=times[int(0.9 * (len(times) - 1))], samples=len(times))
    return stats


def _torch_model(params: dict):
    import torch

    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 1, 3, padding=1), nn.BatchNorm2d(1), nn.ReLU(),
        nn.Flatten(), nn.Linear(28 * 28, 10),
    )
    with torch.no_grad():
        for index, name in zip([0, 3, 6], ["conv1", "conv2", "conv3"], strict=False):
            model[index].weight.copy_(torch.from_numpy(np.array(params[name]["kernel"]).transpose(3, 2, 0, 1).copy()))
            model[index].bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))
        model[10].weight.copy_(torch.from_numpy(np.array(params["dense"]["kernel"]).T.copy()))
        model[10].bias.copy_(torch.from_numpy(np.array(params["dense"]["bias"])))
    return model


def _torch_train_step(model, x: np.ndarray, y: np.ndarray):
    import torch

    return torch_train_step(model, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                            torch.from_numpy(y.astype(np.int64)))


def _nnjax_train_step(impl: str, variables: dict, x: np.ndarray, y: np.ndarray):
    import jax
    import jax.numpy as jnp
    import optax

    from nnjax.models.cnn import ThesisCNN
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step

    model = ThesisCNN(conv_impl=impl)

    def loss_fn(params, batch_stats, batch, rng, train):
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return loss, {"batch_stats": updates["batch_stats"]}

    tx = optax.adam(1e-3)
    fresh = jax.device_put(variables, may_alias=False)
    state = create_train_state(fresh["params"], tx, rng=jax.random.PRNGKey(0), batch_stats=fresh["batch_stats"])
    batch = {"image": jnp.asarray(x), "label": jnp.asarray(y), "mask": jnp.ones(len(y), jnp.float32)}
    step = make_train_step(loss_fn, tx)
    return step, state, batch


def worker(threads: int, rounds: int, block: int, compile_torch: bool) -> dict:
    """Run in a fresh process (XLA_FLAGS already set): time every candidate, return a dict."""
    if threads and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cpus)
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    from nnjax.models.cnn import ThesisCNN, init_variables

    torch.set_num_threads(threads or os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int32)
    variables = jax.tree_util.tree_map(np.asarray, init_variables(ThesisCNN(), jax.random.PRNGKey(0)))

    # numerics: the gradients of both implementations at the same point. The conv biases are
    # left out: BatchNorm cancels them, so their exact gradient is 0 and both give rounding noise.
    grads = {}
    for impl in ("xla", "fast"):
        model = ThesisCNN(conv_impl=impl)

        def loss(params, model=model):
            logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                    mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads[impl] = jax.jit(jax.value_and_grad(loss))(variables["params"])
    relative = []
    for name in grads["xla"][1]:
        for leaf in grads["xla"][1][name]:
            if name.startswith("conv") and leaf == "bias":
                continue
            a, b = np.asarray(grads["xla"][1][name][leaf]), np.asarray(grads["fast"][1][name][leaf])
            relative.append(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30)))
    max_diff = max(relative)
    results = {impl: (float(grads[impl][0]), None) for impl in grads}

    candidates = {}
    for impl in ("xla", "fast"):
        step, state, batch = _nnjax_train_step(impl, variables, x, y)
        if impl == "xla":  # the work of a step: XLA's count of the plain lax.conv_general_dilated program
            train_work = xla_cost(step, state, batch)
        candidates[f"nnjax ThesisCNN conv_impl={impl}"] = threaded(step, state, batch)
    torch_model = _torch_model(variables["params"])
    candidates["PyTorch eager"] = _torch_train_step(torch_model, x, y)
    if compile_torch:
        try:
            compiled = torch.compile(_torch_model(variables["params"]))
            candidates["PyTorch torch.compile"] = _torch_train_step(compiled, x, y)
            candidates["PyTorch torch.compile"]()  # compile now, so a failure is caught here
        except Exception as err:  # noqa: BLE001 - record why, keep the other rows
            candidates.pop("PyTorch torch.compile", None)
            print(f"torch.compile unavailable: {type(err).__name__}: {str(err)[:200]}", file=sys.stderr)
    load_before = _loadavg()
    train = _interleaved(candidates, rounds, block)

    # inference: eval mode, batch 1000 and batch 1 (the thesis's test loop feeds one image at a time)
    images = rng.random((INFER_BATCH, 28, 28, 1), dtype=np.float32)
    infer = {}
    device_vars = jax.device_put(variables)
    for impl in ("xla", "fast"):
        model = ThesisCNN(conv_impl=impl)
        apply = jax.jit(lambda v, a, m=model: m.apply(v, a))
        big, one = jnp.asarray(images), jnp.asarray(images[:1])
        infer[f"nnjax conv_impl={impl} batch {INFER_BATCH}"] = lambda a=apply, b=big: a(device_vars, b)
        infer[f"nnjax conv_impl={impl} batch 1"] = lambda a=apply, b=one: a(device_vars, b)
        if impl == "xla":
            infer_work = {size: xla_cost(apply, device_vars, b) for size, b in ((INFER_BATCH, big), (1, one))}
    torch_model.eval()  # already on torch_device() (moved by the train step)
    device = torch_device()
    big_t = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)

    def torch_infer(batch):
        with torch.no_grad():
            return torch_model(batch)

    infer[f"PyTorch eager batch {INFER_BATCH}"] = torch_synced(lambda: torch_infer(big_t), device)
    infer["PyTorch eager batch 1"] = torch_synced(lambda: torch_infer(big_t[:1]), device)
    inference = _interleaved(infer, max(rounds // 2, 2), block)
    return {"train": train, "inference": inference, "max_grad_rel_diff_fast_vs_xla": max_diff,
            "train_work": train_work, "infer_work": infer_work, "peak": machine_peak(),
            "loss_xla": results["xla"][0], "loss_fast": results["fast"][0],
            "load_before": load_before, "load_after": _loadavg(), "threads": threads or len(os.sched_getaffinity(0)),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _accelerator() -> bool:
    """True when JAX's default backend is not the CPU. Asked in a throwaway process: a GPU initialised in
    this parent would keep most of its memory (JAX preallocates) while the workers run."""
    probe = "import jax; print(jax.default_backend())"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip().splitlines()[-1:] != ["cpu"]


def _run_worker(flags: str, threads: int, rounds: int, block: int, compile_torch: bool) -> dict:
    env = os.environ.copy()
    env["XLA_FLAGS"] = flags
    command = [sys.executable, "-m", "benchmarks.bench_mnist", "--worker", "--threads", str(threads),
               "--rounds", str(rounds), "--block", str(block)] + ([] if compile_torch else ["--no-compile"])
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"worker failed ({flags!r}, threads {threads}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--worker" in argv:
        import argparse

        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", action="store_true")
        parser.add_argument("--threads", type=int, default=0)
        parser.add_argument("--rounds", type=int, default=10)
        parser.add_argument("--block", type=int, default=3)
        parser.add_argument("--no-compile", action="store_true")
        args = parser.parse_args(argv)
        result = worker(args.threads, args.rounds, args.block, not args.no_compile)
        print(json.dumps(result))
        return
    args = bench_args(argv, __doc__)
    rounds, block = (4, 3) if args.quick else (12, 4)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    settings = [(YNN_FLAG, cores, not args.quick), ("", cores, False), (YNN_FLAG, 1, not args.quick)]
    if _accelerator():  # the CPU flag and thread pinning mean nothing there (and XLA aborts on unknown flags)
        settings = [("", 0, not args.quick)]
    table = BenchTable("MNIST CNN train step", "python -m benchmarks.bench_mnist" + (" --quick" if args.quick else ""),
                       notes="ratio_vs_torch = PyTorch eager median / this median, same worker process "
                             "(above 1: faster than PyTorch eager).\n\n" + NOTES)
    for flags, threads, compile_torch in settings:
        result = _run_worker(flags, threads, rounds, block, compile_torch)
        train, inference = result["train"], result["inference"]
        torch_ms = train["PyTorch eager"]["median_s"] * 1e3
        flag_name = "ynn conv off" if flags else "default"
        load = f"{result['load_before']:.1f}->{result['load_after']:.1f}"
        for name, r in train.items():
            xla = "n/a" if name.startswith("PyTorch") else flag_name
            table.add(what=f"train step, batch {BATCH}", implementation=name, xla_flags=xla,
                      threads=result["threads"], median_ms=r["median_s"] * 1e3, p10_ms=r["p10_s"] * 1e3,
                      p90_ms=r["p90_s"] * 1e3, compile_s=r["compile_s"],
                      ratio_vs_torch=torch_ms / (r["median_s"] * 1e3),
                      pct_of_peak=pct_of_peak(result["train_work"], r["median_s"], peak=result["peak"]),
                      load_avg=load)
        for name, r in inference.items():
            size = INFER_BATCH if name.endswith(f"batch {INFER_BATCH}") else 1
            xla = "n/a" if name.startswith("PyTorch") else flag_name
            torch_name = f"PyTorch eager batch {size}"
            table.add(what="inference", implementation=name, xla_flags=xla, threads=result["threads"],
                      median_ms=r["median_s"] * 1e3, p10_ms=r["p10_s"] * 1e3, p90_ms=r["p90_s"] * 1e3,
                      images_per_s=size / r["median_s"],
                      ratio_vs_torch=inference[torch_name]["median_s"] / r["median_s"],
                      pct_of_peak=pct_of_peak(result["infer_work"][str(size)], r["median_s"], peak=result["peak"]),
                      load_avg=load)
        table.notes += (f"\n\nWorker (XLA_FLAGS={flags or '(none)'}, threads {result['threads']}): one step from the "
                        f"same point, conv_impl fast vs xla: losses {result['loss_fast']:.6f} / "
                        f"{result['loss_xla']:.6f}, largest relative gradient difference "
                        f"{result['max_grad_rel_diff_fast_vs_xla']:.1e} (conv biases excluded: BatchNorm "
                        "cancels them, their exact gradient is 0).")
        peak = result["peak"]
        table.notes += (f" Its measured peak: fp32 matmul {peak['gflops']:.0f} GFLOP/s (XLA {peak['xla_gflops']:.0f}, "
                        f"PyTorch {peak.get('torch_gflops', float('nan')):.0f}), copy {peak['copy_gbs']:.1f} GB/s; "
                        f"a train step is {result['train_work']['flops'] / 1e9:.3f} GFLOP (XLA's count).")
        print(f"done: flags={flags or '(none)'} threads={threads}", flush=True)
    md, _ = table.write(args.out, "mnist")
    print(md.read_text())


if __name__ == "__main__":
    main()
