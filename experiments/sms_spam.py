"""Experiment ``sms-spam``: transfer learning for text, the SMS spam classifier (thesis 6.2, annex J).

A pretrained BERT-family encoder (the hub's ``distilbert-base-uncased`` as in the thesis when
online, else the offline all-MiniLM-L6-v2) with a classification head learns ham (0) / spam (1)
on the UCI SMS Spam Collection, split 75 / 12.5 / 12.5 (stratified, seeded).

Training modes (``--train``), each a partition of the parameters (frozen parts get no
gradient and no optimizer state):

* ``classifier`` -- only the head's last layer (the thesis: 1,538 values for DistilBERT);
* ``head`` -- the whole head (DistilBERT: pre_classifier + classifier);
* ``top-k`` -- first the head on the frozen encoder, then the head and the last ``--top-k``
  transformer layers together at ``--finetune-learning-rate`` (the Keras recipe);
* ``all`` -- the same, with every encoder parameter in the second stage.

The frozen part runs once, in inference mode, over length-bucketed batches: a frozen encoder
gives cached pooled vectors, a partly frozen one cached hidden states at the boundary.

The default is ``--train head``. With the offline MiniLM (mean pooling, as it was trained) and
seed 0, measured on the 696 test messages: ``head`` 99.1 % / spam F1 0.968, ``classifier`` (the
thesis's mode, 770 values here, on a frozen random pre_classifier) 98.9 % / 0.956 at its
learning rate 3e-2 (96.8 % / 0.866 at 1e-3), ``top-k`` with k = 2 99.4 % / 0.978.

Summary: ``test_accuracy``, ``spam_precision``, ``spam_recall``, ``spam_f1``, ``trainable_params``,
``seconds`` (+ timings, the model's provenance, split sizes and how many test messages also
occur verbatim in the training split). Figure: the normalised confusion matrix (figure 6.2.1).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, RunContext, register

NAME = "sms-spam"
LABELS = ("ham", "spam")
HEAD_LR, CLASSIFIER_LR = 1e-3, 3e-2
TRAIN_LADDER = (32, 64, 128, 256, 512)  # coarse buckets for fine-tuning steps (each shape compiles fwd + bwd)


@dataclasses.dataclass
class Config:
    model: str = dataclasses.field(default="auto", metadata={
        "help": "auto (hub distilbert-base-uncased when online, else the offline MiniLM), minilm, a hub id "
                "or a local folder with config.json, model.safetensors and tokenizer files"})
    train: str = dataclasses.field(default="head", metadata={"help": "classifier, head, top-k or all"})
    top_k: int = dataclasses.field(default=2, metadata={"help": "transformer layers fine-tuned by --train top-k"})
    head: str = dataclasses.field(default="auto", metadata={
        "help": "distilbert (pre_classifier-ReLU-classifier), bert (pooler-tanh-classifier) or auto"})
    pooling: str = dataclasses.field(default="auto", metadata={
        "help": "cls, mean, or auto (mean for sentence-transformers models, else cls)"})
    epochs: int = dataclasses.field(default=30, metadata={"help": "epochs of the head on the frozen encoder"})
    learning_rate: float = dataclasses.field(default=0.0, metadata={
        "help": "Adam learning rate of the head; 0: 1e-3 (Keras' default, the thesis's), 3e-2 for --train classifier "
                "(one linear layer on fixed features; picked on the validation split)"})
    finetune_epochs: int = dataclasses.field(default=3, metadata={
        "help": "epochs of the second stage (top-k / all), the thesis's 3"})
    finetune_learning_rate: float = dataclasses.field(default=5e-5, metadata={
        "help": "Adam learning rate of the second stage"})
    batch_size: int = dataclasses.field(default=64, metadata={"help": "training batch size (the thesis's 64)"})
    max_length: int = dataclasses.field(default=0, metadata={"help": "truncation in tokens (0: the model's maximum)"})
    token_budget: int = dataclasses.field(default=8192, metadata={"help": "tokens per inference batch"})
    limit: int = dataclasses.field(default=0, metadata={"help": "use a stratified subset of N messages (0: all)"})
    dtype: Literal["float32", "bfloat16"] = dataclasses.field(default="float32", metadata={
        "help": "compute dtype of the encoder and the head; parameters and Adam's state stay float32"})

    def __post_init__(self) -> None:
        from nnjax.models.bert import HEAD_TYPES, POOLINGS, TRAIN_MODES

        if self.train not in TRAIN_MODES:
            raise NnjaxError(f"--train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}.")
        if self.head not in ("auto", *HEAD_TYPES):
            raise NnjaxError(f"--head must be auto, {' or '.join(HEAD_TYPES)}, got {self.head!r}.")
        if self.pooling not in ("auto", *POOLINGS):
            raise NnjaxError(f"--pooling must be auto, {' or '.join(POOLINGS)}, got {self.pooling!r}.")
        if min(self.epochs, self.batch_size, self.token_budget, self.top_k) < 1 or self.finetune_epochs < 0:
            raise NnjaxError("--epochs, --batch-size, --token-budget and --top-k must be >= 1.")
        if self.learning_rate < 0 or self.finetune_learning_rate <= 0:
            raise NnjaxError("The learning rates must be positive (--learning-rate 0 picks the default).")
        if self.max_length < 0 or self.limit < 0:
            raise NnjaxError("--max-length and --limit must be >= 0.")


# --------------------------------------------------------------------------- pieces


def resolve_head(head: str, pooling: str, model_type: str) -> str:
    """``auto``: the architecture's own head, except that BERT's pooler (trained on [CLS]) is
    replaced by DistilBERT's fresh pre_classifier when the pooled vector is a token mean."""
    if head != "auto":
        return head
    return "distilbert" if model_type == "distilbert" or pooling == "mean" else "bert"


def _loss_fn(model: Any, kind: str, start: int = 0):
    """Cross-entropy on logits from cached ``features``, cached ``hidden`` states or ``tokens``."""
    import jax.numpy as jnp

    from nnjax.nn.losses import softmax_cross_entropy_int

    def loss_fn(params, batch_stats, batch, rng, train):
        logits = _logits(model, params, batch, kind, start, train, rng)
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return softmax_cross_entropy_int(logits, batch["label"]), {"metrics": {"accuracy": correct}, "batch_stats": {}}

    return loss_fn


def _logits(model, params, batch, kind: str, start: int, train: bool, rng=None, dtype=None):
    """float32 logits ``[B, 2]``, computed in ``dtype`` (None: the dtype of ``params``)."""
    from nnjax.train.precision import to_compute_dtype

    if dtype is not None:
        params, batch = to_compute_dtype(params, batch, dtype)  # token ids and attention masks stay ints
    variables, rngs = {"params": params}, ({"dropout": rng} if train else None)
    if kind == "features":
        logits = model.apply(variables, batch["features"], train=train, rngs=rngs, method="classify")
    elif kind == "hidden":
        logits = model.apply(variables, batch["hidden"], batch["attention_mask"], start=start, train=train,
                             rngs=rngs, method="from_hidden")
    else:
        logits = model.apply(variables, batch["input_ids"], batch["attention_mask"], train=train, rngs=rngs)
    return logits.astype("float32")


def subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of a stratified random subset of ``limit`` examples (all when limit is 0 or too big)."""
    from nnjax.data.sms_spam import stratified_split

    if not limit or limit >= len(labels):
        return np.arange(len(labels))
    keep, _ = stratified_split(labels, (limit / len(labels), 1 - limit / len(labels)), seed=seed + 1000)
    return keep


def _timer() -> dict[str, float]:
    return {"_t": time.perf_counter()}


def _lap(times: dict[str, float], name: str) -> None:
    now = time.perf_counter()
    times[name] = round(now - times["_t"], 2)
    times["_t"] = now


def _hidden_buckets(buckets, outputs):
    """Buckets holding cached hidden states ``[n, L, H]`` instead of token ids."""
    from nnjax.data.text import Bucket

    return [Bucket(b.length, b.index, {"hidden": out, "attention_mask": b.arrays["attention_mask"],
                                       "label": b.arrays["label"]})
            for b, out in zip(buckets, outputs, strict=True)]


def _train(params, model, mask, loader, eval_fn, kind, start, epochs, lr, ctx, stage, seed, dtype):
    """The shared fit loop over one partition (``mask``) with Adam, computing in ``dtype`` (float32 master
    parameters), checkpointed in ``out/train_state/STAGE`` (a rerun resumes it); returns ``(state, history)``."""
    import jax
    import optax

    from nnjax.train.fit import fit
    from nnjax.train.precision import with_compute_dtype
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step

    tx = optax.adam(lr)
    state = create_train_state(params, tx, rng=jax.random.key(seed), trainable=mask)
    step = make_train_step(with_compute_dtype(_loss_fn(model, kind, start), dtype), tx, trainable=mask)
    return fit(state, step, loader, epochs=epochs, eval_fn=eval_fn, metrics=ctx.metrics.tagged(stage=stage),
               checkpointer=ctx.checkpointer(stage, trainable=mask), progress=ctx.progress, desc=stage,
               log_every=100)


def _scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean cross-entropy and accuracy of logits ``[N, C]``."""
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return {"loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
            "accuracy": float((logits.argmax(-1) == labels).mean())}


def _bucket_logits(model, kind: str, start: int, token_budget: int, dtype):
    """``fn(params, buckets, total) -> logits [total, C]`` in inference mode computed in ``dtype``, one compile
    per bucket shape."""
    import jax

    from nnjax.data.text import apply_buckets, unbucket

    keys = ("hidden", "attention_mask") if kind == "hidden" else ("input_ids", "attention_mask")
    forward = jax.jit(lambda p, b: _logits(model, p, b, kind, start, False, dtype=dtype))

    def fn(params, buckets, total):
        outputs = apply_buckets(lambda b: forward(params, b), buckets, token_budget=token_budget, keys=keys)
        return unbucket(outputs, buckets, total)

    return fn


# --------------------------------------------------------------------------- run


def run(config: Config, ctx: RunContext) -> dict:
    import jax

    from nnjax.data.batching import ArrayLoader
    from nnjax.data.sms_spam import check_splits, load_sms_spam, split_report, stratified_split
    from nnjax.data.text import (
        BucketLoader,
        apply_buckets,
        bucket_bounds,
        make_buckets,
        rebucket,
        subset_buckets,
        tokenize,
        unbucket,
    )
    from nnjax.models.bert import frozen_prefix_layers, trainable_pattern
    from nnjax.models.hf_checkpoint import default_pooling, load_pretrained, read_config
    from nnjax.train.freeze import param_summary, path_mask
    from nnjax.train.metrics import binary_report, confusion_matrix
    from nnjax.train.precision import cast_floats, parse_dtype

    times = _timer()
    data = load_sms_spam()
    data = data.subset(subsample(data.labels, config.limit, ctx.seed)) if config.limit else data
    splits = dict(zip(("train", "val", "test"), stratified_split(data.labels, seed=ctx.seed), strict=True))
    check_splits(data.labels, splits)  # an empty split or one without spam would "train" to nonsense
    source = _resolve_source(config.model)
    pooling = default_pooling(source.folder) if config.pooling == "auto" else config.pooling
    model_type = read_config(source.folder).get("model_type", "")
    head = resolve_head(config.head, pooling, model_type)
    pre = load_pretrained(source, head_type=head, pooling=pooling, seed=ctx.seed)
    model, params, enc = pre.model, pre.params, pre.model.config
    _lap(times, "load_seconds")

    max_length = min(config.max_length or pre.max_length, pre.max_length)
    ids = tokenize(pre.tokenizer, data.texts, max_length)
    everything = make_buckets(ids, bucket_bounds(max_length), pad_id=enc.pad_token_id, extras={"label": data.labels})
    _lap(times, "tokenize_seconds")

    # The frozen lower part runs once, in inference mode, over all messages (one compile per bucket),
    # in the compute dtype; the pooled vectors (and the hidden states at the boundary) are kept as
    # float32 (bfloat16 values, exactly) in the run folder, so a resumed run does not encode again.
    dtype = parse_dtype(config.dtype)
    compute_params = cast_floats(params, dtype)
    frozen = frozen_prefix_layers(config.train, enc.num_layers, config.top_k)
    stop = enc.num_layers if frozen is None else frozen
    budget = config.token_budget

    def encode() -> dict[str, np.ndarray]:
        if stop == enc.num_layers:
            pooled_fn = jax.jit(lambda p, b: model.apply({"params": p}, b["input_ids"], b["attention_mask"],
                                                         method="pooled"))
            pooled = apply_buckets(lambda b: pooled_fn(compute_params, b), everything, token_budget=budget)
            return {"features": np.asarray(unbucket(pooled, everything, len(data)), np.float32)}
        hidden_fn = jax.jit(lambda p, b: model.apply({"params": p}, b["input_ids"], b["attention_mask"],
                                                     stop=stop, method="hidden"))
        top_fn = jax.jit(lambda p, b: model.apply({"params": p}, b["hidden"], b["attention_mask"], start=stop,
                                                  method="pooled_from_hidden"))
        hidden = apply_buckets(lambda b: hidden_fn(compute_params, b), everything, token_budget=budget)
        pooled = apply_buckets(lambda b: top_fn(compute_params, b), _hidden_buckets(everything, hidden),
                               token_budget=budget, keys=("hidden", "attention_mask"))
        return {"features": np.asarray(unbucket(pooled, everything, len(data)), np.float32),
                **{f"hidden_{i}": np.asarray(h, np.float32) for i, h in enumerate(hidden)}}

    encoded = ctx.cached("encoder_outputs", encode)
    all_features = encoded["features"]
    if stop != enc.num_layers:
        everything_hidden = _hidden_buckets(everything, [encoded[f"hidden_{i}"] for i in range(len(everything))])
    features = {name: all_features[index] for name, index in splits.items()}
    labels = {name: data.labels[index] for name, index in splits.items()}
    _lap(times, "encode_seconds")

    # Stage 1: the head on cached pooled vectors.
    head_pattern = trainable_pattern("classifier" if config.train == "classifier" else "head", enc.num_layers)
    mask = path_mask(params, head_pattern)
    loader = ArrayLoader({"features": features["train"], "label": labels["train"]}, config.batch_size,
                         shuffle=True, seed=ctx.seed)
    classify = jax.jit(lambda p, f: _logits(model, p, {"features": f}, "features", 0, False, dtype=dtype))

    def eval_head(state):
        return _scores(np.asarray(classify(state.params, features["val"])), labels["val"])

    lr = config.learning_rate or (CLASSIFIER_LR if config.train == "classifier" else HEAD_LR)
    state, history = _train(params, model, mask, loader, eval_head, "features", 0, config.epochs, lr, ctx, "head",
                            ctx.seed, dtype)

    def test_logits(params):
        return np.asarray(classify(params, features["test"]))

    # Stage 2: the top layers (or everything) with the head, at a low learning rate, on cached hidden
    # states (or token ids), in a few coarse length buckets: a compile costs more than the padding.
    if config.train in ("top-k", "all") and config.finetune_epochs:
        mask = path_mask(params, trainable_pattern(config.train, enc.num_layers, config.top_k))
        kind, start, cached = ("tokens", 0, everything) if config.train == "all" else \
            ("hidden", stop, everything_hidden)
        longest = max(b.length for b in cached)
        coarse = rebucket(cached, bucket_bounds(longest, TRAIN_LADDER))
        parts = {name: subset_buckets(coarse, index) for name, index in splits.items()}
        loader = BucketLoader(parts["train"], config.batch_size, shuffle=True, seed=ctx.seed + 1)
        bucket_logits = _bucket_logits(model, kind, start, budget, dtype)

        def eval_top(state):
            return _scores(bucket_logits(state.params, parts["val"], len(splits["val"])), labels["val"])

        def test_logits(params):  # noqa: F811 -- the second stage predicts through the fine-tuned layers
            return bucket_logits(params, parts["test"], len(splits["test"]))

        state, history2 = _train(state.params, model, mask, loader, eval_top, kind, start, config.finetune_epochs,
                                 config.finetune_learning_rate, ctx, config.train, ctx.seed + 1, dtype)
        history = history + history2
    _lap(times, "train_seconds")

    logits = test_logits(state.params)
    predicted = logits.argmax(-1)
    report = binary_report(labels["test"], predicted)
    cm = confusion_matrix(labels["test"], predicted, 2)
    _lap(times, "evaluate_seconds")

    _figures(ctx, cm, history, source.name, config.train)
    meta = _export(ctx.out / "checkpoint", state.params, pre, source, config, max_length, ctx.seed)
    _lap(times, "export_seconds")
    times.pop("_t")
    counts = param_summary(state.params, mask)
    return {
        "test_accuracy": report["accuracy"],
        "spam_precision": report["precision"],
        "spam_recall": report["recall"],
        "spam_f1": report["f1"],
        "trainable_params": counts["trainable"],
        "total_params": counts["total"],
        "always_ham_accuracy": float(1 - labels["test"].mean()),
        "val_accuracy": history[-1].get("val_accuracy"),
        "confusion_matrix": cm.tolist(),
        "model": meta["source"]["name"],
        "model_sha256": meta["source"]["sha256"],
        "head": head,
        "pooling": pooling,
        "train": config.train,
        "dtype": config.dtype,
        "learning_rate": lr,
        "max_length": max_length,
        "skipped_lines": len(data.bad_lines),
        **split_report(data, splits),
        **times,
    }


def _figures(ctx: RunContext, cm: np.ndarray, history: list[dict], model_name: str, mode: str) -> None:
    from nnjax.plots.common import confusion_matrix_figure, curves_figure

    short = model_name.rsplit("/", 1)[-1]
    ctx.save_figure(confusion_matrix_figure(cm, LABELS, normalize=True,
                                            title=f"SMS spam, test split ({short}, --train {mode})"),
                    "confusion_matrix.png")
    epochs = list(range(1, len(history) + 1))
    series = {"train loss": (epochs, [h.get("train_loss", np.nan) for h in history]),
              "validation loss": (epochs, [h.get("val_loss", np.nan) for h in history])}
    ctx.save_figure(curves_figure(series, xlabel="epoch (all stages)", ylabel="cross-entropy", logy=True,
                                  title=f"SMS spam training ({short})"), "loss_curves.png")


def _export(folder: Path, params: Any, pre: Any, source: Any, config: Config, max_length: int, seed: int) -> dict:
    """The trained classifier (orbax variables + meta.json) with its tokenizer in ``folder/tokenizer``."""
    from nnjax.train.checkpoint import save_model

    meta = {
        "model": NAME,
        "encoder": pre.model.config.to_dict(),
        "head": pre.model.head_type,
        "pooling": pre.model.pooling,
        "num_labels": 2,
        "labels": list(LABELS),
        "max_length": max_length,
        "source": source.describe(),
        "train": config.train,
        "dtype": config.dtype,
        "seed": seed,
        "limit": config.limit,
    }
    save_model(folder, {"params": params}, meta, extra=lambda staging: pre.tokenizer.save_pretrained(
        str(staging / "tokenizer")))
    return meta


# --------------------------------------------------------------------------- eval / predict


def load_classifier(checkpoint_dir: str | Path) -> tuple[Any, Any, Any, dict]:
    """``(model, params, tokenizer, meta)`` from an exported folder; one clear error when incomplete."""
    import jax

    from nnjax.models.bert import EncoderConfig, SequenceClassifier
    from nnjax.models.hf_checkpoint import load_tokenizer
    from nnjax.train.checkpoint import load_model

    folder = Path(checkpoint_dir)
    def build(meta: dict) -> Any:
        return SequenceClassifier(EncoderConfig.from_dict(meta["encoder"]), num_labels=int(meta["num_labels"]),
                                  head_type=meta["head"], pooling=meta["pooling"])

    def template(meta: dict) -> dict:
        ids = jax.numpy.zeros((1, 2), jax.numpy.int32)
        return {"params": jax.eval_shape(lambda: build(meta).init(jax.random.key(0), ids, ids + 1))["params"]}

    variables, meta = load_model(folder, expected_model=NAME, template=template)
    model = build(meta)
    params = jax.tree_util.tree_map(jax.numpy.asarray, variables["params"])
    return model, params, load_tokenizer(folder / "tokenizer"), meta


def spam_probabilities(model: Any, params: Any, tokenizer: Any, texts: list[str], max_length: int,
                       token_budget: int = 8192, dtype: str = "float32") -> np.ndarray:
    """P(spam) ``[N]`` for raw texts (tokenised, truncated, length-bucketed, inference mode, computed in
    ``dtype``)."""
    import jax

    from nnjax.train.precision import parse_dtype

    if not texts:
        return np.zeros(0, np.float32)

    from nnjax.data.text import apply_buckets, bucket_bounds, make_buckets, tokenize, unbucket

    ids = tokenize(tokenizer, texts, max_length)
    buckets = make_buckets(ids, bucket_bounds(max_length), pad_id=model.config.pad_token_id)
    if "spam" not in _JITTED:  # one jitted function per process: equal models share compiled shapes
        _JITTED["spam"] = jax.jit(
            lambda m, d, p, b: jax.nn.softmax(_logits(m, p, b, "tokens", 0, False, dtype=d))[:, 1],
            static_argnums=(0, 1))
    fn, compute = _JITTED["spam"], parse_dtype(dtype)
    return unbucket(apply_buckets(lambda b: fn(model, compute, params, b), buckets, token_budget=token_budget), buckets,
                    len(texts))


_JITTED: dict[str, Any] = {}


def predict(checkpoint_dir: Path, inputs: list[str]) -> list[dict]:
    """Label and probability for each text."""
    from nnjax.data.text import check_utf8_texts

    texts = check_utf8_texts([str(t) for t in inputs])
    model, params, tokenizer, meta = load_classifier(checkpoint_dir)
    spam = spam_probabilities(model, params, tokenizer, texts, int(meta["max_length"]),
                              dtype=meta.get("dtype", "float32"))
    results = []
    for text, p in zip(inputs, spam, strict=True):
        label = meta["labels"][int(p >= 0.5)]
        results.append({"text": text if len(text) <= 60 else text[:57] + "...", "label": label,
                        "probability": float(p if p >= 0.5 else 1 - p), "spam_probability": float(p)})
    return results


def evaluate(checkpoint_dir: Path) -> dict:
    """Test-split metrics of an exported classifier (the split is re-made from the run's seed)."""
    from nnjax.data.sms_spam import load_sms_spam, stratified_split
    from nnjax.train.metrics import binary_report

    model, params, tokenizer, meta = load_classifier(checkpoint_dir)
    data = load_sms_spam()
    if meta.get("limit"):
        data = data.subset(subsample(data.labels, int(meta["limit"]), int(meta["seed"])))
    test = stratified_split(data.labels, seed=int(meta["seed"]))[2]
    spam = spam_probabilities(model, params, tokenizer, [data.texts[i] for i in test], int(meta["max_length"]),
                              dtype=meta.get("dtype", "float32"))
    report = binary_report(data.labels[test], (spam >= 0.5).astype(np.int32))
    return {"test_accuracy": report["accuracy"], "spam_precision": report["precision"],
            "spam_recall": report["recall"], "spam_f1": report["f1"], "test_size": int(len(test))}


@functools.cache
def _resolve_source(spec: str) -> Any:
    """The checkpoint ``--model`` names, resolved once per process (the fingerprint and the run
    must see the same one, and a hub look-up is slow)."""
    from nnjax.models.hf_checkpoint import resolve_source

    return resolve_source(spec)


def fingerprint(config: Config) -> dict[str, str]:
    """The messages file's sha256 and the encoder checkpoint's (which ``--model auto`` may resolve
    to the hub's DistilBERT or the offline MiniLM)."""
    from nnjax.data.fingerprint import file_digest
    from nnjax.data.sms_spam import locate_sms_spam

    try:
        data = file_digest(locate_sms_spam(download_if_missing=False))
    except NnjaxError:
        data = "to be downloaded (UCI)"
    source = _resolve_source(config.model)
    return {"sms_spam": data, "encoder": f"{source.name}:{source.sha256}"}


def requires() -> str | None:
    """A sentence when the messages are missing and cannot be downloaded (the model is checked at run time:
    ``--model`` may name a local folder)."""
    import os

    from nnjax.data.paths import dataset_dir
    from nnjax.data.sms_spam import FILE_NAME, UCI_URL

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        have_data = (dataset_dir("sms_spam") / FILE_NAME).is_file()
    except NnjaxError as err:
        return str(err)
    if not have_data and offline:
        return (f"The SMS Spam Collection is missing: put {FILE_NAME} in $NNJAX_DATA_DIR/sms_spam/ "
                f"(from {UCI_URL}) or go online.")
    return None


register(
    Experiment(
        name=NAME,
        description="SMS spam: a pretrained DistilBERT/MiniLM encoder, frozen or top-k fine-tuned (thesis 6.2)",
        config=Config,
        run=run,
        quick={"epochs": 20, "max_length": 128},
        # From the thesis's confusion matrix [[594, 8], [6, 88]] (annex J; DistilBERT, --train classifier).
        thesis={"test_accuracy": 0.980, "spam_precision": 0.917, "spam_recall": 0.936, "spam_f1": 0.926,
                "trainable_params": 1538, "seconds": "4,332 (3 epochs, 1 h 12 min on Colab)"},
        evaluate=evaluate,
        predict=predict,
        requires=requires,
        fingerprint=fingerprint,
    )
)
