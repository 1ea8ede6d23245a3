"""Multi-process training on one machine: two processes joined by `jax.distributed` on localhost.

Each process gets 4 CPU devices (`--xla_force_host_platform_device_count=4`), so the mesh spans
8 devices in 2 processes, as on two 4-GPU hosts. CPU collectives between processes go through
gloo (`jax_cpu_collectives_implementation`, the default in jax 0.10).

- `test_two_processes_match_one_device`: one train step of `configs/late_sdd.py:smoke` on a fixed
  global batch of 8, each process feeding its 4 rows (`tests/multiprocess_worker.py`), gives the
  loss, the gradients (Adam's first moment) and the updated state of one process on one device.
- `test_main_two_processes_trains_checkpoints_and_resumes` (slow): the real entry point,
  `python -m adc_jax.main`, in two processes: `jax.distributed.initialize` from the environment,
  per-process data shards, Orbax checkpoints written and restored by both, the gathered eval.
- `test_sigterm_to_one_process_stops_all_at_one_checkpoint` (slow): SIGTERM to one process
  stops both at the same step with one checkpoint.

Every subprocess runs in its own session and is killed with its children when it overruns, so
a hung collective fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO_ROOT, "tests", "multiprocess_worker.py")
NUM_PROCESSES = 2
LOCAL_DEVICES = 4
STEP_TIMEOUT_S = 600  # generous: three processes compile at once on a 2-core machine
MAIN_TIMEOUT_S = 600

# Variables through which a cluster (SLURM, Open MPI, a TPU pod) or the caller's shell could make
# the subprocesses join some other job; the tests set what they need themselves.
_CLUSTER_VARS = re.compile(
    r"^(SLURM_|OMPI_|PMI_|PMIX_|TPU_|MEGASCALE_|JAX_COORDINATOR|"
    r"JAX_NUM_PROCESSES$|JAX_PROCESS_ID$|JAX_LOCAL_DEVICE_IDS$|XLA_FLAGS$)"
)


def free_port() -> int:
    """A TCP port that nothing listens on right now (for the jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def subprocess_env(num_devices: int, **extra: str) -> dict[str, str]:
    """The caller's environment without cluster variables, on `num_devices` CPU devices."""
    env = {k: v for k, v in os.environ.items() if not _CLUSTER_VARS.match(k)}
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
        PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


class Processes:
    """Subprocesses started together, each logging to a file; waited for with one deadline."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], cwd) -> None:
        with open(self.log_dir / f"{name}.log", "w") as log:
            proc = subprocess.Popen(
                args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append((name, proc))

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def tails(self, lines: int = 40) -> str:
        parts = []
        for name, proc in self.procs:
            tail = "\n".join(
                line for line in self.log(name).splitlines() if not line.startswith("[Gloo]")
            )[-lines * 120 :]
            parts.append(f"--- {name} (exit code {proc.returncode}) ---\n{tail}")
        return "\n".join(parts)

    def wait(self, timeout_s: float) -> None:
        """Waits for all; kills all (with their children) on a timeout or a failure."""
        deadline = time.monotonic() + timeout_s
        try:
            for name, proc in self.procs:
                remaining = deadline - time.monotonic()
                try:
                    proc.wait(timeout=max(remaining, 1))
                except subprocess.TimeoutExpired:
                    self.kill()
                    pytest.fail(
                        f"{name} did not finish within {timeout_s} s (a hung collective?)."
                        f"\n{self.tails()}"
                    )
                if proc.returncode != 0:
                    # The other processes would wait for this one in a collective: stop them.
                    self.kill()
                    pytest.fail(f"{name} exited with {proc.returncode}.\n{self.tails()}")
        finally:
            self.kill()

    def kill(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the session started for this process
                proc.wait()


# ---------------------------------------------------------------------------------- one step


@pytest.fixture(scope="module")
def step_results(tmp_path_factory):
    """{name: npz contents} of the reference (1 device) and of each of the two processes."""
    out = tmp_path_factory.mktemp("multiprocess_step")
    procs = Processes(out)
    coordinator = f"localhost:{free_port()}"
    for i in range(NUM_PROCESSES):
        procs.start(
            f"process_{i}",
            [
                sys.executable,
                WORKER,
                str(out / f"process_{i}.npz"),
                f"--coordinator={coordinator}",
                f"--num-processes={NUM_PROCESSES}",
                f"--process-id={i}",
            ],
            subprocess_env(LOCAL_DEVICES),
            cwd=out,
        )
    procs.start(
        "reference",
        [sys.executable, WORKER, str(out / "reference.npz")],
        subprocess_env(1),
        cwd=out,
    )
    procs.wait(STEP_TIMEOUT_S)
    return {name: dict(np.load(out / f"{name}.npz")) for name, _ in procs.procs}


_MODEL = "state/['model']"
_MU = re.compile(r"^state/\['optimizer'\]\['opt_state'\].*\['mu'\](?P<param>.*)$")
_NU = re.compile(r"^state/\['optimizer'\]\['opt_state'\].*\['nu'\].*$")


def test_two_processes_match_one_device(step_results, smoke_config):
    ref = step_results["reference"]
    multi = step_results["process_0"]
    assert (ref["process_count"], ref["device_count"], ref["batch_devices"]) == (1, 1, 1)
    assert (multi["process_count"], multi["device_count"], multi["batch_devices"]) == (2, 8, 8)
    # Both processes hold the same (replicated) results.
    other = step_results["process_1"]
    assert multi.keys() == other.keys() == ref.keys()
    for key in multi:
        np.testing.assert_array_equal(multi[key], other[key], err_msg=key)

    metrics = [k for k in ref if k.startswith("metric/")]
    assert {
        f"metric/{m}"
        for m in ("loss", "caption_loss", "similar_loss", "discrepant_loss", "grad_norm")
    } <= set(metrics)
    assert ref["metric/finite"] == 1.0
    for key in metrics:
        np.testing.assert_allclose(multi[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)

    # The state placed from the host by every process is the one-device state, bit for bit.
    initial = [k for k in ref if k.startswith("init/")]
    assert len(initial) > 100
    for key in initial:
        np.testing.assert_array_equal(multi[key], ref[key], err_msg=key)

    # Gradients: Adam's first (0.1 g) and second (0.001 g^2) moments after one step, compared at
    # 1e-5 of the largest entry, since float32 sums are accurate relative to their largest terms.
    mu = {m["param"]: k for k in ref if (m := _MU.match(k))}
    nu = [k for k in ref if _NU.match(k)]
    assert len(mu) > 50 and len(nu) == len(mu)
    for keys in (list(mu.values()), nu):
        scale = max(float(np.abs(ref[k]).max(initial=0)) for k in keys)
        assert scale > 0
        for key in keys:
            # BYOL-A's conv layers feed BatchNorm, whose statistics are sums over the sharded
            # batch (block 1 on CPU: patch sums and a Gram matrix); their cross-device summation
            # order moves the conv gradients (and the ~0 pre-BatchNorm bias gradients) by up to
            # ~2e-5 of the largest entry.
            tol = 5e-5
            np.testing.assert_allclose(multi[key], ref[key], rtol=0, atol=tol * scale, err_msg=key)
    grad_scale = max(float(np.abs(ref[k]).max(initial=0)) for k in mu.values())

    # Updated state: parameters, BatchNorm statistics, counters. Adam's first update of an entry
    # is -lr * g / (|g| + 1e-8): where the gradient is numerically zero (|g| at float32 noise
    # level, e.g. conv biases before BatchNorm, attention key biases), that quotient is noise of
    # size up to lr in any two runs that sum the gradient in a different order. Those entries
    # (|mu| <= 1e-5 of the largest; about 1% of the smoke model's weights) must only stay within
    # one step of each other.
    lr = smoke_config.train.learning_rate
    state = [k for k in ref if k.startswith("state/")]
    params = [k for k in state if k.startswith(_MODEL)]
    assert len(params) > 50
    noise_entries = total_entries = 0
    for key in state:
        one, two = ref[key], multi[key]
        if not np.issubdtype(one.dtype, np.floating):
            np.testing.assert_array_equal(two, one, err_msg=key)
            continue
        tolerance = np.full(one.shape, 1e-5 * max(1.0, float(np.abs(one).max(initial=0))))
        param = key[len(_MODEL) :]
        if param in mu:
            noise = np.abs(ref[mu[param]]) <= 1e-5 * grad_scale
            tolerance[noise] = 2.1 * lr
            noise_entries += int(noise.sum())
            total_entries += one.size
        bad = np.abs(two.astype(np.float64) - one) > tolerance
        assert not bad.any(), (
            f"{key}: {bad.sum()} of {one.size} entries differ, largest by "
            f"{np.abs(two.astype(np.float64) - one).max():.3g}"
        )
    assert total_entries > 10_000
    assert noise_entries < 0.05 * total_entries, (noise_entries, total_entries)


# ---------------------------------------------------------------------------------- main


def _start_main(tmp_path, name: str, extra_args: list[str]) -> Processes:
    """Starts `python -m adc_jax.main` (smoke size) in two processes joined on localhost."""
    procs = Processes(tmp_path)
    coordinator = f"localhost:{free_port()}"
    args = [
        sys.executable,
        "-m",
        "adc_jax.main",
        f"--config={os.path.join(REPO_ROOT, 'configs', 'late_sdd.py')}:smoke",
        f"--workdir={tmp_path / 'workdir'}",
        f"--config.data.data_dir={tmp_path / 'data'}",
        *extra_args,
    ]
    for i in range(NUM_PROCESSES):
        env = subprocess_env(
            LOCAL_DEVICES,
            JAX_COORDINATOR_ADDRESS=coordinator,
            JAX_NUM_PROCESSES=str(NUM_PROCESSES),
            JAX_PROCESS_ID=str(i),
        )
        procs.start(f"{name}_{i}", args, env, cwd=tmp_path)
    return procs


def _train_lines(workdir) -> list[dict]:
    """The train-metrics lines of metrics.jsonl so far (a line being written is left out)."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return [line for line in lines if "train/loss" in line]


def _checkpoint_steps(workdir) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_main_two_processes_trains_checkpoints_and_resumes(tmp_path):
    workdir = tmp_path / "workdir"
    first = _start_main(tmp_path, "first", ["--config.train.num_steps=2"])
    first.wait(MAIN_TIMEOUT_S)
    for i in range(NUM_PROCESSES):
        log = first.log(f"first_{i}")
        assert f"process {i} of {NUM_PROCESSES}, {LOCAL_DEVICES} local / 8 global devices" in log
        assert "Final eval (eval, step 2)" in log  # every process takes part in the eval gather
    assert _checkpoint_steps(workdir) == [2]
    assert (workdir / "eval" / "step_2.json").exists()
    # Only process 0 writes metrics: one line per logged step, not one per process.
    lines = _train_lines(workdir)
    assert [line["step"] for line in lines] == [2]
    assert np.isfinite(lines[0]["train/loss"])

    # Both processes restore checkpoint 2 (state and data position) and train one more step.
    second = _start_main(tmp_path, "second", ["--config.train.num_steps=3", "--multiprocess"])
    second.wait(MAIN_TIMEOUT_S)
    for i in range(NUM_PROCESSES):
        log = second.log(f"second_{i}")
        assert "Resuming from step 2" in log
        assert "Final eval (eval, step 3)" in log
    assert _checkpoint_steps(workdir)[-1] == 3
    assert [line["step"] for line in _train_lines(workdir)] == [2, 3]


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_one_checkpoint(tmp_path):
    """A preemption notice to one host only: every process saves the same step and exits.

    Without an agreement between the processes, the signalled one would checkpoint and leave
    while the others wait for it in the next step's all-reduce (a hang until the time limit).
    """
    workdir = tmp_path / "workdir"
    many = 1_000_000
    procs = _start_main(
        tmp_path,
        "preempted",
        [f"--config.train.num_steps={many}", f"--config.train.checkpoint_every={many}"],
    )
    deadline = time.monotonic() + MAIN_TIMEOUT_S
    while not _train_lines(workdir):  # training runs: the first metrics line is written
        exited = [(name, p.returncode) for name, p in procs.procs if p.poll() is not None]
        if exited or time.monotonic() > deadline:
            procs.kill()
            pytest.fail(f"Training did not start (exited: {exited}).\n{procs.tails()}")
        time.sleep(0.5)
    os.kill(procs.procs[1][1].pid, signal.SIGTERM)
    procs.wait(240)
    steps = _checkpoint_steps(workdir)
    assert len(steps) == 1 and 0 < steps[0] < many, steps
    for i in range(NUM_PROCESSES):
        assert f"at step {steps[0]}; the checkpoint is" in procs.log(f"preempted_{i}")
