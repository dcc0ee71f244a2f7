"""The one fit loop: epochs of static-shape batches, live loss, metrics, checkpoints, resume."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import jax

from nnjax.errors import TrainingDivergedError
from nnjax.train.checkpoint import Checkpointer
from nnjax.train.metrics import MetricsWriter
from nnjax.train.parallel import replicate, shard_batch, use_data_parallel
from nnjax.train.state import TrainState


class Loader(Protocol):
    def __len__(self) -> int: ...

    def epoch(self, index: int = 0, start: int = 0): ...


def _progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def fit(
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict]],
    loader: Loader,
    *,
    epochs: int,
    eval_fn: Callable[[TrainState], dict] | None = None,
    metrics: MetricsWriter | None = None,
    checkpointer: Checkpointer | None = None,
    log_every: int = 50,
    progress: bool = True,
    desc: str = "train",
    on_step: Callable[[TrainState, dict[str, float]], None] | None = None,
    mesh: Any = None,
) -> tuple[TrainState, list[dict[str, float]]]:
    """Train for ``epochs`` passes over ``loader`` and return ``(state, history)``.

    * Resumes: when ``checkpointer`` holds a checkpoint, training continues from it,
      skipping the batches already seen, so the result equals an uninterrupted run; the
      returned history holds every epoch, those before the resume included (they are saved
      with the checkpoint), and ``metrics`` is cut back to the checkpoint's offset so that
      no line is written twice.
    * Checkpoints: at epoch ends (``checkpointer.every_seconds`` apart; the last epoch
      always) and mid-epoch every ``checkpointer.every_steps`` steps, each after the epoch's
      metrics are logged, so a kill between the two loses nothing.
    * Logs: every ``log_every`` steps the mean of the step metrics goes to ``metrics``
      (``{"step", "epoch", "loss", ...}``) and the progress bar; each epoch adds a line
      with ``train_*`` means, ``eval_fn(state)`` results (prefixed ``val_`` unless
      already prefixed), ``compile_s`` (first step) and ``step_ms`` (the rest).
    * Guards: a NaN or infinite loss stops training with :class:`TrainingDivergedError`
      naming the first bad step; checkpoints are written only after the steps before
      them were checked, so the last one saved is good.
    * ``on_step(state, metrics)`` is called after each logged block with host floats.
    * Data parallel: with more than one device (or several processes) each batch is split
      over all of them and the state replicated (``mesh``: None = automatic, False = off,
      or a ``jax.sharding.Mesh``); results equal the one-device run's up to float rounding.
    """
    import sys

    mesh = use_data_parallel(mesh)
    steps_per_epoch = len(loader)
    total_steps = epochs * steps_per_epoch
    history: list[dict[str, float]] = []
    resumed_totals: dict[str, float] = {}
    if checkpointer is not None and checkpointer.latest_step() is not None:
        state, progress = checkpointer.restore_with_progress(state)
        history = list(progress.get("history", []))
        resumed_totals = dict(progress.get("totals", {}))
        if metrics is not None and "metrics_offset" in progress:
            metrics.restore_to(int(progress["metrics_offset"]))
        done = int(state.step)
        note = "already trained; restored from its checkpoint" if done >= total_steps else \
            f"resuming from step {done} of {total_steps}"
        print(f"{desc}: {note}", file=sys.stderr)
    if mesh is not None:
        state = replicate(state, mesh)
    done = int(state.step)
    host_step = done
    start_epoch, offset = divmod(done, steps_per_epoch)
    pending: list[tuple[int, dict]] = []
    bar = _progress_bar(total_steps, min(done, total_steps), desc, progress)
    compile_s = None

    def flush(epoch: int, totals: dict[str, float]) -> None:
        """Move pending device metrics to the host, check them, log their mean, add them to ``totals``."""
        if not pending:
            return
        host = jax.device_get([m for _, m in pending])
        for (step_no, _), values in zip(pending, host, strict=True):
            loss = float(values["loss"])
            if not math.isfinite(loss):
                raise TrainingDivergedError(
                    f"The loss became {loss} at step {step_no} (epoch {epoch + 1}); lower the learning rate "
                    "or check the inputs — the last good checkpoint, if any, is kept."
                )
        block_sums = {k: sum(float(v[k]) for v in host) for k in host[0]}
        for k, v in block_sums.items():
            totals[k] = totals.get(k, 0.0) + v
        totals["_count"] = totals.get("_count", 0.0) + len(host)
        means = {k: v / len(host) for k, v in block_sums.items()}
        last_step = pending[-1][0]
        pending.clear()
        if metrics is not None:
            metrics.log(step=last_step, epoch=epoch + 1, **means)
        bar.set_postfix(loss=f"{means['loss']:.4f}")
        if on_step is not None:
            on_step(state, means)

    def save(totals: dict[str, float]) -> None:
        """Checkpoint ``state`` with the epoch history, the open epoch's sums and the metrics offset."""
        record = {"history": history, "totals": totals,
                  "metrics_offset": metrics.offset() if metrics is not None else 0}
        checkpointer.save(state, progress=record, force=True)

    try:
        for epoch in range(start_epoch, epochs):
            first = epoch == start_epoch
            totals: dict[str, float] = dict(resumed_totals) if first and offset else {}
            timed_steps, timed_since = 0, None
            for batch in loader.epoch(epoch, start=offset if first else 0):
                if mesh is not None:
                    batch = shard_batch(batch, mesh)
                begin = time.perf_counter()
                state, step_metrics = train_step(state, batch)
                if compile_s is None:
                    jax.block_until_ready(step_metrics)
                    compile_s = time.perf_counter() - begin
                    if metrics is not None:
                        metrics.log(event="compile", step=host_step + 1, compile_s=compile_s)
                elif timed_since is None:
                    timed_since = begin
                else:
                    timed_steps += 1
                host_step += 1  # counted on the host: reading state.step would wait for the device
                pending.append((host_step, step_metrics))
                bar.update(1)
                due = checkpointer is not None and checkpointer.due(host_step) and host_step % steps_per_epoch
                if len(pending) >= log_every or due:
                    flush(epoch, totals)
                if due:
                    save(totals)
            flush(epoch, totals)
            jax.block_until_ready(state.params)
            count = max(totals.pop("_count", 0.0), 1.0)
            record: dict[str, float] = {"epoch": epoch + 1, "step": host_step}
            record.update({f"train_{k}": v / count for k, v in totals.items()})
            if timed_since is not None and timed_steps > 0:
                record["step_ms"] = 1000 * (time.perf_counter() - timed_since) / (timed_steps + 1)
            if compile_s is not None:
                record["compile_s"] = compile_s
            if eval_fn is not None:
                for k, v in eval_fn(state).items():
                    record[k if k.startswith(("val_", "test_")) else f"val_{k}"] = v.item() if hasattr(v, "item") else v
            history.append(record)
            if metrics is not None:
                metrics.log(**record)
            if checkpointer is not None and (epoch == epochs - 1 or checkpointer.due_at_epoch_end()):
                save({})
        if checkpointer is not None and checkpointer.latest_step() != int(state.step):
            save({})  # e.g. nothing was left to train after a resume from a mid-epoch checkpoint
    finally:
        bar.close()
    return state, history
