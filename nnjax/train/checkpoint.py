"""The one checkpoint helper: orbax checkpoints of train states and exported models.

* :class:`Checkpointer` saves a :class:`~nnjax.train.state.TrainState` every N steps and
  at the end, keeps the last k, and restores the latest to resume a run exactly.
* :func:`save_model` / :func:`load_model` export trained variables with a JSON ``meta``
  (model name and config, preprocessing, labels) for ``nnjax eval`` / ``nnjax predict``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nnjax.errors import NnjaxError

PyTree = Any
META_FILE = "meta.json"
VARIABLES_DIR = "variables"


def _orbax():
    import orbax.checkpoint as ocp

    return ocp


class Checkpointer:
    """Periodic train-state checkpoints in ``directory/<step>/`` (synchronous saves).

    Args:
      directory: folder of the checkpoints (created).
      every_steps: save when ``state.step`` is a multiple of this (None: only forced saves).
      keep: how many of the most recent checkpoints to keep.
    """

    def __init__(self, directory: str | Path, *, every_steps: int | None = None, keep: int = 3):
        ocp = _orbax()
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise NnjaxError(f"Checkpoint path {str(self.directory)!r} is a file; give a folder instead.")
        self.every_steps = every_steps
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def due(self, step: int) -> bool:
        """Whether ``step`` is one the periodic schedule saves."""
        return bool(self.every_steps) and step > 0 and step % self.every_steps == 0

    def save(self, state: PyTree, force: bool = False) -> bool:
        """Save ``state`` at ``state.step`` when due (or ``force``); True when written."""
        ocp = _orbax()
        step = int(state.step)
        if not (force or self.due(step)) or step in self._manager.all_steps():
            return False
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()
        return True

    def latest_step(self) -> int | None:
        """The newest saved step, or None when nothing is saved."""
        return self._manager.latest_step()

    def restore(self, template: PyTree, step: int | None = None) -> PyTree:
        """The saved state at ``step`` (default: latest), shaped like ``template``."""
        ocp = _orbax()
        step = self.latest_step() if step is None else step
        if step is None:
            raise NnjaxError(f"No checkpoint in {str(self.directory)!r}; train first or check the path.")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.close()


def save_model(directory: str | Path, variables: PyTree, meta: dict[str, Any]) -> Path:
    """Export ``variables`` (e.g. ``{"params": ..., "batch_stats": ...}``) and ``meta`` to a folder.

    ``meta`` must be JSON-serialisable: model name, its config, preprocessing, labels.
    An existing export in the folder is replaced.
    """
    ocp = _orbax()
    directory = Path(directory).absolute()
    if directory.exists() and not directory.is_dir():
        raise NnjaxError(f"Model path {str(directory)!r} is a file; give a folder instead.")
    directory.mkdir(parents=True, exist_ok=True)
    host = jax.tree_util.tree_map(np.asarray, variables)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / VARIABLES_DIR, host, force=True)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def load_model(directory: str | Path, expected_model: str | None = None) -> tuple[PyTree, dict[str, Any]]:
    """``(variables, meta)`` from a folder written by :func:`save_model`.

    ``expected_model``, when given, must equal ``meta["model"]``; a clear error otherwise.
    """
    ocp = _orbax()
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise NnjaxError(f"Checkpoint folder {str(directory)!r} does not exist; pass the folder a run saved.")
    meta_path = directory / META_FILE
    if not meta_path.is_file() or not (directory / VARIABLES_DIR).is_dir():
        raise NnjaxError(
            f"{str(directory)!r} holds no exported model (no {META_FILE} and {VARIABLES_DIR}/); "
            "pass the 'checkpoint' folder inside a run's --out folder."
        )
    meta = json.loads(meta_path.read_text())
    if expected_model is not None and meta.get("model") != expected_model:
        raise NnjaxError(
            f"{str(directory)!r} holds a {meta.get('model')!r} model, not {expected_model!r}; "
            "pass a checkpoint of the right experiment."
        )
    with ocp.StandardCheckpointer() as checkpointer:
        variables = checkpointer.restore(directory / VARIABLES_DIR)
    return variables, meta
