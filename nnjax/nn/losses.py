"""Loss functions of thesis section 3.2, per example.

Every loss returns one value per example, shape ``[B]`` (the shape the shared train step
expects from a ``loss_fn``); :func:`batch_mean` turns it into the scalar the thesis
writes as ``L(Theta)`` (optionally masked, for padded batches).

=============================================  ===========================================================
function                                       per-example value (``j`` runs over the trailing axes)
=============================================  ===========================================================
``mse(pred, target)``                          ``mean_j (y_j - yhat_j)^2``
``binary_cross_entropy(probs, labels)``        ``mean_j -[y log p + (1 - y) log(1 - p)]`` (p clipped)
``binary_cross_entropy_with_logits(z, y)``     the same with ``p = sigmoid(z)``, stable for any ``z``
``categorical_cross_entropy(probs, onehot)``   ``-sum_j y_j log p_j`` (p clipped)
``softmax_cross_entropy(logits, onehot)``      ``-sum_j y_j log softmax(z)_j``
``softmax_cross_entropy_int(logits, labels)``  ``-log softmax(z)_label`` with integer labels ``[B]``
=============================================  ===========================================================
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nnjax.errors import NnjaxError
from nnjax.nn.activations import log_sigmoid, log_softmax

Array = jax.Array

#: Probabilities are clipped to ``[EPS, 1 - EPS]`` before ``log`` (float32-safe).
EPS = 1e-7


def _check_same_shape(name: str, a: Array, b: Array, what: str = "targets") -> None:
    if a.shape != b.shape:
        raise NnjaxError(
            f"{name}: predictions have shape {tuple(a.shape)} but {what} have shape "
            f"{tuple(b.shape)}; pass arrays of the same shape [B, ...]."
        )
    if a.ndim < 1:
        raise NnjaxError(f"{name}: inputs must have a batch axis (shape [B, ...]); got a scalar.")


def _check_class_axis(name: str, x: Array) -> None:
    if x.ndim < 2:
        raise NnjaxError(f"{name}: expected shape [B, ..., C] with a class axis last; got {tuple(x.shape)}.")


def _mean_trailing(x: Array) -> Array:
    """Mean over every axis but the first: ``[B, ...] -> [B]``."""
    return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def mse(pred: Array, target: Array) -> Array:
    """Mean squared error per example: ``[B, ...] x [B, ...] -> [B]``.

    Equals ``2 * optax.l2_loss(pred, target)`` averaged over the trailing axes
    (``optax.l2_loss`` is ``0.5 (pred - target)^2`` elementwise).
    """
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    _check_same_shape("mse", pred, target)
    return _mean_trailing((target - pred) ** 2)


def binary_cross_entropy(probs: Array, labels: Array, eps: float = EPS) -> Array:
    """Binary cross-entropy from probabilities, per example: ``[B, ...] -> [B]``.

    ``probs`` are clipped to ``[eps, 1 - eps]``; labels may be soft (in ``[0, 1]``).
    Averaged over the trailing axes (multi-label outputs), like Keras.
    """
    probs, labels = jnp.asarray(probs), jnp.asarray(labels, dtype=jnp.result_type(probs))
    _check_same_shape("binary_cross_entropy", probs, labels, "labels")
    p = jnp.clip(probs, eps, 1.0 - eps)
    return _mean_trailing(-(labels * jnp.log(p) + (1.0 - labels) * jnp.log1p(-p)))


def binary_cross_entropy_with_logits(logits: Array, labels: Array) -> Array:
    """Binary cross-entropy from logits, per example: ``[B, ...] -> [B]``.

    Uses ``(1 - y) z - log sigmoid(z)``, which equals
    ``-[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]`` (as ``log(1 - sigmoid(z)) =
    log sigmoid(z) - z``), with the stable :func:`~nnjax.nn.activations.log_sigmoid`: finite
    for any ``z`` and with the exact gradient ``sigmoid(z) - y``, also at ``z = 0``.
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels, dtype=jnp.result_type(logits))
    _check_same_shape("binary_cross_entropy_with_logits", logits, labels, "labels")
    per_element = (1.0 - labels) * logits - log_sigmoid(logits)
    return _mean_trailing(per_element)


def categorical_cross_entropy(probs: Array, one_hot: Array, eps: float = EPS) -> Array:
    """Categorical cross-entropy from probabilities: ``[B, ..., C] x [B, ..., C] -> [B]``.

    ``-sum_j y_j log p_j`` over the class axis (last) with ``p`` clipped to ``[eps, 1]`` (the
    thesis's multiclass form); any middle axes (e.g. time steps) are averaged.
    """
    probs = jnp.asarray(probs)
    one_hot = jnp.asarray(one_hot, dtype=probs.dtype)
    _check_same_shape("categorical_cross_entropy", probs, one_hot, "labels")
    _check_class_axis("categorical_cross_entropy", probs)
    return _mean_trailing(-jnp.sum(one_hot * jnp.log(jnp.clip(probs, eps, 1.0)), axis=-1))


def softmax_cross_entropy(logits: Array, one_hot: Array) -> Array:
    """Softmax cross-entropy from logits with one-hot (or soft) labels: ``[B, ..., C] -> [B]``.

    Sums over the class axis (last) and averages any middle axes.
    Equals ``optax.softmax_cross_entropy``; finite for any logits (log-sum-exp shift).
    """
    logits = jnp.asarray(logits)
    one_hot = jnp.asarray(one_hot, dtype=logits.dtype)
    _check_same_shape("softmax_cross_entropy", logits, one_hot, "labels")
    _check_class_axis("softmax_cross_entropy", logits)
    return _mean_trailing(-jnp.sum(one_hot * log_softmax(logits), axis=-1))


def softmax_cross_entropy_int(logits: Array, labels: Array) -> Array:
    """Softmax cross-entropy from logits ``[B, C]`` and integer labels ``[B]`` -> ``[B]``.

    Equals ``optax.softmax_cross_entropy_with_integer_labels``.
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise NnjaxError(
            f"softmax_cross_entropy_int: expected logits [B, C] and integer labels [B], got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}; pass one class index per example."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise NnjaxError(
            f"softmax_cross_entropy_int: labels have dtype {labels.dtype}; pass integer class "
            "indices, or use softmax_cross_entropy for one-hot labels."
        )
    log_p = log_softmax(logits)
    return -jnp.take_along_axis(log_p, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def batch_mean(per_example: Array, mask: Array | None = None) -> Array:
    """Mean of a ``[B]`` loss over the batch; with ``mask`` ``[B]`` (1 = real, 0 = padding)
    the masked mean ``sum(loss * mask) / max(sum(mask), 1)``. Returns a scalar."""
    per_example = jnp.asarray(per_example)
    if mask is None:
        return jnp.mean(per_example)
    mask = jnp.asarray(mask, dtype=per_example.dtype)
    if mask.shape != per_example.shape:
        raise NnjaxError(
            f"batch_mean: mask shape {tuple(mask.shape)} differs from the loss shape "
            f"{tuple(per_example.shape)}; pass one mask value per example."
        )
    return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def mse_mean(pred: Array, target: Array, mask: Array | None = None) -> Array:
    """Scalar mean of :func:`mse` over the batch (masked when ``mask`` is given)."""
    return batch_mean(mse(pred, target), mask)


def binary_cross_entropy_with_logits_mean(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """Scalar mean of :func:`binary_cross_entropy_with_logits` over the batch."""
    return batch_mean(binary_cross_entropy_with_logits(logits, labels), mask)


def softmax_cross_entropy_mean(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """Scalar mean softmax cross-entropy; ``labels`` one-hot ``[B, C]`` or integer ``[B]``."""
    labels = jnp.asarray(labels)
    if labels.ndim == jnp.ndim(logits) - 1:
        return batch_mean(softmax_cross_entropy_int(logits, labels), mask)
    return batch_mean(softmax_cross_entropy(logits, labels), mask)
