"""One train step of `configs/late_sdd.py:smoke` on a fixed global batch, written to an .npz.

Run by `tests/test_multiprocess.py` in fresh processes (the device count is fixed at start-up by
`XLA_FLAGS=--xla_force_host_platform_device_count=N`, set by the caller):

  # reference: one process, one device, the whole global batch
  python tests/multiprocess_worker.py OUT.npz

  # one of several processes joined with jax.distributed; each feeds its rows of the batch
  python tests/multiprocess_worker.py OUT.npz --coordinator=localhost:PORT \
      --num-processes=2 --process-id=I

Every process builds the same global batch from a fixed seed and passes only its own rows
(`batch_size / num_processes` of them, in process order) to `sharding.global_batch`, exactly as
the training loop does with the rows of its data shard. The .npz holds the metrics and every
leaf of the initial and the updated state, fetched to the host with `multihost_utils.process_allgather`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

import numpy as np

from adc_jax.data.random_batch import random_batch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 8
VOCAB = 20


def smoke_config():
    """`configs/late_sdd.py:smoke` with a global batch of 8 and no warm-up (step 0 moves params)."""
    path = os.path.join(REPO_ROOT, "configs", "late_sdd.py")
    spec = importlib.util.spec_from_file_location("late_sdd_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("smoke")
    config.train.batch_size = BATCH
    config.train.warmup_steps = 0
    return config


def host_leaves(tree, prefix: str) -> dict[str, np.ndarray]:
    """{prefix/path: full host value} of every leaf of a (possibly multi-process) global tree."""
    import jax
    from jax.experimental import multihost_utils

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    values = multihost_utils.process_allgather([x for _, x in leaves], tiled=True)
    return {
        f"{prefix}/{jax.tree_util.keystr(path)}": np.asarray(v)
        for (path, _), v in zip(leaves, values, strict=True)
    }


def run_step(out_path: str) -> None:
    """Builds the state on the mesh of all devices, runs one step and writes the results."""
    import jax
    from jax.experimental import multihost_utils

    from adc_jax import sharding
    from adc_jax import step as step_lib

    config = smoke_config()
    # int16 audio, as the pipeline delivers it; rows differ, so misplaced rows change the loss.
    full = random_batch(config, VOCAB)
    rows = BATCH // jax.process_count()
    mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
    local = {k: v[mine] for k, v in full.items()}

    mesh = sharding.create_mesh()
    ts = step_lib.create_train_state(config, VOCAB, mesh)
    train_step = step_lib.jit_train_step(ts, config, mesh)
    batch = sharding.global_batch(local, mesh)
    # The rows each local device holds are the rows of the global batch at its index.
    for shard in batch["wav1"].addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), full["wav1"][shard.index])
    results = host_leaves(ts.state, "init")  # before the step: its input state is donated
    state, metrics = train_step(ts.rng_state, ts.state, batch)
    results.update(host_leaves(state, "state"))
    for k, v in multihost_utils.process_allgather(metrics, tiled=True).items():
        results[f"metric/{k}"] = np.asarray(v)
    results["process_count"] = np.int32(jax.process_count())
    results["device_count"] = np.int32(jax.device_count())
    results["batch_devices"] = np.int32(len(batch["wav1"].sharding.device_set))
    np.savez(out_path, **results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="Where to write the .npz of metrics and state.")
    parser.add_argument("--coordinator", help="host:port of process 0 (several processes).")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    args = parser.parse_args()
    if args.num_processes > 1:
        import jax

        # CPU collectives across processes need an implementation; gloo is jax 0.10's default,
        # named here so that an older or newer default cannot silently change the test.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=120,
        )
    run_step(args.out)


if __name__ == "__main__":
    main()
