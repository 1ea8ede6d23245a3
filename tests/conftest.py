"""Shared test helpers: loading the experiment config files the way `config_flags` does, and
real `:smoke` training runs (see the section at the end)."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import ml_collections
import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")


def config_path(name: str) -> str:
    return os.path.join(CONFIG_DIR, f"{name}.py")


def load_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`configs/<name>.py:<arg>` loaded from its file path, as `--config=...` would."""
    spec = importlib.util.spec_from_file_location(f"configs_{name}", config_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()


@pytest.fixture(name="load_config")
def load_config_fixture():
    """The `load_config(name, arg)` helper, for tests that load several configs."""
    return load_config


@pytest.fixture(name="config_path")
def config_path_fixture():
    """The `config_path(name)` helper: path of `configs/<name>.py`."""
    return config_path


@pytest.fixture
def smoke_config():
    """A fresh `configs/late_sdd.py:smoke` (callers may mutate it)."""
    return load_config("late_sdd", "smoke")


# ------------------------------------------------------------------------------------------------
# Real `:smoke` training runs, shared by tests/test_train.py and tests/test_reliability.py.
#
# One session builds the smoke dataset once and points every run (subprocesses and in-process)
# at one persistent JAX compilation cache, so the train step and the decoder are compiled once
# per session instead of once per run. Every run uses SMOKE_ARGS (12 steps, a checkpoint every
# 3 steps, metrics every step), so runs of any length compare line by line with the reference.

SMOKE_ARGS = (
    "--config.train.num_steps=12",
    "--config.train.checkpoint_every=3",
    "--config.train.log_every=1",
)
SMOKE_STEPS = 12

# `python -c HOOKED_MAIN <flags>` runs adc_jax.main with two test-only hooks, off unless set:
#   ADC_TEST_STEP_SLEEP=<s>: sleep before each step, so a signal lands in the middle of a run;
#   ADC_TEST_HOLD_CHECKPOINT=<step>: the write of that checkpoint never finishes (its temporary
#     directory stays, the rename never comes), so a kill lands in the middle of that write.
# The hooks live here, not in adc_jax: production code has no test switches.
HOOKED_MAIN = """
import asyncio, os, time
from absl import app
from adc_jax import loop, main

step_sleep = float(os.environ.get("ADC_TEST_STEP_SLEEP", "0"))
if step_sleep:
    _next = loop.DeviceBatches.__next__
    def _slow_next(self):
        time.sleep(step_sleep)
        return _next(self)
    loop.DeviceBatches.__next__ = _slow_next

hold = os.environ.get("ADC_TEST_HOLD_CHECKPOINT")
if hold:
    from orbax.checkpoint._src.path import atomicity
    _finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def _held_finalize(self, *args, **kwargs):
        if self._final_path.name == hold:
            await asyncio.sleep(3600)
        return await _finalize(self, *args, **kwargs)
    atomicity.AtomicRenameTemporaryPath.finalize = _held_finalize

app.run(main.main, flags_parser=main.parse_flags)
"""


class SmokeProcess:
    """A training subprocess whose output goes to `<workdir>.<n>.log`."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: str):
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in finish()
        self.popen = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.returncode: int | None = None

    @property
    def output(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_until(self, condition, timeout: float = 600.0) -> None:
        """Polls `condition()` every 20 ms; fails if the process ends first or time runs out."""
        deadline = time.time() + timeout
        while not condition():
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"The run ended (exit {self.popen.returncode}) before the "
                    f"awaited moment:\n{self.output[-3000:]}"
                )
            if time.time() > deadline:
                self.popen.kill()
                raise AssertionError(f"Timed out waiting:\n{self.output[-3000:]}")
            time.sleep(0.02)

    def send(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def finish(self, timeout: float = 600.0) -> int:
        """Waits for the exit (kills it after `timeout`); returns the exit code."""
        try:
            self.returncode = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(
                f"The run did not finish in {timeout} s:\n{self.output[-3000:]}"
            ) from None
        finally:
            self._log.close()
        return self.returncode


class SmokeSetup:
    """The session's smoke dataset, compile cache and helpers to start and read runs."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.data_dir = str(root / "data")
        self.cache_dir = str(root / "jax_cache")
        self.env = dict(
            os.environ,
            JAX_COMPILATION_CACHE_DIR=self.cache_dir,
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
            PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        self.env.pop("XLA_FLAGS", None)
        self._runs = 0
        self.processes: list[SmokeProcess] = []

    def config(self) -> ml_collections.ConfigDict:
        """The config of every smoke run (for in-process runs): :smoke with SMOKE_ARGS."""
        c = load_config("late_sdd", "smoke")
        c.data.data_dir = self.data_dir
        for arg in SMOKE_ARGS:
            key, value = arg[len("--config.") :].split("=")
            section, field = key.split(".")
            c[section][field] = int(value)
        return c

    def workdir(self, name: str) -> str:
        return str(self.root / name)

    def command(self, workdir: str, *extra: str, hooked: bool = False) -> list[str]:
        entry = ["-c", HOOKED_MAIN] if hooked else ["-m", "adc_jax.main"]
        return [
            sys.executable,
            *entry,
            f"--config={config_path('late_sdd')}:smoke",
            f"--workdir={workdir}",
            f"--config.data.data_dir={self.data_dir}",
            *SMOKE_ARGS,
            *extra,
        ]

    def start(
        self,
        workdir: str,
        *extra: str,
        hooks: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> SmokeProcess:
        """Starts a run (with HOOKED_MAIN when `hooks` are given); output in <workdir>.<n>.log."""
        self._runs += 1
        full_env = dict(self.env, **(env or {}), **(hooks or {}))
        process = SmokeProcess(
            self.command(workdir, *extra, hooked=bool(hooks)),
            full_env,
            f"{workdir}.{self._runs}.log",
        )
        self.processes.append(process)
        return process

    # -------------------------------------------------------------------- reading a workdir

    @staticmethod
    def checkpoint_steps(workdir: str) -> list[int]:
        """Complete checkpoints (a directory named by its step; temporary ones are not)."""
        d = os.path.join(workdir, "checkpoints")
        return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []

    @staticmethod
    def metrics(workdir: str) -> list[dict]:
        """metrics.jsonl as records (a line being written is left out)."""
        path = os.path.join(workdir, "metrics.jsonl")
        if not os.path.exists(path):
            return []
        records = []
        with open(path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
        return records

    def last_train_step(self, workdir: str) -> int:
        return max([r["step"] for r in self.metrics(workdir) if "train/loss" in r], default=0)

    def train_lines(self, workdir: str) -> dict[int, dict]:
        """step -> the train/* values logged for it, throughput (a timing) left out."""
        return {
            r["step"]: {
                k: v
                for k, v in r.items()
                if k.startswith("train/") and k != "train/pairs_per_second"
            }
            for r in self.metrics(workdir)
            if "train/loss" in r
        }

    def assert_same_run(self, workdir: str, reference: str) -> None:
        """Checkpoint 12 and every logged train metric equal the reference run's, bit for bit;
        metrics.jsonl holds each step once."""
        got, want = self.state(workdir, SMOKE_STEPS), self.state(reference, SMOKE_STEPS)
        assert got.keys() == want.keys()
        differing = [k for k in want if not np.array_equal(got[k], want[k])]
        assert not differing, f"{len(differing)} arrays differ, e.g. {differing[:3]}"
        kinds = [
            (r["step"], "eval" if any(k.startswith("eval/") for k in r) else "train")
            for r in self.metrics(workdir)
        ]
        assert len(kinds) == len(set(kinds)), f"duplicate metrics lines: {kinds}"
        got_lines, want_lines = self.train_lines(workdir), self.train_lines(reference)
        assert sorted(got_lines) == sorted(want_lines) == list(range(1, SMOKE_STEPS + 1))
        for step, values in want_lines.items():
            assert got_lines[step] == values, f"metrics of step {step} differ"

    @staticmethod
    def state(workdir: str, step: int) -> dict[str, np.ndarray]:
        """Everything checkpoint `step` holds (params, BatchNorm stats, optimizer state), flat."""
        import jax
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as ckpt:
            tree = ckpt.restore(os.path.join(workdir, "checkpoints", str(step), "state"))
        return {
            jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        }


@pytest.fixture(scope="session")
def smoke_setup():
    """Builds the smoke dataset once; turns on the persistent compile cache in this process too.

    The runs live in their own temporary folder, not pytest's tmp_path: pytest deletes the
    folders of older sessions when a new one starts, which would pull the dataset from under a
    long run whenever several pytest sessions share a machine.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    from adc_jax.data import registry

    setup = SmokeSetup(pathlib.Path(tempfile.mkdtemp(prefix="adc_jax_smoke_runs_")))
    registry.load_builder(setup.config())
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    previous = {n: getattr(jax.config, n) for n in names}
    for name, value in zip(names, (setup.cache_dir, 0.0, 0), strict=True):
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    yield setup
    for process in setup.processes:  # a failed test may leave one running (e.g. a held write)
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()
    for name, value in previous.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    shutil.rmtree(setup.root, ignore_errors=True)


@pytest.fixture(scope="session")
def reference_run(smoke_setup) -> str:
    """Workdir of an uninterrupted 12-step smoke run.

    Only its training is needed (checkpoint 12 and metrics.jsonl), so it is stopped once the
    final checkpoint is on disk, before the final eval (tests/test_train.py runs one to the end).
    """
    workdir = smoke_setup.workdir("reference")
    run = smoke_setup.start(workdir)
    run.wait_until(lambda: SMOKE_STEPS in smoke_setup.checkpoint_steps(workdir))
    run.send(signal.SIGKILL)
    run.finish()
    return workdir
