"""C allocator settings applied once when nnjax is imported: XLA's buffers reuse memory, not fresh pages.

XLA:CPU allocates each execution's temporary buffer (every activation a train step keeps for its
backward pass) with ``posix_memalign`` and frees it when the execution ends. glibc serves any
request over 32 MB with a fresh ``mmap`` and returns it with ``munmap`` on free, so every step
touches all of those pages for the first time again: the kernel faults in and zeroes each 4 KiB
page. Measured on a 2-core Intel Xeon (AVX-512): the thesis CNN's step at batch 128 took
~19,900 page faults (~80 MB) per step and 112-126 ms; with the settings below 1,300 faults and
82-100 ms (medians of 30 steps, three processes each, alternating). MiniLM's fine-tuning step
(a 546 MB temporary buffer, ~137,000 faults per step) went to 0 faults; its time stayed within
this machine's noise (first-touching 546 MB costs ~90 ms of one core; the step is ~1.3-1.6 s).

The settings keep XLA's buffers in glibc's main heap, where a freed buffer is handed out again
with its pages still mapped:

* ``M_ARENA_MAX = 1``: every thread allocates from the main arena (a thread arena cannot hold a
  block over 64 MB and falls back to ``mmap``), so XLA's worker threads share it;
* ``M_MMAP_MAX = 0``: no request is served by ``mmap``;
* ``M_TRIM_THRESHOLD`` = 2 GiB: free memory at the top of the heap is returned to the system only
  beyond that much, so a step's buffer survives until the next step.

On a quiet machine ten reruns of a jitted program with a 64 MB temporary buffer faulted in 22
pages in all (163,944 without the settings); with two CPU-bound processes beside it, 1-7 of ten
reruns still got fresh pages, for a reason not found (not the order of frees: pausing between
reruns did not change it). ``tests/test_allocator.py`` checks the allocator itself: a 64 MB block
freed by a thread is handed out again with its pages mapped.

The cost: up to 2 GiB of freed memory stays with the process, and threads share one allocator
lock. Applied only on Linux with glibc, and only when ``NNJAX_MALLOC_DEFAULTS`` is not ``0``
(the opt-out). Threads that allocated before nnjax was imported keep their own arenas: import
nnjax before JAX starts (as for its XLA flag, :mod:`nnjax._xla`).
"""

from __future__ import annotations

import ctypes
import os
import sys

#: mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
#: Free memory at the top of the heap kept by the process (mallopt takes an int).
TRIM_THRESHOLD_BYTES = 2**31 - 1
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def running_on_glibc() -> bool:
    """Whether this process runs on Linux with glibc (the C library the process loaded, not a guess)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError):
        return False


def configure_allocator() -> bool:
    """Apply :data:`SETTINGS` with glibc's ``mallopt`` when it is safe; True when all were applied."""
    if os.environ.get("NNJAX_MALLOC_DEFAULTS", "1") == "0" or not running_on_glibc():
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
