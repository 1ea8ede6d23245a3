"""Orbax checkpoints of a training run: `Checkpointer` (save, restore) and `restore_or_init`.

A checkpoint `workdir/checkpoints/<step>/` holds three items:
  state: params, BatchNorm statistics and optimizer state (the step counter included);
  data:  the grain iterator state, so a resumed run reads the same batches;
  meta:  the step, the shape-determining model fields and the vocabulary size, compared with the
         current config before anything is restored, and the number of skipped non-finite steps.
Orbax writes each checkpoint to a temporary directory (`<step>.orbax-checkpoint-tmp-*`) and renames
it when complete, so a run killed in the middle of a save never reads a half-written checkpoint
back (the next run deletes the leftover); saves are asynchronous (training continues while the
previous step is written), and a failed write surfaces as `CheckpointError` at the next save or
`wait()`, naming the step that failed and the last complete checkpoint.

Every restore goes through `Checkpointer.restore`, which compares the checkpoint's meta with the
config first: resuming a run (`restore_or_init`), loading a trained run for evaluation
(`adc_jax.rundir.load_trained`) and the early check of a workdir before anything is built
(`check_workdir`, meta only).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from adc_jax import multihost
from adc_jax.config import ConfigError, model_fields

ITEMS = ("state", "data", "meta")


# A run's checkpoints live in WORKDIR/checkpoints (the same for the captioner and pretraining).
CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
    """The checkpoint directory of the run in `workdir`."""
    return os.path.join(workdir, CHECKPOINT_DIR)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says why and what is intact."""


class Checkpointer:
    """Saves and restores training checkpoints in `directory`.

    Args:
      directory: where the step directories go; created unless `create` is False.
      keep: the number of most recent checkpoints kept (None: all).
      async_save: write checkpoints in the background while training goes on.
      create: False opens an existing directory only (to read it).
    """

    def __init__(
        self, directory: str, *, keep: int | None, async_save: bool = True, create: bool = True
    ):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        if create:
            try:
                os.makedirs(self.directory, exist_ok=True)
            except OSError as e:
                raise CheckpointError(
                    f"Cannot create the checkpoint directory {self.directory}: {e}. "
                    "Choose a writable --workdir."
                ) from e
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=create,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=create,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
        # The step of the save started last and not yet confirmed on disk by `wait()`.
        self._pending: int | None = None
        self._closed = False

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, data_state: dict[str, Any], meta: dict[str, Any]) -> None:
        """Starts writing checkpoint `step` (asynchronously); raises CheckpointError on failure.

        Waits for the previous save first (orbax would too), so its failure is reported under its
        own step. A failure (full disk, unwritable directory) leaves earlier checkpoints untouched.
        """
        self.wait()
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(nnx.to_pure_dict(state)),
                    data=ocp.args.JsonSave(data_state),
                    meta=ocp.args.JsonSave(dict(meta, step=step)),
                ),
                force=True,
            )
        except Exception as e:  # noqa: BLE001 - orbax wraps OS errors in several types.
            raise self._error(f"writing checkpoint {step}", e) from e
        self._pending = step

    def wait(self) -> None:
        """Blocks until pending saves are on disk; raises CheckpointError if one failed."""
        step, self._pending = self._pending, None
        what = "writing checkpoint" + (f" {step}" if step is not None else "s")
        try:
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            raise self._error(what, e) from e
        # Orbax can log a failed finalisation and carry on; the renamed directory is the proof
        # (checked where it is renamed: on the primary process).
        final_dir = os.path.join(self.directory, str(step))
        if step is not None and jax.process_index() == 0 and not os.path.isdir(final_dir):
            raise self._error(
                what, RuntimeError(f"{final_dir} was not created (see the errors logged above)")
            )

    def _error(self, what: str, e: Exception) -> CheckpointError:
        try:  # Complete checkpoints are the directories named by a step (tmp ones are not).
            complete = [int(n) for n in os.listdir(self.directory) if n.isdigit()]
        except OSError:  # the directory itself may be unreadable
            complete = []
        last = max(complete) if complete else None
        kept = (
            f"the previous checkpoint (step {last}) in {self.directory} is intact"
            if last is not None
            else "no earlier checkpoint exists"
        )
        return CheckpointError(
            f"Failed {what} in {self.directory}: {type(e).__name__}: {e}. "
            f"Free disk space or fix the directory's permissions, then run the "
            f"same command again to resume; {kept}."
        )

    def read_meta(self, step: int) -> dict[str, Any]:
        """The meta saved with checkpoint `step` (model fields, vocabulary size, step, ...)."""
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"Cannot read checkpoint {step} in {self.directory}: {type(e).__name__}: {e}"
            ) from e
        return dict(restored["meta"])

    def restore(
        self, step: int, state, expected: dict[str, Any]
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Restores checkpoint `step` into the structure and shardings of `state`.

        The saved meta is compared with `expected` (a `run_meta`) before anything else is read.
        Returns the restored state (an nnx.State like `state`), the saved data-iterator state and
        the saved meta.
        """
        saved_meta = self.read_meta(step)
        check_compatible(saved_meta, expected, self.directory)
        pure = nnx.to_pure_dict(state)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), pure
        )
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"Cannot read checkpoint {step} in {self.directory}: {type(e).__name__}: {e}"
            ) from e
        new_state = jax.tree.map(lambda x: x, state)
        nnx.replace_by_pure_dict(new_state, restored["state"])
        logging.info("Restored checkpoint %d from %s", step, self.directory)
        return new_state, dict(restored["data"]), saved_meta

    def close(self, *, raise_errors: bool = True) -> None:
        """Waits for pending saves and releases orbax's threads.

        Raises CheckpointError if a save failed, unless `raise_errors` is False (used while
        another exception is already on its way out): then the failure is only logged.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        except CheckpointError as e:
            if raise_errors:
                raise
            logging.error("%s", e)
        finally:
            try:
                # The manager removes leftover tmp directories in a thread it starts when it is
                # made, and close() does not wait for it: a run that fails within a second
                # (bad data) would exit under that thread, which then prints a traceback
                # ("cannot schedule new futures after interpreter shutdown"). Private in orbax
                # 0.12; without it, the race stays.
                await_cleanup = getattr(self.manager, "_maybe_await_cleanup_tmp_directory", None)
                if await_cleanup is not None:
                    await_cleanup()
                self.manager.close()
            except Exception as e:  # noqa: BLE001 - wait() above reported the real problem
                logging.warning("Closing the checkpoint manager: %s", e)


def run_meta(config: ml_collections.ConfigDict, vocab_size: int) -> dict[str, Any]:
    """What must match between a checkpoint and the config that restores it."""
    return {"model": model_fields(config), "vocab_size": vocab_size, "name": config.name}


def check_compatible(saved: dict[str, Any], current: dict[str, Any], directory: str) -> None:
    """Raises ConfigError listing every field whose value differs from the checkpoint's.

    `current` may leave out "vocab_size" (when checking a config before the data is read).
    """
    diffs = []
    saved_model, current_model = saved.get("model", {}), current["model"]
    for key in sorted(set(saved_model) | set(current_model)):
        if saved_model.get(key) != current_model.get(key):
            diffs.append(
                f"  {key}: checkpoint={saved_model.get(key)!r}, config={current_model.get(key)!r}"
            )
    if "vocab_size" in current and saved.get("vocab_size") != current["vocab_size"]:
        diffs.append(
            f"  vocab_size: checkpoint={saved.get('vocab_size')!r}, "
            f"current={current['vocab_size']!r}"
        )
    if diffs:
        raise ConfigError(
            f"The checkpoint in {directory} was made with a different model config:\n"
            + "\n".join(diffs)
            + "\nUse the config that made it (its workdir holds config.json), or a new --workdir."
        )


def restore_or_init(
    checkpointer: Checkpointer, state, meta: dict[str, Any]
) -> tuple[Any, dict[str, Any] | None, int, dict[str, Any]]:
    """Restores the latest checkpoint into `state`'s structure, or keeps the fresh `state`.

    Returns (state, data-iterator state or None, step, saved meta or {}). Raises ConfigError when
    the checkpoint was made with a different model config.
    """
    step = checkpointer.latest_step()
    if step is None:
        return state, None, 0, {}
    restored, data_state, saved_meta = checkpointer.restore(step, state, meta)
    return restored, data_state, step, saved_meta


def check_workdir(
    config: ml_collections.ConfigDict,
    directory: str,
    *,
    fields: Callable[[ml_collections.ConfigDict], dict[str, Any]] = model_fields,
) -> None:
    """Fails fast (before data or model are built) when `directory` holds checkpoints of a model
    with other shape-determining fields; raises ConfigError listing them. No-op without one.

    `fields` gives those fields of `config` (the captioner's `config.model_fields` by default;
    pretraining passes its own)."""
    # Opening a CheckpointManager involves collectives, so every process must take the same
    # branch: process 0's view decides (another process may already see the directory that
    # process 0's Checkpointer has just created).
    if not multihost.first_process_says(os.path.isdir(directory)):
        return
    try:
        checkpointer = Checkpointer(directory, keep=None, async_save=False, create=False)
    except Exception as e:  # noqa: BLE001 - a broken directory is reported by the full restore
        logging.warning("Could not open %s to compare configs early: %s", directory, e)
        return
    try:
        step = checkpointer.latest_step()
        if step is not None:
            saved = checkpointer.read_meta(step)
            check_compatible(saved, {"model": fields(config)}, directory)
    finally:
        checkpointer.close()
