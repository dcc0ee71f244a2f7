"""Fine-tuning train steps of the transfer experiments: nnjax vs PyTorch eager and ``torch.compile``.

The steps the second stage of cats-vs-dogs and sms-spam runs, same weights, same loss, Adam:

* MobileNetV2 (torchvision ImageNet weights + the cats-vs-dogs head), batch 32 at 224 px, BCE,
  Adam 1e-5, BatchNorm in inference mode (statistics frozen, as the experiment), with
  (a) the top 3 blocks + last conv + head trainable (``--fine-tune-blocks 3``), (b) everything
  trainable. Peers: PyTorch eager in NCHW and channels_last, and ``torch.compile`` (inductor) of
  the channels_last model; ``requires_grad=False`` on what is frozen.
* all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) + the sms-spam head, 64 x 64 tokens, cross-entropy,
  Adam 5e-5, the top 2 layers + head trainable (``--train top-k --top-k 2``), dropout on in the
  trained layers and the head, frozen layers in inference mode. Peer: transformers' BertModel.

The nnjax row "from the cached boundary" is what the experiment actually runs: the frozen lower
groups computed once per photo and cached, the step starting at the first trainable group.
``gflops``: XLA's cost analysis of the compiled nnjax step (the peers do the same work);
``pct_of_peak``: that work / time / the fp32 matmul peak measured in this run.
``first_loss_diff``: |first-step loss - nnjax's| (same weights and batch; BERT's dropout differs).
Run: ``.venv/bin/python -m benchmarks.bench_finetune [--quick]`` (``--quick``: no ``torch.compile``).

NOTES: where the MiniLM step's time goes, and what was tried (2-core Intel Xeon, AVX-512, copy
bandwidth ~5 GB/s; PyTorch eager 850-1,150 ms in the same processes):

1. ``jax.profiler`` trace of one nnjax step (1,497 ms wall): YNNPACK dot fusions 1,088 ms of thunk
   time (107 of them; 150 GFLOP at ~138 GFLOP/s), then passes over activations that PyTorch folds
   into its GEMMs or views: bias adds (``broadcast_add_fusion``, 90, 114 ms), the heads' transposes
   (``copy_bitcast`` / ``transpose_copy``, 163 ms), dropout / padding selects (~60 ms).
2. Single products at the step's shapes ([4096, 384] x [384, 384 / 1536], [4096, 1536] x
   [1536, 384]): XLA 170-230 GFLOP/s, PyTorch 170-300, so the dots alone explain a part of the gap.
   GELU (exact, [64, 64, 1536]): XLA 7.7 ms, PyTorch 2.9 ms; the attention's batched products
   3.7 vs 1.8 ms; softmax and dropout masks equal.
3. Flags, whole step, 6 repeats each: dots to Eigen
   (``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot``) 1,277-1,362 ms
   against 1,496 by default; ``--xla_cpu_experimental_onednn_fusion_type=dot`` 1,505 (with Eigen
   dots 1,436); YNNPACK for every dot and elementwise fusion (``+dot,+eltwise``) 2,357. Not adopted:
   XLA flags are per process, and dots to Eigen made the MLP step at batch 32 slower (0.89 ->
   1.02 ms) while batch 512 got faster (4.64 -> 3.68 ms).
4. Also tried on the whole step, same processes as a baseline: the query, key and value
   projections as one product with a [384, 1152] kernel: 1,771 ms against 1,614 (slower); the
   attention's einsums on [B, T, heads, d] without the explicit head transposes: 1,400-1,486
   against 1,449-1,482 (no change). Neither kept.
5. Kept: the encoder's dense layers through ``nnjax/nn/dense.py``, a custom VJP whose kernel
   gradient is one 2-D product. Autodiff's ``dot_general`` over the [B, T] axes made XLA write
   each activation transposed ([384, 4096], [1536, 4096]) with its producer (dropout, GELU)
   fused into the transposing loop, ~100 ms of ``copy_bitcast`` fusions per step. Alone at
   [64, 64, 384] @ [384, 1536] the kernel gradient took 52.6 -> 25.9 ms; the whole step 1,414-1,444
   -> 1,235-1,242 ms (same session, alternating). Since then written without a custom rule (the forward
   pass on the reshaped rows, so autodiff's kernel gradient is the same 2-D product and ``jax.jvp`` works):
   the compiled step is the same program (equal XLA FLOPs and bytes, 373 loop + 107 library fusions, the
   same first loss), 1,220-1,396 ms against the custom VJP's 1,301-1,328 alternating in one process.

6. Page faults (2026-12-02): the step's 546 MB temporary buffer was a fresh ``mmap`` every step
   (~137,000 page faults per step); with ``nnjax/_malloc.py``'s settings 0, the step within this
   machine's noise (medians 1,429-1,621 ms with, 1,277-1,601 without, three processes each way,
   alternating). PyTorch eager, in the same process, gets the same allocator.
7. (2026-12-02, 2-core AMD EPYC with AVX-512; scratch scripts, one process, 16 steps each
   alternating.) The full run has the step at 0.99x PyTorch eager (1,118 against 1,107 ms). Products
   to Eigen for this one program (``jax.jit(..., compiler_options={"xla_cpu_experimental_ynn_fusion_type":
   ""})``): 1,141 ms against 1,135. GELU as ``0.5 x (1 + erf(x / sqrt 2))`` (PyTorch's form; alone at
   [64, 64, 1536] 2.4 ms against 6.7 for ``jax.nn.gelu(approximate=False)``, whose erfc form XLA expands
   with exp and selects; both within 1.1e-6 of float64 at values up to 21): the step 1,344 against
   1,272 ms, within this machine's noise. Neither kept.
8. (2026-12-02, same AMD EPYC.) Thunk times of one profiled step, summed by kind: YNNPACK dots 1,172 ms,
   dropout random bits 153, transposes (attention heads) 137, other loop fusions 132, broadcasts
   materialised as operands of dot fusions 86, GELU 52, LayerNorm 43. Two of these were removable:
   - GELU: in ``0.5 * x * erfc(-x / sqrt 2)`` XLA fused ``0.5 * x`` into the next product and wrote the
     constant 0.5 out as a ``[4096, 1536]`` array for it (~50 ms a step). Kept: ``x * (0.5 + 0.5 *
     erf(x / sqrt 2))`` in ``nnjax/models/bert.py`` (the product with x last; within 1.03e-6 of float64
     over [-21, 21], its gradient 2e-7; ``tests/test_bert.py``).
   - Dropout bits: JAX lowers threefry on CPU as a 5-trip while loop; one ``[64, 12, 64, 64]`` mask took
     24-31 ms and 1.1 s to compile, unrolled (JAX's own GPU / TPU lowering) 2.2-2.6 ms and 0.15 s, the
     same bits. Kept: ``nnjax/_threefry.py``, applied when the training modules are imported.
   Both against the old forms in one process (16 rounds alternating, the first loss equal to 8 digits):
   median 1,052 against 1,097 ms (old first), 1,013 against 1,064 (new first); compile 3.7 against 4.5 s.
   What is left besides the products: LayerNorm's broadcasts materialised for the dot fusions (~36 ms)
   and the head transposes (~130 ms), which XLA:CPU does not fuse into YNNPACK's products.

NOTES: the allocator and the PyTorch peers (2026-12-02). Without ``nnjax/_malloc.py``'s settings
PyTorch eager's MobileNetV2 step with everything trainable (NCHW, batch 32, random weights) faulted
in ~1,000,000 pages per step and took 3,746-3,768 ms; with them 0-7,500 faults and 1,809-1,967 ms
(two processes each way). The peers share nnjax's process and so its allocator: the ratios from
2026-12-02 on compare the kernels with the same memory behind both; earlier tables' PyTorch rows
paid those faults. ``NNJAX_MALLOC_DEFAULTS=0 python -m benchmarks.bench_finetune --quick`` right
after the 2026-12-02 full run: top 3 nnjax 636 ms / eager NCHW 1,375 / channels_last 922 (2.16x);
everything 2,410 / 3,166 / 2,319 (1.31x); MiniLM 1,794 / 1,438 (0.80x); against the full run's
439 / 553 / 394, 1,948 / 1,540 / 1,128 and 1,188 / 1,035 with the settings.

NOTES: the MobileNetV2 steps (same machine, 2026-12-01). The step with everything trainable took
6.9 s (0.40x PyTorch eager). Its profile: 3.3 s in ``transpose_copy`` fusions, the 1x1
convolutions' kernel gradient as autodiff writes it (a convolution whose window covers the whole
image, batch and channels swapped: XLA transposes the layer input and fuses the depthwise taps,
BatchNorm and ReLU6 that produced it into that transposing loop). Changes, each measured on the
whole step (one process per variant, medians of 6):

1. ``nnjax/nn/pointwise.py``: a custom VJP whose kernel gradient is
   ``x.reshape(-1, C_in).T @ g.reshape(-1, C_out)``: 6.9 -> 3.7 s (in isolation at
   [32, 56, 56, 144] -> 24: 62 -> 12 ms). Since then a custom JVP whose kernel term is
   ``x.reshape(-1, C_in) @ dk`` (its transpose is that product, and ``jax.jvp`` works): both steps
   compile to the same programs as with the VJP (equal XLA FLOPs and bytes, 305 + 51 / 1,001 + 243
   fusions, the same first loss); alternating in one process, everything 1,832-2,048 ms against the
   VJP's 2,080-2,174, top 3 474-556 against 518-563.
2. The depthwise forward under differentiation pads its input once: with one pad per tap, XLA
   wrote the nine padded terms to memory and summed them again in each of the output's four
   consumers: 3.7 -> 2.8 s. (``lax.optimization_barrier`` on the output instead: no effect, XLA:CPU
   removes barriers before fusion.)
3. BatchNorm with running statistics (every fine-tuning step) folded into the convolutions
   (``nnjax/nn/batch_norm.py``): 2.8 -> 2.0 s. Folded into the depthwise taps, the fused tap loop
   ran 3x slower (the top-3 step 389 -> 962 ms), so the depthwise output is scaled instead and the
   scale's gradient comes from the tap gradients.
4. The kernel gradient reads the padded input the forward saved, through slices of the whole
   buffer in a ``fori_loop`` (a ``scan`` over its reshape made XLA write one more copy per layer):
   2.0 -> 1.84 s.

Tried for the depthwise kernel gradient alone (batch 32, current 90-124 ms at 112 x 112 x 32):
one variadic reduce of the nine taps 124-240 ms, reductions in two stages 130-250, a product
with a ones vector 351, slices of the cotangent instead of padded taps 146-373: none kept. One
product-reduce of two whole [32, 112, 112, 32] arrays takes 5-6 ms (a YNNPACK fusion), but any
slice of an operand makes XLA copy it first, and the nine taps are slices.

5. (2026-12-02, 2-core AMD EPYC with AVX-512; scratch scripts, medians of 10 calls.) A profile of the
   step with everything trainable still put ~25 % of it in the depthwise kernel gradients: per image
   chunk, nine copies of shifted slices and nine YNNPACK reductions, ~26 GB/s of traffic for data
   read nine times over (112 x 112 x 32: 51 ms, 56 x 56 x 144: 79 ms; ~420 ms for the 17 layers).
   Also tried, slower or no better: the whole batch at once (72 ms at 112 x 112 x 32), chunks of 1-8
   images (62-71), the nine products stacked before one reduction (84-114), stacked on a minor axis
   (45), block sums computed over the whole batch per tap (33-53: nine passes over memory), block
   sums through a reshape and ``jnp.sum`` (64), reductions left to XLA's loop emitter
   (``-reduce``: 139). Kept (``_tap_gradients``): a loop over the images in which each tap adds the
   sums of its K x L products per block (K, L <= 7, divisors of the output size) to an accumulator
   ``[Ho / K, Wo / L, C]``; the image stays in cache for all nine taps and nothing is copied:
   51 -> 16 ms and 79 -> 14 ms at those two layers, ~110 ms for all 17 (equal to a float64
   reference within the same ~2e-7). Blocks up to 4 instead of 7: fewer terms to compile (the cold
   compile of the step 23-26 s against 32-36 s; 19-21 s before) but the step 1,280-1,385 ms against
   965-1,219. Also: the stride-1 input gradient pads the cotangent once and slices it (with a pad per
   tap, its fusion with the previous ReLU6's gradient ran 31-47 ms against 12-13 at 112 x 112 x 32,
   either alone ~6). The whole step, alternating processes, 10 steps each: 1,839-1,872 ms ->
   991-1,182 ms (top 3: 346-384 -> 305-342). A ReLU6 whose derivative is one mask (PyTorch's
   convention at the two kinks) instead of ``jnp.clip``'s: 1,646 against 1,677 ms, not kept.
"""

from __future__ import annotations

import copy
import os

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

IMAGE_BATCH, SIZE = 32, 224
MOBILENET_TOP_K = 4  # the top 3 inverted-residual blocks + the last 1x1 conv (cats-vs-dogs' default)
BERT_TOP_K = 2


def _nnjax_image_steps(images: np.ndarray, labels: np.ndarray) -> tuple[dict, dict, dict]:
    """``{row: (step, state, batch)}`` for the MobileNetV2 fine-tuning steps, the head's weights and
    the backbone's torch state dict source."""
    import jax
    import jax.numpy as jnp
    import optax

    from nnjax.train.freeze import path_mask
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step
    from nnjax.transfer import Classifier, HeadConfig, image_backbone
    from nnjax.transfer.examples import ArrayExamples

    backbone = image_backbone("mobilenet_v2", weights="torchvision")
    classifier = Classifier(backbone, HeadConfig(num_classes=2, hidden=128, output="sigmoid"), ("cat", "dog"))
    variables = classifier.init_variables(0)
    tx = optax.adam(1e-5)
    label = jnp.asarray(labels)
    ones = jnp.ones(len(labels), jnp.float32)
    steps = {}
    for name, train in (("top 3 blocks + last conv + head", "top-k"), ("everything", "all")):
        mask = path_mask(variables["params"], backbone.trainable_patterns(train, MOBILENET_TOP_K))
        first = backbone.first_trainable_group(variables["params"], mask)
        fresh = jax.device_put(variables, may_alias=False)
        state = create_train_state(fresh["params"], tx, rng=jax.random.key(0), batch_stats=fresh["batch_stats"],
                                   trainable=mask)
        batch = {"image": jnp.asarray(images), "label": label, "mask": ones}
        steps[(name, "nnjax")] = (make_train_step(classifier.loss_fn(0, trainable_from=first), tx, trainable=mask),
                                  state, batch)
        if first > 0:
            part = classifier.backbone_part(variables, ArrayExamples({"image": images}, labels), 0, first,
                                            len(labels))
            fresh = jax.device_put(variables, may_alias=False)
            state = create_train_state(fresh["params"], tx, rng=jax.random.key(0),
                                       batch_stats=fresh["batch_stats"], trainable=mask)
            cached = {**{k: jnp.asarray(v) for k, v in part.arrays.items()}, "label": label, "mask": ones}
            steps[(name, "nnjax from the cached boundary (as cats-vs-dogs runs it)")] = (
                make_train_step(classifier.loss_fn(first, trainable_from=first), tx, trainable=mask), state, cached)
    head = jax.tree_util.tree_map(np.asarray, variables["params"]["head"])
    return steps, head, backbone.source


def _torch_image_model(source: dict, head: dict, trainable: str, channels_last: bool):
    """The PyTorch MobileNetV2 of ``bench_mobilenet`` with the same head weights; eval mode (BatchNorm
    statistics frozen), ``requires_grad`` only on what ``trainable`` names."""
    import torch

    from benchmarks.bench_mobilenet import torch_mobilenet_v2
    from nnjax.weights.torch_pickle import load_torch_state_dict

    model = torch_mobilenet_v2(load_torch_state_dict(source["file"]))
    model.classifier = torch.nn.Sequential(torch_linear(head["hidden"]), torch.nn.ReLU(),
                                           torch_linear(head["classifier"]))
    for p in model.parameters():
        p.requires_grad_(trainable == "everything")
    if trainable != "everything":
        for module in [*model.features[-MOBILENET_TOP_K:], model.classifier]:
            for p in module.parameters():
                p.requires_grad_(True)
    model.eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _torch_image_step(model, x, y, compiled: bool):
    import torch

    device = torch_device()
    model = model.to(device)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x, y = x.to(device), y.to(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(x)[:, 0], y)
        loss.backward()
        optimizer.step()
        return loss

    return torch_synced(step, device)


def image_rows(table: BenchTable, repeats: int, with_compile: bool) -> None:
    import torch

    from nnjax.models.mobilenet_weights import torchvision_weights

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (IMAGE_BATCH, SIZE, SIZE, 3)).astype(np.uint8)
    labels = (np.arange(IMAGE_BATCH) % 2).astype(np.int32)
    steps, head, source = _nnjax_image_steps(images, labels)
    x = torch.from_numpy(np.asarray(torchvision_weights().preprocess(images))).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels.astype(np.float32))
    for trainable in ("top 3 blocks + last conv + head", "everything"):
        rows = {}
        work = None
        for (group, impl), (step, state, batch) in steps.items():
            if group == trainable:
                cost = xla_cost(step, state, batch)
                work = work or cost
                first = float(step(jax_copy(state), batch)[1]["loss"])
                rows[impl] = (measure(threaded(step, state, batch), warmup=1, repeats=repeats), cost, first)
        peers = [("PyTorch eager (NCHW)", False, False), ("PyTorch eager (channels_last)", True, False)]
        if with_compile:
            peers.append(("torch.compile (inductor, channels_last)", True, True))
        for impl, channels_last, compiled in peers:
            model = _torch_image_model(source, head, trainable, channels_last)
            xs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            fn = _torch_image_step(copy.deepcopy(model), xs, y, compiled)
            first = float(_torch_image_step(model, xs, y, False)().detach())
            timing = _measure_peer(impl, fn, compiled, repeats)
            if timing is not None:
                rows[impl] = (timing, work, first)
        _add_rows(table, f"MobileNetV2 fine-tuning, {trainable}", rows, "PyTorch eager (NCHW)")


def _measure_peer(name: str, fn, compiled: bool, repeats: int) -> dict | None:
    """``measure`` of a PyTorch peer; a ``torch.compile`` that fails is reported and its row left out."""
    import sys

    try:
        return measure(fn, warmup=2 if compiled else 1, repeats=repeats)
    except Exception as err:  # noqa: BLE001 - inductor needs a C++ compiler; keep the other rows
        if not compiled:
            raise
        print(f"{name} unavailable: {type(err).__name__}: {str(err)[:200]}", file=sys.stderr)
        return None


def jax_copy(tree):
    import jax

    return jax.tree_util.tree_map(lambda v: v.copy() if hasattr(v, "copy") else v, tree)


def _add_rows(table: BenchTable, work: str, rows: dict, peer: str) -> None:
    peer_s = rows[peer][0]["median_s"]
    reference = rows["nnjax"][2]
    for impl, (timing, cost, first) in rows.items():
        table.add(work=work, implementation=impl, gflops=cost["flops"] / 1e9, compile_s=timing["compile_s"],
                  median_ms=timing["median_s"] * 1e3, p90_ms=timing["p90_s"] * 1e3,
                  ratio_vs_torch=peer_s / timing["median_s"], pct_of_peak=pct_of_peak(cost, timing["median_s"]),
                  first_loss_diff=abs(first - reference))


def _nnjax_text_steps(pre, ids: np.ndarray, attention: np.ndarray, labels: np.ndarray) -> dict:
    """``{implementation: (step, state, batch)}`` for the MiniLM top-k fine-tuning step: from the token ids
    (the peers' work) and from the hidden states at the first trainable layer (what sms-spam caches)."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import optax

    from nnjax.data.text import Bucket
    from nnjax.train.freeze import path_mask
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step
    from nnjax.transfer import Classifier, HeadConfig, text_backbone
    from nnjax.transfer.examples import BucketExamples

    backbone = text_backbone(source=pre.source, head="distilbert", pooling="mean")
    backbone = dataclasses.replace(backbone, head_params=pre.params["head"])
    classifier = Classifier(backbone, HeadConfig(num_classes=2, **backbone.head), ("ham", "spam"))
    variables = classifier.init_variables(0)
    mask = path_mask(variables["params"], backbone.trainable_patterns("top-k", BERT_TOP_K))
    first = backbone.first_trainable_group(variables["params"], mask)
    tx = optax.adam(5e-5)
    extra = {"label": jnp.asarray(labels), "mask": jnp.ones(len(labels), jnp.float32)}
    tokens = BucketExamples([Bucket(ids.shape[1], np.arange(len(ids)), {"input_ids": ids,
                                                                       "attention_mask": attention})], labels)
    cached = classifier.backbone_part(variables, tokens, 0, first, token_budget=ids.size).buckets
    assert len(cached) == 1, "one bucket of 64 x 64 tokens stays one"
    steps = {}
    for impl, start, arrays in (("nnjax", 0, tokens.buckets[0].arrays),
                                ("nnjax from the cached boundary (as sms-spam runs it)", first, cached[0].arrays)):
        state = create_train_state(jax.device_put(variables["params"], may_alias=False), tx,
                                   rng=jax.random.key(0), trainable=mask)
        batch = {**{k: jnp.asarray(v) for k, v in arrays.items()}, **extra}
        steps[impl] = (make_train_step(classifier.loss_fn(start, trainable_from=first), tx, trainable=mask),
                       state, batch)
    return steps


def bert_rows(table: BenchTable, repeats: int, with_compile: bool) -> None:
    import torch
    from transformers import AutoModel

    from benchmarks.bench_bert import BATCH, LENGTH, _batch, torch_sms_head
    from nnjax.models.hf_checkpoint import load_pretrained

    pre = load_pretrained(os.environ.get("NNJAX_BERT_MODEL", "minilm"), head_type="distilbert", pooling="mean")
    ids, attention, _ = _batch(pre.tokenizer)
    labels = (np.arange(BATCH) % 2).astype(np.int32)
    rows = {}
    for impl, (step, state, batch) in _nnjax_text_steps(pre, ids, attention, labels).items():
        work = xla_cost(step, state, batch)
        first = float(step(jax_copy(state), batch)[1]["loss"])
        rows[impl] = (measure(threaded(step, state, batch), warmup=1, repeats=repeats), work, first)
    work = rows["nnjax"][1]

    device = torch_device()

    def torch_model():
        encoder = AutoModel.from_pretrained(str(pre.source.folder), dtype=torch.float32)
        head = torch_sms_head(pre)
        for p in encoder.parameters():
            p.requires_grad_(False)
        top = list(encoder.encoder.layer[-BERT_TOP_K:])
        for module in top:
            for p in module.parameters():
                p.requires_grad_(True)
        return encoder.to(device), head.to(device), top

    ti, tm = (torch.from_numpy(a.astype(np.int64)).to(device) for a in (ids, attention))
    ty = torch.from_numpy(labels.astype(np.int64)).to(device)

    def torch_step(compiled: bool):
        encoder, head, top = torch_model()
        params = [p for m in (encoder, head) for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=5e-5)
        loss_fn = torch.nn.CrossEntropyLoss()

        def forward():
            encoder.eval()
            for module in top:
                module.train()
            head.train()
            h = encoder(input_ids=ti, attention_mask=tm).last_hidden_state
            w = tm[..., None].float()
            return head((h * w).sum(1) / w.sum(1).clamp(min=1e-9))

        run = torch.compile(forward) if compiled else forward

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(run(), ty)
            loss.backward()
            optimizer.step()
            return loss

        return torch_synced(step, device)

    peers = [("PyTorch eager", False)] + ([("torch.compile (inductor)", True)] if with_compile else [])
    for impl, compiled in peers:
        first = float(torch_step(False)().detach())
        timing = _measure_peer(impl, torch_step(compiled), compiled, repeats)
        if timing is not None:
            rows[impl] = (timing, work, first)
    _add_rows(table, f"MiniLM (BERT) fine-tuning, top {BERT_TOP_K} layers + head, {BATCH} x {LENGTH} tokens", rows,
              "PyTorch eager")


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import nnjax  # noqa: F401  (its CPU XLA flag, before JAX starts)

    repeats = 3 if args.quick else 10
    table = BenchTable(
        "Fine-tuning train steps", "python -m benchmarks.bench_finetune" + (" --quick" if args.quick else ""),
        notes=("ratio_vs_torch = PyTorch eager (NCHW for images) / this row (above 1: nnjax faster). gflops: "
               "XLA's cost analysis of the nnjax step from raw inputs (the peers' work); the cached-boundary "
               "row does less (its own count). pct_of_peak: gflops / time / the measured fp32 matmul peak. "
               "first_loss_diff: first-step loss against nnjax's (BERT: dropout masks differ)."))
    image_rows(table, repeats, with_compile=not args.quick)
    bert_rows(table, repeats, with_compile=not args.quick)
    md, _ = table.write(args.out, "finetune")
    print(md.read_text())


if __name__ == "__main__":
    main()
