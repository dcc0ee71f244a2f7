"""Where data and weights live on this machine."""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from nnjax.errors import DataNotFoundError, NnjaxError

DATA_ENV = "NNJAX_DATA_DIR"
#: seconds one network look-up (a hub query, a probe, a download's connection and headers) may take in total.
NETWORK_TIMEOUT_ENV = "NNJAX_NETWORK_TIMEOUT"
NETWORK_TIMEOUT_S = 15.0
#: seconds one whole download (every byte of one file, or one hub snapshot) may take in total.
DOWNLOAD_TIMEOUT_ENV = "NNJAX_DOWNLOAD_TIMEOUT"
DOWNLOAD_TIMEOUT_S = 600.0
_CHUNK = 1 << 16

T = TypeVar("T")


class NetworkTimeoutError(DataNotFoundError):
    """A network call did not finish within its total deadline (the message names it and the env var)."""


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


def seconds_from_env(name: str, default: float) -> float:
    """``$name`` as a positive number of seconds, ``default`` when unset; one clear sentence when it is not."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise NnjaxError(f"{name}={value!r} is not a positive number of seconds; set it to, for example, 60.")
    return seconds


def network_timeout(default: float = NETWORK_TIMEOUT_S) -> float:
    """Total seconds one network look-up may take: ``$NNJAX_NETWORK_TIMEOUT`` when set, else ``default``."""
    return seconds_from_env(NETWORK_TIMEOUT_ENV, default)


def download_timeout(default: float = DOWNLOAD_TIMEOUT_S) -> float:
    """Total seconds one whole download may take: ``$NNJAX_DOWNLOAD_TIMEOUT`` when set, else ``default``."""
    return seconds_from_env(DOWNLOAD_TIMEOUT_ENV, default)


def with_deadline(
    fn: Callable[[], T], seconds: float, what: str, *, env: str = NETWORK_TIMEOUT_ENV,
    on_timeout: Callable[[], None] | None = None,
) -> T:
    """``fn()``, or NetworkTimeoutError when it has not returned within ``seconds`` in total.

    ``fn`` runs in a daemon thread, so a call blocked in a socket (a server that accepts and
    never answers, or trickles one byte at a time) cannot hold the caller past the deadline;
    on time-out the thread is abandoned (``on_timeout`` runs first, e.g. to tell it to stop) and
    dies with the process. ``fn``'s own exceptions are re-raised unchanged. ``what`` names the
    call in the error ("the Hugging Face hub look-up of 'x'"); ``env`` is the variable to raise.
    """
    outcome: dict[str, object] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as err:  # handed to the caller below
            outcome["error"] = err
        finally:
            done.set()

    threading.Thread(target=target, name=f"nnjax deadline: {what}", daemon=True).start()
    if not done.wait(seconds):
        if on_timeout is not None:
            on_timeout()
        raise NetworkTimeoutError(
            f"{what[:1].upper()}{what[1:]} did not finish within {seconds:g} s (the server does not answer or is "
            f"too slow); check the network, or set {env} to more seconds."
        )
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def download(
    url: str, target: str | Path, sha256: str | None = None, timeout: float = 20.0, deadline: float | None = None
) -> Path:
    """Download ``url`` to ``target`` (atomically), verifying ``sha256`` when given.

    ``timeout`` bounds each socket operation; ``deadline`` (default :func:`download_timeout`,
    600 s unless ``$NNJAX_DOWNLOAD_TIMEOUT`` says otherwise) bounds the whole download, headers
    and every byte, so a server that trickles data cannot hang the caller. Raises
    DataNotFoundError (NetworkTimeoutError past the deadline) with one sentence when offline or
    the server fails; no partial file is left at ``target`` or beside it.
    """
    import http.client
    import urllib.error
    import urllib.request

    total = download_timeout() if deadline is None else float(deadline)
    start = time.monotonic()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    stop = threading.Event()
    # Opened here, never by path in the worker, so an abandoned worker cannot re-create it after clean-up.
    out = open(partial, "wb")  # noqa: SIM115 (closed by the worker)

    def fetch() -> None:
        with out, urllib.request.urlopen(url, timeout=min(timeout, total)) as response:
            expected = response.headers.get("Content-Length")
            read = getattr(response, "read1", response.read)  # read1: whatever arrived, not a full chunk
            size = 0
            while block := read(_CHUNK):
                if stop.is_set() or time.monotonic() - start > total:
                    raise TimeoutError("past the deadline")
                out.write(block)
                size += len(block)
            if expected is not None and expected.isdigit() and size != int(expected):
                raise OSError(f"the server sent {size} of {int(expected)} bytes")

    try:
        with_deadline(fetch, total, f"the download of {url}", env=DOWNLOAD_TIMEOUT_ENV, on_timeout=stop.set)
    except NetworkTimeoutError:
        partial.unlink(missing_ok=True)
        raise NetworkTimeoutError(
            f"Could not download {url} within {total:g} s (the server does not answer or is too slow); check the "
            f"network, set {DOWNLOAD_TIMEOUT_ENV} to more seconds, or place the file at {str(target)!r} yourself."
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError, ValueError) as err:
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
