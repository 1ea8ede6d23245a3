"""Top-level functions for the worker processes of `tests/test_data_writer.py`.

Spawned workers unpickle the mapped function by module and name, so it cannot live in the test
file (pytest imports that under a name a fresh process may not resolve the same way); this small
module imports nothing heavy, so workers start fast.
"""

from __future__ import annotations

import os
import signal
import time

# The item on which `exit_on_17` / `kill_on_17` end their worker process.
FATAL_ITEM = 17


def square(x: int) -> int:
    return x * x


def exit_on_17(x: int) -> int:
    """x * x, except that item 17 ends the process with os._exit(3) (as a crashed decoder)."""
    if x == FATAL_ITEM:
        os._exit(3)
    return x * x


def kill_on_17(x: int) -> int:
    """x * x, except that item 17 SIGKILLs its own process (as the OOM killer would)."""
    if x == FATAL_ITEM:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


class Unlucky(KeyError):
    """An exception type of our own, to check it reaches the caller unchanged."""


def raise_on_5(x: int) -> int:
    if x == 5:
        raise Unlucky(f"item {x} is unlucky")
    return x


def slow_after_3(x: int) -> int:
    """Returns x at once for x < 4; later items take 60 s (an early exit must not wait)."""
    if x >= 4:
        time.sleep(60.0)
    return x
