"""The one checkpoint helper: orbax checkpoints of train states and exported models.

* :class:`Checkpointer` saves a :class:`~nnjax.train.state.TrainState` every N steps and
  at the end, keeps the last k, and restores the latest to resume a run exactly.
* :func:`save_model` / :func:`load_model` export trained variables with a JSON ``meta``
  (model name and config, preprocessing, labels) for ``nnjax eval`` / ``nnjax predict``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
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


MANIFEST_FILE = "nnjax_sha256.json"


def _reason(err: BaseException) -> str:
    """The innermost OS error's text in a chain of exceptions (orbax wraps them), else the error."""
    seen, current = set(), err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        current = current.__cause__ or current.__context__
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:160]}" if text else type(err).__name__


def _file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> hex digest), the manifest excluded."""
    import hashlib

    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_FILE:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            digests[str(path.relative_to(folder))] = digest.hexdigest()
    return digests


class DamagedCheckpointError(NnjaxError):
    """A checkpoint's files do not match the digests written with it, or orbax cannot read them."""


class Checkpointer:
    """Train-state checkpoints in ``directory/<step>/``, each with a JSON ``progress`` record.

    A checkpoint holds the :class:`~nnjax.train.state.TrainState` and, beside it in the same
    atomic orbax step, a JSON dict (the fit loop's epoch history and the metrics file's
    offset), plus a sha256 manifest of its files. Restoring tries the newest checkpoint
    first and falls back to the previous intact one with a one-line warning.

    Args:
      directory: folder of the checkpoints (created).
      every_steps: also save mid-epoch when ``state.step`` is a multiple of this (None: epoch
        ends and forced saves only).
      every_seconds: at an epoch end, save only when this many seconds passed since the last
        save (None or 0: every epoch end); the last epoch is always saved.
      keep: how many of the most recent checkpoints to keep (at least 2, so a damaged newest
        one has an intact predecessor).
      trainable: bool mask over ``state.params`` (``freeze.path_mask``); when given, only the
        trainable parameters are written (the frozen ones are restored from the template,
        which holds the same pretrained values).
    """

    def __init__(self, directory: str | Path, *, every_steps: int | None = None, every_seconds: float | None = None,
                 keep: int = 2, trainable: PyTree | None = None):
        ocp = _orbax()
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise NnjaxError(f"Checkpoint path {str(self.directory)!r} is a file; give a folder instead.")
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.trainable = trainable
        self._last_save = time.monotonic()
        options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 2), enable_async_checkpointing=False,
                                               create=True)
        if self.directory.is_dir():  # a save a kill interrupted: never finalised, so never a checkpoint
            for partial in self.directory.glob("*.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as err:
            raise NnjaxError(
                f"Cannot create the checkpoint folder {str(self.directory)!r} ({err.strerror}); "
                "choose a writable --out."
            ) from None

    def due(self, step: int) -> bool:
        """Whether ``step`` is one the periodic schedule saves mid-epoch."""
        return bool(self.every_steps) and step > 0 and step % self.every_steps == 0

    def due_at_epoch_end(self) -> bool:
        """Whether an epoch end saves now (every epoch, or once ``every_seconds`` have passed)."""
        return not self.every_seconds or time.monotonic() - self._last_save >= self.every_seconds

    def _stored(self, state: PyTree) -> PyTree:
        """What is written of ``state``: everything, or with frozen parameters left out."""
        if self.trainable is None:
            return state
        from nnjax.train.freeze import partition

        return state.replace(params=partition(state.params, self.trainable)[0])

    def save(self, state: PyTree, progress: dict[str, Any] | None = None, force: bool = False) -> bool:
        """Save ``state`` (and the JSON ``progress``) at ``state.step`` when due or ``force``; True when written.

        Ctrl-C / SIGTERM wait until the write is complete. A failed write (disk full, folder
        made read-only) raises one sentence naming the newest intact checkpoint.
        """
        from nnjax import interrupts

        ocp = _orbax()
        step = int(state.step)
        if not (force or self.due(step)) or step in self._manager.all_steps():
            return False
        previous = self._manager.latest_step()
        args = ocp.args.Composite(state=ocp.args.StandardSave(self._stored(state)),
                                  progress=ocp.args.JsonSave(progress or {}))
        with interrupts.deferred():
            try:
                self._manager.save(step, args=args, force=True)
                self._manager.wait_until_finished()
                folder = self.directory / str(step)
                (folder / MANIFEST_FILE).write_text(json.dumps(_file_digests(folder), indent=0) + "\n")
                self._last_save = time.monotonic()
            except Exception as err:
                kept = f"the checkpoint of step {previous} is intact" if previous is not None else \
                    "no earlier checkpoint exists"
                raise NnjaxError(
                    f"Could not write the checkpoint of step {step} to {str(self.directory)!r} ({_reason(err)}); "
                    f"{kept} — free disk space or make the folder writable, then rerun the same command to resume."
                ) from None
        return True

    def latest_step(self) -> int | None:
        """The newest saved step, or None when nothing is saved."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every saved step, oldest first."""
        return sorted(self._manager.all_steps())

    def _restore_step(self, template: PyTree, step: int) -> tuple[PyTree, dict[str, Any]]:
        ocp = _orbax()
        folder = self.directory / str(step)
        manifest = folder / MANIFEST_FILE
        if not manifest.is_file():
            raise DamagedCheckpointError("its sha256 manifest is missing")
        try:
            expected = json.loads(manifest.read_text())
        except (OSError, ValueError):
            raise DamagedCheckpointError("its sha256 manifest is unreadable") from None
        actual = _file_digests(folder)
        changed = sorted(set(expected) ^ set(actual) | {k for k in expected if actual.get(k) != expected[k]})
        if changed:
            raise DamagedCheckpointError(f"{len(changed)} file(s) differ from its manifest, e.g. {changed[0]}")
        stored = self._stored(template)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, stored)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()))
        except Exception as err:
            raise DamagedCheckpointError(f"orbax cannot read it ({_reason(err)})") from None
        state = restored.state
        if self.trainable is not None:
            from nnjax.train.freeze import combine, partition

            state = state.replace(params=combine(state.params, partition(template.params, self.trainable)[1]))
        return state, dict(restored.progress or {})

    def restore_with_progress(self, template: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """``(state, progress)`` of the newest intact checkpoint, shaped like ``template``.

        A damaged checkpoint (files not matching its manifest, or unreadable) is skipped with
        a one-line warning on stderr; when none is intact, one sentence says how to start afresh.
        """
        import sys

        steps = self.all_steps()
        if not steps:
            raise NnjaxError(f"No checkpoint in {str(self.directory)!r}; train first or check the path.")
        for position, step in enumerate(reversed(steps)):
            try:
                return self._restore_step(template, step)
            except DamagedCheckpointError as err:
                older = steps[-position - 2] if position + 1 < len(steps) else None
                then = f"falling back to step {older}" if older is not None else "no older checkpoint is left"
                print(f"nnjax: warning: the checkpoint of step {step} in {str(self.directory)!r} is damaged ({err}); "
                      f"{then}.", file=sys.stderr)
        raise NnjaxError(
            f"Every checkpoint in {str(self.directory)!r} is damaged; rerun with --overwrite to start afresh "
            "(or restore the folder from a backup)."
        )

    def restore(self, template: PyTree) -> PyTree:
        """The newest intact saved state, shaped like ``template`` (see :meth:`restore_with_progress`)."""
        return self.restore_with_progress(template)[0]

    def close(self) -> None:
        self._manager.close()


def save_model(directory: str | Path, variables: PyTree, meta: dict[str, Any],
               extra: Callable[[Path], None] | None = None) -> Path:
    """Export ``variables`` (e.g. ``{"params": ..., "batch_stats": ...}``) and ``meta`` to a folder.

    ``meta`` must be JSON-serialisable: model name, its config, preprocessing, labels.
    ``extra(folder)`` may add files (a tokenizer). The export is written beside an existing
    one and swapped in only when complete, so a kill never leaves the folder without a
    whole model; Ctrl-C / SIGTERM wait until the swap is done.
    """
    from nnjax import atomic, interrupts

    ocp = _orbax()
    directory = Path(directory).absolute()
    if directory.exists() and not directory.is_dir():
        raise NnjaxError(f"Model path {str(directory)!r} is a file; give a folder instead.")
    host = jax.tree_util.tree_map(np.asarray, variables)
    with interrupts.deferred():
        try:
            with atomic.staged_dir(directory) as staging:
                with ocp.StandardCheckpointer() as checkpointer:
                    checkpointer.save(staging / VARIABLES_DIR, host, force=True)
                (staging / META_FILE).write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
                if extra is not None:
                    extra(staging)
        except NnjaxError:
            raise
        except Exception as err:
            raise NnjaxError(
                f"Could not export the model to {str(directory)!r} ({_reason(err)}); the previous export, if any, "
                "is intact — free disk space or make the folder writable, then rerun the same command."
            ) from None
    return directory


def check_variables_fit(variables: PyTree, template: PyTree, where: str) -> None:
    """One sentence when ``variables`` do not have ``template``'s paths and shapes (another architecture).

    ``template``: the expected tree (arrays or ``jax.ShapeDtypeStruct``, e.g. from
    ``jax.eval_shape(model.init, ...)``).
    """
    from nnjax.train.freeze import leaf_path

    def shapes(tree: PyTree) -> dict[str, tuple[int, ...]]:
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {leaf_path(path): tuple(np.shape(leaf)) for path, leaf in flat}

    have, want = shapes(variables), shapes(template)
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or extra or wrong:
        if wrong:
            detail = f"{wrong[0]} has shape {have[wrong[0]]}, the model expects {want[wrong[0]]}"
        elif missing:
            detail = f"it lacks {missing[0]}"
        else:
            detail = f"it has {extra[0]}, which the model does not"
        raise NnjaxError(
            f"{where!r} holds variables of another architecture ({detail}); pass a checkpoint this meta.json "
            "describes, or export it again."
        )


def load_model(directory: str | Path, expected_model: str | None = None,
               template: Callable[[dict[str, Any]], PyTree] | None = None) -> tuple[PyTree, dict[str, Any]]:
    """``(variables, meta)`` from a folder written by :func:`save_model`.

    ``expected_model``, when given, must equal ``meta["model"]``; ``template(meta)``, when given,
    returns the variables tree the model that ``meta`` describes expects (shapes suffice), and
    the saved variables must fit it. A clear error for each, as for a damaged ``meta.json``
    or ``variables/`` folder.
    """
    from nnjax import atomic

    ocp = _orbax()
    directory = atomic.recover_dir(Path(directory).absolute())
    if not directory.is_dir():
        raise NnjaxError(f"Checkpoint folder {str(directory)!r} does not exist; pass the folder a run saved.")
    meta_path = directory / META_FILE
    if not meta_path.is_file() or not (directory / VARIABLES_DIR).is_dir():
        raise NnjaxError(
            f"{str(directory)!r} holds no exported model (no {META_FILE} and {VARIABLES_DIR}/); "
            "pass the 'checkpoint' folder inside a run's --out folder."
        )
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as err:
        raise NnjaxError(
            f"{str(meta_path)!r} is damaged ({err}); export the model again with the run's command."
        ) from None
    if expected_model is not None and meta.get("model") != expected_model:
        raise NnjaxError(
            f"{str(directory)!r} holds a {meta.get('model')!r} model, not {expected_model!r}; "
            "pass a checkpoint of the right experiment."
        )
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(directory / VARIABLES_DIR)
    except Exception as err:
        raise NnjaxError(
            f"The saved variables in {str(directory / VARIABLES_DIR)!r} are damaged or incomplete ({_reason(err)}); "
            "export the model again with the run's command."
        ) from None
    if template is not None:
        try:
            expected = template(meta)
        except (KeyError, TypeError, ValueError) as err:
            raise NnjaxError(
                f"{str(meta_path)!r} does not describe a model nnjax can build ({type(err).__name__}: {err}); "
                "export the model again with the run's command."
            ) from None
        check_variables_fit(variables, expected, str(directory))
    return variables, meta
