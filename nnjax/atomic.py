"""Writes that a kill cannot leave half done: a file or folder is written beside its final
name, then renamed over it, so a reader sees the old version or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nnjax.errors import NnjaxError

_RENAME_EXCHANGE = 2  # linux/fs.h


@contextlib.contextmanager
def staged_file(final: str | Path) -> Iterator[Path]:
    """A temporary path beside ``final`` (same suffix) to write; renamed over ``final`` when the
    block ends without error, deleted otherwise (``final`` is then untouched)."""
    final = Path(final)
    tmp = final.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling, flushed to disk, then renamed over it.

    A failure (disk full, read-only folder) raises one sentence; the previous file is intact.
    """
    path = Path(path)
    try:
        with staged_file(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise NnjaxError(
            f"Cannot write {str(path)!r} ({err.strerror or err}); free disk space or make the folder writable — "
            "the previous version of the file, if any, is intact."
        ) from None
    return path


def write_json(path: str | Path, value: Any) -> Path:
    """Strict JSON (no bare NaN / Infinity), written atomically with :func:`write_text`."""
    return write_text(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def replace_dir(new: Path, final: Path) -> None:
    """Put the folder ``new`` at ``final``, replacing an existing ``final`` without a moment when
    neither exists (an atomic exchange where the OS has one; else old -> backup, new -> final)."""
    new, final = Path(new), Path(final)
    if not final.exists():
        os.replace(new, final)
        return
    if _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old version
        return
    backup = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(final, backup)
    os.replace(new, final)
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``final``; when the block ends without error it replaces
    ``final`` in one step (:func:`replace_dir`), else it is deleted and ``final`` is untouched.

    Example::

        with staged_dir(out / "checkpoint") as tmp:
            write_everything_into(tmp)
    """
    final = Path(final).absolute()
    if final.exists() and not final.is_dir():
        raise NnjaxError(f"{str(final)!r} is a file; give a folder path instead.")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(final: str | Path) -> Path:
    """Put back ``final`` from its ``.NAME.old-*`` backup when a kill came between the two renames
    of :func:`replace_dir` (only where the OS has no atomic exchange); returns ``final``."""
    final = Path(final)
    if not final.exists() and final.parent.is_dir():
        backups = sorted(final.parent.glob(f".{final.name}.old-*"))
        if backups:
            os.replace(backups[-1], final)
    return final


def remove_stale_temporaries(folder: Path) -> None:
    """Clean up after writes a kill interrupted: backups are put back (:func:`recover_dir`), every
    other ``.NAME.tmp-*`` / ``.NAME.old-*`` leftover is deleted."""
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") and ".old-" in entry.name:
            recover_dir(folder / entry.name[1:].rsplit(".old-", 1)[0])
    for entry in folder.iterdir():
        if entry.name.startswith(".") and (".tmp-" in entry.name or ".old-" in entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
