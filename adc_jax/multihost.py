"""Agreement between the processes of a multi-host run; each is a no-op with one process.

Every function here is a collective when `jax.process_count() > 1`: every process must call it at
the same point of the run, or the others wait for it forever (`several_processes` and
`initialize`, which start a multi-process run, excepted).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils


def sync(name: str) -> None:
    """Waits until every process has reached the barrier `name`."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on at least one of them."""
    if jax.process_count() == 1:
        return flag
    return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def first_process_says(flag: bool) -> bool:
    """Process 0's `flag`, on every process (so all of them take the same branch)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def several_processes() -> bool:
    """Whether the environment describes a run of several processes (SLURM, a TPU pod slice,
    JAX_COORDINATOR_ADDRESS or JAX_NUM_PROCESSES > 1)."""
    env = os.environ
    return (
        int(env.get("SLURM_NTASKS", "1")) > 1
        or "JAX_COORDINATOR_ADDRESS" in env
        or int(env.get("JAX_NUM_PROCESSES", "1")) > 1
        or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    )


def initialize(multiprocess: bool | None) -> None:
    """Calls `jax.distributed.initialize()` when `multiprocess` is True, or when it is None and
    `several_processes()`; JAX_NUM_PROCESSES / JAX_PROCESS_ID are passed on if set (jax reads
    JAX_COORDINATOR_ADDRESS and the SLURM/TPU variables itself)."""
    if multiprocess is None:
        multiprocess = several_processes()
    if not multiprocess:
        return
    env = os.environ
    jax.distributed.initialize(
        num_processes=int(env["JAX_NUM_PROCESSES"]) if "JAX_NUM_PROCESSES" in env else None,
        process_id=int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None,
    )
