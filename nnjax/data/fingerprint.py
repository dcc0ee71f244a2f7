"""Fingerprints of the data a run reads: sha256 digests of files and folder trees.

A run folder records them (``run.json``) so that a rerun on other data is refused instead
of resumed. Digests are memoised per process by ``(path, size, mtime)``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_MEMO: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """The sha256 hex digest of one file's bytes."""
    from nnjax.data.paths import sha256_of

    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _MEMO:
        _MEMO[key] = sha256_of(path)
    return _MEMO[key]


def folder_digest(root: str | Path) -> str:
    """One sha256 over every regular file under ``root``: relative paths and contents, sorted.

    Symbolic links to folders are not followed (a loop cannot make it run forever); FIFOs
    and other special files are left out.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_file():
                digest.update(f"{path.relative_to(root).as_posix()}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()
