"""Agreement between the processes of a multi-host run; each is a no-op with one process.

Every function here is a collective when `jax.process_count() > 1`: every process must call it at
the same point of the run, or the others wait for it forever.
"""

from __future__ import annotations

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
