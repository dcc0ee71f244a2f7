"""Frozen-encoder train steps and encoding throughput: nnjax's Flax BERT vs transformers' PyTorch BERT.

The model is the offline all-MiniLM-L6-v2 (6 layers, hidden 384) with the sms-spam head
(mean pooling -> pre_classifier -> ReLU -> dropout -> classifier), batch 64 x 64 tokens
(SMS messages from the length-64 bucket when the data is present). Train steps, Adam 1e-3:

* nnjax naive: gradients and Adam moments of every parameter, frozen updates zeroed afterwards
  (freezing as a mask on updates);
* nnjax partitioned: ``make_train_step(trainable=head mask)`` -- no encoder backward, no encoder Adam state;
* nnjax cached: the head alone on precomputed pooled vectors ``[64, 384]``;
* PyTorch: ``requires_grad=False`` on the encoder, in train mode (its dropout on) and in eval mode,
  and the head alone on cached vectors.

Encoding: tokens per second of the inference forward (``no_grad`` in PyTorch) at 64 x 64, and,
without ``--quick``, of all 5,574 messages (nnjax length buckets vs PyTorch length-sorted batches of 64).
Run: ``.venv/bin/python -m benchmarks.bench_bert [--quick]``.
"""

from __future__ import annotations

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
    torch_linear,
    torch_synced,
    xla_cost,
)

BATCH, LENGTH = 64, 64


def _batch(tokenizer):
    """Token ids and mask ``[64, 64]``: real messages of 49-64 tokens when the data is present."""
    try:
        from nnjax.data.sms_spam import load_sms_spam

        texts = load_sms_spam().texts
    except Exception:  # no data on this machine: random ids, full mask
        texts = []
    ids = [t for t in (tokenizer(texts, truncation=True, max_length=LENGTH)["input_ids"] if texts else [])
           if len(t) > 48][:BATCH]
    if len(ids) < BATCH:
        rng = np.random.default_rng(0)
        return rng.integers(1000, 29000, (BATCH, LENGTH)).astype(np.int32), np.ones((BATCH, LENGTH), np.int32), []
    out = np.zeros((BATCH, LENGTH), np.int32)
    mask = np.zeros((BATCH, LENGTH), np.int32)
    for row, seq in enumerate(ids):
        out[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return out, mask, texts


def nnjax_steps(pre, ids, mask, labels):
    """Callables for the three nnjax train steps (each threads its donated state), with the transfer
    layer's model and loss (the ones the sms-spam and text-classifier experiments train)."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import optax

    from nnjax.train.freeze import path_mask
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step
    from nnjax.transfer import Classifier, HeadConfig, text_backbone
    from nnjax.transfer.examples import ArrayExamples

    backbone = text_backbone(source=pre.source, head="distilbert", pooling="mean")
    backbone = dataclasses.replace(backbone, head_params=pre.params["head"])  # the peer's head weights
    classifier = Classifier(backbone, HeadConfig(num_classes=2, **backbone.head), ("ham", "spam"))
    variables = classifier.init_variables(0)
    params = variables["params"]
    mask_tree = path_mask(params, r"head/.*")
    copy = lambda: jax.device_put(params, may_alias=False)  # noqa: E731 -- each state owns its buffers
    batch = {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask), "label": jnp.asarray(labels),
             "mask": jnp.ones(BATCH, jnp.float32)}
    adam = optax.adam(1e-3)
    # The frozen encoder runs in inference mode (trainable_from = depth); dropout only in the head.
    loss_tokens = classifier.loss_fn(0, trainable_from=backbone.depth)
    loss_features = classifier.loss_fn(backbone.depth)
    # Adam over every parameter, frozen updates zeroed afterwards: the encoder's gradients feed Adam's
    # moments (part of the state), so XLA cannot drop the encoder's backward pass.
    frozen_tree = jax.tree_util.tree_map(lambda m: not m, mask_tree)
    naive_tx = optax.chain(optax.adam(1e-3), optax.masked(optax.set_to_zero(), frozen_tree))
    work = {}

    def counted(name, step, state, batch):  # XLA's FLOP count of the step, then the timed callable
        work[name] = xla_cost(step, state, batch)
        return threaded(step, state, batch)

    naive = counted("naive", make_train_step(loss_tokens, naive_tx),
                    create_train_state(copy(), naive_tx, rng=jax.random.key(0)), batch)
    part = counted("partitioned", make_train_step(loss_tokens, adam, trainable=mask_tree),
                   create_train_state(copy(), adam, rng=jax.random.key(0), trainable=mask_tree), batch)
    tokens = ArrayExamples({"input_ids": np.asarray(ids), "attention_mask": np.asarray(mask)}, np.asarray(labels))
    pooled = classifier.backbone_part(variables, tokens, 0, None, BATCH).arrays["features"]
    feature_batch = {"features": jnp.asarray(pooled), "label": batch["label"], "mask": batch["mask"]}
    cached = counted("cached", make_train_step(loss_features, adam, trainable=mask_tree),
                     create_train_state(copy(), adam, rng=jax.random.key(0), trainable=mask_tree), feature_batch)
    forward = jax.jit(lambda p, b: backbone.module.apply({"params": p}, b))
    tokens_in = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    work["encode"] = xla_cost(forward, params["backbone"], tokens_in)
    encode = lambda: forward(params["backbone"], tokens_in)  # noqa: E731
    return {"naive": naive, "partitioned": part, "cached": cached, "encode": encode}, np.asarray(pooled), work


def torch_sms_head(pre):
    """The sms-spam head in PyTorch with the checkpoint's head weights: pre_classifier, ReLU, dropout,
    classifier (training mode)."""
    import torch

    head = pre.params["head"]
    return torch.nn.Sequential(torch_linear(head["pre_classifier"]), torch.nn.ReLU(),
                               torch.nn.Dropout(pre.model.config.classifier_dropout), torch_linear(head["classifier"]))


def torch_steps(pre, ids, mask, labels, pooled, device="cpu"):
    """PyTorch peers: the same encoder (transformers BertModel) and the same head weights, on ``device``
    (CUDA where JAX runs on a GPU; each call then waits for the GPU)."""
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(pre.source.folder), dtype=torch.float32).to(device)
    for p in encoder.parameters():
        p.requires_grad_(False)
    head = torch_sms_head(pre).to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    ti, tm = (torch.from_numpy(a.astype(np.int64)).to(device) for a in (ids, mask))
    ty = torch.from_numpy(labels.astype(np.int64)).to(device)
    tf = torch.from_numpy(pooled).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def mean_pool(h):
        w = tm[..., None].float()
        return (h * w).sum(1) / w.sum(1).clamp(min=1e-9)

    def step_from(features):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(head(features), ty)
        loss.backward()
        optimizer.step()
        return loss

    def frozen_step(encoder_train: bool):
        def step():
            encoder.train(encoder_train)
            head.train()
            return step_from(mean_pool(encoder(input_ids=ti, attention_mask=tm).last_hidden_state))
        return step

    def encode():
        encoder.eval()
        with torch.no_grad():
            return mean_pool(encoder(input_ids=ti, attention_mask=tm).last_hidden_state)

    fns = {"train_mode": frozen_step(True), "eval_mode": frozen_step(False),
           "cached": lambda: (head.train(), step_from(tf))[1], "encode": encode}
    return {name: torch_synced(fn, device) for name, fn in fns.items()}, encoder


def _full_dataset(pre, texts, torch_encoder, device="cpu"):
    """Seconds to encode every message: nnjax length buckets (cold, then warm) vs PyTorch sorted batches."""
    import jax
    import torch

    from nnjax.data.text import apply_buckets, bucket_bounds, make_buckets, tokenize

    ids = tokenize(pre.tokenizer, texts, pre.max_length)
    tokens = int(sum(len(i) for i in ids))
    buckets = make_buckets(ids, bucket_bounds(pre.max_length))
    forward = jax.jit(lambda p, b: pre.model.apply({"params": p}, b["input_ids"], b["attention_mask"],
                                                   method="pooled"))
    times = {}
    for name in ("nnjax buckets, cold (with compiles)", "nnjax buckets, warm"):
        start = time.perf_counter()
        apply_buckets(lambda b: forward(pre.params, b), buckets, token_budget=8192)  # returns host arrays
        times[name] = time.perf_counter() - start
    order = np.argsort([len(i) for i in ids])
    torch_encoder.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(order), 64):
            chunk = [ids[i] for i in order[s: s + 64]]
            width = max(len(c) for c in chunk)
            batch = np.zeros((len(chunk), width), np.int64)
            m = np.zeros_like(batch)
            for row, c in enumerate(chunk):
                batch[row, : len(c)], m[row, : len(c)] = c, 1
            torch_encoder(input_ids=torch.from_numpy(batch).to(device), attention_mask=torch.from_numpy(m).to(device))
        if device != "cpu":
            torch.cuda.synchronize()
    times["PyTorch length-sorted batches of 64"] = time.perf_counter() - start
    return times, tokens


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from nnjax.models.hf_checkpoint import load_pretrained

    # NNJAX_BERT_MODEL: another checkpoint folder (e.g. a copy of MiniLM on a machine without the package).
    pre = load_pretrained(os.environ.get("NNJAX_BERT_MODEL", "minilm"), head_type="distilbert", pooling="mean")
    ids, mask, texts = _batch(pre.tokenizer)
    labels = (np.arange(BATCH) % 2).astype(np.int32)
    repeats = 5 if args.quick else 20
    device = torch_device()  # on a GPU: TF32 matrix products in both frameworks (JAX's default there)
    jax_fns, pooled, work = nnjax_steps(pre, ids, mask, labels)
    torch_fns, torch_encoder = torch_steps(pre, ids, mask, labels, pooled, device)

    command = "python -m benchmarks.bench_bert" + (" --quick" if args.quick else "")
    steps = BenchTable("BERT frozen-encoder train step", command, notes=(
        f"all-MiniLM-L6-v2 + sms-spam head, batch {BATCH} x {LENGTH} tokens, Adam, PyTorch on {device}. "
        "ratio_vs_torch = PyTorch "
        "frozen-encoder step with the encoder in eval mode / this row (above 1: faster). One run on a shared "
        "CPU: noisy."))
    rows = {
        "nnjax naive (full backward, frozen updates zeroed)": jax_fns["naive"],
        "nnjax partitioned (make_train_step trainable=head)": jax_fns["partitioned"],
        "nnjax cached pooled features (head only)": jax_fns["cached"],
        "PyTorch requires_grad=False, encoder train mode (dropout)": torch_fns["train_mode"],
        "PyTorch requires_grad=False, encoder eval mode": torch_fns["eval_mode"],
        "PyTorch cached pooled features (head only)": torch_fns["cached"],
    }
    results = {name: measure(fn, warmup=2, repeats=repeats) for name, fn in rows.items()}
    peer = results["PyTorch requires_grad=False, encoder eval mode"]["median_s"]
    # The work of a row: its nnjax counterpart's FLOPs (naive: the full backward nobody needs).
    row_work = {name: work["cached" if "cached" in name else "naive" if "naive" in name else "partitioned"]
                for name in rows}
    for name, r in results.items():
        steps.add(implementation=name, compile_s=r["compile_s"], median_ms=r["median_s"] * 1e3,
                  p90_ms=r["p90_s"] * 1e3, ratio_vs_torch=peer / r["median_s"],
                  gflops=row_work[name]["flops"] / 1e9,
                  pct_of_peak=pct_of_peak(row_work[name], r["median_s"],
                                          bound="memory" if "cached" in name else "compute"))

    encode = BenchTable("BERT encoding throughput", command, notes=(
        "Inference forward (mean-pooled MiniLM), tokens per second counting padding at 64 x 64; the full-data "
        "rows count the real tokens of all messages (truncated at 512). pct_of_peak: XLA's FLOP count of the "
        "64 x 64 forward / time / the measured matmul peak (full data: that count per token times the real "
        "tokens, an estimate)."))
    enc = {"nnjax jit, 64 x 64": measure(jax_fns["encode"], warmup=2, repeats=repeats),
           "PyTorch no_grad, 64 x 64": measure(torch_fns["encode"], warmup=2, repeats=repeats)}
    torch_s = enc["PyTorch no_grad, 64 x 64"]["median_s"]
    for name, r in enc.items():
        encode.add(workload=name, seconds=r["median_s"], tokens_per_s=BATCH * LENGTH / r["median_s"],
                   ratio_vs_torch=torch_s / r["median_s"], pct_of_peak=pct_of_peak(work["encode"], r["median_s"]))
    if texts and not args.quick:
        times, tokens = _full_dataset(pre, texts, torch_encoder, device)
        torch_s = times["PyTorch length-sorted batches of 64"]
        for name, seconds in times.items():
            estimate = {"flops": work["encode"]["flops"] * tokens / (BATCH * LENGTH)}  # per-token work of 64 x 64
            encode.add(workload=f"all {len(texts)} messages: {name}", seconds=seconds, tokens_per_s=tokens / seconds,
                       ratio_vs_torch=torch_s / seconds, pct_of_peak=pct_of_peak(estimate, seconds))
    for table, name in ((steps, "bert_train_step"), (encode, "bert_encoding")):
        md, _ = table.write(args.out, name)
        print(md.read_text())


if __name__ == "__main__":
    main()
