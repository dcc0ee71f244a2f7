"""Multi-process training through JAX's own distributed runtime.

Each process calls :func:`initialize` before touching devices, with the coordinator's
``host:port``, the number of processes and its id (from flags or the environment:
``NNJAX_COORDINATOR``, ``NNJAX_NUM_PROCESSES``, ``NNJAX_PROCESS_ID``). After that,
``jax.devices()`` lists every process's devices and ``fit`` trains data-parallel over all
of them; each process loads only its shard (``ArrayLoader(..., shard=process_shard())``).
"""

from __future__ import annotations

import os

from nnjax.errors import NnjaxError


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Join the distributed runtime; returns False (nothing to do) for a single process.

    On CPU, collectives go through gloo, so several processes on one machine (or on
    hosts that reach each other) can train together.
    """
    import jax

    coordinator = coordinator or os.environ.get("NNJAX_COORDINATOR")
    num_processes = num_processes or int(os.environ.get("NNJAX_NUM_PROCESSES", "1"))
    env_id = os.environ.get("NNJAX_PROCESS_ID")
    process_id = process_id if process_id is not None else (int(env_id) if env_id is not None else None)
    if num_processes <= 1:
        return False
    if not coordinator or process_id is None:
        raise NnjaxError(
            "Multi-process training needs a coordinator address and a process id; pass --coordinator HOST:PORT "
            "and --process-id N (or set NNJAX_COORDINATOR and NNJAX_PROCESS_ID)."
        )
    if not 0 <= process_id < num_processes:
        raise NnjaxError(f"--process-id {process_id} is outside 0..{num_processes - 1}; number processes from 0.")
    # CPU collectives (ignored by GPU/TPU backends, which have their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=120)
    return True


def process_shard() -> tuple[int, int]:
    """``(process_index, process_count)``, for ``ArrayLoader(..., shard=...)``."""
    import jax

    return jax.process_index(), jax.process_count()
