"""The one train-step factory, its eval twin, and a loop that evaluates a loader.

A loss function, for every model in nnjax, has the signature::

    loss_fn(params, batch_stats, batch, rng, train) -> (per_example_loss [B], aux)
    aux = {"metrics": {name: per-example values [B]}, "batch_stats": updated stats or {}}

Batches are dicts of arrays with a leading batch axis and a float32 ``mask`` [B] (1 for
real examples, 0 for padding), so every mean here is a masked mean and a padded last
batch neither recompiles nor biases the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from nnjax._threefry import use_unrolled_threefry_on_cpu
from nnjax.train.freeze import combine, partition
from nnjax.train.state import TrainState

use_unrolled_threefry_on_cpu()  # dropout and augmentation draws: the same bits, no XLA while loop

PyTree = Any
Batch = dict[str, jax.Array]
LossFn = Callable[[PyTree, PyTree, Batch, jax.Array, bool], tuple[jax.Array, dict]]


def _masked_means(per_example: dict[str, jax.Array], mask: jax.Array) -> dict[str, jax.Array]:
    count = jnp.maximum(mask.sum(), 1.0)
    return {name: jnp.sum(value * mask) / count for name, value in per_example.items()}


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    trainable: PyTree | None = None,
    donate: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted ``step(state, batch) -> (state, metrics)``.

    Only the trainable partition (``trainable``: a bool mask from ``freeze.path_mask``;
    None trains everything) is differentiated and updated; the frozen part enters the
    loss as a constant, so XLA computes no gradient for it and the optimizer keeps no
    state for it. ``metrics`` holds the masked mean ``loss`` and every per-example metric
    the loss function returns. The state is donated: do not reuse the old one.
    """

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(state.rng, state.step)
        mask = batch["mask"]
        if trainable is None:
            train_part, frozen = state.params, None
        else:
            train_part, frozen = partition(state.params, trainable)

        def objective(part: PyTree) -> tuple[jax.Array, dict]:
            params = part if frozen is None else combine(part, frozen)
            per_example, aux = loss_fn(params, state.batch_stats, batch, rng, True)
            loss = jnp.sum(per_example * mask) / jnp.maximum(mask.sum(), 1.0)
            return loss, aux

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(train_part)
        updates, opt_state = tx.update(grads, state.opt_state, train_part)
        new_part = optax.apply_updates(train_part, updates)
        params = new_part if frozen is None else combine(new_part, frozen)
        new_stats = aux.get("batch_stats")
        metrics = {"loss": loss, **_masked_means(aux.get("metrics", {}), mask)}
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=new_stats if new_stats else state.batch_stats,
            opt_state=opt_state,
        )
        return new_state, metrics

    return jax.jit(step, donate_argnums=(0,) if donate else ())


def make_eval_step(loss_fn: LossFn) -> Callable[[TrainState, Batch], tuple[dict[str, jax.Array], jax.Array]]:
    """A jitted ``eval_step(state, batch) -> (sums, count)`` in inference mode (``train=False``).

    ``sums`` are masked sums of the loss and of each metric; ``count`` the number of real examples.
    """

    def step(state: TrainState, batch: Batch) -> tuple[dict[str, jax.Array], jax.Array]:
        mask = batch["mask"]
        per_example, aux = loss_fn(state.params, state.batch_stats, batch, state.rng, False)
        values = {"loss": per_example, **aux.get("metrics", {})}
        return {name: jnp.sum(v * mask) for name, v in values.items()}, mask.sum()

    return jax.jit(step)


def evaluate(state: TrainState, eval_step: Callable, batches: Iterable[Batch]) -> dict[str, float]:
    """Masked means of the loss and metrics over all batches (e.g. ``loader.epoch(0)``)."""
    totals: dict[str, jax.Array] | None = None
    count = jnp.zeros(())
    for batch in batches:
        sums, n = eval_step(state, batch)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
        count = count + n
    if totals is None:
        return {}
    denom = max(float(count), 1.0)
    return {name: float(value) / denom for name, value in totals.items()}
