"""The pieces of a training loop shared by the captioner (`adc_jax.train`) and BYOL-A
pretraining (`adc_jax.pretrain`).

  StopRequested   SIGTERM (preemption) and the first Ctrl-C -> "save at the next step and exit";
  MetricsWriter   metrics.jsonl (one object per logged step) + TensorBoard events, truncated on
                  resume so the log reads as if the run had never stopped;
  DeviceBatches   global batches placed on the mesh ahead of the step, each with the grain
                  iterator state taken right after it (the state a checkpoint saves);
  summarise, format_terms   means of pending step metrics, and the text of a non-finite step;
  NonFiniteError  raised by a loop whose policy is to stop on a NaN/Inf loss or gradient;
  progress_bar    the tqdm bar of the main process;
  run_with_checkpointer   a loop body given its checkpointer, metrics writer and signal handler,
                  all closed however the body ends.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from absl import logging
from tensorboardX import SummaryWriter
from tqdm import tqdm

from adc_jax import checkpointing
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


def run_with_checkpointer(
    workdir: str,
    checkpoint_dir: str,
    keep: int,
    body: Callable[[checkpointing.Checkpointer, MetricsWriter, StopRequested], dict[str, Any]],
) -> dict[str, Any]:
    """Runs `body(checkpointer, writer, stop)` and closes what it was given, however it ends.

    Signals are caught from the start: a preemption while the data or the model are prepared
    stops the run cleanly before its first step. On an exception the checkpointer is closed
    without raising its own errors (the body's exception is the one that matters); on success a
    failed final checkpoint write is raised.
    """
    os.makedirs(workdir, exist_ok=True)
    with StopRequested() as stop:
        checkpointer = checkpointing.Checkpointer(checkpoint_dir, keep=keep)
        writer = None
        try:
            writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
            result = body(checkpointer, writer, stop)
        except BaseException:
            checkpointer.close(raise_errors=False)
            raise
        finally:
            if writer is not None:
                writer.close()
        checkpointer.close()
    return result
