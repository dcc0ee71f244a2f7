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

A configuration of the transfer layer (:mod:`nnjax.transfer`): the text backbone preset, the
checkpoint's own head layout and one or two stages run by :func:`nnjax.transfer.recipe.fit_stages`.
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
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, RunContext, option, register

NAME = "sms-spam"
LABELS = ("ham", "spam")
HEAD_LR, CLASSIFIER_LR = 1e-3, 3e-2
TRAIN_MODES = ("classifier", "head", "top-k", "all")


# Chosen on the validation split of the de-duplicated collection (seed 0; the README lists every
# run): the head on the frozen encoder, then the top 3 layers + head with AdamW, 10 % warm-up and
# cosine decay for 4 epochs. Validation: head alone 0.9892, top 2 with Adam 0.9938 (loss 0.0285),
# this 0.9938 (loss 0.0269, the tie-break).
RECIPES = {
    "thesis": {},
    "best": {"dedup": True, "train": "top-k", "top_k": 3, "finetune_epochs": 4, "finetune_learning_rate": 1e-4,
             "finetune_optimizer": "adamw", "finetune_schedule": "cosine"},
}


@dataclasses.dataclass
class Config:
    recipe: Literal["thesis", "best"] = option("thesis", "'thesis': the thesis's frozen encoder and head; 'best': "
        "the recipe chosen on the validation split of the de-duplicated data (RECIPES)")
    dedup: bool = option(False, "remove exact repeats of a text before splitting (no text in two splits); the "
        "summary says how many")
    model: str = option("auto", "auto (hub distilbert-base-uncased when online, else the offline MiniLM), minilm, a "
        "hub id or a local folder with config.json, model.safetensors and tokenizer files")
    train: str = option("head", "classifier, head, top-k or all")
    top_k: int = option(2, "transformer layers fine-tuned by --train top-k")
    head: str = option("auto", "distilbert (pre_classifier-ReLU-classifier), bert (pooler-tanh-classifier) or auto")
    pooling: str = option("auto", "cls, mean, or auto (mean for sentence-transformers models, else cls)")
    epochs: int = option(30, "epochs of the head on the frozen encoder")
    learning_rate: float = option(0.0, "Adam learning rate of the head; 0: 1e-3 (Keras' default, the thesis's), "
        "3e-2 for --train classifier (one linear layer on fixed features; picked on the validation split)")
    finetune_epochs: int = option(3, "epochs of the second stage (top-k / all), the thesis's 3")
    finetune_learning_rate: float = option(5e-5, "peak learning rate of the second stage")
    finetune_optimizer: Literal["adam", "adamw"] = option("adam", "optimizer of the second stage (adamw: decoupled "
        "weight decay on matrices)")
    finetune_schedule: Literal["constant", "cosine"] = option("constant", "second stage's schedule (cosine: 10 % "
        "linear warm-up, then cosine decay)")
    weight_decay: float = option(0.01, "AdamW's decoupled weight decay")
    batch_size: int = option(64, "training batch size (the thesis's 64)")
    max_length: int = option(0, "truncation in tokens (0: the model's maximum)")
    token_budget: int = option(8192, "tokens per inference batch")
    limit: int = option(0, "use a stratified subset of N messages (0: all)")
    dtype: Literal["float32", "bfloat16"] = option("float32", "compute dtype of the encoder and the head; "
        "parameters and Adam's state stay float32")

    def __post_init__(self) -> None:
        from nnjax.models.bert import HEAD_TYPES, POOLINGS

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


def subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of a stratified random subset of ``limit`` examples (all when limit is 0 or too big)."""
    from nnjax.data.splits import stratified_split

    if not limit or limit >= len(labels):
        return np.arange(len(labels))
    keep, _ = stratified_split(labels, (limit / len(labels), 1 - limit / len(labels)), seed=seed + 1000)
    return keep


def _messages(dedup: bool) -> tuple[Any, int]:
    """The collection, de-duplicated when asked, and how many repeats were removed."""
    from nnjax.data.sms_spam import load_sms_spam

    data = load_sms_spam()
    return data.deduplicated() if dedup else (data, 0)


def stages(config: Config) -> list:
    """The head (or only its last layer) on the frozen encoder, then for ``top-k`` / ``all`` the second stage."""
    from nnjax.train.stages import Stage

    rate = config.learning_rate or (CLASSIFIER_LR if config.train == "classifier" else HEAD_LR)
    plan = [Stage("head", train=r"head/classifier/.*" if config.train == "classifier" else "head",
                  epochs=config.epochs, learning_rate=rate, batch_size=config.batch_size)]
    if config.train in ("top-k", "all") and config.finetune_epochs:
        plan.append(Stage(config.train, train=config.train, top_k=config.top_k, epochs=config.finetune_epochs,
                          learning_rate=config.finetune_learning_rate, batch_size=config.batch_size,
                          optimizer=config.finetune_optimizer, schedule=config.finetune_schedule,
                          warmup=0.1 if config.finetune_schedule == "cosine" else 0.0,
                          weight_decay=config.weight_decay))
    return plan


def run(config: Config, ctx: RunContext) -> dict:
    from nnjax.data.sms_spam import check_splits, split_report, stratified_split
    from nnjax.train.metrics import binary_report
    from nnjax.transfer import HeadConfig, export_classifier, text_backbone, train_on_texts
    from nnjax.transfer.backbones import resolve_text_source

    began = time.perf_counter()
    data, removed = _messages(config.dedup)
    data = data.subset(subsample(data.labels, config.limit, ctx.seed)) if config.limit else data
    splits = dict(zip(("train", "val", "test"), stratified_split(data.labels, seed=ctx.seed), strict=True))
    check_splits(data.labels, splits)  # an empty split or one without spam would "train" to nonsense
    backbone = text_backbone(config.model, head=config.head, pooling=config.pooling, seed=ctx.seed,
                             source=resolve_text_source(config.model))
    if config.max_length:
        backbone = dataclasses.replace(backbone, max_length=min(config.max_length, backbone.max_length))
    load_seconds = round(time.perf_counter() - began, 2)
    head = HeadConfig(num_classes=2, **backbone.head)
    texts = {name: ([data.texts[i] for i in index], data.labels[index]) for name, index in splits.items()}
    plan = stages(config)
    outcome = train_on_texts(ctx, texts, backbone, head, LABELS, plan, dtype=config.dtype,
                             token_budget=config.token_budget)
    predicted = outcome.logits["test"].argmax(-1)
    report = binary_report(outcome.labels["test"], predicted)
    cm = outcome.report("test")["confusion_matrix"]
    exporting = time.perf_counter()
    if ctx.make_figures:
        _figures(ctx, np.asarray(cm), outcome.result.history, backbone.name, config.train)
    export_classifier(ctx.out / "checkpoint", outcome.classifier, outcome.result.variables,
                      extra={"model": NAME, "train": config.train, "seed": ctx.seed, "limit": config.limit,
                             "dedup": config.dedup})
    last = outcome.result.stages[-1]
    return {
        "test_accuracy": report["accuracy"],
        "spam_precision": report["precision"],
        "spam_recall": report["recall"],
        "spam_f1": report["f1"],
        "trainable_params": last.trainable_params,
        "total_params": outcome.counts["trainable_params"] + outcome.counts["frozen_params"],
        "always_ham_accuracy": float(1 - outcome.labels["test"].mean()),
        "val_accuracy": outcome.result.history[-1].get("val_accuracy"),
        "confusion_matrix": cm,
        "model": backbone.source["name"],
        "model_sha256": backbone.source["sha256"],
        "weights_report": backbone.report,
        "head": "distilbert" if head.hidden_name == "pre_classifier" else "bert",
        "pooling": backbone.spec["pooling"],
        "train": config.train,
        "dtype": config.dtype,
        "learning_rate": plan[0].learning_rate,
        "max_length": backbone.max_length,
        "skipped_lines": len(data.bad_lines),
        "recipe": config.recipe,
        "dedup": config.dedup,
        "duplicates_removed": removed,
        **split_report(data, splits),
        "load_seconds": load_seconds,
        **outcome.seconds,
        "export_seconds": round(time.perf_counter() - exporting, 2),
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


# --------------------------------------------------------------------------- eval / predict


def predict(checkpoint_dir: Path, inputs: list[str]) -> list[dict]:
    """Label and probability for each text."""
    from nnjax.data.text import check_utf8_texts
    from nnjax.transfer import load_classifier

    texts = check_utf8_texts([str(t) for t in inputs])  # before loading anything: a bad input is the user's to fix
    rows = load_classifier(checkpoint_dir, expected_model=NAME).predict_texts(texts)
    return [{**row, "spam_probability": row["probabilities"]["spam"]} for row in rows]


def evaluate(checkpoint_dir: Path) -> dict:
    """Test-split metrics of an exported classifier (the split is re-made from the run's seed)."""
    from nnjax.data.sms_spam import stratified_split
    from nnjax.train.metrics import binary_report
    from nnjax.transfer import load_classifier

    loaded = load_classifier(checkpoint_dir, expected_model=NAME)
    meta = loaded.meta
    data, _ = _messages(bool(meta.get("dedup")))
    if meta.get("limit"):
        data = data.subset(subsample(data.labels, int(meta["limit"]), int(meta["seed"])))
    test = stratified_split(data.labels, seed=int(meta["seed"]))[2]
    spam = loaded.probabilities([data.texts[i] for i in test])[:, 1]
    report = binary_report(data.labels[test], (spam >= 0.5).astype(np.int32))
    return {"test_accuracy": report["accuracy"], "spam_precision": report["precision"],
            "spam_recall": report["recall"], "spam_f1": report["f1"], "test_size": int(len(test))}


def fingerprint(config: Config) -> dict[str, str]:
    """The messages file's sha256 and the encoder checkpoint's (which ``--model auto`` may resolve
    to the hub's DistilBERT or the offline MiniLM)."""
    from nnjax.data.fingerprint import file_digest
    from nnjax.data.sms_spam import locate_sms_spam
    from nnjax.transfer.backbones import resolve_text_source

    try:
        data = file_digest(locate_sms_spam(download_if_missing=False))
    except NnjaxError:
        data = "to be downloaded (UCI)"
    source = resolve_text_source(config.model)
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
        recipes=RECIPES,
        requires=requires,
        fingerprint=fingerprint,
    )
)
