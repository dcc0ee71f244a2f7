"""Where data and weights live on this machine."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nnjax.errors import DataNotFoundError

DATA_ENV = "NNJAX_DATA_DIR"


def data_dir() -> Path:
    """The data root: ``$NNJAX_DATA_DIR`` when set, else ``~/.cache/nnjax/data``."""
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "nnjax" / "data"


def dataset_dir(name: str, hint: str = "") -> Path:
    """``data_dir()/name``; a clear error when the data root itself is missing."""
    root = data_dir()
    if os.environ.get(DATA_ENV) and not root.is_dir():
        raise DataNotFoundError(
            f"{DATA_ENV}={str(root)!r} is not a folder; point it at the data root "
            f"(for example ../shared/data){hint}."
        )
    return root / name


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> Path:
    """Return ``path`` when its SHA-256 is ``expected``; otherwise a clear error."""
    actual = sha256_of(path)
    if actual != expected:
        raise DataNotFoundError(
            f"{str(path)!r} has SHA-256 {actual[:12]}… but {expected[:12]}… was expected; "
            "delete it and download or reinstall it."
        )
    return Path(path)


def download(url: str, target: str | Path, sha256: str | None = None, timeout: float = 20.0) -> Path:
    """Download ``url`` to ``target`` (atomically), verifying ``sha256`` when given.

    Raises DataNotFoundError with one sentence when offline or the server fails.
    """
    import urllib.error
    import urllib.request

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        partial.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"Could not download {url} ({getattr(err, 'reason', err)}); check the network "
            f"or place the file at {str(target)!r} yourself."
        ) from None
    if sha256 is not None:
        try:
            verify_sha256(partial, sha256)
        except DataNotFoundError:
            partial.unlink(missing_ok=True)
            raise
    partial.replace(target)
    return target
