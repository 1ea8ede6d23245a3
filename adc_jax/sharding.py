"""The device mesh and the shardings of parameters, optimizer state and batches.

One mesh over every device of every process with a single axis, "data". Batches are split along
their first axis over "data"; parameters and optimizer state follow `STATE_RULES`, a table of
(regex on the parameter path, PartitionSpec) checked in order. Today every rule replicates, i.e.
plain data parallelism. Sharding large kernels over "data" as well (FSDP) is a change of this
table, e.g. `(r".*decoder.*kernel", P(None, "data"))`, not of the training code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

# (regex on "/"-joined state path, PartitionSpec). First match wins; nothing matched = replicated.
STATE_RULES: tuple[tuple[str, P], ...] = ((r".*", P()),)
# `config.model.lm_fsdp`: the pretrained LM's matrices (kernels, token/position embeddings) and
# their Adam moments split over "data" along their last axis (the LM width n_embd or a multiple
# of it, so any device count dividing n_embd works); everything else replicated. XLA gathers a
# layer's weights where the step needs them (ZeRO-3 style) and reduces its gradients to shards.
LM_FSDP_RULES: tuple[tuple[str, P], ...] = (
    (r".*decoder/lm/.*/(kernel|embedding)(/value)?", P(None, DATA_AXIS)),
    (r".*", P()),
)


def create_mesh(devices: list | None = None) -> Mesh:
    """A 1-D ("data",) mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), devices=devices, axis_types=(jax.sharding.AxisType.Auto,)
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over "data"."""
    return NamedSharding(mesh, P(DATA_AXIS))


def _path_str(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def state_shardings(mesh: Mesh, abstract_state, rules: tuple[tuple[str, P], ...] = STATE_RULES):
    """NamedSharding for each leaf of a (possibly abstract) state pytree, following `rules`."""
    compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

    def choose(path, leaf):
        name = _path_str(path)
        for pattern, spec in compiled:
            if pattern.fullmatch(name):
                if len(spec) > getattr(leaf, "ndim", 0):
                    continue
                return NamedSharding(mesh, spec)
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(choose, abstract_state)


def _put(x, sharding: NamedSharding) -> jax.Array:
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
        # Typed PRNG keys have no NumPy form: place their raw data, then wrap it again.
        return jax.random.wrap_key_data(
            _put(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x)
        )
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put_replicated(tree, mesh: Mesh):
    """Host values identical on every process -> global replicated arrays (works multi-host)."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def put_state(tree, shardings):
    """Host state, identical on every process -> global arrays with the given shardings.

    Each device takes its own slice of the full host value, so this works for replicated and
    sharded (FSDP-style) rules alike, on one host or many.
    """
    return jax.tree.map(_put, tree, shardings)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's slice of the batch -> global arrays sharded over "data".

    Every process passes its own rows (batch_size / process_count of them); the result is one
    global array per field whose first axis is the global batch.
    """
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }
