"""`model.lm_fsdp`: the GPT-2 decoder's matrices and Adam moments sharded over 8 CPU devices give
the same losses and parameters as replicating them (plain data parallelism), to float32 rounding."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO_ROOT

SCRIPT = r"""
import sys
import jax, numpy as np
from adc_jax import sharding, step
from adc_jax import config as config_lib
from adc_jax.data.random_batch import random_batch
from adc_jax.models import tiny_gpt2
from tests.conftest import load_config

lm_dir, out = sys.argv[1], sys.argv[2]
tiny_gpt2.write_tiny_gpt2(lm_dir, "smoke", ["add a dog barking", "remove the rain"] * 20)
assert jax.device_count() == 8
mesh = sharding.create_mesh()
results = {}
for fsdp in (False, True):
    c = load_config("late_sdd_gpt2", "smoke")
    c.model.lm_path, c.model.lm_fsdp, c.model.dropout = lm_dir, fsdp, 0.0
    c.train.batch_size = 8
    config_lib.validate(c, num_devices=8)
    vocab = 4 + 384
    ts = step.create_train_state(c, vocab, mesh)
    fn = step.jit_train_step(ts, c, mesh)
    batch = sharding.global_batch(random_batch(c, vocab, batch_size=8, seed=0, caption_words=8), mesh)
    state, losses = ts.state, []
    for _ in range(3):
        state, metrics = fn(ts.rng_state, state, batch)
        losses.append(float(metrics["loss"]))
    leaf = state["model"]["decoder"]["lm"]["h"][0]["mlp"]["c_fc"]["kernel"][...]
    results[f"sharded_{int(fsdp)}"] = np.array(
        not leaf.sharding.is_fully_replicated
    )
    results[f"losses_{int(fsdp)}"] = np.array(losses)
    flat = jax.tree.leaves(state["model"])
    results[f"params_{int(fsdp)}"] = np.concatenate([np.asarray(x).ravel() for x in flat])
np.savez(out, **results)
"""


def test_fsdp_equals_replication_on_8_cpu_devices(tmp_path):
    script = tmp_path / "fsdp.py"
    script.write_text(SCRIPT)
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "lm"), str(out)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    r = np.load(out)
    assert not r["sharded_0"] and r["sharded_1"]  # FSDP really splits the LM's kernels
    np.testing.assert_allclose(r["losses_1"], r["losses_0"], rtol=1e-5)
    # Sums are taken in another order once the LM is sharded, so a parameter whose gradient is
    # rounding noise (~0) can take an Adam step (about the learning rate, 1e-3) of another sign:
    # 36 of 64,672 values in the run this test was written with. Everything else agrees to 1e-5.
    diff = np.abs(r["params_1"] - r["params_0"])
    assert diff.max() <= 3 * 1e-3 * 1.01  # 3 steps of at most the learning rate
    assert np.mean(diff <= 1e-5) >= 0.995
