"""The stage driver: a list of :class:`~nnjax.train.stages.Stage` run through ``make_train_step`` and ``fit``.

For each stage the trainable partition comes from the backbone's groups (``head``, ``top-k``,
``all`` or a regex). When nothing upstream of the stage's first trainable group has changed
from the pretrained weights (and the stage does not augment raw images), that group's inputs
are computed once, in inference mode, and kept in the run folder's cache
(``RunContext.cached``); every boundary the recipe needs is computed in one pass, each from
the previous one. Every stage checkpoints in ``train_state/<stage>`` and resumes exactly after
a kill; its metrics lines carry ``stage``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from nnjax.errors import NnjaxError
from nnjax.train.stages import Stage
from nnjax.transfer.classifier import Classifier
from nnjax.transfer.examples import Examples, concat, from_cache, split


@dataclasses.dataclass
class StageResult:
    """What one stage did: its history (one record per epoch), boundary, counts and seconds."""

    name: str
    history: list[dict]
    start: int
    cached: bool
    trainable_params: int
    seconds: float


@dataclasses.dataclass
class RecipeResult:
    """The trained variables, per-stage results, the boundary inputs the last stage used and timings.

    ``inputs[split]`` are the examples at ``start`` (the last stage's boundary): pass them to
    ``classifier.logits(variables, inputs[split], start)`` for final predictions.
    """

    variables: dict
    stages: list[StageResult]
    inputs: dict[str, Examples]
    start: int
    seconds: dict[str, float]
    masks: list[Any]

    @property
    def history(self) -> list[dict]:
        """Every stage's epochs in order, each record tagged with its ``stage``."""
        return [{**h, "stage": s.name} for s in self.stages for h in s.history]


def _mask(classifier: Classifier, params: dict, stage: Stage) -> Any:
    from nnjax.train.freeze import path_mask

    patterns = classifier.backbone.trainable_patterns(stage.train, stage.top_k)
    mask = path_mask(params, patterns)
    if not any(jax.tree_util.tree_leaves(mask)):
        raise NnjaxError(f"Stage {stage.name!r} trains nothing: {stage.train!r} matches no parameter path "
                         "(paths look like backbone/<group>/... and head/...).")
    return mask


def plan_boundaries(classifier: Classifier, params: dict, stages: Sequence[Stage]
                    ) -> list[tuple[Any, int, bool, int]]:
    """Per stage: ``(mask, start, cached, first)``. ``first`` is the first trainable group (the
    backbone's depth when only the head trains); ``cached`` whether its inputs can be computed once
    (no earlier stage trained anything below it, the stage does not augment raw images and allows
    caching); ``start`` is where the stage's steps begin: ``first`` when cached, else 0."""
    plan, lowest_trained = [], classifier.backbone.depth
    for stage in stages:
        mask = _mask(classifier, params, stage)
        start = classifier.backbone.first_trainable_group(params, mask)
        cached = stage.cache and start > 0 and not stage.augment and lowest_trained >= start
        plan.append((mask, start if cached else 0, cached, start))
        if stage.epochs:
            lowest_trained = min(lowest_trained, start)
    return plan


def fit_stages(
    classifier: Classifier,
    stages: Sequence[Stage],
    data: Mapping[str, Examples],
    ctx: Any,
    *,
    augment: Callable | None = None,
    batch_size_inference: int = 32,
    token_budget: int = 8192,
    log_every: int = 100,
) -> RecipeResult:
    """Train ``classifier`` through ``stages`` on ``data["train"]``, evaluating on ``data["val"]`` each epoch.

    ``data`` maps split names to raw examples (boundary 0); every split is carried to the cached
    boundaries together (one forward pass). ``ctx``: the experiment's ``RunContext`` (seed,
    checkpoints, cache, metrics). ``augment(rng, images)``: the augmentation of stages with
    ``augment=True``. Returns a :class:`RecipeResult`.
    """
    from nnjax.train.fit import fit
    from nnjax.train.freeze import count_params, partition
    from nnjax.train.precision import with_compute_dtype
    from nnjax.train.state import create_train_state
    from nnjax.train.step import make_train_step

    if "train" not in data or "val" not in data:
        raise NnjaxError("The recipe needs a 'train' and a 'val' split.")
    for name, examples in data.items():
        if len(examples) == 0:
            raise NnjaxError(f"The {name} split is empty; give it examples (or a larger data set).")
    variables = classifier.init_variables(ctx.seed)
    plan = plan_boundaries(classifier, variables["params"], stages)
    seconds: dict[str, float] = {}
    inputs = _boundary_inputs(classifier, variables, data, sorted({s for _, s, c, _ in plan if c}), ctx, seconds,
                              batch_size_inference, token_budget)
    inputs[0] = dict(data)
    results, masks = [], []
    start = 0
    for index, (stage, (mask, start, cached, first)) in enumerate(zip(stages, plan, strict=True)):
        masks.append(mask)
        trainable = count_params(partition(variables["params"], mask)[0])
        if not stage.epochs:
            results.append(StageResult(stage.name, [], start, cached, trainable, 0.0))
            continue
        began = time.perf_counter()
        examples = inputs[start]
        loader = examples["train"].loader(stage.batch_size, shuffle=True, seed=ctx.seed + index)
        tx = stage.make_optimizer(stage.epochs * len(loader))
        loss = with_compute_dtype(classifier.loss_fn(start, trainable_from=first,
                                                     augment=augment if stage.augment else None,
                                                     label_smoothing=stage.label_smoothing), classifier.dtype)
        fresh = jax.device_put(variables, may_alias=False)  # the step donates its state: keep ours (a copy)
        state = create_train_state(fresh["params"], tx, rng=jax.random.key(ctx.seed + index),
                                   batch_stats=fresh["batch_stats"], trainable=mask)

        def eval_fn(state, examples=examples, start=start):
            logits = classifier.logits({"params": state.params, "batch_stats": state.batch_stats}, examples["val"],
                                       start, batch_size_inference, token_budget)
            return classifier.scores(logits, examples["val"].labels)

        state, history = fit(state, make_train_step(loss, tx, trainable=mask), loader, epochs=stage.epochs,
                             eval_fn=eval_fn, metrics=ctx.metrics.tagged(stage=stage.name),
                             checkpointer=ctx.checkpointer(stage.name, trainable=mask), progress=ctx.progress,
                             desc=stage.name, log_every=log_every)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        took = time.perf_counter() - began
        seconds[f"{stage.name.replace('-', '_')}_seconds"] = round(took, 2)
        results.append(StageResult(stage.name, history, start, cached, trainable, took))
    last = next((r for r in reversed(results) if r.history), results[-1])
    return RecipeResult(variables, results, inputs[last.start], last.start, seconds, masks)


def _boundary_inputs(classifier: Classifier, variables: dict, data: Mapping[str, Examples], boundaries: list[int],
                     ctx: Any, seconds: dict[str, float], batch_size: int, token_budget: int) -> dict[int, dict]:
    """``{boundary: {split: examples}}`` for every cached boundary, from the run folder's cache or computed
    (each boundary from the previous one, all splits in one pass) and then cached."""
    if not boundaries:
        return {}
    names = list(data)
    sizes = [len(data[n]) for n in names]
    began = time.perf_counter()
    result: dict[int, dict] = {}

    def compute() -> dict[str, np.ndarray]:
        current, at, stored = concat([data[n] for n in names]), 0, {}
        for boundary in boundaries:
            stop = None if boundary >= classifier.backbone.depth else boundary
            current = classifier.backbone_part(variables, current, at, stop, batch_size, token_budget)
            at = boundary
            for name, part in zip(names, split(current, sizes), strict=True):
                stored.update({f"b{boundary}/{name}/{k}": v for k, v in part.to_cache().items()})
        return stored

    stored = ctx.cached("boundaries-" + "-".join(map(str, boundaries)), compute)
    for boundary in boundaries:
        result[boundary] = {}
        for name in names:
            prefix = f"b{boundary}/{name}/"
            part = {k[len(prefix):]: v for k, v in stored.items() if k.startswith(prefix)}
            result[boundary][name] = from_cache(part, data[name].labels)
    seconds["feature_seconds"] = round(time.perf_counter() - began, 2)
    return result
