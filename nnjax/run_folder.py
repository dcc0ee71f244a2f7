"""A run folder belongs to one run: what defines the run is recorded, a second live run is locked out.

``run.json`` in the folder records the run's **definition** -- experiment, seed, resolved
config, nnjax's version and source digest, and the fingerprints of the data and weights it
reads -- its status (``running`` / ``complete``) and one entry per process that worked on it.
:func:`claim` decides what a new ``nnjax run`` may do there:

============================  =============================  ==========================
folder holds                  same definition                other definition
============================  =============================  ==========================
nothing (or foreign files)    start                          start
an unfinished run             resume from its checkpoints    refuse, naming the fields
a finished run                report it, train nothing       refuse, naming the fields
============================  =============================  ==========================

``mode="overwrite"`` (``--overwrite``) deletes the earlier run and starts afresh;
``mode="resume"`` (``--resume``) insists on an earlier run to continue. An exclusive
``flock`` on ``.nnjax-run.lock`` refuses a second live run on the same folder; the kernel
drops the lock when its process dies, so a killed run never leaves the folder stuck.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Literal

from nnjax import atomic
from nnjax.errors import NnjaxError

RUN_FILE = "run.json"
LOCK_FILE = ".nnjax-run.lock"
#: entries an nnjax run writes; a folder holding one of them but no run.json is an older run
RUN_ENTRIES = ("summary.json", "metrics.jsonl", "config.json", "train_state", "checkpoint", "cache")
Mode = Literal["auto", "resume", "overwrite"]


def code_version() -> str:
    """nnjax's version and a short sha256 of its source (``nnjax/`` and ``experiments/``), e.g.
    ``"0.1.0+3f2a9c1d0b7e"``: a run resumes only under the code that started it."""
    import experiments
    import nnjax

    digest = hashlib.sha256()
    for package in (nnjax, experiments):
        base = Path(package.__file__).parent
        for path in sorted(base.rglob("*.py")):
            digest.update(f"{package.__name__}/{path.relative_to(base).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return f"{nnjax.__version__}+{digest.hexdigest()[:12]}"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


_LABELS = {"code": "nnjax code", "seed": "seed", "experiment": "experiment"}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable ``"field (old -> new)"`` items where two definitions differ."""
    before, after = _flatten(old), _flatten(new)
    items = []
    rank = {"seed": 0, "config": 1, "experiment": 2, "code": 3, "data": 4}
    for key in sorted(set(before) | set(after), key=lambda k: (rank.get(k.split(".")[0], 5), k)):
        if before.get(key) != after.get(key):
            name = _LABELS.get(key) or key.removeprefix("config.").replace("_", "-")
            if key.startswith("data."):
                name = f"data {key[5:]}"
            show = [_short(before.get(key, "unset")), _short(after.get(key, "unset"))]
            items.append(f"{name} ({show[0]} -> {show[1]})")
    return items


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:10] + "..." + text[-6:]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class RunFolder:
    """A claimed run folder, locked for this process until :meth:`release`.

    Attributes:
      path: the folder.
      status: ``"new"`` (nothing to resume), ``"resume"`` (an unfinished run continues) or
        ``"complete"`` (the same run already finished: nothing to train).
      record: the ``run.json`` content.
    """

    def __init__(self, path: Path, lock_fd: int, status: str, record: dict[str, Any]):
        self.path, self._lock_fd, self.status, self.record = path, lock_fd, status, record

    @property
    def attempt(self) -> int:
        """How many processes have worked on this run, this one included."""
        return len(self.record.get("attempts", []))

    def _write(self) -> None:
        atomic.write_json(self.path / RUN_FILE, self.record)

    def begin(self) -> None:
        """Record this process as the run's newest attempt (status ``running``)."""
        self.record["status"] = "running"
        self.record.setdefault("attempts", []).append(
            {"started": _now(), "pid": os.getpid(), "host": socket.gethostname()})
        self._write()

    def finish(self, seconds: float) -> None:
        """Mark the run complete; ``seconds`` is this process's wall time."""
        self.record["status"] = "complete"
        self.record["attempts"][-1].update(finished=_now(), seconds=round(seconds, 2))
        self._write()

    def seconds_all_attempts(self) -> float:
        """Wall seconds summed over every process that worked on the run (unfinished ones count 0)."""
        return round(sum(float(a.get("seconds", 0.0)) for a in self.record.get("attempts", [])), 2)

    def release(self) -> None:
        """Drop the lock (also dropped by the kernel if the process dies)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _lock(path: Path) -> int:
    """An exclusive, non-blocking flock on ``path/LOCK_FILE``; one sentence when held or not writable."""
    lock_path = path / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise NnjaxError(
            f"Cannot write into the output folder {str(path)!r} ({err.strerror}); choose a writable --out."
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise NnjaxError(
            f"{str(path)!r} is in use by a live nnjax run ({holder}); wait for it to finish or choose another --out."
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {_now()}".encode(), 0)
    except OSError as err:
        os.close(fd)
        raise NnjaxError(
            f"Cannot write into the output folder {str(path)!r} ({err.strerror}); choose a writable --out."
        ) from None
    return fd


def _clear(path: Path) -> None:
    """Delete everything in a run folder but its lock."""
    for entry in path.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def claim(out: str | Path, definition: dict[str, Any], mode: Mode = "auto") -> RunFolder:
    """Lock ``out`` for this process and decide whether the run starts, resumes or is already complete.

    Raises :class:`NnjaxError` (one sentence) when another live run holds the folder, when the
    folder holds a different run (naming the differing fields), or when ``mode="resume"`` finds
    nothing to resume.
    """
    from nnjax.experiment import prepare_out_dir

    path = prepare_out_dir(out)
    fd = _lock(path)
    try:
        status, record = _decide(path, definition, mode)
    except BaseException:
        os.close(fd)
        raise
    return RunFolder(path, fd, status, record)


def _decide(path: Path, definition: dict[str, Any], mode: Mode) -> tuple[str, dict[str, Any]]:
    fresh = {"definition": definition, "status": "new", "created": _now(), "attempts": []}
    run_file = path / RUN_FILE
    where = str(path)
    hint = "pass --overwrite to start afresh there (deleting it) or choose a new --out"
    if not run_file.is_file():
        older = [name for name in RUN_ENTRIES if (path / name).exists()]
        if older and mode != "overwrite":
            raise NnjaxError(f"{where!r} holds a run without a run record ({older[0]}, written by an earlier "
                             f"nnjax); {hint}.")
        if mode == "resume":
            raise NnjaxError(f"There is no run to resume in {where!r}; run without --resume to start one.")
        if older:
            _clear(path)
        return "new", fresh
    try:
        record = json.loads(run_file.read_text())
        old = record["definition"]
    except (OSError, ValueError, KeyError, TypeError):
        if mode != "overwrite":
            raise NnjaxError(f"{where!r}'s {RUN_FILE} is damaged; {hint}.") from None
        _clear(path)
        return "new", fresh
    if mode == "overwrite":
        _clear(path)
        return "new", fresh
    changed = differences(old, definition)
    if changed:
        listed = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise NnjaxError(f"{where!r} holds a different run ({listed}); {hint}.")
    atomic.remove_stale_temporaries(path)
    if record.get("status") == "complete":
        return "complete", record
    return ("resume" if record.get("attempts") else "new"), record
