"""A training stage: what trains, with which optimizer and schedule, for how many epochs.

A transfer recipe is a list of stages (the head on a frozen backbone, then the top groups at a
low learning rate, ...); :func:`nnjax.transfer.recipe.fit_stages` runs them through the one
``make_train_step`` and ``fit``.
"""

from __future__ import annotations

import dataclasses
import math

import optax

from nnjax.errors import NnjaxError

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a recipe.

    Attributes:
      name: its name in metrics lines, checkpoints (``train_state/NAME``) and summaries.
      train: ``"head"``, ``"top-k"`` (the head and the top ``top_k`` backbone groups), ``"all"``, or a
        regex over parameter paths (``backbone/<group>/...``, ``head/...``).
      top_k: groups trained by ``"top-k"``.
      optimizer: ``"adam"`` or ``"adamw"`` (decoupled weight decay on matrices, see ``nnjax.nn.optim``).
      learning_rate: peak learning rate.
      weight_decay: AdamW's lambda.
      schedule: ``"constant"``, or ``"cosine"`` (linear warm-up over ``warmup`` of the steps, then
        cosine decay to 1 % of the peak).
      warmup: fraction of the stage's steps spent warming up (cosine schedule).
      epochs: passes over the training examples (0 skips the stage).
      batch_size: examples per step.
      augment: images: random augmentation inside the step (the backbone then runs every step).
      cache: compute the inputs of the first trainable group once when nothing upstream trains
        (False: the frozen groups run in every step too).
      label_smoothing: probability mass spread evenly over the classes in the loss.
    """

    name: str
    train: str = "head"
    top_k: int = 1
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    schedule: str = "constant"
    warmup: float = 0.0
    epochs: int = 1
    batch_size: int = 32
    augment: bool = False
    cache: bool = True
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise NnjaxError(f"Stage {self.name!r}: the optimizer must be adam or adamw, got {self.optimizer!r}.")
        if self.schedule not in SCHEDULES:
            raise NnjaxError(f"Stage {self.name!r}: the schedule must be constant or cosine, got {self.schedule!r}.")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise NnjaxError(f"Stage {self.name!r}: the learning rate must be a positive number.")
        if self.epochs < 0 or self.batch_size < 1 or not 0 <= self.warmup < 1 or self.weight_decay < 0:
            raise NnjaxError(f"Stage {self.name!r}: epochs >= 0, batch size >= 1, warm-up in [0, 1) and "
                             "weight decay >= 0, please.")
        if not 0 <= self.label_smoothing < 1:
            raise NnjaxError(f"Stage {self.name!r}: label smoothing must be in [0, 1).")

    def learning_rate_schedule(self, total_steps: int) -> optax.ScalarOrSchedule:
        """The stage's learning rate: a constant, or warm-up + cosine over ``total_steps``."""
        if self.schedule == "constant":
            return self.learning_rate
        warmup = int(self.warmup * total_steps)
        return optax.warmup_cosine_decay_schedule(0.0, self.learning_rate, max(warmup, 0),
                                                  max(total_steps, warmup + 1), end_value=self.learning_rate * 0.01)

    def make_optimizer(self, total_steps: int) -> optax.GradientTransformation:
        """nnjax's Adam or AdamW (from their equations, ``nnjax.nn.optim``) with the stage's schedule."""
        from nnjax.nn.optim import adam, adamw, decay_mask

        rate = self.learning_rate_schedule(total_steps)
        if self.optimizer == "adamw":
            return adamw(rate, weight_decay=self.weight_decay, mask=decay_mask)
        return adam(rate)
