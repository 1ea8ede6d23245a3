"""The training loop: init or restore, jitted train step, periodic eval and checkpoints.

`train_and_evaluate(config, workdir)`:
  1. validates the config (before anything is built or compiled);
  2. builds the dataset on first use and the vocabulary from the training captions
     (`rundir.prepare_data`);
  3. `restore_or_init`: initialises the model, or restores the latest checkpoint in
     `workdir/checkpoints` (same step, optimizer state and data position);
  4. `loop.StepLoop.run` (the loop pretraining uses too): the jitted, donated train step over a
     ("data",) mesh of every device, with the periodic actions: `log` (console progress bar with
     ETA, `workdir/metrics.jsonl` and TensorBoard events), `save` (a checkpoint every
     `train.checkpoint_every` steps and at the end) and this module's `PeriodicEval` (every
     `train.eval_every` steps and at the end);
  5. shutdown: SIGTERM/SIGINT ends the loop at the next step boundary with a checkpoint;
     pending checkpoint writes finish before it returns.

Resuming is exact: a run killed at any point and started again continues from its latest complete
checkpoint (params, optimizer state, step, grain iterator position, skipped-step count; dropout
keys derive from the step), so its parameters and logged metrics equal those of an uninterrupted
run. Lines of metrics.jsonl logged after that checkpoint are dropped on resume, and an eval of the
restored step runs again. A NaN/Inf loss or gradient stops the run before any later checkpoint is
written (`train.nonfinite="stop"`) or skips the update and counts it (`"skip"`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
from absl import logging
from clu import parameter_overview
from flax import nnx

from adc_jax import checkpointing, evaluate, loop, rundir
from adc_jax import config as config_lib
from adc_jax import step as step_lib
from adc_jax.data import clip_store, pipeline
from adc_jax.loop import MetricsWriter
from adc_jax.train_state import TrainState


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir`; returns the final evaluation result.

    When SIGTERM or Ctrl-C stops the run, it saves a checkpoint at the next step boundary and
    returns {"stopped_at": step, "signal": name, "checkpoint_dir": ...} instead.

    Raises:
      ConfigError: a config value cannot work, or the workdir's checkpoint has another model.
      loop.NonFiniteError: a NaN/Inf loss or gradient with train.nonfinite="stop".
      checkpointing.CheckpointError: a checkpoint could not be written or read.
    """
    config_lib.validate(config, num_devices=jax.device_count())
    return loop.run_in_workdir(config, workdir, _train)


def _train(run: loop.Run) -> dict[str, Any]:
    """Prepares the data, restores or initialises the model, then runs the step loop."""
    config, mesh, checkpointer, writer = run.config, run.mesh, run.checkpointer, run.writer
    workdir = run.workdir
    data = rundir.prepare_data(config, workdir)
    start = restore_or_init(config, mesh, data, checkpointer)
    evaluation = PeriodicEval(config, workdir, start.train_state, mesh, data, writer)
    # An eval of the restored step may not have finished before the run died: it runs again
    # (the loop sees to it), and its old line (if any) goes, so metrics.jsonl reads as if the run
    # had never stopped.
    redo_eval = start.step > 0 and (
        start.step == config.train.num_steps or evaluation.is_due(start.step)
    )
    writer.truncate_after(start.step, drop_eval_at_step=redo_eval)
    hooks = loop.Hooks(
        finish=lambda step, _: evaluation(step),
        is_due=evaluation.is_due,
        periodic=evaluation,
    )
    return loop.StepLoop(
        run,
        start=start,
        step_fn=step_lib.jit_train_step(start.train_state, config, mesh),
        hooks=hooks,
        unit="pairs",
    ).run()


def restore_or_init(
    config: ml_collections.ConfigDict,
    mesh,
    data: rundir.RunData,
    checkpointer: checkpointing.Checkpointer,
) -> loop.Start:
    """Initialises the model from `config.seed`, then restores the latest checkpoint if any."""
    ts = step_lib.create_train_state(config, len(data.vocab), mesh)
    logging.info(
        "Model: %s parameters (%s).", f"{step_lib.parameter_count(ts.state):,}", config.name
    )
    if jax.process_index() == 0:
        _log_parameter_overview(ts)
    return loop.restore_or_init(
        checkpointer,
        ts,
        checkpointing.run_meta(config, len(data.vocab)),
        lambda: iter(
            pipeline.train_dataset(
                clip_store.pair_source(data.builder, "train"),
                data.vocab,
                config,
                stats=data.train_stats,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
            )
        ),
    )


class PeriodicEval:
    """Evaluates the train state on `config.eval.split` every `train.eval_every` steps and at
    the end; writes `workdir/eval/step_<N>.*` and the eval scalars to metrics.jsonl."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        train_state: TrainState,
        mesh,
        data: rundir.RunData,
        writer: MetricsWriter,
    ):
        self.every = int(config.train.eval_every)
        self.eval_dir = os.path.join(workdir, "eval")
        self.train_state, self.writer = train_state, writer
        split = data.eval_split(config.eval.split, config.eval.max_examples)
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


def _log_parameter_overview(ts: TrainState) -> None:
    try:
        params = nnx.to_pure_dict(nnx.State(ts.state["model"]).filter(nnx.Param))
        logging.info(
            "Parameters:\n%s",
            parameter_overview.get_parameter_overview(params, include_stats=False),
        )
    except Exception as e:  # noqa: BLE001 - an overview must never stop training
        logging.warning("Could not print the parameter overview: %s", e)
