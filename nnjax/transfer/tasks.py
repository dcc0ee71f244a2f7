"""Image and text classification on a user's data, end to end: examples, stages, final logits.

The four transfer experiments (``image-classifier``, ``text-classifier`` and the thesis's
``cats-vs-dogs`` and ``sms-spam``) are configurations of :func:`train_on_images` and
:func:`train_on_texts`; what they add is their options, summary and figures.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nnjax.train.stages import Stage
from nnjax.transfer.backbones import Backbone
from nnjax.transfer.classifier import Classifier
from nnjax.transfer.examples import ArrayExamples, BucketExamples
from nnjax.transfer.heads import HeadConfig
from nnjax.transfer.recipe import RecipeResult, fit_stages


@dataclasses.dataclass
class Outcome:
    """A trained classifier with its per-split logits and the counts a summary reports.

    Attributes:
      classifier, result: what was trained and how (:class:`~nnjax.transfer.recipe.RecipeResult`).
      logits: split -> final logits ``[N]`` / ``[N, classes]`` (inference mode).
      labels: split -> int labels ``[N]``.
      counts: ``trainable_params`` (first stage), ``frozen_params`` (the rest, BatchNorm statistics
        included), ``<stage>_trainable_params``, ``optimizer_values`` (first stage's optimizer state).
      seconds: per-part wall seconds (``feature_seconds``, ``<stage>_seconds``, ``evaluate_seconds``).
    """

    classifier: Classifier
    result: RecipeResult
    logits: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    counts: dict[str, int]
    seconds: dict[str, float]

    def report(self, split: str) -> dict[str, Any]:
        """:func:`~nnjax.transfer.heads.classification_report` of one split's final predictions."""
        return self.classifier.report(self.logits[split], self.labels[split])

    def stage_accuracy(self, stage: str) -> float | None:
        """The validation accuracy after a stage's last epoch (None when it did not run)."""
        for s in self.result.stages:
            if s.name == stage and s.history:
                return float(s.history[-1]["val_accuracy"])
        return None


def _counts(classifier: Classifier, result: RecipeResult, stages: Sequence[Stage]) -> dict[str, int]:
    from nnjax.train.freeze import count_params, partition

    params = result.variables["params"]
    total = count_params(params) + count_params(result.variables["batch_stats"])
    first = partition(params, result.masks[0])[0]
    counts = {"trainable_params": count_params(first), "frozen_params": total - count_params(first),
              "optimizer_values": count_params(stages[0].make_optimizer(1).init(first))}
    for stage, mask in zip(stages[1:], result.masks[1:], strict=True):
        counts[f"{stage.name.replace('-', '_')}_trainable_params"] = count_params(partition(params, mask)[0])
    return counts


FLIPPED = ":flipped"  # suffix of a split's mirrored twin (test-time flip)


def _finish(classifier: Classifier, stages: Sequence[Stage], data: Mapping[str, Any], result: RecipeResult,
            began: float) -> Outcome:
    from nnjax.transfer.heads import averaged

    evaluating = time.perf_counter()
    logits = {name: classifier.logits(result.variables, result.inputs[name], result.start) for name in data}
    for name in [n for n in logits if n.endswith(FLIPPED)]:  # test-time flip: mean of both views' probabilities
        twin = logits.pop(name)
        logits[name[: -len(FLIPPED)]] = averaged(classifier.head, [logits[name[: -len(FLIPPED)]], twin])
    data = {name: d for name, d in data.items() if not name.endswith(FLIPPED)}
    seconds = {**result.seconds, "evaluate_seconds": round(time.perf_counter() - evaluating, 2),
               "train_seconds": round(evaluating - began, 2)}
    labels = {name: np.asarray(d.labels) for name, d in data.items()}
    return Outcome(classifier, result, logits, labels, _counts(classifier, result, stages), seconds)


def train_on_images(ctx: Any, splits: Mapping[str, Any], backbone: Backbone, head: HeadConfig,
                    stages: Sequence[Stage], *, flip_views: bool = False, augment: Callable | None = None,
                    dtype: str = "float32", test_time_flip: bool = False) -> Outcome:
    """Train on ``ImageSet`` splits (``train``, ``val``, optionally more; uint8 photos at the backbone's size).

    ``flip_views``: also train on each training photo's mirror image (when no stage augments, the
    thesis's horizontal flip done exactly once, in the cached features). ``augment(rng, images)``:
    the augmentation of stages with ``augment=True``. ``test_time_flip``: the final predictions of
    every other split average each photo's and its mirror image's probabilities (the mirrors go
    through the cached boundaries with the photos; per-epoch validation uses the photos alone).
    """
    began = time.perf_counter()
    classifier = Classifier(backbone, head, splits["train"].class_names, dtype=dtype)
    data = {}
    for name, images in splits.items():
        pixels, labels = images.images, images.labels
        if name == "train" and flip_views:
            pixels, labels = np.concatenate([pixels, pixels[:, :, ::-1]]), np.concatenate([labels, labels])
        data[name] = ArrayExamples({"image": pixels}, labels)
        if name != "train" and test_time_flip:
            data[name + FLIPPED] = ArrayExamples({"image": pixels[:, :, ::-1]}, labels)
    result = fit_stages(classifier, stages, data, ctx, augment=augment)
    return _finish(classifier, stages, data, result, began)


def train_on_texts(ctx: Any, splits: Mapping[str, tuple[Sequence[str], np.ndarray]], backbone: Backbone,
                   head: HeadConfig, classes: Sequence[str], stages: Sequence[Stage], *, dtype: str = "float32",
                   token_budget: int = 8192) -> Outcome:
    """Train on ``(texts, int labels)`` splits (``train``, ``val``, optionally ``test``), tokenised and
    length-bucketed with the backbone's tokenizer; every split is encoded in one pass."""
    began = time.perf_counter()
    classifier = Classifier(backbone, head, tuple(classes), dtype=dtype)
    data = {name: text_examples(backbone, list(texts), labels) for name, (texts, labels) in splits.items()}
    result = fit_stages(classifier, stages, data, ctx, token_budget=token_budget)
    return _finish(classifier, stages, data, result, began)


def text_examples(backbone: Backbone, texts: list[str], labels: np.ndarray) -> BucketExamples:
    """Raw texts -> length-bucketed token examples for ``backbone`` (its tokenizer and truncation)."""
    from nnjax.data.text import bucket_bounds, make_buckets, tokenize

    ids = tokenize(backbone.tokenizer, texts, backbone.max_length)
    pad = backbone.module.config.pad_token_id
    return BucketExamples(make_buckets(ids, bucket_bounds(backbone.max_length), pad_id=pad), labels)


def summary_of(outcome: Outcome, split: str = "val") -> dict[str, Any]:
    """The summary keys every transfer experiment reports for ``split``: accuracy, macro F1, per-class
    precision and recall, example counts, parameter counts and per-part seconds."""
    report = outcome.report(split)
    per_class = {f"{split}_precision_{name}": round(v["precision"], 4) for name, v in report["per_class"].items()}
    per_class.update({f"{split}_recall_{name}": round(v["recall"], 4) for name, v in report["per_class"].items()})
    return {
        f"{split}_accuracy": report["accuracy"],
        f"{split}_macro_f1": report["macro_f1"],
        **per_class,
        f"{split}_confusion_matrix": report["confusion_matrix"],
        "train_examples": int(len(outcome.labels["train"])),
        **{f"{name}_examples": int(len(v)) for name, v in outcome.labels.items() if name != "train"},
        **outcome.counts,
        **outcome.seconds,
        "stages": [{"name": s.name, "start_group": s.start, "cached": s.cached, "epochs": len(s.history),
                    "trainable_params": s.trainable_params,
                    "val_accuracy": s.history[-1].get("val_accuracy") if s.history else None}
                   for s in outcome.result.stages],
    }
