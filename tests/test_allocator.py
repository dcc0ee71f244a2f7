"""nnjax's allocator settings (``nnjax._malloc``): a large block freed by a thread is handed out again
with its pages still mapped, instead of being unmapped and faulted in afresh."""

import os
import subprocess
import sys

import pytest

from nnjax._malloc import configure_allocator, running_on_glibc

# In a new thread (XLA's buffers are allocated by its worker threads): allocate a 64 MB block, write
# it, free it, twice; print the page faults of each round.
CODE = """
import ctypes, resource, threading
import nnjax  # noqa: F401

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 64 * 2**20
rounds = []

def allocate_write_free_twice():
    for value in (1, 2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(SIZE)
        ctypes.memset(block, value, SIZE)
        libc.free(block)
        rounds.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

thread = threading.Thread(target=allocate_write_free_twice)
thread.start()
thread.join()
print(*rounds)
"""

needs_glibc = pytest.mark.skipif(not running_on_glibc(), reason="the settings apply to glibc on Linux")
BLOCK_PAGES = 64 * 2**20 // 4096


def _faults_per_round(**env_extra: str) -> list[int]:
    env = {k: v for k, v in os.environ.items() if k != "NNJAX_MALLOC_DEFAULTS"}
    env.update(env_extra)
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return [int(n) for n in result.stdout.split()]


@needs_glibc
def test_a_freed_block_is_reused_with_its_pages():
    _, second = _faults_per_round()
    assert second < BLOCK_PAGES / 20  # reused (measured: 0 pages of 16,384; the first round 16,068)


def _huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as handle:
            return "[always]" in handle.read()
    except OSError:
        return False


@needs_glibc
@pytest.mark.skipif(_huge_pages_always(), reason="with transparent huge pages always on, a fresh block faults little")
def test_without_the_settings_glibc_maps_the_block_afresh():
    _, second = _faults_per_round(NNJAX_MALLOC_DEFAULTS="0")
    assert second > BLOCK_PAGES / 2  # glibc's default: every block over 32 MB is a new mmap


@needs_glibc
def test_the_settings_are_applied_unless_the_user_opts_out(monkeypatch):
    monkeypatch.setenv("NNJAX_MALLOC_DEFAULTS", "0")
    assert configure_allocator() is False
    monkeypatch.delenv("NNJAX_MALLOC_DEFAULTS")
    assert configure_allocator() is True  # the same settings again: glibc accepts them
