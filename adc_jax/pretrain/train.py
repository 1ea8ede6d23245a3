"""BYOL-A self-supervised pretraining of the AudioNTT2020 encoder: the command line and the loop.

  python -m adc_jax.pretrain --config=configs/byola_pretrain.py:quick --workdir=workdirs/byola_quick
  python -m adc_jax.main --config=configs/late_sdd.py:quick --workdir=workdirs/late_sdd_byola \
      --config.model.byola_init=workdirs/byola_quick/encoder

The run reads clips (`adc_jax.pretrain.clips`: the built-in synthetic clips, generated on first use,
or every audio file under `--config.data.audio_dir`), trains the online network with BYOL's loss
against its EMA target (`adc_jax.pretrain.step`), and writes to the workdir:

  config.json       the resolved config
  checkpoints/      Orbax checkpoints: online and target networks, Adam state, mixup memory,
                    normalisation statistics, step, the data iterator's position
  encoder/          the online encoder in `tools/convert_byola.py`'s format (params.npz,
                    meta.json), rewritten at every checkpoint and at the end
  metrics.jsonl, tensorboard/, train.log

`pretrain(config, workdir)`:
  1. validates the config (`pretrain_config.validate`) before anything is built;
  2. prepares the clips (`clips.load_clip_source`, built on first use);
  3. a fresh run estimates the log-mel's mean and standard deviation over the first
     pretrain.norm_stats_batches batches (a separate reader of the same order: the training
     stream is not advanced), or takes model.norm_mean/norm_std when that is 0; a resumed run
     restores them with everything else;
  4. initialises the state, or restores the latest checkpoint (same step, target, memory,
     statistics, data position): resuming is exact, a resumed run equals an uninterrupted one;
  5. runs the jitted, donated step over a ("data",) mesh of every device, logging every
     train.log_every steps (console progress bar, metrics.jsonl, TensorBoard), saving and
     exporting the encoder every train.checkpoint_every steps and at the end;
  6. SIGTERM / Ctrl-C save a checkpoint at the next step and end the run (exit status 0); a
     NaN/Inf loss or gradient stops the run before any later checkpoint (train.nonfinite="stop")
     or skips the update and counts it ("skip").

Exit status 2: a config error (an unknown or invalid field, or a workdir whose checkpoint has
another model); 1: a failed run (non-finite loss, checkpoint write, I/O). On several hosts, run
the same command on every host; `jax.distributed.initialize()` is called when the environment
describes more than one process (or `--multiprocess` is given).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
from absl import logging

from adc_jax import checkpointing, loop, multihost
from adc_jax import sharding as sharding_lib
from adc_jax.loop import (
    DeviceBatches,
    MetricsWriter,
    NonFiniteError,
    StopRequested,
    format_terms,
    progress_bar,
    summarise,
)
from adc_jax.pretrain import clips
from adc_jax.pretrain import config as pretrain_config_lib
from adc_jax.pretrain import step as pretrain_step

ENCODER_DIR = "encoder"
CHECKPOINT_DIR = "checkpoints"


def encoder_dir(workdir: str) -> str:
    """Where a run exports its encoder (`--config.model.byola_init` of the captioner)."""
    return os.path.join(workdir, ENCODER_DIR)


def run_meta(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What every checkpoint records and a restore must match (shape-determining fields)."""
    return {
        "model": pretrain_config_lib.model_fields(config),
        "name": config.name,
        "kind": "byola_pretrain",
    }


def _read_only_copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy reading the data in the main process without prefetch (for the statistics)."""
    copy = config.copy_and_resolve_references()
    with copy.unlocked():
        copy.data.num_workers = 0
        copy.data.prefetch = 0
    return copy


def _global_batches(source, config: ml_collections.ConfigDict, mesh):
    """A fresh reader of the training stream, as global batches on the mesh."""
    local = iter(
        clips.clip_batches(
            source,
            config,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    )
    return (batch for batch, _ in DeviceBatches(local, mesh, depth=1))


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Pretrains (or resumes) the run in `workdir`; returns what it did.

    Returns {"step", "loss" (mean of the last logged steps), "encoder_dir", "norm_mean",
    "norm_std", "checkpoint_dir"}; when SIGTERM or Ctrl-C stops the run it saves a checkpoint
    at the next step boundary and returns {"stopped_at", "signal", "checkpoint_dir",
    "encoder_dir"} instead.

    Raises:
      ConfigError: a config value cannot work, or the workdir's checkpoint has another model.
      NonFiniteError: a NaN/Inf loss or gradient with train.nonfinite="stop".
      checkpointing.CheckpointError: a checkpoint could not be written or read.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    pretrain_config_lib.validate(config, num_devices=jax.device_count())
    return loop.run_with_checkpointer(
        workdir,
        os.path.join(workdir, CHECKPOINT_DIR),
        config.train.keep_checkpoints,
        lambda checkpointer, writer, stop: _pretrain(config, workdir, checkpointer, writer, stop),
    )


def _pretrain(
    config: ml_collections.ConfigDict,
    workdir: str,
    checkpointer: checkpointing.Checkpointer,
    writer: MetricsWriter,
    stop: StopRequested,
) -> dict[str, Any]:
    """Prepares the clips, initialises or restores the state, then runs the steps."""
    mesh = sharding_lib.create_mesh()
    builder = clips.load_clip_source(config)
    source = builder.as_data_source("train")
    logging.info("Pretraining on %d %s clips.", len(source), config.data.name)
    norm_stats = None
    if checkpointer.latest_step() is None and config.pretrain.norm_stats_batches:
        n = config.pretrain.norm_stats_batches
        stats_config = _read_only_copy(config)
        norm_stats = pretrain_step.estimate_norm_stats(
            _global_batches(source, stats_config, mesh), config, mesh, n
        )
        logging.info(
            "Log-mel statistics over the valid frames of the first %d batches: mean %.4f, "
            "std %.4f (the pre-normalisation; saved with every checkpoint and the encoder).",
            n,
            *norm_stats,
        )
    ts = pretrain_step.create_pretrain_state(config, mesh, norm_stats=norm_stats)
    logging.info(
        "Online network: %s parameters (encoder + projector + predictor); target: %s.",
        f"{pretrain_step.parameter_count(ts.state):,}",
        f"{pretrain_step.parameter_count(ts.state, 'target'):,}",
    )
    meta = run_meta(config)
    ts.state, data_state, step, saved_meta = checkpointing.restore_or_init(
        checkpointer, ts.state, meta
    )
    train_iter = iter(
        clips.clip_batches(
            source,
            config,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    )
    if data_state is not None:
        train_iter.set_state(data_state)
    writer.truncate_after(step)
    if step:
        logging.info("Resuming from step %d (checkpoint in %s).", step, checkpointer.directory)
    loop = PretrainLoop(
        config,
        mesh,
        ts,
        step,
        int(saved_meta.get("skipped_steps", 0)),
        train_iter,
        meta,
        checkpointer,
        writer,
        stop,
        encoder_dir(workdir),
    )
    if multihost.any_process(stop.signal_name is not None):
        return loop.stopped(step)  # asked to stop while preparing: nothing new to save
    return loop.run()


class PretrainLoop:
    """The steps from `start_step` to `train.num_steps`, with logging, checkpoints (and the
    encoder export that goes with each), the non-finite policy and stop requests; the same
    periodic actions as the captioner's `train.StepLoop`, without evaluation."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        mesh,
        ts: pretrain_step.PretrainState,
        start_step: int,
        skipped: int,
        train_iter,
        meta: dict[str, Any],
        checkpointer: checkpointing.Checkpointer,
        writer: MetricsWriter,
        stop: StopRequested,
        export_dir: str,
    ):
        self.config, self.mesh, self.ts = config, mesh, ts
        self.start_step, self.skipped = start_step, skipped
        self.train_iter, self.meta = train_iter, meta
        self.checkpointer, self.writer, self.stop = checkpointer, writer, stop
        self.export_dir = export_dir
        # The grain iterator state after the last batch the model consumed (saved with it).
        self.data_state = train_iter.get_state()
        # Metrics of the steps since the last `log`, still on the devices.
        self.pending: list[dict[str, jax.Array]] = []
        self.last_means: dict[str, float] = {}
        self.window_start, self.window_steps = time.time(), 0
        self.progress = None

    def run(self) -> dict[str, Any]:
        """Trains to the last step; returns `finished`'s or `stopped`'s dict."""
        train = self.config.train
        step_fn = pretrain_step.jit_pretrain_step(self.ts, self.config, self.mesh)
        batches = DeviceBatches(self.train_iter, self.mesh)
        self.progress = progress_bar(jax.process_index() == 0, self.start_step, train.num_steps)
        step = self.start_step
        try:
            while step < train.num_steps:
                batch, data_after = next(batches)
                self.ts.state, metrics = step_fn(self.ts.rng_state, self.ts.state, batch)
                self.data_state = data_after
                step += 1
                self.pending.append(metrics)
                self.window_steps += 1
                if step == self.start_step + 1:
                    # The first step compiles; start timing throughput after it.
                    jax.block_until_ready(metrics)
                    self.window_start, self.window_steps = time.time(), 0
                if self.progress is not None:
                    self.progress.update(1)
                final = step == train.num_steps
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
        finally:
            if self.progress is not None:
                self.progress.close()
        self.checkpointer.wait()
        return self.finished(step)

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
                    f"{self.checkpointer.directory}. Lower train.learning_rate, set "
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
            means["clips_per_second"] = (
                self.window_steps * self.config.train.batch_size / max(elapsed, 1e-9)
            )
        means["skipped_steps"] = float(self.skipped)
        self.writer.write(step, means)
        self.last_means = means
        if self.progress is not None:
            self.progress.set_postfix(
                loss=f"{means['loss']:.3f}", clips_s=f"{means.get('clips_per_second', 0.0):.0f}"
            )
        self.pending = []
        self.window_start, self.window_steps = time.time(), 0

    def save(self, step: int) -> None:
        """Starts writing checkpoint `step` and rewrites the exported encoder (process 0)."""
        meta = dict(self.meta, skipped_steps=self.skipped)
        self.checkpointer.save(step, self.ts.state, self.data_state, meta)
        if jax.process_index() == 0:
            pretrain_step.export_encoder(self.ts.state, self.config, self.export_dir, step=step)

    def finished(self, step: int) -> dict[str, Any]:
        state = self.ts.state
        return {
            "step": step,
            "loss": self.last_means.get("loss"),
            "encoder_dir": self.export_dir,
            "norm_mean": float(jax.device_get(state["buffers"]["norm_mean"][...])),
            "norm_std": float(jax.device_get(state["buffers"]["norm_std"][...])),
            "checkpoint_dir": self.checkpointer.directory,
        }

    def stopped(self, step: int) -> dict[str, Any]:
        """Logs how to resume; returns {"stopped_at", "signal", "checkpoint_dir", ...}."""
        signal_name = self.stop.signal_name or "a signal to another process"
        logging.warning(
            "Stopped by %s at step %d; checkpoint %s is in %s. Run the same command again to "
            "resume.",
            signal_name,
            step,
            self.checkpointer.latest_step(),
            self.checkpointer.directory,
        )
        return {
            "stopped_at": step,
            "signal": signal_name,
            "checkpoint_dir": self.checkpointer.directory,
            "encoder_dir": self.export_dir,
        }
