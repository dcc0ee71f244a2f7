"""The classification head of every transfer model, with its loss, probabilities and metrics.

A head maps pooled backbone features ``[B, F]`` to logits: an optional hidden Dense layer
(ReLU or tanh, optional dropout), then the output layer. For two classes it can emit one
logit with a sigmoid (the thesis's cats-vs-dogs head, ``output="sigmoid"``); otherwise one
logit per class with a softmax. Parameter names are ``<hidden_name>`` and ``classifier``, so
a checkpoint's own head (DistilBERT's ``pre_classifier``, BERT's ``pooler``) loads by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnjax.errors import NnjaxError

OUTPUTS = ("softmax", "sigmoid")
ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """What the head is; JSON-friendly (it is exported with the classifier).

    Attributes:
      num_classes: N >= 2.
      hidden: units of the hidden Dense layer (0: none, the output layer sits on the features).
      activation: ``"relu"`` or ``"tanh"`` after the hidden layer.
      dropout: rate before the output layer, active in training only.
      output: ``"softmax"`` (N logits) or ``"sigmoid"`` (one logit; two classes only).
      hidden_name: parameter name of the hidden layer (``"hidden"``, or a checkpoint's own name).
      init_std: normal(std) kernels and zero biases (BERT's initialiser), or None for Flax's default.
    """

    num_classes: int
    hidden: int = 128
    activation: str = "relu"
    dropout: float = 0.0
    output: str = "softmax"
    hidden_name: str = "hidden"
    init_std: float | None = None

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise NnjaxError(f"A classifier needs at least 2 classes, got {self.num_classes}.")
        if self.output not in OUTPUTS:
            raise NnjaxError(f"The head's output must be softmax or sigmoid, got {self.output!r}.")
        if self.output == "sigmoid" and self.num_classes != 2:
            raise NnjaxError(f"A sigmoid head has two classes, not {self.num_classes}; use output='softmax'.")
        if self.activation not in ACTIVATIONS:
            raise NnjaxError(f"The head's activation must be relu or tanh, got {self.activation!r}.")
        if self.hidden < 0 or not 0.0 <= self.dropout < 1.0:
            raise NnjaxError("The head's hidden units must be >= 0 and its dropout in [0, 1).")

    @property
    def logits_per_example(self) -> int:
        return 1 if self.output == "sigmoid" else self.num_classes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HeadConfig:
        return cls(**values)


class ClassifierHead(nn.Module):
    """``[B, F]`` features -> logits ``[B]`` (sigmoid head) or ``[B, N]`` (softmax head)."""

    config: HeadConfig

    @nn.compact
    def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
        c = self.config
        dense = {}
        if c.init_std is not None:
            dense = {"kernel_init": nn.initializers.normal(c.init_std), "bias_init": nn.initializers.zeros}
        x = features
        if c.hidden:
            x = ACTIVATIONS[c.activation](nn.Dense(c.hidden, name=c.hidden_name, **dense)(x))
        if c.dropout:
            x = nn.Dropout(c.dropout)(x, deterministic=not train)
        logits = nn.Dense(c.logits_per_example, name="classifier", **dense)(x)
        return logits[:, 0] if c.output == "sigmoid" else logits


def per_example_loss(config: HeadConfig, logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
                     ) -> jax.Array:
    """Cross-entropy ``[B]`` of integer ``labels`` ``[B]``: binary on one logit (sigmoid head), else softmax
    over N logits; ``label_smoothing`` moves that much probability mass evenly over the classes."""
    logits = logits.astype(jnp.float32)
    if config.output == "sigmoid":
        target = labels.astype(jnp.float32)
        if label_smoothing:
            target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        return optax.sigmoid_binary_cross_entropy(logits, target)
    if label_smoothing:
        target = optax.smooth_labels(jax.nn.one_hot(labels, config.num_classes), label_smoothing)
        return optax.softmax_cross_entropy(logits, target)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def predicted_class(config: HeadConfig, logits: jax.Array) -> jax.Array:
    """Class indices ``[B]`` from logits (``logit > 0`` for a sigmoid head, else the arg-max)."""
    if config.output == "sigmoid":
        return (logits > 0).astype(jnp.int32)
    return jnp.argmax(logits, axis=-1)


def probabilities(config: HeadConfig, logits: Any) -> np.ndarray:
    """Class probabilities ``[B, N]`` (NumPy float32) from logits of either head."""
    logits = np.asarray(logits, np.float64)
    if config.output == "sigmoid":
        p = 1.0 / (1.0 + np.exp(-logits))
        return np.stack([1 - p, p], axis=-1).astype(np.float32)
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return (shifted / shifted.sum(-1, keepdims=True)).astype(np.float32)


def averaged(config: HeadConfig, logits: Sequence[Any]) -> np.ndarray:
    """Logits whose probabilities are the mean of several predictions' (test-time augmentation):
    ``log(mean p)`` per class for a softmax head, ``logit(mean p)`` for a sigmoid head."""
    mean = np.mean([probabilities(config, x).astype(np.float64) for x in logits], axis=0)
    mean = np.clip(mean, 1e-12, 1.0)
    if config.output == "sigmoid":
        return np.log(mean[:, 1]) - np.log(mean[:, 0])
    return np.log(mean)


def scores(config: HeadConfig, logits: Any, labels: np.ndarray) -> dict[str, float]:
    """Mean cross-entropy and accuracy of logits for ``labels`` ``[N]`` (host NumPy, float64)."""
    probs = probabilities(config, logits).astype(np.float64)
    labels = np.asarray(labels, np.int64)
    picked = np.maximum(probs[np.arange(len(labels)), labels], 1e-12)
    return {"loss": float(-np.log(picked).mean()), "accuracy": float((probs.argmax(-1) == labels).mean())}


def classification_report(labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1, per-class precision / recall / F1 and the confusion matrix.

    Returns ``{"accuracy", "macro_f1", "per_class": {name: {"precision", "recall", "f1", "support"}},
    "confusion_matrix": [[...]]}`` (rows: true class, columns: predicted).
    """
    from nnjax.train.metrics import confusion_matrix

    cm = confusion_matrix(labels, predicted, len(classes))
    per_class, f1s = {}, []
    for i, name in enumerate(classes):
        tp = float(cm[i, i])
        predicted_i, actual_i = float(cm[:, i].sum()), float(cm[i, :].sum())
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / actual_i if actual_i else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[str(name)] = {"precision": precision, "recall": recall, "f1": f1, "support": int(actual_i)}
        f1s.append(f1)
    total = float(cm.sum())
    return {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "macro_f1": float(np.mean(f1s)),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
