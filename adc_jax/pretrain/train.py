"""BYOL-A self-supervised pretraining of the AudioNTT2020 encoder: the run's set-up.

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
  1. validates the config (`pretrain.config.validate`) before anything is built;
  2. prepares the clips (`clips.load_clip_source`, built on first use);
  3. a fresh run estimates the log-mel's mean and standard deviation over the first
     pretrain.norm_stats_batches batches (a separate reader of the same order: the training
     stream is not advanced), or takes model.norm_mean/norm_std when that is 0; a resumed run
     restores them with everything else;
  4. initialises the state, or restores the latest checkpoint (same step, target, memory,
     statistics, data position): resuming is exact, a resumed run equals an uninterrupted one;
  5. runs the jitted, donated step in the captioner's loop (`loop.StepLoop`) over a ("data",)
     mesh of every device, logging every train.log_every steps (console progress bar,
     metrics.jsonl, TensorBoard), saving and exporting the encoder every
     train.checkpoint_every steps and at the end;
  6. SIGTERM / Ctrl-C save a checkpoint at the next step and end the run (exit status 0); a
     NaN/Inf loss or gradient stops the run before any later checkpoint (train.nonfinite="stop")
     or skips the update and counts it ("skip").

The command line (`__main__.py`) and its exit statuses are those of `adc_jax.cli`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
from absl import logging

from adc_jax import loop
from adc_jax.loop import DeviceBatches
from adc_jax.pretrain import clips
from adc_jax.pretrain import config as pretrain_config_lib
from adc_jax.pretrain import step as pretrain_step

ENCODER_DIR = "encoder"


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
      loop.NonFiniteError: a NaN/Inf loss or gradient with train.nonfinite="stop".
      checkpointing.CheckpointError: a checkpoint could not be written or read.
    """
    pretrain_config_lib.validate(config, num_devices=jax.device_count())
    return loop.run_in_workdir(config, workdir, _pretrain)


def _pretrain(run: loop.Run) -> dict[str, Any]:
    """Prepares the clips, initialises or restores the state, then runs the steps."""
    config, mesh, checkpointer, writer = run.config, run.mesh, run.checkpointer, run.writer
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
    start = loop.restore_or_init(
        checkpointer,
        ts,
        run_meta(config),
        lambda: iter(
            clips.clip_batches(
                source,
                config,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
            )
        ),
    )
    writer.truncate_after(start.step)
    export_dir = encoder_dir(run.workdir)

    def export(step: int) -> None:
        if jax.process_index() == 0:
            pretrain_step.export_encoder(ts.state, config, export_dir, step=step)

    def finished(step: int, last_means: dict[str, float]) -> dict[str, Any]:
        buffers = ts.state["buffers"]
        return {
            "step": step,
            "loss": last_means.get("loss"),
            "encoder_dir": export_dir,
            "norm_mean": float(jax.device_get(buffers["norm_mean"][...])),
            "norm_std": float(jax.device_get(buffers["norm_std"][...])),
            "checkpoint_dir": checkpointer.directory,
        }

    hooks = loop.Hooks(finish=finished, after_save=export, stopped_info={"encoder_dir": export_dir})
    return loop.StepLoop(
        run,
        start=start,
        step_fn=pretrain_step.jit_pretrain_step(ts, config, mesh),
        hooks=hooks,
        unit="clips",
    ).run()
