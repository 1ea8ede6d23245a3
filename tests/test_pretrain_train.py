"""Tests of BYOL-A pretraining end to end (`adc_jax.pretrain.train` and its command line): the
`:smoke` command line run, the exported encoder (loaded by `byola.load_pretrained` and by the
captioner's model through `model.byola_init`), exact resume after SIGTERM, 8 devices against 1.

One module-wide setup builds the smoke clips once and shares a persistent JAX compilation
cache between the command-line run (a subprocess) and the in-process runs, so the step compiles
once. The 8-device comparison runs in its own subprocess from the start of the module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from adc_jax import checkpointing
from adc_jax import config as config_lib
from adc_jax import step as step_lib
from adc_jax.models import byola
from adc_jax.pretrain import clips
from adc_jax.pretrain import config as pretrain_config_lib
from adc_jax.pretrain import step as pretrain_step
from adc_jax.pretrain import train as pretrain

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(REPO_ROOT, "configs", "byola_pretrain.py")
STEPS = 6  # the smoke size: checkpoints at 3 and 6
N_DEVICES = 8


def load_config(name: str = "byola_pretrain", arg: str | None = "smoke"):
    spec = importlib.util.spec_from_file_location(
        f"configs_{name}", f"{REPO_ROOT}/configs/{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def run_config(data_dir: str):
    """The config of every run here: `:smoke`, the shared data, metrics every step."""
    config = load_config()
    config.data.data_dir = data_dir
    config.train.log_every = 1
    return config


def checkpoint_state(workdir: str, step: int) -> dict[str, np.ndarray]:
    with ocp.StandardCheckpointer() as ckpt:
        tree = ckpt.restore(os.path.join(workdir, "checkpoints", str(step), "state"))
    return {
        jax.tree_util.keystr(p): np.asarray(x)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def train_lines(workdir: str) -> dict[int, dict]:
    """step -> train/* values of metrics.jsonl (throughput, a timing, left out)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            assert record["step"] not in out, f"step {record['step']} logged twice"
            out[record["step"]] = {k: v for k, v in record.items() if k != "train/clips_per_second"}
    return out


# Run with 8 forced CPU devices: one step on a 1-device and an 8-device mesh from the same state
# (its mixup memory filled with random segments, so the step mixes) and batch. argv: the config
# file, the output .npz.
MULTI_DEVICE_SCRIPT = """
import importlib.util, sys
import jax
import numpy as np
from adc_jax import sharding
from adc_jax.pretrain import step as pretrain_step

assert len(jax.devices()) == 8, jax.devices()
spec = importlib.util.spec_from_file_location("c", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
config = module.get_config("smoke")
rng = np.random.default_rng(0)
n = int(config.data.clip_seconds * config.data.sample_rate)
wav = (3000 * rng.normal(size=(8, n))).astype(np.int16)
lengths = np.array([n, n, n, n // 3, n, n // 2, n, n], np.int32)
wav[np.arange(n)[None] >= lengths[:, None]] = 0
batch = {"wav": wav, "wav_len": lengths}
size = config.pretrain.mixup_memory
memory = rng.normal(size=(size, config.pretrain.segment_frames, config.model.n_mels))
results = {}
for count in (1, 8):
    mesh = sharding.create_mesh(jax.devices()[:count])
    ts = pretrain_step.create_pretrain_state(config, mesh, norm_stats=(-2.0, 3.0))
    host = jax.tree.map(np.array, jax.device_get(ts.state))
    host["buffers"]["memory"].set_value(memory.astype(np.float32))
    host["buffers"]["filled"].set_value(np.int32(size))
    state = sharding.put_state(host, ts.shardings)
    step = pretrain_step.jit_pretrain_step(ts, config, mesh)
    global_batch = sharding.global_batch(batch, mesh)
    assert len(global_batch["wav"].sharding.device_set) == count
    state, metrics = step(ts.rng_state, state, global_batch)
    for k, v in metrics.items():
        results[f"{count}/metric/{k}"] = np.asarray(v)
    leaf = jax.tree_util.tree_leaves(state)[0]
    results[f"{count}/state_devices"] = np.int32(len(leaf.sharding.device_set))
    for p, x in jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]:
        results[f"{count}/state/{jax.tree_util.keystr(p)}"] = np.asarray(x)
np.savez(sys.argv[2], **results)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Data dir with the smoke clips, a shared compile cache, the 8-device subprocess and the
    command-line run (both started at once; `wait_*` return their results)."""
    from jax.experimental.compilation_cache import compilation_cache

    root = tmp_path_factory.mktemp("pretrain")
    data_dir, cache_dir = str(root / "data"), str(root / "jax_cache")
    clips.load_clip_source(run_config(data_dir))  # built once, before any run reads it
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.pop("XLA_FLAGS", None)
    script = root / "compare.py"
    script.write_text(MULTI_DEVICE_SCRIPT)
    multi = subprocess.Popen(
        [sys.executable, str(script), CONFIG_FILE, str(root / "multi.npz")],
        env=dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={N_DEVICES}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workdir = str(root / "cli")
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adc_jax.pretrain",
            f"--config={CONFIG_FILE}:smoke",
            f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}",
            "--config.train.log_every=1",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    previous = {n: getattr(jax.config, n) for n in names}

    class Setup:
        def __init__(self):
            self.root, self.data_dir, self.cli_workdir = root, data_dir, workdir
            self._cli = self._multi = None

        def wait_cli(self) -> tuple[int, str]:
            if self._cli is None:
                output, _ = cli.communicate(timeout=600)
                self._cli = (cli.returncode, output)
                # In-process runs reuse what the command line compiled.
                for name, value in zip(names, (cache_dir, 0.0, 0), strict=True):
                    jax.config.update(name, value)
                compilation_cache.reset_cache()
            return self._cli

        def wait_multi(self) -> dict[str, np.ndarray]:
            if self._multi is None:
                output, _ = multi.communicate(timeout=600)
                assert multi.returncode == 0, output[-5000:]
                self._multi = dict(np.load(root / "multi.npz"))
            return self._multi

    yield Setup()
    for process in (multi, cli):
        if process.poll() is None:
            process.kill()
            process.wait()
    for name, value in previous.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def cli_run(setup):
    rc, output = setup.wait_cli()
    assert rc == 0, output[-5000:]
    return setup.cli_workdir, output


# ---------------------------------------------------------------------------- the command line


def test_smoke_command_line_writes_checkpoints_metrics_and_the_encoder(cli_run):
    workdir, output = cli_run
    assert f"Pretrained {STEPS} steps" in output
    assert f"--config.model.byola_init={os.path.join(workdir, 'encoder')}" in output
    # The captioner takes the pretraining's log-mel statistics from the encoder's meta.json.
    captioner = config_lib.base_config("smoke")
    captioner.model.byola_init = os.path.join(workdir, "encoder")
    assert config_lib.apply_byola_init_norm(captioner)
    with open(os.path.join(workdir, "encoder", "meta.json")) as f:
        meta = json.load(f)
    assert (captioner.model.norm_mean, captioner.model.norm_std) == (
        meta["norm_mean"],
        meta["norm_std"],
    )
    steps = sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())
    assert steps == [3, 6]
    lines = train_lines(workdir)
    assert sorted(lines) == list(range(1, STEPS + 1))
    for values in lines.values():
        assert 0.0 < values["train/loss"] < 8.0 and np.isfinite(values["train/grad_norm"])
        assert values["train/skipped_steps"] == 0.0
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["name"] == "byola_pretrain"
    assert os.path.getsize(os.path.join(workdir, "train.log")) > 0


def test_exported_encoder_is_the_online_encoder_and_loads(cli_run):
    workdir, _ = cli_run
    encoder = pretrain.encoder_dir(workdir)
    with open(os.path.join(encoder, "meta.json")) as f:
        meta = json.load(f)
    config = load_config()
    assert (meta["n_mels"], meta["channels"], meta["dim"]) == (64, 8, 32)
    assert meta["source"] == pretrain_step.EXPORT_SOURCE and meta["step"] == STEPS
    assert meta["config_name"] == "byola_pretrain" and meta["config_size"] == "smoke"
    state = checkpoint_state(workdir, STEPS)
    # The statistics estimated from the data at the start, not BYOL-A's AudioSet ones.
    assert meta["norm_mean"] == pytest.approx(float(state["['buffers']['norm_mean']"]))
    assert meta["norm_std"] == pytest.approx(float(state["['buffers']['norm_std']"]))
    assert meta["norm_mean"] != pytest.approx(config.model.norm_mean)
    module = byola.AudioNTT2020(n_mels=64, channels=8, dim=32, rngs=nnx.Rngs(1))
    byola.load_pretrained(module, encoder)
    loaded = {
        "/".join(map(str, path)): np.asarray(var.get_value())
        for path, var in nnx.to_flat_state(nnx.state(module, (nnx.Param, nnx.BatchStat)))
    }
    assert len(loaded) == 22
    for name, value in loaded.items():
        key = "['model']['online']['encoder']" + "".join(f"['{p}']" for p in name.split("/"))
        np.testing.assert_array_equal(value, state[key], err_msg=name)


def test_captioner_model_initialises_from_the_exported_encoder(cli_run):
    workdir, _ = cli_run
    encoder = pretrain.encoder_dir(workdir)
    config = load_config("late_sdd", "smoke")
    config.model.byola_init = encoder
    config_lib.validate(config)  # the shape checks of adc_jax.main
    model, _ = step_lib.build_model_and_optimizer(config, 20)  # the model adc_jax.main trains
    with np.load(os.path.join(encoder, "params.npz")) as npz:
        arrays = {k: npz[k] for k in npz.files}
    flat = nnx.to_flat_state(nnx.state(model.byola, (nnx.Param, nnx.BatchStat)))
    assert len(flat) == len(arrays) == 22
    for path, var in flat:
        np.testing.assert_array_equal(var.get_value(), arrays["/".join(map(str, path))])
    config.model.byola_dim = 64
    with pytest.raises(config_lib.ConfigError, match="model.byola_dim is 32 in"):
        config_lib.validate(config)


# ---------------------------------------------------------------------------- exact resume


_REAL_JIT_PRETRAIN_STEP = pretrain_step.jit_pretrain_step


def _instrument(monkeypatch, sigterm_at: int | None, calls: list[int]) -> None:
    """Makes the loop's step record the steps it runs and raise SIGTERM after `sigterm_at`."""
    real = _REAL_JIT_PRETRAIN_STEP

    def jit_pretrain_step(ts, config, mesh):
        compiled = real(ts, config, mesh)

        def run_step(rng_state, state, batch):
            step = int(jax.device_get(state["optimizer"]["step"][...])) + 1
            out = compiled(rng_state, state, batch)
            calls.append(step)
            if step == sigterm_at:
                signal.raise_signal(signal.SIGTERM)  # caught by loop.StopRequested
            return out

        return run_step

    monkeypatch.setattr(pretrain_step, "jit_pretrain_step", jit_pretrain_step)


def test_run_stopped_by_sigterm_and_resumed_equals_the_uninterrupted_run(
    cli_run, setup, monkeypatch
):
    reference, _ = cli_run
    config = run_config(setup.data_dir)
    workdir = str(setup.root / "resumed")
    calls: list[int] = []
    _instrument(monkeypatch, 4, calls)
    result = pretrain.pretrain(config, workdir)
    assert result["stopped_at"] == 4 and result["signal"] == "SIGTERM"
    assert calls == [1, 2, 3, 4]
    assert sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints"))) == [3, 4]
    calls.clear()
    _instrument(monkeypatch, None, calls)
    result = pretrain.pretrain(config, workdir)
    assert result["step"] == STEPS and calls == [5, 6]  # resumed, not started again
    got, want = checkpoint_state(workdir, STEPS), checkpoint_state(reference, STEPS)
    assert got.keys() == want.keys() and len(want) > 100
    differing = [k for k in want if not np.array_equal(got[k], want[k])]
    assert not differing, f"{len(differing)} arrays differ, e.g. {differing[:3]}"
    assert train_lines(workdir) == train_lines(reference)
    with (
        np.load(os.path.join(pretrain.encoder_dir(workdir), "params.npz")) as a,
        np.load(os.path.join(pretrain.encoder_dir(reference), "params.npz")) as b,
    ):
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_workdir_of_another_model_fails_before_anything_is_built(cli_run):
    workdir, _ = cli_run
    config = load_config()
    config.model.projector_dim = 24
    with pytest.raises(config_lib.ConfigError, match=r"model.projector_dim: checkpoint=16"):
        checkpointing.check_workdir(
            config,
            os.path.join(workdir, "checkpoints"),
            fields=pretrain_config_lib.model_fields,
        )


# ---------------------------------------------------------------------------- 8 devices vs 1

# Adam's first update of an element is lr * g / (|g| + 1e-8): for a gradient far above 1e-8 it is
# lr * sign(g) whatever the rounding, but where the gradient is zero in exact arithmetic (biases
# right before a BatchNorm) or tiny (a ReLU unit active for few inputs), summing it in another
# order on 8 devices moves the update anywhere in [-lr, lr] (and the target 1% of that): the
# rounding noise of the exactly-zero conv-bias gradients reaches 3e-6 here. Such elements
# (|g| < TINY_GRADIENT, g read from Adam's first moment) get that bound.
TINY_GRADIENT = 1e-4
# The gradients themselves (Adam's moments, the gradient norm) agree less closely than the
# forward pass: max-pooling's gradient jumps at ties, and the constant regions of a view (padded
# frames, the empty canvas around a resize crop) resampled by the crop give near-ties that
# another rounding (other per-device shapes, other reduction orders) resolves differently.
# Measured: up to 2.4e-3 of a leaf's largest moment in the first two conv blocks (3e-5 with full
# clips and crops kept inside the segment, i.e. without constant regions); with another dropout
# stream (16-bit draws) one of bn2's 8 bias moments differed by 1.8e-2 of the leaf's largest, so
# how many near-ties flip depends on the draw. A sharding error moves moments by their own size.
MOMENT_RTOL = 3e-2


def test_eight_devices_match_one_device(setup):
    results = setup.wait_multi()
    assert results["1/state_devices"] == 1 and results["8/state_devices"] == 8
    assert results["1/metric/finite"] == 1.0
    for name, rtol in (("loss", 1e-5), ("projection_std", 1e-5), ("grad_norm", 1e-4)):
        np.testing.assert_allclose(
            results[f"8/metric/{name}"], results[f"1/metric/{name}"], rtol=rtol, err_msg=name
        )
    assert results["8/metric/memory_filled"] == results["1/metric/memory_filled"]
    keys = [k.split("/", 2)[2] for k in results if k.startswith("1/state/")]
    assert len(keys) > 100
    lr = load_config().train.learning_rate
    tiny = total = 0
    for key in keys:
        one, eight = results[f"1/state/{key}"], results[f"8/state/{key}"]
        if key.startswith("['optimizer']['opt_state'][0]"):  # Adam's mu and nu
            # (1e-6: the noise of the exactly-zero gradients, 0.1 of it in mu.)
            atol = MOMENT_RTOL * float(np.abs(one).max(initial=0)) + 1e-6
            np.testing.assert_allclose(eight, one, rtol=0, atol=atol, err_msg=key)
            continue
        scale = max(1.0, float(np.abs(one).max(initial=0)))
        close = np.abs(eight - one) <= 1e-5 * scale
        network = next(
            (n for n in ("['online']", "['target']") if key.startswith(f"['model']{n}")), None
        )
        mu_key = "['optimizer']['opt_state'][0]['mu']" + key.split(network, 1)[1] if network else ""
        if f"1/state/{mu_key}" in results:  # a parameter: exempt its tiny-gradient elements
            gradient = results[f"1/state/{mu_key}"] / 0.1  # mu = (1 - b1) g after one step
            exempt = np.abs(gradient) < TINY_GRADIENT
            np.testing.assert_array_less(np.abs(eight - one)[exempt], 1.001 * 2 * lr, err_msg=key)
            tiny, total = tiny + int((exempt & ~close).sum()), total + exempt.size
            close |= exempt
        assert close.all(), (key, np.abs(eight - one).max())
    assert 0 < tiny < 0.02 * total  # the exemption was needed, and for a few elements only
