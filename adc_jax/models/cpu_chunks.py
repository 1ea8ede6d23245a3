"""How many items of a batch one CPU loop iteration takes, so large intermediates stay in cache.

A 2-core CPU step is bound by memory traffic far more than by arithmetic (it multiplies matrices
at ~300 GFLOP/s but copies at ~5 GB/s), so where a layer builds a tensor several times larger than
its input and output (the front end's frames and spectrum, BYOL-A block 1's pre-pooling
activations), looping over chunks of the batch with `lax.map` keeps that tensor in cache and gives
the same values faster. On accelerators, and when the batch is sharded over several devices, the
whole batch is taken at once.
"""

from __future__ import annotations

import jax


def items_per_chunk(n_items: int, item_size: int, budget: int) -> int:
    """The largest divisor of n_items with at most `budget` (in item_size's units) per chunk.

    Returns n_items (no chunking) off CPU or with more than one device, 1 if even one item is
    over budget.
    """
    if jax.default_backend() != "cpu" or jax.device_count() > 1:
        return n_items
    best = 1
    for c in range(1, n_items + 1):
        if n_items % c == 0 and c * item_size <= budget:
            best = c
    return best
