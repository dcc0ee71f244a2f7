"""What this machine's CPU is: its name and the vector extensions XLA and PyTorch pick kernels by.

Used for benchmark provenance (a table from an AVX2 machine and one from an AVX-512/AMX machine
differ for that reason) and to keep compiled executables of one CPU away from another.
"""

from __future__ import annotations

import hashlib
import platform
from functools import cache
from pathlib import Path

# The extensions that change which kernels run (oneDNN, Eigen, XLA's LLVM target), in a stable order.
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")


@cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU's model name, e.g. ``'AMD EPYC 7B13'``."""
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine()


def vector_extensions() -> list[str]:
    """The kernel-relevant vector extensions this CPU reports (``VECTOR_EXTENSIONS`` order)."""
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    return [ext for ext in VECTOR_EXTENSIONS if ext in flags]


def cpu_tag() -> str:
    """A short stable name for this CPU kind: architecture + a digest of its model name and extensions."""
    text = "|".join([platform.machine(), cpu_name(), *vector_extensions()])
    return f"{platform.machine()}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
