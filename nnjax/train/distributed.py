"""Multi-process training through JAX's own distributed runtime.

Each process calls :func:`initialize` before touching devices, with the coordinator's
``host:port``, the number of processes and its id (from flags or the environment:
``NNJAX_COORDINATOR``, ``NNJAX_NUM_PROCESSES``, ``NNJAX_PROCESS_ID``). After that,
``jax.devices()`` lists every process's devices and ``fit`` trains data-parallel over all
of them; each process loads only its shard (``ArrayLoader(..., shard=process_shard())``).

Waiting for the other processes is bounded by ``NNJAX_DISTRIBUTED_TIMEOUT`` (60 s by default).
Measured with jax 0.10.2: when ``jax.distributed.initialize``'s ``initialization_timeout``
expires (process 0 without its peers, or a peer without its coordinator), XLA aborts the
process from C++ (SIGABRT, a ``Check failure`` stack trace) about 5 s later, and a coordinator
port already in use crashes process 0 (SIGSEGV); neither is a Python exception. So
:func:`initialize` checks what it can first (inputs, the port, the coordinator's reachability)
and ends a wait that runs past the deadline itself, with one sentence.
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
import threading
import time

from nnjax.errors import NnjaxError

TIMEOUT_ENV = "NNJAX_DISTRIBUTED_TIMEOUT"
#: seconds every process waits, in total, for all the others to join the coordinator.
TIMEOUT_S = 60.0
# XLA aborts (SIGABRT, uncatchable) about 5 s after its initialization_timeout; the watchdog below
# must come first, so XLA gets this many seconds more than nnjax's own deadline.
_XLA_MARGIN_S = 30


def _whole_number(value: int | str | None, flag: str, env: str, what: str) -> int | None:
    """``value`` (from ``flag``) or else ``$env``, as an int; one sentence when it is not a whole number."""
    source = flag
    if value is None:
        value, source = os.environ.get(env), env
        if value is None or not value.strip():
            return None
    if isinstance(value, bool) or not re.fullmatch(r"[+-]?\d+", str(value).strip()):
        raise NnjaxError(f"{source}={str(value)!r} is not a whole number; set it to {what}.")
    return int(str(value).strip())


def parse_coordinator(address: str, source: str = "--coordinator") -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``"[IPv6]:PORT"``) -> ``(host, port)``; one sentence naming ``source`` when malformed."""
    text = str(address).strip()
    found = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})", text) or re.fullmatch(r"([^:\s\[\]]+):(\d{1,5})", text)
    if not found or not 1 <= int(found.group(2)) <= 65535:
        raise NnjaxError(
            f"{source} {text!r} is not HOST:PORT with a port from 1 to 65535; give the address of process 0, "
            "for example 127.0.0.1:1234 (IPv6 in brackets: [::1]:1234)."
        )
    return found.group(1), int(found.group(2))


def _port_accepts(host: str, port: int, seconds: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``seconds`` in total (retrying while refused)."""
    from nnjax.data.paths import NetworkTimeoutError, with_deadline

    stop = threading.Event()

    def poll() -> bool:
        while not stop.is_set():
            try:
                with socket.create_connection((host, port), timeout=1.0):
                    return True
            except OSError:
                stop.wait(0.2)
        return False

    try:
        return with_deadline(poll, seconds, f"the connection to {host}:{port}", env=TIMEOUT_ENV, on_timeout=stop.set)
    except NetworkTimeoutError:
        return False


def _port_is_free(port: int) -> bool:
    """Whether this machine can listen on ``port`` on every address, as process 0's coordinator will."""
    try:
        if socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            server = socket.create_server(("", port))
    except OSError:
        return False
    server.close()
    return True


class _Watchdog:
    """After ``seconds``, unless :meth:`cancel` comes first: print ``message`` as nnjax's error line
    and end the process with status 2 (what the CLI does for an NnjaxError).

    ``jax.distributed.initialize`` blocks in C++ (with the GIL released) and, when its time-out
    expires, XLA aborts the whole process with a C++ stack trace; nothing in Python can catch
    that, so this thread speaks first.
    """

    def __init__(self, seconds: float, message: str):
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._message = message
        threading.Thread(target=self._watch, args=(seconds,), name="nnjax distributed watchdog", daemon=True).start()

    def _watch(self, seconds: float) -> None:
        if self._cancelled.wait(seconds):
            return
        with self._lock:
            if self._cancelled.is_set():
                return
            sys.stdout.flush()
            print(f"nnjax: error: {self._message}", file=sys.stderr, flush=True)
            os._exit(2)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: float | None = None,
) -> bool:
    """Join the distributed runtime; returns False (nothing to do) for a single process.

    On CPU, collectives go through gloo, so several processes on one machine (or on
    hosts that reach each other) can train together.

    Inputs come from the arguments or else from ``NNJAX_COORDINATOR`` (``HOST:PORT``),
    ``NNJAX_NUM_PROCESSES`` and ``NNJAX_PROCESS_ID``; a malformed one is an NnjaxError of one
    sentence. Every process waits at most ``timeout`` seconds in total (default
    ``$NNJAX_DISTRIBUTED_TIMEOUT``, else 60 s) for all ``num_processes`` to join: a process
    other than 0 first waits for the coordinator's port to accept connections (an NnjaxError
    when it never does); process 0 first checks that it can listen on that port. If the
    processes still do not all join in time, XLA would abort the process from C++ with a
    stack trace; instead nnjax prints ``nnjax: error: ...`` (one sentence) and exits with
    status 2 -- from a watchdog thread, because that wait cannot be interrupted from Python.
    """
    from nnjax.data.paths import seconds_from_env

    start = time.monotonic()
    source = "--coordinator" if coordinator else "NNJAX_COORDINATOR"
    coordinator = coordinator or os.environ.get("NNJAX_COORDINATOR") or None
    count = _whole_number(num_processes, "--num-processes", "NNJAX_NUM_PROCESSES", "the number of processes, e.g. 2")
    count = 1 if count is None else count
    pid = _whole_number(process_id, "--process-id", "NNJAX_PROCESS_ID", "this process's id, counting from 0")
    if count < 1:
        raise NnjaxError(f"The number of processes must be at least 1, not {count}; pass --num-processes N.")
    if count == 1:
        return False
    seconds = float(timeout) if timeout is not None else seconds_from_env(TIMEOUT_ENV, TIMEOUT_S)
    if not (math.isfinite(seconds) and seconds > 0):
        raise NnjaxError(f"The distributed time-out must be a positive number of seconds, not {timeout!r}.")
    if not coordinator or pid is None:
        raise NnjaxError(
            "Multi-process training needs a coordinator address and a process id; pass --coordinator HOST:PORT "
            "and --process-id N (or set NNJAX_COORDINATOR and NNJAX_PROCESS_ID)."
        )
    if not 0 <= pid < count:
        raise NnjaxError(f"--process-id {pid} is outside 0..{count - 1}; number processes from 0.")
    host, port = parse_coordinator(coordinator, source)
    more = f"or set {TIMEOUT_ENV} to wait longer than {seconds:g} s"
    if pid == 0 and not _port_is_free(port):
        raise NnjaxError(
            f"Process 0 cannot listen on port {port} for the coordinator {coordinator} (the port is in use); "
            "choose a free port for --coordinator on every process."
        )
    if pid > 0 and not _port_accepts(host, port, seconds):
        raise NnjaxError(
            f"Process {pid} could not reach the coordinator at {coordinator} within {seconds:g} s; start process 0 "
            f"with --coordinator {coordinator} --num-processes {count} --process-id 0 (or fix the address), {more}."
        )
    import jax

    # CPU collectives (ignored by GPU/TPU backends, which have their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    remaining = max(1.0, seconds - (time.monotonic() - start))
    watchdog = _Watchdog(remaining, (
        f"not all {count} processes joined the coordinator at {coordinator} within {seconds:g} s (this is process "
        f"{pid}); start every process 0..{count - 1} with --coordinator {coordinator} --num-processes {count} "
        f"and its own --process-id, {more}."
    ))
    try:
        jax.distributed.initialize(coordinator, num_processes=count, process_id=pid,
                                   initialization_timeout=math.ceil(remaining) + _XLA_MARGIN_S)
    except (RuntimeError, ValueError) as err:  # e.g. initialize called twice in one process
        raise NnjaxError(f"JAX's distributed runtime did not start ({err}); call initialize once per process.") \
            from None
    finally:
        watchdog.cancel()
    return True


def process_shard() -> tuple[int, int]:
    """``(process_index, process_count)``, for ``ArrayLoader(..., shard=...)``."""
    import jax

    return jax.process_index(), jax.process_count()
