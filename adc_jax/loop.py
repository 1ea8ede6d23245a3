"""The one training loop, used by the captioner (`adc_jax.train`) and BYOL-A pretraining
(`adc_jax.pretrain.train`).

  run_in_workdir  a trainer's body given its `Run` (mesh, checkpointer, metrics writer, signal
                  handler), all closed however the body ends;
  restore_or_init Start of a run: the latest checkpoint of the workdir, or a fresh state;
  StepLoop        the steps from `Start.step` to `train.num_steps`: the jitted step on device
                  batches, `log` (progress bar, metrics.jsonl, TensorBoard; the non-finite policy),
                  `save` (a checkpoint every `train.checkpoint_every` steps and at the end), a stop
                  request (SIGTERM / Ctrl-C: save at the next step and return), and what each
                  trainer adds through `Hooks` (periodic eval, the export after each save, the
                  result after the last step);
  StopRequested   SIGTERM (preemption) and the first Ctrl-C -> "save at the next step and exit";
  MetricsWriter   metrics.jsonl (one object per logged step) + TensorBoard events, truncated on
                  resume so the log reads as if the run had never stopped;
  DeviceBatches   global batches placed on the mesh ahead of the step, each with the grain
                  iterator state taken right after it (the state a checkpoint saves);
  summarise, format_terms   means of pending step metrics, and the text of a non-finite step;
  NonFiniteError  raised by a loop whose policy is to stop on a NaN/Inf loss or gradient.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from tensorboardX import SummaryWriter
from tqdm import tqdm

from adc_jax import checkpointing, multihost
from adc_jax import sharding as sharding_lib


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


def summarise(pending: list[dict[str, jax.Array]]) -> tuple[dict[str, float], list[int]]:
    """Means of the metrics of the pending steps; also the indices of non-finite steps."""
    host = jax.device_get(pending)
    bad = [i for i, m in enumerate(host) if m["finite"] < 1]
    good = [m for m in host if m["finite"] >= 1] or host
    means = {k: float(np.mean([m[k] for m in good])) for k in host[0] if k != "finite"}
    return means, bad


def format_terms(metrics: dict[str, Any]) -> str:
    """'loss=nan, caption_loss=nan, ...; non-finite: loss, grad_norm' for an error message."""
    values = {k: float(v) for k, v in sorted(metrics.items()) if k != "finite"}
    bad = [k for k, v in values.items() if not np.isfinite(v)]
    text = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    return text + (f"; non-finite: {', '.join(bad)}" if bad else "")


def progress_bar(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    return tqdm(
        total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, smoothing=0.1
    )


@dataclasses.dataclass
class Run:
    """What a trainer's body is given by `run_in_workdir`.

    config: the validated config; workdir: its absolute path; mesh: ("data",) over every device;
    checkpointer: WORKDIR/checkpoints, keeping train.keep_checkpoints; writer: metrics.jsonl and
    TensorBoard (process 0); stop: the SIGTERM / Ctrl-C handler.
    """

    config: ml_collections.ConfigDict
    workdir: str
    mesh: Any
    checkpointer: checkpointing.Checkpointer
    writer: MetricsWriter
    stop: StopRequested


def run_in_workdir(
    config: ml_collections.ConfigDict, workdir: str, body: Callable[[Run], dict[str, Any]]
) -> dict[str, Any]:
    """Runs `body(run)` in `workdir` and closes what it was given, however it ends.

    Signals are caught from the start: a preemption while the data or the model are prepared
    stops the run cleanly before its first step. On an exception the checkpointer is closed
    without raising its own errors (the body's exception is the one that matters); on success a
    failed final checkpoint write is raised.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(workdir, exist_ok=True)
    with StopRequested() as stop:
        checkpointer = checkpointing.Checkpointer(
            checkpointing.checkpoint_dir(workdir), keep=config.train.keep_checkpoints
        )
        writer = None
        try:
            writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
            mesh = sharding_lib.create_mesh()
            result = body(Run(config, workdir, mesh, checkpointer, writer, stop))
        except BaseException:
            checkpointer.close(raise_errors=False)
            raise
        finally:
            if writer is not None:
                writer.close()
        checkpointer.close()
    return result


# ---------------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Start:
    """Where a run starts: a fresh state at step 0, or the latest checkpoint of the workdir.

    train_state: what the step updates (`train_state.TrainState`), placed on the mesh.
    meta: what every checkpoint of the run records and a restore must match.
    step: the step of the restored checkpoint (0 for a fresh run).
    skipped: non-finite steps skipped so far (train.nonfinite="skip"), carried across resumes.
    train_iter: the training batches, positioned after the last batch the checkpoint consumed.
    """

    train_state: Any
    meta: dict[str, Any]
    step: int
    skipped: int
    train_iter: Any


def restore_or_init(
    checkpointer: checkpointing.Checkpointer,
    train_state: Any,
    meta: dict[str, Any],
    make_train_iter: Callable[[], Any],
) -> Start:
    """Restores the latest checkpoint into `train_state` (if there is one) and positions the
    training batches `make_train_iter()` after the last batch it consumed."""
    train_state.state, data_state, step, saved_meta = checkpointing.restore_or_init(
        checkpointer, train_state.state, meta
    )
    train_iter = make_train_iter()
    if data_state is not None:
        train_iter.set_state(data_state)
    return Start(train_state, meta, step, int(saved_meta.get("skipped_steps", 0)), train_iter)


def _never(step: int) -> bool:
    del step
    return False


def _nothing(step: int) -> None:
    del step


@dataclasses.dataclass
class Hooks:
    """What a trainer adds to `StepLoop`; each hook is called with the step just taken.

    finish(step, last_means): the run's result after its last step (the captioner's final
      evaluation; pretraining's summary); `last_means` are the metrics of the last `log`.
    after_save(step): called after each checkpoint is started (pretraining exports the encoder).
    is_due(step) / periodic(step): work between steps, e.g. the captioner's eval every
      `train.eval_every` steps (not at the last step: `finish` covers it). When due at the step
      a run resumes from, it runs again first (the killed run may not have finished it).
    stopped_info: fields added to the result of a run stopped by a signal.
    """

    finish: Callable[[int, dict[str, float]], dict[str, Any]]
    after_save: Callable[[int], None] = _nothing
    is_due: Callable[[int], bool] = _never
    periodic: Callable[[int], Any] = _nothing
    stopped_info: dict[str, Any] = dataclasses.field(default_factory=dict)


class StepLoop:
    """The training steps from `start.step` to `train.num_steps`, with the periodic actions.

    Each step runs `step_fn(rng_state, state, batch) -> (state, metrics)` (jitted, the state
    donated) on the next device batch; its metrics stay on the devices until `log` pulls them
    (every `train.log_every` steps); `save` writes a checkpoint every `train.checkpoint_every`
    steps and at the end; `hooks.periodic` runs when due; a stop request (SIGTERM, Ctrl-C) saves a
    checkpoint at the next step and ends the run (`stopped`). Throughput is logged as
    `<unit>_per_second` (`unit`: what one batch row is, "pairs" or "clips").
    A resuming trainer drops the metrics logged after `start.step` (`MetricsWriter.truncate_after`)
    before `run`, which logs "Resuming from step N" once the log reads as if the run had never
    stopped.
    """

    def __init__(
        self,
        run: Run,
        *,
        start: Start,
        step_fn: Callable,
        hooks: Hooks,
        unit: str,
    ):
        self.train, self.mesh, self.start = run.config.train, run.mesh, start
        self.ts, self.step_fn = start.train_state, step_fn
        self.checkpointer, self.writer, self.stop = run.checkpointer, run.writer, run.stop
        self.hooks = hooks
        self.unit = unit
        self.skipped = start.skipped
        # The grain iterator state after the last batch the model consumed (saved with it).
        self.data_state = start.train_iter.get_state()
        # Metrics of the steps since the last `log`, still on the devices.
        self.pending: list[dict[str, jax.Array]] = []
        self.last_means: dict[str, float] = {}
        # Throughput: steps since `window_start`, not counting the compiling first step.
        self.window_start, self.window_steps = time.time(), 0
        self.progress = None

    def run(self) -> dict[str, Any]:
        """Trains to the last step; returns `hooks.finish`'s result, or `stopped`'s dict."""
        train = self.train
        if self.start.step:
            logging.info(
                "Resuming from step %d (checkpoint in %s).",
                self.start.step,
                self.checkpointer.directory,
            )
        if multihost.any_process(self.stop.signal_name is not None):
            return self.stopped(self.start.step)  # asked to stop while preparing: nothing new
        step = self.start.step
        if 0 < step < train.num_steps and self.hooks.is_due(step):
            # Work due at the restored step may not have finished before the run died.
            self.hooks.periodic(step)
        batches = DeviceBatches(self.start.train_iter, self.mesh)
        self.progress = progress_bar(jax.process_index() == 0, step, train.num_steps)
        try:
            while step < train.num_steps:
                batch, data_after = next(batches)
                self.ts.state, metrics = self.step_fn(self.ts.rng_state, self.ts.state, batch)
                self.data_state = data_after
                step += 1
                self.pending.append(metrics)
                self.window_steps += 1
                if step == self.start.step + 1:
                    # Start-up ends here (docs/data.md#start-up measures it by this line).
                    logging.info("First step dispatched (step %d).", step)
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
                if self.hooks.is_due(step) and not final:
                    self.hooks.periodic(step)
        finally:
            if self.progress is not None:
                self.progress.close()
        self.checkpointer.wait()
        return self.hooks.finish(step, self.last_means)

    def log(self, step: int) -> None:
        """Pulls the pending metrics to the host and writes their means; stops on (or counts)
        a non-finite step, as `train.nonfinite` says."""
        if not self.pending:
            return
        means, bad = summarise(self.pending)
        if bad:
            bad_step = step - len(self.pending) + 1 + bad[0]
            terms = format_terms(jax.device_get(self.pending[bad[0]]))
            if self.train.nonfinite == "stop":
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
            means[f"{self.unit}_per_second"] = (
                self.window_steps * self.train.batch_size / max(elapsed, 1e-9)
            )
        means["skipped_steps"] = float(self.skipped)
        self.writer.write(step, means)
        self.last_means = means
        if self.progress is not None:
            self.progress.set_postfix(
                {
                    "loss": f"{means['loss']:.3f}",
                    f"{self.unit}_s": f"{means.get(f'{self.unit}_per_second', 0.0):.0f}",
                }
            )
        self.pending = []
        self.window_start, self.window_steps = time.time(), 0

    def save(self, step: int) -> None:
        """Starts writing checkpoint `step` (state, data position, skipped-step count), then
        runs `hooks.after_save`."""
        meta = dict(self.start.meta, skipped_steps=self.skipped)
        self.checkpointer.save(step, self.ts.state, self.data_state, meta)
        self.hooks.after_save(step)

    def stopped(self, step: int) -> dict[str, Any]:
        """Logs how to resume; returns {"stopped_at", "signal", "checkpoint_dir", ...}."""
        # On several processes, only some may have received the signal themselves.
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
            **self.hooks.stopped_info,
        }
