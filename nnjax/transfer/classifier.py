"""A backbone and a classification head as one model, its variables, its loss and its forward passes.

Parameter paths are ``backbone/<group>/...`` and ``head/...``; BatchNorm statistics live in
``batch_stats/backbone/...`` and never change (image backbones run in inference mode even
when their top groups train, as the Keras transfer-learning guide does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nnjax.train.init import run_once
from nnjax.transfer import heads
from nnjax.transfer.backbones import Backbone
from nnjax.transfer.examples import ArrayExamples, BucketExamples, Examples
from nnjax.transfer.heads import ClassifierHead, HeadConfig


class TransferModel(nn.Module):
    """``backbone`` groups from boundary ``start`` to the end, then ``head``: logits ``[B]`` or ``[B, N]``.

    ``inputs`` is what the backbone takes at ``start`` (``start == depth``: pooled features ``[B, F]``).
    ``train`` enables the head's dropout and, from group ``backbone_train_from`` on (the trainable
    groups), the backbone's; the frozen groups below always run in inference mode.
    """

    backbone: nn.Module
    head: ClassifierHead
    depth: int

    def __call__(self, inputs: Any, start: int = 0, train: bool = False,
                 backbone_train_from: int | None = None) -> jax.Array:
        if start >= self.depth:
            features = inputs
        elif train and backbone_train_from is not None and backbone_train_from < self.depth:
            cut = max(start, backbone_train_from)
            if cut > start:
                inputs = self.backbone(inputs, train=False, start=start, stop=cut)
            features = self.backbone(inputs, train=True, start=cut)
        else:
            features = self.backbone(inputs, train=False, start=start)
        return self.head(features, train=train)


@dataclasses.dataclass
class Classifier:
    """What a transfer recipe trains: ``backbone`` + a head of ``head`` for ``classes``.

    Attributes:
      backbone: the pretrained :class:`~nnjax.transfer.backbones.Backbone`.
      head: the head's :class:`~nnjax.transfer.heads.HeadConfig`.
      classes: class names, index order.
      dtype: compute dtype (``"float32"`` or ``"bfloat16"``; parameters stay float32).
    """

    backbone: Backbone
    head: HeadConfig
    classes: tuple[str, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.classes = tuple(str(c) for c in self.classes)
        self.model = TransferModel(self.backbone.module, ClassifierHead(self.head), self.backbone.depth)
        self._compiled: dict[tuple, Callable] = {}  # one jitted forward per boundary: eval compiles once

    # ------------------------------------------------------------------ variables

    def init_variables(self, seed: int) -> dict:
        """``{"params": {"backbone": pretrained, "head": ...}, "batch_stats": {"backbone": ...}}``.

        The head is freshly initialised from ``seed``; where the backbone brought its own head
        parameters (a text checkpoint's pooler) of the same shapes, those are used.
        """
        features = jnp.zeros((1, self.backbone.feature_size), jnp.float32)
        head = run_once(lambda key: ClassifierHead(self.head).init(key, features)["params"], jax.random.key(seed))
        own = self.backbone.head_params or {}
        shape = lambda tree: jax.tree_util.tree_map(np.shape, tree)  # noqa: E731
        head = {k: own[k] if k in own and shape(own[k]) == shape(v) else v for k, v in head.items()}
        variables = self.backbone.variables
        params = {"backbone": variables["params"], "head": head}
        stats = {"backbone": variables["batch_stats"]} if variables.get("batch_stats") else {}
        # one device_put for the tree: jnp.asarray per leaf compiled a copy program per distinct shape
        return jax.device_put({"params": params, "batch_stats": stats})

    # ------------------------------------------------------------------ training

    def loss_fn(self, start: int, *, trainable_from: int | None = None, augment: Callable | None = None,
                label_smoothing: float = 0.0) -> Callable:
        """``loss_fn(params, batch_stats, batch, rng, train) -> (loss [B], aux)`` for ``make_train_step``.

        ``batch`` holds the examples at boundary ``start`` (see :mod:`nnjax.transfer.backbones`) and
        ``label``; ``augment(rng, images)`` runs on raw images in training only (``start == 0``).
        ``trainable_from``: the first trainable group; for backbones with dropout (texts) the groups
        from there on run in training mode, the frozen ones below in inference mode.
        ``aux["metrics"]["accuracy"]``; BatchNorm statistics are never updated. Wrap it in
        ``nnjax.train.precision.with_compute_dtype(loss, classifier.dtype)`` to compute in bfloat16.
        """
        backbone = self.backbone

        def loss_fn(params, batch_stats, batch, rng, train):
            augment_rng, dropout_rng = jax.random.split(rng)
            if train and augment is not None and start == 0:
                batch = {**batch, "image": augment(augment_rng, batch["image"])}
            inputs = backbone.model_input(batch, start)
            logits = self.model.apply({"params": params, "batch_stats": batch_stats}, inputs, start=start,
                                      train=train, backbone_train_from=trainable_from if backbone.train_dropout
                                      else None, rngs={"dropout": dropout_rng} if train else None)
            loss = heads.per_example_loss(self.head, logits, batch["label"], label_smoothing)
            correct = (heads.predicted_class(self.head, logits) == batch["label"]).astype(jnp.float32)
            return loss, {"metrics": {"accuracy": correct}, "batch_stats": {}}

        return loss_fn

    # ------------------------------------------------------------------ inference

    def _cast(self, tree: Any) -> Any:
        """``tree``'s floating leaves in the compute dtype (unchanged for float32)."""
        from nnjax.train.precision import cast_floats, parse_dtype

        return tree if self.dtype == "float32" else cast_floats(tree, parse_dtype(self.dtype))

    def _batch_size(self, examples: Examples, batch_size: int) -> int:
        return max(1, min(batch_size, len(examples)))

    def backbone_part(self, variables: dict, examples: Examples, start: int, stop: int | None,
                      batch_size: int = 32, token_budget: int = 8192) -> Examples:
        """The examples carried from boundary ``start`` to ``stop`` (None: pooled features) by the frozen
        backbone in inference mode (what a stage caches)."""
        backbone, cast = self.backbone, self._cast

        def forward(params, stats, batch):
            params, inputs = cast(params), cast(backbone.model_input(batch, start))
            out = backbone.module.apply({"params": params, "batch_stats": stats}, inputs, train=False, start=start,
                                        stop=stop)
            out = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating)
                                         else x, out)
            return backbone.boundary_batch(out, stop)

        forward = self._compiled.setdefault(("part", start, stop), jax.jit(forward))

        params, stats = variables["params"]["backbone"], variables.get("batch_stats", {}).get("backbone", {})
        run = _runner(forward, params, stats)
        size = self._batch_size(examples, batch_size) if isinstance(examples, ArrayExamples) else token_budget
        result = examples.map(run, size)
        return result if isinstance(result, BucketExamples) else ArrayExamples(result, examples.labels)

    def logits(self, variables: dict, examples: Examples, start: int, batch_size: int = 64,
               token_budget: int = 8192) -> np.ndarray:
        """Inference-mode logits of every example at boundary ``start``: ``[N]`` or ``[N, classes]``."""
        backbone, cast = self.backbone, self._cast

        def forward(params, stats, batch):
            params, inputs = cast(params), cast(backbone.model_input(batch, start))
            return self.model.apply({"params": params, "batch_stats": stats}, inputs, start=start).astype(
                jnp.float32)

        forward = self._compiled.setdefault(("logits", start), jax.jit(forward))

        run = _runner(forward, variables["params"], variables.get("batch_stats", {}))
        size = self._batch_size(examples, batch_size) if isinstance(examples, ArrayExamples) else token_budget
        return np.asarray(examples.map(run, size))

    def scores(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """``{"loss", "accuracy"}`` of logits against labels."""
        return heads.scores(self.head, logits, labels)

    def report(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Accuracy, macro F1, per-class precision / recall and the confusion matrix."""
        predicted = heads.probabilities(self.head, logits).argmax(-1)
        return heads.classification_report(labels, predicted, self.classes)


def _runner(forward: Callable, params: Any, stats: Any) -> Callable[[dict], Any]:
    """``batch -> forward(params, stats, batch)`` without the row mask (inference does not need it)."""

    def run(batch: dict) -> Any:
        return forward(params, stats, {k: v for k, v in batch.items() if k != "mask"})

    return run


def class_names(labels: Sequence[Any]) -> tuple[str, ...]:
    """Sorted distinct names of ``labels``."""
    return tuple(sorted({str(x) for x in labels}))
