"""Data parallelism with ``jax.sharding``: one mesh over the batch axis, parameters replicated.

Every process contributes its local devices; a global batch is split along its first
axis over all devices of all processes. jit propagates these shardings, so the gradient
all-reduce is inserted by the compiler: the train step itself does not change (no pmap).

* one host, many devices: :func:`data_mesh` + :func:`shard_batch` (a local batch is the
  global batch);
* many hosts: each process loads its own rows (``ArrayLoader(..., shard=...)``) and
  :func:`shard_batch` assembles the global array from the per-process pieces.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nnjax.errors import NnjaxError

BATCH_AXIS = "batch"
PyTree = Any


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named ``batch`` over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices()) if devices is None else list(devices)
    return Mesh(np.array(devices), (BATCH_AXIS,))


def use_data_parallel(mesh: Mesh | None | bool = None) -> Mesh | None:
    """Resolve fit's ``mesh`` option: None -> a mesh when there is more than one device;
    False -> no sharding; a Mesh -> itself."""
    if mesh is False:
        return None
    if mesh is None or mesh is True:
        return data_mesh() if jax.device_count() > 1 else None
    return mesh


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every leaf of ``tree`` (e.g. a train state) on all devices of ``mesh``."""
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def shard_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Split each array of this process's ``batch`` along axis 0 over the mesh.

    With several processes, each passes its own rows and the result is the global batch
    (process 0's rows first). The per-process batch must divide evenly over the local
    devices; otherwise a clear error (pad the batch or pick a multiple).
    """
    local = len(mesh.local_devices)
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if value.shape[0] % local:
            raise NnjaxError(
                f"The batch of {value.shape[0]} rows does not divide over {local} devices; "
                f"choose a batch size that is a multiple of {local}."
            )
        out[name] = jax.make_array_from_process_local_data(sharding, value)
    return out
