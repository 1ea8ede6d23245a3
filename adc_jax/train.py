"""The training loop: init or restore, jitted train step, periodic eval and checkpoints.

`train_and_evaluate(config, workdir)`:
  1. validates the config (before anything is built or compiled);
  2. builds the dataset on first use and the vocabulary from the training captions;
  3. initialises the model or restores the latest checkpoint in `workdir/checkpoints` (same step,
     optimizer state and data position);
  4. runs the jitted, donated train step over a ("data",) mesh of every device;
  5. logs metrics to the console (progress bar with ETA), `workdir/metrics.jsonl` and TensorBoard
     event files; evaluates every `train.eval_every` steps and at the end; checkpoints every
     `train.checkpoint_every` steps, at the end, and when SIGTERM/SIGINT asks the run to stop.

Resuming is exact: a run killed at any point and started again continues from its latest complete
checkpoint (params, optimizer state, step, grain iterator position, skipped-step count; dropout
keys derive from the step), so its parameters and logged metrics equal those of an uninterrupted
run. Lines of metrics.jsonl logged after that checkpoint are dropped on resume, and an eval of the
restored step runs again. A NaN/Inf loss or gradient stops the run before any later checkpoint is
written (`train.nonfinite="stop"`) or skips the update and counts it (`"skip"`).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from adc_jax import checkpointing, evaluate
from adc_jax import config as config_lib
from adc_jax import sharding as sharding_lib
from adc_jax import step as step_lib
from adc_jax.data import pipeline


class NonFiniteError(FloatingPointError):
    """The loss or gradient became NaN/Inf; the message names the step and the loss terms."""


class StopRequested:
    """Turns SIGTERM (preemption) and the first Ctrl-C into "save at the next step and exit"."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal_name = signal.Signals(signum).name
        logging.warning(
            "%s received: saving a checkpoint at the next step boundary, then "
            "exiting (Ctrl-C again to stop at once).",
            self.signal_name,
        )

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class MetricsWriter:
    """Writes scalars to `metrics.jsonl` (one object per logged step) and TensorBoard events.

    The TensorBoard writer opens on the first write; after `truncate_after(step)` it hides the
    events a dead run logged after `step` (tensorboardX's purge_step), as the jsonl file does.
    """

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tensorboard_dir = os.path.join(workdir, "tensorboard")
        self.tensorboard = None
        self._purge_step: int | None = None

    def _tensorboard(self):
        if self.tensorboard is None:
            from tensorboardX import SummaryWriter

            self.tensorboard = SummaryWriter(
                logdir=self.tensorboard_dir, purge_step=self._purge_step
            )
        return self.tensorboard

    def truncate_after(self, step: int, *, drop_eval_at_step: bool = False) -> None:
        """Drops lines logged after `step` by a run that died after its last checkpoint.

        With `drop_eval_at_step`, the eval line of `step` goes too (the resumed run evaluates that
        step again). A line cut short by a kill is dropped; the file is replaced atomically.
        """
        self._purge_step = step + 1
        if not self.enabled or not os.path.exists(self.path):
            return
        kept, dropped = [], 0
        with open(self.path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                    line_step = int(record["step"])
                except (ValueError, KeyError, TypeError):
                    dropped += 1
                    continue
                is_eval = any(k.startswith("eval/") for k in record)
                if line_step < step or (line_step == step and not (drop_eval_at_step and is_eval)):
                    kept.append(line if line.endswith("\n") else line + "\n")
                else:
                    dropped += 1
        if dropped:
            logging.info("Dropped %d line(s) of %s logged after step %d.", dropped, self.path, step)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def write(self, step: int, scalars: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(
                json.dumps({"step": step, **{f"{prefix}/{k}": v for k, v in scalars.items()}})
                + "\n"
            )
        tensorboard = self._tensorboard()
        for k, v in scalars.items():
            if v is not None and np.isfinite(v):
                tensorboard.add_scalar(f"{prefix}/{k}", v, step)
        tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


class DeviceBatches:
    """Keeps `depth` global batches on the devices ahead of the step (host->device overlap).

    Each batch travels with the grain iterator state taken right after it was read, so the state
    saved in a checkpoint is exactly the position of the last batch the model consumed.
    """

    def __init__(self, iterator, mesh, depth: int = 2):
        self.iterator, self.mesh, self.depth = iterator, mesh, max(depth, 1)
        self.queue: collections.deque = collections.deque()

    def __iter__(self) -> Iterator[tuple[dict[str, jax.Array], dict[str, Any]]]:
        return self

    def __next__(self):
        while len(self.queue) < self.depth:
            local = next(self.iterator)
            self.queue.append(
                (sharding_lib.global_batch(local, self.mesh), self.iterator.get_state())
            )
        return self.queue.popleft()


def _summarise(pending: list[dict[str, jax.Array]]) -> tuple[dict[str, float], list[int]]:
    """Means of the metrics of the pending steps; also the indices of non-finite steps."""
    host = jax.device_get(pending)
    bad = [i for i, m in enumerate(host) if m["finite"] < 1]
    good = [m for m in host if m["finite"] >= 1] or host
    means = {k: float(np.mean([m[k] for m in good])) for k in host[0] if k != "finite"}
    return means, bad


def _format_terms(metrics: dict[str, Any]) -> str:
    """'loss=nan, caption_loss=nan, ...; non-finite: loss, grad_norm' for an error message."""
    values = {k: float(v) for k, v in sorted(metrics.items()) if k != "finite"}
    bad = [k for k, v in values.items() if not np.isfinite(v)]
    text = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    return text + (f"; non-finite: {', '.join(bad)}" if bad else "")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config to workdir/config.json (read back by evaluate and caption)."""
    path = os.path.join(workdir, "config.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: is {workdir} a training workdir? Train with "
            "python -m adc_jax.main --config=... --workdir=DIR first."
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def prepare_data(config: ml_collections.ConfigDict, workdir: str):
    """Builds/loads the dataset and the vocabulary; returns (builder, vocab, train captions)."""
    # One process builds the dataset first, so a shared data_dir is never written twice at once.
    if jax.process_index() == 0:
        builder = pipeline.load_builder(config)
    multihost_sync("dataset_built")
    if jax.process_index() != 0:
        builder = pipeline.load_builder(config)
    train_source = builder.as_data_source("train")
    start = time.time()
    _, stats = pipeline.read_captions(train_source)
    logging.info(
        "Read %d training captions of %d pairs in %.1f s (%d pairs without captions).",
        stats.num_captions,
        stats.num_pairs,
        time.time() - start,
        stats.pairs_without_captions,
    )
    # Process 0 writes the vocabulary (the workdir is shared); the others read it afterwards.
    vocab_path = os.path.join(workdir, "vocab.json")
    if jax.process_index() == 0:
        vocab = pipeline.build_or_load_vocab(
            vocab_path, stats.captions, config.data.vocab_min_count, config.data.max_caption_tokens
        )
    multihost_sync("vocab_written")
    if jax.process_index() != 0:
        vocab = pipeline.build_or_load_vocab(
            vocab_path, stats.captions, config.data.vocab_min_count, config.data.max_caption_tokens
        )
    return builder, vocab, stats.captions


def stop_agreed(stop: StopRequested) -> bool:
    """Whether any process has been asked to stop: the same answer on every process.

    With several processes this is a collective (one int per process), so every process must
    call it at the same points of the run; a process that stopped alone would leave the others
    waiting in the next step's all-reduce, and its checkpoint save waiting for them.
    """
    requested = stop.signal_name is not None
    if jax.process_count() == 1:
        return requested
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.int32(requested))))


def multihost_sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


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
    os.makedirs(workdir, exist_ok=True)
    # Signals are caught from here on: a preemption while the data or the model are prepared
    # stops the run cleanly before its first step.
    with StopRequested() as stop:
        checkpointer = checkpointing.Checkpointer(
            os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints
        )
        writer = None
        try:
            writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
            result = _train(config, workdir, checkpointer, writer, stop)
        except BaseException:
            checkpointer.close(raise_errors=False)
            raise
        finally:
            if writer is not None:
                writer.close()
        checkpointer.close()
    return result


def _train(
    config: ml_collections.ConfigDict,
    workdir: str,
    checkpointer: checkpointing.Checkpointer,
    writer: MetricsWriter,
    stop: StopRequested,
) -> dict[str, Any]:
    lead = jax.process_index() == 0
    mesh = sharding_lib.create_mesh()
    builder, vocab, train_captions = prepare_data(config, workdir)
    from adc_jax.metrics.captioning import most_frequent_caption

    baseline_caption = most_frequent_caption(train_captions)

    ts = step_lib.create_train_state(config, len(vocab), mesh)
    logging.info(
        "Model: %s parameters (%s).", f"{step_lib.parameter_count(ts.state):,}", config.name
    )
    if lead:
        _log_parameter_overview(ts)
    meta = checkpointing.run_meta(config, len(vocab))
    state, data_state, start_step, saved_meta = checkpointing.restore_or_init(
        checkpointer, ts.state, meta
    )
    ts.state = state
    # Non-finite steps skipped so far (train.nonfinite="skip"), carried across resumes.
    skipped = int(saved_meta.get("skipped_steps", 0))

    train_iter = iter(
        pipeline.train_dataset(
            builder.as_data_source("train"),
            vocab,
            config,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    )
    if data_state is not None:
        train_iter.set_state(data_state)
    last_data_state = train_iter.get_state()
    num_steps = config.train.num_steps

    def is_eval_step(step: int) -> bool:
        return bool(config.train.eval_every) and step % config.train.eval_every == 0

    # An eval of the restored step may not have finished before the run died: it runs again, and
    # its old line (if any) goes, so metrics.jsonl reads as if the run had never stopped.
    redo_eval = start_step > 0 and (start_step == num_steps or is_eval_step(start_step))
    writer.truncate_after(start_step, drop_eval_at_step=redo_eval)
    if start_step:
        logging.info(
            "Resuming from step %d (checkpoint in %s).", start_step, checkpointer.directory
        )

    eval_split = pipeline.load_eval_split(
        builder.as_data_source(config.eval.split), config.eval.max_examples
    )
    train_step = step_lib.jit_train_step(ts, config, mesh)
    decode_fn = step_lib.jit_decode(
        ts, mesh, config.eval.decode, config.eval.beam_size, config.eval.length_penalty
    )

    def run_eval(step: int) -> dict[str, Any]:
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        result = evaluate.evaluate(
            decode_fn,
            ts.rng_state,
            ts.state,
            eval_split,
            config.eval.split,
            config,
            mesh,
            vocab,
            step=step,
            decode=config.eval.decode,
            baseline_caption=baseline_caption,
            out_prefix=os.path.join(workdir, "eval", f"step_{step}"),
        )
        scalars = {k: v for k, v in result["scores"].items() if isinstance(v, float)}
        if result.get("difference_accuracy"):
            scalars["difference_accuracy"] = result["difference_accuracy"]["exact_set_accuracy"]
        scalars["baseline_CIDEr"] = result["baseline"]["scores"]["CIDEr"]
        writer.write(step, scalars, prefix="eval")
        return result

    def save(step: int) -> None:
        checkpointing.save(
            checkpointer, step, ts.state, last_data_state, dict(meta, skipped_steps=skipped)
        )

    def stopped(step: int) -> dict[str, Any]:
        # On several processes, only some may have received the signal themselves.
        signal_name = stop.signal_name or "a signal to another process"
        logging.warning(
            "Stopped by %s at step %d; checkpoint %d is in %s. Run the same command "
            "again to resume.",
            signal_name,
            step,
            checkpointer.latest_step(),
            checkpointer.directory,
        )
        return {"stopped_at": step, "signal": signal_name, "checkpoint_dir": checkpointer.directory}

    if stop_agreed(stop):  # asked to stop while preparing: nothing new to save
        return stopped(start_step)
    if redo_eval and start_step < num_steps:
        run_eval(start_step)

    batches = DeviceBatches(train_iter, mesh)
    pending: list[dict[str, jax.Array]] = []
    progress = _progress_bar(lead, start_step, num_steps)
    window_start, window_steps = time.time(), 0
    step = start_step

    def flush_metrics(step: int) -> None:
        """Pulls pending metrics to the host; stops or counts non-finite steps."""
        nonlocal pending, skipped, window_start, window_steps
        if not pending:
            return
        means, bad = _summarise(pending)
        first_step = step - len(pending) + 1
        if bad:
            bad_step = first_step + bad[0]
            terms = _format_terms(jax.device_get(pending[bad[0]]))
            if config.train.nonfinite == "stop":
                checkpointer.wait()
                raise NonFiniteError(
                    f"Non-finite loss or gradient at step {bad_step} ({terms}). The update was "
                    f"not applied and no checkpoint after it was written; the last good "
                    f"checkpoint is step {checkpointer.latest_step()} in "
                    f"{checkpointer.directory}. Lower train.learning_rate or train.grad_clip, "
                    "or set --config.train.nonfinite=skip to skip such steps."
                )
            skipped += len(bad)
            logging.warning(
                "Skipped %d non-finite step(s), first at step %d (%s); %d so far.",
                len(bad),
                bad_step,
                terms,
                skipped,
            )
        elapsed = time.time() - window_start
        if window_steps:
            means["pairs_per_second"] = window_steps * config.train.batch_size / max(elapsed, 1e-9)
        means["skipped_steps"] = float(skipped)
        writer.write(step, means)
        if progress is not None:
            progress.set_postfix(
                loss=f"{means['loss']:.3f}", pairs_s=f"{means.get('pairs_per_second', 0.0):.0f}"
            )
        pending = []
        window_start, window_steps = time.time(), 0

    try:
        while step < num_steps:
            batch, data_after = next(batches)
            ts.state, metrics = train_step(ts.rng_state, ts.state, batch)
            last_data_state = data_after
            step += 1
            pending.append(metrics)
            window_steps += 1
            if step == start_step + 1:
                # The first step compiles; start timing throughput after it.
                jax.block_until_ready(metrics)
                window_start, window_steps = time.time(), 0
            if progress is not None:
                progress.update(1)
            final = step == num_steps
            # Several processes agree on stopping every log_every steps (a small collective).
            stopping = (
                jax.process_count() == 1 or step % config.train.log_every == 0
            ) and stop_agreed(stop)
            if step % config.train.log_every == 0 or final or stopping:
                flush_metrics(step)
            if step % config.train.checkpoint_every == 0 or final or stopping:
                flush_metrics(step)
                save(step)
            if stopping:
                checkpointer.wait()
                return stopped(step)
            if is_eval_step(step) and not final:
                run_eval(step)
    finally:
        if progress is not None:
            progress.close()
    checkpointer.wait()
    return run_eval(step)


def _progress_bar(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, smoothing=0.1
    )


def _log_parameter_overview(ts: step_lib.TrainState) -> None:
    try:
        from clu import parameter_overview
        from flax import nnx

        params = nnx.to_pure_dict(nnx.State(ts.state["model"]).filter(nnx.Param))
        logging.info(
            "Parameters:\n%s",
            parameter_overview.get_parameter_overview(params, include_stats=False),
        )
    except Exception as e:  # noqa: BLE001 - an overview must never stop training
        logging.warning("Could not print the parameter overview: %s", e)
