"""The training loop: init or restore, jitted train step, periodic eval and checkpoints.

`train_and_evaluate(config, workdir)`:
  1. validates the config (before anything is built or compiled);
  2. builds the dataset on first use and the vocabulary from the training captions
     (`rundir.prepare_data`);
  3. `restore_or_init`: initialises the model, or restores the latest checkpoint in
     `workdir/checkpoints` (same step, optimizer state and data position);
  4. `StepLoop.run`: the jitted, donated train step over a ("data",) mesh of every device, with
     the periodic actions: `log` (console progress bar with ETA, `workdir/metrics.jsonl` and
     TensorBoard events through `MetricsWriter`), `save` (a checkpoint every
     `train.checkpoint_every` steps and at the end), `PeriodicEval` (every `train.eval_every`
     steps and at the end);
  5. shutdown: SIGTERM/SIGINT (`StopRequested`) ends the loop at the next step boundary with a
     checkpoint (`StepLoop.stopped`); pending checkpoint writes finish before it returns.

Resuming is exact: a run killed at any point and started again continues from its latest complete
checkpoint (params, optimizer state, step, grain iterator position, skipped-step count; dropout
keys derive from the step), so its parameters and logged metrics equal those of an uninterrupted
run. Lines of metrics.jsonl logged after that checkpoint are dropped on resume, and an eval of the
restored step runs again. A NaN/Inf loss or gradient stops the run before any later checkpoint is
written (`train.nonfinite="stop"`) or skips the update and counts it (`"skip"`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import ml_collections
from absl import logging
from clu import parameter_overview
from flax import nnx

from adc_jax import checkpointing, evaluate, loop, multihost, rundir
from adc_jax import config as config_lib
from adc_jax import sharding as sharding_lib
from adc_jax import step as step_lib
from adc_jax.data import pipeline
from adc_jax.loop import (
    DeviceBatches,
    MetricsWriter,
    NonFiniteError,
    StopRequested,
    format_terms,
    progress_bar,
    summarise,
)

# The name this helper had here before `adc_jax.loop` held it (tests/test_train.py uses it).
_format_terms = format_terms


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir`; returns the final evaluation result.

    When SIGTERM or Ctrl-C stops the run, it saves a checkpoint at the next step boundary and
    returns {"stopped_at": step, "signal": name, "checkpoint_dir": ...} instead.

    Raises:
      ConfigError: a config value cannot work, or the workdir's checkpoint has another model.
      NonFiniteError: a NaN/Inf loss or gradient with train.nonfinite="stop".
      checkpointing.CheckpointError: a checkpoint could not be written or read.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    config_lib.validate(config, num_devices=jax.device_count())
    return loop.run_with_checkpointer(
        workdir,
        os.path.join(workdir, "checkpoints"),
        config.train.keep_checkpoints,
        lambda checkpointer, writer, stop: _train(config, workdir, checkpointer, writer, stop),
    )


def _train(
    config: ml_collections.ConfigDict,
    workdir: str,
    checkpointer: checkpointing.Checkpointer,
    writer: MetricsWriter,
    stop: StopRequested,
) -> dict[str, Any]:
    """Prepares the data, restores or initialises the model, then runs the step loop."""
    mesh = sharding_lib.create_mesh()
    data = rundir.prepare_data(config, workdir)
    start = restore_or_init(config, mesh, data, checkpointer)
    evaluation = PeriodicEval(config, workdir, start.train_state, mesh, data, writer)
    num_steps = config.train.num_steps
    # An eval of the restored step may not have finished before the run died: it runs again, and
    # its old line (if any) goes, so metrics.jsonl reads as if the run had never stopped.
    redo_eval = start.step > 0 and (start.step == num_steps or evaluation.is_due(start.step))
    writer.truncate_after(start.step, drop_eval_at_step=redo_eval)
    if start.step:
        logging.info(
            "Resuming from step %d (checkpoint in %s).", start.step, checkpointer.directory
        )
    loop = StepLoop(config, mesh, start, checkpointer, writer, stop, evaluation)
    if multihost.any_process(stop.signal_name is not None):
        return loop.stopped(start.step)  # asked to stop while preparing: nothing new to save
    if redo_eval and start.step < num_steps:
        evaluation(start.step)
    return loop.run()


@dataclasses.dataclass
class Start:
    """Where a run starts: a fresh model at step 0, or the latest checkpoint of the workdir.

    train_state: the model and optimizer state placed on the mesh.
    meta: what every checkpoint of the run records and a restore must match (`run_meta`).
    step: the step of the restored checkpoint (0 for a fresh run).
    skipped: non-finite steps skipped so far (train.nonfinite="skip"), carried across resumes.
    train_iter: the training batches, positioned after the last batch the checkpoint consumed.
    """

    train_state: step_lib.TrainState
    meta: dict[str, Any]
    step: int
    skipped: int
    train_iter: Any


def restore_or_init(
    config: ml_collections.ConfigDict,
    mesh,
    data: rundir.RunData,
    checkpointer: checkpointing.Checkpointer,
) -> Start:
    """Initialises the model from `config.seed`, then restores the latest checkpoint if any."""
    ts = step_lib.create_train_state(config, len(data.vocab), mesh)
    logging.info(
        "Model: %s parameters (%s).", f"{step_lib.parameter_count(ts.state):,}", config.name
    )
    if jax.process_index() == 0:
        _log_parameter_overview(ts)
    meta = checkpointing.run_meta(config, len(data.vocab))
    ts.state, data_state, step, saved_meta = checkpointing.restore_or_init(
        checkpointer, ts.state, meta
    )
    train_iter = iter(
        pipeline.train_dataset(
            data.builder.as_data_source("train"),
            data.vocab,
            config,
            stats=data.train_stats,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    )
    if data_state is not None:
        train_iter.set_state(data_state)
    return Start(ts, meta, step, int(saved_meta.get("skipped_steps", 0)), train_iter)


class PeriodicEval:
    """Evaluates the train state on `config.eval.split` every `train.eval_every` steps and at
    the end; writes `workdir/eval/step_<N>.*` and the eval scalars to metrics.jsonl."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        train_state: step_lib.TrainState,
        mesh,
        data: rundir.RunData,
        writer: MetricsWriter,
    ):
        self.every = int(config.train.eval_every)
        self.eval_dir = os.path.join(workdir, "eval")
        self.train_state, self.writer = train_state, writer
        split = pipeline.load_eval_split(
            data.builder.as_data_source(config.eval.split), config.eval.max_examples, data.tiers
        )
        self.evaluator = evaluate.Evaluator(
            train_state,
            config,
            mesh,
            data.vocab,
            split,
            config.eval.split,
            evaluate.DecodeSettings.from_config(config),
            baseline_captions=data.baseline_captions(),
        )

    def is_due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def __call__(self, step: int) -> dict[str, Any]:
        os.makedirs(self.eval_dir, exist_ok=True)
        ts = self.train_state
        prefix = os.path.join(self.eval_dir, f"step_{step}")
        result = self.evaluator(ts.rng_state, ts.state, step=step, out_prefix=prefix)
        scalars = {k: v for k, v in result["scores"].items() if isinstance(v, float)}
        if result.get("difference_accuracy"):
            scalars["difference_accuracy"] = result["difference_accuracy"]["exact_set_accuracy"]
        scalars["baseline_CIDEr"] = result["baseline"]["scores"]["CIDEr"]
        self.writer.write(step, scalars, prefix="eval")
        return result


class StepLoop:
    """The training steps from `start.step` to `train.num_steps`, with the periodic actions.

    Each step runs the jitted train step on the next device batch; its metrics stay on the
    devices until `log` pulls them (every `train.log_every` steps); `save` writes a checkpoint
    every `train.checkpoint_every` steps and at the end; `PeriodicEval` runs when due; a stop
    request (SIGTERM, Ctrl-C) saves a checkpoint at the next step and ends the run (`stopped`).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        mesh,
        start: Start,
        checkpointer: checkpointing.Checkpointer,
        writer: MetricsWriter,
        stop: StopRequested,
        evaluation: PeriodicEval,
    ):
        self.config, self.mesh, self.start = config, mesh, start
        self.ts = start.train_state
        self.checkpointer, self.writer = checkpointer, writer
        self.stop, self.evaluation = stop, evaluation
        self.skipped = start.skipped
        # The grain iterator state after the last batch the model consumed (saved with it).
        self.data_state = start.train_iter.get_state()
        # Metrics of the steps since the last `log`, still on the devices.
        self.pending: list[dict[str, jax.Array]] = []
        # Throughput: steps since `window_start`, not counting the compiling first step.
        self.window_start, self.window_steps = time.time(), 0
        self.progress = None

    def run(self) -> dict[str, Any]:
        """Trains to the last step; returns the final evaluation, or `stopped`'s dict."""
        train = self.config.train
        train_step = step_lib.jit_train_step(self.ts, self.config, self.mesh)
        batches = DeviceBatches(self.start.train_iter, self.mesh)
        self.progress = progress_bar(jax.process_index() == 0, self.start.step, train.num_steps)
        step = self.start.step
        try:
            while step < train.num_steps:
                batch, data_after = next(batches)
                self.ts.state, metrics = train_step(self.ts.rng_state, self.ts.state, batch)
                self.data_state = data_after
                step += 1
                self.pending.append(metrics)
                self.window_steps += 1
                if step == self.start.step + 1:
                    # The first step compiles; start timing throughput after it.
                    jax.block_until_ready(metrics)
                    self.window_start, self.window_steps = time.time(), 0
                if self.progress is not None:
                    self.progress.update(1)
                final = step == train.num_steps
                # Several processes agree on stopping every log_every steps (a small collective).
                stopping = (
                    jax.process_count() == 1 or step % train.log_every == 0
                ) and multihost.any_process(self.stop.signal_name is not None)
                if step % train.log_every == 0 or final or stopping:
                    self.log(step)
                if step % train.checkpoint_every == 0 or final or stopping:
                    self.log(step)
                    self.save(step)
                if stopping:
                    self.checkpointer.wait()
                    return self.stopped(step)
                if self.evaluation.is_due(step) and not final:
                    self.evaluation(step)
        finally:
            if self.progress is not None:
                self.progress.close()
        self.checkpointer.wait()
        return self.evaluation(step)

    def log(self, step: int) -> None:
        """Pulls the pending metrics to the host and writes their means; stops on (or counts)
        a non-finite step, as `train.nonfinite` says."""
        if not self.pending:
            return
        means, bad = summarise(self.pending)
        if bad:
            bad_step = step - len(self.pending) + 1 + bad[0]
            terms = format_terms(jax.device_get(self.pending[bad[0]]))
            if self.config.train.nonfinite == "stop":
                self.checkpointer.wait()
                raise NonFiniteError(
                    f"Non-finite loss or gradient at step {bad_step} ({terms}). The update was "
                    f"not applied and no checkpoint after it was written; the last good "
                    f"checkpoint is step {self.checkpointer.latest_step()} in "
                    f"{self.checkpointer.directory}. Lower train.learning_rate or "
                    "train.grad_clip, or set --config.train.nonfinite=skip to skip such steps."
                )
            self.skipped += len(bad)
            logging.warning(
                "Skipped %d non-finite step(s), first at step %d (%s); %d so far.",
                len(bad),
                bad_step,
                terms,
                self.skipped,
            )
        elapsed = time.time() - self.window_start
        if self.window_steps:
            means["pairs_per_second"] = (
                self.window_steps * self.config.train.batch_size / max(elapsed, 1e-9)
            )
        means["skipped_steps"] = float(self.skipped)
        self.writer.write(step, means)
        if self.progress is not None:
            self.progress.set_postfix(
                loss=f"{means['loss']:.3f}", pairs_s=f"{means.get('pairs_per_second', 0.0):.0f}"
            )
        self.pending = []
        self.window_start, self.window_steps = time.time(), 0

    def save(self, step: int) -> None:
        """Starts writing checkpoint `step` (model, data position, skipped-step count)."""
        meta = dict(self.start.meta, skipped_steps=self.skipped)
        self.checkpointer.save(step, self.ts.state, self.data_state, meta)

    def stopped(self, step: int) -> dict[str, Any]:
        """Logs how to resume; returns {"stopped_at", "signal", "checkpoint_dir"}."""
        # On several processes, only some may have received the signal themselves.
        signal_name = self.stop.signal_name or "a signal to another process"
        logging.warning(
            "Stopped by %s at step %d; checkpoint %d is in %s. Run the same command "
            "again to resume.",
            signal_name,
            step,
            self.checkpointer.latest_step(),
            self.checkpointer.directory,
        )
        return {
            "stopped_at": step,
            "signal": signal_name,
            "checkpoint_dir": self.checkpointer.directory,
        }


def _log_parameter_overview(ts: step_lib.TrainState) -> None:
    try:
        params = nnx.to_pure_dict(nnx.State(ts.state["model"]).filter(nnx.Param))
        logging.info(
            "Parameters:\n%s",
            parameter_overview.get_parameter_overview(params, include_stats=False),
        )
    except Exception as e:  # noqa: BLE001 - an overview must never stop training
        logging.warning("Could not print the parameter overview: %s", e)
