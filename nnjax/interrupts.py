"""Ctrl-C and SIGTERM as one clean interruption, never in the middle of a write.

* :func:`install` makes SIGTERM (what schedulers send) raise :class:`KeyboardInterrupt`
  like Ctrl-C does, so both end a run the same way: one line, checkpoints kept.
* :func:`deferred` holds either signal back while a checkpoint or an export is being
  written (orbax's writer threads and event loop would otherwise print hundreds of lines
  of tracebacks and leave a half-written folder); the interruption is raised as soon as
  the write is complete.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_pending: list[int] = []
_depth = 0


def _handler(signum: int, frame: object) -> None:
    if _depth > 0:
        _pending.append(signum)
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> None:
    """Route SIGINT and SIGTERM through one handler (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handler)


def ignore_from_now() -> None:
    """Ignore further SIGINT / SIGTERM (a process that is already ending on an interrupt: more
    Ctrl-C presses would only print tracebacks from the interpreter's shutdown)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def installed() -> bool:
    """Whether SIGTERM is routed through this module (``nnjax`` commands install it)."""
    return signal.getsignal(signal.SIGTERM) is _handler


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM back inside the block; raise KeyboardInterrupt after it if one came.

    Nested blocks defer until the outermost one ends. Outside the main thread, or when the
    handlers are not installed, the block runs unchanged.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    own = all(h is _handler for h in previous.values())
    if not own:  # Python's default handler (or a user's): route through ours for the block
        for signum in previous:
            signal.signal(signum, _handler)
    _depth += 1
    try:
        yield
    except BaseException:
        if _depth == 1:
            _pending.clear()  # the block failed anyway: its own error is the one to report
        raise
    finally:
        _depth -= 1
        if not own:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    if _depth == 0 and _pending:
        signum = _pending[0]
        _pending.clear()
        raise KeyboardInterrupt(signal.Signals(signum).name)
