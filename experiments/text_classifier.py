"""Experiment ``text-classifier``: transfer learning on your own labelled texts.

``--data FILE`` is a CSV or TSV with a header row, or JSON lines; ``--text-column`` and
``--label-column`` name the fields (default ``text`` and ``label``). Any N >= 2 labels; empty
or malformed rows are skipped, counted (``skipped_inputs``) and listed with their line
numbers in ``skipped.txt``. The rows are split by ``--val-fraction`` (seeded, stratified).

Recipe: a pretrained BERT-family encoder (``--model minilm`` offline, a local Hugging Face
folder, or a hub id when online) is frozen and the checkpoint's own head layout trains on its
cached pooled vectors; ``--train top-k`` (the top ``--top-k`` layers) or ``--train all`` adds a
second stage with AdamW and a warm-up + cosine schedule at ``--fine-tune-learning-rate``. The
classifier, tokenizer included, is exported to ``checkpoint/`` (``nnjax predict DIR "a text"``).

Summary: ``val_accuracy``, ``val_macro_f1``, per-class precision and recall, ``train_examples``,
``skipped_inputs``, ``trainable_params``, ``frozen_params``, ``seconds`` and per-stage seconds.
Figures: the confusion matrix and the accuracy per epoch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np

from nnjax.errors import NnjaxError
from nnjax.experiment import Experiment, RunContext, option, register

NAME = "text-classifier"


@dataclasses.dataclass
class Config:
    data: str = option("", "CSV, TSV or JSONL file of labelled texts")
    text_column: str = option("text", "column (or key) of the texts")
    label_column: str = option("label", "column (or key) of the labels")
    model: str = option("minilm", "minilm (offline all-MiniLM-L6-v2), a Hugging Face folder, or a hub id (online)")
    train: Literal["head", "top-k", "all"] = option("head", "head only, or a second stage on the top layers or "
        "everything")
    top_k: int = option(2, "transformer layers fine-tuned by --train top-k")
    epochs: int = option(30, "epochs of the head on the frozen encoder")
    learning_rate: float = option(1e-3, "Adam's learning rate for the head")
    fine_tune_epochs: int = option(3, "epochs of the second stage")
    fine_tune_learning_rate: float = option(5e-5, "its peak learning rate")
    batch_size: int = option(64, "texts per step")
    max_length: int = option(128, "truncation in tokens (0: the model's)")
    val_fraction: float = option(0.2, "share of rows held out for validation")

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.top_k) < 1 or self.fine_tune_epochs < 0 or self.max_length < 0:
            raise NnjaxError("--epochs, --batch-size and --top-k must be >= 1; --fine-tune-epochs, --max-length >= 0.")
        if not 0 < self.val_fraction < 1:
            raise NnjaxError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}.")


def stages(config: Config) -> list:
    """The head on the frozen encoder, then (``--train top-k|all``) AdamW with warm-up + cosine."""
    from nnjax.train.stages import Stage

    plan = [Stage("head", epochs=config.epochs, learning_rate=config.learning_rate, batch_size=config.batch_size)]
    if config.train != "head":
        plan.append(Stage(config.train, train=config.train, top_k=config.top_k, epochs=config.fine_tune_epochs,
                          optimizer="adamw", schedule="cosine", warmup=0.1,
                          learning_rate=config.fine_tune_learning_rate, batch_size=config.batch_size))
    return plan


def run(config: Config, ctx: RunContext) -> dict:
    from nnjax.data.splits import check_splits, stratified_split
    from nnjax.data.text_table import read_labelled_texts
    from nnjax.plots.transfer import accuracy_figure, confusion_figure
    from nnjax.transfer import HeadConfig, export_classifier, text_backbone, train_on_texts
    from nnjax.transfer.tasks import summary_of

    if not config.data:
        raise NnjaxError("Give the labelled texts with --data FILE (CSV, TSV or JSONL).")
    table = read_labelled_texts(config.data, config.text_column, config.label_column)
    ctx.path("skipped.txt").write_text("".join(f"line {line}\t{reason}\n" for line, reason in table.bad_rows))
    classes = tuple(sorted(set(table.labels)))
    if len(classes) < 2:
        raise NnjaxError(f"{config.data!r} has one label only ({classes[0]!r}); a classifier needs at least two.")
    labels = np.asarray([classes.index(label) for label in table.labels], np.int32)
    train_index, val_index = stratified_split(labels, (1 - config.val_fraction, config.val_fraction), seed=ctx.seed)
    check_splits(labels, {"train": train_index, "val": val_index}, classes, "text")
    backbone = text_backbone(config.model, num_labels=len(classes), seed=ctx.seed)
    if config.max_length:
        backbone = dataclasses.replace(backbone, max_length=min(config.max_length, backbone.max_length))
    head = HeadConfig(num_classes=len(classes), **backbone.head)
    texts = {name: ([table.texts[i] for i in index], labels[index])
             for name, index in (("train", train_index), ("val", val_index))}
    outcome = train_on_texts(ctx, texts, backbone, head, classes, stages(config))
    summary = summary_of(outcome)
    export_classifier(ctx.out / "checkpoint", outcome.classifier, outcome.result.variables,
                      extra={"data": str(Path(config.data).absolute()), "val_accuracy": summary["val_accuracy"]})
    name = Path(config.data).name
    if ctx.make_figures:
        ctx.save_figure(confusion_figure(summary["val_confusion_matrix"], classes,
                                         f"{name}: validation ({summary['val_accuracy']:.1%})"), "confusion_matrix.png")
        ctx.save_figure(accuracy_figure(outcome.result.history, f"{name}, {backbone.name}"), "accuracy.png")
    return {**summary, "classes": list(classes), "skipped_inputs": len(table.bad_rows),
            "backbone": backbone.describe(), "weights_report": backbone.report, "history": outcome.result.history}


def fingerprint(config: Config) -> dict[str, str]:
    """The texts file's sha256 and the encoder checkpoint's."""
    from nnjax.data.fingerprint import file_digest
    from nnjax.transfer.backbones import resolve_text_source

    data = file_digest(config.data) if config.data and Path(config.data).is_file() else "none"
    source = resolve_text_source(config.model)
    return {"texts": data, "encoder": f"{source.name}:{source.sha256}"}


register(
    Experiment(
        name=NAME,
        description="Your own labelled texts (CSV, TSV, JSONL): frozen pretrained encoder + head, optional fine-tuning",
        config=Config,
        run=run,
        quick={"epochs": 10, "fine_tune_epochs": 1},
        fingerprint=fingerprint,
    )
)
