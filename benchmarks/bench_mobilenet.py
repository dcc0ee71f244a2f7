"""MobileNetV2 transfer learning: train steps and backbone throughput, nnjax vs PyTorch and Keras.

Train step (batch 32, 224 px, frozen ImageNet backbone + the thesis's head, Adam, BCE):

* ``naive``: the whole model differentiated, Adam over every parameter, frozen updates
  zeroed afterwards (``optax.chain(adam, masked(set_to_zero))``: what masking updates costs);
* ``partitioned``: nnjax's ``make_train_step(trainable=head mask)``: only the head is
  differentiated and has Adam state, the backbone runs forward in inference mode;
* ``cached features``: the head alone on cached 1,280-value features;
* ``Keras fit``: Keras 3 (JAX backend) ``MobileNetV2(weights=None)`` frozen + the same head,
  ``model.fit`` on batches of 32 (its FLOPs: XLA's cost analysis of the equivalent
  stateless Keras step, gradient w.r.t. the trainable variables only).

FLOPs come from XLA's cost analysis of the compiled step (stable); times are medians on a
shared, noisy CPU. ``head_max_diff`` checks that naive and partitioned steps train the same
head. Backbone forward throughput (images/s, batch 32, 224 px): nnjax (depthwise as nine
shifted multiply-adds, and with XLA's grouped convolution), Keras 3 ``predict_on_batch``,
and a PyTorch MobileNetV2 built here from ``torch.nn`` (torchvision is not needed) loading
the same torchvision state dict, in NCHW and channels-last.

Run: ``.venv/bin/python -m benchmarks.bench_mobilenet [--quick]``.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import time

import numpy as np

from benchmarks.harness import (
    BenchTable,
    bench_args,
    measure,
    pct_of_peak,
    threaded,
    torch_device,
    torch_synced,
    xla_cost,
)

BATCH = 32
SIZE = 224


# --------------------------------------------------------------------------- the PyTorch peer


def torch_mobilenet_v2(state_dict: dict | None = None, num_classes: int = 1000):
    """torchvision's MobileNetV2 (v1 weights layout) rebuilt from ``torch.nn``; loads
    ``state_dict`` (NumPy arrays or tensors) when given. Eval mode."""
    import torch
    from torch import nn

    def conv_bn(inp, out, kernel=3, stride=1, groups=1, relu=True):
        layers = [
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
        ]
        return nn.Sequential(*layers, *([nn.ReLU6(inplace=True)] if relu else []))

    class InvertedResidual(nn.Module):
        def __init__(self, inp, out, stride, expansion):
            super().__init__()
            hidden = inp * expansion
            self.use_residual = stride == 1 and inp == out
            layers = [] if expansion == 1 else [conv_bn(inp, hidden, 1)]
            layers += [
                conv_bn(hidden, hidden, 3, stride, groups=hidden),
                nn.Conv2d(hidden, out, 1, bias=False),
                nn.BatchNorm2d(out),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_residual else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            from nnjax.models.mobilenet_v2 import INVERTED_RESIDUAL_SETTING

            channels = 32
            features = [conv_bn(3, channels, 3, 2)]
            for t, c, n, s in INVERTED_RESIDUAL_SETTING:
                for i in range(n):
                    features.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                    channels = c
            features.append(conv_bn(channels, 1280, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            return self.classifier(self.features(x).mean((2, 3)))

    model = MobileNetV2().eval()
    if state_dict is not None:
        model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items()})
    return model


# --------------------------------------------------------------------------- nnjax steps


def nnjax_steps(weights, images: np.ndarray, labels: np.ndarray) -> dict:
    """``{name: (step, state, batch)}`` for naive / partitioned / cached-feature training of the
    cats-vs-dogs classifier (the transfer layer's model and loss, the ones the experiment trains)."""
    import jax
    import jax.numpy as jnp
    import optax

    from nnjax.train.freeze import path_mask
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step
    from nnjax.transfer import Classifier, HeadConfig, image_backbone
    from nnjax.transfer.examples import ArrayExamples

    backbone = image_backbone("mobilenet_v2", weights=weights.origin)
    classifier = Classifier(backbone, HeadConfig(num_classes=2, hidden=128, output="sigmoid"), ("cat", "dog"))
    variables = classifier.init_variables(0)
    mask = path_mask(variables["params"], r"head/.*")
    frozen = jax.tree_util.tree_map(lambda m: not m, mask)
    batch = {
        "image": jnp.asarray(images),
        "label": jnp.asarray(labels),
        "mask": jnp.ones(len(labels), jnp.float32),
    }
    image_loss = classifier.loss_fn(0)

    def fresh():
        return jax.device_put(variables, may_alias=False)

    steps = {}
    naive_tx = optax.chain(optax.adam(1e-3), optax.masked(optax.set_to_zero(), frozen))
    v = fresh()
    steps["naive (full backward, updates masked)"] = (
        make_train_step(image_loss, naive_tx),
        create_train_state(v["params"], naive_tx, rng=jax.random.key(0), batch_stats=v["batch_stats"]),
        batch,
    )
    tx = optax.adam(1e-3)
    v = fresh()
    steps["partitioned (nnjax trainable mask)"] = (
        make_train_step(image_loss, tx, trainable=mask),
        create_train_state(
            v["params"], tx, rng=jax.random.key(0), batch_stats=v["batch_stats"], trainable=mask
        ),
        batch,
    )
    cached = classifier.backbone_part(variables, ArrayExamples({"image": images}, labels), 0, None, len(labels))
    v = fresh()
    steps["cached features (head only)"] = (
        make_train_step(classifier.loss_fn(backbone.depth), tx, trainable=mask),
        create_train_state(
            v["params"], tx, rng=jax.random.key(0), batch_stats=v["batch_stats"], trainable=mask
        ),
        {"features": jnp.asarray(cached.arrays["features"]), "label": batch["label"], "mask": batch["mask"]},
    )
    return steps


def head_difference(steps: dict, n: int = 3) -> float:
    """Max |head params| difference between the naive and partitioned steps after ``n`` steps."""
    import jax

    (naive, s1, b1), (part, s2, b2) = list(steps.values())[:2]
    copy = jax.tree_util.tree_map(lambda x: x.copy(), (s1, s2))
    s1, s2 = copy
    for _ in range(n):
        s1, _ = naive(s1, b1)
        s2, _ = part(s2, b2)
    diff = jax.tree_util.tree_map(lambda a, b: float(abs(a - b).max()), s1.params["head"], s2.params["head"])
    return max(jax.tree_util.tree_leaves(diff))


# --------------------------------------------------------------------------- Keras


def keras_model(include_head: bool = True):
    """Keras 3 frozen ``MobileNetV2(weights=None)`` (+ GAP, Dense 128 ReLU, Dense 1 sigmoid)."""
    import keras

    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    if not include_head:
        return base
    base.trainable = False
    model = keras.Sequential(
        [
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def keras_step_flops(model, images: np.ndarray, labels: np.ndarray) -> float:
    """FLOPs of Keras' frozen-backbone train step: a stateless forward + gradient w.r.t. the
    trainable variables only (what ``fit`` differentiates), compiled by XLA."""
    import jax
    import jax.numpy as jnp
    import keras

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(tv, ntv, x, y):
        pred, _ = model.stateless_call(tv, ntv, x, training=True)
        return keras.losses.binary_crossentropy(y[:, None], pred).mean()

    fn = jax.jit(jax.value_and_grad(loss))
    analysis = fn.lower(
        trainable, non_trainable, jnp.asarray(images), jnp.asarray(labels, jnp.float32)
    ).compile()
    analysis = analysis.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis.get("flops", float("nan")))


def keras_fit_seconds(model, images: np.ndarray, labels: np.ndarray, steps: int) -> dict:
    """Median seconds per ``fit`` step: ``fit`` over ``steps`` batches, timed per epoch."""
    x = np.concatenate([images] * steps)
    y = np.concatenate([labels] * steps).astype(np.float32)
    start = time.perf_counter()
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0)  # compile
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
        times.append((time.perf_counter() - start) / steps)
    return {"compile_s": compile_s, "median_s": float(np.median(times))}


# --------------------------------------------------------------------------- main


def configure_xla() -> None:
    """Route XLA CPU's convolutions (forward and backward) through Eigen instead of YNNPACK,
    several times faster on this machine; only effective before JAX starts its backend."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = (
            flags + " --xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
        ).strip()
    os.environ.setdefault("KERAS_BACKEND", "jax")


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    configure_xla()
    import jax
    import jax.numpy as jnp
    import torch

    from nnjax.models.mobilenet_weights import TORCHVISION_SHA256, torchvision_weights
    from nnjax.weights.torch_pickle import load_torch_state_dict

    repeats = 3 if args.quick else 7
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (BATCH, SIZE, SIZE, 3)).astype(np.uint8)
    labels = rng.integers(0, 2, BATCH).astype(np.int32)
    # NNJAX_MOBILENET_WEIGHTS: a copy of mobilenet_v2-b0353104.pth (a machine without the offline package).
    weights = torchvision_weights(os.environ.get("NNJAX_MOBILENET_WEIGHTS"))
    if weights.sha256 != TORCHVISION_SHA256:
        raise SystemExit(f"{weights.source} is not torchvision's mobilenet_v2-b0353104.pth (SHA-256 differs).")
    command = "python -m benchmarks.bench_mobilenet" + (" --quick" if args.quick else "")

    # ---- train steps
    train = BenchTable(
        "MobileNetV2 transfer train step",
        command,
        notes=(
            "Batch 32, 224 px, frozen backbone + Dense(128)-Dense(1) head, Adam, BCE. gflops: XLA cost "
            "analysis of the compiled step; flops_ratio / time_ratio = naive / this row (above 1: cheaper "
            "than naive). head_max_diff: naive vs partitioned head after 3 identical steps. Keras fit: "
            "random weights (timing only), its FLOPs from the equivalent stateless step."
        ),
    )
    steps = nnjax_steps(weights, images, labels)
    diff = head_difference(steps)
    results = {}
    for name, (step, state, batch) in steps.items():
        gflops = xla_cost(step, state, batch)["flops"] / 1e9
        timing = measure(threaded(step, state, batch), warmup=1, repeats=repeats)
        results[name] = (gflops, timing)
    with_keras = importlib.util.find_spec("keras") is not None  # optional: not every GPU image ships it
    if with_keras:
        keras_fit = keras_model()
        pre = np.asarray(weights.preprocess(images))
        keras_gflops = keras_step_flops(keras_fit, pre, labels) / 1e9
        keras_timing = keras_fit_seconds(keras_fit, pre, labels, 3 if args.quick else 5)
        results["Keras 3 fit (JAX backend, frozen base)"] = (keras_gflops, keras_timing)
    naive_gflops, naive_timing = next(iter(results.values()))
    for name, (gflops, timing) in results.items():
        train.add(
            implementation=name,
            gflops=gflops,
            compile_s=timing["compile_s"],
            median_ms=timing["median_s"] * 1e3,
            flops_ratio=naive_gflops / gflops,
            time_ratio=naive_timing["median_s"] / timing["median_s"],
            pct_of_peak=pct_of_peak({"flops": gflops * 1e9}, timing["median_s"]),
            head_max_diff=diff if name.startswith(("naive", "partitioned")) else None,
        )
    md, _ = train.write(args.out, "mobilenet_train_step")
    print(md.read_text(), flush=True)

    # ---- backbone forward throughput
    forward = BenchTable(
        "MobileNetV2 backbone forward",
        command,
        notes=(
            "Images per second, batch 32, 224 px, pooled 1,280 features, inference mode; torchvision's "
            "ImageNet weights in nnjax and PyTorch (max_abs_diff: pooled features vs nnjax's default), "
            "random weights in Keras. ratio_vs_torch = this row's throughput / PyTorch eager NCHW's. PyTorch "
            "runs on the GPU when JAX does. pct_of_peak: XLA's FLOP count of the nnjax forward / time / the "
            "measured matmul peak."
        ),
    )
    x = np.asarray(weights.preprocess(images))
    xj = jnp.asarray(x)
    runs, outputs = {}, {}
    for label, impl in (
        ("nnjax (depthwise: nine shifted multiply-adds)", "shifted"),
        ("nnjax (depthwise: XLA grouped convolution)", "xla"),
    ):
        model = weights.model(include_top=False, pooling="avg", depthwise_impl=impl)
        fn = jax.jit(lambda v, x, model=model: model.apply(v, x))
        backbone = weights.backbone_variables()
        if impl == "shifted":  # the forward pass's work, the same for every row
            forward_work = xla_cost(fn, backbone, xj)
        outputs[label] = np.asarray(fn(backbone, xj))
        runs[label] = measure(
            lambda fn=fn, backbone=backbone: fn(backbone, xj),
            warmup=1,
            repeats=repeats if impl == "shifted" else max(repeats // 2, 2),
        )
    torch.set_grad_enabled(False)
    device = torch_device()
    peer = torch_mobilenet_v2(load_torch_state_dict(weights.source)).to(device)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)
    peer_cl = copy.deepcopy(peer).to(memory_format=torch.channels_last)
    xt_cl = xt.contiguous(memory_format=torch.channels_last)
    for name, net, inputs in (("PyTorch eager (NCHW)", peer, xt), ("PyTorch eager (channels_last)", peer_cl, xt_cl)):
        pooled = torch_synced(lambda net=net, inputs=inputs: net.features(inputs).mean((2, 3)), device)
        outputs[name] = pooled().cpu().numpy()
        runs[name] = measure(pooled, warmup=1, repeats=repeats)
    if with_keras:
        keras_base = keras_model(include_head=False)
        runs["Keras 3 predict_on_batch (JAX backend)"] = measure(
            lambda: keras_base.predict_on_batch(x), warmup=1, repeats=repeats
        )
    reference = outputs["nnjax (depthwise: nine shifted multiply-adds)"]
    torch_s = runs["PyTorch eager (NCHW)"]["median_s"]
    for name, r in runs.items():
        out = outputs.get(name)
        forward.add(
            implementation=name,
            images_per_s=BATCH / r["median_s"],
            median_ms=r["median_s"] * 1e3,
            compile_s=r["compile_s"],
            ratio_vs_torch=torch_s / r["median_s"],
            pct_of_peak=pct_of_peak(forward_work, r["median_s"]),
            max_abs_diff=None if out is None else float(np.abs(out - reference).max()),
        )
    md, _ = forward.write(args.out, "mobilenet_forward")
    print(md.read_text())


if __name__ == "__main__":
    main()
